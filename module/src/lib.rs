//! `reconcile`: a Redis module that signs stream entries inside Redis, returns only entries
//! that verify, and refuses every other write to the streams it guards.
//!
//! The signing key never leaves the server: writers call `RECONCILE.XADDSIGNED`, readers call
//! `RECONCILE.XREADVERIFIED`, and a command filter stops XADD, DEL, RENAME and every other write
//! to a guarded stream, from any client, in transactions, scripts and replication alike.
//!
//! Layout: the keyring and the MAC live in `reconcile-core`; `args` and `settings` are plain
//! code with unit tests; `ffi` wraps
//! the module API; `sign`, `read`, `stream`, `guard` and `admin` are the commands and the
//! filter built on them.

#![cfg_attr(any(test, fuzzing), allow(dead_code))]

pub use reconcile_core::{keyring, mac};

mod admin;
pub mod args;
mod ffi;
mod guard;
mod log;
mod propagation;
mod read;
pub mod resp;
pub mod settings;
mod sign;
mod state;
mod stream;

use std::ffi::{c_int, CStr};

use redis_module::{Context, RedisString, Status};

use crate::ffi::{api, Level, RedisModuleCtx, RedisModuleString};
use crate::settings::Settings;
use reconcile_core::keyring::Keyring;

/// Wraps a command body in an `extern "C"` entry point that cannot unwind into Redis.
macro_rules! entry {
    ($name:ident => $body:path) => {
        extern "C" fn $name(
            ctx: *mut RedisModuleCtx,
            argv: *mut *mut RedisModuleString,
            argc: c_int,
        ) -> c_int {
            ffi::shield(ctx, || $body(ctx, argv, argc))
        }
    };
}

entry!(xaddsigned_entry => sign::xaddsigned_command);
entry!(xreadverified_entry => read::xreadverified_command);
entry!(verify_entry => read::verify_command);
entry!(keyring_entry => admin::keyring_command);
entry!(xaddrepl_entry => stream::xaddrepl_command);
entry!(guarded_entry => guard::denied_command);

type Handler = extern "C" fn(*mut RedisModuleCtx, *mut *mut RedisModuleString, c_int) -> c_int;

/// (name, handler, flags, first key, last key, key step)
const COMMANDS: [(&CStr, Handler, &CStr, c_int, c_int, c_int); 6] = [
    (
        c"reconcile.xaddsigned",
        xaddsigned_entry,
        c"write deny-oom",
        1,
        1,
        1,
    ),
    // Read-only so plain verified reads work on replicas, as XREAD does; a GROUP read changes
    // consumer-group state, so the command itself refuses it on replicas and under OOM.
    (
        c"reconcile.xreadverified",
        xreadverified_entry,
        c"readonly may-replicate getkeys-api",
        0,
        0,
        0,
    ),
    (c"reconcile.verify", verify_entry, c"readonly", 1, 1, 1),
    (c"reconcile.keyring", keyring_entry, c"admin", 0, 0, 0),
    (c"reconcile.xaddrepl", xaddrepl_entry, c"write", 1, 1, 1),
    // Read-only and fast, so users allowed @read or @fast receive the refusal message rather
    // than an ACL error about a command they never typed.
    (
        c"reconcile.guarded",
        guarded_entry,
        c"readonly fast",
        0,
        0,
        0,
    ),
];

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    let ctx = ctx.ctx;
    let refuse = |why: &str| {
        ffi::log(ctx, Level::Warning, &format!("refusing to load: {why}"));
        Status::Err
    };

    let missing = ffi::missing_apis();
    if !missing.is_empty() {
        return refuse(&format!(
            "this Redis lacks module APIs: {}",
            missing.join(", ")
        ));
    }
    let words: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    let settings = match Settings::parse(&words) {
        Ok(s) => s,
        Err(e) => return refuse(&e.to_string()),
    };
    let in_cluster =
        ffi::context_flags(ctx) & redis_module::raw::REDISMODULE_CTX_FLAGS_CLUSTER != 0;
    if in_cluster {
        if let Err(e) = settings.check_cluster() {
            return refuse(&e.to_string());
        }
    }
    let ring = match Keyring::load(&settings.keyring) {
        Ok(r) => r,
        Err(e) => return refuse(&format!("{} ({})", e, settings.keyring.display())),
    };
    let summary = format!(
        "keyring {} with {} keys, signing kid {}; guarding {}",
        settings.keyring.display(),
        ring.keys().len(),
        ring.signing().kid(),
        settings
            .guards
            .iter()
            .map(|g| ffi::printable(g))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if !state::install(settings, ring) {
        return refuse("the module is already loaded");
    }

    for (name, handler, flags, first, last, step) in COMMANDS {
        let status = api!(RedisModule_CreateCommand(
            ctx,
            name.as_ptr(),
            Some(handler),
            flags.as_ptr(),
            first,
            last,
            step
        ) or ffi::ERR);
        if status != ffi::OK {
            return refuse(&format!(
                "could not create command {}",
                name.to_string_lossy()
            ));
        }
    }
    if !guard::register(ctx) {
        return refuse("could not register the command filter");
    }
    if !propagation::register(ctx) {
        return refuse("could not subscribe to changes of replication role");
    }
    api!(RedisModule_RegisterInfoFunc(ctx, Some(admin::info)) or ffi::ERR);
    if !admin::register_config(ctx) {
        return refuse("could not register reconcile.max-age-ms");
    }
    let summary = format!(
        "{summary}; {} long single-key commands checked by their key alone",
        guard::single_key_commands()
    );
    ffi::log(ctx, Level::Notice, &summary);
    Status::Ok
}

/// Unloading would lift the guard while the streams stay; it is refused.
fn deinit(ctx: &Context) -> Status {
    ffi::log(
        ctx.ctx,
        Level::Warning,
        "refusing to unload: the guard would be lifted",
    );
    Status::Err
}

// Unit tests and fuzz targets run without Redis, whose allocator and load entry point they
// cannot use.
#[cfg(not(any(test, fuzzing)))]
redis_module::redis_module! {
    name: "reconcile",
    version: 1,
    allocator: (redis_module::alloc::RedisAlloc, redis_module::alloc::RedisAlloc),
    data_types: [],
    init: init,
    deinit: deinit,
    commands: [],
}

//! Operating the module: `RECONCILE.KEYRING`, `INFO reconcile` and `reconcile.max-age-ms`.

use std::ffi::{c_char, c_int, c_longlong, c_uint, c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::Ordering;

use redis_module::raw;

use crate::ffi::{self, api, Level, RedisModuleCtx, RedisModuleString};
use crate::keyring::Keyring;
use crate::mac::Rejection;
use crate::settings::{MAX_MAX_AGE_MS, MIN_MAX_AGE_MS};
use crate::state::{self, Stats, STATS};

/// `RECONCILE.KEYRING RELOAD | LIST`.
pub fn keyring_command(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
) -> c_int {
    let args = ffi::argv_slice(argv, argc);
    let [_, sub] = args else {
        return ffi::wrong_arity(ctx);
    };
    let sub = ffi::bytes(*sub);
    if sub.eq_ignore_ascii_case(b"reload") {
        reload(ctx)
    } else if sub.eq_ignore_ascii_case(b"list") {
        list(ctx)
    } else {
        ffi::reply_error(
            ctx,
            "ERR unknown subcommand: use RECONCILE.KEYRING RELOAD or LIST",
        )
    }
}

fn reload(ctx: *mut RedisModuleCtx) -> c_int {
    let Some(settings) = state::settings() else {
        return ffi::reply_error(ctx, "ERR the reconcile module is not initialised");
    };
    match Keyring::load(&settings.keyring) {
        Ok(ring) => {
            let line = format!(
                "keyring reloaded: {} keys, signing kid {}",
                ring.keys().len(),
                ring.signing().kid()
            );
            state::replace_keyring(ring);
            Stats::add(&STATS.keyring_reloads, 1);
            ffi::log(ctx, Level::Notice, &line);
            ffi::reply_ok(ctx)
        }
        Err(e) => {
            Stats::add(&STATS.keyring_reload_failures, 1);
            ffi::log(
                ctx,
                Level::Warning,
                &format!("keyring reload failed, the current keyring stays: {e}"),
            );
            ffi::reply_error(
                ctx,
                &format!("ERR keyring reload failed, the current keyring stays in force: {e}"),
            )
        }
    }
}

fn list(ctx: *mut RedisModuleCtx) -> c_int {
    let Some(ring) = state::keyring() else {
        return ffi::reply_error(ctx, "ERR the reconcile module is not initialised");
    };
    ffi::reply_array(ctx, ring.keys().len());
    for (i, key) in ring.keys().iter().enumerate() {
        ffi::reply_array(ctx, 3);
        ffi::reply_bulk(ctx, key.kid().as_bytes());
        ffi::reply_bulk(ctx, if i == 0 { b"signing" } else { b"verifying" });
        ffi::reply_bulk(ctx, key.fingerprint().as_bytes());
    }
    ffi::OK
}

/// `INFO reconcile`. Redis prefixes each field with `reconcile_`.
pub extern "C" fn info(ictx: *mut raw::RedisModuleInfoCtx, _for_crash_report: c_int) {
    api!(RedisModule_InfoAddSection(ictx, ptr::null_mut()) or ffi::ERR);
    let counters: [(&CStr, u64); 7] = [
        (c"signed_total", Stats::get(&STATS.signed)),
        (
            c"signed_unpropagated_total",
            Stats::get(&STATS.signed_unpropagated),
        ),
        (c"verified_total", Stats::get(&STATS.verified)),
        (c"rejected_total", STATS.rejected_total()),
        (c"guard_denied_total", Stats::get(&STATS.guard_denied)),
        (c"quarantined_total", Stats::get(&STATS.quarantined)),
        (c"keyring_reloads_total", Stats::get(&STATS.keyring_reloads)),
    ];
    for (name, value) in counters {
        add_u64(ictx, name, value);
    }
    add_u64(
        ictx,
        c"keyring_reload_failures_total",
        Stats::get(&STATS.keyring_reload_failures),
    );
    for why in Rejection::ALL {
        let name = format!("rejected_{}", why.as_str());
        let count = STATS.rejected.get(why.index()).map(Stats::get).unwrap_or(0);
        if let Ok(name) = CString::new(name) {
            add_u64(ictx, &name, count);
        }
    }
    if let Some(ring) = state::keyring() {
        add_u64(ictx, c"keyring_keys", ring.keys().len() as u64);
        // A KID is 1-32 characters of [A-Za-z0-9._-], so it holds no NUL.
        if let Ok(kid) = CString::new(ring.signing().kid()) {
            api!(RedisModule_InfoAddFieldCString(ictx, c"keyring_active_kid".as_ptr(), kid.as_ptr().cast_mut()) or ffi::ERR);
        }
    }
    add_u64(ictx, c"max_age_ms", state::max_age_ms());
    if let Some(settings) = state::settings() {
        add_u64(ictx, c"guarded_streams", settings.guards.len() as u64);
    }
}

fn add_u64(ictx: *mut raw::RedisModuleInfoCtx, name: &CStr, value: u64) {
    api!(RedisModule_InfoAddFieldULongLong(ictx, name.as_ptr(), value) or ffi::ERR);
}

/// Registers `reconcile.max-age-ms` (CONFIG GET/SET) and applies any value from redis.conf.
pub fn register_config(ctx: *mut RedisModuleCtx) -> bool {
    let default = state::MAX_AGE_MS.load(Ordering::Relaxed);
    let status = api!(RedisModule_RegisterNumericConfig(
        ctx,
        c"max-age-ms".as_ptr(),
        default,
        raw::REDISMODULE_CONFIG_DEFAULT as c_uint,
        MIN_MAX_AGE_MS,
        MAX_MAX_AGE_MS,
        Some(get_max_age),
        Some(set_max_age),
        None,
        ptr::null_mut()
    ) or ffi::ERR);
    status == ffi::OK && api!(RedisModule_LoadConfigs(ctx) or ffi::ERR) == ffi::OK
}

extern "C" fn get_max_age(_name: *const c_char, _privdata: *mut c_void) -> c_longlong {
    state::MAX_AGE_MS.load(Ordering::Relaxed)
}

extern "C" fn set_max_age(
    _name: *const c_char,
    value: c_longlong,
    _privdata: *mut c_void,
    _err: *mut *mut RedisModuleString,
) -> c_int {
    // Redis has already checked the bounds given at registration.
    state::MAX_AGE_MS.store(value, Ordering::Relaxed);
    ffi::OK
}

//! Whether anything would read an append the module replicates.
//!
//! A master propagates a write to three readers: the append-only file, its replicas, and the
//! replication backlog it keeps for replicas that reconnect. When it has none of them, Redis
//! drops a propagated command at once; but `RedisModule_Replicate` has by then looked the command
//! up by name and copied its arguments, about a sixth of what `RECONCILE.XADDSIGNED` costs. A
//! native `XADD` pays nothing of the kind. Redis 7.0 tells a module whether the AOF is on, and
//! whether the server is a master, but not whether a backlog exists, so the module keeps its own
//! view of that:
//!
//! - It is read from `INFO replication` (no connected replica and no backlog), at most once a
//!   second, and starts unknown.
//! - A backlog is created, and a replica added, only by a replica's `SYNC` or `PSYNC`. The
//!   command filter sees every command before it runs, and marks the view as having listeners
//!   when it sees one of these.
//! - A change of role marks the view unknown: a promoted replica keeps its backlog.
//!
//! A view that is wrong in the safe direction only costs the lookup. When it says nobody
//! listens, the append is counted as a change with `RedisModule_ReplicateVerbatim`, which
//! Redis drops for the same reason, so save points still see every signed entry.

use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redis_module::raw;

use crate::ffi::{self, api, RedisModuleCtx};

/// How long a view that found listeners stands before `INFO replication` is read again.
const RECHECK_MS: u64 = 1000;

/// The last reading found no replica and no backlog, and nothing has happened since that
/// could have created either.
static QUIET: AtomicBool = AtomicBool::new(false);
/// When the view was last read or marked, in server milliseconds; 0 means never.
static MARKED_MS: AtomicU64 = AtomicU64::new(0);

/// When nothing would read a command replicated now, counts the command's change for the save
/// points, as replicating it would have, and returns true. `flags` are the context's flags.
pub fn count_if_unheard(ctx: *mut RedisModuleCtx, flags: u32) -> bool {
    unheard(ctx, flags) && api!(RedisModule_ReplicateVerbatim(ctx) or ffi::ERR) == ffi::OK
}

fn unheard(ctx: *mut RedisModuleCtx, flags: u32) -> bool {
    let heard_or_unsure = raw::REDISMODULE_CTX_FLAGS_AOF
        | raw::REDISMODULE_CTX_FLAGS_SLAVE
        | raw::REDISMODULE_CTX_FLAGS_LOADING;
    if flags & heard_or_unsure != 0 || flags & raw::REDISMODULE_CTX_FLAGS_MASTER == 0 {
        return false;
    }
    if QUIET.load(Ordering::Relaxed) {
        return true;
    }
    let now = ffi::now_ms();
    let marked = MARKED_MS.load(Ordering::Relaxed);
    if marked != 0 && now.saturating_sub(marked) < RECHECK_MS {
        return false;
    }
    MARKED_MS.store(now.max(1), Ordering::Relaxed);
    let quiet = no_replicas_and_no_backlog(ctx);
    QUIET.store(quiet, Ordering::Relaxed);
    quiet
}

/// Whether `name` is a command by which a replica attaches to this server.
pub fn attaches_replica(name: &[u8]) -> bool {
    matches!(name.len(), 4 | 5)
        && (name.eq_ignore_ascii_case(b"sync") || name.eq_ignore_ascii_case(b"psync"))
}

/// A replica is attaching: from now on it, or the backlog kept for it, reads every write.
pub fn replica_attaching() {
    QUIET.store(false, Ordering::Relaxed);
    MARKED_MS.store(ffi::now_ms().max(1), Ordering::Relaxed);
}

/// Subscribes to changes of role. Returns false if the server refused.
pub fn register(ctx: *mut RedisModuleCtx) -> bool {
    let event = raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED,
        dataver: 1,
    };
    let status =
        api!(RedisModule_SubscribeToServerEvent(ctx, event, Some(role_changed)) or ffi::ERR);
    status == ffi::OK
}

extern "C" fn role_changed(
    _ctx: *mut RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    QUIET.store(false, Ordering::Relaxed);
    MARKED_MS.store(0, Ordering::Relaxed);
}

/// Reads `INFO replication`. Anything it cannot read counts as a listener.
fn no_replicas_and_no_backlog(ctx: *mut RedisModuleCtx) -> bool {
    let info = api!(RedisModule_GetServerInfo(ctx, c"replication".as_ptr()) or ptr::null_mut());
    if info.is_null() {
        return false;
    }
    let field = |name: &CStr| {
        let mut err: std::ffi::c_int = 0;
        let value = api!(RedisModule_ServerInfoGetFieldSigned(info, name.as_ptr(), &mut err) or {
            err = 1;
            0
        });
        (err == 0).then_some(value)
    };
    let quiet = field(c"connected_slaves") == Some(0) && field(c"repl_backlog_active") == Some(0);
    api!(RedisModule_FreeServerInfo(ctx, info) or ());
    quiet
}

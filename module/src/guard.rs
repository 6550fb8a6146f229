//! The guard: a command filter that refuses every write to a guarded stream that does not come
//! from the module itself.
//!
//! A filter runs before Redis looks the command up, for every client, for each command queued
//! in MULTI, for each `redis.call` of a script and for other modules' `RedisModule_Call`. It
//! cannot reply, so a refused command is rewritten into `RECONCILE.GUARDED <command> <key>`,
//! which answers the error and logs who tried.
//!
//! Most commands name no guarded key, and the filter lets them go after comparing their
//! arguments with the guarded names; for long commands whose one key is their first argument,
//! after comparing that argument alone. Only when an argument matches does it ask Redis which
//! arguments are keys and how the command uses them.

use std::ffi::{c_int, c_void};
use std::ptr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use redis_module::raw;

use crate::ffi::{self, api, bytes, OwnedString, RedisModuleCtx, RedisModuleString};
use crate::log::RateLimitedLog;
use crate::propagation;
use crate::state::{self, Stats, STATS};

/// The command a refused one is rewritten into.
pub const DENY_COMMAND: &str = "RECONCILE.GUARDED";

/// How Redis describes one key argument of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyUse {
    pub pos: usize,
    /// `REDISMODULE_CMD_KEY_*` bits, or `None` when the server cannot tell.
    pub flags: Option<u64>,
}

/// What Redis knows about the key arguments of a command.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyInfo {
    Keys(Vec<KeyUse>),
    /// Unknown command or wrong arity: Redis refuses it on its own after the filter.
    Invalid,
}

/// The filter's decision.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Deny { key: Vec<u8> },
}

const KEY_RO: u64 = raw::REDISMODULE_CMD_KEY_RO as u64;
const KEY_NOT_KEY: u64 = raw::REDISMODULE_CMD_KEY_NOT_KEY as u64;
const KEY_WRITES: u64 = (raw::REDISMODULE_CMD_KEY_RW
    | raw::REDISMODULE_CMD_KEY_OW
    | raw::REDISMODULE_CMD_KEY_RM
    | raw::REDISMODULE_CMD_KEY_UPDATE
    | raw::REDISMODULE_CMD_KEY_INSERT
    | raw::REDISMODULE_CMD_KEY_DELETE) as u64;

/// Consumer-group bookkeeping: writes to the group state, never to the entries.
const GROUP_COMMANDS: [&[u8]; 5] = [b"xreadgroup", b"xack", b"xclaim", b"xautoclaim", b"xgroup"];
/// Scripts pass: each `redis.call` inside them goes through the filter on its own.
const SCRIPT_COMMANDS: [&[u8]; 6] = [
    b"eval",
    b"evalsha",
    b"eval_ro",
    b"evalsha_ro",
    b"fcall",
    b"fcall_ro",
];
/// Read-only for the source key, yet they duplicate or move a guarded stream's content.
const BOTH_SIDES: [&[u8]; 1] = [b"copy"];
/// Commands that wipe or swap whole databases, guarded streams included.
const WHOLE_DB: [&[u8]; 3] = [b"flushall", b"flushdb", b"swapdb"];
/// Commands that only read their keys, for servers that report no key flags (Redis 7.0 and
/// Valkey 8.0 answer 0 for the keys of ordinary commands). Any other command naming a guarded
/// key is taken for a write.
const READS: [&[u8]; 17] = [
    b"xrange",
    b"xrevrange",
    b"xread",
    b"xlen",
    b"xinfo",
    b"xpending",
    b"type",
    b"exists",
    b"dump",
    b"object",
    b"ttl",
    b"pttl",
    b"expiretime",
    b"pexpiretime",
    b"touch",
    b"memory",
    b"watch",
];

/// Commands whose one key is their first argument, and which often carry many arguments: for
/// these the guard compares that argument alone instead of every one. The list is checked
/// against the server's own key table when the module loads (see [`confirm_single_key`]); a
/// command Redis describes otherwise, or does not know, keeps the full comparison.
const SINGLE_KEY: [&[u8]; 20] = [
    b"xadd",
    b"hset",
    b"hmset",
    b"hdel",
    b"hmget",
    b"sadd",
    b"srem",
    b"smismember",
    b"zadd",
    b"zrem",
    b"zmscore",
    b"lpush",
    b"rpush",
    b"lpushx",
    b"rpushx",
    b"xdel",
    b"pfadd",
    b"geoadd",
    b"geopos",
    b"geohash",
];

/// Shorter commands are compared in full: they have few arguments to compare anyway.
const SINGLE_KEY_MIN_ARGS: c_int = 5;

/// The entries of [`SINGLE_KEY`] the server confirmed at load.
static SINGLE_KEY_CONFIRMED: OnceLock<Vec<&'static [u8]>> = OnceLock::new();

fn one_of(name: &[u8], list: &[&[u8]]) -> bool {
    list.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Decides for a command whose arguments at the positions in `hits` equal guarded names.
///
/// Every hit is judged: a guarded name in a value position must not hide the same name later
/// in a key position (`MSET a G G x`).
pub fn decide(name: &[u8], hits: &[(usize, &[u8])], info: impl FnOnce() -> KeyInfo) -> Verdict {
    let Some(&(_, first)) = hits.first() else {
        return Verdict::Pass;
    };
    if is_own_command(name) {
        return Verdict::Pass;
    }
    if one_of(name, &SCRIPT_COMMANDS) || one_of(name, &GROUP_COMMANDS) {
        return Verdict::Pass;
    }
    if one_of(name, &BOTH_SIDES) {
        return Verdict::Deny {
            key: first.to_vec(),
        };
    }
    let KeyInfo::Keys(keys) = info() else {
        return Verdict::Pass;
    };
    for &(pos, key) in hits {
        for k in keys.iter().filter(|k| k.pos == pos) {
            let writes = match k.flags {
                Some(0) | None => !one_of(name, &READS),
                Some(f) if f & KEY_NOT_KEY != 0 => false,
                Some(f) => f & KEY_WRITES != 0 || f & KEY_RO == 0,
            };
            if writes {
                return Verdict::Deny { key: key.to_vec() };
            }
        }
    }
    Verdict::Pass
}

fn is_own_command(name: &[u8]) -> bool {
    name.get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"reconcile."))
}

/// Whether a command without a guarded key argument is refused all the same.
/// `arg(i)` gives argument `i`; it is called only for MODULE, off the hot path.
pub fn refused_without_key<'a>(name: &[u8], arg: impl Fn(c_int) -> &'a [u8]) -> bool {
    // Every name below is six to eight letters long; most commands are turned away here.
    if !(6..=8).contains(&name.len()) {
        return false;
    }
    if one_of(name, &WHOLE_DB) {
        return true;
    }
    name.eq_ignore_ascii_case(b"module")
        && arg(1).eq_ignore_ascii_case(b"unload")
        && arg(2).eq_ignore_ascii_case(b"reconcile")
}

/// A detached context for the filter, which receives none of its own.
static FILTER_CTX: Mutex<usize> = Mutex::new(0);

/// Registers the filter. `ctx` is the load context.
pub fn register(ctx: *mut RedisModuleCtx) -> bool {
    let detached = api!(RedisModule_GetDetachedThreadSafeContext(ctx) or ptr::null_mut());
    *FILTER_CTX.lock().unwrap_or_else(|e| e.into_inner()) = detached as usize;
    let confirmed = confirm_single_key(ctx);
    let _ = SINGLE_KEY_CONFIRMED.set(confirmed);
    let filter = api!(RedisModule_RegisterCommandFilter(ctx, Some(filter), 0) or ptr::null_mut());
    !filter.is_null()
}

/// The commands of [`SINGLE_KEY`] for which the server reports exactly one key, the first
/// argument, in a call of nine arguments. A range of keys (as `MSET` or `DEL` have) would show
/// more than one; a renamed or missing command shows none. A key that only an option brings in
/// (as `STORE` does for `SORT`) would not show in this call: none of the listed commands has
/// one in Redis 7.0 or Valkey 8.0, and a server version that added one would need this list
/// reviewed.
fn confirm_single_key(ctx: *mut RedisModuleCtx) -> Vec<&'static [u8]> {
    const SAMPLE: [&[u8]; 8] = [b"k", b"1", b"2", b"3", b"4", b"5", b"6", b"7"];
    SINGLE_KEY
        .into_iter()
        .filter(|&name| {
            let words: Vec<OwnedString> = std::iter::once(name)
                .chain(SAMPLE)
                .filter_map(OwnedString::new)
                .collect();
            let argv: Vec<*mut RedisModuleString> = words.iter().map(|w| w.as_ptr()).collect();
            argv.len() == SAMPLE.len() + 1
                && matches!(keys_of(ctx, &argv), KeyInfo::Keys(keys)
                    if keys.iter().map(|k| k.pos).eq([1]))
        })
        .collect()
}

/// Whether only the first argument of this command needs comparing.
fn single_key(name: &[u8], argc: c_int) -> bool {
    argc >= SINGLE_KEY_MIN_ARGS
        && SINGLE_KEY_CONFIRMED
            .get()
            .is_some_and(|list| one_of(name, list))
}

/// How many commands the guard compares by their key alone, for the load log.
pub fn single_key_commands() -> usize {
    SINGLE_KEY_CONFIRMED.get().map_or(0, Vec::len)
}

fn filter_ctx() -> *mut RedisModuleCtx {
    *FILTER_CTX.lock().unwrap_or_else(|e| e.into_inner()) as *mut RedisModuleCtx
}

extern "C" fn filter(fctx: *mut raw::RedisModuleCommandFilterCtx) {
    // This runs before every command of every client, so the API pointers are read once per
    // call rather than once per argument. Load refuses a server that lacks any of them.
    // SAFETY: plain reads of pointers Redis set at load and never writes again.
    let pointers = unsafe {
        (
            raw::RedisModule_CommandFilterArgsCount,
            raw::RedisModule_CommandFilterArgGet,
            raw::RedisModule_StringPtrLen,
        )
    };
    let (Some(count), Some(get), Some(ptr_len)) = pointers else {
        return;
    };
    let arg = |pos: c_int| -> &'static [u8] {
        // SAFETY: `fctx` is the live filter context; `pos` is below its argument count.
        let s = unsafe { get(fctx, pos) };
        if s.is_null() {
            return &[];
        }
        let mut len: usize = 0;
        // SAFETY: `s` is an argument string of this command, alive for the filter call.
        let p = unsafe { ptr_len(s, &mut len) };
        if p.is_null() {
            return &[];
        }
        // SAFETY: Redis returned a pointer to `len` initialised bytes owned by `s`.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
    };
    // SAFETY: `fctx` is the live filter context.
    let argc = unsafe { count(fctx) };
    if argc < 1 {
        return;
    }
    let name = arg(0);
    // The module's own commands write only through the module; skip the argument scan.
    if is_own_command(name) {
        return;
    }
    if propagation::attaches_replica(name) {
        propagation::replica_attaching();
        return;
    }
    let verdict = if refused_without_key(name, arg) {
        let key: &[u8] = if name.eq_ignore_ascii_case(b"module") {
            b"reconcile"
        } else {
            b"*"
        };
        Verdict::Deny { key: key.to_vec() }
    } else {
        let protected = state::protected_names();
        let mut hits: Vec<(usize, &[u8])> = Vec::new();
        let scan_end = if single_key(name, argc) { 2 } else { argc };
        for i in 1..scan_end {
            let a = arg(i);
            if let Some(p) = protected.iter().find(|p| p.as_slice() == a) {
                hits.push((i as usize, p.as_slice()));
            }
        }
        if hits.is_empty() {
            return;
        }
        decide(name, &hits, || key_info(fctx, argc))
    };
    if let Verdict::Deny { key } = verdict {
        Stats::add(&STATS.guard_denied, 1);
        let name = name.to_vec();
        rewrite_as_denied(fctx, argc, &name, &key);
    }
}

/// Asks Redis which arguments of the filtered command are keys and how it uses each.
fn key_info(fctx: *mut raw::RedisModuleCommandFilterCtx, argc: c_int) -> KeyInfo {
    let argv: Vec<*mut RedisModuleString> = (0..argc)
        .map(|i| api!(RedisModule_CommandFilterArgGet(fctx, i) or ptr::null_mut()))
        .collect();
    keys_of(filter_ctx(), &argv)
}

/// Which arguments of the command `argv` are keys, and how it uses each, by the server's
/// command table. `ctx` is any context of this module.
fn keys_of(ctx: *mut RedisModuleCtx, argv: &[*mut RedisModuleString]) -> KeyInfo {
    let Ok(argc) = c_int::try_from(argv.len()) else {
        return KeyInfo::Invalid;
    };
    if argv.iter().any(|a| a.is_null()) {
        return KeyInfo::Invalid;
    }
    let mut num: c_int = 0;
    let mut flags: *mut c_int = ptr::null_mut();
    // SAFETY: plain reads of pointers set at load.
    let with_flags = unsafe { raw::RedisModule_GetCommandKeysWithFlags }.is_some();
    let positions = if with_flags {
        api!(RedisModule_GetCommandKeysWithFlags(ctx, argv.as_ptr().cast_mut(), argc, &mut num, &mut flags)
            or ptr::null_mut())
    } else {
        api!(RedisModule_GetCommandKeys(ctx, argv.as_ptr().cast_mut(), argc, &mut num) or ptr::null_mut())
    };
    if positions.is_null() {
        // No keys (errno 0), or an unknown command or wrong arity that Redis refuses itself.
        return if errno() == 0 {
            KeyInfo::Keys(Vec::new())
        } else {
            KeyInfo::Invalid
        };
    }
    let n = usize::try_from(num).unwrap_or(0);
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: Redis returned arrays of `num` ints; `flags` is set only when asked for.
        let pos = unsafe { *positions.add(i) };
        let f = if flags.is_null() {
            None
        } else {
            Some(unsafe { *flags.add(i) } as u64)
        };
        keys.push(KeyUse {
            pos: usize::try_from(pos).unwrap_or(usize::MAX),
            flags: f,
        });
    }
    api!(RedisModule_Free(positions.cast::<c_void>()) or ());
    if !flags.is_null() {
        api!(RedisModule_Free(flags.cast::<c_void>()) or ());
    }
    KeyInfo::Keys(keys)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Replaces the command with `RECONCILE.GUARDED <name> <key>`; its other arguments are dropped
/// so that no value of a refused write reaches a log or a monitor.
fn rewrite_as_denied(
    fctx: *mut raw::RedisModuleCommandFilterCtx,
    argc: c_int,
    name: &[u8],
    key: &[u8],
) {
    for pos in (1..argc).rev() {
        api!(RedisModule_CommandFilterArgDelete(fctx, pos) or ffi::ERR);
    }
    let replacements = [DENY_COMMAND.as_bytes(), name, key];
    let mut strings = replacements.iter().filter_map(|b| OwnedString::new(b));
    if let Some(cmd) = strings.next() {
        api!(RedisModule_CommandFilterArgReplace(fctx, 0, cmd.into_raw()) or ffi::ERR);
    }
    for (pos, s) in (1..).zip(strings) {
        api!(RedisModule_CommandFilterArgInsert(fctx, pos, s.into_raw()) or ffi::ERR);
    }
}

/// `RECONCILE.GUARDED <command> <key>`: the refusal of a write the filter stopped.
pub fn denied_command(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
) -> c_int {
    let args = ffi::argv_slice(argv, argc);
    let name = args.get(1).map(|&a| bytes(a)).unwrap_or(b"write");
    let key = args.get(2).map(|&a| bytes(a)).unwrap_or(b"?");
    let shown_name = ffi::printable(name).to_ascii_lowercase();
    let shown_key = ffi::printable(key);
    log_refusal(ctx, &shown_name, &shown_key);
    let message = if name.eq_ignore_ascii_case(b"module") {
        "GUARDED the reconcile module cannot be unloaded: it guards streams that move money; \
         restart Redis without it instead"
            .to_string()
    } else if key == b"*" {
        format!(
            "GUARDED {shown_name} would wipe guarded streams and is refused while the reconcile \
             module is loaded; entries are written only by RECONCILE.XADDSIGNED"
        )
    } else {
        format!(
            "GUARDED {shown_name} on guarded key '{shown_key}' is refused: entries are written \
             only by RECONCILE.XADDSIGNED"
        )
    };
    ffi::reply_error(ctx, &message)
}

/// Refusal lines: enough to find the culprit, never enough to fill the disk.
static REFUSALS: RateLimitedLog = RateLimitedLog::new(10, Duration::from_secs(10));

fn log_refusal(ctx: *mut RedisModuleCtx, name: &str, key: &str) {
    REFUSALS.warn(ctx, || {
        let addr = ffi::client_address(ctx).unwrap_or_else(|| "internal".to_string());
        let user = ffi::current_user(ctx)
            .map(|u| ffi::printable(&u))
            .unwrap_or_else(|| "unknown".to_string());
        format!(
            "guard refused command={name} key={key} client={addr} user={user}: only \
             RECONCILE.XADDSIGNED writes guarded streams"
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &[u8] = b"quantum:stream:reconcile.close";
    const RW: u64 = (raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE) as u64;
    const RO: u64 = (raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS) as u64;
    const OW: u64 = (raw::REDISMODULE_CMD_KEY_OW | raw::REDISMODULE_CMD_KEY_UPDATE) as u64;

    fn keys(list: &[(usize, u64)]) -> KeyInfo {
        KeyInfo::Keys(
            list.iter()
                .map(|&(pos, f)| KeyUse {
                    pos,
                    flags: Some(f),
                })
                .collect(),
        )
    }

    fn denied(v: Verdict) -> bool {
        matches!(v, Verdict::Deny { .. })
    }

    #[test]
    fn writes_to_the_guarded_key_are_refused() {
        assert!(denied(decide(b"XADD", &[(1, G)], || keys(&[(1, RW)]))));
        assert!(denied(decide(b"rename", &[(2, G)], || keys(&[
            (1, RW),
            (2, OW)
        ]))));
        assert!(denied(decide(b"set", &[(1, G)], || keys(&[(1, OW)]))));
    }

    #[test]
    fn reads_and_group_bookkeeping_pass() {
        assert_eq!(
            decide(b"xrange", &[(1, G)], || keys(&[(1, RO)])),
            Verdict::Pass
        );
        assert_eq!(
            decide(b"XACK", &[(1, G)], || keys(&[(1, RW)])),
            Verdict::Pass
        );
        assert_eq!(
            decide(b"xreadgroup", &[(6, G)], || keys(&[(6, RW)])),
            Verdict::Pass
        );
    }

    #[test]
    fn guarded_name_as_a_value_passes() {
        assert_eq!(
            decide(b"set", &[(2, G)], || keys(&[(1, OW)])),
            Verdict::Pass
        );
        assert_eq!(decide(b"publish", &[(1, G)], || keys(&[])), Verdict::Pass);
    }

    #[test]
    fn guarded_name_as_a_value_does_not_hide_it_as_a_key() {
        // MSET other G G x: position 2 is a value, position 3 a key.
        let mset = || keys(&[(1, OW), (3, OW)]);
        assert!(denied(decide(b"mset", &[(2, G), (3, G)], mset)));
        // SORT numbers BY G STORE G
        let sort = || keys(&[(1, RO), (5, OW)]);
        assert!(denied(decide(b"sort", &[(3, G), (5, G)], sort)));
    }

    #[test]
    fn copy_is_refused_from_either_side() {
        assert!(denied(decide(b"COPY", &[(1, G)], || keys(&[
            (1, RO),
            (2, OW)
        ]))));
        assert!(denied(decide(b"copy", &[(2, G)], || keys(&[
            (1, RO),
            (2, OW)
        ]))));
    }

    #[test]
    fn server_without_key_flags_falls_back_to_the_read_list() {
        // Redis 7.0.15 reports 0 for every key's flags.
        assert_eq!(
            decide(b"XRANGE", &[(1, G)], || keys(&[(1, 0)])),
            Verdict::Pass
        );
        assert_eq!(
            decide(b"xinfo", &[(2, G)], || keys(&[(2, 0)])),
            Verdict::Pass
        );
        assert!(denied(decide(b"xadd", &[(1, G)], || keys(&[(1, 0)]))));
        assert!(denied(decide(b"get", &[(1, G)], || keys(&[(1, 0)]))));
    }

    #[test]
    fn key_with_unknown_flags_counts_as_a_write() {
        let incomplete = raw::REDISMODULE_CMD_KEY_INCOMPLETE as u64;
        assert!(denied(decide(b"other.cmd", &[(1, G)], || keys(&[(
            1, incomplete
        )]))));
        let without_flags = KeyInfo::Keys(vec![KeyUse {
            pos: 1,
            flags: None,
        }]);
        assert!(denied(decide(b"del", &[(1, G)], || without_flags)));
        let without_flags = KeyInfo::Keys(vec![KeyUse {
            pos: 1,
            flags: None,
        }]);
        assert_eq!(decide(b"xlen", &[(1, G)], || without_flags), Verdict::Pass);
    }

    #[test]
    fn scripts_and_module_commands_pass_without_asking() {
        let never = || -> KeyInfo { unreachable!("key lookup not needed") };
        assert_eq!(decide(b"EVAL", &[(3, G)], never), Verdict::Pass);
        assert_eq!(
            decide(b"reconcile.xaddsigned", &[(1, G)], never),
            Verdict::Pass
        );
    }

    #[test]
    fn whole_database_commands_and_unload_are_refused() {
        let args = |list: &'static [&'static [u8]]| move |i: c_int| list[i as usize];
        assert!(refused_without_key(b"FLUSHALL", args(&[b"FLUSHALL"])));
        assert!(refused_without_key(
            b"swapdb",
            args(&[b"swapdb", b"0", b"1"])
        ));
        assert!(refused_without_key(
            b"MODULE",
            args(&[b"MODULE", b"UNLOAD", b"reconcile"])
        ));
        assert!(!refused_without_key(
            b"module",
            args(&[b"module", b"list", b""])
        ));
        assert!(!refused_without_key(
            b"module",
            args(&[b"module", b"unload", b"other"])
        ));
        assert!(!refused_without_key(b"get", args(&[b"get", b"k"])));
    }
}

//! Appending entries to streams through the low-level stream API, and replicating them.
//!
//! The module never writes a guarded stream with a plain XADD: its own filter would refuse it,
//! on this server and on a replica alike. Each append is replicated (to replicas and the AOF)
//! as `RECONCILE.XADDREPL key id keep field value ...`, which a server running the module
//! applies only when it comes from its master or from loading the AOF. `keep` is the exact
//! length the stream had after trimming, or `*` when nothing was trimmed, so the copy ends up
//! identical even when the trim was approximate.

use std::ffi::{c_int, c_long};
use std::ptr;

use redis_module::raw;

use crate::args::{ErrorReply, NewId, StreamId, Trim, TrimSpec};
use crate::ffi::{self, api, Key, OwnedString, RedisModuleCtx, RedisModuleString};

/// The internal command that carries appends to replicas and the AOF.
pub const REPLICATION_COMMAND: &std::ffi::CStr = c"RECONCILE.XADDREPL";

/// What an append did.
pub struct Appended {
    pub id: StreamId,
    /// Length of the stream after trimming, if the trim removed anything.
    pub keep: Option<usize>,
}

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// Appends `fields` (field, value, ...) to the stream `name`.
///
/// Returns `Ok(None)` when `create` is false and the stream does not exist.
pub fn append(
    ctx: *mut RedisModuleCtx,
    name: *mut RedisModuleString,
    id: NewId,
    fields: &[*mut RedisModuleString],
    trim: Option<TrimSpec>,
    create: bool,
) -> Result<Option<Appended>, ErrorReply> {
    let key =
        Key::open(ctx, name, true).ok_or_else(|| ErrorReply("ERR cannot open the key".into()))?;
    if key.is_empty() {
        if !create {
            return Ok(None);
        }
    } else if !key.is_stream() {
        return Err(ErrorReply(WRONGTYPE.into()));
    }

    let mut raw_id = match id {
        NewId::Auto => raw::RedisModuleStreamID { ms: 0, seq: 0 },
        NewId::Explicit(id) => raw::RedisModuleStreamID {
            ms: id.ms,
            seq: id.seq,
        },
    };
    let flags = match id {
        NewId::Auto => raw::REDISMODULE_STREAM_ADD_AUTOID as c_int,
        NewId::Explicit(_) => 0,
    };
    let pairs = (fields.len() / 2) as i64;
    let status = api!(RedisModule_StreamAdd(
        key.as_ptr(),
        flags,
        &mut raw_id,
        fields.as_ptr().cast_mut(),
        pairs
    ) or ffi::ERR);
    if status != ffi::OK {
        return Err(add_error());
    }
    ffi::notify(ctx, c"xadd", name);

    let trimmed = trim.map(|t| trim_stream(&key, t)).unwrap_or(0);
    if trimmed > 0 {
        ffi::notify(ctx, c"xtrim", name);
    }
    let keep = (trimmed > 0).then(|| key.len());
    Ok(Some(Appended {
        id: StreamId {
            ms: raw_id.ms,
            seq: raw_id.seq,
        },
        keep,
    }))
}

fn add_error() -> ErrorReply {
    // errno values on Linux, as the stream API sets them.
    const EDOM: i32 = 33;
    const EFBIG: i32 = 27;
    let text = match std::io::Error::last_os_error().raw_os_error().unwrap_or(0) {
        EDOM => "ERR The ID specified in XADD is equal or smaller than the target stream top item",
        EFBIG => "ERR The stream has exhausted the last possible ID, unable to add more items",
        _ => "ERR the entry could not be added to the stream",
    };
    ErrorReply(text.into())
}

fn trim_stream(key: &Key, trim: TrimSpec) -> i64 {
    let flags = if trim.approx {
        raw::REDISMODULE_STREAM_TRIM_APPROX as c_int
    } else {
        0
    };
    let removed = match trim.how {
        Trim::MaxLen(n) => {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            api!(RedisModule_StreamTrimByLength(key.as_ptr(), flags, n) or 0)
        }
        Trim::MinId(id) => {
            let mut raw_id = raw::RedisModuleStreamID {
                ms: id.ms,
                seq: id.seq,
            };
            api!(RedisModule_StreamTrimByID(key.as_ptr(), flags, &mut raw_id) or 0)
        }
    };
    removed.max(0)
}

/// Replicates an append as `RECONCILE.XADDREPL`.
pub fn replicate(
    ctx: *mut RedisModuleCtx,
    name: *mut RedisModuleString,
    appended: &Appended,
    fields: &[*mut RedisModuleString],
) {
    let mut length = itoa::Buffer::new();
    let keep: &[u8] = match appended.keep {
        Some(n) => length.format(n).as_bytes(),
        None => b"*",
    };
    let (Some(id), Some(keep)) = (
        OwnedString::new(appended.id.text().as_bytes()),
        OwnedString::new(keep),
    ) else {
        return;
    };
    let mut argv: Vec<*mut RedisModuleString> = Vec::with_capacity(fields.len() + 3);
    argv.push(name);
    argv.push(id.as_ptr());
    argv.push(keep.as_ptr());
    argv.extend_from_slice(fields);
    api!(RedisModule_Replicate(
        ctx,
        REPLICATION_COMMAND.as_ptr(),
        c"v".as_ptr(),
        argv.as_mut_ptr(),
        argv.len()
    ) or ffi::ERR);
}

/// `RECONCILE.XADDREPL key id keep field value ...`: applies an append made by the module on the
/// master. Refused from any other client, so it is no way around the guard.
pub fn xaddrepl_command(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
) -> c_int {
    let args = ffi::argv_slice(argv, argc);
    let from_master_or_aof = ffi::context_flags(ctx)
        & (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING)
        != 0;
    if !from_master_or_aof {
        return ffi::reply_error(
            ctx,
            "ERR RECONCILE.XADDREPL is internal: it applies only entries replicated from the \
             master or loaded from the append-only file",
        );
    }
    let (Some(&name), Some(&id), Some(&keep), Some(fields)) =
        (args.get(1), args.get(2), args.get(3), args.get(4..))
    else {
        return ffi::wrong_arity(ctx);
    };
    if fields.len() < 2 || fields.len() % 2 != 0 {
        return ffi::wrong_arity(ctx);
    }
    let Some(id) = StreamId::parse(ffi::bytes(id)) else {
        return ffi::reply_error(
            ctx,
            "ERR Invalid stream ID specified as stream command argument",
        );
    };
    let keep = match ffi::bytes(keep) {
        b"*" => None,
        text => match std::str::from_utf8(text)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(n) => Some(TrimSpec {
                how: Trim::MaxLen(n),
                approx: false,
            }),
            None => return ffi::reply_error(ctx, "ERR keep must be * or a length"),
        },
    };
    match append(ctx, name, NewId::Explicit(id), fields, keep, true) {
        Ok(_) => ffi::reply_ok(ctx),
        Err(e) => ffi::reply_error(ctx, &e.0),
    }
}

/// The ID of the last entry of a stream, or 0-0 when it is empty or missing.
pub fn last_id(ctx: *mut RedisModuleCtx, name: *mut RedisModuleString) -> StreamId {
    let Some(key) = Key::open(ctx, name, false) else {
        return StreamId::ZERO;
    };
    if !key.is_stream() {
        return StreamId::ZERO;
    }
    let started = api!(RedisModule_StreamIteratorStart(
        key.as_ptr(),
        raw::REDISMODULE_STREAM_ITERATOR_REVERSE as c_int,
        ptr::null_mut(),
        ptr::null_mut()
    ) or ffi::ERR);
    if started != ffi::OK {
        return StreamId::ZERO;
    }
    let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
    let mut numfields: c_long = 0;
    let found =
        api!(RedisModule_StreamIteratorNextID(key.as_ptr(), &mut id, &mut numfields) or ffi::ERR);
    api!(RedisModule_StreamIteratorStop(key.as_ptr()) or ffi::ERR);
    if found == ffi::OK {
        StreamId {
            ms: id.ms,
            seq: id.seq,
        }
    } else {
        StreamId::ZERO
    }
}

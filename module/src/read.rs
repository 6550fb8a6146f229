//! `RECONCILE.XREADVERIFIED` and `RECONCILE.VERIFY`: reads that return only entries whose MAC
//! verifies.
//!
//! A verified read runs XREAD or XREADGROUP through `RedisModule_Call`, so consumer-group state
//! (pending lists, delivery counts, replication of deliveries) is exactly the native one, then
//! checks every entry before anything reaches the client. Under a group, an entry that fails is
//! acknowledged and copied to `<key>:quarantine`, so it never stalls the entries behind it and
//! is not lost.

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::time::Duration;

use redis_module::raw;

use crate::args::{parse_xread, ErrorReply, NewId, ReadFrom, StreamId, Trim, TrimSpec, XreadArgs};
use crate::ffi::{
    self, api, CallReply, CallReplyRef, OwnedString, RedisModuleCtx, RedisModuleString, ReplyKind,
};
use crate::keyring::Keyring;
use crate::log::RateLimitedLog;
use crate::mac::{check_entry, Freshness, Rejection};
use crate::resp;
use crate::settings::quarantine_name;
use crate::state::{self, Stats, STATS};
use crate::stream;

/// A quarantine stream keeps about this many entries; older ones are trimmed.
const QUARANTINE_MAXLEN: u64 = 10_000;

static REJECTIONS: RateLimitedLog = RateLimitedLog::new(10, Duration::from_secs(10));

/// A read, with every string it needs held for as long as a blocked client waits.
struct Request {
    group: Option<(OwnedString, OwnedString)>,
    keys: Vec<OwnedString>,
    from: Vec<ReadFrom>,
    count: Option<u64>,
    noack: bool,
}

impl Request {
    fn new(
        ctx: *mut RedisModuleCtx,
        args: &[*mut RedisModuleString],
        parsed: XreadArgs,
    ) -> Option<Request> {
        let retain = |i: usize| args.get(i).and_then(|&s| OwnedString::retain(s));
        let group = match parsed.group {
            Some((g, c)) => Some((retain(g)?, retain(c)?)),
            None => None,
        };
        let keys = (parsed.keys_at..parsed.keys_at + parsed.nkeys)
            .map(retain)
            .collect::<Option<Vec<_>>>()?;
        // `$` means "after what is there now": fix it once, so a blocked read that wakes up
        // later does not move its own starting point.
        let from = parsed
            .from
            .iter()
            .zip(&keys)
            .map(|(f, k)| match f {
                ReadFrom::Last => ReadFrom::After(stream::last_id(ctx, k.as_ptr())),
                other => *other,
            })
            .collect();
        Some(Request {
            group,
            keys,
            from,
            count: parsed.count,
            noack: parsed.noack,
        })
    }
}

pub fn xreadverified_command(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
) -> c_int {
    let args = ffi::argv_slice(argv, argc);
    let words: Vec<&[u8]> = args.iter().map(|&a| ffi::bytes(a)).collect();
    if ffi::is_keys_position_request(ctx) {
        if let Ok(parsed) = parse_xread(&words) {
            for pos in parsed.keys_at..parsed.keys_at + parsed.nkeys {
                ffi::key_at_pos(ctx, pos);
            }
        }
        return ffi::OK;
    }
    let parsed = match parse_xread(&words) {
        Ok(p) => p,
        Err(e) => return ffi::reply_error(ctx, &e.0),
    };
    if parsed.group.is_some() {
        if let Err(e) = group_read_allowed(ffi::context_flags(ctx)) {
            return ffi::reply_error(ctx, &e.0);
        }
    }
    let block_ms = parsed.block_ms;
    let Some(mut request) = Request::new(ctx, args, parsed) else {
        return ffi::reply_error(ctx, "ERR out of memory");
    };
    match serve(ctx, &mut request) {
        Err(e) => ffi::reply_error(ctx, &e.0),
        Ok(true) => ffi::OK,
        Ok(false) => match block_ms {
            Some(ms) if ffi::context_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_DENY_BLOCKING == 0 => {
                block(ctx, request, ms)
            }
            _ => ffi::reply_null_array(ctx),
        },
    }
}

/// The checks Redis applies to write commands, which a GROUP read is though the command is
/// declared read-only so that plain reads work on replicas.
fn group_read_allowed(flags: u32) -> Result<(), ErrorReply> {
    if flags & raw::REDISMODULE_CTX_FLAGS_SLAVE != 0 {
        return Err(ErrorReply(
            "READONLY a GROUP read changes consumer-group state and runs on the master only".into(),
        ));
    }
    if flags & raw::REDISMODULE_CTX_FLAGS_OOM != 0 {
        return Err(ErrorReply(
            "OOM command not allowed when used memory > 'maxmemory'.".into(),
        ));
    }
    Ok(())
}

fn block(ctx: *mut RedisModuleCtx, request: Request, ms: u64) -> c_int {
    let mut keys: Vec<*mut RedisModuleString> =
        request.keys.iter().map(OwnedString::as_ptr).collect();
    let nkeys = c_int::try_from(keys.len()).unwrap_or(c_int::MAX);
    let timeout = i64::try_from(ms).unwrap_or(i64::MAX);
    let privdata = Box::into_raw(Box::new(request));
    let blocked = api!(RedisModule_BlockClientOnKeys(
        ctx,
        Some(on_ready),
        Some(on_timeout),
        Some(free_request),
        timeout,
        keys.as_mut_ptr(),
        nkeys,
        privdata.cast::<c_void>()
    ) or ptr::null_mut());
    if blocked.is_null() {
        // SAFETY: Redis did not take the pointer, so it is still ours to free.
        drop(unsafe { Box::from_raw(privdata) });
        return ffi::reply_error(ctx, "ERR the client could not be blocked");
    }
    ffi::OK
}

/// Called when a key the client waits on may hold new entries. Returning ERR keeps it blocked.
extern "C" fn on_ready(
    ctx: *mut RedisModuleCtx,
    _argv: *mut *mut RedisModuleString,
    _argc: c_int,
) -> c_int {
    let data = api!(RedisModule_GetBlockedClientPrivateData(ctx) or ptr::null_mut());
    if data.is_null() {
        ffi::reply_null_array(ctx);
        return ffi::OK;
    }
    // SAFETY: the pointer is the Box handed to BlockClientOnKeys; Redis frees it only through
    // `free_request`, after the client is unblocked, and calls this on the main thread only.
    let request = unsafe { &mut *data.cast::<Request>() };
    match serve(ctx, request) {
        Ok(true) => ffi::OK,
        Ok(false) => ffi::ERR,
        Err(e) => ffi::reply_error(ctx, &e.0),
    }
}

extern "C" fn on_timeout(
    ctx: *mut RedisModuleCtx,
    _argv: *mut *mut RedisModuleString,
    _argc: c_int,
) -> c_int {
    ffi::reply_null_array(ctx)
}

extern "C" fn free_request(_ctx: *mut RedisModuleCtx, data: *mut c_void) {
    if !data.is_null() {
        // SAFETY: `data` is the Box given to BlockClientOnKeys, freed exactly once, here.
        drop(unsafe { Box::from_raw(data.cast::<Request>()) });
    }
}

/// Entries that verified, per stream, still inside the replies that hold them.
struct Found {
    key: usize,
    replies: Vec<CallReply>,
    /// (reply, entry index) of each entry to return.
    entries: Vec<(usize, usize)>,
    /// Whether the entries to return are all of one reply's, so that the reply can be relayed
    /// as it is.
    whole: bool,
}

/// Reads once. Replies and returns true if any stream had verified entries; returns false,
/// without replying, if none had.
fn serve(ctx: *mut RedisModuleCtx, request: &mut Request) -> Result<bool, ErrorReply> {
    let Some(ring) = state::keyring() else {
        return Err(ErrorReply(
            "ERR the reconcile module is not initialised".into(),
        ));
    };
    let mut found = Vec::new();
    for key in 0..request.keys.len() {
        let f = read_stream(ctx, request, key, &ring)?;
        if !f.entries.is_empty() {
            found.push(f);
        }
    }
    if found.is_empty() {
        return Ok(false);
    }
    reply_found(ctx, request, &found);
    Ok(true)
}

fn read_stream(
    ctx: *mut RedisModuleCtx,
    request: &mut Request,
    key: usize,
    ring: &Keyring,
) -> Result<Found, ErrorReply> {
    let mut found = Found {
        key,
        replies: Vec::new(),
        entries: Vec::new(),
        whole: false,
    };
    let mut first_batch = 0;
    let Some(&from) = request.from.get(key) else {
        return Ok(found);
    };
    let mut from = from;
    let freshness = match from {
        // History of a group consumer: these entries passed the age check when first delivered.
        ReadFrom::After(_) if request.group.is_some() => None,
        _ => Some(Freshness {
            now_ms: ffi::now_ms(),
            max_age_ms: state::max_age_ms(),
        }),
    };
    let mut want = request.count;
    let stream_name = request
        .keys
        .get(key)
        .map(|k| ffi::bytes(k.as_ptr()))
        .unwrap_or_default();
    let mut rejected: Vec<(usize, Rejection)> = Vec::new();
    let mut last_seen = None;

    loop {
        let reply = call_read(ctx, request, key, from, want)?;
        let mut last = None;
        rejected.clear();
        let mut check = |i: usize, id: &[u8], fields: Option<&[&[u8]]>| {
            last = StreamId::parse(id).or(last);
            let Some(items) = fields else {
                // A pending entry whose data was trimmed away: nothing to act on, but the
                // consumer needs its ID to acknowledge it, as XREADGROUP gives it.
                found.entries.push((found.replies.len(), i));
                return;
            };
            match check_entry(ring, stream_name, items, freshness) {
                Ok(()) => {
                    Stats::add(&STATS.verified, 1);
                    found.entries.push((found.replies.len(), i));
                }
                Err(why) => {
                    STATS.reject(why);
                    rejected.push((i, why));
                }
            }
        };
        // The reply's bytes are read in place where they have the expected shape; the module
        // API's view of the reply is the fallback.
        let batch = match reply.as_ref().proto().and_then(resp::stream_read) {
            Some(read) => {
                for (i, (id, range)) in read.entries.iter().enumerate() {
                    let fields = range.clone().and_then(|r| read.items.get(r));
                    check(i, id, fields);
                }
                read.entries.len()
            }
            None => {
                let Some(entries) = stream_entries(reply.as_ref()) else {
                    break;
                };
                let mut items: Vec<&[u8]> = Vec::with_capacity(32);
                for i in 0..entries.len() {
                    let Some(entry) = entries.get(i) else {
                        continue;
                    };
                    let id = entry.get(0).map(|id| id.bytes()).unwrap_or_default();
                    match entry.get(1).filter(|f| f.kind() == ReplyKind::Array) {
                        Some(fields) => {
                            items.clear();
                            items.extend(
                                (0..fields.len())
                                    .filter_map(|j| fields.get(j))
                                    .map(|f| f.bytes()),
                            );
                            check(i, id, Some(&items));
                        }
                        None => check(i, id, None),
                    }
                }
                entries.len()
            }
        };
        if batch == 0 {
            break;
        }
        if !rejected.is_empty() {
            if let Some(entries) = stream_entries(reply.as_ref()) {
                handle_rejected(ctx, request, key, entries, &rejected);
            }
        }
        if found.replies.is_empty() {
            first_batch = batch;
        }
        last_seen = last.or(last_seen);
        found.replies.push(reply);

        // Read on only when a COUNT was given, the batch was full, and rejections left the
        // answer short; otherwise this read saw everything there was.
        let Some(count) = request.count else { break };
        let got = found.entries.len() as u64;
        if batch as u64 >= want.unwrap_or(u64::MAX) && got < count {
            want = Some(count - got);
            from = match (from, last) {
                (ReadFrom::New, _) => ReadFrom::New,
                (_, Some(id)) => ReadFrom::After(id),
                (_, None) => break,
            };
        } else {
            break;
        }
    }
    found.whole = found.replies.len() == 1 && found.entries.len() == first_batch;
    if request.group.is_none() && found.entries.is_empty() {
        // A blocked plain read starts after what it already refused instead of refusing (and
        // counting) the same entries at every wake-up.
        if let (Some(slot), Some(id)) = (request.from.get_mut(key), last_seen) {
            *slot = ReadFrom::After(id);
        }
    }
    Ok(found)
}

/// The entries array of the single stream in an XREAD/XREADGROUP reply, or None if empty.
fn stream_entries(reply: CallReplyRef<'_>) -> Option<CallReplyRef<'_>> {
    if reply.kind() != ReplyKind::Array || reply.len() == 0 {
        return None;
    }
    let entries = reply.get(0)?.get(1)?;
    (entries.kind() == ReplyKind::Array && entries.len() > 0).then_some(entries)
}

fn call_read(
    ctx: *mut RedisModuleCtx,
    request: &Request,
    key: usize,
    from: ReadFrom,
    count: Option<u64>,
) -> Result<CallReply, ErrorReply> {
    let mut owned: Vec<OwnedString> = Vec::with_capacity(8);
    let mut args: Vec<*mut RedisModuleString> = Vec::with_capacity(10);
    let mut word = |args: &mut Vec<*mut RedisModuleString>, w: &[u8]| -> Result<(), ErrorReply> {
        let s = OwnedString::new(w).ok_or_else(|| ErrorReply("ERR out of memory".into()))?;
        args.push(s.as_ptr());
        owned.push(s);
        Ok(())
    };
    if let Some((group, consumer)) = &request.group {
        word(&mut args, b"GROUP")?;
        args.push(group.as_ptr());
        args.push(consumer.as_ptr());
    }
    if let Some(n) = count {
        word(&mut args, b"COUNT")?;
        word(&mut args, n.to_string().as_bytes())?;
    }
    if request.noack {
        word(&mut args, b"NOACK")?;
    }
    word(&mut args, b"STREAMS")?;
    let Some(name) = request.keys.get(key) else {
        return Err(ErrorReply("ERR no such stream".into()));
    };
    args.push(name.as_ptr());
    match from {
        ReadFrom::New => word(&mut args, b">")?,
        ReadFrom::After(id) => word(&mut args, id.to_string().as_bytes())?,
        ReadFrom::Last => word(&mut args, b"$")?,
    }
    let (cmd, flags): (&CStr, &CStr) = if request.group.is_some() {
        (c"XREADGROUP", c"!E")
    } else {
        (c"XREAD", c"E")
    };
    let reply = CallReply::call(ctx, cmd, flags, &args)
        .ok_or_else(|| ErrorReply("ERR the read could not be run".into()))?;
    // The reply's bytes show an error without Redis parsing the whole reply.
    let error = match reply.as_ref().proto() {
        Some(proto) => {
            resp::error_text(proto).map(|text| String::from_utf8_lossy(text).into_owned())
        }
        None => (reply.as_ref().kind() == ReplyKind::Error).then(|| reply.as_ref().error_text()),
    };
    match error {
        Some(text) => Err(ErrorReply(text)),
        None => Ok(reply),
    }
}

/// Counts, logs, and under a group acknowledges and quarantines refused entries.
fn handle_rejected(
    ctx: *mut RedisModuleCtx,
    request: &Request,
    key: usize,
    entries: CallReplyRef<'_>,
    rejected: &[(usize, Rejection)],
) {
    let Some(name) = request.keys.get(key) else {
        return;
    };
    let stream_name = ffi::bytes(name.as_ptr());
    for &(i, why) in rejected {
        let id = entries
            .get(i)
            .and_then(|e| e.get(0))
            .map(|id| id.bytes())
            .unwrap_or_default();
        REJECTIONS.warn(ctx, || {
            format!(
                "refused entry {} of {}: {}{}",
                ffi::printable(id),
                ffi::printable(stream_name),
                why.as_str(),
                if request.group.is_some() {
                    ", quarantined"
                } else {
                    ""
                }
            )
        });
    }
    let Some((group, consumer)) = &request.group else {
        return;
    };
    let ids: Vec<&[u8]> = rejected
        .iter()
        .filter_map(|&(i, _)| entries.get(i).and_then(|e| e.get(0)).map(|id| id.bytes()))
        .collect();
    acknowledge(ctx, name, group, &ids);
    for &(i, why) in rejected {
        if let Some(entry) = entries.get(i) {
            quarantine(ctx, name, group, consumer, entry, why);
        }
    }
}

fn acknowledge(ctx: *mut RedisModuleCtx, name: &OwnedString, group: &OwnedString, ids: &[&[u8]]) {
    let owned: Vec<OwnedString> = ids.iter().filter_map(|id| OwnedString::new(id)).collect();
    let mut args = vec![name.as_ptr(), group.as_ptr()];
    args.extend(owned.iter().map(OwnedString::as_ptr));
    if CallReply::call(ctx, c"XACK", c"!", &args).is_none() {
        ffi::log(
            ctx,
            ffi::Level::Warning,
            "could not acknowledge refused entries",
        );
    }
}

fn quarantine(
    ctx: *mut RedisModuleCtx,
    name: &OwnedString,
    group: &OwnedString,
    consumer: &OwnedString,
    entry: CallReplyRef<'_>,
    why: Rejection,
) {
    let id = entry.get(0).map(|id| id.bytes()).unwrap_or_default();
    let mut words: Vec<&[u8]> = vec![
        b"reason",
        why.as_str().as_bytes(),
        b"orig_id",
        id,
        b"group",
        ffi::bytes(group.as_ptr()),
        b"consumer",
        ffi::bytes(consumer.as_ptr()),
    ];
    if let Some(fields) = entry.get(1) {
        words.extend(
            (0..fields.len())
                .filter_map(|j| fields.get(j))
                .map(|f| f.bytes()),
        );
    }
    let owned: Vec<OwnedString> = words.iter().filter_map(|w| OwnedString::new(w)).collect();
    let Some(qname) = OwnedString::new(&quarantine_name(ffi::bytes(name.as_ptr()))) else {
        return;
    };
    if owned.len() != words.len() || !owned.len().is_multiple_of(2) {
        return;
    }
    let fields: Vec<*mut RedisModuleString> = owned.iter().map(OwnedString::as_ptr).collect();
    let trim = Some(TrimSpec {
        how: Trim::MaxLen(QUARANTINE_MAXLEN),
        approx: true,
    });
    match stream::append(ctx, qname.as_ptr(), NewId::Auto, &fields, trim, true) {
        Ok(Some(done)) => {
            stream::replicate(ctx, qname.as_ptr(), &done, &fields);
            Stats::add(&STATS.quarantined, 1);
        }
        Ok(None) => {}
        Err(e) => ffi::log(
            ctx,
            ffi::Level::Warning,
            &format!("could not quarantine entry {}: {}", ffi::printable(id), e.0),
        ),
    }
}

fn reply_found(ctx: *mut RedisModuleCtx, request: &Request, found: &[Found]) {
    let resp3 = ffi::context_flags(ctx) & raw::REDISMODULE_CTX_FLAGS_RESP3 != 0;
    let relay = ffi::can_relay_call_replies();
    // Every entry of a one-stream read verified: the called command's reply is the answer, in
    // the RESP2 it was written in.
    if let ([only], false, true) = (found, resp3, relay) {
        if let (true, [reply]) = (only.whole, only.replies.as_slice()) {
            if ffi::reply_with_call_reply(ctx, reply.as_ref()) {
                return;
            }
        }
    }
    ffi::reply_map_postponed(ctx, resp3);
    for f in found {
        if !resp3 {
            ffi::reply_array(ctx, 2);
        }
        let name = request
            .keys
            .get(f.key)
            .map(|k| ffi::bytes(k.as_ptr()))
            .unwrap_or_default();
        ffi::reply_bulk(ctx, name);
        ffi::reply_array(ctx, f.entries.len());
        for &(r, i) in &f.entries {
            let entry = f
                .replies
                .get(r)
                .and_then(|reply| stream_entries(reply.as_ref()))
                .and_then(|e| e.get(i));
            match entry {
                Some(entry) if relay => {
                    ffi::reply_with_call_reply(ctx, entry);
                }
                Some(entry) => reply_entry(ctx, entry),
                None => {
                    ffi::reply_null(ctx);
                }
            }
        }
    }
    ffi::set_map_length(ctx, resp3, found.len());
}

/// Writes an entry field by field, for servers that cannot relay call replies.
fn reply_entry(ctx: *mut RedisModuleCtx, entry: CallReplyRef<'_>) {
    ffi::reply_array(ctx, 2);
    let id = entry.get(0).map(|id| id.bytes()).unwrap_or_default();
    ffi::reply_bulk(ctx, id);
    match entry.get(1).filter(|f| f.kind() == ReplyKind::Array) {
        Some(fields) => {
            ffi::reply_array(ctx, fields.len());
            for j in 0..fields.len() {
                let value = fields.get(j).map(|f| f.bytes()).unwrap_or_default();
                ffi::reply_bulk(ctx, value);
            }
        }
        None => {
            ffi::reply_null_array(ctx);
        }
    }
}

/// `RECONCILE.VERIFY key id`: checks one stored entry's MAC, for audits. The age limit does not
/// apply: an old entry that was authentic stays authentic.
pub fn verify_command(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
) -> c_int {
    let args = ffi::argv_slice(argv, argc);
    let (Some(&name), Some(&id), 3) = (args.get(1), args.get(2), args.len()) else {
        return ffi::wrong_arity(ctx);
    };
    if StreamId::parse(ffi::bytes(id)).is_none() {
        return ffi::reply_error(
            ctx,
            "ERR Invalid stream ID specified as stream command argument",
        );
    }
    let Some(ring) = state::keyring() else {
        return ffi::reply_error(ctx, "ERR the reconcile module is not initialised");
    };
    let Some(reply) = CallReply::call(ctx, c"XRANGE", c"E", &[name, id, id]) else {
        return ffi::reply_error(ctx, "ERR the entry could not be read");
    };
    let top = reply.as_ref();
    if top.kind() == ReplyKind::Error {
        return ffi::reply_error(ctx, &top.error_text());
    }
    let Some(fields) = top
        .get(0)
        .and_then(|e| e.get(1))
        .filter(|f| f.kind() == ReplyKind::Array)
    else {
        return ffi::reply_error(ctx, "ERR no such entry");
    };
    let items: Vec<&[u8]> = (0..fields.len())
        .filter_map(|j| fields.get(j))
        .map(|f| f.bytes())
        .collect();
    match check_entry(&ring, ffi::bytes(name), &items, None) {
        Ok(()) => ffi::reply_ok(ctx),
        Err(why) => ffi::reply_error(
            ctx,
            &format!(
                "REJECTED {} the entry does not verify under the current keyring",
                why.as_str()
            ),
        ),
    }
}

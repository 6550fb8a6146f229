//! Thin wrappers over the Redis module API that the rest of the module calls.
//!
//! Every API function is reached through [`api!`], which never panics: the functions the module
//! needs are checked once at load ([`missing_apis`]), and a call whose pointer is absent
//! returns the given fallback instead of aborting the server.

use std::ffi::{c_char, c_int, c_long, c_void, CStr};
use std::ptr::{self, NonNull};

use redis_module::raw;

pub use raw::{RedisModuleCallReply, RedisModuleCtx, RedisModuleKey, RedisModuleString};

/// Calls a module API function, or evaluates the fallback when Redis does not export it.
macro_rules! api {
    ($name:ident($($arg:expr),* $(,)?) or $fallback:expr) => {
        // SAFETY: reading a function pointer that Redis filled in at load; it is never written
        // afterwards. The callee's own contract is upheld by each call site.
        match unsafe { redis_module::raw::$name } {
            Some(f) => unsafe { f($($arg),*) },
            None => $fallback,
        }
    };
}
pub(crate) use api;

/// Names of the API functions the module cannot run without and that this server lacks.
pub fn missing_apis() -> Vec<&'static str> {
    let mut missing = Vec::new();
    macro_rules! require {
        ($($name:ident),* $(,)?) => {
            // SAFETY: a plain read of pointers Redis set during RedisModule_Init.
            $(if unsafe { raw::$name }.is_none() { missing.push(stringify!($name)); })*
        };
    }
    require!(
        RedisModule_CreateCommand,
        RedisModule_StringPtrLen,
        RedisModule_CreateString,
        RedisModule_FreeString,
        RedisModule_OpenKey,
        RedisModule_CloseKey,
        RedisModule_KeyType,
        RedisModule_ValueLength,
        RedisModule_StreamAdd,
        RedisModule_StreamTrimByLength,
        RedisModule_StreamTrimByID,
        RedisModule_StreamIteratorStart,
        RedisModule_StreamIteratorStop,
        RedisModule_StreamIteratorNextID,
        RedisModule_StreamIteratorNextField,
        RedisModule_Replicate,
        RedisModule_Call,
        RedisModule_CallReplyType,
        RedisModule_CallReplyLength,
        RedisModule_CallReplyArrayElement,
        RedisModule_CallReplyStringPtr,
        RedisModule_FreeCallReply,
        RedisModule_BlockClientOnKeys,
        RedisModule_GetBlockedClientPrivateData,
        RedisModule_GetContextFlags,
        RedisModule_Milliseconds,
        RedisModule_NotifyKeyspaceEvent,
        RedisModule_RegisterCommandFilter,
        RedisModule_SubscribeToServerEvent,
        RedisModule_CommandFilterArgsCount,
        RedisModule_CommandFilterArgGet,
        RedisModule_CommandFilterArgInsert,
        RedisModule_CommandFilterArgReplace,
        RedisModule_CommandFilterArgDelete,
        RedisModule_IsKeysPositionRequest,
        RedisModule_KeyAtPos,
        RedisModule_RegisterInfoFunc,
        RedisModule_InfoAddSection,
        RedisModule_InfoAddFieldULongLong,
        RedisModule_InfoAddFieldCString,
        RedisModule_RegisterNumericConfig,
        RedisModule_LoadConfigs,
        RedisModule_ReplyWithArray,
        RedisModule_ReplySetArrayLength,
        RedisModule_ReplyWithStringBuffer,
        RedisModule_ReplyWithSimpleString,
        RedisModule_ReplyWithError,
        RedisModule_ReplyWithNull,
        RedisModule_ReplyWithNullArray,
        RedisModule_ReplyWithLongLong,
        RedisModule_WrongArity,
        RedisModule_GetClientId,
        RedisModule_GetClientInfoById,
        RedisModule_GetClientUserNameById,
        RedisModule_Log,
        RedisModule_RetainString,
        RedisModule_Free,
        RedisModule_GetDetachedThreadSafeContext,
    );
    missing
}

/// The bytes of a Redis string. Empty for a null pointer.
///
/// The slice lives as long as Redis keeps the string; callers use it only while the string's
/// owner (argv, a call reply, a key) is alive.
pub fn bytes<'a>(s: *const RedisModuleString) -> &'a [u8] {
    if s.is_null() {
        return &[];
    }
    let mut len: usize = 0;
    let p = api!(RedisModule_StringPtrLen(s, &mut len) or ptr::null());
    if p.is_null() {
        return &[];
    }
    // SAFETY: Redis returned a pointer to `len` initialised bytes owned by the string `s`.
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
}

/// The arguments of a command as raw pointers.
pub fn argv_slice<'a>(
    argv: *mut *mut RedisModuleString,
    argc: c_int,
) -> &'a [*mut RedisModuleString] {
    let Ok(n) = usize::try_from(argc) else {
        return &[];
    };
    if argv.is_null() || n == 0 {
        return &[];
    }
    // SAFETY: Redis passes `argc` valid string pointers in `argv` for the command's duration.
    unsafe { std::slice::from_raw_parts(argv, n) }
}

/// A Redis string the module created and frees on drop.
pub struct OwnedString(NonNull<RedisModuleString>);

impl OwnedString {
    pub fn new(data: &[u8]) -> Option<OwnedString> {
        let p = api!(RedisModule_CreateString(
            ptr::null_mut(),
            data.as_ptr().cast::<c_char>(),
            data.len()
        ) or ptr::null_mut());
        NonNull::new(p).map(OwnedString)
    }

    pub fn as_ptr(&self) -> *mut RedisModuleString {
        self.0.as_ptr()
    }

    /// Hands the string to Redis, which frees it (command filter arguments).
    pub fn into_raw(self) -> *mut RedisModuleString {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for OwnedString {
    fn drop(&mut self) {
        api!(RedisModule_FreeString(ptr::null_mut(), self.0.as_ptr()) or ());
    }
}

/// A list of a length known in advance: on the stack up to `N` items, on the heap beyond, so
/// that a command of usual size allocates nothing for it.
pub struct Scratch<T: Copy, const N: usize> {
    inline: [T; N],
    heap: Vec<T>,
    len: usize,
}

impl<T: Copy, const N: usize> Scratch<T, N> {
    /// `len` items, each `fill`.
    pub fn new(fill: T, len: usize) -> Self {
        let heap = if len > N { vec![fill; len] } else { Vec::new() };
        Scratch {
            inline: [fill; N],
            heap,
            len,
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        if self.len > N {
            &mut self.heap
        } else {
            self.inline.get_mut(..self.len).unwrap_or_default()
        }
    }

    pub fn as_slice(&self) -> &[T] {
        if self.len > N {
            &self.heap
        } else {
            self.inline.get(..self.len).unwrap_or_default()
        }
    }
}

/// Server time in milliseconds.
pub fn now_ms() -> u64 {
    let ms = api!(RedisModule_Milliseconds() or 0);
    u64::try_from(ms).unwrap_or(0)
}

pub fn context_flags(ctx: *mut RedisModuleCtx) -> u32 {
    let flags = api!(RedisModule_GetContextFlags(ctx) or 0);
    flags as u32
}

/// Log levels the module uses.
#[derive(Clone, Copy)]
pub enum Level {
    Warning,
    Notice,
}

/// Writes one line to the Redis log. The text is passed as a `%s` argument, never as the format,
/// and bytes that could forge or break a log line are escaped.
pub fn log(ctx: *mut RedisModuleCtx, level: Level, text: &str) {
    let level: &CStr = match level {
        Level::Warning => c"warning",
        Level::Notice => c"notice",
    };
    let mut line: Vec<u8> = Vec::with_capacity(text.len() + 1);
    for &b in text.as_bytes() {
        if b == 0 || b == b'\n' || b == b'\r' {
            line.push(b'?');
        } else {
            line.push(b);
        }
    }
    line.push(0);
    api!(RedisModule_Log(ctx, level.as_ptr(), c"%s".as_ptr(), line.as_ptr().cast::<c_char>()) or ());
}

/// Renders bytes from a client (a key name, a command name) for a log line: printable ASCII
/// as is, anything else as `\xNN`, at most 128 bytes.
pub fn printable(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().min(128));
    for &b in data.iter().take(128) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if data.len() > 128 {
        out.push_str("...");
    }
    out
}

// Replies. Each returns REDISMODULE_OK so a command can end with `return reply_...`.

pub const OK: c_int = raw::REDISMODULE_OK as c_int;
pub const ERR: c_int = raw::REDISMODULE_ERR as c_int;

/// Replies with an error; `msg` starts with the error code (`ERR ...`, `NOPERM ...`).
pub fn reply_error(ctx: *mut RedisModuleCtx, msg: &str) -> c_int {
    let mut text: Vec<u8> = msg
        .bytes()
        .filter(|&b| b != 0 && b != b'\r' && b != b'\n')
        .collect();
    text.push(0);
    api!(RedisModule_ReplyWithError(ctx, text.as_ptr().cast::<c_char>()) or ERR);
    OK
}

pub fn reply_ok(ctx: *mut RedisModuleCtx) -> c_int {
    api!(RedisModule_ReplyWithSimpleString(ctx, c"OK".as_ptr()) or ERR);
    OK
}

pub fn reply_bulk(ctx: *mut RedisModuleCtx, data: &[u8]) -> c_int {
    api!(RedisModule_ReplyWithStringBuffer(ctx, data.as_ptr().cast::<c_char>(), data.len()) or ERR);
    OK
}

pub fn reply_array(ctx: *mut RedisModuleCtx, len: usize) -> c_int {
    let len = c_long::try_from(len).unwrap_or(c_long::MAX);
    api!(RedisModule_ReplyWithArray(ctx, len) or ERR);
    OK
}

/// Opens an array whose length is set later with [`set_array_length`].
pub fn reply_array_postponed(ctx: *mut RedisModuleCtx) {
    api!(RedisModule_ReplyWithArray(ctx, raw::REDISMODULE_POSTPONED_LEN as c_long) or ERR);
}

pub fn set_array_length(ctx: *mut RedisModuleCtx, len: usize) {
    let len = c_long::try_from(len).unwrap_or(c_long::MAX);
    api!(RedisModule_ReplySetArrayLength(ctx, len) or ());
}

/// Opens a map in RESP3, or an array of `2 * len` items in RESP2.
pub fn reply_map_postponed(ctx: *mut RedisModuleCtx, resp3: bool) {
    if resp3 {
        api!(RedisModule_ReplyWithMap(ctx, raw::REDISMODULE_POSTPONED_LEN as c_long) or ERR);
    } else {
        reply_array_postponed(ctx);
    }
}

pub fn set_map_length(ctx: *mut RedisModuleCtx, resp3: bool, len: usize) {
    if resp3 {
        let len = c_long::try_from(len).unwrap_or(c_long::MAX);
        api!(RedisModule_ReplySetMapLength(ctx, len) or ());
    } else {
        set_array_length(ctx, len);
    }
}

pub fn reply_null(ctx: *mut RedisModuleCtx) -> c_int {
    api!(RedisModule_ReplyWithNull(ctx) or ERR);
    OK
}

pub fn reply_null_array(ctx: *mut RedisModuleCtx) -> c_int {
    api!(RedisModule_ReplyWithNullArray(ctx) or ERR);
    OK
}

pub fn wrong_arity(ctx: *mut RedisModuleCtx) -> c_int {
    api!(RedisModule_WrongArity(ctx) or ERR);
    OK
}

/// Relays a reply that a called command returned, byte for byte.
pub fn reply_with_call_reply(ctx: *mut RedisModuleCtx, reply: CallReplyRef<'_>) -> bool {
    api!(RedisModule_ReplyWithCallReply(ctx, reply.ptr.as_ptr()) or ERR) == OK
}

/// Whether this server can relay call replies directly (Redis 7.0 and later).
pub fn can_relay_call_replies() -> bool {
    // SAFETY: plain read of a pointer set at load.
    unsafe { raw::RedisModule_ReplyWithCallReply }.is_some()
}

/// The reply of a command run through `RedisModule_Call`, freed on drop.
pub struct CallReply {
    ptr: NonNull<RedisModuleCallReply>,
}

impl CallReply {
    /// Runs `cmd` with `args`. `flags` are RedisModule_Call's format flags without the `v`.
    pub fn call(
        ctx: *mut RedisModuleCtx,
        cmd: &CStr,
        flags: &CStr,
        args: &[*mut RedisModuleString],
    ) -> Option<CallReply> {
        let mut fmt: Vec<u8> = b"v".to_vec();
        fmt.extend_from_slice(flags.to_bytes());
        fmt.push(0);
        let reply = api!(RedisModule_Call(
            ctx,
            cmd.as_ptr(),
            fmt.as_ptr().cast::<c_char>(),
            args.as_ptr(),
            args.len()
        ) or ptr::null_mut());
        NonNull::new(reply).map(|ptr| CallReply { ptr })
    }

    pub fn as_ref(&self) -> CallReplyRef<'_> {
        CallReplyRef {
            ptr: self.ptr,
            _owner: std::marker::PhantomData,
        }
    }
}

impl Drop for CallReply {
    fn drop(&mut self) {
        api!(RedisModule_FreeCallReply(self.ptr.as_ptr()) or ());
    }
}

/// A borrowed element of a [`CallReply`].
#[derive(Clone, Copy)]
pub struct CallReplyRef<'a> {
    ptr: NonNull<RedisModuleCallReply>,
    _owner: std::marker::PhantomData<&'a CallReply>,
}

/// The kinds of call reply the module looks at.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReplyKind {
    String,
    Error,
    Integer,
    Array,
    Null,
    Other,
}

impl<'a> CallReplyRef<'a> {
    pub fn kind(self) -> ReplyKind {
        let t = api!(RedisModule_CallReplyType(self.ptr.as_ptr()) or -1) as isize;
        match t {
            raw::REDISMODULE_REPLY_STRING => ReplyKind::String,
            raw::REDISMODULE_REPLY_ERROR => ReplyKind::Error,
            raw::REDISMODULE_REPLY_INTEGER => ReplyKind::Integer,
            raw::REDISMODULE_REPLY_ARRAY => ReplyKind::Array,
            raw::REDISMODULE_REPLY_NULL => ReplyKind::Null,
            _ => ReplyKind::Other,
        }
    }

    pub fn len(self) -> usize {
        api!(RedisModule_CallReplyLength(self.ptr.as_ptr()) or 0)
    }

    pub fn get(self, index: usize) -> Option<CallReplyRef<'a>> {
        let p =
            api!(RedisModule_CallReplyArrayElement(self.ptr.as_ptr(), index) or ptr::null_mut());
        NonNull::new(p).map(|ptr| CallReplyRef {
            ptr,
            _owner: std::marker::PhantomData,
        })
    }

    /// The bytes of a string or error reply; empty for other kinds.
    pub fn bytes(self) -> &'a [u8] {
        let mut len: usize = 0;
        let p = api!(RedisModule_CallReplyStringPtr(self.ptr.as_ptr(), &mut len) or ptr::null());
        if p.is_null() {
            return &[];
        }
        // SAFETY: Redis returned `len` bytes that live as long as the owning reply.
        unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
    }

    /// The reply's protocol bytes as the called command wrote them. Unlike every other look
    /// at a reply, this does not make Redis build the tree of its elements.
    pub fn proto(self) -> Option<&'a [u8]> {
        let mut len: usize = 0;
        let p = api!(RedisModule_CallReplyProto(self.ptr.as_ptr(), &mut len) or ptr::null());
        if p.is_null() {
            return None;
        }
        // SAFETY: Redis returned `len` bytes that live as long as the owning reply.
        Some(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
    }

    /// The error text of an error reply, for relaying to the client.
    pub fn error_text(self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }
}

/// A key opened through the low-level API, closed on drop.
pub struct Key(NonNull<RedisModuleKey>);

impl Key {
    pub fn open(
        ctx: *mut RedisModuleCtx,
        name: *mut RedisModuleString,
        write: bool,
    ) -> Option<Key> {
        let mode = if write {
            raw::REDISMODULE_READ | raw::REDISMODULE_WRITE
        } else {
            raw::REDISMODULE_READ
        };
        let p = api!(RedisModule_OpenKey(ctx, name, mode as c_int) or ptr::null_mut());
        NonNull::new(p.cast::<RedisModuleKey>()).map(Key)
    }

    pub fn as_ptr(&self) -> *mut RedisModuleKey {
        self.0.as_ptr()
    }

    pub fn is_empty(&self) -> bool {
        self.kind() == raw::REDISMODULE_KEYTYPE_EMPTY
    }

    pub fn is_stream(&self) -> bool {
        self.kind() == raw::REDISMODULE_KEYTYPE_STREAM
    }

    fn kind(&self) -> isize {
        api!(RedisModule_KeyType(self.0.as_ptr()) or -1) as isize
    }

    /// Number of entries of a stream key.
    pub fn len(&self) -> usize {
        api!(RedisModule_ValueLength(self.0.as_ptr()) or 0)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        api!(RedisModule_CloseKey(self.0.as_ptr()) or ());
    }
}

/// The name of the ACL user of the calling client, when it is a connected client. Script and
/// module-call clients, the master link and the AOF loader have none the module can read.
pub fn current_user(ctx: *mut RedisModuleCtx) -> Option<Vec<u8>> {
    let id = api!(RedisModule_GetClientId(ctx) or 0);
    if id == 0 {
        return None;
    }
    let s = api!(RedisModule_GetClientUserNameById(ctx, id) or ptr::null_mut());
    if s.is_null() {
        return None;
    }
    let name = bytes(s).to_vec();
    // The string was created in `ctx`'s automatic memory; freeing it through `ctx` is allowed
    // and keeps a long command from accumulating them.
    api!(RedisModule_FreeString(ctx, s) or ());
    Some(name)
}

/// The calling client's address as `ip:port`, when it has one.
pub fn client_address(ctx: *mut RedisModuleCtx) -> Option<String> {
    let id = api!(RedisModule_GetClientId(ctx) or 0);
    if id == 0 {
        return None;
    }
    let mut info = raw::RedisModuleClientInfo {
        version: 1,
        flags: 0,
        id: 0,
        addr: [0; 46],
        port: 0,
        db: 0,
    };
    let status = api!(RedisModule_GetClientInfoById(
        (&mut info as *mut raw::RedisModuleClientInfo).cast::<c_void>(),
        id
    ) or ERR);
    if status != OK {
        return None;
    }
    let addr: Vec<u8> = info
        .addr
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Some(format!("{}:{}", printable(&addr), info.port))
}

/// Fires a stream keyspace event (`event` is NUL-terminated) for the key `name`.
pub fn notify(ctx: *mut RedisModuleCtx, event: &CStr, name: *mut RedisModuleString) {
    api!(RedisModule_NotifyKeyspaceEvent(
        ctx,
        raw::REDISMODULE_NOTIFY_STREAM,
        event.as_ptr(),
        name
    ) or ERR);
}

impl OwnedString {
    /// Takes a reference to a string Redis owns (an argument), released on drop.
    pub fn retain(s: *mut RedisModuleString) -> Option<OwnedString> {
        let p = NonNull::new(s)?;
        api!(RedisModule_RetainString(ptr::null_mut(), p.as_ptr()) or ());
        Some(OwnedString(p))
    }
}

/// Whether Redis called the command only to learn its key positions (COMMAND GETKEYS, ACL,
/// cluster routing).
pub fn is_keys_position_request(ctx: *mut RedisModuleCtx) -> bool {
    api!(RedisModule_IsKeysPositionRequest(ctx) or 0) != 0
}

/// Declares argument `pos` a key, during a key-position request.
pub fn key_at_pos(ctx: *mut RedisModuleCtx, pos: usize) {
    if let Ok(pos) = c_int::try_from(pos) {
        api!(RedisModule_KeyAtPos(ctx, pos) or ());
    }
}

/// Runs a command body, turning a panic (a bug) into an error reply: a panic unwinding into
/// Redis would abort the server and every other client's data with it.
pub fn shield(ctx: *mut RedisModuleCtx, body: impl FnOnce() -> c_int) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(_) => {
            log(
                ctx,
                Level::Warning,
                "internal error in a reconcile command; please report it",
            );
            reply_error(ctx, "ERR internal error in the reconcile module")
        }
    }
}

/// A Redis string created once and kept for the life of the process: constant field names the
/// module passes to Redis on every write.
pub struct SharedString(NonNull<RedisModuleString>);

// SAFETY: Redis runs module commands on its main thread only, and the string is never modified
// after creation; Redis may raise and lower its reference count while it uses it as an
// argument, which also happens on the main thread.
unsafe impl Send for SharedString {}
// SAFETY: as above.
unsafe impl Sync for SharedString {}

impl SharedString {
    pub fn new(data: &[u8]) -> Option<SharedString> {
        let s = OwnedString::new(data)?;
        NonNull::new(s.into_raw()).map(SharedString)
    }

    pub fn as_ptr(&self) -> *mut RedisModuleString {
        self.0.as_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::Scratch;

    #[test]
    fn scratch_holds_exactly_its_length_on_the_stack_and_beyond_it() {
        for len in [0, 1, 3, 4, 5, 9] {
            let mut list = Scratch::<u32, 4>::new(7, len);
            assert_eq!(list.as_slice(), vec![7; len].as_slice());
            for (n, slot) in list.as_mut_slice().iter_mut().enumerate() {
                *slot = n as u32;
            }
            let expected: Vec<u32> = (0..len as u32).collect();
            assert_eq!(list.as_slice(), expected.as_slice(), "length {len}");
        }
    }
}

//! A synchronous client that sends raw commands and keeps server errors as data.
//!
//! The `redis` crate turns any error nested in a reply into an `Err`, which would hide the
//! per-command results of EXEC. This client returns the reply as sent: a top-level error becomes
//! [`ReplyError`], nested errors stay in the [`Value`] as `Value::ServerError`.

use std::fmt;
use std::time::Duration;

use redis::{ConnectionLike, Value};

use crate::reply::{self, Entry, Info, StreamBatch};

/// An error reply from the server, or a failure to get one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyError {
    /// The error code: the first word of the reply (`ERR`, `GUARDED`, `NOPERM`...), or `IO`
    /// when no reply arrived.
    pub code: String,
    /// The whole error text, code included.
    pub text: String,
}

impl ReplyError {
    fn from_server(err: &redis::ServerError) -> ReplyError {
        let code = err.code().to_string();
        let text = match err.details() {
            Some(detail) => format!("{code} {detail}"),
            None => code.clone(),
        };
        ReplyError { code, text }
    }

    fn from_redis(err: redis::RedisError) -> ReplyError {
        match err.code() {
            Some(code) => {
                let text = match err.detail() {
                    Some(detail) => format!("{code} {detail}"),
                    None => code.to_string(),
                };
                ReplyError {
                    code: code.to_string(),
                    text,
                }
            }
            None => ReplyError {
                code: "IO".to_string(),
                text: err.to_string(),
            },
        }
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The outcome of one command.
pub type Reply = Result<Value, ReplyError>;

/// Turns an error nested in a reply (an EXEC slot, say) into a [`ReplyError`].
pub fn nested_error(value: &Value) -> Option<ReplyError> {
    match value {
        Value::ServerError(err) => Some(ReplyError::from_server(err)),
        _ => None,
    }
}

/// One connection to a test server.
pub struct Client {
    con: redis::Connection,
    port: u16,
}

impl Client {
    /// Connects to the server on `port` of the loopback interface.
    pub fn connect(port: u16) -> Client {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("building client");
        let con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("connecting to 127.0.0.1:{port}: {err}"));
        Client { con, port }
    }

    /// Connects speaking RESP3 (`HELLO 3`), as some client libraries do.
    pub fn connect_resp3(port: u16) -> Client {
        let url = format!("redis://127.0.0.1:{port}/?protocol=resp3");
        let client = redis::Client::open(url).expect("building client");
        let con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|err| panic!("connecting to 127.0.0.1:{port}: {err}"));
        Client { con, port }
    }

    /// The port this client talks to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Limits how long a reply may take; `None` waits forever.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.con
            .set_read_timeout(timeout)
            .expect("setting read timeout");
    }

    /// Sends `args` as one command and returns the reply as sent.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let mut cmd = redis::Cmd::new();
        for arg in args {
            cmd.arg(arg.as_ref());
        }
        match self.con.req_command(&cmd) {
            Ok(Value::ServerError(err)) => Err(ReplyError::from_server(&err)),
            Ok(value) => Ok(value),
            Err(err) => Err(ReplyError::from_redis(err)),
        }
    }

    /// Sends `args` without reading the reply, so that the connection can wait in a blocking
    /// command while others run; [`Client::receive`] reads the reply later.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        let mut cmd = redis::Cmd::new();
        for arg in args {
            cmd.arg(arg.as_ref());
        }
        self.con
            .send_packed_command(&cmd.get_packed_command())
            .unwrap_or_else(|err| panic!("sending {}: {err}", describe(args)));
    }

    /// The reply to the oldest command sent with [`Client::send`] and not yet received.
    pub fn receive(&mut self) -> Reply {
        match self.con.recv_response() {
            Ok(Value::ServerError(err)) => Err(ReplyError::from_server(&err)),
            Ok(value) => Ok(value),
            Err(err) => Err(ReplyError::from_redis(err)),
        }
    }

    /// Sends `args` and panics unless the server answers without an error.
    pub fn ok<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Value {
        self.call(args)
            .unwrap_or_else(|err| panic!("{} failed: {err}", describe(args)))
    }

    /// Sends `args` and panics unless the server answers with an error.
    pub fn err<A: AsRef<[u8]>>(&mut self, args: &[A]) -> ReplyError {
        match self.call(args) {
            Err(err) => err,
            Ok(value) => panic!("{} should fail, got {value:?}", describe(args)),
        }
    }

    /// Sends `args` and returns the reply as text (integers and statuses included).
    pub fn text<A: AsRef<[u8]>>(&mut self, args: &[A]) -> String {
        let value = self.ok(args);
        reply::text(&value).unwrap_or_else(|| panic!("{} gave {value:?}", describe(args)))
    }

    /// Sends `args` and returns the integer reply.
    pub fn int<A: AsRef<[u8]>>(&mut self, args: &[A]) -> i64 {
        match self.ok(args) {
            Value::Int(n) => n,
            other => panic!("{} gave {other:?}, not an integer", describe(args)),
        }
    }

    /// Signs one entry into `key` with an auto ID and returns the ID.
    pub fn sign(&mut self, key: &str, fields: &[(&str, &str)]) -> String {
        let mut args = vec!["RECONCILE.XADDSIGNED", key, "*"];
        for (field, value) in fields {
            args.push(field);
            args.push(value);
        }
        self.text(&args)
    }

    /// Signs `count` entries with a numbered `seq` field and returns their IDs in order.
    pub fn sign_many(&mut self, key: &str, count: usize) -> Vec<String> {
        (0..count)
            .map(|n| self.sign(key, &[("symbol", "BTCUSDT"), ("seq", &n.to_string())]))
            .collect()
    }

    /// `XRANGE key - +` decoded.
    pub fn xrange(&mut self, key: &str) -> Vec<Entry> {
        reply::entries(&self.ok(&["XRANGE", key, "-", "+"]))
    }

    /// A read command (`RECONCILE.XREADVERIFIED`, `XREAD`, `XREADGROUP`) decoded; `None` for nil.
    pub fn read(&mut self, args: &[&str]) -> Option<Vec<StreamBatch>> {
        reply::read_batches(&self.ok(args))
    }

    /// The entries a read returned for `key`, empty for nil.
    pub fn read_entries(&mut self, args: &[&str], key: &str) -> Vec<Entry> {
        let batches = self.read(args).unwrap_or_default();
        batches
            .into_iter()
            .find(|batch| batch.key == key)
            .map(|b| b.entries)
            .unwrap_or_default()
    }

    /// `RECONCILE.VERIFY key id` as text: `OK`, or the error text.
    pub fn verify(&mut self, key: &str, id: &str) -> String {
        match self.call(&["RECONCILE.VERIFY", key, id]) {
            Ok(value) => reply::text(&value).unwrap_or_else(|| format!("{value:?}")),
            Err(err) => err.text,
        }
    }

    /// The fields of `INFO reconcile`.
    pub fn info_reconcile(&mut self) -> Info {
        Info::parse(&self.text(&["INFO", "reconcile"]))
    }

    /// The value of one `CONFIG GET` parameter.
    pub fn config_get(&mut self, name: &str) -> String {
        let value = self.ok(&["CONFIG", "GET", name]);
        let items = reply::texts(&value);
        match items.as_slice() {
            [_, value] => value.clone(),
            _ => panic!("CONFIG GET {name} gave {value:?}"),
        }
    }

    /// This connection's address as the server sees it (`addr=` of CLIENT INFO).
    pub fn addr(&mut self) -> String {
        let info = self.text(&["CLIENT", "INFO"]);
        info.split_whitespace()
            .find_map(|part| part.strip_prefix("addr="))
            .expect("CLIENT INFO has addr=")
            .to_string()
    }
}

fn describe<A: AsRef<[u8]>>(args: &[A]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|arg| String::from_utf8_lossy(arg.as_ref()).into_owned())
        .collect();
    words.join(" ")
}

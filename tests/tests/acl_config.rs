//! `redis.conf.example` as shipped: a server started from it (with the paths, the port and the
//! passwords replaced) loads the module, and each ACL user can do its own job and no more.
//!
//! The server runs from the example file itself rather than from the harness's generated
//! configuration, so a change to the example that breaks a worker, or opens the guarded stream
//! to other clients, fails here.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rand::RngExt;
use reconcile_tests::server::{module_path, START_DEADLINE};
use reconcile_tests::{quarantine_of, Client, Key, KeyringFile, ReplyError, STREAM};
use tempfile::TempDir;

/// The users the example defines, each with a placeholder password.
const USERS: [&str; 4] = ["engine", "apply", "keyadmin", "default"];

/// A user added for the test only, allowed everything the ACL can grant, to show that MODULE
/// and DEBUG are refused by the server settings and not merely by the ACL.
const ADMIN: &str = "acltest-admin";

const GROUP: &str = "apply_recon";
const HOLD: &str = "quantum:reconcile:hold:BTCUSDT";
const LEDGER: &str = "quantum:position:ledger:BTCUSDT";
const DEDUPE: &str = "quantum:apply:dedupe:reconclose:BTCUSDT:abc:1";
const EVENTS: &str = "quantum:stream:reconcile.events";
const RESULTS: &str = "quantum:stream:apply.result";

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../redis.conf.example")
}

fn example_text() -> String {
    fs::read_to_string(example_path()).expect("reading redis.conf.example")
}

/// A `redis-server` started from the example, killed when dropped.
struct ExampleServer {
    child: Child,
    port: u16,
    passwords: Vec<(String, String)>,
    _dir: TempDir,
    _keyring: KeyringFile,
}

impl ExampleServer {
    fn start() -> ExampleServer {
        let keyring = KeyringFile::new(&[&Key::random("k1")]);
        let dir = tempfile::Builder::new()
            .prefix("reconcile-acl")
            .tempdir()
            .expect("creating server dir");
        let mut passwords: Vec<(String, String)> = USERS
            .iter()
            .map(|user| (user.to_string(), random_password()))
            .collect();
        passwords.push((ADMIN.to_string(), random_password()));

        // A port probed free can be taken before the server binds it; try a few.
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("redis.conf");
            let text = example_config(port, dir.path(), &keyring.path_str(), &passwords);
            fs::write(&conf, text).expect("writing redis.conf");
            let log = dir.path().join("stdio.log");
            let stdio = fs::File::create(&log).expect("creating stdio log");
            let mut child = Command::new(redis_server_binary())
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(stdio.try_clone().expect("cloning stdio log"))
                .stderr(stdio)
                .spawn()
                .expect("spawning redis-server");
            if wait_ready(&mut child, port, &passwords) {
                return ExampleServer {
                    child,
                    port,
                    passwords,
                    _dir: dir,
                    _keyring: keyring,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            let text = fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default()
                + &fs::read_to_string(&log).unwrap_or_default();
            assert!(
                text.contains("Address already in use"),
                "redis-server did not start from redis.conf.example\n{text}"
            );
        }
        panic!("no free port for redis-server after several attempts");
    }

    fn password(&self, user: &str) -> &str {
        password_of(&self.passwords, user)
    }

    /// A connection authenticated as `user`.
    fn login(&self, user: &str) -> Client {
        let mut client = Client::connect(self.port);
        let password = self.password(user).to_string();
        client.ok(&["AUTH", user, &password]);
        client
    }
}

impl Drop for ExampleServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn password_of<'a>(passwords: &'a [(String, String)], user: &str) -> &'a str {
    passwords
        .iter()
        .find(|(name, _)| name == user)
        .map(|(_, password)| password.as_str())
        .expect("a password for every user")
}

/// Waits until the engine user can log in and PING, or the server exits, or the deadline.
fn wait_ready(child: &mut Child, port: u16, passwords: &[(String, String)]) -> bool {
    let until = Instant::now() + START_DEADLINE;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let mut client = Client::connect(port);
            let password = password_of(passwords, "engine");
            if client.call(&["AUTH", "engine", password]).is_ok() && client.call(&["PING"]).is_ok()
            {
                return true;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The example with its deployment paths, port and placeholder passwords replaced, plus the
/// test's admin user. Panics if a placeholder or a system path is left over.
fn example_config(port: u16, dir: &Path, keyring: &str, passwords: &[(String, String)]) -> String {
    let dir = dir.to_str().expect("temp paths are UTF-8");
    let module = module_path();
    let module = module.to_str().expect("module path is UTF-8");
    let mut lines = Vec::new();
    for line in example_text().lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let line = match words.first().copied() {
            Some("port") => format!("port {port}"),
            Some("bind") => "bind 127.0.0.1".to_string(),
            Some("dir") => format!("dir {dir}"),
            Some("logfile") => format!("logfile {dir}/redis.log"),
            Some("loadmodule") => loadmodule_line(&words, module, keyring),
            _ => line.to_string(),
        };
        lines.push(line);
    }
    let mut text = lines.join("\n") + "\n";
    for (user, password) in passwords {
        let placeholder = format!(">CHANGE-ME-{}-PASSWORD", user.to_uppercase());
        text = text.replace(&placeholder, &format!(">{password}"));
    }
    let admin = password_of(passwords, ADMIN);
    text.push_str(&format!("user {ADMIN} on >{admin} ~* &* +@all\n"));

    let settings: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect();
    for leftover in ["CHANGE-ME", "/etc/", "/var/", "/opt/"] {
        assert!(
            !settings.iter().any(|line| line.contains(leftover)),
            "'{leftover}' left in the test configuration"
        );
    }
    text
}

/// The example's loadmodule line with the test's library and keyring, other arguments kept.
fn loadmodule_line(words: &[&str], module: &str, keyring: &str) -> String {
    let mut out = vec!["loadmodule".to_string(), module.to_string()];
    let args = words.get(2..).unwrap_or_default();
    assert!(args.len() % 2 == 0, "module arguments come in pairs");
    for pair in args.chunks(2) {
        let value = if pair[0] == "keyring" {
            keyring
        } else {
            pair[1]
        };
        out.push(pair[0].to_string());
        out.push(value.to_string());
    }
    out.join(" ")
}

fn random_password() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes[..]);
    hex::encode(bytes)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("binding a probe socket");
    listener.local_addr().expect("probe socket address").port()
}

fn redis_server_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER").map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

/// Asserts that the ACL refused the command (as opposed to the guard or the command itself).
fn assert_noperm(result: Result<redis::Value, ReplyError>, what: &str) {
    match result {
        Err(err) => assert_eq!(err.code, "NOPERM", "{what}: {err}"),
        Ok(value) => panic!("{what} should be refused by the ACL, got {value:?}"),
    }
}

fn assert_guarded(result: Result<redis::Value, ReplyError>, what: &str) {
    match result {
        Err(err) => {
            assert_eq!(err.code, "GUARDED", "{what}: {err}");
            assert!(err.text.contains("RECONCILE.XADDSIGNED"), "{what}: {err}");
        }
        Ok(value) => panic!("{what} should be refused by the guard, got {value:?}"),
    }
}

/// Signs one plan as the engine and returns its entry ID.
fn publish(server: &ExampleServer) -> String {
    let mut engine = server.login("engine");
    engine.text(&[
        "RECONCILE.XADDSIGNED",
        STREAM,
        "MAXLEN",
        "~",
        "1000",
        "*",
        "symbol",
        "BTCUSDT",
        "side",
        "SELL",
    ])
}

#[test]
fn example_starts_with_noeviction_aof_and_the_module_loaded() {
    let server = ExampleServer::start();
    let mut admin = server.login(ADMIN);
    assert_eq!(admin.config_get("maxmemory-policy"), "noeviction");
    assert_eq!(admin.config_get("appendonly"), "yes");
    assert_eq!(admin.config_get("reconcile.max-age-ms"), "300000");
    assert_eq!(admin.info_reconcile().get("keyring_active_kid"), "k1");
    let users = reconcile_tests::reply::texts(&admin.ok(&["ACL", "USERS"]));
    for user in USERS {
        assert!(users.iter().any(|u| u == user), "{user} missing: {users:?}");
    }
}

#[test]
fn module_load_and_debug_are_refused_even_to_an_admin() {
    let server = ExampleServer::start();
    let mut admin = server.login(ADMIN);
    let err = admin.err(&["MODULE", "LOAD", "/nonexistent.so"]);
    assert!(err.text.contains("not allowed"), "{err}");
    let err = admin.err(&["DEBUG", "SLEEP", "0"]);
    assert!(err.text.contains("not allowed"), "{err}");

    let mut default = server.login("default");
    assert_noperm(default.call(&["MODULE", "LIST"]), "default MODULE LIST");
    assert_noperm(
        default.call(&["CONFIG", "SET", "reconcile.max-age-ms", "9"]),
        "CONFIG SET",
    );
}

#[test]
fn engine_signs_and_keeps_its_own_keys_but_nothing_else() {
    let server = ExampleServer::start();
    let mut admin = server.login(ADMIN);
    admin.ok(&["HSET", LEDGER, "ledger_amt", "0.010"]);
    admin.ok(&["SET", DEDUPE, "executing"]);

    let mut engine = server.login("engine");
    let id = publish(&server);
    assert_eq!(admin.verify(STREAM, &id), "OK");
    assert_eq!(engine.text(&["HGET", LEDGER, "ledger_amt"]), "0.010");
    engine.ok(&["HGETALL", LEDGER]);
    engine.ok(&["SET", HOLD, "1", "PX", "900000"]);
    assert_eq!(engine.int(&["EXISTS", HOLD]), 1);
    assert_eq!(engine.int(&["DEL", HOLD]), 1);
    engine.ok(&["XADD", EVENTS, "*", "event", "HOLD_SET"]);
    assert_eq!(engine.text(&["GET", DEDUPE]), "executing");
    engine.ok(&["XREVRANGE", STREAM, "+", "-", "COUNT", "10"]);
    engine.ok(&["CLIENT", "SETNAME", "reconcile-engine"]);
    engine.ok(&["INFO", "reconcile"]);

    // The guard answers plain writes to the stream before the ACL is asked.
    assert_guarded(engine.call(&["XADD", STREAM, "*", "a", "b"]), "engine XADD");
    assert_guarded(engine.call(&["DEL", STREAM]), "engine DEL");
    assert_guarded(engine.call(&["FLUSHALL"]), "engine FLUSHALL");
    let read = ["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"];
    assert_noperm(engine.call(&read), "engine XREADVERIFIED");
    assert_noperm(engine.call(&["XACK", STREAM, GROUP, &id]), "engine XACK");
    assert_noperm(
        engine.call(&["XGROUP", "DESTROY", STREAM, GROUP]),
        "engine XGROUP",
    );
    assert_noperm(
        engine.call(&["HSET", LEDGER, "ledger_amt", "1"]),
        "engine HSET ledger",
    );
    assert_noperm(engine.call(&["SET", DEDUPE, "done"]), "engine SET dedupe");
    assert_noperm(engine.call(&["SET", "other", "1"]), "engine SET other");
    assert_noperm(
        engine.call(&["RECONCILE.KEYRING", "LIST"]),
        "engine KEYRING",
    );
    assert_noperm(engine.call(&["CONFIG", "GET", "*"]), "engine CONFIG");
    assert_noperm(engine.call(&["KEYS", "*"]), "engine KEYS");
    let sign_elsewhere = ["RECONCILE.XADDSIGNED", EVENTS, "*", "a", "b"];
    assert_noperm(
        engine.call(&sign_elsewhere),
        "engine signing into another key",
    );
}

#[test]
fn engine_connects_through_a_redis_url_with_its_user() {
    // The workers connect with `redis://engine:PASSWORD@host/`; the client library's handshake
    // must succeed under the engine's narrow command set.
    let server = ExampleServer::start();
    let url = format!(
        "redis://engine:{}@127.0.0.1:{}/",
        server.password("engine"),
        server.port
    );
    let client = redis::Client::open(url).expect("building client");
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connecting as engine");
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING as engine");
    assert_eq!(pong, "PONG");
}

#[test]
fn apply_consumes_verified_plans_and_records_outcomes_but_cannot_sign() {
    let server = ExampleServer::start();
    let mut admin = server.login(ADMIN);
    admin.ok(&["SET", HOLD, "1", "PX", "900000"]);
    let mut apply = server.login("apply");
    apply.ok(&["XGROUP", "CREATE", STREAM, GROUP, "$", "MKSTREAM"]);
    let id = publish(&server);

    let read = [
        "RECONCILE.XREADVERIFIED",
        "GROUP",
        GROUP,
        "c1",
        "COUNT",
        "10",
        "STREAMS",
        STREAM,
        ">",
    ];
    let entries = apply.read_entries(&read, STREAM);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, id);
    apply.ok(&["XPENDING", STREAM, GROUP]);
    apply.ok(&["XINFO", "GROUPS", STREAM]);
    apply.ok(&[
        "XAUTOCLAIM",
        STREAM,
        GROUP,
        "c2",
        "0",
        "0",
        "COUNT",
        "10",
        "JUSTID",
    ]);
    apply.ok(&["SET", DEDUPE, "executing", "NX", "EX", "86400"]);
    assert_eq!(apply.text(&["GET", DEDUPE]), "executing");
    assert_eq!(apply.int(&["EXISTS", HOLD]), 1);

    // The outcome is written in one transaction, as the worker does.
    apply.ok(&["MULTI"]);
    apply.ok(&[
        "XADD", RESULTS, "MAXLEN", "~", "1000", "*", "status", "FILLED",
    ]);
    apply.ok(&["SET", DEDUPE, "done", "EX", "86400"]);
    apply.ok(&["EXPIRE", HOLD, "900"]);
    apply.ok(&["XACK", STREAM, GROUP, &id]);
    let replies = apply.ok(&["EXEC"]);
    let nested: Vec<_> = match &replies {
        redis::Value::Array(items) => items
            .iter()
            .filter_map(reconcile_tests::client::nested_error)
            .collect(),
        other => panic!("EXEC gave {other:?}"),
    };
    assert!(nested.is_empty(), "EXEC slots failed: {nested:?}");
    apply.ok(&["INFO", "reconcile"]);

    let sign = ["RECONCILE.XADDSIGNED", STREAM, "*", "symbol", "BTCUSDT"];
    assert_noperm(apply.call(&sign), "apply XADDSIGNED");
    assert_guarded(apply.call(&["XADD", STREAM, "*", "a", "b"]), "apply XADD");
    assert_noperm(apply.call(&["SET", HOLD, "1"]), "apply SET hold");
    assert_noperm(apply.call(&["DEL", HOLD]), "apply DEL hold");
    assert_noperm(apply.call(&["DEL", DEDUPE]), "apply DEL dedupe");
    assert_noperm(
        apply.call(&["XGROUP", "DESTROY", STREAM, GROUP]),
        "apply XGROUP DESTROY",
    );
    assert_noperm(apply.call(&["SET", "other", "1"]), "apply SET other");
    assert_noperm(
        apply.call(&["RECONCILE.KEYRING", "RELOAD"]),
        "apply KEYRING",
    );
    assert_guarded(apply.call(&["FLUSHDB"]), "apply FLUSHDB");
}

#[test]
fn default_keeps_ordinary_keys_but_not_the_module_or_the_guarded_stream() {
    let server = ExampleServer::start();
    let mut apply = server.login("apply");
    apply.ok(&["XGROUP", "CREATE", STREAM, GROUP, "$", "MKSTREAM"]);
    let id = publish(&server);
    let mut default = server.login("default");

    default.ok(&["SET", "service:cache:1", "v"]);
    assert_eq!(default.text(&["GET", "service:cache:1"]), "v");
    default.ok(&["HSET", LEDGER, "ledger_amt", "0.010"]);
    default.ok(&["XADD", "quantum:stream:trade.intent", "*", "a", "b"]);
    default.ok(&["EXISTS", HOLD]);
    default.ok(&["INFO", "server"]);
    default.ok(&["PUBLISH", "quantum:events", "hello"]);

    let sign = ["RECONCILE.XADDSIGNED", STREAM, "*", "symbol", "BTCUSDT"];
    assert_noperm(default.call(&sign), "default XADDSIGNED");
    let read = ["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"];
    assert_noperm(default.call(&read), "default XREADVERIFIED");
    assert_noperm(
        default.call(&["RECONCILE.VERIFY", STREAM, &id]),
        "default VERIFY",
    );
    assert_noperm(
        default.call(&["RECONCILE.KEYRING", "LIST"]),
        "default KEYRING LIST",
    );
    assert_noperm(
        default.call(&["RECONCILE.KEYRING", "RELOAD"]),
        "default KEYRING RELOAD",
    );

    // A plain write gets the guard's own message, not an ACL error.
    assert_guarded(
        default.call(&["XADD", STREAM, "*", "a", "b"]),
        "default XADD",
    );
    assert_guarded(default.call(&["DEL", STREAM]), "default DEL");

    // Consumer-group commands pass the guard; the ACL keeps them off the stream.
    assert_noperm(default.call(&["XACK", STREAM, GROUP, &id]), "default XACK");
    assert_noperm(
        default.call(&["XGROUP", "DESTROY", STREAM, GROUP]),
        "default XGROUP",
    );
    let claim = ["XCLAIM", STREAM, GROUP, "x", "0", id.as_str()];
    assert_noperm(default.call(&claim), "default XCLAIM");
    assert_noperm(
        default.call(&["XRANGE", STREAM, "-", "+"]),
        "default XRANGE",
    );
    let quarantine = quarantine_of(STREAM);
    assert_noperm(
        default.call(&["XRANGE", &quarantine, "-", "+"]),
        "default quarantine",
    );
}

/// The key patterns that grant every key except those starting with `name`.
fn complement_patterns(name: &str) -> Vec<String> {
    let mut patterns = Vec::new();
    for (i, c) in name.char_indices() {
        patterns.push(format!("~{}[^{c}]*", &name[..i]));
        if i > 0 {
            patterns.push(format!("~{}", &name[..i]));
        }
    }
    patterns
}

#[test]
fn default_key_patterns_are_the_complement_of_the_guarded_name() {
    let text = example_text();
    let line = text
        .lines()
        .find(|line| line.starts_with("user default "))
        .expect("a default user line");
    let patterns: Vec<String> = line
        .split_whitespace()
        .filter(|word| word.starts_with('~') || word.starts_with('%'))
        .map(str::to_string)
        .collect();
    assert_eq!(patterns, complement_patterns(STREAM));

    // What the ACL decides for keys on both sides of the boundary.
    let server = ExampleServer::start();
    let mut admin = server.login(ADMIN);
    let mut allowed: Vec<String> = (1..STREAM.len()).map(|n| STREAM[..n].to_string()).collect();
    for (i, _) in STREAM.char_indices() {
        allowed.push(format!("{}X{}", &STREAM[..i], &STREAM[i + 1..]));
    }
    allowed.extend(["a", "quantum:stream:reconcile.events", "zzz"].map(String::from));
    for key in &allowed {
        let verdict = admin.text(&["ACL", "DRYRUN", "default", "SET", key, "v"]);
        assert_eq!(verdict, "OK", "default should reach '{key}'");
    }
    let denied = [
        STREAM.to_string(),
        quarantine_of(STREAM),
        format!("{STREAM}.anything"),
    ];
    for key in &denied {
        let verdict = admin.text(&["ACL", "DRYRUN", "default", "XRANGE", key, "-", "+"]);
        assert_ne!(verdict, "OK", "default should not reach '{key}'");
    }
}

#[test]
fn keyadmin_reloads_and_lists_the_keyring_and_nothing_else() {
    let server = ExampleServer::start();
    let mut keyadmin = server.login("keyadmin");
    assert_eq!(keyadmin.text(&["RECONCILE.KEYRING", "RELOAD"]), "OK");
    keyadmin.ok(&["RECONCILE.KEYRING", "LIST"]);
    keyadmin.ok(&["INFO", "reconcile"]);
    assert_noperm(keyadmin.call(&["GET", "x"]), "keyadmin GET");
    let sign = ["RECONCILE.XADDSIGNED", STREAM, "*", "a", "b"];
    assert_noperm(keyadmin.call(&sign), "keyadmin XADDSIGNED");
}

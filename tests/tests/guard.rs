//! The guard: no write reaches a guarded stream (or its quarantine) except through the module,
//! by any route; reads and consumer-group bookkeeping still work.

use std::thread;
use std::time::{Duration, Instant};

use reconcile_tests::client::{nested_error, Reply};
use reconcile_tests::reply;
use reconcile_tests::{quarantine_of, Client, Guarded, ReplyError, STREAM};
use redis::Value;

/// What a refused command must leave exactly as it was. Each part is kept as the reply it
/// got, so that a key replaced by another type shows up as a difference rather than a panic.
#[derive(Debug, PartialEq)]
struct Snapshot {
    entries: Reply,
    len: Reply,
    info: Reply,
    groups: Reply,
    ttl: Reply,
    kind: Reply,
    dbsize: Reply,
}

fn snapshot(client: &mut Client, key: &str) -> Snapshot {
    Snapshot {
        entries: client.call(&["XRANGE", key, "-", "+"]),
        len: client.call(&["XLEN", key]),
        info: client.call(&["XINFO", "STREAM", key]),
        groups: client.call(&["XINFO", "GROUPS", key]),
        ttl: client.call(&["PTTL", key]),
        kind: client.call(&["TYPE", key]),
        dbsize: client.call(&["DBSIZE"]),
    }
}

/// A server whose guarded stream holds three signed entries and a consumer group, next to an
/// unguarded stream, a list and a set to use as the other side of two-key commands.
fn populated() -> (Guarded, Client, Vec<String>) {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let ids = client.sign_many(STREAM, 3);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    client.ok(&["XADD", "scratch", "*", "qty", "100"]);
    client.ok(&["RPUSH", "numbers", "3", "1", "2"]);
    client.ok(&["SADD", "members", "a", "b"]);
    (fixture, client, ids)
}

fn is_guarded_refusal(err: &ReplyError) -> bool {
    err.code == "GUARDED" && err.text.contains("RECONCILE.XADDSIGNED")
}

/// Runs each call and collects a line for every one that was not refused with GUARDED or that
/// changed `key`.
fn refusal_failures(client: &mut Client, key: &str, calls: &[Vec<String>]) -> Vec<String> {
    let mut failures = Vec::new();
    for call in calls {
        let before = snapshot(client, key);
        match client.call(call) {
            Err(err) if is_guarded_refusal(&err) => {}
            Err(err) => failures.push(format!("{call:?}: refused with {err}")),
            Ok(value) => failures.push(format!("{call:?}: allowed, answered {value:?}")),
        }
        let after = snapshot(client, key);
        if after != before {
            failures.push(format!("{call:?}: changed {key}: {before:?} -> {after:?}"));
        }
    }
    failures
}

fn words(line: &str) -> Vec<String> {
    line.split(' ').map(str::to_string).collect()
}

#[test]
fn every_refused_write_answers_guarded_and_changes_nothing() {
    let (fixture, mut client, ids) = populated();
    let dump = match client.ok(&["DUMP", "scratch"]) {
        Value::BulkString(bytes) => bytes,
        other => panic!("DUMP gave {other:?}"),
    };
    let g = STREAM;
    let calls: Vec<Vec<String>> = [
        format!("XADD {g} * qty 100"),
        format!("XADD {g} NOMKSTREAM MAXLEN 1 * qty 100"),
        format!("XDEL {g} {}", ids[0]),
        format!("XTRIM {g} MAXLEN 0"),
        format!("XTRIM {g} MINID 99999999999999"),
        format!("XSETID {g} 99999999999999-0"),
        format!("DEL {g}"),
        format!("DEL scratch {g}"),
        format!("UNLINK {g}"),
        format!("EXPIRE {g} 100"),
        format!("PEXPIRE {g} 100000"),
        format!("EXPIREAT {g} 9999999999"),
        format!("PEXPIREAT {g} 9999999999999"),
        format!("PERSIST {g}"),
        format!("RENAME {g} moved"),
        format!("RENAME scratch {g}"),
        format!("RENAMENX {g} moved"),
        format!("RENAMENX scratch {g}"),
        format!("COPY {g} copied"),
        format!("COPY scratch {g} REPLACE"),
        format!("MOVE {g} 1"),
        format!("SORT numbers STORE {g}"),
        format!("SET {g} overwritten"),
        format!("MSET {g} overwritten other value"),
        format!("GETDEL {g}"),
        format!("SUNIONSTORE {g} members"),
        format!("MIGRATE 127.0.0.1 1 {g} 0 1000"),
        "FLUSHALL".to_string(),
        "FLUSHALL ASYNC".to_string(),
        "FLUSHDB".to_string(),
        "SWAPDB 0 1".to_string(),
    ]
    .iter()
    .map(|line| words(line))
    .collect();
    let mut failures = refusal_failures(&mut client, g, &calls);

    // RESTORE carries the binary DUMP payload of another stream, so it is sent as bytes.
    let restore: Vec<Vec<u8>> = vec![
        b"RESTORE".to_vec(),
        g.as_bytes().to_vec(),
        b"0".to_vec(),
        dump,
        b"REPLACE".to_vec(),
    ];
    let before = snapshot(&mut client, g);
    match client.call(&restore) {
        Err(err) if is_guarded_refusal(&err) => {}
        other => failures.push(format!("RESTORE onto the guarded key: {other:?}")),
    }
    assert_eq!(
        snapshot(&mut client, g),
        before,
        "RESTORE changed the stream"
    );

    assert!(
        failures.is_empty(),
        "refusals that did not hold:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        client.int(&["EXISTS", "scratch"]),
        1,
        "the other side survived"
    );
    drop(fixture);
}

#[test]
fn store_destinations_odd_spellings_and_type_mismatched_writes_answer_guarded() {
    let (fixture, mut client, _) = populated();
    let g = STREAM;
    let mut calls: Vec<Vec<String>> = [
        // Command names are case-insensitive; the guard must be too.
        format!("xadd {g} * qty 100"),
        format!("XaDd {g} * qty 100"),
        format!("del {g}"),
        // Each of these deletes its destination when the result is empty.
        format!("SUNIONSTORE {g} nosuch"),
        format!("SINTERSTORE {g} nosuch"),
        format!("SDIFFSTORE {g} nosuch"),
        format!("ZUNIONSTORE {g} 1 nosuch"),
        format!("ZRANGESTORE {g} nosuch 0 -1"),
        format!("BITOP AND {g} nosuch"),
        format!("GEORADIUS nosuch 0 0 1 km STORE {g}"),
        format!("GEOSEARCHSTORE {g} nosuch FROMLONLAT 0 0 BYRADIUS 1 km"),
        format!("SORT numbers LIMIT 0 1 STORE {g}"),
        format!("COPY scratch {g} DB 1"),
        format!("LMOVE numbers {g} LEFT LEFT"),
        format!("RPOPLPUSH numbers {g}"),
        format!("SMOVE members {g} a"),
        format!("SET {g} x GET"),
        format!("SETEX {g} 10 x"),
        format!("MSETNX {g} x"),
        format!("GETEX {g} PERSIST"),
        format!("APPEND {g} x"),
        format!("INCR {g}"),
        format!("HSET {g} f v"),
        format!("LPUSH {g} x"),
        format!("SADD {g} x"),
        format!("ZADD {g} 1 x"),
        format!("SETBIT {g} 1 1"),
        format!("SETRANGE {g} 0 x"),
        format!("PFADD {g} x"),
    ]
    .iter()
    .map(|line| words(line))
    .collect();
    // The KEYS form of MIGRATE names the key after an empty key argument.
    calls.push(words(&format!("MIGRATE 127.0.0.1 1 EMPTY 0 1000 KEYS {g}")));
    calls.last_mut().expect("just pushed")[3] = String::new();

    let failures = refusal_failures(&mut client, g, &calls);
    assert!(
        failures.is_empty(),
        "refusals that did not hold:\n{}",
        failures.join("\n")
    );
    drop(fixture);
}

#[test]
fn guarded_name_as_an_earlier_value_does_not_hide_a_later_key() {
    let g = STREAM;
    let quarantine = quarantine_of(g);
    let calls = vec![
        // The first match is a value, the second the key MSET overwrites.
        words(&format!("MSET other {g} {g} overwritten")),
        words(&format!("MSET other {quarantine} {quarantine} overwritten")),
        // BY takes a pattern, not a key; without a `*` it sorts nothing, and STORE overwrites.
        words(&format!("SORT numbers BY {g} STORE {g}")),
        vec![
            "EVAL".to_string(),
            "return redis.call('MSET', 'other', KEYS[1], KEYS[1], 'overwritten')".to_string(),
            "1".to_string(),
            g.to_string(),
        ],
    ];
    // A fresh server per call, so that one bypass does not disturb the next check.
    let mut failures = Vec::new();
    for call in calls {
        let (fixture, mut client, _) = populated();
        failures.extend(refusal_failures(
            &mut client,
            g,
            std::slice::from_ref(&call),
        ));
        if client.text(&["TYPE", &quarantine]) != "none" {
            failures.push(format!("{call:?}: created {quarantine}"));
        }
        drop(fixture);
    }
    let failures = failures.join("\n");
    assert!(
        failures.is_empty(),
        "refusals that did not hold:\n{failures}"
    );
}

#[test]
fn module_unload_is_refused_and_the_module_stays() {
    let (fixture, mut client, ids) = populated();
    client.err(&["MODULE", "UNLOAD", "reconcile"]);

    let modules = reply::flatten(&client.ok(&["MODULE", "LIST"]));
    assert!(
        modules.lines().any(|line| line == "reconcile"),
        "module gone: {modules}"
    );
    assert_eq!(client.verify(STREAM, &ids[0]), "OK");
    let refused = client.err(&["XADD", STREAM, "*", "qty", "100"]);
    assert_eq!(refused.code, "GUARDED", "{refused}");
    drop(fixture);
}

#[test]
fn guard_holds_in_every_db() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    client.ok(&["SELECT", "1"]);
    let id = client.sign(STREAM, &[("qty", "1")]);
    let calls = vec![
        words(&format!("XADD {STREAM} * qty 100")),
        words(&format!("XDEL {STREAM} {id}")),
        words(&format!("DEL {STREAM}")),
        words(&format!("EXPIRE {STREAM} 10")),
    ];
    let failures = refusal_failures(&mut client, STREAM, &calls);
    assert!(failures.is_empty(), "db 1:\n{}", failures.join("\n"));

    // Creating the guarded name where it does not exist yet is a write to it too.
    client.ok(&["SELECT", "2"]);
    for call in [
        words(&format!("XADD {STREAM} * qty 100")),
        words(&format!("SET {STREAM} x")),
    ] {
        let refused = client.err(&call);
        assert_eq!(refused.code, "GUARDED", "{call:?}: {refused}");
    }
    assert_eq!(client.int(&["EXISTS", STREAM]), 0);
}

#[test]
fn refused_command_inside_multi_fails_only_its_slot() {
    let (fixture, mut client, _) = populated();
    let before = snapshot(&mut client, STREAM);
    client.ok(&["MULTI"]);
    let _ = client.call(&["SET", "before", "1"]);
    let _ = client.call(&["XADD", STREAM, "*", "qty", "100"]);
    let _ = client.call(&["DEL", STREAM]);
    let _ = client.call(&["SET", "after", "2"]);
    let exec = client
        .call(&["EXEC"])
        .unwrap_or_else(|err| panic!("EXEC failed: {err}"));

    let Value::Array(slots) = exec else {
        panic!("EXEC gave {exec:?}");
    };
    assert_eq!(slots.len(), 4, "{slots:?}");
    for slot in [1, 2] {
        let err = nested_error(&slots[slot]).unwrap_or_else(|| panic!("slot {slot}: {slots:?}"));
        assert_eq!(err.code, "GUARDED", "slot {slot}: {err}");
    }
    assert_eq!(client.text(&["GET", "before"]), "1");
    assert_eq!(client.text(&["GET", "after"]), "2");
    assert_eq!(snapshot(&mut client, STREAM).entries, before.entries);
    assert_eq!(snapshot(&mut client, STREAM).len, before.len);
    drop(fixture);
}

#[test]
fn redis_call_inside_eval_is_refused() {
    let (fixture, mut client, _) = populated();
    let before = snapshot(&mut client, STREAM);
    let scripts: [(&str, &[&str]); 4] = [
        (
            "return redis.call('XADD', KEYS[1], '*', 'qty', '100')",
            &["1", STREAM],
        ),
        ("return redis.call('del', KEYS[1])", &["1", STREAM]),
        // The key is built inside the script and never declared.
        (
            "return redis.call('XTRIM', 'quantum:stream:' .. 'reconcile.close', 'MAXLEN', 0)",
            &["0"],
        ),
        (
            "return redis.pcall('XADD', KEYS[1], '*', 'qty', '100')",
            &["1", STREAM],
        ),
    ];
    for (script, rest) in scripts {
        let mut args = vec!["EVAL", script];
        args.extend_from_slice(rest);
        let refused = client.err(&args);
        assert!(refused.text.contains("GUARDED"), "{script}: {refused}");
    }
    assert_eq!(snapshot(&mut client, STREAM), before);
    drop(fixture);
}

#[test]
fn redis_call_inside_fcall_is_refused() {
    let (fixture, mut client, _) = populated();
    let before = snapshot(&mut client, STREAM);
    let library = "#!lua name=attack\n\
        redis.register_function('wipe', function(keys, args) return redis.call('DEL', keys[1]) end)";
    client.ok(&["FUNCTION", "LOAD", library]);
    let refused = client.err(&["FCALL", "wipe", "1", STREAM]);
    assert!(refused.text.contains("GUARDED"), "{refused}");
    assert_eq!(snapshot(&mut client, STREAM), before);
    drop(fixture);
}

#[test]
fn quarantine_stream_is_guarded_too() {
    let (fixture, mut client, _) = populated();
    let quarantine = quarantine_of(STREAM);
    let refused = client.err(&["XADD", &quarantine, "*", "reason", "none"]);
    assert_eq!(refused.code, "GUARDED", "{refused}");
    assert_eq!(client.int(&["EXISTS", &quarantine]), 0);
    for call in [
        ["DEL", quarantine.as_str()],
        ["UNLINK", quarantine.as_str()],
    ] {
        let refused = client.err(&call);
        assert_eq!(refused.code, "GUARDED", "{call:?}: {refused}");
    }
    let refused = client.err(&["RENAME", "scratch", &quarantine]);
    assert_eq!(refused.code, "GUARDED", "{refused}");
    assert_eq!(client.int(&["EXISTS", "scratch"]), 1);
    drop(fixture);
}

#[test]
fn reads_and_consumer_group_commands_pass_the_guard() {
    let (fixture, mut client, ids) = populated();
    let g = STREAM;
    assert_eq!(
        reply::entries(&client.ok(&["XRANGE", g, "-", "+"])).len(),
        3
    );
    assert_eq!(
        reply::entries(&client.ok(&["XREVRANGE", g, "+", "-"])).len(),
        3
    );
    assert_eq!(
        client.read_entries(&["XREAD", "STREAMS", g, "0"], g).len(),
        3
    );
    assert_eq!(client.int(&["XLEN", g]), 3);
    client.ok(&["XINFO", "STREAM", g]);
    assert_eq!(client.text(&["TYPE", g]), "stream");
    assert_eq!(client.int(&["EXISTS", g]), 1);
    assert!(matches!(client.ok(&["DUMP", g]), Value::BulkString(_)));
    assert_eq!(client.text(&["OBJECT", "ENCODING", g]), "stream");

    client.ok(&["XGROUP", "CREATE", g, "g2", "0"]);
    let read = client.read_entries(&["XREADGROUP", "GROUP", "g2", "c1", "STREAMS", g, ">"], g);
    assert_eq!(read.len(), 3);
    let pending = client.ok(&["XPENDING", g, "g2"]);
    assert_eq!(reply::texts(&pending)[0], "3");
    assert_eq!(client.int(&["XACK", g, "g2", &ids[0]]), 1);
    let claimed = reply::entries(&client.ok(&["XCLAIM", g, "g2", "c2", "0", &ids[1]]));
    assert_eq!(
        claimed.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        [ids[1].clone()]
    );
    client.ok(&["XAUTOCLAIM", g, "g2", "c3", "0", "0-0"]);
    assert_eq!(client.int(&["XLEN", g]), 3);
    drop(fixture);
}

/// Long forms (five arguments or more) of the commands the guard checks by their first
/// argument alone, each naming `key` there, with `value` wherever the command takes a member,
/// field or value.
fn long_single_key_calls(key: &str, value: &str) -> Vec<Vec<String>> {
    let v = value;
    [
        format!("XADD {key} * {v} {v} f {v}"),
        format!("HSET {key} {v} {v} f {v}"),
        format!("HMSET {key} {v} {v} f {v}"),
        format!("HDEL {key} {v} {v} f"),
        format!("HMGET {key} {v} {v} f"),
        format!("SADD {key} {v} {v} m"),
        format!("SREM {key} {v} {v} m"),
        format!("SMISMEMBER {key} {v} {v} m"),
        format!("ZADD {key} 1 {v} 2 m"),
        format!("ZREM {key} {v} {v} m"),
        format!("ZMSCORE {key} {v} {v} m"),
        format!("LPUSH {key} {v} {v} m"),
        format!("RPUSH {key} {v} {v} m"),
        format!("LPUSHX {key} {v} {v} m"),
        format!("RPUSHX {key} {v} {v} m"),
        format!("XDEL {key} 1-1 2-2 3-3"),
        format!("PFADD {key} {v} {v} m"),
        format!("GEOADD {key} 1 2 {v} 3 4 m"),
        format!("GEOPOS {key} {v} {v} m"),
        format!("GEOHASH {key} {v} {v} m"),
    ]
    .iter()
    .map(|line| words(line))
    .collect()
}

#[test]
fn long_single_key_commands_are_refused_on_guarded_keys_by_their_first_argument() {
    // The guard compares only the first argument of these when they are long; it must still
    // refuse each on the guarded stream and its quarantine, in any case of the name.
    let (fixture, mut client, _) = populated();
    let g = STREAM;
    let quarantine = quarantine_of(g);
    let mut failures = refusal_failures(&mut client, g, &long_single_key_calls(g, "x"));
    let mut lower = long_single_key_calls(g, g);
    for call in &mut lower {
        call[0] = call[0].to_lowercase();
    }
    failures.extend(refusal_failures(&mut client, g, &lower));
    let on_quarantine = long_single_key_calls(&quarantine, "x");
    failures.extend(refusal_failures(&mut client, &quarantine, &on_quarantine));
    assert!(
        failures.is_empty(),
        "refusals that did not hold:\n{}",
        failures.join("\n")
    );
    assert!(fixture.server.log().contains("20 long single-key commands"));
}

#[test]
fn long_single_key_commands_pass_with_the_guarded_name_as_a_value() {
    let (fixture, mut client, _) = populated();
    let mut wrongly_refused = Vec::new();
    for call in long_single_key_calls("elsewhere", STREAM) {
        // Each runs on a key of its own type: a fresh name per call.
        client.call(&["DEL", "elsewhere"]).ok();
        if let Err(err) = client.call(&call) {
            if err.code == "GUARDED" {
                wrongly_refused.push(format!("{call:?}: {err}"));
            }
        }
    }
    assert!(wrongly_refused.is_empty(), "{wrongly_refused:#?}");
    assert_eq!(client.int(&["XLEN", STREAM]), 3);
    drop(fixture);
}

#[test]
fn renamed_commands_are_checked_by_what_they_are_not_by_their_name() {
    // XADD under another name is compared in full. HSET renamed away and MSET renamed to
    // HSET: the name the guard would compare by its first argument alone now runs a command
    // with a key in every other argument, which the check at load notices.
    let fixture = Guarded::start_with(|options| {
        options
            .config("rename-command", &["XADD", "APPEND_ENTRY"])
            .config("rename-command", &["HSET", "HSET_ORIGINAL"])
            .config("rename-command", &["MSET", "HSET"])
    });
    let mut client = fixture.client();
    let calls = vec![
        words(&format!("APPEND_ENTRY {STREAM} * a 1 b 2")),
        words(&format!("HSET other v {STREAM} overwritten a b")),
    ];
    let failures = refusal_failures(&mut client, STREAM, &calls);
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        client.text(&["HSET", "other", "v", "also", "w"]),
        "OK",
        "HSET runs MSET"
    );
    assert!(
        fixture.server.log().contains("18 long single-key commands"),
        "{}",
        fixture.server.log()
    );
}

#[test]
fn guarded_name_as_a_value_or_a_lookalike_key_is_not_guarded() {
    let (fixture, mut client, _) = populated();
    client.ok(&["SET", "other", STREAM]);
    assert_eq!(client.text(&["GET", "other"]), STREAM);
    client.ok(&["XADD", "scratch", "*", "target", STREAM]);
    client.ok(&["LPUSH", "numbers", STREAM]);

    for lookalike in [
        format!("{STREAM}2"),
        format!("x{STREAM}"),
        STREAM.to_uppercase(),
    ] {
        client.ok(&["XADD", &lookalike, "*", "qty", "1"]);
        assert_eq!(client.int(&["DEL", &lookalike]), 1);
    }
    assert_eq!(client.int(&["XLEN", STREAM]), 3);
    drop(fixture);
}

#[test]
fn guard_denied_total_counts_each_refusal() {
    let (fixture, mut client, _) = populated();
    let before = client.info_reconcile().int("guard_denied_total");
    client.err(&["XADD", STREAM, "*", "qty", "100"]);
    client.err(&["DEL", STREAM]);
    client.err(&["SET", STREAM, "x"]);
    client.ok(&["XLEN", STREAM]);
    assert_eq!(
        client.info_reconcile().int("guard_denied_total"),
        before + 3
    );
    drop(fixture);
}

/// Waits for the log to contain a line with every one of `needles`.
fn wait_for_log_line(fixture: &Guarded, needles: &[&str]) -> Option<String> {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let log = fixture.server.log();
        let found = log.lines().find(|line| {
            let lower = line.to_lowercase();
            needles
                .iter()
                .all(|needle| lower.contains(&needle.to_lowercase()))
        });
        if let Some(line) = found {
            return Some(line.to_string());
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn refusal_is_logged_with_command_key_client_and_user_but_no_values() {
    let fixture = Guarded::start();
    let mut admin = fixture.client();
    admin.ok(&[
        "ACL",
        "SETUSER",
        "mallory",
        "on",
        ">pw-mallory",
        "~*",
        "&*",
        "+@all",
    ]);
    let mut mallory = fixture.client();
    mallory.ok(&["AUTH", "mallory", "pw-mallory"]);
    let addr = mallory.addr();

    let secret_value = "s3cr3t-payload-7f1c";
    let refused = mallory.err(&["XADD", STREAM, "*", "note", secret_value]);
    assert_eq!(refused.code, "GUARDED", "{refused}");

    let line = wait_for_log_line(&fixture, &["xadd", STREAM, &addr, "mallory"]);
    assert!(
        line.is_some(),
        "no warning names xadd, {STREAM}, {addr} and mallory; log:\n{}",
        fixture.server.log()
    );
    assert!(
        !fixture.server.log().contains(secret_value),
        "the log shows an argument value"
    );
}

//! The guard under random writes: data commands with the guarded names dropped into random
//! argument positions, sent directly and through a script, never change the guarded stream.
//!
//! The run prints its seed; set `RECONCILE_FUZZ_SEED` to replay one.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reconcile_tests::seed::fuzz_seed;
use reconcile_tests::{quarantine_of, Client, Guarded, STREAM};

const CALLS: usize = 3000;
const TIME_BUDGET: Duration = Duration::from_secs(25);

/// Data commands that can write, plus a few readers; nothing that blocks, changes the
/// connection's mode or touches the server's configuration.
const COMMANDS: [&str; 44] = [
    "XADD",
    "XDEL",
    "XTRIM",
    "XSETID",
    "XGROUP",
    "XACK",
    "XCLAIM",
    "XAUTOCLAIM",
    "DEL",
    "UNLINK",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PERSIST",
    "RENAME",
    "RENAMENX",
    "COPY",
    "MOVE",
    "RESTORE",
    "SORT",
    "SET",
    "MSET",
    "GETDEL",
    "GETEX",
    "APPEND",
    "SUNIONSTORE",
    "ZUNIONSTORE",
    "ZRANGESTORE",
    "BITOP",
    "LMOVE",
    "RPOPLPUSH",
    "SMOVE",
    "GEOSEARCHSTORE",
    "GEORADIUS",
    "FLUSHDB",
    "FLUSHALL",
    "SWAPDB",
    "HSET",
    "LPUSH",
    "SADD",
    "ZADD",
    "SETRANGE",
    "TOUCH",
    "OBJECT",
];

const WORDS: [&str; 24] = [
    "*",
    "MAXLEN",
    "MINID",
    "~",
    "=",
    "0",
    "1",
    "-1",
    "REPLACE",
    "DB",
    "STORE",
    "KEYS",
    "LEFT",
    "RIGHT",
    "CREATE",
    "DESTROY",
    "SETID",
    "g",
    "AND",
    "FROMLONLAT",
    "BYRADIUS",
    "km",
    "ASYNC",
    "99999999999999-0",
];

fn token(rng: &mut StdRng, names: &[String]) -> String {
    match rng.random_range(0..10) {
        0..=3 => names[rng.random_range(0..names.len())].clone(),
        4..=7 => WORDS[rng.random_range(0..WORDS.len())].to_string(),
        8 => rng.random_range(0..100_000u32).to_string(),
        _ => String::new(),
    }
}

fn random_call(rng: &mut StdRng, names: &[String]) -> Vec<String> {
    let command = COMMANDS[rng.random_range(0..COMMANDS.len())];
    let command = if rng.random_bool(0.2) {
        command.to_lowercase()
    } else {
        command.into()
    };
    let mut call = vec![command];
    for _ in 0..rng.random_range(0..7) {
        call.push(token(rng, names));
    }
    if rng.random_bool(0.25) {
        // The same command from inside a script, with no key declared.
        let mut scripted = vec!["EVAL".to_string(), "return redis.call(unpack(ARGV))".into()];
        scripted.push("0".into());
        scripted.extend(call);
        return scripted;
    }
    call
}

/// What no command but the module's may change: the entries, the last ID, the type, the TTL.
fn fingerprint(client: &mut Client, key: &str) -> String {
    // A wrong-type error is part of the fingerprint: it means the key was replaced.
    let entries = client.call(&["XRANGE", key, "-", "+"]);
    let kind = client.text(&["TYPE", key]);
    let ttl = client.int(&["PTTL", key]);
    let info = match client.call(&["XINFO", "STREAM", key]) {
        Ok(value) => reconcile_tests::reply::flatten(&value),
        Err(err) => err.text,
    };
    let last_id = info
        .lines()
        .skip_while(|line| *line != "last-generated-id")
        .nth(1);
    format!("{entries:?} {kind} {ttl} {last_id:?}")
}

/// Keeps an unguarded key of the expected type on the other side of two-key commands, since
/// the random calls may have turned it into something else.
fn replenish(client: &mut Client, write: &[&str]) {
    if client.call(write).is_err() {
        client.ok(&["DEL", write[1]]);
        client.ok(write);
    }
}

#[test]
fn random_writes_never_change_the_guarded_stream() {
    let seed = fuzz_seed("guard");
    let mut rng = StdRng::seed_from_u64(seed);
    let fixture = Guarded::start();
    let mut client = fixture.client();
    client.sign_many(STREAM, 3);
    let quarantine = quarantine_of(STREAM);
    let names = [
        STREAM.to_string(),
        quarantine.clone(),
        "scratch".into(),
        "numbers".into(),
    ];

    let guarded_before = fingerprint(&mut client, STREAM);
    let quarantine_before = fingerprint(&mut client, &quarantine);
    let started = Instant::now();
    let mut calls = 0;
    let mut refused = 0;
    while calls < CALLS && started.elapsed() < TIME_BUDGET {
        replenish(&mut client, &["XADD", "scratch", "*", "qty", "1"]);
        replenish(&mut client, &["RPUSH", "numbers", "1"]);

        let call = random_call(&mut rng, &names);
        if let Err(err) = client.call(&call) {
            assert!(
                err.code != "IO",
                "seed {seed}: {call:?} broke the link: {err}"
            );
            refused += usize::from(err.text.contains("GUARDED"));
        }
        let now = fingerprint(&mut client, STREAM);
        assert_eq!(
            now, guarded_before,
            "seed {seed}: {call:?} changed the guarded stream"
        );
        let now = fingerprint(&mut client, &quarantine);
        assert_eq!(
            now, quarantine_before,
            "seed {seed}: {call:?} changed the quarantine"
        );
        calls += 1;
    }
    println!("{refused} of {calls} calls were refused by the guard");
    assert!(
        refused * 10 >= calls,
        "the guard refused only {refused} of {calls} calls"
    );
    drop(fixture);
}

//! The guard under random writes: data commands with the guarded names dropped into random
//! argument positions, sent directly and through a script, never change the guarded stream.
//!
//! The run prints its seed; set `RECONCILE_FUZZ_SEED` to replay one.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use reconcile_tests::random_calls::data_write;
use reconcile_tests::seed::fuzz_seed;
use reconcile_tests::{quarantine_of, Client, Guarded, STREAM};

const CALLS: usize = 3000;
const TIME_BUDGET: Duration = Duration::from_secs(25);

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

        let call = data_write(&mut rng, &names);
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

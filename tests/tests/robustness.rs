//! Robustness: random argument lists against every module command never take the server down,
//! and large inputs round-trip.
//!
//! The random run prints its seed; set `RECONCILE_FUZZ_SEED` to replay one.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use reconcile_tests::random_calls::module_call;
use reconcile_tests::seed::fuzz_seed;
use reconcile_tests::{Guarded, STREAM};

const CALLS: usize = 8000;
const TIME_BUDGET: Duration = Duration::from_secs(25);

#[test]
fn random_argument_lists_never_take_the_server_down() {
    let seed = fuzz_seed("module commands");
    let mut rng = StdRng::seed_from_u64(seed);

    // The random calls may legitimately exhaust or trim STREAM; the canary is never named by
    // them, so it shows whether signing and verifying still work afterwards.
    let canary = "quantum:stream:canary";
    let mut fixture = Guarded::start_with(|options| options.load_arg("guard", canary));
    let mut client = fixture.client();
    let before = client.sign(canary, &[("before", "fuzz")]);
    client.sign_many(STREAM, 5);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    client.ok(&["RPUSH", "numbers", "1", "2"]);
    client.set_read_timeout(Some(Duration::from_secs(5)));

    let started = Instant::now();
    let mut calls = 0;
    let mut accepted = 0;
    while calls < CALLS && started.elapsed() < TIME_BUDGET {
        let call = module_call(&mut rng);
        let outcome = client.call(&call);
        accepted += usize::from(outcome.is_ok());
        if let Err(err) = outcome {
            let shown: Vec<String> = call
                .iter()
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            assert!(
                err.code != "IO",
                "seed {seed}, call {calls}: {shown:?} broke the link: {err}"
            );
        }
        calls += 1;
    }
    assert!(calls >= 1000, "only {calls} calls in the time budget");
    println!("{accepted} of {calls} calls were accepted");
    // A run where nearly everything fails the first arity check exercises little.
    assert!(
        accepted * 20 >= calls,
        "only {accepted} of {calls} calls got past validation"
    );

    assert!(
        fixture.server.is_running(),
        "seed {seed}: redis-server died"
    );
    let mut fresh = fixture.client();
    assert_eq!(fresh.text(&["PING"]), "PONG");
    fresh.info_reconcile().int("signed_total");
    assert_eq!(fresh.verify(canary, &before), "OK");
    let after = fresh.sign(canary, &[("after", "fuzz")]);
    assert_eq!(fresh.verify(canary, &after), "OK");
    let refused = fresh.err(&["XADD", STREAM, "*", "qty", "100"]);
    assert_eq!(refused.code, "GUARDED", "{refused}");
}

#[test]
fn large_values_and_many_fields_round_trip() {
    let fixture = Guarded::start();
    let mut client = fixture.client();

    let big = "x".repeat(1 << 20);
    let id = client.sign(STREAM, &[("blob", &big)]);
    assert_eq!(client.verify(STREAM, &id), "OK");

    let names: Vec<String> = (0..1000).map(|n| format!("f{n}")).collect();
    let mut args = vec!["RECONCILE.XADDSIGNED", STREAM, "*"];
    for name in &names {
        args.push(name);
        args.push(name);
    }
    let id = client.text(&args);
    assert_eq!(client.verify(STREAM, &id), "OK");
    let read = client.read_entries(&["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"], STREAM);
    assert_eq!(read.len(), 2);
    assert_eq!(read[1].fields.len(), 1003);
}

//! Robustness: random argument lists against every module command never take the server down,
//! and large inputs round-trip.
//!
//! The random run prints its seed; set `RECONCILE_FUZZ_SEED` to replay one.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reconcile_tests::seed::fuzz_seed;
use reconcile_tests::{quarantine_of, Guarded, STREAM};

const CALLS: usize = 8000;
const TIME_BUDGET: Duration = Duration::from_secs(25);

const COMMANDS: [&str; 4] = [
    "RECONCILE.XADDSIGNED",
    "RECONCILE.XREADVERIFIED",
    "RECONCILE.VERIFY",
    "RECONCILE.KEYRING",
];

const KEYWORDS: [&str; 26] = [
    "GROUP",
    "COUNT",
    "BLOCK",
    "NOACK",
    "STREAMS",
    "NOMKSTREAM",
    "MAXLEN",
    "MINID",
    "LIMIT",
    "=",
    "~",
    "*",
    ">",
    "$",
    "-",
    "+",
    "RELOAD",
    "LIST",
    "kid",
    "signed_ms",
    "hmac",
    "g",
    "c1",
    "qty",
    "numbers",
    "other",
];

const NUMBERS: [&str; 16] = [
    "0",
    "1",
    "2",
    "-1",
    "100",
    "0-0",
    "0-1",
    "1-1",
    "5-",
    "-5",
    "1-x",
    "1.5",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551615-18446744073709551615",
];

/// Values that keep a BLOCK short: a random timeout could park the connection for hours.
const SHORT_BLOCKS: [&str; 5] = ["1", "2", "-1", "x", ""];

fn random_token(rng: &mut StdRng) -> Vec<u8> {
    let quarantine = quarantine_of(STREAM);
    match rng.random_range(0..10) {
        0..=3 => {
            let word = KEYWORDS[rng.random_range(0..KEYWORDS.len())];
            let word = if rng.random_bool(0.2) {
                word.to_lowercase()
            } else {
                word.to_string()
            };
            word.into_bytes()
        }
        4 | 5 => NUMBERS[rng.random_range(0..NUMBERS.len())]
            .as_bytes()
            .to_vec(),
        6 => {
            let keys = [STREAM, quarantine.as_str(), "numbers", "other"];
            keys[rng.random_range(0..keys.len())].as_bytes().to_vec()
        }
        7 => Vec::new(),
        8 => rng.random::<u64>().to_string().into_bytes(),
        _ => {
            let len = if rng.random_bool(0.02) {
                20_000
            } else {
                rng.random_range(1..24)
            };
            (0..len).map(|_| rng.random::<u8>()).collect()
        }
    }
}

/// Well-formed calls that the mutating half of the run starts from, so that the random tokens
/// reach the deeper parsing paths and not only the first check.
fn templates() -> Vec<Vec<&'static str>> {
    let g = STREAM;
    vec![
        vec!["RECONCILE.XADDSIGNED", g, "*", "qty", "1"],
        vec![
            "RECONCILE.XADDSIGNED",
            g,
            "NOMKSTREAM",
            "MAXLEN",
            "~",
            "10",
            "LIMIT",
            "5",
            "*",
            "a",
            "b",
        ],
        vec![
            "RECONCILE.XADDSIGNED",
            g,
            "MINID",
            "=",
            "0",
            "*",
            "a",
            "b",
            "c",
            "d",
        ],
        vec!["RECONCILE.XREADVERIFIED", "COUNT", "2", "STREAMS", g, "0"],
        vec![
            "RECONCILE.XREADVERIFIED",
            "GROUP",
            "g",
            "c1",
            "COUNT",
            "2",
            "NOACK",
            "STREAMS",
            g,
            ">",
        ],
        vec![
            "RECONCILE.XREADVERIFIED",
            "GROUP",
            "g",
            "c1",
            "BLOCK",
            "1",
            "STREAMS",
            g,
            g,
            "0",
            ">",
        ],
        vec!["RECONCILE.VERIFY", g, "0-1"],
        vec!["RECONCILE.KEYRING", "LIST"],
        vec!["RECONCILE.KEYRING", "RELOAD"],
    ]
}

/// A template with up to two tokens replaced, removed or inserted.
fn mutated_template(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let all = templates();
    let template = &all[rng.random_range(0..all.len())];
    let mut call: Vec<Vec<u8>> = template.iter().map(|arg| arg.as_bytes().to_vec()).collect();
    for _ in 0..rng.random_range(0..3) {
        let at = rng.random_range(1..=call.len());
        match rng.random_range(0..3) {
            0 if at < call.len() => call[at] = random_token(rng),
            1 if at < call.len() => {
                call.remove(at);
            }
            _ => call.insert(at, random_token(rng)),
        }
    }
    call
}

/// A mutated template half the time, otherwise a command name followed by random tokens.
fn random_call(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let mut call = if rng.random_bool(0.5) {
        mutated_template(rng)
    } else {
        let name = COMMANDS[rng.random_range(0..COMMANDS.len())];
        let mut call = vec![name.as_bytes().to_vec()];
        for _ in 0..rng.random_range(0..14) {
            call.push(random_token(rng));
        }
        call
    };
    for at in 1..call.len() {
        if call[at - 1].eq_ignore_ascii_case(b"BLOCK") {
            call[at] = SHORT_BLOCKS[rng.random_range(0..SHORT_BLOCKS.len())]
                .as_bytes()
                .to_vec();
        }
    }
    call
}

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
        let call = random_call(&mut rng);
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

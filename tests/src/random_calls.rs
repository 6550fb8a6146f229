//! Random command lines for the randomized tests: module commands with mangled arguments, and
//! data commands (mostly writes) that name chosen keys in random positions.
//!
//! The robustness test, the guard test and the soak share them, so that each draws from the
//! same mix of calls.

use rand::rngs::StdRng;
use rand::RngExt;

use crate::{quarantine_of, STREAM};

const MODULE_COMMANDS: [&str; 4] = [
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

/// A module command with random arguments: a mutated well-formed call half the time,
/// otherwise a command name followed by random tokens. A `BLOCK` is always kept short.
pub fn module_call(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let mut call = if rng.random_bool(0.5) {
        mutated_template(rng)
    } else {
        let name = MODULE_COMMANDS[rng.random_range(0..MODULE_COMMANDS.len())];
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

/// Data commands that can write, plus a few readers; nothing that blocks, changes the
/// connection's mode or touches the server's configuration.
const DATA_COMMANDS: [&str; 44] = [
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

const DATA_WORDS: [&str; 24] = [
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

fn data_token(rng: &mut StdRng, names: &[String]) -> String {
    match rng.random_range(0..10) {
        0..=3 => names[rng.random_range(0..names.len())].clone(),
        4..=7 => DATA_WORDS[rng.random_range(0..DATA_WORDS.len())].to_string(),
        8 => rng.random_range(0..100_000u32).to_string(),
        _ => String::new(),
    }
}

/// A data command (mostly writes) with `names` dropped into random argument positions; a
/// quarter of them sent from inside a script.
pub fn data_write(rng: &mut StdRng, names: &[String]) -> Vec<String> {
    let command = DATA_COMMANDS[rng.random_range(0..DATA_COMMANDS.len())];
    let command = if rng.random_bool(0.2) {
        command.to_lowercase()
    } else {
        command.into()
    };
    let mut call = vec![command];
    for _ in 0..rng.random_range(0..7) {
        call.push(data_token(rng, names));
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

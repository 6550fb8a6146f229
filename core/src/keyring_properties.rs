//! Properties of the keyring parser.
//!
//! The property tests below and the `keyring` fuzz target drive the same checks with their
//! own generators. Compiled for those two only.
//!
//! - Any text: the parser returns; an accepted ring holds one key per line that is neither
//!   blank nor a comment, in file order, under the kid that starts the line, each kid valid and
//!   unique; a refusal never quotes key text.
//! - A ring written from keys, with any indentation, separators, hex case, CRLF line ends,
//!   comments and blank lines, parses back to the same kids in the same order, each holding the
//!   same key bytes (same fingerprint, same MAC).
//! - One bad line among good ones is refused with its own line number.

use super::*;
use crate::mac::sign;

const KID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";

/// Hex runs this long cannot come from a kid (32 characters at most), so a message that holds
/// one is quoting a key (64 hex digits at least).
const LEAK_RUN: usize = MAX_KID_LEN + 1;

/// Asserts that `message` holds no run of [`LEAK_RUN`] hex digits.
fn assert_quotes_no_key(message: &str) {
    let mut run = 0;
    for b in message.bytes() {
        run = if b.is_ascii_hexdigit() { run + 1 } else { 0 };
        assert!(run < LEAK_RUN, "the message quotes key text: {message}");
    }
}

/// `Keyring::parse` on any text: no panic, a consistent ring or a refusal that quotes no key.
pub fn parse_accepts_consistently(text: &[u8]) {
    let ring = match Keyring::parse(text) {
        Ok(ring) => ring,
        Err(e) => return assert_quotes_no_key(&e.to_string()),
    };
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .collect();
    assert_eq!(ring.keys().len(), lines.len());
    for (i, (key, line)) in ring.keys().iter().zip(&lines).enumerate() {
        let kid = key.kid().as_bytes();
        assert!(line.starts_with(kid));
        assert!(line.get(kid.len()).is_some_and(u8::is_ascii_whitespace));
        assert!(!kid.is_empty() && kid.len() <= MAX_KID_LEN);
        assert!(kid.iter().all(|&b| is_kid_byte(b)));
        assert!(ring.keys()[..i].iter().all(|k| k.kid() != key.kid()));
        assert_eq!(key.fingerprint().len(), 16);
        assert!(ring.find(kid).is_some());
    }
    assert_eq!(ring.signing().kid(), ring.keys()[0].kid());
    assert_quotes_no_key(&format!("{ring:?}"));
}

/// Keys to write into a keyring file, and how to lay the file out.
#[derive(Clone, Debug)]
pub struct RingText {
    /// Kid seeds (mapped onto the kid alphabet, cut to 32 characters, made unique) and
    /// secrets (stretched to the minimum length, kept from being weak or the public default).
    pub keys: Vec<(Vec<u8>, Vec<u8>)>,
    /// Drives the layout choices of every line.
    pub layout: u64,
}

/// A step of SplitMix64: a cheap stream of layout choices from one seed.
fn next_choice(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl RingText {
    /// The keys as valid (kid, secret) pairs with distinct kids; one key when none is given.
    fn keys(&self) -> Vec<(String, Vec<u8>)> {
        let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
        let seeds = if self.keys.is_empty() {
            vec![(b"k".to_vec(), Vec::new())]
        } else {
            self.keys.clone()
        };
        for (n, (seed, secret)) in seeds.into_iter().enumerate() {
            let mut kid: String = seed
                .iter()
                .take(MAX_KID_LEN)
                .map(|&b| char::from(KID_ALPHABET[usize::from(b) % KID_ALPHABET.len()]))
                .collect();
            if kid.is_empty() || keys.iter().any(|(k, _)| *k == kid) {
                kid = format!("key-{n}");
            }
            let mut bytes = secret;
            while bytes.len() < MIN_KEY_BYTES {
                bytes.push(bytes.len() as u8);
            }
            if bytes.iter().all(|&b| b == bytes[0]) || bytes == PUBLIC_DEFAULT_SECRET {
                bytes[0] ^= 1;
            }
            keys.push((kid, bytes));
        }
        keys
    }

    /// The file text, one key line per key among comments and blank lines, and the line
    /// number (from 1) of each key line.
    fn render(&self, keys: &[(String, Vec<u8>)]) -> (Vec<String>, Vec<usize>) {
        let mut state = self.layout;
        let mut lines = Vec::new();
        let mut at = Vec::new();
        for (kid, bytes) in keys {
            let choice = next_choice(&mut state);
            if choice & 3 == 0 {
                lines.push(["# a comment", "  # indented", "#"][(choice >> 2) as usize % 3].into());
            }
            if choice & 12 == 0 {
                lines.push(["", "   ", "\t", "\r"][(choice >> 4) as usize % 4].into());
            }
            let indent = ["", " ", "\t", "  \t"][(choice >> 6) as usize % 4];
            let gap = [" ", "\t", " \t ", "    "][(choice >> 8) as usize % 4];
            let end = ["", " ", "\r", "\t\r"][(choice >> 10) as usize % 4];
            let mut secret = hex::encode(bytes);
            if choice & (1 << 12) != 0 {
                secret.make_ascii_uppercase();
            }
            lines.push(format!("{indent}{kid}{gap}{secret}{end}"));
            at.push(lines.len());
        }
        (lines, at)
    }
}

fn join(lines: &[String], trailing_newline: bool) -> String {
    let mut text = lines.join("\n");
    if trailing_newline {
        text.push('\n');
    }
    text
}

/// A ring written out from its keys parses back to the same kids and key bytes.
pub fn ring_round_trip(ring: &RingText) {
    let keys = ring.keys();
    let (lines, _) = ring.render(&keys);
    let text = join(&lines, ring.layout & 1 == 1);
    let parsed = match Keyring::parse(text.as_bytes()) {
        Ok(parsed) => parsed,
        Err(e) => panic!("refused a valid ring: {e}\n{text}"),
    };
    assert_eq!(parsed.keys().len(), keys.len());
    for (key, (kid, bytes)) in parsed.keys().iter().zip(&keys) {
        assert_eq!(key.kid(), kid);
        assert_eq!(key.fingerprint(), crate::mac::fingerprint(bytes));
        let fields: [&[u8]; 2] = [b"side", b"SELL"];
        let made = sign(key.mac(), b"k", b"s", b"1", &fields);
        assert_eq!(made, sign(&MacKey::new(bytes), b"k", b"s", b"1", &fields));
    }
    assert_eq!(parsed.signing().kid(), keys[0].0);
    parse_accepts_consistently(text.as_bytes());
}

/// The kinds of bad line [`bad_line_is_reported_at_its_line`] inserts.
pub const FLAWS: usize = 10;

/// A bad line of kind `flaw` (modulo [`FLAWS`]), inserted at `at` (modulo the line count) in
/// an otherwise valid ring, is refused with the number of the line that is wrong.
pub fn bad_line_is_reported_at_its_line(ring: &RingText, flaw: usize, at: usize, short: usize) {
    let keys = ring.keys();
    let (mut lines, key_lines) = ring.render(&keys);
    let first_kid = keys[0].0.clone();
    let good_hex = hex::encode(&keys[0].1);
    let short_bytes = short % MIN_KEY_BYTES;
    let other: Vec<u8> = (0x40..0x60).collect();
    let short_hex: String = (0..short_bytes)
        .map(|n| format!("{:02x}", n * 7 + 1))
        .collect();
    let (bad, expected_kind): (String, fn(&KeyringError) -> bool) = match flaw % FLAWS {
        0 => (format!("extra {good_hex} word"), |e| {
            matches!(e, KeyringError::Malformed { .. })
        }),
        1 => (format!("bad/kid {good_hex}"), |e| {
            matches!(e, KeyringError::Malformed { .. })
        }),
        2 => (format!("{} {good_hex}", "k".repeat(33)), |e| {
            matches!(e, KeyringError::Malformed { .. })
        }),
        3 => ("nothex zz".into(), |e| {
            matches!(e, KeyringError::Malformed { .. })
        }),
        4 => (format!("odd {}", &good_hex[1..]), |e| {
            matches!(e, KeyringError::Malformed { .. })
        }),
        5 => (format!("short {short_hex}"), |e| {
            matches!(
                e,
                KeyringError::ShortKey { .. } | KeyringError::Malformed { .. }
            )
        }),
        6 => (format!("flat {}", "5a".repeat(32)), |e| {
            matches!(e, KeyringError::WeakKey { .. })
        }),
        7 => ("old quantum_reconcile_secret_change_in_prod".into(), |e| {
            matches!(e, KeyringError::PublicDefault { .. })
        }),
        8 => (format!("old {}", hex::encode(PUBLIC_DEFAULT_SECRET)), |e| {
            matches!(e, KeyringError::PublicDefault { .. })
        }),
        _ => (format!("{first_kid} {}", hex::encode(other)), |e| {
            matches!(e, KeyringError::DuplicateKid { .. })
        }),
    };
    let at = at % (lines.len() + 1);
    lines.insert(at, bad);
    let bad_line = at + 1;
    // A repeated kid is refused at whichever of its two lines comes second.
    let first_key_line = key_lines[0] + usize::from(at < key_lines[0]);
    let expected_line = if flaw % FLAWS == FLAWS - 1 {
        bad_line.max(first_key_line)
    } else {
        bad_line
    };

    let text = join(&lines, ring.layout & 1 == 1);
    let err = match Keyring::parse(text.as_bytes()) {
        Ok(_) => panic!("accepted a ring with a bad line {bad_line}:\n{text}"),
        Err(e) => e,
    };
    assert!(expected_kind(&err), "{err:?} for line {bad_line}");
    let line = match &err {
        KeyringError::Malformed { line, .. }
        | KeyringError::DuplicateKid { line, .. }
        | KeyringError::ShortKey { line, .. }
        | KeyringError::PublicDefault { line }
        | KeyringError::WeakKey { line, .. } => *line,
        other => panic!("{other:?} names no line"),
    };
    assert_eq!(line, expected_line, "{err}\n{text}");
    assert_quotes_no_key(&err.to_string());
    if short_hex.len() >= 16 {
        assert!(!err.to_string().contains(&short_hex));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CASES: u32 = 4096;

    fn ring_text() -> impl Strategy<Value = RingText> {
        let key = (
            prop::collection::vec(any::<u8>(), 0..40),
            prop::collection::vec(any::<u8>(), 0..48),
        );
        (prop::collection::vec(key, 0..6), any::<u64>())
            .prop_map(|(keys, layout)| RingText { keys, layout })
    }

    /// Texts close to the format: kid-like words, hex of key length or near it, comments.
    fn near_ring_text() -> impl Strategy<Value = Vec<u8>> {
        let word = prop_oneof![
            "[A-Za-z0-9._/-]{0,34}",
            "[0-9a-fA-F]{60,68}",
            "(5a){32}",
            "#[ -~]{0,10}",
            "[ \t\r]{0,3}",
        ];
        let line = prop::collection::vec(word, 0..4).prop_map(|words| words.join(" "));
        prop::collection::vec(line, 0..6).prop_map(|lines| lines.join("\n").into_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn any_text_is_refused_or_read_consistently(
            text in prop_oneof![near_ring_text(), prop::collection::vec(any::<u8>(), 0..200)],
        ) {
            parse_accepts_consistently(&text);
        }

        #[test]
        fn written_rings_parse_back(ring in ring_text()) {
            ring_round_trip(&ring);
        }

        #[test]
        fn a_bad_line_is_reported_at_its_line(
            ring in ring_text(),
            flaw in 0..FLAWS,
            at in any::<usize>(),
            short in any::<usize>(),
        ) {
            bad_line_is_reported_at_its_line(&ring, flaw, at, short);
        }
    }
}

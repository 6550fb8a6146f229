//! Entry verification: whatever the stored items, `check_entry` does not panic and accepts
//! exactly the entries the ring vouches for. Inputs are often signed by the ring's key (with
//! any signing-time text) and then disturbed, so that acceptance is reachable.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use reconcile_core::keyring::Keyring;
use reconcile_core::mac::properties::{accepts_exactly_genuine, signed_entry};
use reconcile_core::mac::Freshness;

#[derive(Arbitrary, Debug)]
struct Input {
    stream: Vec<u8>,
    user: Vec<Vec<u8>>,
    signed_ms: Vec<u8>,
    /// Sign with the first key, the second, or not at all (raw items).
    signer: u8,
    /// Items appended after the trailer, and an item to replace.
    tail: Vec<Vec<u8>>,
    replace: Option<(usize, Vec<u8>)>,
    now_ms: u64,
    max_age_ms: u64,
}

const SIGNING: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
const VERIFYING: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn fixed_ring(text: &str) -> Keyring {
    match Keyring::parse(text.as_bytes()) {
        Ok(ring) => ring,
        Err(e) => panic!("a fixed ring is refused: {e}"),
    }
}

fuzz_target!(|input: Input| {
    let ring = fixed_ring(&format!("k2 {SIGNING}\nk1 {VERIFYING}\n"));
    let mut items = match input.signer % 3 {
        0 => signed_entry(&ring, &input.stream, &input.signed_ms, &input.user),
        1 => {
            let older = fixed_ring(&format!("k1 {VERIFYING}\n"));
            signed_entry(&older, &input.stream, &input.signed_ms, &input.user)
        }
        _ => input.user.clone(),
    };
    items.extend(input.tail.iter().cloned());
    if let Some((at, item)) = &input.replace {
        if !items.is_empty() {
            let at = at % items.len();
            items[at] = item.clone();
        }
    }
    let window = Freshness {
        now_ms: input.now_ms,
        max_age_ms: input.max_age_ms,
    };
    accepts_exactly_genuine(&ring, &input.stream, &items, None);
    accepts_exactly_genuine(&ring, &input.stream, &items, Some(window));
});

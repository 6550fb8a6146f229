//! Seeds and sizes of the fault runs.

use std::time::{SystemTime, UNIX_EPOCH};

/// Replays a run: the seed it printed.
pub const SEED_VAR: &str = "RELIABILITY_SEED";
/// Selects the long form of every test when set to `1`.
pub const LONG_VAR: &str = "RELIABILITY_LONG";

/// Whether the long form was asked for.
pub fn long_form() -> bool {
    std::env::var(LONG_VAR).is_ok_and(|v| v == "1")
}

/// `short` in CI, `long` with `RELIABILITY_LONG=1`.
pub fn size(short: usize, long: usize) -> usize {
    if long_form() {
        long
    } else {
        short
    }
}

/// SplitMix64: small, and the same sequence for the same seed on every platform.
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded from `RELIABILITY_SEED` or the clock; the seed is printed.
    pub fn for_test(test: &str) -> Rng {
        let seed = match std::env::var(SEED_VAR) {
            Ok(text) => text.parse().expect("RELIABILITY_SEED is a number"),
            Err(_) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64,
        };
        println!("{test}: seed {seed} (replay with {SEED_VAR}={seed})");
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

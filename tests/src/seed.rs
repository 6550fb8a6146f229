//! Seeds for the randomized tests: fresh each run, replayable through an environment variable.

use std::time::{SystemTime, UNIX_EPOCH};

/// The variable that replays a randomized run.
pub const SEED_VAR: &str = "RECONCILE_FUZZ_SEED";

/// The seed in `RECONCILE_FUZZ_SEED`, or one taken from the clock; printed either way so that a
/// failing run can be replayed.
pub fn fuzz_seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_VAR) {
        Ok(text) => text.parse().expect("RECONCILE_FUZZ_SEED is a number"),
        Err(_) => {
            let since = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970");
            since.as_nanos() as u64
        }
    };
    println!("{test}: seed {seed} (replay with {SEED_VAR}={seed})");
    seed
}

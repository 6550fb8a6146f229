//! Capped exponential backoff between retries.
//!
//! The n-th delay (from zero) is `base * 2^n`, never more than `cap`. With jitter each delay
//! is drawn from its upper half, `[d/2, d]`, so workers that failed together do not retry in
//! step, while the delay still grows and never exceeds the cap.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::shutdown::Shutdown;

/// Delays for successive retries of one operation; [`Backoff::reset`] after a success.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: bool,
    attempt: u32,
    seed: RandomState,
}

impl Backoff {
    /// Delays starting at `base` and doubling up to `cap`, without jitter.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            jitter: false,
            attempt: 0,
            seed: RandomState::new(),
        }
    }

    /// The same, with each delay drawn from the upper half of its range.
    pub fn with_jitter(mut self) -> Backoff {
        self.jitter = true;
        self
    }

    /// The delay before the next retry; advances the attempt count.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        let full = self.base.saturating_mul(factor).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        if !self.jitter {
            return full;
        }
        let half = full / 2;
        let spread = u64::try_from((full - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.random() % spread.saturating_add(1))
    }

    /// Starts again from `base`, after the operation succeeded.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Sleeps for the next delay; returns `false` at once if `shutdown` fires first.
    pub async fn sleep(&mut self, shutdown: &Shutdown) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = shutdown.wait() => false,
        }
    }

    fn random(&self) -> u64 {
        let mut hasher = self.seed.build_hasher();
        hasher.write_u32(self.attempt);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_base_and_stops_at_cap() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS);
        let delays: Vec<_> = (0..6).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            delays,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(backoff.attempts(), 6);
    }

    #[test]
    fn reset_starts_over_from_base() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS);
        backoff.next_delay();
        backoff.next_delay();
        backoff.reset();
        assert_eq!(backoff.next_delay(), 100 * MS);
    }

    #[test]
    fn many_attempts_neither_overflow_nor_pass_the_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..200 {
            assert!(backoff.next_delay() <= Duration::from_secs(30));
        }
    }

    #[test]
    fn jitter_stays_in_the_upper_half_and_under_the_cap() {
        let mut backoff = Backoff::new(100 * MS, 800 * MS).with_jitter();
        for attempt in 0..20u32 {
            let full = (100 * MS * 2u32.pow(attempt.min(3))).min(800 * MS);
            let delay = backoff.next_delay();
            assert!(
                delay >= full / 2 && delay <= full,
                "{delay:?} outside {full:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_waits_the_delay() {
        let (_trigger, shutdown) = Shutdown::new();
        let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        assert!(backoff.sleep(&shutdown).await);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(backoff.sleep(&shutdown).await);
        assert_eq!(start.elapsed(), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_returns_early_on_shutdown() {
        let (trigger, shutdown) = Shutdown::new();
        let mut backoff = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        trigger.fire();
        let start = tokio::time::Instant::now();
        assert!(!backoff.sleep(&shutdown).await);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}

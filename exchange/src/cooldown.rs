//! The pause the exchange asks for with `Retry-After`, kept across requests.
//!
//! Binance answers a client over its request weight with 429 and `Retry-After`, and bans the
//! address with 418 when requests keep coming during that pause. Retrying one request later is
//! not enough: every other request of the same client counts against the same limit, so the
//! pause holds for all of them until it has passed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The moment before which no request may be sent.
#[derive(Debug, Default)]
pub(crate) struct Cooldown(Mutex<Option<Instant>>);

impl Cooldown {
    /// How long requests must still wait at `now`; `None` once they may go.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let until = (*self.lock())?;
        let left = until.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// Holds requests back until `wait` after `now`. A pause already longer is kept: answers
    /// to requests sent side by side may arrive in any order.
    pub fn hold(&self, now: Instant, wait: Duration) {
        let Some(until) = now.checked_add(wait) else {
            return;
        };
        let mut held = self.lock();
        if held.is_none_or(|current| current < until) {
            *held = Some(until);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // The value is a plain instant, whole whenever the lock is released.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn requests_wait_until_the_pause_has_passed() {
        let cooldown = Cooldown::default();
        let start = Instant::now();
        assert_eq!(cooldown.remaining(start), None);

        cooldown.hold(start, 2 * SEC);
        assert_eq!(cooldown.remaining(start), Some(2 * SEC));
        assert_eq!(cooldown.remaining(start + SEC), Some(SEC));
        assert_eq!(cooldown.remaining(start + 2 * SEC), None);
        assert_eq!(cooldown.remaining(start + 3 * SEC), None);
    }

    #[test]
    fn a_shorter_pause_arriving_later_does_not_cut_a_longer_one() {
        let cooldown = Cooldown::default();
        let start = Instant::now();
        cooldown.hold(start, 30 * SEC);
        cooldown.hold(start + SEC, SEC);
        assert_eq!(cooldown.remaining(start + 10 * SEC), Some(20 * SEC));

        cooldown.hold(start + 20 * SEC, 60 * SEC);
        assert_eq!(cooldown.remaining(start + 30 * SEC), Some(50 * SEC));
    }

    #[test]
    fn a_zero_pause_holds_nothing() {
        let cooldown = Cooldown::default();
        let start = Instant::now();
        cooldown.hold(start, Duration::ZERO);
        assert_eq!(cooldown.remaining(start), None);
    }
}

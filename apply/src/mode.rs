//! The account's position mode, kept between plans for a bounded time.
//!
//! The mode (one-way or hedge) changes only when an operator switches it, and the exchange
//! allows that only while the account has no open position or order, so asking for it before
//! every plan spends a round trip on an answer that does not change. A reading is used for at
//! most `max_age` after its request was sent; past that the next plan reads it again. An order
//! refused because its position side does not fit the account's mode drops the reading at
//! once, so the plan is checked again against a fresh one.

use std::sync::Mutex;
use std::time::Duration;

use reconcile_exchange::PositionMode;
use tokio::time::Instant;

/// The last position mode read from the exchange, and when its request was sent.
#[derive(Debug)]
pub struct ModeCache {
    max_age: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    held: Option<(PositionMode, Instant)>,
    /// When the mode was last dropped. A reading whose request left before this may predate
    /// the change that made the mode wrong, so it is not kept.
    dropped_at: Option<Instant>,
}

impl ModeCache {
    /// An empty cache whose readings serve for `max_age`.
    pub fn new(max_age: Duration) -> ModeCache {
        ModeCache {
            max_age,
            state: Mutex::default(),
        }
    }

    /// The cached mode, if its request was sent less than `max_age` before `now`.
    pub fn fresh(&self, now: Instant) -> Option<PositionMode> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mode, sent) = state.held?;
        (now.saturating_duration_since(sent) < self.max_age).then_some(mode)
    }

    /// Keeps `mode`, read by a request sent at `sent`, unless a newer reading is held or the
    /// mode was dropped after that request left.
    pub fn store(&self, mode: PositionMode, sent: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.dropped_at.is_some_and(|dropped| sent < dropped) {
            return;
        }
        if state.held.is_some_and(|(_, held)| held > sent) {
            return;
        }
        state.held = Some((mode, sent));
    }

    /// Forgets the mode at `now`: the exchange refused an order sent in it.
    pub fn drop_reading(&self, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.held = None;
        state.dropped_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_secs(30);

    #[test]
    fn empty_cache_has_no_mode() {
        assert_eq!(ModeCache::new(AGE).fresh(Instant::now()), None);
    }

    #[test]
    fn reading_serves_until_its_age_runs_out() {
        let cache = ModeCache::new(AGE);
        let sent = Instant::now();
        cache.store(PositionMode::Hedge, sent);
        assert_eq!(cache.fresh(sent), Some(PositionMode::Hedge));
        let last = sent + AGE - Duration::from_millis(1);
        assert_eq!(cache.fresh(last), Some(PositionMode::Hedge));
        assert_eq!(cache.fresh(sent + AGE), None);
    }

    #[test]
    fn older_reading_does_not_replace_a_newer_one() {
        let cache = ModeCache::new(AGE);
        let early = Instant::now();
        let late = early + Duration::from_secs(1);
        cache.store(PositionMode::Hedge, late);
        cache.store(PositionMode::OneWay, early);
        assert_eq!(cache.fresh(late), Some(PositionMode::Hedge));
        cache.store(PositionMode::OneWay, late + Duration::from_secs(1));
        assert_eq!(cache.fresh(late), Some(PositionMode::OneWay));
    }

    #[test]
    fn position_side_refusal_drops_the_mode_and_readings_sent_before_it() {
        let cache = ModeCache::new(AGE);
        let start = Instant::now();
        cache.store(PositionMode::OneWay, start);
        let refused = start + Duration::from_secs(2);
        cache.drop_reading(refused);
        assert_eq!(cache.fresh(refused), None);

        // A read still in flight when the order was refused may carry the old mode.
        cache.store(PositionMode::OneWay, refused - Duration::from_millis(1));
        assert_eq!(cache.fresh(refused), None);

        cache.store(PositionMode::Hedge, refused);
        assert_eq!(cache.fresh(refused), Some(PositionMode::Hedge));
    }
}

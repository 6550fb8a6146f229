//! Host clock corrected by the offset learned from the exchange's server time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by the host clock.
pub fn host_now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// The difference between server time and host time, in milliseconds.
#[derive(Debug, Default)]
pub struct ClockOffset(AtomicI64);

impl ClockOffset {
    /// Host time corrected towards server time.
    pub fn now_ms(&self) -> i64 {
        host_now_ms().saturating_add(self.get())
    }

    /// The current offset (server minus host).
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Records a server time read between host times `sent_ms` and `received_ms`, taking the
    /// midpoint of the round trip as the moment the server read its clock.
    pub fn learn(&self, sent_ms: i64, server_ms: i64, received_ms: i64) -> i64 {
        let midpoint = sent_ms + (received_ms - sent_ms) / 2;
        let offset = server_ms - midpoint;
        self.0.store(offset, Ordering::Relaxed);
        offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_taken_at_the_midpoint_of_the_round_trip() {
        let clock = ClockOffset::default();
        assert_eq!(clock.learn(1_000, 61_010, 1_020), 60_000);
        assert_eq!(clock.learn(1_000, 990, 1_010), -15);
    }
}

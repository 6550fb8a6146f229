//! Warning lines that a flood cannot turn into a flood of log lines.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ffi::{self, Level, RedisModuleCtx};

/// A budget of log lines per time window. Lines over budget are counted, and the count is
/// appended to the next line written.
pub struct RateLimitedLog {
    burst: u32,
    window: Duration,
    state: Mutex<Budget>,
}

struct Budget {
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl RateLimitedLog {
    pub const fn new(burst: u32, window: Duration) -> RateLimitedLog {
        RateLimitedLog {
            burst,
            window,
            state: Mutex::new(Budget {
                window_start: None,
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// Takes one line from the budget. `Some(n)` means write it, noting `n` suppressed lines.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut b = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if b.window_start
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            b.window_start = Some(now);
            b.used = 0;
        }
        if b.used >= self.burst {
            b.suppressed += 1;
            return None;
        }
        b.used += 1;
        Some(std::mem::take(&mut b.suppressed))
    }

    /// Writes a warning built by `line` if the budget allows; `line` is not called otherwise.
    pub fn warn(&self, ctx: *mut RedisModuleCtx, line: impl FnOnce() -> String) {
        let Some(suppressed) = self.admit(Instant::now()) else {
            return;
        };
        let mut text = line();
        if suppressed > 0 {
            text.push_str(&format!(" ({suppressed} similar lines were not logged)"));
        }
        ffi::log(ctx, Level::Warning, &text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_and_counted() {
        let log = RateLimitedLog::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let admitted: Vec<Option<u64>> = (0..10).map(|_| log.admit(t0)).collect();
        assert_eq!(admitted.iter().filter(|a| a.is_some()).count(), 3);
        // The next window reports the seven lines that were dropped.
        assert_eq!(log.admit(t0 + Duration::from_secs(11)), Some(7));
        assert_eq!(log.admit(t0 + Duration::from_secs(11)), Some(0));
    }
}

//! Faults a test can inject through the control path, and the answers they produce.

use serde::{Deserialize, Serialize};

/// One injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Execute the request, then hold the answer back this long.
    Delay { ms: u64 },
    /// Answer 503 without executing.
    Http503,
    /// Execute, then answer 503.
    Http503AfterApply,
    /// Answer 408 with -1007 without executing.
    Timeout1007,
    /// Execute, then answer 408 with -1007.
    Timeout1007AfterApply,
    /// Answer 429 with -1003 and `Retry-After` without executing.
    RateLimit429,
    /// Answer `status` (418 for an address ban, any other value answers 429) with -1003 and
    /// `Retry-After: retry_after_s`, without executing.
    RateLimited { status: u16, retry_after_s: u64 },
    /// Answer 400 with -2019 (margin is insufficient) without executing.
    MarginInsufficient2019,
    /// Execute, then break the connection instead of answering.
    DropAfterApply,
}

impl FaultKind {
    /// Whether the request is executed before the fault shows.
    pub fn applies_first(self) -> bool {
        matches!(
            self,
            Self::Delay { .. }
                | Self::Http503AfterApply
                | Self::Timeout1007AfterApply
                | Self::DropAfterApply
        )
    }
}

/// A fault waiting for the next request that matches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedFault {
    #[serde(flatten)]
    pub kind: FaultKind,
    /// Request path to match, for example `/fapi/v1/order`; any path when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP method to match, for example `POST`; any method when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// For an order executed under this fault: how many milliseconds after it executed the
    /// order lookups (`GET /fapi/v1/order`, `allOrders`) still deny it, as the real exchange
    /// may while it finishes processing an order whose answer was lost. Zero shows it at once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hidden_ms: u64,
}

fn is_zero(ms: &u64) -> bool {
    *ms == 0
}

impl QueuedFault {
    /// A fault on the next order placement (`POST /fapi/v1/order`).
    pub fn on_place_order(kind: FaultKind) -> Self {
        Self {
            kind,
            path: Some("/fapi/v1/order".into()),
            method: Some("POST".into()),
            hidden_ms: 0,
        }
    }

    /// The same fault, with the order it executes denied to lookups for `ms` afterwards.
    pub fn hidden_for(self, ms: u64) -> Self {
        Self {
            hidden_ms: ms,
            ..self
        }
    }

    /// A fault on the next request of any kind.
    pub fn on_any(kind: FaultKind) -> Self {
        Self {
            kind,
            path: None,
            method: None,
            hidden_ms: 0,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.path.as_deref().is_none_or(|p| p == path)
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// The whole fault setting; a `POST /paper/faults` replaces it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Faults {
    /// Added before every API request is handled.
    pub latency_ms: u64,
    /// Added to the server clock, as if the host were this far behind (positive) or ahead.
    pub clock_skew_ms: i64,
    /// One-shot faults, each consumed by the first request it matches.
    pub queue: Vec<QueuedFault>,
    /// A fault every API request meets while it is set, unless a queued fault matched it
    /// first: `http503` for an exchange that is down, `rate_limited` for one that keeps
    /// refusing a client over its limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub always: Option<FaultKind>,
}

impl Faults {
    /// The fault a request meets: the first queued one that matches it, which is removed,
    /// or else the standing one.
    pub(crate) fn take(&mut self, method: &str, path: &str) -> Option<QueuedFault> {
        match self.queue.iter().position(|f| f.matches(method, path)) {
            Some(index) => Some(self.queue.remove(index)),
            None => self.always.map(QueuedFault::on_any),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_fires_once_and_only_on_its_route() {
        let mut faults = Faults {
            queue: vec![QueuedFault::on_place_order(FaultKind::Http503)],
            ..Faults::default()
        };
        assert_eq!(faults.take("GET", "/fapi/v1/order"), None);
        let taken = faults.take("POST", "/fapi/v1/order").map(|f| f.kind);
        assert_eq!(taken, Some(FaultKind::Http503));
        assert_eq!(faults.take("POST", "/fapi/v1/order"), None);
    }

    #[test]
    fn a_standing_fault_meets_every_request_after_the_queued_ones() {
        let mut faults = Faults {
            queue: vec![QueuedFault::on_place_order(FaultKind::Http503AfterApply)],
            always: Some(FaultKind::Http503),
            ..Faults::default()
        };
        let kind = |faults: &mut Faults, method, path| faults.take(method, path).map(|f| f.kind);
        assert_eq!(
            kind(&mut faults, "POST", "/fapi/v1/order"),
            Some(FaultKind::Http503AfterApply)
        );
        for _ in 0..3 {
            assert_eq!(
                kind(&mut faults, "POST", "/fapi/v1/order"),
                Some(FaultKind::Http503)
            );
            assert_eq!(
                kind(&mut faults, "GET", "/fapi/v1/time"),
                Some(FaultKind::Http503)
            );
        }
        faults.always = None;
        assert_eq!(kind(&mut faults, "GET", "/fapi/v1/time"), None);
    }

    #[test]
    fn json_shape_is_flat() {
        let text = r#"{"queue":[{"kind":"delay","ms":5,"path":"/fapi/v1/time"}]}"#;
        let faults: Faults = serde_json::from_str(text).unwrap();
        assert_eq!(faults.queue[0].kind, FaultKind::Delay { ms: 5 });
        assert_eq!(faults.latency_ms, 0);

        let text = r#"{"queue":[{"kind":"timeout1007_after_apply","hiddenMs":800}]}"#;
        let faults: Faults = serde_json::from_str(text).unwrap();
        let hidden = QueuedFault::on_any(FaultKind::Timeout1007AfterApply).hidden_for(800);
        assert_eq!(faults.queue, [hidden]);

        let text = r#"{"always":{"kind":"rate_limited","status":418,"retry_after_s":30}}"#;
        let faults: Faults = serde_json::from_str(text).unwrap();
        let ban = FaultKind::RateLimited {
            status: 418,
            retry_after_s: 30,
        };
        assert_eq!(faults.always, Some(ban));
        assert!(faults.queue.is_empty());
    }
}

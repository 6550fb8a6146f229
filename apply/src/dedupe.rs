//! The dedupe record of a plan, `quantum:apply:dedupe:{plan_id}`, and what its state means
//! for the next step.
//!
//! The record is written `executing` (with `SET NX GET`, which also reads what was there)
//! together with the first read of the plan's state, before its checks and its order, and
//! `done` once the outcome is recorded, a refusal included. A plan id therefore executes at
//! most once however often it is published or redelivered:
//!
//! - no record: the plan is new, and now claimed; check it, then execute;
//! - `done`: a duplicate; acknowledge it and count a dedupe hit;
//! - `executing`: an earlier attempt may have placed the order. Look the order up by its client
//!   order id first; if it exists, the plan is settled. If it does not, the claim decides.
//!   The exchange may deny an order it is still processing, so "no such order" is believed
//!   only once the claim is older than the settle window; until then the plan waits. After
//!   that, this consumer's own claim (left by a crash or an unknown outcome) is resumed; a
//!   claim older than the lease was abandoned and is taken over; a younger claim of another
//!   consumer may still be placing its order, so the plan waits.
//!
//! Values are short text: `executing <consumer> <since_ms>` and `done <status> <order_id>`.
//! Any other value was written by something else (the replaced system wrote `1`) and counts as
//! done: a plan is never executed twice because a record could not be read.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Key prefix of the dedupe records.
pub const KEY_PREFIX: &str = "quantum:apply:dedupe:";

/// The dedupe key of a plan.
pub fn key(plan_id: &str) -> String {
    format!("{KEY_PREFIX}{plan_id}")
}

/// A dedupe record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `consumer` claimed the plan at `since_ms` and may be placing its order.
    Executing { consumer: String, since_ms: i64 },
    /// The plan's outcome is recorded.
    Done { status: String, order_id: String },
}

impl Record {
    /// Reads a stored value. Anything not written by this worker counts as done.
    pub fn parse(text: &str) -> Record {
        let parts: Vec<&str> = text.split(' ').collect();
        match parts.as_slice() {
            ["executing", consumer, since] if !consumer.is_empty() => match since.parse() {
                Ok(since_ms) => Record::Executing {
                    consumer: consumer.to_string(),
                    since_ms,
                },
                Err(_) => Record::foreign(),
            },
            ["done", status, order_id] => Record::Done {
                status: status.to_string(),
                order_id: order_id.to_string(),
            },
            _ => Record::foreign(),
        }
    }

    fn foreign() -> Record {
        Record::Done {
            status: "unknown".into(),
            order_id: "-".into(),
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Executing { consumer, since_ms } => {
                write!(f, "executing {consumer} {since_ms}")
            }
            Record::Done { status, order_id } => write!(f, "done {status} {order_id}"),
        }
    }
}

/// What to do with a plan given its dedupe record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No record: claim the plan with `SET NX`, then execute it.
    Claim,
    /// Already done: acknowledge, count a dedupe hit.
    Duplicate,
    /// Claimed before: look the order up; what to do when there is none is `then`.
    Settle(IfNoOrder),
}

/// What a plan claimed before does when the lookup finds no order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfNoOrder {
    /// The claim is this consumer's own: execute under it.
    Resume,
    /// The claim was abandoned: replace it, if it is still the value read, then execute.
    TakeOver { stale: String },
    /// Another consumer holds a live claim: leave the plan pending and look again later.
    Wait,
}

/// How long claims are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// After a claim this old, "no such order" from the exchange is believed.
    pub settle: Duration,
    /// After a claim this old, its consumer is presumed gone and the claim may be taken over.
    /// Longer than any one close takes.
    pub lease: Duration,
}

/// The step for a plan whose record is `record`, as seen by `consumer` at `now_ms`.
pub fn step(record: Option<&Record>, consumer: &str, now_ms: i64, timing: Timing) -> Step {
    let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let (held, owner, since_ms) = match record {
        None => return Step::Claim,
        Some(Record::Done { .. }) => return Step::Duplicate,
        Some(held @ Record::Executing { consumer, since_ms }) => (held, consumer, *since_ms),
    };
    let age = now_ms.saturating_sub(since_ms);
    if age < millis(timing.settle) {
        return Step::Settle(IfNoOrder::Wait);
    }
    if owner == consumer {
        return Step::Settle(IfNoOrder::Resume);
    }
    if age > millis(timing.lease) {
        return Step::Settle(IfNoOrder::TakeOver {
            stale: held.to_string(),
        });
    }
    Step::Settle(IfNoOrder::Wait)
}

/// Claims this process wrote and under which it has sent no order, by plan id.
///
/// The claim is written with the first read of a plan, before its checks. An attempt that
/// stops between the claim and the order (the exchange unreachable, say) leaves the claim
/// behind, and the settle rule would make the next attempt wait and then ask the exchange for
/// an order that was never sent. The next attempt in this process finds its claim here instead
/// and goes on under it at once. After a restart the book is empty and the settle rule applies.
#[derive(Debug, Default)]
pub struct UnsentClaims {
    claims: Mutex<HashMap<String, Record>>,
}

impl UnsentClaims {
    /// Notes a claim just written. Claims older than `lease` are dropped: by then another
    /// consumer may have taken the plan over.
    pub fn note(&self, plan_id: &str, claim: Record, now_ms: i64, lease: Duration) {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        claims.retain(|_, held| match held {
            Record::Executing { since_ms, .. } => now_ms.saturating_sub(*since_ms) <= lease_ms,
            Record::Done { .. } => false,
        });
        claims.insert(plan_id.to_string(), claim);
    }

    /// Whether `record`, read for `plan_id`, is a claim of this process with no order sent.
    pub fn holds(&self, plan_id: &str, record: &Record) -> bool {
        let claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        claims.get(plan_id) == Some(record)
    }

    /// Forgets the claim of `plan_id`: its order is about to be sent, or its outcome is known.
    pub fn forget(&self, plan_id: &str) {
        let mut claims = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        claims.remove(plan_id);
    }

    /// How many claims are noted.
    pub fn len(&self) -> usize {
        self.claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no claim is noted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        settle: Duration::from_secs(5),
        lease: Duration::from_secs(600),
    };

    fn executing(consumer: &str, since_ms: i64) -> Record {
        Record::Executing {
            consumer: consumer.into(),
            since_ms,
        }
    }

    #[test]
    fn records_read_back_as_written() {
        for record in [
            executing("apply-1", 1_700_000_000_000),
            Record::Done {
                status: "success".into(),
                order_id: "42".into(),
            },
        ] {
            assert_eq!(Record::parse(&record.to_string()), record);
        }
    }

    #[test]
    fn foreign_values_count_as_done() {
        for text in [
            "1",
            "",
            "executing",
            "executing a b",
            "done",
            "EXECUTING a 1",
        ] {
            assert!(
                matches!(Record::parse(text), Record::Done { .. }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn new_plans_are_claimed_and_done_plans_are_duplicates() {
        assert_eq!(step(None, "a", 0, TIMING), Step::Claim);
        let done = Record::parse("1");
        assert_eq!(step(Some(&done), "a", 0, TIMING), Step::Duplicate);
    }

    #[test]
    fn own_claim_is_resumed_once_the_settle_window_passed() {
        let mine = executing("a", 0);
        assert_eq!(
            step(Some(&mine), "a", 4_999, TIMING),
            Step::Settle(IfNoOrder::Wait)
        );
        for now in [5_000, 10 * 600_000] {
            assert_eq!(
                step(Some(&mine), "a", now, TIMING),
                Step::Settle(IfNoOrder::Resume)
            );
        }
    }

    #[test]
    fn another_consumers_claim_waits_until_the_lease_runs_out() {
        let theirs = executing("b", 1_000);
        assert_eq!(
            step(Some(&theirs), "a", 1_000 + 600_000, TIMING),
            Step::Settle(IfNoOrder::Wait)
        );
        assert_eq!(
            step(Some(&theirs), "a", 1_000 + 600_001, TIMING),
            Step::Settle(IfNoOrder::TakeOver {
                stale: "executing b 1000".into()
            })
        );
    }

    #[test]
    fn unsent_claims_match_only_the_claim_written_and_expire_with_the_lease() {
        let book = UnsentClaims::default();
        let lease = Duration::from_secs(600);
        book.note("p1", executing("a", 1_000), 1_000, lease);
        assert!(book.holds("p1", &executing("a", 1_000)));
        assert!(!book.holds("p1", &executing("a", 1_001)), "another claim");
        assert!(
            !book.holds("p1", &executing("b", 1_000)),
            "another consumer"
        );
        assert!(!book.holds("p2", &executing("a", 1_000)), "another plan");

        book.note("p2", executing("a", 700_000), 700_000, lease);
        assert!(
            !book.holds("p1", &executing("a", 1_000)),
            "older than the lease"
        );
        assert_eq!(book.len(), 1);

        book.forget("p2");
        assert!(book.is_empty());
    }
}

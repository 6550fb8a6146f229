//! Drift between the exchange and the ledger, as pure functions over one snapshot.
//!
//! Signed amounts: positive is long, negative short. With `e` the exchange amount, `l` the
//! ledger amount and `step` the symbol's quantity step (which is also the tolerance):
//!
//! - `|e - l| < step`: in sync, nothing to do;
//! - `e` and `l` on the same side (or `l` flat) and `|e| > |l|`: close the excess
//!   `|e| - |l|`, rounded down to the step, on the side that reduces `e`;
//! - `e` and `l` on opposite sides: close all of `e`, rounded down to the step;
//! - otherwise (the ledger holds more than the exchange on the same side, the exchange is
//!   flat, or what could be closed rounds down to nothing): a reduce-only order cannot fix
//!   it, so it needs a person.
//!
//! Invariants, checked by the property tests below: a close never widens `|e - l|`, never
//! closes more than `|e|`, never flips the exchange position, and its quantity is a positive
//! multiple of the step.

use std::fmt;

use reconcile_exchange::{canonical, Decimal, Side};
use sha2::{Digest, Sha256};

/// A positive quantity step: the unit every close is a multiple of, and the tolerance under
/// which the exchange and the ledger count as agreeing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step(Decimal);

impl Step {
    /// `None` unless `step` is positive: without a step there is no tolerance to compare with.
    pub fn new(step: Decimal) -> Option<Step> {
        (step > Decimal::ZERO).then_some(Step(step))
    }

    /// The step as a decimal.
    pub fn value(self) -> Decimal {
        self.0
    }

    /// The largest multiple of the step that is not above `qty` (for `qty >= 0`).
    pub fn round_down(self, qty: Decimal) -> Decimal {
        qty - qty % self.0
    }
}

/// Both sides of one symbol, read in the same cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The exchange's signed position.
    pub exchange_amt: Decimal,
    /// The ledger's signed position.
    pub ledger_amt: Decimal,
}

/// Which rule a drift fell under; also the `kind` label of the drift metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriftKind {
    /// Same side, the exchange holds more than the ledger.
    Excess,
    /// The exchange and the ledger are on opposite sides.
    Opposite,
    /// A reduce-only order cannot bring the two together.
    Manual,
}

impl DriftKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Excess => "excess",
            DriftKind::Opposite => "opposite",
            DriftKind::Manual => "manual",
        }
    }
}

impl fmt::Display for DriftKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one snapshot calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assessment {
    /// The two agree within one step.
    InSync,
    /// A reduce-only close of `qty` on `side` brings them closer.
    Close {
        kind: DriftKind,
        side: Side,
        qty: Decimal,
    },
    /// They disagree and no reduce-only order can fix it.
    Manual,
}

impl Assessment {
    /// The drift's kind, `None` when in sync.
    pub fn kind(self) -> Option<DriftKind> {
        match self {
            Assessment::InSync => None,
            Assessment::Close { kind, .. } => Some(kind),
            Assessment::Manual => Some(DriftKind::Manual),
        }
    }
}

/// Applies the rules of the module docs to one snapshot.
pub fn assess(snapshot: Snapshot, step: Step) -> Assessment {
    let Snapshot {
        exchange_amt: e,
        ledger_amt: l,
    } = snapshot;
    if (e - l).abs() < step.value() {
        return Assessment::InSync;
    }
    if e.is_zero() {
        return Assessment::Manual;
    }

    let opposite = l.is_sign_negative() != e.is_sign_negative() && !l.is_zero();
    let (kind, excess) = if opposite {
        (DriftKind::Opposite, e.abs())
    } else if e.abs() > l.abs() {
        (DriftKind::Excess, e.abs() - l.abs())
    } else {
        return Assessment::Manual;
    };

    let qty = step.round_down(excess);
    if qty.is_zero() {
        return Assessment::Manual;
    }
    Assessment::Close {
        kind,
        side: Side::closing(e),
        qty,
    }
}

/// A short, stable name for one drift state: the first 8 bytes of SHA-256 over the symbol
/// and both amounts in canonical text, as 16 hex digits. Equal states (`0.010` and `0.01`
/// included) give equal signatures, across restarts too.
pub fn signature(symbol: &str, snapshot: Snapshot) -> String {
    let mut hash = Sha256::new();
    for part in [
        symbol,
        &canonical(snapshot.exchange_amt),
        &canonical(snapshot.ledger_amt),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Counts how many consecutive cycles saw the same drift, so that a position changing under
/// an order in flight is not taken for drift.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confirmation {
    signature: Option<String>,
    seen: u32,
}

impl Confirmation {
    /// Records one more cycle that saw `signature`; true once it was seen on `needed`
    /// consecutive cycles (and on every cycle after, while it stays the same).
    pub fn observe(&mut self, signature: &str, needed: u32) -> bool {
        if self.signature.as_deref() == Some(signature) {
            self.seen = self.seen.saturating_add(1);
        } else {
            self.signature = Some(signature.to_string());
            self.seen = 1;
        }
        self.seen >= needed
    }

    /// Forgets the drift: the symbol was in sync, or could not be read this cycle.
    pub fn reset(&mut self) {
        *self = Confirmation::default();
    }

    /// Consecutive cycles the current drift was seen.
    pub fn seen(&self) -> u32 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rust_decimal::dec;

    use super::*;

    fn step(value: Decimal) -> Step {
        Step::new(value).unwrap()
    }

    fn snap(exchange_amt: Decimal, ledger_amt: Decimal) -> Snapshot {
        Snapshot {
            exchange_amt,
            ledger_amt,
        }
    }

    fn close(kind: DriftKind, side: Side, qty: Decimal) -> Assessment {
        Assessment::Close { kind, side, qty }
    }

    #[test]
    fn exchange_short_of_ledger_on_same_side_is_not_sold_into_wider_drift() {
        // The replaced engine sold 0.002 here and widened the drift to 0.004.
        let assessment = assess(snap(dec!(0.008), dec!(0.010)), step(dec!(0.001)));
        assert_eq!(assessment, Assessment::Manual);
    }

    #[test]
    fn excess_long_is_sold_and_excess_short_bought() {
        let s = step(dec!(0.001));
        assert_eq!(
            assess(snap(dec!(0.010), dec!(0.008)), s),
            close(DriftKind::Excess, Side::Sell, dec!(0.002))
        );
        assert_eq!(
            assess(snap(dec!(-0.010), dec!(-0.008)), s),
            close(DriftKind::Excess, Side::Buy, dec!(0.002))
        );
        assert_eq!(
            assess(snap(dec!(0.005), Decimal::ZERO), s),
            close(DriftKind::Excess, Side::Sell, dec!(0.005))
        );
    }

    #[test]
    fn opposite_sides_close_the_whole_exchange_position() {
        let s = step(dec!(0.001));
        assert_eq!(
            assess(snap(dec!(0.004), dec!(-0.003)), s),
            close(DriftKind::Opposite, Side::Sell, dec!(0.004))
        );
        assert_eq!(
            assess(snap(dec!(-0.004), dec!(0.010)), s),
            close(DriftKind::Opposite, Side::Buy, dec!(0.004))
        );
    }

    #[test]
    fn within_one_step_is_in_sync() {
        let s = step(dec!(0.001));
        assert_eq!(
            assess(snap(dec!(0.0105), dec!(0.010)), s),
            Assessment::InSync
        );
        assert_eq!(
            assess(snap(Decimal::ZERO, Decimal::ZERO), s),
            Assessment::InSync
        );
        assert_eq!(
            assess(snap(dec!(0.010), dec!(0.0100)), s),
            Assessment::InSync
        );
    }

    #[test]
    fn flat_exchange_against_a_ledger_position_needs_a_person() {
        assert_eq!(
            assess(snap(Decimal::ZERO, dec!(0.5)), step(dec!(0.001))),
            Assessment::Manual
        );
    }

    #[test]
    fn excess_is_rounded_down_to_the_step() {
        assert_eq!(
            assess(snap(dec!(0.0127), dec!(0.010)), step(dec!(0.001))),
            close(DriftKind::Excess, Side::Sell, dec!(0.002))
        );
    }

    #[test]
    fn step_refuses_zero_and_negative() {
        assert!(Step::new(Decimal::ZERO).is_none());
        assert!(Step::new(dec!(-0.001)).is_none());
    }

    #[test]
    fn signature_ignores_trailing_zeros_and_tells_states_apart() {
        let a = signature("BTCUSDT", snap(dec!(0.010), dec!(0.008)));
        assert_eq!(a, signature("BTCUSDT", snap(dec!(0.01), dec!(0.0080))));
        assert_eq!(a.len(), 16);
        assert_ne!(a, signature("ETHUSDT", snap(dec!(0.010), dec!(0.008))));
        assert_ne!(a, signature("BTCUSDT", snap(dec!(0.010), dec!(0.007))));
    }

    #[test]
    fn confirmation_restarts_when_the_drift_changes() {
        let mut confirm = Confirmation::default();
        assert!(!confirm.observe("a", 2));
        assert!(!confirm.observe("b", 2));
        assert!(confirm.observe("b", 2));
        confirm.reset();
        assert!(!confirm.observe("b", 2));
    }

    fn amount() -> impl Strategy<Value = Decimal> {
        // Up to 1000 with up to 4 decimals, on or off any step.
        (-10_000_000i64..=10_000_000).prop_map(|units| Decimal::new(units, 4))
    }

    fn any_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(dec!(0.001)),
            Just(dec!(0.01)),
            Just(dec!(0.1)),
            Just(dec!(1)),
            Just(dec!(0.0025))
        ]
        .prop_map(step)
    }

    proptest! {
        #[test]
        fn a_close_never_widens_the_drift(e in amount(), l in amount(), s in any_step()) {
            if let Assessment::Close { side, qty, .. } = assess(snap(e, l), s) {
                let after = match side { Side::Sell => e - qty, Side::Buy => e + qty };
                prop_assert!((after - l).abs() < (e - l).abs());
            }
        }

        #[test]
        fn a_close_stays_within_the_exchange_position(
            e in amount(),
            l in amount(),
            s in any_step(),
        ) {
            if let Assessment::Close { side, qty, .. } = assess(snap(e, l), s) {
                prop_assert!(qty > Decimal::ZERO && qty <= e.abs());
                prop_assert_eq!(side, Side::closing(e));
                let after = match side { Side::Sell => e - qty, Side::Buy => e + qty };
                prop_assert!(after.is_zero() || after.is_sign_negative() == e.is_sign_negative());
            }
        }

        #[test]
        fn a_close_is_a_multiple_of_the_step(e in amount(), l in amount(), s in any_step()) {
            if let Assessment::Close { qty, .. } = assess(snap(e, l), s) {
                prop_assert!((qty % s.value()).is_zero());
            }
        }

        #[test]
        fn in_sync_exactly_when_within_one_step(e in amount(), l in amount(), s in any_step()) {
            let in_sync = assess(snap(e, l), s) == Assessment::InSync;
            prop_assert_eq!(in_sync, (e - l).abs() < s.value());
        }

        #[test]
        fn the_direction_rules_hold(e in amount(), l in amount(), s in any_step()) {
            let assessment = assess(snap(e, l), s);
            let same_side = l.is_zero() || e.is_sign_negative() == l.is_sign_negative();
            match assessment {
                Assessment::Close { kind: DriftKind::Excess, qty, .. } => {
                    prop_assert!(same_side && e.abs() > l.abs());
                    prop_assert_eq!(qty, s.round_down(e.abs() - l.abs()));
                }
                Assessment::Close { kind: DriftKind::Opposite, qty, .. } => {
                    prop_assert!(!same_side && !e.is_zero());
                    prop_assert_eq!(qty, s.round_down(e.abs()));
                }
                Assessment::Close { kind: DriftKind::Manual, .. } => prop_assert!(false),
                Assessment::Manual => {
                    let shortfall = same_side && e.abs() < l.abs();
                    let untradeable = s.round_down(e.abs()).is_zero()
                        || (same_side && s.round_down(e.abs() - l.abs()).is_zero());
                    prop_assert!(shortfall || untradeable, "e={} l={}", e, l);
                }
                Assessment::InSync => {}
            }
        }

        #[test]
        fn confirmed_only_after_needed_consecutive_sightings(
            needed in 1u32..5,
            sightings in proptest::collection::vec(0u8..3, 0..20),
        ) {
            let mut confirm = Confirmation::default();
            let mut run = 0u32;
            let mut last = None;
            for sighting in sightings {
                run = if last == Some(sighting) { run + 1 } else { 1 };
                last = Some(sighting);
                let confirmed = confirm.observe(&sighting.to_string(), needed);
                prop_assert_eq!(confirmed, run >= needed);
            }
        }
    }
}

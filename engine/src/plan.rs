//! The entries the engine writes: close plans for the guarded stream and events for
//! operators. Pure: the field lists are built here and sent by [`crate::store`].

use reconcile_exchange::{canonical, Decimal, Side};

use crate::drift::Snapshot;

/// `decision` of every close plan.
pub const DECISION: &str = "RECONCILE_CLOSE";
/// `source` of every close plan; the apply worker accepts plans from this source only.
pub const SOURCE: &str = "p3.4";
/// `reason` of every close plan.
pub const REASON: &str = "reconcile_drift";

/// One reduce-only MARKET close, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `reconclose:{symbol}:{signature}:{ts_ms}`.
    pub plan_id: String,
    pub symbol: String,
    pub side: Side,
    /// A positive multiple of the symbol's step.
    pub qty: Decimal,
    /// The drift's [`crate::drift::signature`].
    pub signature: String,
    pub snapshot: Snapshot,
    /// When the engine decided, host clock, Unix milliseconds.
    pub ts_ms: i64,
}

impl Plan {
    /// The plan for closing `qty` on `side`, decided at `ts_ms`.
    pub fn new(
        symbol: &str,
        snapshot: Snapshot,
        side: Side,
        qty: Decimal,
        signature: &str,
        ts_ms: i64,
    ) -> Plan {
        Plan {
            plan_id: format!("reconclose:{symbol}:{signature}:{ts_ms}"),
            symbol: symbol.to_string(),
            side,
            qty,
            signature: signature.to_string(),
            snapshot,
            ts_ms,
        }
    }

    /// The stream fields, in the order they are signed.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("plan_id", self.plan_id.clone()),
            ("decision", DECISION.to_string()),
            ("symbol", self.symbol.clone()),
            ("side", self.side.as_str().to_string()),
            ("type", "MARKET".to_string()),
            ("qty", canonical(self.qty)),
            ("reduceOnly", "true".to_string()),
            ("reason", REASON.to_string()),
            ("source", SOURCE.to_string()),
            ("signature", self.signature.clone()),
            ("exchange_amt", canonical(self.snapshot.exchange_amt)),
            ("ledger_amt", canonical(self.snapshot.ledger_amt)),
            ("ts", self.ts_ms.to_string()),
        ]
    }
}

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The HOLD lease of a symbol was set (or renewed before a plan).
    HoldSet,
    /// A close plan was signed into the close stream.
    PlanPublished,
    /// Exchange and ledger agree again; the HOLD lease was removed.
    HoldCleared,
    /// A drift that no reduce-only order can fix.
    ManualRequired,
}

impl EventKind {
    /// The `event` field.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::HoldSet => "HOLD_SET",
            EventKind::PlanPublished => "PLAN_PUBLISHED",
            EventKind::HoldCleared => "HOLD_CLEARED",
            EventKind::ManualRequired => "MANUAL_REQUIRED",
        }
    }
}

/// One entry of the events stream: `event`, `symbol`, then whatever the kind carries, then
/// `ts`.
pub fn event_fields(
    kind: EventKind,
    symbol: &str,
    detail: &[(&'static str, String)],
    ts_ms: i64,
) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("event", kind.as_str().to_string()),
        ("symbol", symbol.to_string()),
    ];
    fields.extend(detail.iter().cloned());
    fields.push(("ts", ts_ms.to_string()));
    fields
}

/// The snapshot's amounts as event detail.
pub fn snapshot_detail(snapshot: Snapshot) -> Vec<(&'static str, String)> {
    vec![
        ("exchange_amt", canonical(snapshot.exchange_amt)),
        ("ledger_amt", canonical(snapshot.ledger_amt)),
    ]
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;

    use super::*;

    #[test]
    fn plan_carries_exactly_the_published_fields_in_order() {
        let snapshot = Snapshot {
            exchange_amt: dec!(0.0100),
            ledger_amt: dec!(0.008),
        };
        let plan = Plan::new(
            "BTCUSDT",
            snapshot,
            Side::Sell,
            dec!(0.0020),
            "ab12",
            1_700_000_000_123,
        );
        let fields = plan.fields();
        let names: Vec<_> = fields.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "plan_id",
                "decision",
                "symbol",
                "side",
                "type",
                "qty",
                "reduceOnly",
                "reason",
                "source",
                "signature",
                "exchange_amt",
                "ledger_amt",
                "ts"
            ]
        );
        let value = |name| &fields.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(value("plan_id"), "reconclose:BTCUSDT:ab12:1700000000123");
        assert_eq!(value("side"), "SELL");
        assert_eq!(value("qty"), "0.002");
        assert_eq!(value("exchange_amt"), "0.01");
        assert_eq!(value("reduceOnly"), "true");
        assert_eq!(value("source"), "p3.4");
        assert_eq!(value("ts"), "1700000000123");
    }

    #[test]
    fn event_starts_with_kind_and_symbol_and_ends_with_ts() {
        let fields = event_fields(
            EventKind::ManualRequired,
            "ETHUSDT",
            &[("signature", "ab".into())],
            5,
        );
        assert_eq!(fields[0], ("event", "MANUAL_REQUIRED".to_string()));
        assert_eq!(fields[1], ("symbol", "ETHUSDT".to_string()));
        assert_eq!(fields[2], ("signature", "ab".to_string()));
        assert_eq!(fields[3], ("ts", "5".to_string()));
    }
}

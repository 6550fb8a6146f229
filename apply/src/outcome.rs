//! The outcome of one plan: the entry written to the result stream and the audit log line.

use reconcile_exchange::{Decimal, Order, OrderStatus, Side};
use tracing::{info, warn};

use crate::invariants::{Refusal, Rule};

/// How a plan ended. The label is the `status` of the result entry, of the audit line and,
/// for the statuses in [`Status::EXECUTED`], of `reconcile_close_executed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The order was placed and filled (or is filling).
    Success,
    /// The order was placed but the exchange expired, cancelled or rejected it unfilled.
    NotFilled,
    /// The exchange refused the order definitively; nothing was executed.
    Rejected,
    /// Dry-run: every check passed and this is what would have been sent.
    DryRun,
    /// An invariant failed; nothing was sent.
    Refused,
    /// The plan was already done.
    Duplicate,
}

impl Status {
    /// The statuses of plans that reached the exchange, or would have.
    pub const EXECUTED: [Status; 4] = [
        Status::Success,
        Status::NotFilled,
        Status::Rejected,
        Status::DryRun,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::NotFilled => "not_filled",
            Status::Rejected => "rejected",
            Status::DryRun => "dry_run",
            Status::Refused => "refused",
            Status::Duplicate => "duplicate",
        }
    }

    /// The status of a plan whose order the exchange reports as `order`.
    pub fn of_order(order: OrderStatus) -> Status {
        match order {
            OrderStatus::Filled | OrderStatus::PartiallyFilled | OrderStatus::New => {
                Status::Success
            }
            OrderStatus::Canceled
            | OrderStatus::Rejected
            | OrderStatus::Expired
            | OrderStatus::ExpiredInMatch => Status::NotFilled,
        }
    }
}

/// What is known of a plan's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub order_id: Option<i64>,
    pub client_order_id: String,
    /// The quantity sent (or that would be sent), after rounding to the symbol's step.
    pub qty: Decimal,
    pub executed_qty: Option<Decimal>,
    pub avg_price: Option<Decimal>,
    /// The order was learned from a lookup, not from the answer to a send.
    pub found_by_lookup: bool,
}

impl OrderFacts {
    pub fn of(order: &Order, found_by_lookup: bool) -> OrderFacts {
        OrderFacts {
            order_id: Some(order.order_id),
            client_order_id: order.client_order_id.clone(),
            qty: order.orig_qty,
            executed_qty: Some(order.executed_qty),
            avg_price: Some(order.avg_price),
            found_by_lookup,
        }
    }
}

/// The outcome of one plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub entry_id: String,
    pub plan_id: Option<String>,
    pub symbol: Option<String>,
    pub side: Option<Side>,
    /// The plan's quantity.
    pub qty: Option<Decimal>,
    pub status: Status,
    pub rule: Option<Rule>,
    /// A short explanation for refusals and rejections.
    pub detail: Option<String>,
    pub order: Option<OrderFacts>,
    /// From the plan's `ts` to the outcome, in milliseconds.
    pub latency_ms: Option<i64>,
}

impl Outcome {
    /// A refusal of an entry that may not even name a plan.
    pub fn refused(
        entry_id: &str,
        plan_id: Option<&str>,
        symbol: Option<&str>,
        why: Refusal,
    ) -> Outcome {
        Outcome {
            entry_id: entry_id.into(),
            plan_id: plan_id.map(str::to_owned),
            symbol: symbol.map(str::to_owned),
            side: None,
            qty: None,
            status: Status::Refused,
            rule: Some(why.rule),
            detail: Some(why.detail),
            order: None,
            latency_ms: None,
        }
    }

    /// The value the plan's dedupe record takes when this outcome is recorded.
    pub fn done_record(&self) -> crate::dedupe::Record {
        let order_id = self.order.as_ref().and_then(|o| o.order_id);
        crate::dedupe::Record::Done {
            status: self.status.label().into(),
            order_id: order_id.map_or_else(|| "-".into(), |id| id.to_string()),
        }
    }

    /// The fields of the result stream entry.
    pub fn fields(&self, consumer: &str, now_ms: i64) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("plan_id", self.plan_id.clone().unwrap_or_default()),
            ("entry_id", self.entry_id.clone()),
            ("symbol", self.symbol.clone().unwrap_or_default()),
            ("status", self.status.label().into()),
        ];
        let mut optional = |name, value: Option<String>| {
            if let Some(value) = value {
                fields.push((name, value));
            }
        };
        optional("side", self.side.map(|s| s.as_str().into()));
        optional("qty", self.qty.map(|q| q.to_string()));
        optional("rule", self.rule.map(|r| r.label().into()));
        optional("detail", self.detail.clone());
        if let Some(order) = &self.order {
            optional("order_id", order.order_id.map(|id| id.to_string()));
            optional("client_order_id", Some(order.client_order_id.clone()));
            optional("order_qty", Some(order.qty.to_string()));
            optional("executed_qty", order.executed_qty.map(|q| q.to_string()));
            optional("avg_price", order.avg_price.map(|p| p.to_string()));
            optional("found_by_lookup", Some(order.found_by_lookup.to_string()));
        }
        optional("latency_ms", self.latency_ms.map(|l| l.to_string()));
        fields.push(("consumer", consumer.into()));
        fields.push(("ts", now_ms.to_string()));
        fields
    }

    /// Writes the plan's audit line: the whole plan id, symbol, side, qty, order id, status and
    /// latency. A refusal is a warning, everything else information.
    pub fn audit(&self) {
        let plan_id = self.plan_id.as_deref().unwrap_or("-");
        let symbol = self.symbol.as_deref().unwrap_or("-");
        let side = self.side.map_or("-", Side::as_str);
        let qty = self
            .qty
            .map(|q| q.to_string())
            .unwrap_or_else(|| "-".into());
        let order_id = self
            .order
            .as_ref()
            .and_then(|o| o.order_id)
            .map_or_else(|| "-".into(), |id| id.to_string());
        let client_order_id = self
            .order
            .as_ref()
            .map_or("-", |o| o.client_order_id.as_str());
        let status = self.status.label();
        let rule = self.rule.map_or("-", Rule::label);
        let detail = self.detail.as_deref().unwrap_or("");
        let latency_ms = self.latency_ms.unwrap_or(-1);
        let entry_id = self.entry_id.as_str();
        if self.status == Status::Refused {
            warn!(
                target: "audit", plan_id, entry_id, symbol, side, qty, order_id, client_order_id,
                status, rule, detail, latency_ms, "close plan"
            );
        } else {
            info!(
                target: "audit", plan_id, entry_id, symbol, side, qty, order_id, client_order_id,
                status, rule, detail, latency_ms, "close plan"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;

    use super::*;

    #[test]
    fn refusal_fields_name_the_rule_and_no_order() {
        let why = Refusal::new(Rule::Side, "BUY would grow the position");
        let outcome = Outcome::refused("5-0", Some("p:1"), Some("BTCUSDT"), why);
        let fields = outcome.fields("apply-1", 7);
        let get = |name| {
            fields
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("status"), Some("refused"));
        assert_eq!(get("rule"), Some("side"));
        assert_eq!(get("plan_id"), Some("p:1"));
        assert_eq!(get("order_id"), None);
        assert_eq!(outcome.done_record().to_string(), "done refused -");
    }

    #[test]
    fn order_facts_go_into_the_record() {
        let mut outcome = Outcome::refused(
            "5-0",
            Some("p:1"),
            Some("BTCUSDT"),
            Refusal::new(Rule::Age, ""),
        );
        outcome.status = Status::Success;
        outcome.order = Some(OrderFacts {
            order_id: Some(42),
            client_order_id: "rgc-00".into(),
            qty: dec!(0.01),
            executed_qty: Some(dec!(0.01)),
            avg_price: None,
            found_by_lookup: true,
        });
        let fields = outcome.fields("apply-1", 7);
        assert!(fields.contains(&("order_id", "42".into())));
        assert!(fields.contains(&("found_by_lookup", "true".into())));
        assert_eq!(outcome.done_record().to_string(), "done success 42");
    }
}

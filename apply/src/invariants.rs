//! The invariants a close plan must meet before anything is done for it, as pure functions.
//!
//! [`check_plan`] looks at the plan alone: `decision` is `RECONCILE_CLOSE`, `source` is
//! `p3.4`, `reason` is `reconcile_drift`, `type` is `MARKET`, `reduceOnly` is true, `qty` is a
//! positive decimal within the symbol's configured maximum, `side` is BUY or SELL, and neither
//! the plan's `ts` nor its signing time is older than the maximum age.
//!
//! [`check_execution`] looks at the plan against what was read just before executing it: the
//! symbol's HOLD key is present, `side` closes the current exchange position (SELL a long, BUY
//! a short) and `qty` is not above the size of that position. It checks the age again, since
//! a retried plan grows older.
//!
//! Each failure names one [`Rule`], which is the `rule` label of the guardrail metric. Only an
//! [`Approved`] plan can be executed, and only [`check_execution`] builds one.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use reconcile_exchange::{Decimal, Position, PositionMode, PositionSide, Side};

use crate::plan::RawPlan;

/// What the plan's `decision` field must say.
pub const DECISION: &str = "RECONCILE_CLOSE";
/// What the plan's `source` field must say: the reconcile engine.
pub const SOURCE: &str = "p3.4";
/// What the plan's `reason` field must say.
pub const REASON: &str = "reconcile_drift";
/// What the plan's `type` field must say.
pub const ORDER_TYPE: &str = "MARKET";

/// How far ahead of this host's clock a plan's `ts` or signing time may be. Clocks of the
/// engine host, the Redis host and this one drift apart by this much at most in practice; a
/// plan from further in the future carries a time that cannot be trusted for its age.
pub const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(60);

/// Longest decimal text accepted for a quantity, well inside what `Decimal` holds exactly.
const MAX_QTY_DIGITS: usize = 24;

/// The invariant a refused plan failed; its label is the metric's `rule` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    Decision,
    Source,
    Hold,
    ReduceOnly,
    Type,
    Qty,
    MaxQty,
    Side,
    Position,
    Reason,
    Age,
    /// The entry lacks the signing trailer, which verified entries always carry.
    Hmac,
    /// The entry cannot be read as a plan at all.
    Parse,
}

impl Rule {
    /// Every rule, for metrics that start at zero.
    pub const ALL: [Rule; 13] = [
        Rule::Decision,
        Rule::Source,
        Rule::Hold,
        Rule::ReduceOnly,
        Rule::Type,
        Rule::Qty,
        Rule::MaxQty,
        Rule::Side,
        Rule::Position,
        Rule::Reason,
        Rule::Age,
        Rule::Hmac,
        Rule::Parse,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rule::Decision => "decision",
            Rule::Source => "source",
            Rule::Hold => "hold",
            Rule::ReduceOnly => "reduce_only",
            Rule::Type => "type",
            Rule::Qty => "qty",
            Rule::MaxQty => "max_qty",
            Rule::Side => "side",
            Rule::Position => "position",
            Rule::Reason => "reason",
            Rule::Age => "age",
            Rule::Hmac => "hmac",
            Rule::Parse => "parse",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a plan is not executed: the rule it failed and a short description without secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {detail}")]
pub struct Refusal {
    pub rule: Rule,
    pub detail: String,
}

impl Refusal {
    pub fn new(rule: Rule, detail: impl Into<String>) -> Refusal {
        Refusal {
            rule,
            detail: detail.into(),
        }
    }
}

/// Per-symbol maximum quantity, from `BTCUSDT=0.5,ETHUSDT=10`. A symbol not listed may not be
/// closed at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaxQty(BTreeMap<String, Decimal>);

impl MaxQty {
    /// The maximum for `symbol`, if it is listed.
    pub fn get(&self, symbol: &str) -> Option<Decimal> {
        self.0.get(symbol).copied()
    }

    /// The listed symbols, in order.
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether no symbol is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for MaxQty {
    type Err = String;

    fn from_str(text: &str) -> Result<MaxQty, String> {
        let mut map = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (symbol, qty) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not SYMBOL=QTY"))?;
            let symbol = symbol.trim();
            if symbol.is_empty() || !symbol.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("{symbol:?} is not a symbol"));
            }
            let qty = parse_qty(qty.trim())
                .filter(|q| *q > Decimal::ZERO)
                .ok_or_else(|| format!("maximum {qty:?} of {symbol} is not a positive decimal"))?;
            if map.insert(symbol.to_ascii_uppercase(), qty).is_some() {
                return Err(format!("{symbol} is listed twice"));
            }
        }
        if map.is_empty() {
            return Err("no symbol listed".into());
        }
        Ok(MaxQty(map))
    }
}

/// Reads a quantity written as plain decimal digits with an optional fraction (`0.007`,
/// `10`). Signs, exponents, spaces and anything a float would print differently are refused,
/// so the value is exactly what the engine wrote.
pub fn parse_qty(text: &str) -> Option<Decimal> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let fraction_ok = !text.contains('.') || !fraction.is_empty();
    if whole.is_empty() || !digits(whole) || !digits(fraction) || !fraction_ok {
        return None;
    }
    if whole.len() + fraction.len() > MAX_QTY_DIGITS {
        return None;
    }
    Decimal::from_str_exact(text).ok()
}

/// The configured bounds the plan checks use.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_qty: MaxQty,
    /// Oldest a plan may be, by its `ts` and by its signing time.
    pub max_age: Duration,
}

/// A plan that met every invariant that needs no outside state. Built only by
/// [`check_plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub entry_id: String,
    pub plan_id: String,
    pub symbol: String,
    pub side: Side,
    pub qty: Decimal,
    /// The engine's time of the plan, Unix milliseconds.
    pub ts_ms: i64,
    /// The Redis server's time of signing, Unix milliseconds.
    pub signed_ms: i64,
}

/// Checks the invariants that concern the plan alone, in a fixed order; the first failure
/// is the refusal.
pub fn check_plan(raw: &RawPlan, limits: &Limits, now_ms: i64) -> Result<Plan, Refusal> {
    expect_text(raw, "decision", DECISION, Rule::Decision)?;
    expect_text(raw, "source", SOURCE, Rule::Source)?;
    expect_text(raw, "reason", REASON, Rule::Reason)?;
    expect_text(raw, "type", ORDER_TYPE, Rule::Type)?;
    let reduce_only = raw.field("reduceOnly").unwrap_or_default();
    if !reduce_only.eq_ignore_ascii_case("true") {
        return Err(Refusal::new(Rule::ReduceOnly, "reduceOnly is not true"));
    }

    let qty = raw
        .field("qty")
        .and_then(parse_qty)
        .filter(|q| *q > Decimal::ZERO)
        .ok_or_else(|| Refusal::new(Rule::Qty, "qty is not a positive decimal"))?;
    let max = limits.max_qty.get(&raw.symbol).ok_or_else(|| {
        Refusal::new(
            Rule::MaxQty,
            format!("no maximum configured for {}", raw.symbol),
        )
    })?;
    if qty > max {
        return Err(Refusal::new(
            Rule::MaxQty,
            format!("qty {qty} is above the maximum {max}"),
        ));
    }
    let side = match raw.field("side") {
        Some("BUY") => Side::Buy,
        Some("SELL") => Side::Sell,
        _ => return Err(Refusal::new(Rule::Side, "side is neither BUY nor SELL")),
    };

    let ts_ms = raw
        .field("ts")
        .and_then(|ts| ts.parse::<i64>().ok())
        .ok_or_else(|| Refusal::new(Rule::Age, "ts is missing or not a number"))?;
    let plan = Plan {
        entry_id: raw.entry_id.clone(),
        plan_id: raw.plan_id.clone(),
        symbol: raw.symbol.clone(),
        side,
        qty,
        ts_ms,
        signed_ms: raw.signed_ms,
    };
    check_age(&plan, limits.max_age, now_ms)?;
    Ok(plan)
}

/// Where the symbol's position stands on the exchange, as read just before executing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// Size of the long position, zero or more.
    pub long: Decimal,
    /// Size of the short position, zero or more.
    pub short: Decimal,
}

impl Exposure {
    /// The symbol's exposure from its position rows: the net amount in one-way mode, each leg
    /// in hedge mode.
    pub fn from_rows(symbol: &str, mode: PositionMode, rows: &[Position]) -> Exposure {
        let rows = rows.iter().filter(|p| p.symbol == symbol);
        let (mut long, mut short) = (Decimal::ZERO, Decimal::ZERO);
        match mode {
            PositionMode::OneWay => {
                let net: Decimal = rows
                    .filter(|p| p.position_side == PositionSide::Both)
                    .map(|p| p.position_amt)
                    .sum();
                if net > Decimal::ZERO {
                    long = net;
                } else {
                    short = -net;
                }
            }
            PositionMode::Hedge => {
                for row in rows {
                    match row.position_side {
                        PositionSide::Long => long += row.position_amt.abs(),
                        PositionSide::Short => short += row.position_amt.abs(),
                        PositionSide::Both => {}
                    }
                }
            }
        }
        Exposure { long, short }
    }
}

/// A plan cleared for execution: every invariant held against the state read for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub plan: Plan,
    /// Size of the position the order reduces, before the order.
    pub position: Decimal,
}

/// Checks the invariants that need outside state, read just before executing: the HOLD key,
/// the exchange position, and the age once more.
pub fn check_execution(
    plan: Plan,
    hold_present: bool,
    exposure: &Exposure,
    max_age: Duration,
    now_ms: i64,
) -> Result<Approved, Refusal> {
    if !hold_present {
        return Err(Refusal::new(Rule::Hold, "no HOLD lease for the symbol"));
    }
    let (closable, opposite) = match plan.side {
        Side::Sell => (exposure.long, exposure.short),
        Side::Buy => (exposure.short, exposure.long),
    };
    if closable.is_zero() && !opposite.is_zero() {
        return Err(Refusal::new(
            Rule::Side,
            format!("{} would grow the position", plan.side.as_str()),
        ));
    }
    if closable.is_zero() {
        return Err(Refusal::new(Rule::Position, "no position to close"));
    }
    if plan.qty > closable {
        return Err(Refusal::new(
            Rule::Position,
            format!("qty {} is above the position {closable}", plan.qty),
        ));
    }
    check_age(&plan, max_age, now_ms)?;
    Ok(Approved {
        plan,
        position: closable,
    })
}

fn check_age(plan: &Plan, max_age: Duration, now_ms: i64) -> Result<(), Refusal> {
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    let ahead_ms = i64::try_from(MAX_CLOCK_AHEAD.as_millis()).unwrap_or(i64::MAX);
    for (what, at) in [("ts", plan.ts_ms), ("signed_ms", plan.signed_ms)] {
        let age = now_ms.saturating_sub(at);
        if age > max_age_ms {
            return Err(Refusal::new(
                Rule::Age,
                format!("{what} is {age} ms old, above {max_age_ms} ms"),
            ));
        }
        if -age > ahead_ms {
            return Err(Refusal::new(
                Rule::Age,
                format!("{what} is {} ms in the future", -age),
            ));
        }
    }
    Ok(())
}

fn expect_text(raw: &RawPlan, field: &str, want: &str, rule: Rule) -> Result<(), Refusal> {
    if raw.field(field) == Some(want) {
        return Ok(());
    }
    Err(Refusal::new(rule, format!("{field} is not {want}")))
}

#[cfg(test)]
mod tests {
    use reconcile_exchange::Decimal;
    use rust_decimal::dec;

    use super::*;
    use crate::plan::{decode, tests::entry};

    const NOW: i64 = 1_700_000_000_000;

    fn limits() -> Limits {
        Limits {
            max_qty: "BTCUSDT=0.5,ETHUSDT=10".parse().unwrap(),
            max_age: Duration::from_secs(300),
        }
    }

    fn fields() -> Vec<(&'static str, String)> {
        [
            ("decision", "RECONCILE_CLOSE"),
            ("symbol", "BTCUSDT"),
            ("qty", "0.007"),
            ("side", "SELL"),
            ("type", "MARKET"),
            ("reduceOnly", "true"),
            ("reason", "reconcile_drift"),
            ("source", "p3.4"),
            ("plan_id", "reconclose:BTCUSDT:a1b2c3:1699999990000"),
            ("signature", "a1b2c3"),
        ]
        .into_iter()
        .map(|(f, v)| (f, v.to_string()))
        .chain([("ts", (NOW - 10_000).to_string())])
        .collect()
    }

    fn raw_with(change: &Change) -> RawPlan {
        let mut pairs = fields();
        for (name, value) in change {
            pairs.retain(|(f, _)| f != name);
            if let Some(value) = value {
                pairs.push((name, value.to_string()));
            }
        }
        let signed = (NOW - 9_000).to_string();
        let mut all: Vec<(&str, &str)> = pairs.iter().map(|(f, v)| (*f, v.as_str())).collect();
        all.extend([
            ("kid", "k1"),
            ("signed_ms", signed.as_str()),
            ("hmac", "00"),
        ]);
        decode(&entry(&all)).unwrap()
    }

    /// Fields to replace (or, with `None`, to drop) in the well-formed plan.
    type Change<'a> = [(&'static str, Option<&'a str>)];

    fn plan_rule(change: &Change) -> Option<Rule> {
        check_plan(&raw_with(change), &limits(), NOW)
            .err()
            .map(|r| r.rule)
    }

    fn long(size: Decimal) -> Exposure {
        Exposure {
            long: size,
            short: Decimal::ZERO,
        }
    }

    #[test]
    fn a_well_formed_plan_passes() {
        let plan = check_plan(&raw_with(&[]), &limits(), NOW).unwrap();
        assert_eq!(plan.qty, dec!(0.007));
        assert_eq!(plan.side, Side::Sell);
        let approved = check_execution(plan, true, &long(dec!(0.01)), limits().max_age, NOW);
        assert_eq!(approved.unwrap().position, dec!(0.01));
    }

    #[test]
    fn each_plan_field_is_refused_under_its_own_rule() {
        let cases: [(&Change, Rule); 12] = [
            (&[("decision", Some("OPEN"))], Rule::Decision),
            (&[("decision", None)], Rule::Decision),
            (&[("source", Some("manual"))], Rule::Source),
            (&[("reason", Some("whim"))], Rule::Reason),
            (&[("type", Some("LIMIT"))], Rule::Type),
            (&[("reduceOnly", Some("false"))], Rule::ReduceOnly),
            (&[("reduceOnly", None)], Rule::ReduceOnly),
            (&[("qty", Some("0"))], Rule::Qty),
            (&[("qty", Some("1e-3"))], Rule::Qty),
            (&[("qty", Some("0.6"))], Rule::MaxQty),
            (&[("side", Some("sell"))], Rule::Side),
            (&[("ts", Some("yesterday"))], Rule::Age),
        ];
        for (change, rule) in cases {
            assert_eq!(plan_rule(change), Some(rule), "{change:?}");
        }
    }

    #[test]
    fn unlisted_symbol_has_no_maximum() {
        let raw = raw_with(&[("symbol", Some("SOLUSDT"))]);
        let refusal = check_plan(&raw, &limits(), NOW).unwrap_err();
        assert_eq!(refusal.rule, Rule::MaxQty);
    }

    #[test]
    fn quantity_text_must_be_plain_decimal() {
        assert_eq!(parse_qty("0.007"), Some(dec!(0.007)));
        assert_eq!(parse_qty("10"), Some(dec!(10)));
        for bad in [
            "", ".5", "5.", "-1", "+1", "1e3", " 1", "1,5", "NaN", "0x10", "1.2.3",
        ] {
            assert_eq!(parse_qty(bad), None, "{bad:?}");
        }
        assert_eq!(parse_qty(&"9".repeat(MAX_QTY_DIGITS + 1)), None);
    }

    #[test]
    fn age_counts_from_ts_and_from_signing() {
        let old_ts = (NOW - 301_000).to_string();
        assert_eq!(plan_rule(&[("ts", Some(&old_ts))]), Some(Rule::Age));
        let future = (NOW + 61_000).to_string();
        assert_eq!(plan_rule(&[("ts", Some(&future))]), Some(Rule::Age));

        let plan = check_plan(&raw_with(&[]), &limits(), NOW).unwrap();
        let later = NOW + 300_000;
        let refusal = check_execution(plan, true, &long(dec!(1)), limits().max_age, later);
        assert_eq!(refusal.unwrap_err().rule, Rule::Age);
    }

    #[test]
    fn execution_needs_hold_and_a_position_the_side_closes() {
        let plan = || check_plan(&raw_with(&[]), &limits(), NOW).unwrap();
        let age = limits().max_age;
        let rule = |hold, exposure: Exposure| {
            check_execution(plan(), hold, &exposure, age, NOW)
                .err()
                .map(|r| r.rule)
        };
        assert_eq!(rule(false, long(dec!(1))), Some(Rule::Hold));
        let short = Exposure {
            long: Decimal::ZERO,
            short: dec!(1),
        };
        assert_eq!(rule(true, short), Some(Rule::Side));
        assert_eq!(rule(true, long(Decimal::ZERO)), Some(Rule::Position));
        assert_eq!(rule(true, long(dec!(0.006))), Some(Rule::Position));
        assert_eq!(rule(true, long(dec!(0.007))), None);
    }

    fn row(side: PositionSide, amt: Decimal) -> Position {
        Position {
            symbol: "BTCUSDT".into(),
            position_side: side,
            position_amt: amt,
            entry_price: dec!(60000),
            mark_price: dec!(60000),
            update_time: 0,
        }
    }

    #[test]
    fn exposure_follows_the_position_mode() {
        let one_way = [row(PositionSide::Both, dec!(-0.2))];
        let exposure = Exposure::from_rows("BTCUSDT", PositionMode::OneWay, &one_way);
        assert_eq!((exposure.long, exposure.short), (dec!(0), dec!(0.2)));

        let hedge = [
            row(PositionSide::Long, dec!(0.3)),
            row(PositionSide::Short, dec!(-0.1)),
        ];
        let exposure = Exposure::from_rows("BTCUSDT", PositionMode::Hedge, &hedge);
        assert_eq!((exposure.long, exposure.short), (dec!(0.3), dec!(0.1)));
        let other = Exposure::from_rows("ETHUSDT", PositionMode::Hedge, &hedge);
        assert_eq!((other.long, other.short), (dec!(0), dec!(0)));
    }

    #[test]
    fn max_qty_setting_is_parsed_exactly() {
        let max: MaxQty = "BTCUSDT=0.5, ETHUSDT=10".parse().unwrap();
        assert_eq!(max.get("BTCUSDT"), Some(dec!(0.5)));
        assert_eq!(max.get("ETHUSDT"), Some(dec!(10)));
        assert_eq!(max.symbols().collect::<Vec<_>>(), ["BTCUSDT", "ETHUSDT"]);
        for bad in [
            "",
            "BTCUSDT",
            "BTCUSDT=",
            "BTCUSDT=0",
            "BTCUSDT=1,BTCUSDT=2",
            "=1",
        ] {
            assert!(bad.parse::<MaxQty>().is_err(), "{bad:?}");
        }
    }
}

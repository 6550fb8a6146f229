//! The paper exchange's account: symbols, positions and orders, and the rules an order must
//! pass. Pure and synchronous; the HTTP layer only parses, calls and replies.
//!
//! Invariants: a reduce-only order (one-way mode) or a closing order on a leg (hedge mode)
//! never grows a position nor flips its sign; every stored quantity is on its symbol's step.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use rust_decimal::{dec, Decimal};

use crate::client_order_id;
use crate::model::{Order, OrderStatus, Position, PositionSide, Side};
use crate::quantity::{LotSize, SymbolFilters};

/// A refusal in the exchange's terms: HTTP status, error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub code: i64,
    pub msg: String,
}

impl Refusal {
    pub fn new(status: u16, code: i64, msg: impl Into<String>) -> Self {
        Self {
            status,
            code,
            msg: msg.into(),
        }
    }

    pub fn bad(code: i64, msg: impl Into<String>) -> Self {
        Self::new(400, code, msg)
    }

    pub fn missing(name: &str) -> Self {
        Self::bad(
            -1102,
            format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
        )
    }
}

/// One tradable symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolSpec {
    pub filters: SymbolFilters,
    pub mark_price: Decimal,
}

impl SymbolSpec {
    /// Filters close to the real ones for the best-known symbols; anything else trades in
    /// steps of 0.001 at a mark price of 100.
    pub fn default_for(symbol: &str) -> Self {
        let (lot_max, market_max, mark_price) = match symbol {
            "BTCUSDT" => (dec!(1000), dec!(120), dec!(60000)),
            "ETHUSDT" => (dec!(10000), dec!(2000), dec!(3000)),
            _ => (dec!(10000), dec!(1000), dec!(100)),
        };
        let step = dec!(0.001);
        let lot = |max_qty| LotSize {
            min_qty: step,
            max_qty,
            step_size: step,
        };
        let filters = SymbolFilters {
            symbol: symbol.to_owned(),
            lot_size: lot(lot_max),
            market_lot_size: Some(lot(market_max)),
        };
        Self {
            filters,
            mark_price,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Leg {
    amt: Decimal,
    entry: Decimal,
    update_time: i64,
}

/// How much an order response tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RespType {
    Ack,
    Result,
}

/// The account.
#[derive(Debug)]
pub(crate) struct Book {
    specs: BTreeMap<String, SymbolSpec>,
    hedge_mode: bool,
    legs: BTreeMap<(String, PositionSide), Leg>,
    orders: Vec<Order>,
    /// Positions in `orders` by client order id, oldest first, so that a lookup does not scan
    /// every order a long run has recorded.
    by_client_id: HashMap<String, Vec<usize>>,
    /// Orders that lookups deny until the given server time, by order id.
    hidden_until: HashMap<i64, i64>,
    next_order_id: i64,
}

impl Book {
    pub fn new(specs: BTreeMap<String, SymbolSpec>, hedge_mode: bool) -> Self {
        Self {
            specs,
            hedge_mode,
            legs: BTreeMap::new(),
            orders: Vec::new(),
            by_client_id: HashMap::new(),
            hidden_until: HashMap::new(),
            next_order_id: 1,
        }
    }

    pub fn hedge_mode(&self) -> bool {
        self.hedge_mode
    }

    pub fn specs(&self) -> impl Iterator<Item = &SymbolSpec> {
        self.specs.values()
    }

    /// Every order ever placed, oldest first, hidden or not.
    pub fn orders(&self) -> &[Order] {
        &self.orders
    }

    /// The orders lookups show at server time `now`, oldest first.
    pub fn visible_orders(&self, now: i64) -> impl Iterator<Item = &Order> {
        self.orders.iter().filter(move |o| self.visible(o, now))
    }

    /// Makes lookups deny the order until server time `until`, as the exchange may while it
    /// still processes an order whose answer was lost.
    pub fn hide(&mut self, order_id: i64, until: i64) {
        self.hidden_until.insert(order_id, until);
    }

    fn visible(&self, order: &Order, now: i64) -> bool {
        self.hidden_until
            .get(&order.order_id)
            .is_none_or(|until| now >= *until)
    }

    /// Position rows as position risk reports them: one BOTH row per symbol in one-way mode,
    /// a LONG and a SHORT row in hedge mode.
    pub fn positions(&self, symbol: Option<&str>) -> Vec<Position> {
        let sides: &[PositionSide] = if self.hedge_mode {
            &[PositionSide::Long, PositionSide::Short]
        } else {
            &[PositionSide::Both]
        };
        let specs = self
            .specs
            .values()
            .filter(|s| symbol.is_none_or(|w| w == s.filters.symbol));
        let mut rows = Vec::new();
        for spec in specs {
            for side in sides {
                let key = (spec.filters.symbol.clone(), *side);
                let leg = self.legs.get(&key).cloned().unwrap_or_default();
                rows.push(Position {
                    symbol: spec.filters.symbol.clone(),
                    position_side: *side,
                    position_amt: leg.amt,
                    entry_price: leg.entry,
                    mark_price: spec.mark_price,
                    update_time: leg.update_time,
                });
            }
        }
        rows
    }

    pub fn spec(&self, symbol: &str) -> Result<&SymbolSpec, Refusal> {
        self.specs
            .get(symbol)
            .ok_or_else(|| Refusal::bad(-1121, "Invalid symbol."))
    }

    /// The latest order of `symbol` under `client_order_id` or with `order_id` that lookups
    /// show at server time `now`.
    pub fn find(
        &self,
        symbol: &str,
        order_id: Option<i64>,
        client_order_id: Option<&str>,
        now: i64,
    ) -> Option<&Order> {
        let matches = |o: &&Order| {
            o.symbol == symbol
                && order_id.is_none_or(|id| o.order_id == id)
                && client_order_id.is_none_or(|id| o.client_order_id == id)
                && self.visible(o, now)
        };
        match client_order_id {
            Some(id) => self.with_client_id(id).rev().find(matches),
            None => self.orders.iter().rev().find(matches),
        }
    }

    /// Orders sent with this client order id, oldest first.
    fn with_client_id<'a>(&'a self, id: &str) -> impl DoubleEndedIterator<Item = &'a Order> {
        self.by_client_id
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.orders.get(i))
    }

    /// Checks and fills a MARKET order at the mark price. Returns the order as the response
    /// shows it (an ACK response shows it before the fill).
    pub fn place(&mut self, params: &HashMap<String, String>, now: i64) -> Result<Order, Refusal> {
        let get = |name: &str| {
            params
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let symbol = get("symbol")
            .ok_or_else(|| Refusal::missing("symbol"))?
            .to_owned();
        let spec = self.spec(&symbol)?.clone();
        let side = match get("side").ok_or_else(|| Refusal::missing("side"))? {
            "BUY" => Side::Buy,
            "SELL" => Side::Sell,
            _ => return Err(Refusal::bad(-1117, "Invalid side.")),
        };
        if get("type").ok_or_else(|| Refusal::missing("type"))? != "MARKET" {
            return Err(Refusal::bad(-1116, "Invalid orderType."));
        }
        let qty = quantity(get("quantity"), &spec.filters)?;
        let resp_type = match get("newOrderRespType") {
            None | Some("ACK") => RespType::Ack,
            Some("RESULT") => RespType::Result,
            Some(_) => return Err(Refusal::bad(-1136, "Invalid newOrderRespType.")),
        };
        let client_order_id = self.client_order_id(get("newClientOrderId"))?;
        let position_side = self.position_side(get("positionSide"))?;
        let reduce_only = self.reduce_only(get("reduceOnly"))?;

        let key = (symbol.clone(), position_side);
        let leg = self.legs.get(&key).cloned().unwrap_or_default();
        let delta = if side == Side::Buy { qty } else { -qty };
        let reducing = match position_side {
            PositionSide::Both => reduce_only,
            // In hedge mode the leg decides: selling a long or buying a short is a close.
            PositionSide::Long => side == Side::Sell,
            PositionSide::Short => side == Side::Buy,
        };
        if reducing && !reduces(leg.amt, delta) {
            return Err(Refusal::bad(-2022, "ReduceOnly Order is rejected."));
        }

        let filled = fill(&leg, delta, spec.mark_price, now);
        if filled.amt.is_zero() {
            self.legs.remove(&key);
        } else {
            self.legs.insert(key, filled);
        }
        let order = Order {
            order_id: self.next_order_id,
            symbol,
            client_order_id,
            status: OrderStatus::Filled,
            side,
            position_side,
            order_type: "MARKET".into(),
            reduce_only,
            orig_qty: qty,
            executed_qty: qty,
            avg_price: spec.mark_price,
            cum_quote: (qty * spec.mark_price).normalize(),
            update_time: now,
        };
        self.next_order_id += 1;
        self.by_client_id
            .entry(order.client_order_id.clone())
            .or_default()
            .push(self.orders.len());
        self.orders.push(order.clone());
        Ok(match resp_type {
            RespType::Result => order,
            RespType::Ack => Order {
                status: OrderStatus::New,
                executed_qty: Decimal::ZERO,
                avg_price: Decimal::ZERO,
                cum_quote: Decimal::ZERO,
                ..order
            },
        })
    }

    fn client_order_id(&self, sent: Option<&str>) -> Result<String, Refusal> {
        let Some(id) = sent else {
            return Ok(format!("paper-{}", self.next_order_id));
        };
        if !client_order_id::is_valid(id) {
            return Err(Refusal::bad(-4015, "Client order id is not valid."));
        }
        // Like the real exchange, a repeated id is refused only while the first order is open.
        let open = |o: &&Order| matches!(o.status, OrderStatus::New | OrderStatus::PartiallyFilled);
        if self.with_client_id(id).any(|o| open(&o)) {
            return Err(Refusal::bad(-4116, "ClientOrderId is duplicated."));
        }
        Ok(id.to_owned())
    }

    fn position_side(&self, sent: Option<&str>) -> Result<PositionSide, Refusal> {
        let side = match sent {
            None | Some("BOTH") => PositionSide::Both,
            Some("LONG") => PositionSide::Long,
            Some("SHORT") => PositionSide::Short,
            Some(_) => return Err(Refusal::bad(-4060, "Invalid position side.")),
        };
        if self.hedge_mode == (side == PositionSide::Both) {
            return Err(Refusal::bad(
                -4061,
                "Order's position side does not match user's setting.",
            ));
        }
        Ok(side)
    }

    fn reduce_only(&self, sent: Option<&str>) -> Result<bool, Refusal> {
        match sent {
            None => Ok(false),
            Some(_) if self.hedge_mode => Err(Refusal::bad(
                -1106,
                "Parameter 'reduceonly' sent when not required.",
            )),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(_) => Err(Refusal::bad(
                -1130,
                "Data sent for parameter 'reduceOnly' is not valid.",
            )),
        }
    }
}

/// Parses and checks a MARKET quantity against both lot filters.
fn quantity(sent: Option<&str>, filters: &SymbolFilters) -> Result<Decimal, Refusal> {
    let text = sent.ok_or_else(|| Refusal::missing("quantity"))?;
    let qty = plain_decimal(text).ok_or_else(|| Refusal::missing("quantity"))?;
    if qty <= Decimal::ZERO {
        return Err(Refusal::bad(-4003, "Quantity less than or equal to zero."));
    }
    let lots = std::iter::once(&filters.lot_size).chain(filters.market_lot_size.as_ref());
    for lot in lots {
        if qty.normalize().scale() > lot.step_size.normalize().scale() {
            return Err(Refusal::bad(
                -1111,
                "Precision is over the maximum defined for this asset.",
            ));
        }
        if !lot.on_step(qty) {
            return Err(Refusal::bad(-4023, "Qty not increased by step size."));
        }
        if qty < lot.min_qty {
            return Err(Refusal::bad(-4004, "Quantity less than min quantity."));
        }
        if qty > lot.max_qty {
            return Err(Refusal::bad(-4005, "Quantity greater than max quantity."));
        }
    }
    Ok(qty.normalize())
}

/// Parses digits with at most one point and an optional minus sign. Exponents and other forms
/// a general decimal parser takes are malformed here, as on the exchange.
fn plain_decimal(text: &str) -> Option<Decimal> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|b| *b == b'.').count() <= 1;
    plain.then(|| Decimal::from_str(text).ok()).flatten()
}

/// Whether adding `delta` to a position of `amt` shrinks it without crossing zero.
fn reduces(amt: Decimal, delta: Decimal) -> bool {
    !amt.is_zero() && amt.is_sign_positive() != delta.is_sign_positive() && delta.abs() <= amt.abs()
}

/// The leg after a fill of `delta` at `price`: growing averages the entry, shrinking keeps
/// it, flipping starts a new one at the fill price.
fn fill(leg: &Leg, delta: Decimal, price: Decimal, now: i64) -> Leg {
    let amt = leg.amt + delta;
    let entry = if amt.is_zero() {
        Decimal::ZERO
    } else if leg.amt.is_zero() || amt.is_sign_positive() != leg.amt.is_sign_positive() {
        price
    } else if amt.abs() > leg.amt.abs() {
        ((leg.amt * leg.entry + delta * price) / amt)
            .round_dp(8)
            .normalize()
    } else {
        leg.entry
    };
    Leg {
        amt,
        entry,
        update_time: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(hedge: bool) -> Book {
        let specs = [("BTCUSDT".to_owned(), SymbolSpec::default_for("BTCUSDT"))].into();
        Book::new(specs, hedge)
    }

    fn order(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut p: HashMap<String, String> = [("symbol", "BTCUSDT"), ("type", "MARKET")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        p.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        p
    }

    fn amt(book: &Book, side: PositionSide) -> Decimal {
        let rows = book.positions(Some("BTCUSDT"));
        rows.into_iter()
            .find(|p| p.position_side == side)
            .unwrap()
            .position_amt
    }

    #[test]
    fn reduce_only_never_flips_or_grows_in_one_way_mode() {
        let mut b = book(false);
        b.place(&order(&[("side", "BUY"), ("quantity", "0.010")]), 1)
            .unwrap();
        let flip = order(&[
            ("side", "SELL"),
            ("quantity", "0.011"),
            ("reduceOnly", "true"),
        ]);
        assert_eq!(b.place(&flip, 2).unwrap_err().code, -2022);
        let grow = order(&[
            ("side", "BUY"),
            ("quantity", "0.001"),
            ("reduceOnly", "true"),
        ]);
        assert_eq!(b.place(&grow, 3).unwrap_err().code, -2022);
        let close = order(&[
            ("side", "SELL"),
            ("quantity", "0.01"),
            ("reduceOnly", "true"),
        ]);
        b.place(&close, 4).unwrap();
        assert_eq!(amt(&b, PositionSide::Both), Decimal::ZERO);
        assert_eq!(b.place(&close, 5).unwrap_err().code, -2022);
    }

    #[test]
    fn hedge_legs_close_only_what_they_hold() {
        let mut b = book(true);
        b.place(
            &order(&[
                ("side", "BUY"),
                ("quantity", "0.02"),
                ("positionSide", "LONG"),
            ]),
            1,
        )
        .unwrap();
        let too_much = order(&[
            ("side", "SELL"),
            ("quantity", "0.03"),
            ("positionSide", "LONG"),
        ]);
        assert_eq!(b.place(&too_much, 2).unwrap_err().code, -2022);
        let no_short = order(&[
            ("side", "BUY"),
            ("quantity", "0.01"),
            ("positionSide", "SHORT"),
        ]);
        assert_eq!(b.place(&no_short, 3).unwrap_err().code, -2022);
        let half = order(&[
            ("side", "SELL"),
            ("quantity", "0.01"),
            ("positionSide", "LONG"),
        ]);
        b.place(&half, 4).unwrap();
        assert_eq!(amt(&b, PositionSide::Long), dec!(0.01));
    }

    #[test]
    fn mode_specific_parameters_are_enforced() {
        let mut hedge = book(true);
        let both = order(&[("side", "BUY"), ("quantity", "0.01")]);
        assert_eq!(hedge.place(&both, 1).unwrap_err().code, -4061);
        let ro = order(&[
            ("side", "SELL"),
            ("quantity", "0.01"),
            ("positionSide", "LONG"),
            ("reduceOnly", "true"),
        ]);
        assert_eq!(hedge.place(&ro, 1).unwrap_err().code, -1106);
        let mut one_way = book(false);
        let long = order(&[
            ("side", "BUY"),
            ("quantity", "0.01"),
            ("positionSide", "LONG"),
        ]);
        assert_eq!(one_way.place(&long, 1).unwrap_err().code, -4061);
    }

    #[test]
    fn quantities_off_the_filters_are_refused() {
        let mut b = book(false);
        let codes: Vec<i64> = ["0.0105", "0", "-1", "abc", "121", "0.0001", "1e-2", "."]
            .iter()
            .map(|q| {
                b.place(&order(&[("side", "BUY"), ("quantity", q)]), 1)
                    .unwrap_err()
                    .code
            })
            .collect();
        assert_eq!(
            codes,
            [-1111, -4003, -4003, -1102, -4005, -1111, -1102, -1102]
        );
    }

    #[test]
    fn hidden_order_is_denied_to_lookups_until_its_time() {
        let mut b = book(false);
        let buy = order(&[
            ("side", "BUY"),
            ("quantity", "0.01"),
            ("newClientOrderId", "late"),
        ]);
        let placed = b.place(&buy, 100).unwrap();
        b.hide(placed.order_id, 600);
        assert_eq!(b.find("BTCUSDT", None, Some("late"), 599), None);
        assert_eq!(b.visible_orders(599).count(), 0);
        assert_eq!(amt(&b, PositionSide::Both), dec!(0.01));
        let found = b
            .find("BTCUSDT", None, Some("late"), 600)
            .map(|o| o.order_id);
        assert_eq!(found, Some(placed.order_id));
        assert_eq!(b.visible_orders(600).count(), 1);
    }

    #[test]
    fn entry_price_averages_on_growth() {
        let leg = Leg {
            amt: dec!(1),
            entry: dec!(100),
            update_time: 0,
        };
        assert_eq!(fill(&leg, dec!(1), dec!(200), 1).entry, dec!(150));
        assert_eq!(fill(&leg, dec!(-0.5), dec!(200), 1).entry, dec!(100));
        assert_eq!(fill(&leg, dec!(-2), dec!(200), 1).entry, dec!(200));
    }
}

//! Idempotent close: one plan id, at most one executed order.
//!
//! The exchange refuses a repeated client order id only while the first order is open, and a
//! MARKET order fills at once, so the exchange alone cannot stop a resend from executing twice.
//! The rule kept here instead: the order is looked up by its client order id before the first
//! send, and a send may follow only a lookup that answered "no such order".
//!
//! After a send whose outcome is unknown, one such answer is not enough: the exchange may
//! still be processing the order and deny it for a moment. Lookups then continue over a settle
//! window, and only the one made when the window has passed may conclude that the order is
//! absent. A failed lookup rules out the resend.
//!
//! The lookup before the first send may be made ahead, while the caller reads other state,
//! and handed to the close as a [`PriorLookup`]; the close then starts with the send.

use std::time::Duration;

use rust_decimal::Decimal;
use tracing::{debug, info, warn};

use crate::client::{Client, MarketOrder};
use crate::client_order_id::ClientOrderId;
use crate::error::{code, ErrorClass, ExchangeError};
use crate::model::{Order, PositionMode, Side};
use crate::quantity::MarketQuantity;

/// What a verified close plan asks of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosePlan {
    /// The plan's id, for example `reconclose:BTCUSDT:a1b2c3d4e5f6:1737846123456`. The client
    /// order id is derived from it.
    pub plan_id: String,
    pub symbol: String,
    /// The closing side: SELL closes a long, BUY closes a short.
    pub side: Side,
    /// Requested size; rounded down to the symbol's step before sending.
    pub quantity: Decimal,
}

/// How a close ended when it ended with an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReport {
    /// The order as the exchange last reported it.
    pub order: Order,
    pub client_order_id: ClientOrderId,
    /// The quantity sent, after rounding.
    pub quantity: MarketQuantity,
    /// Orders this call sent; zero when the order already existed.
    pub submits: u32,
    /// The order was learned from a lookup rather than from the answer to a send.
    pub found_by_lookup: bool,
}

/// The answer to a lookup of a plan's order made before its close, so that the close need not
/// ask again. Only [`Client::look_up_close`] makes one.
///
/// A send after it is safe only while no one else can send under the plan's client order id,
/// so the lookup must be made once the caller holds its claim on the plan (see
/// [`Client::close_after`]).
#[derive(Debug, Clone)]
pub struct PriorLookup {
    symbol: String,
    id: ClientOrderId,
    found: Option<Order>,
}

impl PriorLookup {
    /// The order the lookup found, if any.
    pub fn found(&self) -> Option<&Order> {
        self.found.as_ref()
    }
}

impl Client {
    /// Looks up the order of the close of `plan_id` on `symbol`, ahead of
    /// [`Client::close_after`].
    pub async fn look_up_close(
        &self,
        symbol: &str,
        plan_id: &str,
    ) -> Result<PriorLookup, ExchangeError> {
        let id = ClientOrderId::for_plan(plan_id);
        let found = self.query_order(symbol, &id).await?;
        Ok(PriorLookup {
            symbol: symbol.to_string(),
            id,
            found,
        })
    }

    /// [`Client::close`], starting from a lookup made ahead. The lookup must have been made
    /// after the caller's claim on the plan was in place, so that no order under its client
    /// order id can have been sent since by anyone but this caller. A lookup made for
    /// another plan or symbol is ignored and the close looks the order up itself.
    pub async fn close_after(
        &self,
        plan: &ClosePlan,
        mode: PositionMode,
        prior: PriorLookup,
    ) -> Result<CloseReport, ExchangeError> {
        self.close_from(plan, mode, Some(prior)).await
    }

    /// Closes (part of) a position as `plan` says, so that calling it again with the same plan,
    /// in this process or after a restart, never executes a second order.
    ///
    /// Errors: a quantity refused by the filters or a rejection by the exchange is
    /// definitive; a retryable error means nothing was executed; an unknown outcome means the
    /// lookups could not settle it, and the caller should call `close` again later, which
    /// starts with a lookup. An unknown outcome is returned only once the settle window has
    /// passed, so calling again at once is safe within this process. A process that died
    /// during a close should let [`ClientConfig::unknown_outcome_settle`] pass before it
    /// calls again.
    ///
    /// [`ClientConfig::unknown_outcome_settle`]: crate::ClientConfig::unknown_outcome_settle
    pub async fn close(
        &self,
        plan: &ClosePlan,
        mode: PositionMode,
    ) -> Result<CloseReport, ExchangeError> {
        self.close_from(plan, mode, None).await
    }

    async fn close_from(
        &self,
        plan: &ClosePlan,
        mode: PositionMode,
        prior: Option<PriorLookup>,
    ) -> Result<CloseReport, ExchangeError> {
        let filters = self.symbol_filters(&plan.symbol).await?;
        let quantity = filters.market_quantity(plan.quantity)?;
        let id = ClientOrderId::for_plan(&plan.plan_id);
        let order = MarketOrder::close(&plan.symbol, plan.side, quantity, mode, id.clone());
        let limits = Limits {
            max_submits: self.max_close_submits,
            settle: self.unknown_outcome_settle,
        };

        let known = prior
            .filter(|p| p.symbol == plan.symbol && p.id == id)
            .map(|p| p.found);
        let placed = at_most_once(self, &order, limits, known).await?;
        Ok(CloseReport {
            order: placed.order,
            client_order_id: id,
            quantity,
            submits: placed.submits,
            found_by_lookup: placed.found_by_lookup,
        })
    }
}

/// The two requests the close rule is made of. [`Client`] is the real one; tests drive the
/// rule with paused time against an exchange kept in memory.
trait Venue {
    async fn place(&self, order: &MarketOrder) -> Result<Order, ExchangeError>;

    /// `None` when the exchange answers that it has no such order.
    async fn lookup(
        &self,
        symbol: &str,
        id: &ClientOrderId,
    ) -> Result<Option<Order>, ExchangeError>;
}

impl Venue for Client {
    async fn place(&self, order: &MarketOrder) -> Result<Order, ExchangeError> {
        self.place_market_order(order).await
    }

    async fn lookup(
        &self,
        symbol: &str,
        id: &ClientOrderId,
    ) -> Result<Option<Order>, ExchangeError> {
        self.query_order(symbol, id).await
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    pub max_submits: u32,
    pub settle: Duration,
}

#[derive(Debug)]
struct Placed {
    pub order: Order,
    pub submits: u32,
    pub found_by_lookup: bool,
}

/// Sends `order` unless it already exists, and again only while the settle lookups after an
/// unknown outcome end in "absent", at most `limits.max_submits` times in all. `known` is the
/// answer of a lookup made ahead; without it, the first step is a lookup.
async fn at_most_once(
    venue: &impl Venue,
    order: &MarketOrder,
    limits: Limits,
    known: Option<Option<Order>>,
) -> Result<Placed, ExchangeError> {
    let (symbol, id) = (order.symbol.as_str(), &order.client_order_id);
    let placed = |order, submits, found_by_lookup| Placed {
        order,
        submits,
        found_by_lookup,
    };

    let existing = match known {
        Some(found) => found,
        None => venue.lookup(symbol, id).await?,
    };
    if let Some(existing) = existing {
        info!(symbol, client_order_id = %id, "close already placed");
        return Ok(placed(existing, 0, true));
    }

    let mut submits = 0;
    loop {
        submits += 1;
        let failure = match venue.place(order).await {
            Ok(answer) => {
                info!(symbol, client_order_id = %id, qty = %order.quantity, "close placed");
                return Ok(placed(answer, submits, false));
            }
            // The id is taken by an open order: ours, sent earlier and not yet visible.
            Err(e) if e.exchange_code() == Some(code::DUPLICATE_CLIENT_ORDER_ID) => e,
            // Refused outright or refused for now: nothing executed either way.
            Err(e @ ExchangeError::Rejected { .. }) => return Err(e),
            Err(e) if e.class() == ErrorClass::Retryable => return Err(e),
            Err(e) => e,
        };

        warn!(symbol, client_order_id = %id, error = %failure, "close outcome unknown");
        match settle(venue, symbol, id, limits.settle).await {
            Settled::Found(found) => return Ok(placed(found, submits, true)),
            Settled::Absent if submits < limits.max_submits => {
                info!(symbol, client_order_id = %id, submits, "close absent, sending again");
            }
            Settled::Absent => return Err(unknown(id, format!("not found after {submits} sends"))),
            Settled::Unsure(lookup) => {
                return Err(unknown(id, format!("lookup failed: {lookup}")));
            }
        }
    }
}

/// What the lookups after an unknown outcome learned.
#[derive(Debug)]
enum Settled {
    Found(Order),
    /// Every lookup, the last one made when the window had passed, answered "no such order".
    Absent,
    /// No lookup found the order and at least one failed.
    Unsure(ExchangeError),
}

/// How many lookups a settle window holds.
const SETTLE_LOOKUPS: u32 = 4;

/// Looks the order up over `window`, which starts when a send's outcome turned out unknown.
///
/// The lookups do not stop at the first failure: a caller who calls again at once after an
/// early return would begin inside the window, where a "no such order" proves nothing.
async fn settle(venue: &impl Venue, symbol: &str, id: &ClientOrderId, window: Duration) -> Settled {
    let mut failed = None;
    for delay in settle_delays(window) {
        tokio::time::sleep(delay).await;
        match venue.lookup(symbol, id).await {
            Ok(Some(order)) => return Settled::Found(order),
            Ok(None) => debug!(symbol, client_order_id = %id, "close not visible yet"),
            Err(e) => {
                warn!(symbol, client_order_id = %id, error = %e, "close lookup failed");
                failed = Some(e);
            }
        }
    }
    failed.map_or(Settled::Absent, Settled::Unsure)
}

/// Pauses before each settle lookup. The lookups fall at an eighth, a quarter, a half and
/// the whole of `window`: an order that shows up quickly is returned quickly, and the last
/// lookup is made no earlier than the window's end.
fn settle_delays(window: Duration) -> impl Iterator<Item = Duration> {
    let marks = (0..SETTLE_LOOKUPS)
        .rev()
        .map(move |halvings| window / 2u32.pow(halvings));
    marks.scan(Duration::ZERO, |previous, mark| {
        let delay = mark.saturating_sub(*previous);
        *previous = mark;
        Some(delay)
    })
}

fn unknown(id: &ClientOrderId, detail: String) -> ExchangeError {
    ExchangeError::UnknownOutcome {
        client_order_id: id.to_string(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rust_decimal::dec;
    use tokio::time::Instant;

    use super::*;
    use crate::model::OrderStatus;
    use crate::quantity::{LotSize, SymbolFilters};

    const WINDOW: Duration = Duration::from_secs(5);

    /// How the exchange in memory answers one send.
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        Fill,
        /// Executes, answers -1007, and denies the order to lookups for this long.
        FillUnseen(Duration),
        /// Answers -1007 without executing.
        Lose,
        /// Refuses with this code without executing.
        Refuse(i64),
    }

    /// An exchange in memory that answers sends from a script and fails the lookups whose
    /// index (0 is the lookup before the first send) is listed.
    #[derive(Default)]
    struct Fake {
        script: Mutex<Vec<Answer>>,
        failing_lookups: Vec<usize>,
        /// Executed orders, each with the moment lookups start to see it.
        executed: Mutex<Vec<(Instant, Order)>>,
        sends: Mutex<Vec<Instant>>,
        lookups: Mutex<Vec<Instant>>,
    }

    impl Fake {
        fn new(script: &[Answer], failing_lookups: &[usize]) -> Self {
            let mut script = script.to_vec();
            script.reverse();
            Self {
                script: Mutex::new(script),
                failing_lookups: failing_lookups.to_vec(),
                ..Self::default()
            }
        }

        fn execute(&self, order: &MarketOrder, visible_from: Instant) -> Order {
            let mut executed = self.executed.lock().unwrap();
            let filled = Order {
                order_id: executed.len() as i64 + 1,
                symbol: order.symbol.clone(),
                client_order_id: order.client_order_id.to_string(),
                status: OrderStatus::Filled,
                side: order.side,
                position_side: order.position_side,
                order_type: "MARKET".into(),
                reduce_only: order.reduce_only,
                orig_qty: order.quantity.value(),
                executed_qty: order.quantity.value(),
                avg_price: dec!(60000),
                cum_quote: order.quantity.value() * dec!(60000),
                update_time: 0,
            };
            executed.push((visible_from, filled.clone()));
            filled
        }

        fn executed(&self) -> usize {
            self.executed.lock().unwrap().len()
        }

        fn sends(&self) -> Vec<Instant> {
            self.sends.lock().unwrap().clone()
        }

        fn lookups(&self) -> usize {
            self.lookups.lock().unwrap().len()
        }
    }

    fn timeout() -> ExchangeError {
        unknown(
            &ClientOrderId::for_plan("plan"),
            "http 408, code -1007".into(),
        )
    }

    impl Venue for Fake {
        async fn place(&self, order: &MarketOrder) -> Result<Order, ExchangeError> {
            let now = Instant::now();
            self.sends.lock().unwrap().push(now);
            let answer = self.script.lock().unwrap().pop().unwrap_or(Answer::Fill);
            match answer {
                Answer::Fill => Ok(self.execute(order, now)),
                Answer::FillUnseen(hidden) => {
                    self.execute(order, now + hidden);
                    Err(timeout())
                }
                Answer::Lose => Err(timeout()),
                Answer::Refuse(code) => Err(ExchangeError::Rejected {
                    status: 400,
                    code,
                    msg: "refused".into(),
                }),
            }
        }

        async fn lookup(
            &self,
            symbol: &str,
            id: &ClientOrderId,
        ) -> Result<Option<Order>, ExchangeError> {
            let now = Instant::now();
            let index = {
                let mut lookups = self.lookups.lock().unwrap();
                lookups.push(now);
                lookups.len() - 1
            };
            if self.failing_lookups.contains(&index) {
                return Err(ExchangeError::Retryable {
                    status: 503,
                    code: None,
                    msg: "Service Unavailable".into(),
                    retry_after: None,
                });
            }
            let executed = self.executed.lock().unwrap();
            let seen = executed.iter().rev().find(|(from, o)| {
                *from <= now && o.symbol == symbol && o.client_order_id == id.as_str()
            });
            Ok(seen.map(|(_, o)| o.clone()))
        }
    }

    fn close_order() -> MarketOrder {
        let lot = LotSize {
            min_qty: dec!(0.001),
            max_qty: dec!(100),
            step_size: dec!(0.001),
        };
        let filters = SymbolFilters {
            symbol: "BTCUSDT".into(),
            lot_size: lot,
            market_lot_size: None,
        };
        let qty = filters.market_quantity(dec!(0.01)).unwrap();
        let id = ClientOrderId::for_plan("plan");
        MarketOrder::close("BTCUSDT", Side::Sell, qty, PositionMode::OneWay, id)
    }

    fn limits(max_submits: u32, settle: Duration) -> Limits {
        Limits {
            max_submits,
            settle,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn order_denied_for_a_moment_after_a_timeout_executes_once() {
        let fake = Fake::new(&[Answer::FillUnseen(Duration::from_secs(2))], &[]);
        let placed = at_most_once(&fake, &close_order(), limits(2, WINDOW), None)
            .await
            .unwrap();
        assert_eq!((placed.submits, placed.found_by_lookup), (1, true));
        assert_eq!(fake.executed(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_settle_window_the_same_denial_executes_twice() {
        let fake = Fake::new(&[Answer::FillUnseen(Duration::from_secs(2))], &[]);
        let placed = at_most_once(&fake, &close_order(), limits(2, Duration::ZERO), None)
            .await
            .unwrap();
        assert_eq!(placed.submits, 2);
        assert_eq!(fake.executed(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn absent_order_is_resent_once_after_the_window() {
        let fake = Fake::new(&[Answer::Lose], &[]);
        let placed = at_most_once(&fake, &close_order(), limits(2, WINDOW), None)
            .await
            .unwrap();
        assert_eq!((placed.submits, placed.found_by_lookup), (2, false));
        assert_eq!(fake.executed(), 1);
        let sends = fake.sends();
        assert!(sends[1] - sends[0] >= WINDOW);
        assert_eq!(fake.lookups(), 1 + SETTLE_LOOKUPS as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn one_failed_lookup_forbids_the_resend_but_not_before_the_window_ends() {
        let fake = Fake::new(&[Answer::Lose], &[2]);
        let started = Instant::now();
        let err = at_most_once(&fake, &close_order(), limits(2, WINDOW), None)
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::UnknownOutcome);
        assert_eq!(fake.sends().len(), 1);
        assert!(started.elapsed() >= WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn order_seen_after_a_failed_lookup_is_returned() {
        let fake = Fake::new(&[Answer::FillUnseen(WINDOW / 3)], &[1]);
        let placed = at_most_once(&fake, &close_order(), limits(2, WINDOW), None)
            .await
            .unwrap();
        assert_eq!((placed.submits, placed.found_by_lookup), (1, true));
        assert_eq!(fake.executed(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_stop_at_the_limit() {
        let fake = Fake::new(&[Answer::Lose, Answer::Lose, Answer::Lose], &[]);
        let err = at_most_once(&fake, &close_order(), limits(2, WINDOW), None)
            .await
            .unwrap_err();
        assert_eq!(err.class(), ErrorClass::UnknownOutcome);
        assert_eq!((fake.sends().len(), fake.executed()), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn margin_refusal_is_definitive_and_never_resent() {
        for script in [
            &[Answer::Refuse(code::MARGIN_INSUFFICIENT)][..],
            &[Answer::Lose, Answer::Refuse(code::MARGIN_INSUFFICIENT)],
        ] {
            let fake = Fake::new(script, &[]);
            let err = at_most_once(&fake, &close_order(), limits(3, WINDOW), None)
                .await
                .unwrap_err();
            assert_eq!(err.class(), ErrorClass::Definitive);
            assert_eq!(err.exchange_code(), Some(code::MARGIN_INSUFFICIENT));
            assert_eq!(fake.sends().len(), script.len());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_id_refusal_is_settled_by_lookup() {
        let fake = Fake::new(&[Answer::Refuse(code::DUPLICATE_CLIENT_ORDER_ID)], &[]);
        // Our own earlier send, executing but not yet visible to lookups.
        fake.execute(&close_order(), Instant::now() + Duration::from_secs(1));
        let placed = at_most_once(&fake, &close_order(), limits(2, WINDOW), None)
            .await
            .unwrap();
        assert_eq!((placed.submits, placed.found_by_lookup), (1, true));
        assert_eq!(fake.executed(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_made_ahead_replaces_the_first_one() {
        // "No such order" ahead: the close starts with the send.
        let fake = Fake::new(&[], &[]);
        let placed = at_most_once(&fake, &close_order(), limits(2, WINDOW), Some(None))
            .await
            .unwrap();
        assert_eq!((placed.submits, placed.found_by_lookup), (1, false));
        assert_eq!((fake.lookups(), fake.executed()), (0, 1));

        // The order found ahead: nothing is sent.
        let earlier = fake.execute(&close_order(), Instant::now());
        let placed = at_most_once(
            &fake,
            &close_order(),
            limits(2, WINDOW),
            Some(Some(earlier)),
        )
        .await
        .unwrap();
        assert_eq!((placed.submits, placed.found_by_lookup), (0, true));
        assert_eq!((fake.lookups(), fake.sends().len()), (0, 1));

        // An unknown outcome after it is settled by lookups as always.
        let fake = Fake::new(&[Answer::FillUnseen(Duration::from_secs(2))], &[]);
        let placed = at_most_once(&fake, &close_order(), limits(2, WINDOW), Some(None))
            .await
            .unwrap();
        assert_eq!((placed.submits, placed.found_by_lookup), (1, true));
        assert_eq!(fake.executed(), 1);
        assert!(fake.lookups() >= 1);
    }

    #[test]
    fn settle_lookups_fall_at_halvings_of_the_window() {
        let secs = |s: &[u64]| {
            s.iter()
                .map(|s| Duration::from_secs(*s))
                .collect::<Vec<_>>()
        };
        let delays: Vec<Duration> = settle_delays(Duration::from_secs(8)).collect();
        assert_eq!(delays, secs(&[1, 1, 2, 4]));

        let odd = Duration::from_nanos(1_000_000_007);
        assert_eq!(settle_delays(odd).sum::<Duration>(), odd);
        assert!(settle_delays(Duration::ZERO).all(|d| d.is_zero()));
    }
}

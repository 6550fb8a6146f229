//! What every fault test sets up and checks: the ACL users, the paper exchange with open
//! positions, plans, and the audit of the exchange's orders against the plans.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reconcile_exchange::paper::{self, PaperConfig, RunningPaper};
use reconcile_exchange::{
    host_now_ms, Client, ClientConfig, ClientOrderId, Credentials, Decimal, MarketOrder, Order,
    PositionMode, Side,
};
use reconcile_tests::client::Reply;
use reconcile_tests::{Client as RedisClient, STREAM};
use rust_decimal::dec;

pub const KEY: &str = "reliability-key";
pub const SECRET: &str = "reliability-secret-0123456789abcdef";
pub use reconcile_tests::users::{engine_client, with_users, APPLY_PASSWORD, ENGINE_PASSWORD};
pub const GROUP: &str = "apply_recon";
pub const RESULT_STREAM: &str = "quantum:stream:apply.result";

/// The long BTCUSDT position the closes come out of: 1000 closes of at most 0.002 fit.
pub const BTC_LONG: Decimal = dec!(3);
/// The short ETHUSDT position.
pub const ETH_SHORT: Decimal = dec!(3);

pub fn credentials() -> Credentials {
    Credentials::new(KEY, SECRET).expect("test credentials")
}

/// Creates both users on a running server with ACL SETUSER, and sets the HOLD leases.
pub fn create_users(admin: &mut RedisClient) {
    reconcile_tests::users::create_users(admin);
    set_holds(admin);
}

/// HOLD leases on both symbols for an hour; the worker refuses a plan without one.
pub fn set_holds(admin: &mut RedisClient) {
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let hold = format!("quantum:reconcile:hold:{symbol}");
        admin.ok(&["SET", &hold, "1", "EX", "3600"]);
    }
}

/// The paper exchange with a long BTCUSDT and a short ETHUSDT position, and a client of it.
pub struct Exchange {
    pub paper: RunningPaper,
    pub client: Client,
}

impl Exchange {
    pub async fn start() -> Exchange {
        let paper = paper::start(PaperConfig::new(credentials()))
            .await
            .expect("paper exchange");
        let mut config = ClientConfig::new(paper.base_url());
        config.timeout = Duration::from_secs(5);
        let client = Client::new(config, credentials()).expect("exchange client");
        let exchange = Exchange { paper, client };
        exchange.open("BTCUSDT", Side::Buy, BTC_LONG).await;
        exchange.open("ETHUSDT", Side::Sell, ETH_SHORT).await;
        exchange
    }

    async fn open(&self, symbol: &str, side: Side, qty: Decimal) {
        let filters = self.client.symbol_filters(symbol).await.unwrap();
        let quantity = filters.market_quantity(qty).unwrap();
        let id = ClientOrderId::parse(&format!("open-{symbol}")).unwrap();
        let order = MarketOrder::open(symbol, side, quantity, PositionMode::OneWay, id);
        self.client.place_market_order(&order).await.unwrap();
    }

    pub fn base_url(&self) -> String {
        self.paper.base_url()
    }

    /// Every close order the exchange holds. `allOrders` answers with the newest 500 per
    /// symbol unless asked for a larger `limit`, as Binance does and the client does not, so
    /// the whole book comes from the paper exchange's own state.
    pub async fn close_orders(&self) -> Vec<Order> {
        let state = self.paper.control().state().await.expect("paper state");
        state
            .orders
            .into_iter()
            .filter(|o| !o.client_order_id.starts_with("open-"))
            .collect()
    }

    /// The signed size of the one-way position of `symbol`.
    pub async fn position(&self, symbol: &str) -> Decimal {
        let rows = self.client.position_risk(Some(symbol)).await.unwrap();
        rows.iter().map(|p| p.position_amt).sum()
    }
}

/// One close plan: what the test publishes and later expects to find executed once.
#[derive(Debug, Clone)]
pub struct Plan {
    pub plan_id: String,
    pub symbol: &'static str,
    pub qty: Decimal,
}

impl Plan {
    /// Plan `n` of a run: a close of 0.001 or 0.002 of either position, chosen by `pick`.
    pub fn nth(run: &str, n: usize, pick: u64) -> Plan {
        let symbol = if pick.is_multiple_of(2) {
            "BTCUSDT"
        } else {
            "ETHUSDT"
        };
        let qty = if pick.is_multiple_of(3) {
            dec!(0.002)
        } else {
            dec!(0.001)
        };
        Plan {
            plan_id: format!("{run}:{n}"),
            symbol,
            qty,
        }
    }

    fn side(&self) -> &'static str {
        // The long is closed by SELL, the short by BUY.
        if self.symbol == "BTCUSDT" {
            "SELL"
        } else {
            "BUY"
        }
    }

    /// `RECONCILE.XADDSIGNED` for this plan, dated now; the server's answer as sent.
    pub fn sign(&self, engine: &mut RedisClient) -> Reply {
        let qty = self.qty.to_string();
        let ts = host_now_ms().to_string();
        let mut args = vec!["RECONCILE.XADDSIGNED", STREAM, "*"];
        args.extend([
            "decision",
            "RECONCILE_CLOSE",
            "symbol",
            self.symbol,
            "qty",
            &qty,
            "side",
            self.side(),
            "type",
            "MARKET",
            "reduceOnly",
            "true",
            "reason",
            "reconcile_drift",
            "source",
            "p3.4",
            "plan_id",
            &self.plan_id,
            "signature",
            "reliability",
            "ts",
            &ts,
        ]);
        engine.call(&args)
    }

    /// Signs and returns the entry ID; panics on an error.
    pub fn publish(&self, engine: &mut RedisClient) -> String {
        match self.sign(engine) {
            Ok(value) => reconcile_tests::reply::text(&value).expect("an entry ID"),
            Err(err) => panic!("signing {} failed: {err}", self.plan_id),
        }
    }
}

/// How the exchange's close orders compare with the plans.
#[derive(Debug)]
pub struct Audit {
    /// Close orders `allOrders` reports.
    pub orders: usize,
    /// Distinct client order ids among them.
    pub distinct: usize,
    /// Plans with no order.
    pub missing: Vec<String>,
    /// Orders that belong to no plan.
    pub strangers: Vec<String>,
}

impl Audit {
    /// Compares `orders` with `plans` through the client order id each plan id maps to.
    pub fn of(plans: &[Plan], orders: &[Order]) -> Audit {
        let by_id: BTreeMap<String, &Plan> = plans
            .iter()
            .map(|p| (ClientOrderId::for_plan(&p.plan_id).to_string(), p))
            .collect();
        let seen: BTreeSet<&str> = orders.iter().map(|o| o.client_order_id.as_str()).collect();
        let missing = by_id
            .iter()
            .filter(|(id, _)| !seen.contains(id.as_str()))
            .map(|(_, p)| p.plan_id.clone())
            .collect();
        let strangers = seen
            .iter()
            .filter(|id| !by_id.contains_key(**id))
            .map(|id| id.to_string())
            .collect();
        Audit {
            orders: orders.len(),
            distinct: seen.len(),
            missing,
            strangers,
        }
    }
}

/// The total each symbol's closes in `plans` take off its position.
pub fn closed(plans: &[Plan], symbol: &str) -> Decimal {
    plans
        .iter()
        .filter(|p| p.symbol == symbol)
        .map(|p| p.qty)
        .sum()
}

/// Polls `done` every 50 ms until it holds or `limit` passed; whether it held.
pub async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Entries of the worker group not yet acknowledged.
pub fn pending(admin: &mut RedisClient) -> i64 {
    match admin.call(&["XPENDING", STREAM, GROUP]) {
        Ok(value) => reconcile_tests::reply::texts(&value)
            .first()
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1),
        Err(_) => -1,
    }
}

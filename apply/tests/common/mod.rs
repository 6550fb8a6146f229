//! The setup the apply worker tests share: a redis-server with the signing module, ACL users
//! for the engine (may sign) and the worker (least privilege), a paper exchange with open
//! positions, and the worker itself running in this process.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use reconcile_apply::{Config, Running};
use reconcile_exchange::paper::{
    self, FaultKind, Faults, PaperConfig, PaperState, QueuedFault, RequestRecord, RunningPaper,
};
use reconcile_exchange::{
    host_now_ms, Client, ClientConfig, ClientOrderId, Credentials, Decimal, MarketOrder, Order,
    PositionMode, Side,
};
use reconcile_tests::fixture::Forged;
use reconcile_tests::reply::Entry;
use reconcile_tests::{users, Client as RedisClient, Guarded, STREAM};
use reconcile_worker::{Shutdown, ShutdownTrigger};
use rust_decimal::dec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const RESULT_STREAM: &str = "quantum:stream:apply.result";
pub const GROUP: &str = "apply_recon";
pub const CONSUMER: &str = "apply-test";
pub const BTC_HOLD: &str = "quantum:reconcile:hold:BTCUSDT";

/// The long BTCUSDT position every test starts with.
pub const BTC_LONG: Decimal = dec!(0.05);
/// The short ETHUSDT position every test starts with; ETHUSDT has no HOLD lease.
pub const ETH_SHORT: Decimal = dec!(1);

/// How long a test waits for something the worker should do before it fails. Only a bound
/// on a hang: no assertion depends on how fast anything happens.
const DEADLINE: Duration = Duration::from_secs(30);

const KEY: &str = "paper-apply-key";
const SECRET: &str = "paper-apply-secret-0123456789abcdef";

/// Everything but the worker. Hold it for the whole test: dropping it stops the servers.
pub struct Harness {
    pub fixture: Guarded,
    /// A connection as the default (admin) user.
    pub admin: RedisClient,
    /// A connection as `engine`, the user allowed to sign plans.
    pub engine: RedisClient,
    pub paper: RunningPaper,
    /// A client of the paper exchange for the test's own reads and positions.
    pub exchange: Client,
    /// IDs of forged entries planted in the stream before the worker's group was created.
    pub planted: usize,
}

/// A worker started by [`Harness::spawn`].
pub struct Worker {
    pub running: Running,
    pub trigger: ShutdownTrigger,
}

impl Worker {
    /// Fires shutdown and waits until the worker stopped cleanly.
    pub async fn stop(self) {
        self.trigger.fire();
        tokio::time::timeout(DEADLINE, self.running.wait())
            .await
            .expect("worker did not stop in time")
            .expect("worker stopped with an error");
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.running.metrics_addr()
    }
}

fn credentials() -> Credentials {
    Credentials::new(KEY, SECRET).unwrap()
}

impl Harness {
    /// A guarded server whose stream is empty.
    pub async fn start() -> Harness {
        Harness::with_fixture(Guarded::start(), 0).await
    }

    /// A guarded server whose stream already holds every kind of forged entry, planted
    /// through an RDB file; the worker's group is created before them, so it is handed them.
    pub async fn start_forged() -> Harness {
        let forged = Forged::start();
        let planted = forged.planted.len();
        let harness = Harness::with_fixture(forged.fixture, planted).await;
        let mut admin = harness.fixture.client();
        admin.ok(&["XGROUP", "CREATE", STREAM, GROUP, "0"]);
        harness
    }

    async fn with_fixture(fixture: Guarded, planted: usize) -> Harness {
        let mut admin = fixture.client();
        users::create_users(&mut admin);
        let engine = users::engine_client(fixture.server.port());

        let paper = paper::start(PaperConfig::new(credentials())).await.unwrap();
        let mut config = ClientConfig::new(paper.base_url());
        config.timeout = Duration::from_secs(5);
        let exchange = Client::new(config, credentials()).unwrap();
        open(&exchange, "BTCUSDT", Side::Buy, BTC_LONG).await;
        open(&exchange, "ETHUSDT", Side::Sell, ETH_SHORT).await;
        admin.ok(&["SET", BTC_HOLD, "1", "EX", "100"]);

        Harness {
            fixture,
            admin,
            engine,
            paper,
            exchange,
            planted,
        }
    }

    /// The worker's configuration: the `apply` ACL user, short delays, metrics on a free port.
    pub fn config(&self) -> Config {
        let url = users::url("apply", users::APPLY_PASSWORD, self.fixture.server.port());
        let max_qty = "BTCUSDT=0.5,ETHUSDT=10".parse().unwrap();
        let mut config = Config::new(&url, &self.paper.base_url(), CONSUMER, max_qty);
        config.metrics_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.block = Duration::from_millis(500);
        config.retry_base = Duration::from_millis(50);
        config.retry_max = Duration::from_millis(400);
        config.info_interval = Duration::from_millis(100);
        config.exchange_timeout = Duration::from_secs(5);
        config.exchange_settle = Duration::from_millis(300);
        config
    }

    /// Starts a worker with `config` and waits until its consumer group exists: the group
    /// starts at the end of the stream, so a plan published earlier would not be delivered.
    pub async fn spawn(&self, config: Config) -> Worker {
        let (trigger, shutdown) = Shutdown::new();
        let running = reconcile_apply::start(config, credentials(), shutdown)
            .await
            .expect("starting the worker");
        let port = self.fixture.server.port();
        let ready = eventually(|| async move {
            let mut client = RedisClient::connect(port);
            let groups = client.call(&["XINFO", "GROUPS", STREAM]).ok()?;
            reconcile_tests::reply::flatten(&groups)
                .contains(GROUP)
                .then_some(())
        });
        assert!(ready.await.is_some(), "the worker never created its group");
        Worker { running, trigger }
    }

    /// Signs a plan into the stream as the engine; returns the entry ID.
    pub fn publish(&mut self, fields: &[(&str, String)]) -> String {
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(f, v)| (*f, v.as_str())).collect();
        self.engine.sign(STREAM, &pairs)
    }

    /// Every result entry so far, oldest first.
    pub fn results(&mut self) -> Vec<Entry> {
        self.admin.xrange(RESULT_STREAM)
    }

    /// Waits until the result stream holds at least `count` entries and returns them.
    pub async fn wait_results(&mut self, count: usize) -> Vec<Entry> {
        let results = eventually(|| {
            let results = self.results();
            let done = results.len() >= count;
            async move { done.then_some(results) }
        })
        .await;
        results.unwrap_or_else(|| panic!("fewer than {count} results: {}", self.shown()))
    }

    /// Waits for the result of `plan_id`.
    pub async fn wait_result_of(&mut self, plan_id: &str) -> Entry {
        let found = eventually(|| {
            let found = self
                .results()
                .into_iter()
                .find(|r| r.get("plan_id").as_deref() == Some(plan_id));
            async move { found }
        })
        .await;
        found.unwrap_or_else(|| panic!("no result for {plan_id}: {}", self.shown()))
    }

    /// The result stream as text, for failure messages.
    fn shown(&mut self) -> String {
        let results = self.results();
        let lines: Vec<String> = results
            .iter()
            .map(|r| {
                let pairs: Vec<String> = r
                    .names()
                    .iter()
                    .map(|n| format!("{n}={}", r.get(n).unwrap_or_default()))
                    .collect();
                pairs.join(" ")
            })
            .collect();
        format!("[\n{}\n]", lines.join("\n"))
    }

    /// Entries of the group still pending, with any consumer.
    pub fn pending(&mut self) -> i64 {
        let value = self.admin.ok(&["XPENDING", STREAM, GROUP]);
        let texts = reconcile_tests::reply::texts(&value);
        texts.first().and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    pub async fn state(&self) -> PaperState {
        self.paper.control().state().await.unwrap()
    }

    /// Orders the paper exchange holds under the client order id of `plan_id`.
    pub async fn orders_of(&self, plan_id: &str) -> Vec<Order> {
        let id = ClientOrderId::for_plan(plan_id).to_string();
        let state = self.state().await;
        state
            .orders
            .into_iter()
            .filter(|o| o.client_order_id == id)
            .collect()
    }

    /// Every order placed by anyone but the setup.
    pub async fn close_orders(&self) -> Vec<Order> {
        let state = self.state().await;
        state
            .orders
            .into_iter()
            .filter(|o| o.client_order_id.starts_with("rgc-"))
            .collect()
    }

    /// The paper exchange's log of API requests with `method` on `path`.
    pub async fn requests_to(&self, method: &str, path: &str) -> Vec<RequestRecord> {
        let log = self.paper.control().requests().await.unwrap();
        log.into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// While `down`, every exchange request fails with HTTP 503, as when the exchange is down.
    pub async fn exchange_down(&self, down: bool) {
        let faults = Faults {
            always: down.then_some(FaultKind::Http503),
            ..Faults::default()
        };
        self.paper.control().set_faults(&faults).await.unwrap();
    }

    pub async fn inject(&self, queue: Vec<QueuedFault>) {
        let faults = Faults {
            queue,
            ..Faults::default()
        };
        self.paper.control().set_faults(&faults).await.unwrap();
    }

    /// The signed size of the one-way position of `symbol`.
    pub async fn position(&self, symbol: &str) -> Decimal {
        let rows = self.exchange.position_risk(Some(symbol)).await.unwrap();
        rows.iter().map(|p| p.position_amt).sum()
    }
}

/// A well-formed plan closing `qty` of `symbol` with `side`, dated now.
pub fn plan(plan_id: &str, symbol: &str, side: &str, qty: &str) -> Vec<(&'static str, String)> {
    let now = host_now_ms();
    [
        ("decision", "RECONCILE_CLOSE"),
        ("symbol", symbol),
        ("qty", qty),
        ("side", side),
        ("type", "MARKET"),
        ("reduceOnly", "true"),
        ("reason", "reconcile_drift"),
        ("source", "p3.4"),
        ("plan_id", plan_id),
        ("signature", "a1b2c3d4e5f6"),
    ]
    .into_iter()
    .map(|(f, v)| (f, v.to_string()))
    .chain([("ts", now.to_string())])
    .collect()
}

/// `fields` with `name` set to `value`, or removed when `value` is `None`.
pub fn with(
    mut fields: Vec<(&'static str, String)>,
    name: &'static str,
    value: Option<&str>,
) -> Vec<(&'static str, String)> {
    fields.retain(|(f, _)| *f != name);
    if let Some(value) = value {
        fields.push((name, value.to_string()));
    }
    fields
}

/// Polls `check` until it gives `Some`, or `None` once the deadline passed.
pub async fn eventually<T, F, Fut>(mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that a result entry records `status`, showing the whole entry when it does not.
pub fn assert_status(result: &Entry, status: &str) {
    assert_eq!(result.get("status").as_deref(), Some(status), "{result:?}");
}

/// The body of `GET /metrics`.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connecting to metrics");
    let request = "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// The value of the unlabelled series `name` in a metrics page.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

async fn open(client: &Client, symbol: &str, side: Side, qty: Decimal) -> Order {
    let filters = client.symbol_filters(symbol).await.unwrap();
    let quantity = filters.market_quantity(qty).unwrap();
    let id = ClientOrderId::parse(&format!("open-{symbol}")).unwrap();
    let order = MarketOrder::open(symbol, side, quantity, PositionMode::OneWay, id);
    client.place_market_order(&order).await.unwrap()
}

//! The engine against a real redis-server with the module loaded and a paper exchange, each
//! on its own loopback port. The engine connects as an ACL user that may read ledgers, set
//! HOLD leases, append events and sign plans, and nothing else; cycles are driven one at a
//! time, so nothing here depends on timing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use prometheus::Registry;
use reconcile_engine::store::{dedupe_key, hold_key, ledger_key, CLOSE_STREAM, EVENTS_STREAM};
use reconcile_engine::{Config, Engine, Metrics, Outcome, Settings, SkipReason};
use reconcile_exchange::paper::{self, FaultKind, Faults, PaperConfig, QueuedFault, RunningPaper};
use reconcile_exchange::{
    Client, ClientConfig, ClientOrderId, Credentials, Decimal, MarketOrder, PositionMode, Side,
};
use reconcile_tests::{Entry, Guarded};
use reconcile_worker::redis::ConnectOptions;
use reconcile_worker::Shutdown;
use rust_decimal::dec;

const API_KEY: &str = "engine-test-key";
const API_SECRET: &str = "engine-test-secret-0123456789";
const ENGINE_PASSWORD: &str = "engine-test-password";
const SYMBOL: &str = "BTCUSDT";

/// Only what the engine needs: no hash writes (ledgers belong to the trading system), no
/// XADD on the close stream (the guard refuses it anyway), no admin commands.
const ENGINE_ACL: &str = "ACL SETUSER engine reset on >engine-test-password \
    ~quantum:position:ledger:* ~quantum:reconcile:hold:* ~quantum:apply:dedupe:* \
    ~quantum:stream:reconcile.close ~quantum:stream:reconcile.events \
    +ping +hget +get +exists +set +del +xadd +xrevrange +reconcile.xaddsigned";

fn credentials() -> Credentials {
    Credentials::new(API_KEY, API_SECRET).expect("test credentials")
}

/// A module server whose only signer is `engine`, a paper exchange, and a client that trades
/// on it the way the rest of the system would.
struct Rig {
    redis: Guarded,
    paper: RunningPaper,
    trader: Client,
    shutdown: Shutdown,
    _trigger: reconcile_worker::ShutdownTrigger,
}

impl Rig {
    async fn start() -> Rig {
        let redis = Guarded::start_with(|options| options.load_arg("signers", "engine"));
        let acl: Vec<&str> = ENGINE_ACL.split_whitespace().collect();
        redis.client().ok(&acl);
        let paper = paper::start(PaperConfig::new(credentials()))
            .await
            .expect("paper exchange");
        let trader = Client::new(ClientConfig::new(paper.base_url()), credentials()).unwrap();
        let (trigger, shutdown) = Shutdown::new();
        Rig {
            redis,
            paper,
            trader,
            shutdown,
            _trigger: trigger,
        }
    }

    fn engine_url(&self) -> String {
        format!(
            "redis://engine:{ENGINE_PASSWORD}@127.0.0.1:{}/",
            self.redis.server.port()
        )
    }

    fn settings(&self, confirm_cycles: u32) -> Settings {
        Settings {
            symbols: vec![SYMBOL.to_string()],
            hold_ttl: Duration::from_secs(900),
            confirm_cycles,
            stream_maxlen: 1000,
        }
    }

    async fn engine(&self, confirm_cycles: u32) -> Engine {
        let redis = reconcile_worker::redis::connect(
            &self.engine_url(),
            ConnectOptions::default(),
            &self.shutdown,
        )
        .await
        .expect("engine connects as its ACL user");
        let exchange =
            Client::new(ClientConfig::new(self.paper.base_url()), credentials()).unwrap();
        exchange.sync_clock().await.expect("clock");
        let metrics = Metrics::register(&Registry::new()).unwrap();
        Engine::new(redis, exchange, self.settings(confirm_cycles), metrics)
    }

    /// Trades `qty` on `side` without reduceOnly, as a fill the ledger may not know of.
    async fn trade(&self, side: Side, qty: Decimal) {
        static ORDERS: AtomicU32 = AtomicU32::new(0);
        let n = ORDERS.fetch_add(1, Ordering::Relaxed);
        let filters = self.trader.symbol_filters(SYMBOL).await.unwrap();
        let quantity = filters.market_quantity(qty).unwrap();
        let id = ClientOrderId::parse(&format!("test-trade-{n}")).unwrap();
        let order = MarketOrder::open(SYMBOL, side, quantity, PositionMode::OneWay, id);
        self.trader.place_market_order(&order).await.expect("trade");
    }

    fn set_ledger(&self, amount: &str) {
        self.redis
            .client()
            .ok(&["HSET", &ledger_key(SYMBOL), "ledger_amt", amount]);
    }

    fn plans(&self) -> Vec<Entry> {
        self.redis.client().xrange(CLOSE_STREAM)
    }

    fn events(&self) -> Vec<String> {
        let entries = self.redis.client().xrange(EVENTS_STREAM);
        entries.iter().map(|e| e.get("event").unwrap()).collect()
    }

    fn hold(&self) -> Option<String> {
        let value = self.redis.client().ok(&["GET", &hold_key(SYMBOL)]);
        reconcile_tests::reply::text(&value)
    }
}

async fn cycle(engine: &mut Engine) -> Outcome {
    engine
        .cycle()
        .await
        .outcome(SYMBOL)
        .cloned()
        .expect("symbol in report")
}

fn published(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Published { plan_id } => plan_id.clone(),
        other => panic!("expected a published plan, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_above_ledger_gives_one_signed_plan_and_the_hold() {
    let rig = Rig::start().await;
    rig.trade(Side::Buy, dec!(0.010)).await;
    rig.set_ledger("0.008");
    let mut engine = rig.engine(2).await;

    assert_eq!(cycle(&mut engine).await, Outcome::Unconfirmed { seen: 1 });
    assert!(rig.plans().is_empty(), "acted before confirmation");
    assert_eq!(rig.hold(), None);

    let plan_id = published(&cycle(&mut engine).await);
    let plans = rig.plans();
    assert_eq!(plans.len(), 1);
    let plan = &plans[0];
    assert_eq!(rig.redis.client().verify(CLOSE_STREAM, &plan.id), "OK");
    assert_eq!(plan.get("plan_id").unwrap(), plan_id);
    let signature = plan.get("signature").unwrap();
    assert!(plan_id.starts_with(&format!("reconclose:{SYMBOL}:{signature}:")));
    for (field, expected) in [
        ("decision", "RECONCILE_CLOSE"),
        ("symbol", SYMBOL),
        ("side", "SELL"),
        ("type", "MARKET"),
        ("qty", "0.002"),
        ("reduceOnly", "true"),
        ("reason", "reconcile_drift"),
        ("source", "p3.4"),
        ("exchange_amt", "0.01"),
        ("ledger_amt", "0.008"),
    ] {
        assert_eq!(plan.get(field).as_deref(), Some(expected), "field {field}");
    }
    assert!(plan.get("ts").unwrap().parse::<i64>().unwrap() > 0);
    assert_eq!(rig.hold().as_deref(), Some("1"));
    let ttl = rig.redis.client().int(&["PTTL", &hold_key(SYMBOL)]);
    assert!(ttl > 0 && ttl <= 900_000, "HOLD ttl {ttl}");
    assert_eq!(rig.events(), ["HOLD_SET", "PLAN_PUBLISHED"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_drift_is_not_published_again_while_its_plan_is_outstanding() {
    let rig = Rig::start().await;
    rig.trade(Side::Sell, dec!(0.005)).await;
    rig.set_ledger("0");
    let mut engine = rig.engine(1).await;

    let plan_id = published(&cycle(&mut engine).await);
    for _ in 0..3 {
        assert_eq!(
            cycle(&mut engine).await,
            Outcome::Outstanding {
                plan_id: plan_id.clone()
            }
        );
    }
    // A restarted engine learns the plan from the stream instead of publishing it again.
    let mut restarted = rig.engine(1).await;
    assert_eq!(
        cycle(&mut restarted).await,
        Outcome::Outstanding {
            plan_id: plan_id.clone()
        }
    );
    let plans = rig.plans();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].get("side").as_deref(), Some("BUY"));
    assert_eq!(plans[0].get("qty").as_deref(), Some("0.005"));

    // Once the HOLD is gone with the drift unchanged, the plan counts as lost.
    rig.redis.client().ok(&["DEL", &hold_key(SYMBOL)]);
    let again = published(&cycle(&mut restarted).await);
    assert_ne!(again, plan_id);
    assert_eq!(rig.plans().len(), 2);
    assert_eq!(rig.hold().as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_the_apply_worker_is_executing_blocks_new_plans_and_keeps_the_hold() {
    let rig = Rig::start().await;
    rig.trade(Side::Buy, dec!(0.010)).await;
    rig.set_ledger("0.004");
    let mut engine = rig.engine(1).await;
    let plan_id = published(&cycle(&mut engine).await);

    // The apply worker's claim: `executing <consumer> <since_ms>`.
    let executing = format!("executing apply-1 {}", reconcile_exchange::host_now_ms());
    rig.redis
        .client()
        .ok(&["SET", &dedupe_key(&plan_id), &executing]);
    rig.redis.client().ok(&["DEL", &hold_key(SYMBOL)]);
    rig.set_ledger("0.006");
    assert_eq!(
        cycle(&mut engine).await,
        Outcome::Outstanding {
            plan_id: plan_id.clone()
        }
    );
    assert_eq!(rig.hold().as_deref(), Some("1"), "HOLD not renewed");
    assert_eq!(rig.plans().len(), 1);

    // Done, and the drift is a different one now: the new drift gets its own plan.
    rig.redis
        .client()
        .ok(&["SET", &dedupe_key(&plan_id), "done FILLED 7"]);
    let next = published(&cycle(&mut engine).await);
    assert_ne!(next, plan_id);
    let plans = rig.plans();
    assert_eq!(plans[1].get("qty").as_deref(), Some("0.004"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreement_clears_the_hold() {
    let rig = Rig::start().await;
    rig.trade(Side::Buy, dec!(0.010)).await;
    rig.set_ledger("0.008");
    let mut engine = rig.engine(1).await;
    published(&cycle(&mut engine).await);
    assert_eq!(rig.hold().as_deref(), Some("1"));

    // What the apply worker would do: close the excess.
    rig.trade(Side::Sell, dec!(0.002)).await;
    assert_eq!(
        cycle(&mut engine).await,
        Outcome::InSync { hold_cleared: true }
    );
    assert_eq!(rig.hold(), None);
    assert_eq!(rig.events(), ["HOLD_SET", "PLAN_PUBLISHED", "HOLD_CLEARED"]);
    assert_eq!(
        cycle(&mut engine).await,
        Outcome::InSync {
            hold_cleared: false
        }
    );
    assert_eq!(rig.plans().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_above_exchange_on_the_same_side_needs_a_person_and_gets_no_plan() {
    let rig = Rig::start().await;
    rig.trade(Side::Buy, dec!(0.008)).await;
    rig.set_ledger("0.010");
    let mut engine = rig.engine(2).await;

    assert_eq!(cycle(&mut engine).await, Outcome::Unconfirmed { seen: 1 });
    assert_eq!(cycle(&mut engine).await, Outcome::Manual { reported: true });
    assert_eq!(
        cycle(&mut engine).await,
        Outcome::Manual { reported: false }
    );
    assert!(rig.plans().is_empty());
    assert_eq!(rig.hold(), None);
    assert_eq!(rig.events(), ["MANUAL_REQUIRED"]);
    let event = &rig.redis.client().xrange(EVENTS_STREAM)[0];
    assert_eq!(event.get("exchange_amt").as_deref(), Some("0.008"));
    assert_eq!(event.get("ledger_amt").as_deref(), Some("0.01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ledger_is_skipped_not_taken_as_flat() {
    let rig = Rig::start().await;
    rig.trade(Side::Buy, dec!(0.010)).await;
    let mut engine = rig.engine(1).await;
    for _ in 0..3 {
        assert_eq!(
            cycle(&mut engine).await,
            Outcome::Skipped(SkipReason::LedgerMissing)
        );
    }
    assert!(rig.plans().is_empty());
    assert_eq!(rig.hold(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_exchange_read_skips_the_symbol() {
    let rig = Rig::start().await;
    rig.trade(Side::Buy, dec!(0.010)).await;
    rig.set_ledger("0");
    let mut engine = rig.engine(1).await;
    let fault = QueuedFault {
        path: Some("/fapi/v2/positionRisk".into()),
        ..QueuedFault::on_any(FaultKind::Http503)
    };
    let faults = Faults {
        queue: vec![fault; 4],
        ..Faults::default()
    };
    rig.paper.control().set_faults(&faults).await.unwrap();

    let report = engine.cycle().await;
    assert_eq!(
        report.outcome(SYMBOL),
        Some(&Outcome::Skipped(SkipReason::ExchangeFailed))
    );
    assert!(!report.reached_everything());
    assert!(rig.plans().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_counts_consecutive_sightings_of_the_same_drift() {
    let rig = Rig::start().await;
    rig.trade(Side::Buy, dec!(0.010)).await;
    rig.set_ledger("0.008");
    let mut engine = rig.engine(3).await;

    assert_eq!(cycle(&mut engine).await, Outcome::Unconfirmed { seen: 1 });
    assert_eq!(cycle(&mut engine).await, Outcome::Unconfirmed { seen: 2 });
    // The position moved (an order in flight, say): counting starts over.
    rig.set_ledger("0.007");
    assert_eq!(cycle(&mut engine).await, Outcome::Unconfirmed { seen: 1 });
    assert_eq!(cycle(&mut engine).await, Outcome::Unconfirmed { seen: 2 });
    assert!(rig.plans().is_empty());
    published(&cycle(&mut engine).await);
    assert_eq!(rig.plans()[0].get("qty").as_deref(), Some("0.003"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_user_has_least_privilege() {
    let rig = Rig::start().await;
    let mut engine_client = rig.redis.client();
    engine_client.ok(&["AUTH", "engine", ENGINE_PASSWORD]);
    for forbidden in [
        vec!["HSET", &ledger_key(SYMBOL), "ledger_amt", "1"],
        vec!["XADD", CLOSE_STREAM, "*", "symbol", SYMBOL],
        vec!["CONFIG", "GET", "*"],
        vec!["GET", "unrelated"],
    ] {
        let err = engine_client.err(&forbidden);
        assert!(
            err.text.contains("NOPERM") || err.code == "NOPERM",
            "{forbidden:?}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_publishes_then_stops_on_shutdown() {
    let rig = Rig::start().await;
    rig.trade(Side::Buy, dec!(0.010)).await;
    rig.set_ledger("0.008");
    let config = Config {
        redis_url: rig.engine_url(),
        stream: CLOSE_STREAM.to_string(),
        exchange_url: rig.paper.base_url(),
        symbols: vec![SYMBOL.to_string()],
        interval: Duration::from_millis(50),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        hold_ttl: Duration::from_secs(900),
        confirm_cycles: 2,
        stream_maxlen: 1000,
        min_replicas: 0,
        min_replicas_timeout: Duration::from_secs(1),
    };
    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn(reconcile_engine::run(config, credentials(), shutdown));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rig.plans().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no plan published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("engine stops after shutdown")
        .expect("engine task")
        .expect("engine result");
    assert_eq!(rig.plans().len(), 1);
    assert_eq!(rig.hold().as_deref(), Some("1"));
}

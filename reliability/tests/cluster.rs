//! The close path on a three-master Redis Cluster on loopback. The engine and the apply
//! worker are each given every node's URL and the hash-tagged plan stream; the engine signs
//! plans from real drifts, the worker (a real process, as a least-privilege ACL user) executes
//! them at the paper exchange, and every plan is executed exactly once. The worker's dedupe
//! records and result stream land in the plan stream's slot, so its final transaction never
//! crosses slots; the HOLD leases and ledgers keep their usual names in whatever slot those
//! fall in.

use std::fs::OpenOptions;
use std::process::{Command, Stdio};
use std::time::Duration;

use prometheus::Registry;
use reconcile_engine::store::ledger_key;
use reconcile_engine::{Engine, Metrics, Outcome, Settings};
use reconcile_exchange::{Client, ClientConfig};
use reconcile_reliability::rig::{
    credentials, wait_for, Audit, Exchange, Plan, GROUP, KEY, SECRET,
};
use reconcile_reliability::worker::apply_binary;
use reconcile_tests::cluster::Cluster;
use reconcile_tests::{reply, Key, KeyringFile, ServerOptions};
use reconcile_worker::redis::{same_slot, ConnectOptions};
use reconcile_worker::Shutdown;
use rust_decimal::dec;

/// The plan stream, with the hash tag every key written beside it shares.
const STREAM: &str = "quantum:stream:{reconcile}.close";
const RESULTS: &str = "quantum:stream:apply.result:{reconcile}";
const PLANS_PER_SYMBOL: usize = 4;

/// The engine may do anything but sign outside the module's checks.
const ENGINE_RULES: &[&str] = &["engine", "on", ">pw-engine", "~*", "&*", "+@all"];

/// The worker's least-privilege user for the tagged layout. Besides the commands it needs on a
/// single server, a cluster client reads the slot map with CLUSTER SLOTS.
const APPLY_RULES: &[&str] = &[
    "apply",
    "on",
    ">pw-apply",
    "resetkeys",
    "~quantum:stream:{reconcile}.close",
    "~quantum:stream:apply.result:{reconcile}",
    "~quantum:apply:dedupe:*:{reconcile}",
    "~quantum:reconcile:hold:*",
    "resetchannels",
    "-@all",
    "+reconcile.xreadverified",
    "+xack",
    "+xautoclaim",
    "+xgroup|create",
    "+xpending",
    "+xadd",
    "+get",
    "+set",
    "+exists",
    "+expire",
    "+multi",
    "+exec",
    "+info",
    "+ping",
    "+cluster|slots",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_and_worker_close_drifts_through_a_cluster() {
    let keyring = KeyringFile::new(&[&Key::random("k1")]);
    let cluster = Cluster::start(3, || {
        ServerOptions::with_module_args(&["keyring", &keyring.path_str(), "guard", STREAM])
            .config("user", ENGINE_RULES)
            .config("user", APPLY_RULES)
    });
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let hold = format!("quantum:reconcile:hold:{symbol}");
        cluster
            .client_for(&hold)
            .ok(&["SET", &hold, "1", "EX", "3600"]);
    }
    let exchange = Exchange::start().await;

    // The worker, started from the seed list like any cluster client.
    let dir = cluster.nodes()[0].dir().path().to_path_buf();
    let log_path = dir.join("apply.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("opening the worker log");
    let mut worker = Command::new(apply_binary())
        .env("BINANCE_API_KEY", KEY)
        .env("BINANCE_API_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .args(["--redis-url", &cluster.urls("apply:pw-apply@")])
        .args(["--stream", STREAM])
        .args(["--exchange-url", &exchange.base_url()])
        .args(["--consumer", "apply-cluster"])
        .args(["--max-qty", "BTCUSDT=0.5,ETHUSDT=5"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(["--block", "200ms"])
        .args(["--retry-max", "300ms"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cloning the worker log"))
        .stderr(log)
        .spawn()
        .expect("spawning reconcile-apply");
    let mut owner = cluster.client_for(STREAM);
    let grouped = wait_for(Duration::from_secs(20), || {
        let groups = owner.call(&["XINFO", "GROUPS", STREAM]);
        groups.is_ok_and(|g| reply::flatten(&g).contains(GROUP))
    })
    .await;
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        grouped,
        "the worker never created its group\n{}",
        log_text()
    );

    // The engine, also from the seed list.
    let (_trigger, shutdown) = Shutdown::new();
    let urls = cluster.urls("engine:pw-engine@");
    let redis = reconcile_worker::redis::connect(&urls, ConnectOptions::default(), &shutdown)
        .await
        .expect("the engine connects to the cluster");
    assert!(redis.is_cluster());
    let client = Client::new(ClientConfig::new(exchange.base_url()), credentials()).unwrap();
    client.sync_clock().await.expect("clock");
    let settings = Settings {
        symbols: vec!["BTCUSDT".to_string(), "ETHUSDT".to_string()],
        hold_ttl: Duration::from_secs(3600),
        confirm_cycles: 1,
        stream_maxlen: 100_000,
    };
    let metrics = Metrics::register(&Registry::new()).unwrap();
    let mut engine = Engine::new(redis, client, settings, metrics).with_stream(STREAM);

    let mut plans = Vec::new();
    for round in 0..PLANS_PER_SYMBOL {
        // A drift on each symbol: the ledger says 0.005 less exposure than the exchange holds.
        for symbol in ["BTCUSDT", "ETHUSDT"] {
            let position = exchange.position(symbol).await;
            let drift = if position > dec!(0) {
                dec!(0.005)
            } else {
                dec!(-0.005)
            };
            let ledger = (position - drift).to_string();
            let key = ledger_key(symbol);
            cluster
                .client_for(&key)
                .ok(&["HSET", &key, "ledger_amt", &ledger]);
        }
        let report = engine.cycle().await;
        for symbol in ["BTCUSDT", "ETHUSDT"] {
            match report.outcome(symbol) {
                Some(Outcome::Published { plan_id }) => plans.push(Plan {
                    plan_id: plan_id.clone(),
                    symbol,
                    qty: dec!(0.005),
                }),
                other => panic!("round {round}: no plan for {symbol}: {other:?}"),
            }
        }
        let mut done = false;
        for _ in 0..400 {
            let orders = exchange.close_orders().await;
            if Audit::of(&plans, &orders).missing.is_empty() {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(done, "round {round}: plans not executed\n{}", log_text());
    }

    let audit = Audit::of(&plans, &exchange.close_orders().await);
    assert!(audit.missing.is_empty(), "{audit:?}");
    assert!(audit.strangers.is_empty(), "{audit:?}");
    assert_eq!(audit.orders, plans.len(), "an order twice: {audit:?}");
    assert_eq!(audit.distinct, plans.len(), "{audit:?}");
    let rounds = PLANS_PER_SYMBOL as u32;
    assert_eq!(
        exchange.position("BTCUSDT").await,
        reconcile_reliability::rig::BTC_LONG - dec!(0.005) * rust_decimal::Decimal::from(rounds)
    );

    // Every outcome and dedupe record sits in the stream's slot, on the stream's node.
    let settled = wait_for(Duration::from_secs(20), || {
        owner.int(&["XLEN", RESULTS]) == plans.len() as i64
    })
    .await;
    assert!(settled, "results missing\n{}", log_text());
    for plan in &plans {
        let key = format!("quantum:apply:dedupe:{}:{{reconcile}}", plan.plan_id);
        assert!(same_slot(&key, STREAM));
        let record = owner.text(&["GET", &key]);
        assert!(record.starts_with("done "), "{key}: {record}");
    }
    let pending = reply::texts(&owner.ok(&["XPENDING", STREAM, GROUP]));
    assert_eq!(
        pending.first().map(String::as_str),
        Some("0"),
        "{pending:?}"
    );
    let _ = worker.kill();
    let _ = worker.wait();
}

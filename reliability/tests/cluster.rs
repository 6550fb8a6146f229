//! The close path on a three-master Redis Cluster on loopback. The engine and the apply
//! worker are each given every node's URL and the hash-tagged plan stream; the engine signs
//! plans from real drifts, the worker (a real process, as a least-privilege ACL user) executes
//! them at the paper exchange, and every plan is executed exactly once. The worker's dedupe
//! records and result stream land in the plan stream's slot, so its final transaction never
//! crosses slots; the HOLD leases and ledgers keep their usual names in whatever slot those
//! fall in. A second test crashes the master serving the stream and lets the cluster promote
//! its replica while both workers keep running.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
use reconcile_tests::{reply, Client as RedisClient, Key, KeyringFile, ServerOptions};
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

/// Options of every node: the module guarding the stream, and both users.
fn node_options(keyring: &KeyringFile) -> ServerOptions {
    ServerOptions::with_module_args(&["keyring", &keyring.path_str(), "guard", STREAM])
        .config("user", ENGINE_RULES)
        .config("user", APPLY_RULES)
}

/// Sets an hour-long HOLD on each symbol, on whichever node serves it.
async fn hold_symbols(cluster: &Cluster) {
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let hold = format!("quantum:reconcile:hold:{symbol}");
        let mut node = serving(cluster, &hold).await;
        node.ok(&["SET", &hold, "1", "EX", "3600"]);
    }
}

/// A connection to the node serving `key` now, waiting out a failover in progress.
async fn serving(cluster: &Cluster, key: &str) -> RedisClient {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(client) = cluster.serving(key) {
            return client;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no node serves {key}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The apply worker as a process, started from the seed list like any cluster client, with
/// its log in `dir`. Returns once it has created its group.
async fn spawn_worker(
    cluster: &Cluster,
    exchange: &Exchange,
    dir: PathBuf,
) -> (Child, impl Fn() -> String) {
    let log_path = dir.join("apply.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("opening the worker log");
    let worker = Command::new(apply_binary())
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
    let log_text = move || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut owner = serving(cluster, STREAM).await;
    let grouped = wait_for(Duration::from_secs(20), || {
        let groups = owner.call(&["XINFO", "GROUPS", STREAM]);
        groups.is_ok_and(|g| reply::flatten(&g).contains(GROUP))
    })
    .await;
    assert!(
        grouped,
        "the worker never created its group\n{}",
        log_text()
    );
    (worker, log_text)
}

/// The engine, in process, connected from the seed list.
async fn start_engine(cluster: &Cluster, exchange: &Exchange) -> Engine {
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
    Engine::new(redis, client, settings, metrics).with_stream(STREAM)
}

/// One round: a drift of 0.005 on each symbol, the engine's cycles until it has published a
/// plan for both (a cycle during a failover may fail to reach Redis), and the wait until both
/// plans are executed. The plans are added to `plans`; false if the round did not finish.
async fn drift_round(
    cluster: &Cluster,
    exchange: &Exchange,
    engine: &mut Engine,
    plans: &mut Vec<Plan>,
) -> bool {
    // The ledger says 0.005 less exposure than the exchange holds.
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let position = exchange.position(symbol).await;
        let drift = if position > dec!(0) {
            dec!(0.005)
        } else {
            dec!(-0.005)
        };
        let ledger = (position - drift).to_string();
        let key = ledger_key(symbol);
        let mut node = serving(cluster, &key).await;
        node.ok(&["HSET", &key, "ledger_amt", &ledger]);
    }
    let mut waiting: Vec<&'static str> = vec!["BTCUSDT", "ETHUSDT"];
    for _ in 0..200 {
        let report = engine.cycle().await;
        waiting.retain(|&symbol| match report.outcome(symbol) {
            Some(Outcome::Published { plan_id }) => {
                plans.push(Plan {
                    plan_id: plan_id.clone(),
                    symbol,
                    qty: dec!(0.005),
                });
                false
            }
            _ => true,
        });
        if waiting.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !waiting.is_empty() {
        return false;
    }
    for _ in 0..600 {
        let orders = exchange.close_orders().await;
        if Audit::of(plans, &orders).missing.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Every plan executed exactly once, and nothing else.
async fn assert_exactly_once(exchange: &Exchange, plans: &[Plan]) {
    let audit = Audit::of(plans, &exchange.close_orders().await);
    assert!(audit.missing.is_empty(), "{audit:?}");
    assert!(audit.strangers.is_empty(), "{audit:?}");
    assert_eq!(audit.orders, plans.len(), "an order twice: {audit:?}");
    assert_eq!(audit.distinct, plans.len(), "{audit:?}");
    let btc_plans = plans.iter().filter(|p| p.symbol == "BTCUSDT").count();
    assert_eq!(
        exchange.position("BTCUSDT").await,
        reconcile_reliability::rig::BTC_LONG
            - dec!(0.005) * rust_decimal::Decimal::from(btc_plans as u32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_and_worker_close_drifts_through_a_cluster() {
    let keyring = KeyringFile::new(&[&Key::random("k1")]);
    let cluster = Cluster::start(3, || node_options(&keyring));
    hold_symbols(&cluster).await;
    let exchange = Exchange::start().await;
    let dir = cluster.nodes()[0].dir().path().to_path_buf();
    let (mut worker, log_text) = spawn_worker(&cluster, &exchange, dir).await;
    let mut engine = start_engine(&cluster, &exchange).await;

    let mut plans = Vec::new();
    for round in 0..PLANS_PER_SYMBOL {
        let done = drift_round(&cluster, &exchange, &mut engine, &mut plans).await;
        assert!(done, "round {round}: plans not executed\n{}", log_text());
    }
    assert_exactly_once(&exchange, &plans).await;

    // Every outcome and dedupe record sits in the stream's slot, on the stream's node.
    let mut owner = cluster.client_for(STREAM);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_master_of_the_stream_is_replaced_by_its_replica_and_the_workers_carry_on() {
    let keyring = KeyringFile::new(&[&Key::random("k1")]);
    let mut cluster = Cluster::start(3, || node_options(&keyring));
    let owner = cluster.owner_index(STREAM);
    let replica_port = cluster.add_replica(owner, node_options(&keyring)).port();
    hold_symbols(&cluster).await;
    let exchange = Exchange::start().await;
    let dir = cluster.replicas()[0].dir().path().to_path_buf();
    let (mut worker, log_text) = spawn_worker(&cluster, &exchange, dir).await;
    let mut engine = start_engine(&cluster, &exchange).await;

    let mut plans = Vec::new();
    for round in 0..2 {
        let done = drift_round(&cluster, &exchange, &mut engine, &mut plans).await;
        assert!(done, "round {round} before the crash\n{}", log_text());
    }
    // Everything written so far has reached the replica, so the failover loses nothing: what
    // asynchronous replication can lose is RELIABILITY.md's subject, not this test's.
    let mut master = cluster.client_for(STREAM);
    assert_eq!(master.int(&["WAIT", "1", "5000"]), 1);
    let signed_before = master.int(&["XLEN", STREAM]);

    cluster.crash_master(owner);
    let crashed = std::time::Instant::now();
    let mut promoted = RedisClient::connect(replica_port);
    let took_over = wait_for(Duration::from_secs(30), || {
        promoted
            .text(&["INFO", "replication"])
            .contains("role:master")
            && promoted
                .text(&["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
    })
    .await;
    assert!(took_over, "the replica was never promoted");
    let promotion = crashed.elapsed();

    // The entries signed on the old master verify on the new one, and forgery is refused.
    promoted.ok(&["XGROUP", "CREATE", STREAM, "audit", "0"]);
    let verified = promoted.read_entries(
        &[
            "RECONCILE.XREADVERIFIED",
            "GROUP",
            "audit",
            "auditor",
            "COUNT",
            "1000",
            "STREAMS",
            STREAM,
            ">",
        ],
        STREAM,
    );
    assert_eq!(verified.len() as i64, signed_before);
    assert_eq!(promoted.info_reconcile().get("rejected_total"), "0");
    let forged = promoted.err(&["XADD", STREAM, "*", "qty", "1"]);
    assert_eq!(forged.code, "GUARDED");

    // The engine and the worker find the new master on their own and carry on.
    let resumed = std::time::Instant::now();
    for round in 2..4 {
        let done = drift_round(&cluster, &exchange, &mut engine, &mut plans).await;
        assert!(done, "round {round} after the failover\n{}", log_text());
    }
    println!(
        "cluster failover: {} plans; replica promoted {:.1}s after the crash; the two rounds \
         after it took {:.1}s; {signed_before} entries verified on the new master",
        plans.len(),
        promotion.as_secs_f64(),
        resumed.elapsed().as_secs_f64()
    );
    assert_exactly_once(&exchange, &plans).await;
    let results = wait_for(Duration::from_secs(20), || {
        promoted.int(&["XLEN", RESULTS]) == plans.len() as i64
    })
    .await;
    assert!(results, "results missing on the new master\n{}", log_text());
    let _ = worker.kill();
    let _ = worker.wait();
}

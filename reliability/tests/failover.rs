//! A master and a replica, both with the module and the same keyring. Plans signed on the
//! master verify on the replica; after the master dies and the replica is promoted, signed
//! entries still verify, forgery is still refused, signing works, and the workers, restarted
//! with the new master's address, carry on. Also the engine's `--min-replicas` WAIT.

use std::thread;
use std::time::{Duration, Instant};

use prometheus::Registry;
use reconcile_engine::store::{self, ledger_key};
use reconcile_engine::{Engine, Metrics, MinReplicas, Outcome, Settings};
use reconcile_exchange::{Client, ClientConfig};
use reconcile_reliability::proxy::Proxy;
use reconcile_reliability::rig::{
    closed, credentials, engine_client, pending, set_holds, wait_for, with_users, Audit, Exchange,
    Plan, BTC_LONG, ENGINE_PASSWORD, ETH_SHORT,
};
use reconcile_reliability::rng::{size, Rng};
use reconcile_reliability::worker::WorkerSpec;
use reconcile_tests::{
    Client as RedisClient, Key, KeyringFile, RedisServer, ServerOptions, STREAM,
};
use reconcile_worker::redis::ConnectOptions;
use reconcile_worker::{Shutdown, ShutdownTrigger};
use rust_decimal::dec;

struct Pair {
    _keyring: KeyringFile,
    master: RedisServer,
    replica: RedisServer,
}

/// Both servers with the module, the same keyring and the same users, linked and in sync.
fn pair() -> Pair {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let master = with_users(ServerOptions::guarded(&keyring))
        .config("repl-diskless-sync-delay", &["0"])
        .start();
    let replica = with_users(ServerOptions::guarded(&keyring))
        .replica_of(&master)
        .start();
    let mut client = replica.client();
    let until = Instant::now() + Duration::from_secs(15);
    while !client
        .text(&["INFO", "replication"])
        .contains("master_link_status:up")
    {
        assert!(Instant::now() < until, "the replica never linked");
        thread::sleep(Duration::from_millis(20));
    }
    Pair {
        _keyring: keyring,
        master,
        replica,
    }
}

/// An engine for BTCUSDT on `port`, acting on the first sight of a drift.
async fn engine(
    port: u16,
    exchange: &Exchange,
    min_replicas: MinReplicas,
) -> (Engine, Metrics, ShutdownTrigger) {
    let url = format!("redis://engine:{ENGINE_PASSWORD}@127.0.0.1:{port}/");
    let (trigger, shutdown) = Shutdown::new();
    let redis = reconcile_worker::redis::connect(&url, ConnectOptions::default(), &shutdown)
        .await
        .expect("engine connects");
    let client = Client::new(ClientConfig::new(exchange.base_url()), credentials()).unwrap();
    client.sync_clock().await.expect("clock");
    let metrics = Metrics::register(&Registry::new()).unwrap();
    let settings = Settings {
        symbols: vec!["BTCUSDT".to_string()],
        hold_ttl: Duration::from_secs(900),
        confirm_cycles: 1,
        stream_maxlen: 100_000,
    };
    let engine =
        Engine::new(redis, client, settings, metrics.clone()).with_min_replicas(min_replicas);
    (engine, metrics, trigger)
}

/// Sets the BTCUSDT ledger 0.005 under the position and runs one cycle: one plan.
async fn publish_from_drift(
    engine: &mut Engine,
    admin: &mut RedisClient,
    exchange: &Exchange,
) -> Plan {
    let position = exchange.position("BTCUSDT").await;
    let ledger = (position - dec!(0.005)).to_string();
    admin.ok(&["HSET", &ledger_key("BTCUSDT"), "ledger_amt", &ledger]);
    let report = engine.cycle().await;
    match report.outcome("BTCUSDT") {
        Some(Outcome::Published { plan_id }) => Plan {
            plan_id: plan_id.clone(),
            symbol: "BTCUSDT",
            qty: dec!(0.005),
        },
        other => panic!("the engine did not publish: {other:?}"),
    }
}

/// Waits until every plan in `plans` has its order and nothing is pending on `port`.
async fn executed(exchange: &Exchange, port: u16, plans: &[Plan]) -> bool {
    let mut admin = RedisClient::connect(port);
    let limit = Duration::from_secs(size(30, 120) as u64);
    let until = tokio::time::Instant::now() + limit;
    loop {
        let orders = exchange.close_orders().await;
        if Audit::of(plans, &orders).missing.is_empty() && pending(&mut admin) == 0 {
            return true;
        }
        if tokio::time::Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoted_replica_verifies_refuses_forgery_signs_and_the_workers_carry_on() {
    let mut rng = Rng::for_test("failover");
    let per_phase = size(50, 300);
    let Pair {
        _keyring,
        master,
        replica,
    } = pair();
    let mut admin = master.client();
    set_holds(&mut admin);
    let exchange = Exchange::start().await;
    // The replica outlives the master, and so does its directory.
    let log = replica.dir().path().join("apply.log");
    let on_master = WorkerSpec {
        redis_port: master.port(),
        exchange_url: exchange.base_url(),
        consumer: "apply-failover".to_string(),
        log: log.clone(),
    };
    let started = Instant::now();
    let worker = on_master.start(master.port());

    let mut plans: Vec<Plan> = (0..per_phase)
        .map(|n| Plan::nth("fo", n, rng.next_u64()))
        .collect();
    let mut engine_con = engine_client(master.port());
    let ids: Vec<String> = plans.iter().map(|p| p.publish(&mut engine_con)).collect();
    assert!(
        executed(&exchange, master.port(), &plans).await,
        "phase one"
    );
    assert_eq!(
        admin.int(&["WAIT", "1", "5000"]),
        1,
        "the replica acknowledged"
    );

    let mut on_replica = replica.client();
    let synced = wait_for(Duration::from_secs(10), || {
        on_replica.xrange(STREAM) == admin.xrange(STREAM)
    })
    .await;
    assert!(synced, "the replica never caught up");
    for id in &ids {
        assert_eq!(on_replica.verify(STREAM, id), "OK", "{id} on the replica");
    }

    worker.kill();
    drop(master.kill());
    on_replica.ok(&["REPLICAOF", "NO", "ONE"]);
    let new_port = replica.port();
    for id in &ids {
        assert_eq!(
            on_replica.verify(STREAM, id),
            "OK",
            "{id} on the new master"
        );
    }
    let forged = on_replica.err(&["XADD", STREAM, "*", "symbol", "BTCUSDT", "qty", "1"]);
    assert_eq!(forged.code, "GUARDED", "{forged}");
    let mut new_engine_con = engine_client(new_port);
    let first_new = Plan::nth("fo-new", 0, rng.next_u64());
    let id = first_new.publish(&mut new_engine_con);
    assert_eq!(on_replica.verify(STREAM, &id), "OK");
    plans.push(first_new);

    // The workers restart with the new master's address; the group and its acknowledgements
    // came over with replication.
    let on_new_master = WorkerSpec {
        redis_port: new_port,
        ..on_master
    };
    let worker = on_new_master.start(new_port);
    let (mut engine, _, _trigger) = engine(new_port, &exchange, MinReplicas::default()).await;
    let more: Vec<Plan> = (1..per_phase)
        .map(|n| Plan::nth("fo-new", n, rng.next_u64()))
        .collect();
    for plan in &more {
        plan.publish(&mut new_engine_con);
    }
    plans.extend(more);
    assert!(executed(&exchange, new_port, &plans).await, "phase two");
    let from_engine = publish_from_drift(&mut engine, &mut on_replica, &exchange).await;
    plans.push(from_engine);
    assert!(
        executed(&exchange, new_port, &plans).await,
        "the engine's plan"
    );
    let elapsed = started.elapsed();
    drop(worker);

    let orders = exchange.close_orders().await;
    let audit = Audit::of(&plans, &orders);
    println!(
        "failover: {} plans ({per_phase} before, the rest after the promotion), {} orders, \
         {:.1}s",
        plans.len(),
        audit.orders,
        elapsed.as_secs_f64()
    );
    assert_eq!(audit.orders, plans.len(), "{audit:?}");
    assert_eq!(audit.distinct, plans.len(), "{audit:?}");
    assert!(
        audit.missing.is_empty() && audit.strangers.is_empty(),
        "{audit:?}"
    );
    let btc = exchange.position("BTCUSDT").await;
    let eth = exchange.position("ETHUSDT").await;
    assert_eq!(btc, BTC_LONG - closed(&plans, "BTCUSDT"));
    assert_eq!(eth, -ETH_SHORT + closed(&plans, "ETHUSDT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replicas_with_a_replica_attached_counts_the_plan_replicated() {
    let pair = pair();
    let mut admin = pair.master.client();
    let exchange = Exchange::start().await;
    let wanted = MinReplicas {
        count: 1,
        timeout: Duration::from_secs(1),
    };
    let (mut engine, metrics, _trigger) = engine(pair.master.port(), &exchange, wanted).await;

    let plan = publish_from_drift(&mut engine, &mut admin, &exchange).await;
    let unreplicated = metrics.plans_unreplicated.with_label_values(&["BTCUSDT"]);
    assert_eq!(unreplicated.get(), 0, "{} was acknowledged", plan.plan_id);

    let url = format!(
        "redis://engine:{ENGINE_PASSWORD}@127.0.0.1:{}/",
        pair.master.port()
    );
    let (_t, shutdown) = Shutdown::new();
    let mut con = reconcile_worker::redis::connect(&url, ConnectOptions::default(), &shutdown)
        .await
        .unwrap();
    let acked = store::wait_replicas(&mut con, STREAM, 1, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(acked, 1, "WAIT 1 with one replica attached");
    let mut replica = pair.replica.client();
    let entries = replica.xrange(STREAM);
    let last = entries.last().expect("the plan reached the replica");
    assert_eq!(last.get("plan_id"), Some(plan.plan_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replicas_without_a_replica_counts_the_plan_unreplicated_but_published() {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let server = with_users(ServerOptions::guarded(&keyring)).start();
    let mut admin = server.client();
    let exchange = Exchange::start().await;
    let wanted = MinReplicas {
        count: 1,
        timeout: Duration::from_millis(200),
    };
    let (mut engine, metrics, _trigger) = engine(server.port(), &exchange, wanted).await;

    let plan = publish_from_drift(&mut engine, &mut admin, &exchange).await;
    let unreplicated = metrics.plans_unreplicated.with_label_values(&["BTCUSDT"]);
    assert_eq!(
        unreplicated.get(),
        1,
        "no replica acknowledged {}",
        plan.plan_id
    );
    let published = metrics.plans_published.with_label_values(&["BTCUSDT"]);
    assert_eq!(published.get(), 1, "the plan still counts as published");
    let entries = admin.xrange(STREAM);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].get("plan_id"), Some(plan.plan_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_acknowledged_but_not_replicated_is_lost_on_failover_and_was_counted() {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let master = with_users(ServerOptions::guarded(&keyring))
        .config("repl-diskless-sync-delay", &["0"])
        .start();
    // The replication link runs through a proxy, so the test can cut it.
    let link = Proxy::start(master.port()).await;
    let link_port = link.port().to_string();
    let replica = with_users(ServerOptions::guarded(&keyring))
        .config("replicaof", &["127.0.0.1", &link_port])
        .start();
    let mut on_replica = replica.client();
    let linked = wait_for(Duration::from_secs(15), || {
        on_replica
            .text(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    assert!(linked.await, "the replica never linked");
    let mut admin = master.client();
    let exchange = Exchange::start().await;
    let wanted = MinReplicas {
        count: 1,
        timeout: Duration::from_millis(300),
    };
    let (mut engine, metrics, _trigger) = engine(master.port(), &exchange, wanted).await;

    link.sever();
    let plan = publish_from_drift(&mut engine, &mut admin, &exchange).await;
    let unreplicated = metrics.plans_unreplicated.with_label_values(&["BTCUSDT"]);
    assert_eq!(unreplicated.get(), 1, "the shortfall was counted");
    let on_master = admin.xrange(STREAM);
    assert_eq!(on_master[0].get("plan_id"), Some(plan.plan_id.clone()));

    drop(master.kill());
    on_replica.ok(&["REPLICAOF", "NO", "ONE"]);
    let survived = on_replica
        .xrange(STREAM)
        .iter()
        .any(|e| e.get("plan_id").as_deref() == Some(plan.plan_id.as_str()));
    assert!(
        !survived,
        "the plan never reached the replica, so the promotion lost it"
    );
}

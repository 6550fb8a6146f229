//! The apply worker killed with SIGKILL at random moments while plans stream in, and
//! restarted under the same consumer name: every plan is executed exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reconcile_reliability::rig::{
    closed, create_users, engine_client, pending, wait_for, Audit, Exchange, Plan, BTC_LONG,
    ETH_SHORT, RESULT_STREAM,
};
use reconcile_reliability::rng::{size, Rng};
use reconcile_reliability::worker::WorkerSpec;
use reconcile_tests::{Client, Guarded};

/// Plans whose dedupe record says `executing`: a kill caught them between claim and outcome.
fn in_flight(admin: &mut Client) -> usize {
    let keys = admin.ok(&["KEYS", "quantum:apply:dedupe:*"]);
    reconcile_tests::reply::texts(&keys)
        .iter()
        .filter(|key| admin.text(&["GET", key.as_str()]).starts_with("executing"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_at_random_moments_executes_every_plan_exactly_once() {
    let mut rng = Rng::for_test("crash");
    let count = size(200, 1000);
    let kills = size(12, 40);
    let redis = Guarded::start();
    let port = redis.server.port();
    let mut admin = redis.client();
    create_users(&mut admin);
    let exchange = Exchange::start().await;
    let spec = WorkerSpec {
        redis_port: port,
        exchange_url: exchange.base_url(),
        consumer: "apply-crash".to_string(),
        log: redis.server.dir().path().join("apply.log"),
    };
    let plans: Vec<Plan> = (0..count)
        .map(|n| Plan::nth("crash", n, rng.next_u64()))
        .collect();
    let mut engine = engine_client(port);
    let started = Instant::now();

    let mut worker = spec.start(port);
    let mut published = 0;
    let mut caught_in_flight = 0;
    for kill in 0..kills {
        let upto = (kill + 1) * count / (kills + 1);
        for plan in &plans[published..upto] {
            plan.publish(&mut engine);
        }
        // Kill while the worker is busy: once it has written a random number of this
        // segment's results, so that the kill lands between two plans or inside one.
        let target = published as i64 + rng.between(0, (upto - published) as u64 - 1) as i64;
        published = upto;
        let until = Instant::now() + Duration::from_secs(10);
        while admin.int(&["XLEN", RESULT_STREAM]) < target {
            assert!(Instant::now() < until, "the worker made no progress");
        }
        worker.kill();
        caught_in_flight += in_flight(&mut admin);
        tokio::time::sleep(Duration::from_millis(rng.between(0, 100))).await;
        worker = spec.start(port);
    }
    for plan in &plans[published..] {
        plan.publish(&mut engine);
    }

    let limit = Duration::from_secs(size(45, 300) as u64);
    let wanted: BTreeSet<&str> = plans.iter().map(|p| p.plan_id.as_str()).collect();
    let settled = wait_for(limit, || {
        let done: BTreeSet<String> = admin
            .xrange(RESULT_STREAM)
            .iter()
            .filter(|r| r.get("status").as_deref() == Some("success"))
            .filter_map(|r| r.get("plan_id"))
            .collect();
        done.len() == wanted.len() && pending(&mut admin) == 0
    })
    .await;
    let elapsed = started.elapsed();
    drop(worker);

    let results = admin.xrange(RESULT_STREAM);
    let statuses: Vec<String> = results.iter().filter_map(|r| r.get("status")).collect();
    let by_lookup = results
        .iter()
        .filter(|r| r.get("found_by_lookup").as_deref() == Some("true"))
        .count();
    let duplicates = statuses.iter().filter(|s| *s == "duplicate").count();
    let orders = exchange.close_orders().await;
    let audit = Audit::of(&plans, &orders);
    println!(
        "crash: {count} plans, {kills} kills ({caught_in_flight} executing records seen at kills), \
         {} results ({by_lookup} found by lookup, {duplicates} duplicate), {} orders, \
         {:.1}s",
        results.len(),
        audit.orders,
        elapsed.as_secs_f64()
    );
    assert!(settled, "not every plan finished in {limit:?}: {audit:?}");

    assert_eq!(audit.orders, count, "one order per plan: {audit:?}");
    assert_eq!(audit.distinct, count, "no client order id twice: {audit:?}");
    assert!(
        audit.missing.is_empty() && audit.strangers.is_empty(),
        "{audit:?}"
    );
    let btc = exchange.position("BTCUSDT").await;
    let eth = exchange.position("ETHUSDT").await;
    assert_eq!(btc, BTC_LONG - closed(&plans, "BTCUSDT"));
    assert_eq!(eth, -ETH_SHORT + closed(&plans, "ETHUSDT"));
}

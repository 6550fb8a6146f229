//! Redis killed with SIGKILL in the middle of a stream of plans and restarted on the same
//! directory with the module, under `appendfsync always` and `everysec`, while the apply
//! worker keeps running behind a proxy that follows the server to its new port.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use reconcile_reliability::proxy::Proxy;
use reconcile_reliability::rig::{
    closed, engine_client, pending, set_holds, wait_for, with_users, Audit, Exchange, Plan,
    BTC_LONG, ETH_SHORT,
};
use reconcile_reliability::rng::{size, Rng};
use reconcile_reliability::worker::WorkerSpec;
use reconcile_tests::{Guarded, RedisServer, STREAM};

/// What one publisher got back before the server died.
struct Published {
    /// Plans whose entry ID came back, with that ID.
    acked: Vec<(Plan, String)>,
    /// The plan whose call failed, if any: it may or may not be in the stream.
    unknown: Option<Plan>,
}

/// Signs `plans` one by one, a little apart, until one call fails; counts in `progress`
/// how many were acknowledged.
fn publish_until_failure(
    port: u16,
    plans: Vec<Plan>,
    progress: Arc<AtomicUsize>,
) -> thread::JoinHandle<Published> {
    thread::spawn(move || {
        let mut engine = engine_client(port);
        let mut acked = Vec::new();
        for plan in plans {
            match plan.sign(&mut engine) {
                Ok(value) => {
                    let id = reconcile_tests::reply::text(&value).expect("an entry ID");
                    acked.push((plan, id));
                    progress.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => {
                    return Published {
                        acked,
                        unknown: Some(plan),
                    }
                }
            }
            thread::sleep(Duration::from_millis(2));
        }
        Published {
            acked,
            unknown: None,
        }
    })
}

/// Figures of one run, for the assertions that differ between fsync policies.
struct Run {
    /// Acknowledged plans whose entry was not in the stream after the restart.
    lost: Vec<String>,
    /// Plans executed before their entry was lost (only possible when entries are lost).
    executed_then_lost: usize,
}

async fn kill_redis_mid_stream(fsync: &str) -> Run {
    let test = format!("aof-{fsync}");
    let mut rng = Rng::for_test(&test);
    let count = size(200, 1000);
    let restarts = size(1, 3);
    let Guarded {
        keyring: _keyring,
        server,
        ..
    } = Guarded::start_with(|o| with_users(o.appendonly().config("appendfsync", &[fsync])));
    let mut server: RedisServer = server;
    set_holds(&mut server.client());
    let exchange = Exchange::start().await;
    let proxy = Proxy::start(server.port()).await;
    let spec = WorkerSpec {
        redis_port: proxy.port(),
        exchange_url: exchange.base_url(),
        consumer: "apply-aof".to_string(),
        log: server.dir().path().join("apply.log"),
    };
    let worker = spec.start(server.port());
    // The group must be on disk before the first kill, or everysec could lose it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = Instant::now();

    let plans: Vec<Plan> = (0..count)
        .map(|n| Plan::nth(&test, n, rng.next_u64()))
        .collect();
    let per_round = count / (restarts + 1);
    let mut expected: Vec<Plan> = Vec::new();
    let mut attempted: Vec<Plan> = Vec::new();
    let mut lost = Vec::new();
    let mut remaining = plans;
    for round in 0..restarts {
        let progress = Arc::new(AtomicUsize::new(0));
        let publisher =
            publish_until_failure(server.port(), remaining.clone(), Arc::clone(&progress));
        // Somewhere in the middle of the round's plans, a moment after an acknowledgement.
        let kill_after = rng.between(per_round as u64 / 4, per_round as u64 * 3 / 4) as usize;
        while progress.load(Ordering::SeqCst) < kill_after {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_micros(rng.between(0, 2000))).await;
        let options = server.kill();
        let published = publisher.join().expect("publisher");
        let sent = published.acked.len() + usize::from(published.unknown.is_some());
        remaining.drain(..sent);
        server = options.start();
        proxy.retarget(server.port());

        let mut admin = server.client();
        let ids: BTreeSet<String> = admin.xrange(STREAM).into_iter().map(|e| e.id).collect();
        for (plan, id) in &published.acked {
            if ids.contains(id) {
                assert_eq!(admin.verify(STREAM, id), "OK", "{id} after restart");
                expected.push(plan.clone());
            } else {
                lost.push(plan.plan_id.clone());
            }
            attempted.push(plan.clone());
        }
        println!(
            "{test}: round {round}: {} acknowledged, {} lost so far, call in flight: {}",
            published.acked.len(),
            lost.len(),
            published.unknown.is_some()
        );
        // The plan in flight when the server died may have been written or not; either is
        // fine, as long as it is executed at most once.
        attempted.extend(published.unknown);
    }
    let mut engine = engine_client(server.port());
    for plan in &remaining {
        plan.publish(&mut engine);
        expected.push(plan.clone());
        attempted.push(plan.clone());
    }

    // Every plan in the stream gets its order; then a moment more, so that a second order
    // would have had its chance.
    let limit = Duration::from_secs(size(40, 240) as u64);
    let mut admin = server.client();
    let done = wait_for(limit, || {
        let orders = futures_free_orders(&exchange);
        Audit::of(&expected, &orders).missing.is_empty() && pending(&mut admin) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elapsed = started.elapsed();
    drop(worker);

    let orders = exchange.close_orders().await;
    let audit = Audit::of(&attempted, &orders);
    let in_stream = Audit::of(&expected, &orders);
    println!(
        "{test}: {count} plans, {restarts} kills of redis, {} acknowledged lost, {} orders, \
         {:.1}s",
        lost.len(),
        audit.orders,
        elapsed.as_secs_f64()
    );
    assert!(done, "not every plan in the stream executed: {in_stream:?}");
    assert_eq!(
        audit.orders, audit.distinct,
        "a plan executed twice: {audit:?}"
    );
    assert!(audit.strangers.is_empty(), "{audit:?}");
    assert!(in_stream.missing.is_empty(), "{in_stream:?}");

    let executed: Vec<Plan> = attempted
        .iter()
        .filter(|p| !audit.missing.contains(&p.plan_id))
        .cloned()
        .collect();
    let in_final_stream: BTreeSet<String> = admin
        .xrange(STREAM)
        .iter()
        .filter_map(|e| e.get("plan_id"))
        .collect();
    let btc = exchange.position("BTCUSDT").await;
    let eth = exchange.position("ETHUSDT").await;
    assert_eq!(btc, BTC_LONG - closed(&executed, "BTCUSDT"));
    assert_eq!(eth, -ETH_SHORT + closed(&executed, "ETHUSDT"));
    Run {
        executed_then_lost: executed
            .iter()
            .filter(|p| !in_final_stream.contains(&p.plan_id))
            .count(),
        lost,
    }
}

/// The exchange's orders, read from a blocking context inside the runtime.
fn futures_free_orders(exchange: &Exchange) -> Vec<reconcile_exchange::Order> {
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(exchange.close_orders())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aof_always_loses_no_acknowledged_plan_and_executes_none_twice() {
    let run = kill_redis_mid_stream("always").await;
    assert!(
        run.lost.is_empty(),
        "acknowledged plans lost: {:?}",
        run.lost
    );
    assert_eq!(run.executed_then_lost, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aof_everysec_executes_no_plan_twice() {
    let run = kill_redis_mid_stream("everysec").await;
    // A killed process leaves its writes in the page cache, so only a host crash loses the
    // last second here; what this run asserts is inside it: nothing executed twice.
    println!(
        "aof-everysec: {} acknowledged plans lost, {} executed before their entry was lost",
        run.lost.len(),
        run.executed_then_lost
    );
}

//! The exchange misbehaving under a running apply worker: down for a long time, rate limiting
//! with `Retry-After`, and a clock that is skewed or keeps changing. In each, every plan is
//! executed exactly once, the worker's requests follow what the exchange asked of it, and the
//! alert rules fire on the series the worker exported during the fault.
//!
//! The worker reaches the paper exchange over HTTP; the paper exchange's request log says
//! when each request arrived and what it was answered.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reconcile_exchange::host_now_ms;
use reconcile_exchange::paper::{FaultKind, Faults, QueuedFault, RequestRecord};
use reconcile_reliability::alerts::{promtool_test, Expect, Scrapes, APPLY_JOB};
use reconcile_reliability::proxy::Proxy;
use reconcile_reliability::rig::{
    closed, create_users, engine_client, pending, Audit, Exchange, Plan, BTC_LONG, ETH_SHORT,
    RESULT_STREAM,
};
use reconcile_reliability::rng::{long_form, size, Rng};
use reconcile_reliability::worker::{free_port, most_retry_passes, WorkerProcess, WorkerSpec};
use reconcile_tests::{Client as RedisClient, Guarded};

const RETRIES: &str = "reconcile_close_retry_total";
const EXCHANGE_RETRIES: &str = "reconcile_close_retry_total{cause=\"exchange\"}";
const TIMESTAMP_REFUSED: i64 = -1021;

/// Redis with the users and HOLD leases, the paper exchange with its positions, and the
/// signing connection.
struct Rig {
    redis: Guarded,
    admin: RedisClient,
    engine: RedisClient,
    exchange: Exchange,
}

impl Rig {
    async fn start() -> Rig {
        let redis = Guarded::start();
        let mut admin = redis.client();
        create_users(&mut admin);
        let engine = engine_client(redis.server.port());
        let exchange = Exchange::start().await;
        Rig {
            redis,
            admin,
            engine,
            exchange,
        }
    }

    /// Starts a worker that reaches the exchange at `exchange_url`, with its metrics on a
    /// port of its own and `flags` over the defaults. Returns it and its metrics address.
    fn worker(
        &self,
        name: &str,
        exchange_url: String,
        flags: &[(&str, &str)],
    ) -> (WorkerProcess, SocketAddr) {
        let port = self.redis.server.port();
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let spec = WorkerSpec {
            redis_port: port,
            exchange_url,
            consumer: name.to_string(),
            log: self.redis.server.dir().path().join(format!("{name}.log")),
        };
        let addr = metrics.to_string();
        let mut all = vec![("--metrics-addr", addr.as_str())];
        all.extend_from_slice(flags);
        (spec.start_with(port, &all), metrics)
    }

    fn publish(&mut self, plans: &[Plan]) {
        for plan in plans {
            plan.publish(&mut self.engine);
        }
    }

    /// Whether every plan has a `success` result and nothing is pending.
    fn all_done(&mut self, plans: &[Plan]) -> bool {
        let wanted: BTreeSet<&str> = plans.iter().map(|p| p.plan_id.as_str()).collect();
        let done: BTreeSet<String> = self
            .admin
            .xrange(RESULT_STREAM)
            .iter()
            .filter(|r| r.get("status").as_deref() == Some("success"))
            .filter_map(|r| r.get("plan_id"))
            .filter(|id| wanted.contains(id.as_str()))
            .collect();
        done.len() == wanted.len() && pending(&mut self.admin) == 0
    }

    /// Waits up to `limit` until every plan is done, scraping every `every` meanwhile.
    async fn settle(
        &mut self,
        plans: &[Plan],
        limit: Duration,
        scrapes: &mut Scrapes,
        every: Duration,
    ) -> bool {
        let until = Instant::now() + limit;
        let mut next_scrape = Instant::now();
        while Instant::now() < until {
            if self.all_done(plans) {
                return true;
            }
            if Instant::now() >= next_scrape {
                scrapes.take().await;
                next_scrape += every;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.all_done(plans)
    }

    async fn set_faults(&self, faults: Faults) {
        let control = self.exchange.paper.control();
        control.set_faults(&faults).await.expect("setting faults");
    }

    async fn requests(&self) -> Vec<RequestRecord> {
        let control = self.exchange.paper.control();
        control.requests().await.expect("paper request log")
    }

    /// The exactly-once audit of `plans` against the exchange's whole book and positions.
    async fn assert_executed_once(&self, plans: &[Plan]) {
        let orders = self.exchange.close_orders().await;
        let audit = Audit::of(plans, &orders);
        assert_eq!(audit.orders, plans.len(), "one order per plan: {audit:?}");
        assert_eq!(
            audit.distinct,
            plans.len(),
            "no client order id twice: {audit:?}"
        );
        assert!(
            audit.missing.is_empty() && audit.strangers.is_empty(),
            "{audit:?}"
        );
        let btc = self.exchange.position("BTCUSDT").await;
        let eth = self.exchange.position("ETHUSDT").await;
        assert_eq!(btc, BTC_LONG - closed(plans, "BTCUSDT"));
        assert_eq!(eth, -ETH_SHORT + closed(plans, "ETHUSDT"));
    }
}

/// Scrapes every `every` until `span` has passed, publishing a share of `plans` before each
/// scrape, so that plans keep arriving throughout; returns the index of the last scrape.
async fn spread(
    rig: &mut Rig,
    plans: &[Plan],
    scrapes: &mut Scrapes,
    span: Duration,
    every: Duration,
) -> usize {
    let start = Instant::now();
    let ticks = (span.as_millis() / every.as_millis().max(1)).max(1) as usize;
    let mut last = 0;
    for tick in 0..ticks {
        tokio::time::sleep_until((start + every * tick as u32).into()).await;
        rig.publish(&plans[tick * plans.len() / ticks..(tick + 1) * plans.len() / ticks]);
        last = scrapes.take().await;
    }
    tokio::time::sleep_until((start + span).into()).await;
    last
}

fn plans(run: &str, range: std::ops::Range<usize>, rng: &mut Rng) -> Vec<Plan> {
    range.map(|n| Plan::nth(run, n, rng.next_u64())).collect()
}

fn labels<'a>(scrapes: &'a Scrapes, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("job", APPLY_JOB), ("instance", scrapes.instance())];
    all.extend_from_slice(extra);
    all
}

/// Runs the alert rules over `scrapes`: at `quiet_at`, before the fault, neither alert; at
/// `fault_end`, both, the retry alert for cause `exchange`.
fn assert_fault_alerts(
    dir: &std::path::Path,
    scrapes: &Scrapes,
    quiet_at: usize,
    fault_end: usize,
) {
    // The rules need five minutes of the condition: the fault must span enough scrapes.
    assert!(
        fault_end >= quiet_at + 8,
        "only {} scrapes during the fault",
        fault_end - quiet_at
    );
    let expected = [
        Expect::quiet(quiet_at, "ReconcileApplyRetrying"),
        Expect::quiet(quiet_at, "ReconcileApplyStalled"),
        Expect::firing(
            fault_end,
            "ReconcileApplyRetrying",
            &labels(scrapes, &[("cause", "exchange"), ("severity", "warning")]),
        ),
        Expect::firing(
            fault_end,
            "ReconcileApplyStalled",
            &[("severity", "critical")],
        ),
    ];
    match promtool_test(dir, scrapes, &expected) {
        Ok(_) => {}
        Err(said) => panic!("the alerts did not fire as expected on the scraped series:\n{said}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_down_for_long_then_back_executes_every_plan_once_after_backing_off() {
    let mut rng = Rng::for_test("outage");
    let count = size(20, 200);
    let refused_for = Duration::from_secs(size(3, 120) as u64);
    let unavailable_for = Duration::from_secs(size(3, 60) as u64);
    let retry_max = Duration::from_secs(size(2, 30) as u64);
    let every = Duration::from_millis(size(400, 5000) as u64);
    let claim_idle = Duration::from_secs(60);
    let mut rig = Rig::start().await;
    // The worker reaches the exchange through a forwarder that can stop listening.
    let gate = Proxy::start(rig.exchange.paper.addr().port()).await;
    let retry_flag = format!("{}s", retry_max.as_secs());
    let claim_flag = format!("{}s", claim_idle.as_secs());
    let (worker, metrics) = rig.worker(
        "apply-outage",
        format!("http://127.0.0.1:{}", gate.port()),
        &[("--retry-max", &retry_flag), ("--claim-idle", &claim_flag)],
    );
    let mut scrapes = Scrapes::new(metrics);
    let quiet_at = spread(&mut rig, &[], &mut scrapes, every * 3, every).await;
    let plans = plans("outage", 0..count, &mut rng);

    // Down: connections refused. Plans keep arriving meanwhile.
    gate.refuse().await;
    let fault_start = scrapes.take().await;
    let outage_started = Instant::now();
    let half = count / 2;
    spread(&mut rig, &plans[..half], &mut scrapes, refused_for, every).await;

    // Still down, but answering: 503 to every request.
    rig.set_faults(Faults {
        always: Some(FaultKind::Http503),
        ..Faults::default()
    })
    .await;
    let unavailable_from = host_now_ms();
    gate.listen_again().await;
    spread(
        &mut rig,
        &plans[half..],
        &mut scrapes,
        unavailable_for,
        every,
    )
    .await;
    // A last scrape as the outage ends, a while after the last plan arrived.
    let fault_end = scrapes.take().await;
    let outage = outage_started.elapsed();
    rig.set_faults(Faults::default()).await;
    let unavailable_until = host_now_ms();

    let recovered = Instant::now();
    let limit = retry_max * 2 + Duration::from_secs(size(30, 120) as u64);
    let settled = rig.settle(&plans, limit, &mut scrapes, every).await;
    let recovery = recovered.elapsed();
    drop(worker);

    let attempts = scrapes.total(fault_end, RETRIES) - scrapes.total(fault_start, RETRIES);
    let failed = scrapes.value(fault_end, EXCHANGE_RETRIES).unwrap_or(0.0);
    let passes = most_retry_passes(outage, retry_max, claim_idle);
    let bound = count as u64 * (1 + passes);
    let log = rig.requests().await;
    let during_503: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| r.arrived_ms >= unavailable_from && r.arrived_ms < unavailable_until)
        .collect();
    println!(
        "outage: {count} plans, refused {}s then 503 {}s, --retry-max {retry_flag}: \
         {attempts} attempts during the outage (schedule allows {bound}, {passes} passes), \
         {} requests answered 503, recovered in {:.1}s",
        refused_for.as_secs(),
        unavailable_for.as_secs(),
        during_503.len(),
        recovery.as_secs_f64()
    );
    assert!(
        settled,
        "not every plan executed after the exchange came back"
    );
    rig.assert_executed_once(&plans).await;

    // Backoff, not a hot loop: each plan is tried when read, then once per pass over the
    // pending plans, and the passes follow the retry schedule.
    assert!(attempts >= count as f64, "every plan was tried and failed");
    assert!(
        attempts <= bound as f64,
        "{attempts} attempts in {outage:?}, the schedule allows {bound}"
    );
    assert!(
        failed >= count as f64,
        "the failures show under cause exchange"
    );
    // Every attempt while the exchange answered 503 ended at its first reads: the position
    // rows and the order lookup made beside them, with the position mode when its reading
    // had aged.
    assert!(
        !during_503.is_empty(),
        "the worker kept trying while answered 503"
    );
    assert!(during_503.iter().all(|r| r.status == 503));
    let passes_503 = most_retry_passes(unavailable_for, retry_max, claim_idle);
    assert!(
        during_503.len() as u64 <= 3 * count as u64 * (1 + passes_503),
        "{} requests in {unavailable_for:?} of 503",
        during_503.len()
    );

    assert_fault_alerts(rig.redis.server.dir().path(), &scrapes, quiet_at, fault_end);
}

/// How long after an answer a request may still arrive that the client sent before it had that
/// answer: the order lookup goes out when the plan's claim is written, which can be just after
/// the exchange answered the position read beside it, and before the worker has read that
/// answer. A client that ignored the pause would go on sending for the whole of it.
const IN_FLIGHT_MS: i64 = 50;

/// Requests that arrived after an answer with `Retry-After` and before that pause was over.
/// The worker runs with one lane and a cached position mode, so at most two of its requests
/// are in flight at once (a plan's position read and its order lookup); a request that arrived
/// within [`IN_FLIGHT_MS`] of the answer may have been sent before the client had it.
fn retry_after_violations(log: &[RequestRecord]) -> Vec<String> {
    let mut violations = Vec::new();
    for (i, limited) in log.iter().enumerate() {
        let Some(seconds) = limited.retry_after_s.filter(|s| *s > 0) else {
            continue;
        };
        let pause_end = limited.answered_ms + 1000 * seconds as i64;
        let inside = |r: &&RequestRecord| {
            r.arrived_ms > limited.answered_ms + IN_FLIGHT_MS && r.arrived_ms < pause_end
        };
        for early in log[i + 1..].iter().filter(inside) {
            violations.push(format!(
                "{} {} at {} during the {seconds}s pause of the {} answered at {}",
                early.method, early.path, early.arrived_ms, limited.status, limited.answered_ms
            ));
        }
    }
    violations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_worker_waits_out_retry_after_and_orders_once() {
    let mut rng = Rng::for_test("rate-limit");
    let count = size(12, 200);
    let (limit_429_s, limited_429_for) = (size(1, 5) as u64, size(3, 60) as u64);
    let (ban_418_s, banned_for) = (size(2, 30) as u64, size(4, 120) as u64);
    let every = Duration::from_millis(size(400, 5000) as u64);
    let mut rig = Rig::start().await;
    let url = rig.exchange.base_url();
    let (worker, metrics) = rig.worker(
        "apply-limited",
        url,
        &[("--concurrency", "1"), ("--mode-max-age", "1h")],
    );
    let all = plans("limited", 0..count, &mut rng);
    let third = count / 3;
    let mut scrapes = Scrapes::new(metrics);
    let quiet_at = spread(&mut rig, &[], &mut scrapes, every * 3, every).await;

    // Over the limit: every request is refused with 429, then the address is banned (418).
    let limited = |status, retry_after_s| Faults {
        always: Some(FaultKind::RateLimited {
            status,
            retry_after_s,
        }),
        ..Faults::default()
    };
    rig.set_faults(limited(429, limit_429_s)).await;
    let started = Instant::now();
    let span = Duration::from_secs(limited_429_for);
    spread(&mut rig, &all[..third], &mut scrapes, span, every).await;
    rig.set_faults(limited(418, ban_418_s)).await;
    let span = Duration::from_secs(banned_for);
    spread(&mut rig, &all[third..2 * third], &mut scrapes, span, every).await;
    let fault_end = scrapes.take().await;
    rig.set_faults(Faults::default()).await;
    let limit = Duration::from_secs(size(30, 120) as u64);
    let first_done = rig
        .settle(&all[..2 * third], limit, &mut scrapes, every)
        .await;

    // One order refused with 429 after its plan was claimed, and one position read banned.
    let queue = vec![
        QueuedFault::on_place_order(FaultKind::RateLimited {
            status: 429,
            retry_after_s: limit_429_s,
        }),
        QueuedFault {
            path: Some("/fapi/v2/positionRisk".into()),
            ..QueuedFault::on_any(FaultKind::RateLimited {
                status: 418,
                retry_after_s: ban_418_s,
            })
        },
    ];
    rig.set_faults(Faults {
        queue,
        ..Faults::default()
    })
    .await;
    rig.publish(&all[2 * third..]);
    let all_done = rig.settle(&all, limit, &mut scrapes, every).await;
    let elapsed = started.elapsed();
    drop(worker);

    let log = rig.requests().await;
    let answered = |status| log.iter().filter(|r| r.status == status).count();
    let violations = retry_after_violations(&log);
    let queued_left = rig
        .exchange
        .paper
        .control()
        .state()
        .await
        .unwrap()
        .faults
        .queue;
    println!(
        "rate-limit: {count} plans, {} requests, {} answered 429 (Retry-After {limit_429_s}s), \
         {} answered 418 (Retry-After {ban_418_s}s), {} sent too early, {:.1}s",
        log.len(),
        answered(429),
        answered(418),
        violations.len(),
        elapsed.as_secs_f64()
    );
    assert!(first_done && all_done, "not every plan executed");
    rig.assert_executed_once(&all).await;
    assert!(queued_left.is_empty(), "a queued rate limit was never met");
    assert!(answered(429) >= 2 && answered(418) >= 2);
    assert!(violations.is_empty(), "{violations:#?}");

    assert_fault_alerts(rig.redis.server.dir().path(), &scrapes, quiet_at, fault_end);
}

/// Requests refused for their timestamp among `log[from..]`, and whether a clock reading
/// (`GET /fapi/v1/time`) followed the first of them.
fn timestamp_refusals(log: &[RequestRecord], from: usize) -> (usize, bool) {
    let tail = &log[from.min(log.len())..];
    let refused = tail.iter().filter(|r| r.code == Some(TIMESTAMP_REFUSED));
    let first = tail.iter().position(|r| r.code == Some(TIMESTAMP_REFUSED));
    let resynced = first.is_some_and(|i| tail[i..].iter().any(|r| r.path == "/fapi/v1/time"));
    (refused.count(), resynced)
}

/// The most requests one skew change can have refused before the worker resyncs: up to two
/// lanes (one per symbol) each with up to two requests in flight, the position rows and the
/// position mode.
const REFUSALS_PER_CHANGE: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_and_changing_exchange_clock_is_resynced_and_orders_go_through_once() {
    let mut rng = Rng::for_test("clock-skew");
    // Beyond the 5 s receive window behind, beyond the 1 s allowed ahead, and back.
    let skews: Vec<i64> = if long_form() {
        vec![10_000, -3_000, 90_000, -60_000, 7_000, -1_500, 3_600_000, 0]
    } else {
        vec![10_000, -3_000, 90_000, 0]
    };
    let per_round = size(4, 20);
    let drifting = size(8, 40);
    let drift_for = Duration::from_secs(size(4, 60) as u64);
    let mut rig = Rig::start().await;
    let url = rig.exchange.base_url();
    let (worker, metrics) = rig.worker("apply-skew", url, &[]);
    let mut scrapes = Scrapes::new(metrics);
    let started = Instant::now();

    // A skew set while the worker is idle: its next requests are refused until it resyncs.
    let mut executed: Vec<Plan> = Vec::new();
    let mut refusals = Vec::new();
    for (round, skew) in skews.iter().enumerate() {
        let before = rig.requests().await.len();
        rig.set_faults(Faults {
            clock_skew_ms: *skew,
            ..Faults::default()
        })
        .await;
        let from = round * per_round;
        let batch = plans("skew", from..from + per_round, &mut rng);
        rig.publish(&batch);
        executed.extend(batch);
        let limit = Duration::from_secs(30);
        let done = rig
            .settle(&executed, limit, &mut scrapes, Duration::from_secs(1))
            .await;
        assert!(done, "round {round} with skew {skew} ms did not finish");
        let (refused, resynced) = timestamp_refusals(&rig.requests().await, before);
        refusals.push(refused);
        assert!(refused >= 1, "skew {skew} ms was never noticed");
        assert!(
            resynced,
            "no clock reading after the refusal at skew {skew} ms"
        );
        assert!(
            refused <= REFUSALS_PER_CHANGE,
            "{refused} refusals at skew {skew} ms"
        );
    }
    // The client absorbed every change: no plan was left pending because of the clock.
    let index = scrapes.take().await;
    assert_eq!(
        scrapes.total(index, RETRIES),
        0.0,
        "plans retried for the clock"
    );

    // The skew keeps changing while plans are in flight.
    let from = skews.len() * per_round;
    let batch = plans("skew-drift", from..from + drifting, &mut rng);
    let changes = (drift_for.as_millis() / 250) as usize;
    let pause = drift_for / batch.len() as u32;
    let control = rig.exchange.paper.control();
    let drift = tokio::spawn(async move {
        for _ in 0..changes {
            let skew = rng.between(0, 240_000) as i64 - 120_000;
            let faults = Faults {
                clock_skew_ms: skew,
                ..Faults::default()
            };
            control.set_faults(&faults).await.expect("setting the skew");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    for plan in &batch {
        plan.publish(&mut rig.engine);
        tokio::time::sleep(pause).await;
    }
    drift.await.expect("drifting clock");
    let after_last_change = rig.requests().await.len();
    executed.extend(batch);
    let limit = Duration::from_secs(size(60, 180) as u64);
    let done = rig
        .settle(&executed, limit, &mut scrapes, Duration::from_secs(1))
        .await;
    let elapsed = started.elapsed();
    let index = scrapes.take().await;
    drop(worker);

    let log = rig.requests().await;
    let (refused_in_all, _) = timestamp_refusals(&log, 0);
    let (refused_after, _) = timestamp_refusals(&log, after_last_change);
    println!(
        "clock-skew: {} plans over skews {skews:?} ms ({refusals:?} refusals), then {drifting} \
         plans over {changes} changes: {} refusals in all, {refused_after} after the last \
         change, {} attempts left a plan pending, {:.1}s",
        executed.len(),
        refused_in_all,
        scrapes.total(index, RETRIES),
        elapsed.as_secs_f64()
    );
    assert!(done, "not every plan executed under a changing clock");
    rig.assert_executed_once(&executed).await;
    assert!(refused_after <= REFUSALS_PER_CHANGE);
}

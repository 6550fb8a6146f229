//! The apply worker against a real redis-server with the signing module and an in-process
//! paper exchange. The worker always connects as the least-privilege ACL user `apply`.

mod common;

use common::{
    assert_status, eventually, metric, plan, scrape, with, Harness, BTC_HOLD, BTC_LONG, CONSUMER,
    ETH_SHORT, GROUP,
};
use reconcile_exchange::paper::{FaultKind, Faults, QueuedFault};
use reconcile_exchange::{ClientOrderId, ClosePlan, PositionMode, Side};
use reconcile_tests::{quarantine_of, STREAM};
use rust_decimal::dec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_plan_closes_once_and_renews_the_hold() {
    let mut harness = Harness::start().await;
    let worker = harness.spawn(harness.config()).await;

    harness.publish(&plan("p:ok", "BTCUSDT", "SELL", "0.02"));
    let result = harness.wait_result_of("p:ok").await;
    assert_status(&result, "success");

    let orders = harness.orders_of("p:ok").await;
    assert_eq!(orders.len(), 1);
    assert!(orders[0].reduce_only);
    assert_eq!(result.get("order_id"), Some(orders[0].order_id.to_string()));
    assert_eq!(harness.position("BTCUSDT").await, BTC_LONG - dec!(0.02));
    let record = harness.admin.text(&["GET", "quantum:apply:dedupe:p:ok"]);
    assert_eq!(record, format!("done success {}", orders[0].order_id));
    let dedupe_ttl = harness.admin.int(&["TTL", "quantum:apply:dedupe:p:ok"]);
    assert!(dedupe_ttl > 86_000, "dedupe ttl {dedupe_ttl}");
    // The setup gave the lease 100 s; a renewal sets it to 900 s.
    assert!(harness.admin.int(&["TTL", BTC_HOLD]) > 100);
    assert_eq!(harness.pending(), 0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invariant_failure_is_recorded_under_its_rule_and_never_sent() {
    let mut harness = Harness::start().await;
    // The results are read by position, which follows the stream only when one plan is
    // worked on at a time; with symbols side by side, the ETHUSDT plan may finish later.
    let mut config = harness.config();
    config.concurrency = 1;
    let worker = harness.spawn(config).await;

    let old = (reconcile_exchange::host_now_ms() - 600_000).to_string();
    let good = |id: &str| plan(id, "BTCUSDT", "SELL", "0.01");
    let cases = [
        (
            "decision",
            with(good("r:decision"), "decision", Some("OPEN")),
        ),
        ("source", with(good("r:source"), "source", Some("manual"))),
        ("reason", with(good("r:reason"), "reason", Some("because"))),
        ("type", with(good("r:type"), "type", Some("LIMIT"))),
        (
            "reduce_only",
            with(good("r:reduce"), "reduceOnly", Some("false")),
        ),
        ("qty", with(good("r:qty"), "qty", Some("-0.01"))),
        ("max_qty", with(good("r:max"), "qty", Some("0.6"))),
        ("age", with(good("r:age"), "ts", Some(&old))),
        // A long position is closed by SELL; BUY would grow it.
        ("side", plan("r:side", "BTCUSDT", "BUY", "0.01")),
        ("position", plan("r:position", "BTCUSDT", "SELL", "0.06")),
        // ETHUSDT has a position but no HOLD lease.
        ("hold", plan("r:hold", "ETHUSDT", "BUY", "0.5")),
        ("parse", with(good("r:parse"), "plan_id", None)),
    ];
    for (_, fields) in &cases {
        harness.publish(fields);
    }
    harness.publish(&good("r:valid"));

    let results = harness.wait_results(cases.len() + 1).await;
    for (i, (rule, _)) in cases.iter().enumerate() {
        assert_eq!(
            results[i].get("status").as_deref(),
            Some("refused"),
            "{rule}"
        );
        assert_eq!(
            results[i].get("rule").as_deref(),
            Some(*rule),
            "{:?}",
            results[i]
        );
        assert_eq!(results[i].get("order_id"), None, "{rule}");
    }
    let last = &results[cases.len()];
    assert_eq!(last.get("plan_id").as_deref(), Some("r:valid"));
    assert_eq!(last.get("status").as_deref(), Some("success"));
    assert_eq!(
        harness.close_orders().await.len(),
        1,
        "only the valid plan was sent"
    );
    assert_eq!(harness.pending(), 0);
    // A plan refused on its own fields is never claimed; one refused against the position or
    // the HOLD lease was claimed with its first read, and its record says it is done.
    assert_eq!(
        harness.admin.int(&["EXISTS", "quantum:apply:dedupe:r:qty"]),
        0,
        "a plan refused on its fields writes no dedupe record"
    );
    for plan_id in ["r:side", "r:position", "r:hold"] {
        assert_eq!(
            harness
                .admin
                .text(&["GET", &format!("quantum:apply:dedupe:{plan_id}")]),
            "done refused -",
            "{plan_id}"
        );
    }

    let metrics = scrape(worker.metrics_addr()).await;
    for (rule, _) in &cases {
        let symbol = if *rule == "hold" {
            "ETHUSDT"
        } else {
            "BTCUSDT"
        };
        let line = format!(
            "reconcile_close_guardrail_fail_total{{rule=\"{rule}\",symbol=\"{symbol}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_between_order_and_acknowledgement_then_restart_sends_no_second_order() {
    let mut harness = Harness::start().await;
    let first = harness.spawn(harness.config()).await;
    // The order executes, its answer is held back, and lookups deny it for a while, as the
    // exchange may while it finishes an order whose answer was lost.
    let delayed = QueuedFault::on_place_order(FaultKind::Delay { ms: 60_000 }).hidden_for(200);
    harness.inject(vec![delayed]).await;

    harness.publish(&plan("k:1", "BTCUSDT", "SELL", "0.01"));
    let placed = eventually(|| {
        let harness = &harness;
        async move { (harness.orders_of("k:1").await.len() == 1).then_some(()) }
    });
    assert!(placed.await.is_some(), "the order was never placed");
    first.running.kill();
    drop(first.trigger);

    assert_eq!(harness.pending(), 1, "the entry must still be pending");
    let record = harness.admin.text(&["GET", "quantum:apply:dedupe:k:1"]);
    assert!(
        record.starts_with(&format!("executing {CONSUMER} ")),
        "{record}"
    );
    assert!(harness.results().is_empty());

    let second = harness.spawn(harness.config()).await;
    let result = harness.wait_result_of("k:1").await;
    assert_status(&result, "success");
    assert_eq!(result.get("found_by_lookup").as_deref(), Some("true"));
    assert_eq!(harness.orders_of("k:1").await.len(), 1);
    assert_eq!(harness.position("BTCUSDT").await, BTC_LONG - dec!(0.01));
    assert_eq!(harness.pending(), 0);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_faults_give_exactly_one_order_each() {
    let mut harness = Harness::start().await;
    let worker = harness.spawn(harness.config()).await;
    let lookup = |kind| QueuedFault {
        kind,
        path: Some("/fapi/v1/order".into()),
        method: Some("GET".into()),
        hidden_ms: 0,
    };
    let cases = [
        (
            "f:drop",
            vec![QueuedFault::on_place_order(FaultKind::DropAfterApply)],
        ),
        (
            "f:503",
            vec![QueuedFault::on_place_order(FaultKind::Http503)],
        ),
        (
            "f:503-applied",
            vec![QueuedFault::on_place_order(FaultKind::Http503AfterApply)],
        ),
        (
            "f:1007",
            vec![QueuedFault::on_place_order(FaultKind::Timeout1007)],
        ),
        (
            "f:1007-applied",
            vec![QueuedFault::on_place_order(
                FaultKind::Timeout1007AfterApply,
            )],
        ),
        (
            "f:429",
            vec![QueuedFault::on_place_order(FaultKind::RateLimit429)],
        ),
        // Every lookup after the lost answer fails, so the close ends with an unknown outcome
        // and the worker must settle it on a later attempt.
        (
            "f:unknown",
            vec![
                lookup(FaultKind::Delay { ms: 0 }),
                QueuedFault::on_place_order(FaultKind::DropAfterApply),
                lookup(FaultKind::Http503),
                lookup(FaultKind::Http503),
                lookup(FaultKind::Http503),
                lookup(FaultKind::Http503),
            ],
        ),
    ];
    for (plan_id, queue) in cases {
        harness.inject(queue).await;
        harness.publish(&plan(plan_id, "BTCUSDT", "SELL", "0.001"));
        let result = harness.wait_result_of(plan_id).await;
        assert_status(&result, "success");
        assert_eq!(harness.orders_of(plan_id).await.len(), 1, "{plan_id}");
    }
    assert_eq!(harness.close_orders().await.len(), 7);
    assert_eq!(harness.position("BTCUSDT").await, BTC_LONG - dec!(0.007));
    assert_eq!(harness.pending(), 0);

    let metrics = scrape(worker.metrics_addr()).await;
    assert!(
        metrics.contains("reconcile_close_retry_total{cause=\"exchange\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("reconcile_close_retry_total{cause=\"unknown_outcome\"}"),
        "{metrics}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_held_by_an_exchange_outage_is_served_as_pending_until_it_settles() {
    let mut harness = Harness::start().await;
    let worker = harness.spawn(harness.config()).await;
    let addr = worker.metrics_addr();
    harness.exchange_down(true).await;
    harness.publish(&plan("o:1", "BTCUSDT", "SELL", "0.001"));

    let waiting = eventually(|| async move {
        let page = scrape(addr).await;
        let count = metric(&page, "reconcile_close_pending")?;
        let age = metric(&page, "reconcile_close_oldest_pending_seconds")?;
        (count == 1.0 && age >= 0.5).then_some(age)
    })
    .await;
    assert!(
        waiting.is_some(),
        "the held plan never showed as pending:\n{}",
        scrape(addr).await
    );
    assert_eq!(harness.pending(), 1);
    assert!(harness.close_orders().await.is_empty());

    harness.exchange_down(false).await;
    assert_status(&harness.wait_result_of("o:1").await, "success");
    let cleared = eventually(|| async move {
        let page = scrape(addr).await;
        let count = metric(&page, "reconcile_close_pending")?;
        let age = metric(&page, "reconcile_close_oldest_pending_seconds")?;
        (count == 0.0 && age == 0.0).then_some(())
    })
    .await;
    assert!(
        cleared.is_some(),
        "the settled plan still shows as pending:\n{}",
        scrape(addr).await
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_clock_offset_and_a_ban_are_served_as_gauges() {
    let mut harness = Harness::start().await;
    let skewed = Faults {
        clock_skew_ms: 2_500,
        ..Faults::default()
    };
    harness.paper.control().set_faults(&skewed).await.unwrap();
    let worker = harness.spawn(harness.config()).await;
    let addr = worker.metrics_addr();
    let page = scrape(addr).await;
    let offset = metric(&page, "reconcile_exchange_clock_offset_seconds");
    // The worker learned the offset at start; a loopback round trip blurs it by far less.
    assert!(
        offset.is_some_and(|seconds| (seconds - 2.5).abs() < 0.25),
        "{offset:?} in\n{page}"
    );
    assert_eq!(metric(&page, "reconcile_exchange_pause_seconds"), Some(0.0));

    let ban = QueuedFault::on_place_order(FaultKind::RateLimited {
        status: 418,
        retry_after_s: 120,
    });
    let banned = Faults {
        clock_skew_ms: 2_500,
        queue: vec![ban],
        ..Faults::default()
    };
    harness.paper.control().set_faults(&banned).await.unwrap();
    harness.publish(&plan("b:1", "BTCUSDT", "SELL", "0.001"));
    let pause = eventually(|| async move {
        let page = scrape(addr).await;
        metric(&page, "reconcile_exchange_pause_seconds").filter(|seconds| *seconds > 100.0)
    })
    .await;
    assert!(
        pause.is_some(),
        "the ban never showed:\n{}",
        scrape(addr).await
    );
    assert!(harness.close_orders().await.is_empty());
    assert_eq!(harness.pending(), 1);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_placed_under_a_lost_claim_is_found_and_not_sent_again() {
    let mut harness = Harness::start().await;
    // The plan's order executed, and its dedupe record was lost with Redis state: the worker
    // finds no record, claims the plan afresh, and must still not send a second order, even
    // though what is left of the position no longer covers the plan.
    let close = ClosePlan {
        plan_id: "l:1".into(),
        symbol: "BTCUSDT".into(),
        side: Side::Sell,
        quantity: dec!(0.03),
    };
    harness
        .exchange
        .close(&close, PositionMode::OneWay)
        .await
        .unwrap();
    let worker = harness.spawn(harness.config()).await;
    harness.publish(&plan("l:1", "BTCUSDT", "SELL", "0.03"));
    let result = harness.wait_result_of("l:1").await;
    assert_status(&result, "success");
    assert_eq!(result.get("found_by_lookup").as_deref(), Some("true"));
    assert_eq!(harness.orders_of("l:1").await.len(), 1);
    assert_eq!(harness.position("BTCUSDT").await, BTC_LONG - dec!(0.03));
    let record = harness.admin.text(&["GET", "quantum:apply:dedupe:l:1"]);
    assert!(record.starts_with("done success "), "{record}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_left_by_a_failed_read_is_resumed_at_once_by_its_worker_and_settled_after_a_restart()
{
    const ORDER: &str = "/fapi/v1/order";
    let position_down = || QueuedFault {
        kind: FaultKind::Http503,
        path: Some("/fapi/v2/positionRisk".into()),
        method: Some("GET".into()),
        hidden_ms: 0,
    };
    let mut harness = Harness::start().await;
    let mut config = harness.config();
    // Without the worker's note of its own claim, the retry would wait this long and then
    // look the order up.
    config.exchange_settle = std::time::Duration::from_secs(3);

    // The same worker: its first attempt claims the plan and fails on the position read; the
    // next one goes on under the claim without asking the exchange for an order.
    let worker = harness.spawn(config.clone()).await;
    harness.inject(vec![position_down()]).await;
    harness.publish(&plan("u:same", "BTCUSDT", "SELL", "0.001"));
    let result = harness.wait_result_of("u:same").await;
    assert_status(&result, "success");
    assert_eq!(harness.orders_of("u:same").await.len(), 1);
    // Each attempt looks the order up once, beside the position read; a claim waited out
    // would have added a lookup on every attempt until the settle window had passed.
    let lookups = harness.requests_to("GET", ORDER).await.len();
    assert_eq!(
        lookups, 2,
        "one lookup per attempt for a claim the worker knows it sent nothing under"
    );

    // A worker restarted meanwhile knows nothing of the claim: it looks the order up until the
    // settle window has passed, believes "no such order" then, and sends it once.
    harness.inject(vec![position_down(); 8]).await;
    harness.publish(&plan("u:restart", "BTCUSDT", "SELL", "0.001"));
    let claimed = eventually(|| {
        let mut admin = harness.fixture.client();
        async move {
            let record = admin
                .call(&["GET", "quantum:apply:dedupe:u:restart"])
                .ok()?;
            reconcile_tests::reply::text(&record)
        }
    })
    .await
    .expect("the first attempt claims the plan");
    assert!(claimed.starts_with("executing "), "{claimed}");
    worker.stop().await;
    assert!(harness.orders_of("u:restart").await.is_empty());

    harness.inject(Vec::new()).await;
    let worker = harness.spawn(config).await;
    let result = harness.wait_result_of("u:restart").await;
    assert_status(&result, "success");
    assert_eq!(harness.orders_of("u:restart").await.len(), 1);
    let restart_lookups = harness.requests_to("GET", ORDER).await.len() - lookups;
    assert!(
        restart_lookups >= 2,
        "the restarted worker looks the order up on each attempt until the settle window has \
         passed, and once more before it sends: {restart_lookups}"
    );
    assert_eq!(harness.pending(), 0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitive_rejection_is_recorded_once_and_not_retried() {
    let mut harness = Harness::start().await;
    let worker = harness.spawn(harness.config()).await;
    let margin = QueuedFault::on_place_order(FaultKind::MarginInsufficient2019);
    harness.inject(vec![margin]).await;

    harness.publish(&plan("d:1", "BTCUSDT", "SELL", "0.01"));
    let result = harness.wait_result_of("d:1").await;
    assert_status(&result, "rejected");
    assert!(harness.orders_of("d:1").await.is_empty());
    let record = harness.admin.text(&["GET", "quantum:apply:dedupe:d:1"]);
    assert_eq!(record, "done rejected -");
    assert_eq!(harness.pending(), 0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_records_what_it_would_send_and_sends_nothing() {
    let mut harness = Harness::start().await;
    let mut config = harness.config();
    config.dry_run = true;
    let worker = harness.spawn(config).await;
    let hold_ttl = harness.admin.int(&["TTL", BTC_HOLD]);

    harness.publish(&plan("dry:1", "BTCUSDT", "SELL", "0.0125"));
    let result = harness.wait_result_of("dry:1").await;
    assert_status(&result, "dry_run");
    assert_eq!(result.get("order_qty").as_deref(), Some("0.012"));
    let id = ClientOrderId::for_plan("dry:1").to_string();
    assert_eq!(result.get("client_order_id"), Some(id));

    assert!(harness.close_orders().await.is_empty());
    assert_eq!(harness.position("BTCUSDT").await, BTC_LONG);
    assert_eq!(
        harness.admin.int(&["EXISTS", "quantum:apply:dedupe:dry:1"]),
        0
    );
    assert!(harness.admin.int(&["TTL", BTC_HOLD]) <= hold_ttl);
    assert_eq!(harness.pending(), 0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_refused_and_retried_plans_do_not_stall_the_ones_behind() {
    let mut harness = Harness::start_forged().await;
    // The first send of the retried plan is refused for now.
    harness
        .inject(vec![QueuedFault::on_place_order(FaultKind::RateLimit429)])
        .await;
    harness.publish(&plan("s:retried", "BTCUSDT", "SELL", "0.01"));
    harness.publish(&with(
        plan("s:refused", "BTCUSDT", "SELL", "0.01"),
        "type",
        Some("LIMIT"),
    ));
    harness.publish(&plan("s:valid", "BTCUSDT", "SELL", "0.02"));
    let worker = harness.spawn(harness.config()).await;

    let valid = harness.wait_result_of("s:valid").await;
    assert_eq!(valid.get("status").as_deref(), Some("success"), "{valid:?}");
    let refused = harness.wait_result_of("s:refused").await;
    assert_eq!(refused.get("rule").as_deref(), Some("type"));
    let retried = harness.wait_result_of("s:retried").await;
    assert_eq!(
        retried.get("status").as_deref(),
        Some("success"),
        "{retried:?}"
    );

    let quarantined = harness.admin.xrange(&quarantine_of(STREAM));
    assert_eq!(
        quarantined.len(),
        harness.planted,
        "every forgery is quarantined"
    );
    assert_eq!(harness.results().len(), 3, "forgeries reach no result");
    assert_eq!(harness.close_orders().await.len(), 2);
    assert_eq!(harness.position("BTCUSDT").await, BTC_LONG - dec!(0.03));
    assert_eq!(harness.pending(), 0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_plan_published_twice_closes_once() {
    let mut harness = Harness::start().await;
    let worker = harness.spawn(harness.config()).await;

    let fields = plan("twice:1", "BTCUSDT", "SELL", "0.01");
    harness.publish(&fields);
    harness.publish(&fields);
    let results = harness.wait_results(2).await;
    let statuses: Vec<_> = results.iter().map(|r| r.get("status").unwrap()).collect();
    assert_eq!(statuses, ["success", "duplicate"]);
    assert_eq!(harness.orders_of("twice:1").await.len(), 1);
    assert_eq!(harness.position("BTCUSDT").await, BTC_LONG - dec!(0.01));

    let metrics = scrape(worker.metrics_addr()).await;
    assert!(
        metrics.contains("quantum_apply_dedupe_hits_total 1"),
        "{metrics}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_plans_of_a_dead_consumer_are_claimed_and_verified_again() {
    let mut harness = Harness::start().await;
    harness
        .admin
        .ok(&["XGROUP", "CREATE", STREAM, "apply_recon", "$", "MKSTREAM"]);
    harness.publish(&plan("dead:1", "BTCUSDT", "SELL", "0.01"));
    // Another consumer takes the plan and dies before doing anything with it.
    let taken = harness.admin.ok(&[
        "XREADGROUP",
        "GROUP",
        "apply_recon",
        "gone",
        "STREAMS",
        STREAM,
        ">",
    ]);
    assert_ne!(taken, redis::Value::Nil);
    let mut config = harness.config();
    config.claim_idle = std::time::Duration::from_millis(1);
    let worker = harness.spawn(config).await;

    let result = harness.wait_result_of("dead:1").await;
    assert_status(&result, "success");
    assert_eq!(result.get("consumer").as_deref(), Some(CONSUMER));
    assert_eq!(harness.orders_of("dead:1").await.len(), 1);
    assert_eq!(harness.pending(), 0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_the_dashboard_and_module_names() {
    let mut harness = Harness::start().await;
    let worker = harness.spawn(harness.config()).await;
    harness.publish(&plan("m:1", "BTCUSDT", "SELL", "0.01"));
    harness.wait_result_of("m:1").await;
    // A forgery attempt refused inside Redis must show in Prometheus.
    let refused = harness.admin.err(&["XADD", STREAM, "*", "qty", "100"]);
    assert_eq!(refused.code, "GUARDED");

    let addr = worker.metrics_addr();
    let metrics = eventually(|| async move {
        let metrics = scrape(addr).await;
        metrics
            .contains("reconcile_module_guard_denied_total 1")
            .then_some(metrics)
    })
    .await
    .expect("guard denial never reached the metrics");
    for line in [
        "reconcile_close_consumed_total{symbol=\"BTCUSDT\"} 1",
        "reconcile_close_executed_total{status=\"success\"} 1",
        "reconcile_close_guardrail_fail_total{rule=\"side\",symbol=\"BTCUSDT\"} 0",
        "quantum_apply_dedupe_hits_total 0",
        "reconcile_close_plan_to_order_seconds_count 1",
        "reconcile_module_signed_total 1",
        "reconcile_module_verified_total 1",
        "reconcile_module_rejected_total{reason=\"bad_mac\"} 0",
        "reconcile_module_up 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_user_cannot_write_plans_or_sign() {
    let harness = Harness::start().await;
    let mut apply = harness.fixture.client();
    apply.ok(&["AUTH", "apply", "pw-apply"]);
    let sign = apply.err(&["RECONCILE.XADDSIGNED", STREAM, "*", "qty", "1"]);
    assert_eq!(sign.code, "NOPERM", "{sign}");
    let other = apply.err(&["SET", "somewhere:else", "1"]);
    assert_eq!(other.code, "NOPERM", "{other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_of_one_symbol_stay_in_order_while_symbols_run_side_by_side() {
    let mut harness = Harness::start().await;
    harness
        .admin
        .ok(&["SET", "quantum:reconcile:hold:ETHUSDT", "1", "EX", "100"]);
    // The group exists before the plans, so that the worker gets them all in one read.
    harness
        .admin
        .ok(&["XGROUP", "CREATE", STREAM, GROUP, "$", "MKSTREAM"]);
    // Each symbol's second plan fits the position only if the first has not closed yet; the
    // third closes what the first left. Run out of order, the second would pass its check.
    let plans = [
        ("o:btc1", "BTCUSDT", "SELL", "0.03"),
        ("o:eth1", "ETHUSDT", "BUY", "0.6"),
        ("o:btc2", "BTCUSDT", "SELL", "0.03"),
        ("o:eth2", "ETHUSDT", "BUY", "0.6"),
        ("o:btc3", "BTCUSDT", "SELL", "0.02"),
        ("o:eth3", "ETHUSDT", "BUY", "0.4"),
    ];
    for (id, symbol, side, qty) in plans {
        harness.publish(&plan(id, symbol, side, qty));
    }
    let mut config = harness.config();
    config.concurrency = 4;
    let worker = harness.spawn(config).await;

    let results = harness.wait_results(plans.len()).await;
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let seen: Vec<(String, String)> = results
            .iter()
            .filter(|r| r.get("symbol").as_deref() == Some(symbol))
            .map(|r| (r.get("plan_id").unwrap(), r.get("status").unwrap()))
            .collect();
        let prefix = if symbol == "BTCUSDT" {
            "o:btc"
        } else {
            "o:eth"
        };
        let expected: Vec<(String, String)> = [(1, "success"), (2, "refused"), (3, "success")]
            .iter()
            .map(|(n, status)| (format!("{prefix}{n}"), status.to_string()))
            .collect();
        assert_eq!(seen, expected, "{symbol}");
    }
    let second = harness.wait_result_of("o:btc2").await;
    assert_eq!(second.get("rule").as_deref(), Some("position"));
    assert_eq!(harness.close_orders().await.len(), 4);
    assert_eq!(harness.position("BTCUSDT").await, BTC_LONG - dec!(0.05));
    assert_eq!(harness.position("ETHUSDT").await, -ETH_SHORT + dec!(1.0));
    assert_eq!(harness.pending(), 0);
    worker.stop().await;
}

//! The client under every injected fault, and the property that a close is never executed
//! twice whatever the outcome of a send looked like.

mod common;

use std::time::{Duration, Instant};

use common::{client, client_with, open, position_amt, start};
use reconcile_exchange::paper::{FaultKind, Faults, QueuedFault, RunningPaper};
use reconcile_exchange::{
    Client, ClientOrderId, ClosePlan, ErrorClass, ExchangeError, PositionMode, Side,
};
use rust_decimal::dec;

/// A settle window short enough for tests over real sockets.
const SETTLE: Duration = Duration::from_millis(200);

fn settling_client(paper: &RunningPaper) -> Client {
    client_with(paper, |c| c.unknown_outcome_settle = SETTLE)
}

fn plan(id: &str) -> ClosePlan {
    ClosePlan {
        plan_id: id.into(),
        symbol: "BTCUSDT".into(),
        side: Side::Sell,
        quantity: dec!(0.01),
    }
}

async fn inject(paper: &RunningPaper, queue: Vec<QueuedFault>) {
    paper
        .control()
        .set_faults(&Faults {
            queue,
            ..Faults::default()
        })
        .await
        .unwrap();
}

/// Orders under `client_order_id` as the exchange's own order history lists them.
async fn orders_listed(client: &Client, client_order_id: &str) -> usize {
    let orders = client.all_orders("BTCUSDT").await.unwrap();
    orders
        .iter()
        .filter(|o| o.client_order_id == client_order_id)
        .count()
}

async fn orders_sent(paper: &RunningPaper, client_order_id: &str) -> usize {
    let state = paper.control().state().await.unwrap();
    state
        .orders
        .iter()
        .filter(|o| o.client_order_id == client_order_id)
        .count()
}

/// Faults after which the order exists although the answer said nothing useful.
const APPLIED: [FaultKind; 3] = [
    FaultKind::DropAfterApply,
    FaultKind::Http503AfterApply,
    FaultKind::Timeout1007AfterApply,
];

/// Faults after which the order does not exist.
const NOT_APPLIED: [FaultKind; 2] = [FaultKind::Http503, FaultKind::Timeout1007];

#[tokio::test]
async fn unknown_outcome_of_an_executed_order_is_settled_by_lookup() {
    for kind in APPLIED {
        let paper = start(false).await;
        let client = settling_client(&paper);
        open(
            &client,
            "BTCUSDT",
            Side::Buy,
            dec!(0.03),
            PositionMode::OneWay,
        )
        .await;
        inject(&paper, vec![QueuedFault::on_place_order(kind)]).await;

        let report = client
            .close(&plan("applied"), PositionMode::OneWay)
            .await
            .unwrap();
        assert!(report.found_by_lookup, "{kind:?}");
        assert_eq!(report.submits, 1, "{kind:?}");
        assert_eq!(
            orders_sent(&paper, report.client_order_id.as_str()).await,
            1,
            "{kind:?}"
        );
        assert_eq!(
            position_amt(&client, "BTCUSDT").await,
            dec!(0.02),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn unknown_outcome_of_a_lost_order_is_resent_once_after_the_window() {
    for kind in NOT_APPLIED {
        let paper = start(false).await;
        let client = settling_client(&paper);
        open(
            &client,
            "BTCUSDT",
            Side::Buy,
            dec!(0.03),
            PositionMode::OneWay,
        )
        .await;
        inject(&paper, vec![QueuedFault::on_place_order(kind)]).await;

        let started = Instant::now();
        let report = client
            .close(&plan("lost"), PositionMode::OneWay)
            .await
            .unwrap();
        assert!(started.elapsed() >= SETTLE, "{kind:?}");
        assert!(!report.found_by_lookup, "{kind:?}");
        assert_eq!(report.submits, 2, "{kind:?}");
        assert_eq!(
            orders_listed(&client, report.client_order_id.as_str()).await,
            1,
            "{kind:?}"
        );
        assert_eq!(
            position_amt(&client, "BTCUSDT").await,
            dec!(0.02),
            "{kind:?}"
        );
    }
}

/// Faults whose order executes but stays out of lookups for this long after the answer.
const HIDDEN_MS: u64 = 1_000;

#[tokio::test]
async fn order_hidden_after_an_unknown_outcome_is_executed_once() {
    for kind in APPLIED {
        let paper = start(false).await;
        // The last settle lookup comes well after the order shows again.
        let client = client_with(&paper, |c| {
            c.unknown_outcome_settle = Duration::from_millis(HIDDEN_MS * 8 / 5)
        });
        open(
            &client,
            "BTCUSDT",
            Side::Buy,
            dec!(0.03),
            PositionMode::OneWay,
        )
        .await;
        let hidden = QueuedFault::on_place_order(kind).hidden_for(HIDDEN_MS);
        inject(&paper, vec![hidden]).await;

        let report = client
            .close(&plan("hidden"), PositionMode::OneWay)
            .await
            .unwrap();
        assert_eq!(
            (report.submits, report.found_by_lookup),
            (1, true),
            "{kind:?}"
        );
        let id = report.client_order_id.as_str();
        assert_eq!(orders_listed(&client, id).await, 1, "{kind:?}");
        assert_eq!(
            position_amt(&client, "BTCUSDT").await,
            dec!(0.02),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn hidden_order_fault_executes_twice_without_a_settle_window() {
    // Shows that the fault reproduces the risk the settle window removes.
    let paper = start(false).await;
    let client = client_with(&paper, |c| c.unknown_outcome_settle = Duration::ZERO);
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.03),
        PositionMode::OneWay,
    )
    .await;
    let hidden = QueuedFault::on_place_order(FaultKind::Timeout1007AfterApply);
    inject(&paper, vec![hidden.hidden_for(HIDDEN_MS * 5)]).await;

    let report = client
        .close(&plan("hasty"), PositionMode::OneWay)
        .await
        .unwrap();
    assert_eq!((report.submits, report.found_by_lookup), (2, false));
    let id = report.client_order_id.as_str();
    assert_eq!(orders_sent(&paper, id).await, 2);
    assert_eq!(position_amt(&client, "BTCUSDT").await, dec!(0.01));
}

#[tokio::test]
async fn failed_lookups_after_unknown_outcome_never_resend() {
    let paper = start(false).await;
    let client = settling_client(&paper);
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.03),
        PositionMode::OneWay,
    )
    .await;
    let lookup = |kind| QueuedFault {
        path: Some("/fapi/v1/order".into()),
        method: Some("GET".into()),
        ..QueuedFault::on_any(kind)
    };
    // The first lookup (before sending) passes untouched; every one after the drop fails.
    let mut queue = vec![
        lookup(FaultKind::Delay { ms: 0 }),
        QueuedFault::on_place_order(FaultKind::DropAfterApply),
    ];
    queue.extend(std::iter::repeat_n(lookup(FaultKind::Http503), 10));
    inject(&paper, queue).await;

    let started = Instant::now();
    let err = client
        .close(&plan("dark"), PositionMode::OneWay)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::UnknownOutcome);
    assert!(started.elapsed() >= SETTLE);
    let id = ClientOrderId::for_plan("dark");
    assert_eq!(orders_sent(&paper, id.as_str()).await, 1);
    inject(&paper, Vec::new()).await;

    // The worker tries again later: the lookup now finds the order and nothing is sent.
    let report = client
        .close(&plan("dark"), PositionMode::OneWay)
        .await
        .unwrap();
    assert_eq!((report.submits, report.found_by_lookup), (0, true));
    assert_eq!(orders_sent(&paper, id.as_str()).await, 1);
    assert_eq!(position_amt(&client, "BTCUSDT").await, dec!(0.02));
}

#[tokio::test]
async fn sends_stop_at_the_configured_limit() {
    let paper = start(false).await;
    let client = client_with(&paper, |c| {
        c.max_close_submits = 2;
        c.unknown_outcome_settle = SETTLE;
    });
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.03),
        PositionMode::OneWay,
    )
    .await;
    let lost = || QueuedFault::on_place_order(FaultKind::Http503);
    inject(&paper, vec![lost(), lost(), lost()]).await;

    let err = client
        .close(&plan("stubborn"), PositionMode::OneWay)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::UnknownOutcome);
    assert_eq!(paper.control().state().await.unwrap().faults.queue.len(), 1);
    assert_eq!(position_amt(&client, "BTCUSDT").await, dec!(0.03));
}

#[tokio::test]
async fn rate_limit_is_retryable_and_sends_nothing() {
    let paper = start(false).await;
    let client = client(&paper);
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.03),
        PositionMode::OneWay,
    )
    .await;
    inject(
        &paper,
        vec![QueuedFault::on_place_order(FaultKind::RateLimit429)],
    )
    .await;

    let err = client
        .close(&plan("busy"), PositionMode::OneWay)
        .await
        .unwrap_err();
    match err {
        ExchangeError::Retryable {
            status,
            code,
            retry_after,
            ..
        } => {
            assert_eq!((status, code), (429, Some(-1003)));
            assert_eq!(retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("expected retryable, got {other:?}"),
    }
    let id = ClientOrderId::for_plan("busy");
    assert_eq!(orders_sent(&paper, id.as_str()).await, 0);

    // Once the pause the exchange asked for has passed, the close goes through.
    tokio::time::sleep(client.holding_off().unwrap_or_default()).await;
    let report = client
        .close(&plan("busy"), PositionMode::OneWay)
        .await
        .unwrap();
    assert_eq!(report.submits, 1);
}

/// Requests of any kind that reached the paper exchange so far.
async fn requests_seen(paper: &RunningPaper) -> usize {
    paper.control().requests().await.unwrap().len()
}

#[tokio::test]
async fn nothing_is_sent_before_retry_after_has_passed() {
    for status in [429, 418] {
        let paper = start(false).await;
        let client = client(&paper);
        let limited = FaultKind::RateLimited {
            status,
            retry_after_s: 1,
        };
        inject(&paper, vec![QueuedFault::on_any(limited)]).await;

        let err = client.position_risk(None).await.unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(1)), "{err}");
        let limited_at = Instant::now();
        let seen = requests_seen(&paper).await;

        // Every call, whatever its endpoint, is held back without a request.
        let held = client.close(&plan("held"), PositionMode::OneWay).await;
        let held = held.unwrap_err();
        assert!(matches!(held, ExchangeError::HoldingOff { .. }), "{held}");
        assert_eq!(held.class(), ErrorClass::Retryable);
        assert!(client.server_time().await.is_err());
        assert_eq!(requests_seen(&paper).await, seen, "status {status}");
        let remaining = client.holding_off().expect("still holding off");
        assert!(remaining <= Duration::from_secs(1));

        tokio::time::sleep(remaining).await;
        assert!(limited_at.elapsed() >= Duration::from_secs(1));
        assert_eq!(client.holding_off(), None);
        client.position_risk(None).await.unwrap();
        assert_eq!(requests_seen(&paper).await, seen + 1, "status {status}");
    }
}

#[tokio::test]
async fn a_standing_fault_answers_every_request_until_cleared() {
    let paper = start(false).await;
    let client = client(&paper);
    let down = Faults {
        always: Some(FaultKind::Http503),
        ..Faults::default()
    };
    paper.control().set_faults(&down).await.unwrap();
    for _ in 0..3 {
        let err = client.position_risk(None).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Retryable, "{err}");
        assert!(client.server_time().await.is_err());
    }
    paper
        .control()
        .set_faults(&Faults::default())
        .await
        .unwrap();
    client.position_risk(None).await.unwrap();

    let log = paper.control().requests().await.unwrap();
    let statuses: Vec<u16> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 503, 503, 503, 503, 200]);
    assert!(log.iter().all(|r| r.arrived_ms <= r.answered_ms));
    assert_eq!(log[0].code, Some(-1001));
    assert_eq!(log[0].fault, Some(FaultKind::Http503));
}

#[tokio::test]
async fn margin_refusal_is_definitive_and_sent_once() {
    let paper = start(false).await;
    let client = settling_client(&paper);
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.03),
        PositionMode::OneWay,
    )
    .await;
    let margin = || QueuedFault::on_place_order(FaultKind::MarginInsufficient2019);
    inject(&paper, vec![margin(), margin()]).await;

    let err = client
        .close(&plan("poor"), PositionMode::OneWay)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ExchangeError::Rejected {
            status: 400,
            code: -2019,
            ..
        }
    ));
    assert_eq!(err.class(), ErrorClass::Definitive);
    // One send used one fault; the other is still waiting.
    assert_eq!(paper.control().state().await.unwrap().faults.queue.len(), 1);
    let id = ClientOrderId::for_plan("poor");
    assert_eq!(orders_sent(&paper, id.as_str()).await, 0);
    assert_eq!(position_amt(&client, "BTCUSDT").await, dec!(0.03));
}

#[tokio::test]
async fn failed_reads_are_retryable_not_unknown() {
    let paper = start(false).await;
    let client = client(&paper);
    for kind in [
        FaultKind::Http503,
        FaultKind::Timeout1007,
        FaultKind::DropAfterApply,
        // Last: its Retry-After holds back every request after it.
        FaultKind::RateLimit429,
    ] {
        inject(&paper, vec![QueuedFault::on_any(kind)]).await;
        let err = client.position_risk(None).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Retryable, "{kind:?}");
    }
}

#[tokio::test]
async fn answer_slower_than_the_timeout_is_an_unknown_outcome_settled_by_lookup() {
    let paper = start(false).await;
    let client = client_with(&paper, |c| {
        c.timeout = Duration::from_millis(300);
        c.unknown_outcome_settle = SETTLE;
    });
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.03),
        PositionMode::OneWay,
    )
    .await;
    let slow = QueuedFault::on_place_order(FaultKind::Delay { ms: 30_000 });
    inject(&paper, vec![slow]).await;

    let report = client
        .close(&plan("slow"), PositionMode::OneWay)
        .await
        .unwrap();
    assert_eq!((report.submits, report.found_by_lookup), (1, true));
    assert_eq!(
        orders_sent(&paper, report.client_order_id.as_str()).await,
        1
    );
}

#[tokio::test]
async fn added_latency_delays_every_answer() {
    let paper = start(false).await;
    let client = client(&paper);
    let faults = Faults {
        latency_ms: 150,
        ..Faults::default()
    };
    paper.control().set_faults(&faults).await.unwrap();
    let started = Instant::now();
    client.server_time().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn skewed_clock_is_learned_after_a_timestamp_refusal() {
    for skew_ms in [120_000, -120_000] {
        let paper = start(false).await;
        let client = client(&paper);
        let faults = Faults {
            clock_skew_ms: skew_ms,
            ..Faults::default()
        };
        paper.control().set_faults(&faults).await.unwrap();

        // The first signed call is refused for its timestamp, resyncs, and goes through.
        assert_eq!(client.position_mode().await.unwrap(), PositionMode::OneWay);
        let learned = client.clock_offset_ms();
        assert!(
            (learned - skew_ms).abs() < 1_000,
            "skew {skew_ms}, learned {learned}"
        );
    }
}

/// A rate limit whose `Retry-After: 0` lets the next call go at once, so that the grid below
/// checks what was executed, not how long the client waits.
fn limited(status: u16) -> FaultKind {
    FaultKind::RateLimited {
        status,
        retry_after_s: 0,
    }
}

#[tokio::test]
async fn never_executed_twice_across_every_fault() {
    let every: Vec<FaultKind> = APPLIED
        .into_iter()
        .chain(NOT_APPLIED)
        .chain([limited(429), limited(418), FaultKind::Delay { ms: 0 }])
        .chain([FaultKind::MarginInsufficient2019])
        .collect();
    let paper = start(false).await;
    let client = client_with(&paper, |c| {
        c.unknown_outcome_settle = Duration::from_millis(20)
    });
    open(&client, "BTCUSDT", Side::Buy, dec!(1), PositionMode::OneWay).await;

    for (i, first) in every.iter().enumerate() {
        for (j, second) in every.iter().enumerate() {
            let id = format!("reconclose:BTCUSDT:grid:{i}:{j}");
            let queue = vec![
                QueuedFault::on_place_order(*first),
                QueuedFault::on_place_order(*second),
            ];
            inject(&paper, queue).await;
            // Call until the plan settles, as a worker would; a retryable error ends a call.
            for _ in 0..3 {
                if client.close(&plan(&id), PositionMode::OneWay).await.is_ok() {
                    break;
                }
            }
            let cid = ClientOrderId::for_plan(&id);
            assert_eq!(
                orders_sent(&paper, cid.as_str()).await,
                1,
                "{first:?} then {second:?}"
            );
        }
    }
    let closes = (every.len() * every.len()) as u32;
    let expected = dec!(1) - dec!(0.01) * rust_decimal::Decimal::from(closes);
    assert_eq!(position_amt(&client, "BTCUSDT").await, expected);
}

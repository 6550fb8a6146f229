//! Every client call against a paper exchange on its own loopback port.

mod common;

use common::{client, open, position_amt, start};
use reconcile_exchange::paper::{FaultKind, Faults, QueuedFault};
use reconcile_exchange::{
    ClientOrderId, ClosePlan, Credentials, ErrorClass, ExchangeError, OrderStatus, PositionMode,
    PositionSide, Side,
};
use rust_decimal::dec;

fn plan(id: &str, side: Side, qty: rust_decimal::Decimal) -> ClosePlan {
    ClosePlan {
        plan_id: id.into(),
        symbol: "BTCUSDT".into(),
        side,
        quantity: qty,
    }
}

#[tokio::test]
async fn server_time_and_clock_offset() {
    let paper = start(false).await;
    let client = client(&paper);
    let before = reconcile_exchange::host_now_ms();
    let server = client.server_time().await.unwrap();
    assert!((server - before).abs() < 5_000);
    let offset = client.sync_clock().await.unwrap();
    assert!(
        offset.abs() < 1_000,
        "offset {offset} on a shared host clock"
    );
}

#[tokio::test]
async fn exchange_info_is_cached_after_the_first_read() {
    let paper = start(false).await;
    let client = client(&paper);
    assert_eq!(client.refresh_exchange_info().await.unwrap(), 2);

    // With exchange info now failing, the filters still come from the cache.
    let fault = QueuedFault {
        path: Some("/fapi/v1/exchangeInfo".into()),
        ..QueuedFault::on_any(FaultKind::Http503)
    };
    paper
        .control()
        .set_faults(&Faults {
            queue: vec![fault],
            ..Faults::default()
        })
        .await
        .unwrap();
    let btc = client.symbol_filters("BTCUSDT").await.unwrap();
    assert_eq!(btc.lot_size.step_size, dec!(0.001));
    assert_eq!(btc.market_lot_size.unwrap().max_qty, dec!(120));
    assert_eq!(paper.control().state().await.unwrap().faults.queue.len(), 1);
}

#[tokio::test]
async fn unknown_symbol_is_reported_as_such() {
    let paper = start(false).await;
    let err = client(&paper).symbol_filters("DOGEUSDT").await.unwrap_err();
    assert!(matches!(err, ExchangeError::UnknownSymbol(ref s) if s == "DOGEUSDT"));
}

#[tokio::test]
async fn position_mode_reads_both_modes() {
    let one_way = start(false).await;
    assert_eq!(
        client(&one_way).position_mode().await.unwrap(),
        PositionMode::OneWay
    );
    let hedge = start(true).await;
    assert_eq!(
        client(&hedge).position_mode().await.unwrap(),
        PositionMode::Hedge
    );
}

#[tokio::test]
async fn opening_order_shows_in_position_risk_and_order_history() {
    let paper = start(false).await;
    let client = client(&paper);
    let order = open(
        &client,
        "BTCUSDT",
        Side::Sell,
        dec!(0.25),
        PositionMode::OneWay,
    )
    .await;
    assert_eq!(order.status, OrderStatus::Filled);
    assert_eq!(order.executed_qty, dec!(0.25));
    assert!(!order.reduce_only);

    let rows = client.position_risk(Some("BTCUSDT")).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].position_side, PositionSide::Both);
    assert_eq!(rows[0].position_amt, dec!(-0.25));
    assert_eq!(rows[0].entry_price, dec!(60000));
    assert_eq!(client.position_risk(None).await.unwrap().len(), 2);

    let id = ClientOrderId::parse(&order.client_order_id).unwrap();
    let queried = client.query_order("BTCUSDT", &id).await.unwrap().unwrap();
    assert_eq!(queried.order_id, order.order_id);
    assert_eq!(client.all_orders("BTCUSDT").await.unwrap(), vec![queried]);
    assert!(client.all_orders("ETHUSDT").await.unwrap().is_empty());
}

#[tokio::test]
async fn query_of_an_unknown_id_is_none() {
    let paper = start(false).await;
    let id = ClientOrderId::for_plan("never-placed");
    assert_eq!(
        client(&paper).query_order("BTCUSDT", &id).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn one_way_close_rounds_down_and_is_reduce_only() {
    let paper = start(false).await;
    let client = client(&paper);
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.02),
        PositionMode::OneWay,
    )
    .await;

    let report = client
        .close(&plan("p1", Side::Sell, dec!(0.0159)), PositionMode::OneWay)
        .await;
    let report = report.unwrap();
    assert_eq!(report.quantity.to_string(), "0.015");
    assert_eq!(report.submits, 1);
    assert!(!report.found_by_lookup);
    assert!(report.order.reduce_only);
    assert_eq!(
        report.order.client_order_id,
        ClientOrderId::for_plan("p1").as_str()
    );
    assert_eq!(position_amt(&client, "BTCUSDT").await, dec!(0.005));
}

#[tokio::test]
async fn hedge_close_names_the_leg() {
    let paper = start(true).await;
    let client = client(&paper);
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.03),
        PositionMode::Hedge,
    )
    .await;
    open(
        &client,
        "BTCUSDT",
        Side::Sell,
        dec!(0.01),
        PositionMode::Hedge,
    )
    .await;

    let report = client
        .close(&plan("h1", Side::Sell, dec!(0.03)), PositionMode::Hedge)
        .await;
    let report = report.unwrap();
    assert_eq!(report.order.position_side, PositionSide::Long);
    assert!(!report.order.reduce_only);
    let rows = client.position_risk(Some("BTCUSDT")).await.unwrap();
    let leg = |side| {
        rows.iter()
            .find(|p| p.position_side == side)
            .unwrap()
            .position_amt
    };
    assert_eq!(leg(PositionSide::Long), dec!(0));
    assert_eq!(leg(PositionSide::Short), dec!(-0.01));
}

#[tokio::test]
async fn repeating_a_plan_places_nothing_new() {
    let paper = start(false).await;
    let client = client(&paper);
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.05),
        PositionMode::OneWay,
    )
    .await;
    let p = plan(
        "reconclose:BTCUSDT:a1b2c3d4e5f6:1737846123456",
        Side::Sell,
        dec!(0.01),
    );

    let first = client.close(&p, PositionMode::OneWay).await.unwrap();
    let again = client.close(&p, PositionMode::OneWay).await.unwrap();
    assert_eq!(again.submits, 0);
    assert!(again.found_by_lookup);
    assert_eq!(again.order.order_id, first.order.order_id);
    assert_eq!(position_amt(&client, "BTCUSDT").await, dec!(0.04));
    assert_eq!(client.all_orders("BTCUSDT").await.unwrap().len(), 2);
}

#[tokio::test]
async fn close_that_would_flip_is_a_definitive_rejection() {
    let paper = start(false).await;
    let client = client(&paper);
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.01),
        PositionMode::OneWay,
    )
    .await;

    let err = client
        .close(&plan("flip", Side::Sell, dec!(0.02)), PositionMode::OneWay)
        .await;
    let err = err.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Definitive);
    assert_eq!(err.exchange_code(), Some(-2022));
    assert_eq!(client.all_orders("BTCUSDT").await.unwrap().len(), 1);
}

#[tokio::test]
async fn close_in_the_wrong_position_mode_is_a_definitive_rejection() {
    let paper = start(false).await;
    let client = client(&paper);
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.01),
        PositionMode::OneWay,
    )
    .await;

    let err = client
        .close(&plan("mode", Side::Sell, dec!(0.01)), PositionMode::Hedge)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Definitive);
    assert_eq!(err.exchange_code(), Some(-4061));
    assert_eq!(client.all_orders("BTCUSDT").await.unwrap().len(), 1);
    assert_eq!(position_amt(&client, "BTCUSDT").await, dec!(0.01));
}

#[tokio::test]
async fn close_below_min_qty_is_refused_before_sending() {
    let paper = start(false).await;
    let client = client(&paper);
    open(
        &client,
        "BTCUSDT",
        Side::Buy,
        dec!(0.01),
        PositionMode::OneWay,
    )
    .await;

    let err = client
        .close(
            &plan("dust", Side::Sell, dec!(0.0009)),
            PositionMode::OneWay,
        )
        .await;
    assert!(matches!(err, Err(ExchangeError::Quantity(_))));
    assert_eq!(client.all_orders("BTCUSDT").await.unwrap().len(), 1);
}

#[tokio::test]
async fn wrong_secret_or_key_is_rejected() {
    let paper = start(false).await;
    let config = reconcile_exchange::ClientConfig::new(paper.base_url());
    let bad_secret = Credentials::new(common::KEY, "another-secret-0123456789").unwrap();
    let client = reconcile_exchange::Client::new(config.clone(), bad_secret).unwrap();
    let err = client.position_mode().await.unwrap_err();
    assert_eq!(
        (err.class(), err.exchange_code()),
        (ErrorClass::Definitive, Some(-1022))
    );

    let bad_key = Credentials::new("someone-else", common::SECRET).unwrap();
    let client = reconcile_exchange::Client::new(config, bad_key).unwrap();
    let err = client.position_risk(None).await.unwrap_err();
    assert!(matches!(
        err,
        ExchangeError::Rejected {
            status: 401,
            code: -2015,
            ..
        }
    ));
}

#[tokio::test]
async fn refused_connection_is_retryable() {
    // A port that was just free: nothing listens there, so the connection is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let config = reconcile_exchange::ClientConfig::new(dead);
    let client = reconcile_exchange::Client::new(config, common::credentials()).unwrap();
    assert_eq!(
        client.server_time().await.unwrap_err().class(),
        ErrorClass::Retryable
    );
}

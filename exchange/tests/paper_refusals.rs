//! The paper exchange's own refusals, seen as raw HTTP answers, as any client would see them.

mod common;

use common::{start, KEY, SECRET};
use reconcile_exchange::paper::RunningPaper;
use reconcile_exchange::{host_now_ms, sign};
use serde_json::Value;

/// What to send beside the parameters.
struct Raw<'a> {
    method: reqwest::Method,
    path: &'a str,
    key: Option<&'a str>,
    secret: &'a str,
    timestamp: i64,
}

impl Default for Raw<'_> {
    fn default() -> Self {
        Self {
            method: reqwest::Method::POST,
            path: "/fapi/v1/order",
            key: Some(KEY),
            secret: SECRET,
            timestamp: host_now_ms(),
        }
    }
}

async fn send(paper: &RunningPaper, raw: Raw<'_>, params: &str) -> (u16, Value) {
    let query = format!("{params}&recvWindow=5000&timestamp={}", raw.timestamp);
    let signature = sign(raw.secret.as_bytes(), &query);
    let url = format!(
        "{}{}?{query}&signature={signature}",
        paper.base_url(),
        raw.path
    );
    let mut request = reqwest::Client::new().request(raw.method, url);
    if let Some(key) = raw.key {
        request = request.header("X-MBX-APIKEY", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn order(paper: &RunningPaper, params: &str) -> (u16, Value) {
    send(paper, Raw::default(), params).await
}

fn code(answer: &(u16, Value)) -> (u16, i64) {
    (answer.0, answer.1["code"].as_i64().unwrap_or(0))
}

const BUY: &str = "symbol=BTCUSDT&side=BUY&type=MARKET";
const SELL: &str = "symbol=BTCUSDT&side=SELL&type=MARKET";

#[tokio::test]
async fn bad_signature_is_refused() {
    let paper = start(false).await;
    let raw = Raw {
        secret: "not-the-secret-at-all",
        ..Raw::default()
    };
    let answer = send(&paper, raw, &format!("{BUY}&quantity=0.01")).await;
    assert_eq!(code(&answer), (400, -1022));
    assert_eq!(answer.1["msg"], "Signature for this request is not valid.");
}

#[tokio::test]
async fn missing_or_foreign_api_key_is_refused() {
    let paper = start(false).await;
    let missing = send(
        &paper,
        Raw {
            key: None,
            ..Raw::default()
        },
        BUY,
    )
    .await;
    assert_eq!(code(&missing), (401, -2014));
    let foreign = send(
        &paper,
        Raw {
            key: Some("other"),
            ..Raw::default()
        },
        BUY,
    )
    .await;
    assert_eq!(code(&foreign), (401, -2015));
}

#[tokio::test]
async fn stale_or_future_timestamp_is_refused() {
    let paper = start(false).await;
    let stale = Raw {
        timestamp: host_now_ms() - 6_000,
        ..Raw::default()
    };
    assert_eq!(
        code(&send(&paper, stale, &format!("{BUY}&quantity=0.01")).await),
        (400, -1021)
    );
    let ahead = Raw {
        timestamp: host_now_ms() + 5_000,
        ..Raw::default()
    };
    assert_eq!(
        code(&send(&paper, ahead, &format!("{BUY}&quantity=0.01")).await),
        (400, -1021)
    );
    assert!(paper.control().state().await.unwrap().orders.is_empty());
}

#[tokio::test]
async fn reduce_only_that_would_flip_or_grow_is_refused() {
    let paper = start(false).await;
    assert_eq!(order(&paper, &format!("{BUY}&quantity=0.01")).await.0, 200);
    let flip = order(&paper, &format!("{SELL}&quantity=0.02&reduceOnly=true")).await;
    assert_eq!(code(&flip), (400, -2022));
    assert_eq!(flip.1["msg"], "ReduceOnly Order is rejected.");
    let grow = order(&paper, &format!("{BUY}&quantity=0.01&reduceOnly=true")).await;
    assert_eq!(code(&grow), (400, -2022));
    let state = paper.control().state().await.unwrap();
    assert_eq!(state.orders.len(), 1);
}

#[tokio::test]
async fn quantity_off_the_step_is_refused() {
    let paper = start(false).await;
    let answers = [
        order(&paper, &format!("{BUY}&quantity=0.0015")).await,
        order(&paper, &format!("{BUY}&quantity=0")).await,
        order(&paper, &format!("{BUY}&quantity=500")).await,
        order(&paper, &format!("{BUY}&quantity=1e-2")).await,
    ];
    let codes: Vec<(u16, i64)> = answers.iter().map(code).collect();
    assert_eq!(
        codes,
        [(400, -1111), (400, -4003), (400, -4005), (400, -1102)]
    );
}

#[tokio::test]
async fn invalid_client_order_id_is_refused() {
    let paper = start(false).await;
    let long = "x".repeat(37);
    for id in [long.as_str(), "has%20space", "plus%2Bsign"] {
        let answer = order(
            &paper,
            &format!("{BUY}&quantity=0.01&newClientOrderId={id}"),
        )
        .await;
        assert_eq!(code(&answer), (400, -4015), "{id}");
    }
    let ok = order(
        &paper,
        &format!("{BUY}&quantity=0.01&newClientOrderId=a.B%3Ac%2Fd_e-0"),
    )
    .await;
    assert_eq!(ok.0, 200);
    assert_eq!(ok.1["clientOrderId"], "a.B:c/d_e-0");
}

#[tokio::test]
async fn hedge_mode_refuses_reduce_only_and_missing_leg() {
    let paper = start(true).await;
    let no_leg = order(&paper, &format!("{BUY}&quantity=0.01")).await;
    assert_eq!(code(&no_leg), (400, -4061));
    let reduce_only = order(
        &paper,
        &format!("{SELL}&quantity=0.01&positionSide=LONG&reduceOnly=true"),
    )
    .await;
    assert_eq!(code(&reduce_only), (400, -1106));
}

#[tokio::test]
async fn one_way_mode_refuses_a_leg() {
    let paper = start(false).await;
    let answer = order(&paper, &format!("{BUY}&quantity=0.01&positionSide=LONG")).await;
    assert_eq!(code(&answer), (400, -4061));
}

#[tokio::test]
async fn unknown_symbol_and_unknown_order_are_refused() {
    let paper = start(false).await;
    let symbol = order(&paper, "symbol=NOPE&side=BUY&type=MARKET&quantity=1").await;
    assert_eq!(code(&symbol), (400, -1121));

    let query = |params: &'static str| {
        let raw = Raw {
            method: reqwest::Method::GET,
            ..Raw::default()
        };
        send(&paper, raw, params)
    };
    assert_eq!(code(&query("symbol=BTCUSDT").await), (400, -1102));
    assert_eq!(
        code(&query("symbol=BTCUSDT&origClientOrderId=nothing").await),
        (400, -2013)
    );
}

#[tokio::test]
async fn order_answers_use_the_exchange_shape() {
    let paper = start(false).await;
    let answer = order(
        &paper,
        &format!("{BUY}&quantity=0.010&newOrderRespType=RESULT"),
    )
    .await;
    assert_eq!(answer.0, 200);
    let body = &answer.1;
    assert_eq!(body["status"], "FILLED");
    assert_eq!(body["type"], "MARKET");
    assert_eq!(body["origQty"], "0.01");
    assert_eq!(body["executedQty"], "0.01");
    assert_eq!(body["avgPrice"], "60000");
    assert_eq!(body["positionSide"], "BOTH");
    assert!(body["orderId"].is_i64());

    let ack = order(&paper, &format!("{BUY}&quantity=0.01")).await;
    assert_eq!(ack.1["status"], "NEW");
}

#[tokio::test]
async fn public_endpoints_need_no_signature() {
    let paper = start(false).await;
    let http = reqwest::Client::new();
    let time = http
        .get(format!("{}/fapi/v1/time", paper.base_url()))
        .send()
        .await
        .unwrap();
    let time: Value = serde_json::from_slice(&time.bytes().await.unwrap()).unwrap();
    assert!(time["serverTime"].is_i64());
    let info = http
        .get(format!("{}/fapi/v1/exchangeInfo", paper.base_url()))
        .send()
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info.bytes().await.unwrap()).unwrap();
    assert_eq!(info["symbols"][0]["filters"][0]["filterType"], "LOT_SIZE");
}

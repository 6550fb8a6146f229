//! HTTP shell of the paper exchange: routing, authentication, fault injection and the
//! exchange's JSON shapes. The account rules live in `book.rs`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tracing::{debug, info};

use super::book::{Book, Refusal};
use super::faults::{FaultKind, Faults};
use super::{PaperState, RequestRecord};
use crate::clock::host_now_ms;
use crate::credentials::Credentials;
use crate::model::{ApiError, DualSidePosition, Order, Position, ServerTime};

/// Shared state of one running paper exchange.
pub(crate) struct App {
    credentials: Credentials,
    inner: Mutex<Inner>,
}

struct Inner {
    book: Book,
    faults: Faults,
    /// The newest API requests, oldest first.
    requests: VecDeque<RequestRecord>,
}

/// How many requests the log keeps; older ones are dropped first.
const REQUEST_LOG: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Time,
    ExchangeInfo,
    PositionRisk,
    PositionMode,
    PlaceOrder,
    QueryOrder,
    AllOrders,
}

impl Endpoint {
    fn route(method: &Method, path: &str) -> Option<Self> {
        let endpoint = match (path, method.as_str()) {
            ("/fapi/v1/time", "GET") => Self::Time,
            ("/fapi/v1/exchangeInfo", "GET") => Self::ExchangeInfo,
            ("/fapi/v2/positionRisk" | "/fapi/v3/positionRisk", "GET") => Self::PositionRisk,
            ("/fapi/v1/positionSide/dual", "GET") => Self::PositionMode,
            ("/fapi/v1/order", "POST") => Self::PlaceOrder,
            ("/fapi/v1/order", "GET") => Self::QueryOrder,
            ("/fapi/v1/allOrders", "GET") => Self::AllOrders,
            _ => return None,
        };
        Some(endpoint)
    }

    fn signed(self) -> bool {
        !matches!(self, Self::Time | Self::ExchangeInfo)
    }
}

impl App {
    pub fn new(credentials: Credentials, book: Book) -> Self {
        let inner = Inner {
            book,
            faults: Faults::default(),
            requests: VecDeque::new(),
        };
        Self {
            credentials,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic cannot leave the book half-updated: `Book::place` checks everything before
        // it writes, so a poisoned lock still guards consistent data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, record: RequestRecord) {
        let mut inner = self.lock();
        if inner.requests.len() == REQUEST_LOG {
            inner.requests.pop_front();
        }
        inner.requests.push_back(record);
    }

    fn now(&self) -> i64 {
        host_now_ms() + self.lock().faults.clock_skew_ms
    }

    fn state(&self) -> PaperState {
        let now = self.now();
        let inner = self.lock();
        PaperState {
            server_time: now,
            hedge_mode: inner.book.hedge_mode(),
            positions: inner.book.positions(None),
            orders: inner.book.orders().to_vec(),
            faults: inner.faults.clone(),
        }
    }

    /// Handles one API request. An order placed here is denied to lookups for `hidden_ms`.
    fn execute(
        &self,
        endpoint: Endpoint,
        req: &ApiRequest,
        hidden_ms: u64,
    ) -> Result<Response, Refusal> {
        let params = req.params();
        let now = self.now();
        if endpoint.signed() {
            self.authenticate(req, &params, now)?;
        }
        let get = |name: &str| {
            params
                .get(name)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let mut inner = self.lock();
        let book = &mut inner.book;
        let response = match endpoint {
            Endpoint::Time => ok(&ServerTime { server_time: now }),
            Endpoint::ExchangeInfo => ok(&exchange_info(book, now)),
            Endpoint::PositionMode => ok(&DualSidePosition {
                dual_side_position: book.hedge_mode(),
            }),
            Endpoint::PositionRisk => {
                if let Some(symbol) = get("symbol") {
                    book.spec(symbol)?;
                }
                let rows: Vec<PositionWire> = book
                    .positions(get("symbol"))
                    .into_iter()
                    .map(PositionWire::from)
                    .collect();
                ok(&rows)
            }
            Endpoint::PlaceOrder => {
                let order = book.place(&params, now)?;
                if hidden_ms > 0 {
                    let hidden_ms = i64::try_from(hidden_ms).unwrap_or(i64::MAX);
                    book.hide(order.order_id, now.saturating_add(hidden_ms));
                }
                let (symbol, client_order_id) = (&order.symbol, &order.client_order_id);
                info!(%symbol, %client_order_id, hidden_ms, "paper order filled");
                ok(&OrderWire::from(order))
            }
            Endpoint::QueryOrder => {
                let symbol = get("symbol").ok_or_else(|| Refusal::missing("symbol"))?;
                book.spec(symbol)?;
                let order_id = get("orderId").and_then(|v| v.parse().ok());
                let client_id = get("origClientOrderId");
                if order_id.is_none() && client_id.is_none() {
                    let msg = "Param 'orderId' or 'origClientOrderId' must be sent, \
                               but both were empty/null!";
                    return Err(Refusal::bad(-1102, msg));
                }
                let order = book.find(symbol, order_id, client_id, now);
                let order = order.ok_or_else(|| Refusal::bad(-2013, "Order does not exist."))?;
                ok(&OrderWire::from(order.clone()))
            }
            Endpoint::AllOrders => {
                let symbol = get("symbol").ok_or_else(|| Refusal::missing("symbol"))?;
                book.spec(symbol)?;
                let limit = get("limit")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(500usize)
                    .min(1000);
                let from_id = get("orderId")
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0);
                let mine: Vec<&Order> = book
                    .visible_orders(now)
                    .filter(|o| o.symbol == symbol && o.order_id >= from_id)
                    .collect();
                let skip = mine.len().saturating_sub(limit);
                let rows: Vec<OrderWire> = mine
                    .into_iter()
                    .skip(skip)
                    .cloned()
                    .map(OrderWire::from)
                    .collect();
                ok(&rows)
            }
        };
        Ok(response)
    }

    /// The checks a signed request passes on the real exchange, in the same order.
    fn authenticate(
        &self,
        req: &ApiRequest,
        params: &HashMap<String, String>,
        now: i64,
    ) -> Result<(), Refusal> {
        let key = req
            .headers
            .get("X-MBX-APIKEY")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if key.is_empty() {
            return Err(Refusal::new(401, -2014, "API-key format invalid."));
        }
        if key != self.credentials.api_key() {
            return Err(Refusal::new(
                401,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            ));
        }

        let signature = params
            .get("signature")
            .ok_or_else(|| Refusal::missing("signature"))?;
        let payload = format!(
            "{}{}",
            without_signature(&req.query),
            without_signature(&req.body)
        );
        if !self.credentials.verify(&payload, signature) {
            return Err(Refusal::bad(
                -1022,
                "Signature for this request is not valid.",
            ));
        }

        let timestamp: i64 = params
            .get("timestamp")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Refusal::missing("timestamp"))?;
        let recv_window: i64 = match params.get("recvWindow") {
            None => 5_000,
            Some(v) => v
                .parse()
                .ok()
                .filter(|w| (1..=60_000).contains(w))
                .ok_or_else(|| {
                    Refusal::bad(-1130, "Data sent for parameter 'recvWindow' is not valid.")
                })?,
        };
        if timestamp > now + 1_000 {
            let msg = "Timestamp for this request was 1000ms ahead of the server's time.";
            return Err(Refusal::bad(-1021, msg));
        }
        if now - timestamp > recv_window {
            return Err(Refusal::bad(
                -1021,
                "Timestamp for this request is outside of the recvWindow.",
            ));
        }
        Ok(())
    }
}

/// The parts of a request the exchange looks at.
struct ApiRequest {
    query: String,
    body: String,
    headers: HeaderMap,
}

impl ApiRequest {
    /// Parameters from the query string and the form body; the query string wins a clash.
    fn params(&self) -> HashMap<String, String> {
        let mut params: HashMap<String, String> = form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect();
        params.extend(form_urlencoded::parse(self.query.as_bytes()).into_owned());
        params
    }
}

fn without_signature(raw: &str) -> String {
    raw.split('&')
        .filter(|p| !p.starts_with("signature="))
        .collect::<Vec<_>>()
        .join("&")
}

/// The router: the exchange API, and the control path for tests.
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/paper/faults", post(set_faults))
        .route("/paper/state", get(state))
        .route("/paper/requests", get(requests))
        .fallback(api)
        .with_state(app)
}

async fn api(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived_ms = host_now_ms();
    let Some(endpoint) = Endpoint::route(&method, uri.path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (response, code, fault) = answer(&app, endpoint, &method, &uri, headers, body).await;
    let retry_after_s = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    app.log(RequestRecord {
        arrived_ms,
        answered_ms: host_now_ms(),
        method: method.to_string(),
        path: uri.path().to_owned(),
        status: response.status().as_u16(),
        code,
        retry_after_s,
        fault,
    });
    response
}

/// The answer to one API request, with the error code it carries and the fault it met.
async fn answer(
    app: &App,
    endpoint: Endpoint,
    method: &Method,
    uri: &Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (Response, Option<i64>, Option<FaultKind>) {
    let path = uri.path();
    let latency = app.lock().faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }

    let fault = app.lock().faults.take(method.as_str(), path);
    let hidden_ms = fault.as_ref().map_or(0, |f| f.hidden_ms);
    let fault = fault.map(|f| f.kind);
    if let Some(kind) = fault.filter(|k| !k.applies_first()) {
        debug!(path, ?kind, "injected fault instead of answer");
        return (fault_response(kind), fault_code(kind), fault);
    }

    let req = ApiRequest {
        query: uri.query().unwrap_or("").to_owned(),
        body: String::from_utf8_lossy(&body).into_owned(),
        headers,
    };
    let (answer, code) = match app.execute(endpoint, &req, hidden_ms) {
        Ok(answer) => (answer, None),
        Err(r) => {
            let code = Some(r.code);
            (refusal(r), code)
        }
    };
    match fault {
        Some(FaultKind::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (answer, code, fault)
        }
        Some(kind) => {
            debug!(path, ?kind, "injected fault after executing");
            (fault_response(kind), fault_code(kind), fault)
        }
        None => (answer, code, None),
    }
}

/// The exchange error code of a fault's answer, when it has one.
fn fault_code(kind: FaultKind) -> Option<i64> {
    match kind {
        FaultKind::Http503 | FaultKind::Http503AfterApply => Some(-1001),
        FaultKind::Timeout1007 | FaultKind::Timeout1007AfterApply => Some(-1007),
        FaultKind::RateLimit429 | FaultKind::RateLimited { .. } => Some(-1003),
        FaultKind::MarginInsufficient2019 => Some(-2019),
        FaultKind::Delay { .. } | FaultKind::DropAfterApply => None,
    }
}

fn fault_response(kind: FaultKind) -> Response {
    match kind {
        FaultKind::Http503 | FaultKind::Http503AfterApply => {
            let msg = "Service Unavailable.";
            error_response(StatusCode::SERVICE_UNAVAILABLE, -1001, msg)
        }
        FaultKind::Timeout1007 | FaultKind::Timeout1007AfterApply => {
            let msg = "Timeout waiting for response from backend server. Send status unknown; \
                       execution status unknown.";
            error_response(StatusCode::REQUEST_TIMEOUT, -1007, msg)
        }
        FaultKind::MarginInsufficient2019 => {
            error_response(StatusCode::BAD_REQUEST, -2019, "Margin is insufficient.")
        }
        FaultKind::RateLimit429 => rate_limited(429, 1),
        FaultKind::RateLimited {
            status,
            retry_after_s,
        } => rate_limited(status, retry_after_s),
        FaultKind::DropAfterApply => {
            // The body fails before its first byte, so the server closes the connection
            // and the client never sees a complete answer.
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("answer dropped by fault"))
            });
            let mut response = Response::new(Body::from_stream(broken));
            let json = HeaderValue::from_static("application/json");
            response.headers_mut().insert(header::CONTENT_TYPE, json);
            response
        }
        FaultKind::Delay { .. } => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A 429 (or, for `status` 418, an address ban) with -1003 and `Retry-After`.
fn rate_limited(status: u16, retry_after_s: u64) -> Response {
    let mut response = if status == 418 {
        let msg = "Way too many requests; IP banned for now. Please use the websocket for live \
                   updates to avoid bans.";
        error_response(StatusCode::IM_A_TEAPOT, -1003, msg)
    } else {
        let msg = "Too many requests; current limit is 2400 requests per minute.";
        error_response(StatusCode::TOO_MANY_REQUESTS, -1003, msg)
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    response
}

fn ok<T: Serialize>(body: &T) -> Response {
    Json(body).into_response()
}

fn refusal(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    error_response(status, r.code, &r.msg)
}

fn error_response(status: StatusCode, code: i64, msg: &str) -> Response {
    (
        status,
        Json(ApiError {
            code,
            msg: msg.to_owned(),
        }),
    )
        .into_response()
}

async fn set_faults(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    if !peer.ip().is_loopback() {
        return error_response(
            StatusCode::FORBIDDEN,
            -1002,
            "Control path is loopback only.",
        );
    }
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            info!(
                queued = faults.queue.len(),
                latency_ms = faults.latency_ms,
                "faults set"
            );
            app.lock().faults = faults;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => error_response(StatusCode::BAD_REQUEST, -1130, &format!("bad faults: {e}")),
    }
}

async fn state(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !peer.ip().is_loopback() {
        return error_response(
            StatusCode::FORBIDDEN,
            -1002,
            "Control path is loopback only.",
        );
    }
    ok(&app.state())
}

async fn requests(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !peer.ip().is_loopback() {
        return error_response(
            StatusCode::FORBIDDEN,
            -1002,
            "Control path is loopback only.",
        );
    }
    let log: Vec<RequestRecord> = app.lock().requests.iter().cloned().collect();
    ok(&log)
}

/// An order with the fields the exchange adds around the ones the client reads.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderWire {
    #[serde(flatten)]
    order: Order,
    cum_qty: String,
    price: &'static str,
    stop_price: &'static str,
    time_in_force: &'static str,
    orig_type: &'static str,
    close_position: bool,
    working_type: &'static str,
    price_protect: bool,
    price_match: &'static str,
    self_trade_prevention_mode: &'static str,
    good_till_date: i64,
    time: i64,
}

impl From<Order> for OrderWire {
    fn from(order: Order) -> Self {
        Self {
            cum_qty: order.executed_qty.to_string(),
            time: order.update_time,
            order,
            price: "0",
            stop_price: "0",
            time_in_force: "GTC",
            orig_type: "MARKET",
            close_position: false,
            working_type: "CONTRACT_PRICE",
            price_protect: false,
            price_match: "NONE",
            self_trade_prevention_mode: "EXPIRE_MAKER",
            good_till_date: 0,
        }
    }
}

/// A position risk row with the margin fields the paper account does not model.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PositionWire {
    #[serde(flatten)]
    position: Position,
    un_realized_profit: String,
    notional: String,
    break_even_price: String,
    liquidation_price: &'static str,
    leverage: &'static str,
    max_notional_value: &'static str,
    margin_type: &'static str,
    isolated_margin: &'static str,
    is_auto_add_margin: &'static str,
    isolated_wallet: &'static str,
}

impl From<Position> for PositionWire {
    fn from(p: Position) -> Self {
        let pnl = (p.mark_price - p.entry_price) * p.position_amt;
        let notional = p.mark_price * p.position_amt;
        Self {
            un_realized_profit: pnl.round_dp(8).normalize().to_string(),
            notional: notional.round_dp(8).normalize().to_string(),
            break_even_price: p.entry_price.to_string(),
            position: p,
            liquidation_price: "0",
            leverage: "20",
            max_notional_value: "25000000",
            margin_type: "cross",
            isolated_margin: "0.00000000",
            is_auto_add_margin: "false",
            isolated_wallet: "0",
        }
    }
}

fn exchange_info(book: &Book, now: i64) -> serde_json::Value {
    let symbols: Vec<serde_json::Value> = book
        .specs()
        .map(|spec| {
            let f = &spec.filters;
            let lot = |l: &crate::quantity::LotSize, kind: &str| {
                json!({
                    "filterType": kind,
                    "minQty": l.min_qty.to_string(),
                    "maxQty": l.max_qty.to_string(),
                    "stepSize": l.step_size.to_string(),
                })
            };
            let mut filters = vec![lot(&f.lot_size, "LOT_SIZE")];
            filters.extend(
                f.market_lot_size
                    .as_ref()
                    .map(|m| lot(m, "MARKET_LOT_SIZE")),
            );
            filters.push(json!({"filterType": "MIN_NOTIONAL", "notional": "5"}));
            let base = f.symbol.strip_suffix("USDT").unwrap_or(&f.symbol);
            json!({
                "symbol": f.symbol,
                "pair": f.symbol,
                "contractType": "PERPETUAL",
                "status": "TRADING",
                "baseAsset": base,
                "quoteAsset": "USDT",
                "marginAsset": "USDT",
                "quantityPrecision": f.lot_size.step_size.normalize().scale(),
                "filters": filters,
                "orderTypes": ["MARKET"],
                "timeInForce": ["GTC"],
            })
        })
        .collect();
    json!({
        "timezone": "UTC",
        "serverTime": now,
        "futuresType": "U_MARGINED",
        "rateLimits": [],
        "exchangeFilters": [],
        "assets": [],
        "symbols": symbols,
    })
}

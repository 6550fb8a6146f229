//! The HTTP client for USD-M futures: public and signed requests, the filter cache, the clock
//! offset, and the calls the workers make.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tracing::debug;

use crate::client_order_id::ClientOrderId;
use crate::clock::{host_now_ms, ClockOffset};
use crate::cooldown::Cooldown;
use crate::credentials::Credentials;
use crate::error::{classify, code, Effect, ExchangeError};
use crate::exchange_info;
use crate::model::{
    ApiError, DualSidePosition, Order, Position, PositionMode, PositionSide, ServerTime, Side,
};
use crate::quantity::{MarketQuantity, SymbolFilters};

/// Production REST base URL.
pub const MAINNET_URL: &str = "https://fapi.binance.com";
/// Testnet REST base URL.
pub const TESTNET_URL: &str = "https://testnet.binancefuture.com";

/// How a [`Client`] reaches the exchange.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Scheme, host and port, without a path: [`MAINNET_URL`], [`TESTNET_URL`] or a paper
    /// exchange such as `http://127.0.0.1:8900`.
    pub base_url: String,
    /// Milliseconds after `timestamp` during which the exchange may still execute a request.
    pub recv_window_ms: u64,
    /// Deadline for one request, connection included.
    pub timeout: Duration,
    /// How many times one [`Client::close`] call may send its order. A second send happens
    /// only after the lookups over `unknown_outcome_settle` found no order under the client
    /// order id.
    pub max_close_submits: u32,
    /// How long [`Client::close`] keeps looking for its order after a send whose outcome is
    /// unknown, before it may conclude that the order does not exist. The exchange may deny
    /// an order it is still processing, so a lookup within this window can only find it.
    pub unknown_outcome_settle: Duration,
}

impl ClientConfig {
    /// Defaults: 5 s receive window, 10 s timeout, at most 2 sends per close, 5 s settle
    /// window after an unknown outcome.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            recv_window_ms: 5_000,
            timeout: Duration::from_secs(10),
            max_close_submits: 2,
            unknown_outcome_settle: Duration::from_secs(5),
        }
    }
}

/// A MARKET order ready to send. Build it with [`MarketOrder::open`] or [`MarketOrder::close`],
/// which set `positionSide` and `reduceOnly` as the account's mode requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketOrder {
    pub symbol: String,
    pub side: Side,
    pub quantity: MarketQuantity,
    /// `Both` in one-way mode; the leg in hedge mode.
    pub position_side: PositionSide,
    /// Only ever true in one-way mode: hedge mode refuses the parameter.
    pub reduce_only: bool,
    pub client_order_id: ClientOrderId,
}

impl MarketOrder {
    /// An order that may open or grow a position. In hedge mode BUY opens LONG and SELL opens
    /// SHORT.
    pub fn open(
        symbol: &str,
        side: Side,
        quantity: MarketQuantity,
        mode: PositionMode,
        client_order_id: ClientOrderId,
    ) -> Self {
        let position_side = match (mode, side) {
            (PositionMode::OneWay, _) => PositionSide::Both,
            (PositionMode::Hedge, Side::Buy) => PositionSide::Long,
            (PositionMode::Hedge, Side::Sell) => PositionSide::Short,
        };
        let symbol = symbol.to_owned();
        Self {
            symbol,
            side,
            quantity,
            position_side,
            reduce_only: false,
            client_order_id,
        }
    }

    /// An order that can only shrink a position. `side` is the closing side: SELL closes a
    /// long, BUY closes a short. One-way mode sends `reduceOnly=true`; hedge mode names the
    /// leg being closed instead.
    pub fn close(
        symbol: &str,
        side: Side,
        quantity: MarketQuantity,
        mode: PositionMode,
        client_order_id: ClientOrderId,
    ) -> Self {
        let (position_side, reduce_only) = match (mode, side) {
            (PositionMode::OneWay, _) => (PositionSide::Both, true),
            (PositionMode::Hedge, Side::Sell) => (PositionSide::Long, false),
            (PositionMode::Hedge, Side::Buy) => (PositionSide::Short, false),
        };
        let symbol = symbol.to_owned();
        Self {
            symbol,
            side,
            quantity,
            position_side,
            reduce_only,
            client_order_id,
        }
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = vec![
            ("symbol", self.symbol.clone()),
            ("side", self.side.as_str().to_owned()),
            ("type", "MARKET".to_owned()),
            ("quantity", self.quantity.to_string()),
            ("newClientOrderId", self.client_order_id.to_string()),
            ("newOrderRespType", "RESULT".to_owned()),
        ];
        if self.position_side != PositionSide::Both {
            params.push(("positionSide", self.position_side.as_str().to_owned()));
        }
        if self.reduce_only {
            params.push(("reduceOnly", "true".to_owned()));
        }
        params
    }
}

/// A client for one account. Build it once and share it: it keeps the connection pool, the
/// clock offset and the filter cache.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    recv_window_ms: u64,
    pub(crate) max_close_submits: u32,
    pub(crate) unknown_outcome_settle: Duration,
    credentials: Credentials,
    clock: ClockOffset,
    cooldown: Cooldown,
    filters: RwLock<HashMap<String, SymbolFilters>>,
}

#[derive(Clone, Copy)]
enum Auth {
    Public,
    Signed,
}

impl Client {
    /// Builds the client. No request is made until the first call.
    pub fn new(config: ClientConfig, credentials: Credentials) -> Result<Self, ExchangeError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(ExchangeError::Config(format!(
                "base url {base_url} is not http(s)"
            )));
        }
        if config.max_close_submits == 0 {
            return Err(ExchangeError::Config(
                "max_close_submits must be at least 1".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| ExchangeError::Config(format!("building http client: {e}")))?;
        Ok(Self {
            http,
            base_url,
            recv_window_ms: config.recv_window_ms,
            max_close_submits: config.max_close_submits,
            unknown_outcome_settle: config.unknown_outcome_settle,
            credentials,
            clock: ClockOffset::default(),
            cooldown: Cooldown::default(),
            filters: RwLock::new(HashMap::new()),
        })
    }

    /// The exchange's clock, in milliseconds since the epoch.
    pub async fn server_time(&self) -> Result<i64, ExchangeError> {
        let time: ServerTime = self.public("/fapi/v1/time", &[]).await?;
        Ok(time.server_time)
    }

    /// Learns the offset between the exchange's clock and ours, and returns it in
    /// milliseconds (server minus host). Signed requests use it from then on.
    pub async fn sync_clock(&self) -> Result<i64, ExchangeError> {
        let sent = host_now_ms();
        let server = self.server_time().await?;
        let offset = self.clock.learn(sent, server, host_now_ms());
        debug!(offset_ms = offset, "clock offset learned");
        Ok(offset)
    }

    /// The offset last learned by [`Client::sync_clock`].
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock.get()
    }

    /// How long the client still holds every request back because the exchange answered
    /// with `Retry-After`; `None` when requests may go. Calls made meanwhile fail with
    /// [`ExchangeError::HoldingOff`] without reaching the exchange.
    pub fn holding_off(&self) -> Option<Duration> {
        self.cooldown.remaining(Instant::now())
    }

    /// Fetches exchange information and replaces the filter cache. Returns the number of
    /// symbols cached.
    pub async fn refresh_exchange_info(&self) -> Result<usize, ExchangeError> {
        let path = "/fapi/v1/exchangeInfo";
        let body = self
            .send_once(Method::GET, path, &[], Auth::Public, Effect::Read, None)
            .await?;
        let parsed = exchange_info::parse(&body).map_err(|e| ExchangeError::Decode {
            endpoint: "/fapi/v1/exchangeInfo",
            detail: e.to_string(),
        })?;
        let count = parsed.len();
        *self.filters.write().unwrap_or_else(|p| p.into_inner()) = parsed;
        Ok(count)
    }

    /// The quantity filters of `symbol`, from the cache when present. A miss refreshes the
    /// cache once.
    pub async fn symbol_filters(&self, symbol: &str) -> Result<SymbolFilters, ExchangeError> {
        if let Some(found) = self.cached_filters(symbol) {
            return Ok(found);
        }
        self.refresh_exchange_info().await?;
        self.cached_filters(symbol)
            .ok_or_else(|| ExchangeError::UnknownSymbol(symbol.to_owned()))
    }

    fn cached_filters(&self, symbol: &str) -> Option<SymbolFilters> {
        self.filters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(symbol)
            .cloned()
    }

    /// Position risk rows, for one symbol or for all.
    pub async fn position_risk(
        &self,
        symbol: Option<&str>,
    ) -> Result<Vec<Position>, ExchangeError> {
        let params: Vec<(&str, String)> = symbol
            .map(|s| ("symbol", s.to_owned()))
            .into_iter()
            .collect();
        self.signed_read("/fapi/v2/positionRisk", &params).await
    }

    /// Whether the account is in one-way or hedge mode.
    pub async fn position_mode(&self) -> Result<PositionMode, ExchangeError> {
        let dual: DualSidePosition = self.signed_read("/fapi/v1/positionSide/dual", &[]).await?;
        Ok(if dual.dual_side_position {
            PositionMode::Hedge
        } else {
            PositionMode::OneWay
        })
    }

    /// Sends one MARKET order, once. This does no lookup and no resend: closes should go
    /// through [`Client::close`], which does.
    pub async fn place_market_order(&self, order: &MarketOrder) -> Result<Order, ExchangeError> {
        let id = Some(order.client_order_id.as_str());
        let body = self
            .send(
                Method::POST,
                "/fapi/v1/order",
                &order.params(),
                Auth::Signed,
                Effect::Write,
                id,
            )
            .await?;
        decode("/fapi/v1/order", &body)
    }

    /// The order placed under `client_order_id`, or `None` when the exchange has none (-2013).
    pub async fn query_order(
        &self,
        symbol: &str,
        client_order_id: &ClientOrderId,
    ) -> Result<Option<Order>, ExchangeError> {
        let params = [
            ("symbol", symbol.to_owned()),
            ("origClientOrderId", client_order_id.to_string()),
        ];
        match self.signed_read("/fapi/v1/order", &params).await {
            Ok(order) => Ok(Some(order)),
            Err(e) if e.exchange_code() == Some(code::NO_SUCH_ORDER) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every order of `symbol` the exchange still reports, oldest first.
    pub async fn all_orders(&self, symbol: &str) -> Result<Vec<Order>, ExchangeError> {
        self.signed_read("/fapi/v1/allOrders", &[("symbol", symbol.to_owned())])
            .await
    }

    async fn public<T: DeserializeOwned>(
        &self,
        path: &'static str,
        params: &[(&str, String)],
    ) -> Result<T, ExchangeError> {
        // Public requests carry no timestamp, so they never need the resync in `send`.
        let body = self
            .send_once(Method::GET, path, params, Auth::Public, Effect::Read, None)
            .await?;
        decode(path, &body)
    }

    async fn signed_read<T: DeserializeOwned>(
        &self,
        path: &'static str,
        params: &[(&str, String)],
    ) -> Result<T, ExchangeError> {
        let body = self
            .send(Method::GET, path, params, Auth::Signed, Effect::Read, None)
            .await?;
        decode(path, &body)
    }

    /// Sends a request and returns the body of a 2xx answer. A signed request refused for its
    /// timestamp (-1021) was not executed, so it is sent once more after a clock resync.
    async fn send(
        &self,
        method: Method,
        path: &'static str,
        params: &[(&str, String)],
        auth: Auth,
        effect: Effect,
        client_order_id: Option<&str>,
    ) -> Result<Vec<u8>, ExchangeError> {
        let first = self
            .send_once(method.clone(), path, params, auth, effect, client_order_id)
            .await;
        match first {
            Err(e)
                if matches!(auth, Auth::Signed)
                    && e.exchange_code() == Some(code::INVALID_TIMESTAMP) =>
            {
                tracing::warn!(
                    path,
                    offset_ms = self.clock.get(),
                    "timestamp refused, resyncing clock"
                );
                self.sync_clock().await?;
                self.send_once(method, path, params, auth, effect, client_order_id)
                    .await
            }
            other => other,
        }
    }

    async fn send_once(
        &self,
        method: Method,
        path: &'static str,
        params: &[(&str, String)],
        auth: Auth,
        effect: Effect,
        client_order_id: Option<&str>,
    ) -> Result<Vec<u8>, ExchangeError> {
        if let Some(remaining) = self.cooldown.remaining(Instant::now()) {
            debug!(%method, path, remaining_ms = remaining.as_millis() as u64, "held back");
            return Err(ExchangeError::HoldingOff { remaining });
        }
        let mut query = encode(params);
        let mut request = match auth {
            Auth::Public => self.http.request(method.clone(), self.url(path, &query)),
            Auth::Signed => {
                let stamp = format!(
                    "recvWindow={}&timestamp={}",
                    self.recv_window_ms,
                    self.clock.now_ms()
                );
                query = if query.is_empty() {
                    stamp
                } else {
                    format!("{query}&{stamp}")
                };
                let signature = self.credentials.sign(&query);
                let signed = format!("{query}&signature={signature}");
                self.http
                    .request(method.clone(), self.url(path, &signed))
                    .header("X-MBX-APIKEY", self.credentials.api_key())
            }
        };
        if method == Method::POST {
            request = request.header("Content-Type", "application/x-www-form-urlencoded");
        }

        let response = request
            .send()
            .await
            .map_err(|e| transport(e, effect, client_order_id))?;
        let status = response.status();
        let retry_after = retry_after(&response);
        let body = response
            .bytes()
            .await
            .map_err(|e| transport(e, effect, client_order_id))?;
        debug!(%method, path, status = status.as_u16(), "exchange answered");
        if status.is_success() {
            return Ok(body.to_vec());
        }

        if let Some(wait) = retry_after {
            tracing::warn!(
                path,
                status = status.as_u16(),
                retry_after_ms = wait.as_millis() as u64,
                "exchange asked for a pause; holding every request back"
            );
            self.cooldown.hold(Instant::now(), wait);
        }
        let (code, msg) = match serde_json::from_slice::<ApiError>(&body) {
            Ok(err) => (Some(err.code), err.msg),
            Err(_) => (None, status_text(status)),
        };
        Err(classify(
            effect,
            client_order_id,
            status.as_u16(),
            code,
            msg,
            retry_after,
        ))
    }

    fn url(&self, path: &str, query: &str) -> String {
        if query.is_empty() {
            format!("{}{path}", self.base_url)
        } else {
            format!("{}{path}?{query}", self.base_url)
        }
    }
}

fn encode(params: &[(&str, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        out.append_pair(name, value);
    }
    out.finish()
}

fn decode<T: DeserializeOwned>(endpoint: &'static str, body: &[u8]) -> Result<T, ExchangeError> {
    serde_json::from_slice(body).map_err(|e| ExchangeError::Decode {
        endpoint,
        detail: e.to_string(),
    })
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get("Retry-After")?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

fn status_text(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("no reason").to_owned()
}

/// A request that failed below HTTP. One that never reached the server did nothing; any other
/// (timeout, connection dropped mid-answer) may have been executed.
fn transport(e: reqwest::Error, effect: Effect, client_order_id: Option<&str>) -> ExchangeError {
    if e.is_connect() || effect == Effect::Read {
        return ExchangeError::Retryable {
            status: 0,
            code: None,
            msg: e.to_string(),
            retry_after: None,
        };
    }
    ExchangeError::UnknownOutcome {
        client_order_id: client_order_id.unwrap_or_default().to_owned(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;

    use super::*;
    use crate::quantity::LotSize;

    fn qty() -> MarketQuantity {
        let lot = LotSize {
            min_qty: dec!(0.001),
            max_qty: dec!(100),
            step_size: dec!(0.001),
        };
        let filters = SymbolFilters {
            symbol: "BTCUSDT".into(),
            lot_size: lot,
            market_lot_size: None,
        };
        filters.market_quantity(dec!(0.0105)).unwrap()
    }

    fn param<'a>(params: &'a [(&str, String)], name: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn one_way_close_is_reduce_only_without_position_side() {
        let id = ClientOrderId::for_plan("p");
        let order = MarketOrder::close("BTCUSDT", Side::Sell, qty(), PositionMode::OneWay, id);
        let params = order.params();
        assert_eq!(param(&params, "reduceOnly"), Some("true"));
        assert_eq!(param(&params, "positionSide"), None);
        assert_eq!(param(&params, "quantity"), Some("0.01"));
        assert_eq!(param(&params, "type"), Some("MARKET"));
    }

    #[test]
    fn hedge_close_names_the_leg_and_omits_reduce_only() {
        let id = ClientOrderId::for_plan("p");
        let sell = MarketOrder::close(
            "BTCUSDT",
            Side::Sell,
            qty(),
            PositionMode::Hedge,
            id.clone(),
        );
        assert_eq!(param(&sell.params(), "positionSide"), Some("LONG"));
        assert_eq!(param(&sell.params(), "reduceOnly"), None);
        let buy = MarketOrder::close("BTCUSDT", Side::Buy, qty(), PositionMode::Hedge, id);
        assert_eq!(param(&buy.params(), "positionSide"), Some("SHORT"));
    }

    #[test]
    fn base_url_must_be_http() {
        let creds = Credentials::new("key", "0123456789abcdef").unwrap();
        let err = Client::new(ClientConfig::new("ftp://x"), creds).unwrap_err();
        assert!(matches!(err, ExchangeError::Config(_)));
    }
}

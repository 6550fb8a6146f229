//! The paper exchange: the USD-M futures endpoints the client uses, served from memory on
//! loopback, with faults that tests switch on through a control path.
//!
//! Endpoints: `GET /fapi/v1/time`, `GET /fapi/v1/exchangeInfo`, `GET /fapi/v2/positionRisk`
//! (also `v3`), `GET /fapi/v1/positionSide/dual`, `POST /fapi/v1/order` (MARKET only, filled at
//! once at the mark price), `GET /fapi/v1/order`, `GET /fapi/v1/allOrders`. Control, loopback
//! peers only: `POST /paper/faults` replaces the [`Faults`], `GET /paper/state` returns a
//! [`PaperState`], `GET /paper/requests` the log of API requests as [`RequestRecord`]s.

mod book;
mod faults;
mod server;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use book::SymbolSpec;
pub use faults::{FaultKind, Faults, QueuedFault};

use crate::credentials::Credentials;
use crate::error::ExchangeError;
use crate::model::{Order, Position};

/// What a paper exchange starts with.
#[derive(Debug)]
pub struct PaperConfig {
    /// The only key and secret it accepts.
    pub credentials: Credentials,
    /// Listed symbols, each with [`SymbolSpec::default_for`] filters.
    pub symbols: Vec<String>,
    /// Start in hedge mode (LONG and SHORT legs) instead of one-way mode.
    pub hedge_mode: bool,
    /// Mark prices that replace the defaults; each symbol must be listed.
    pub mark_prices: Vec<(String, Decimal)>,
}

impl PaperConfig {
    /// One-way mode with BTCUSDT and ETHUSDT at their default mark prices.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
            hedge_mode: false,
            mark_prices: Vec::new(),
        }
    }

    fn into_app(self) -> io::Result<server::App> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if self.symbols.is_empty() {
            return Err(invalid("no symbols listed".into()));
        }
        let mut specs: BTreeMap<String, SymbolSpec> = self
            .symbols
            .iter()
            .map(|s| (s.clone(), SymbolSpec::default_for(s)))
            .collect();
        for (symbol, price) in &self.mark_prices {
            let spec = specs
                .get_mut(symbol)
                .ok_or_else(|| invalid(format!("mark price for unlisted symbol {symbol}")))?;
            if *price <= Decimal::ZERO {
                return Err(invalid(format!("mark price of {symbol} is not positive")));
            }
            spec.mark_price = *price;
        }
        Ok(server::App::new(
            self.credentials,
            book::Book::new(specs, self.hedge_mode),
        ))
    }
}

/// Everything the paper exchange holds, as `GET /paper/state` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaperState {
    pub server_time: i64,
    pub hedge_mode: bool,
    pub positions: Vec<Position>,
    /// Every order placed, oldest first.
    pub orders: Vec<Order>,
    pub faults: Faults,
}

/// One API request as the paper exchange saw it, for tests that check when and how often a
/// client called. Times are the host clock in Unix milliseconds, not the skewed server clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// When the request arrived, before any injected latency.
    pub arrived_ms: i64,
    /// When its answer was ready to go out.
    pub answered_ms: i64,
    pub method: String,
    pub path: String,
    /// HTTP status of the answer.
    pub status: u16,
    /// The exchange error code of the answer, if it was an error.
    pub code: Option<i64>,
    /// The answer's `Retry-After`, in seconds.
    pub retry_after_s: Option<u64>,
    /// The injected fault the request met, if any.
    pub fault: Option<FaultKind>,
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: PaperConfig) -> io::Result<()> {
    serve_until(listener, config, std::future::pending()).await
}

/// Serves on `listener` until `shutdown` completes, then finishes the requests in flight.
pub async fn serve_until(
    listener: TcpListener,
    config: PaperConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = Arc::new(config.into_app()?);
    run(listener, app, shutdown).await
}

async fn run(
    listener: TcpListener,
    app: Arc<server::App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let service = server::router(app).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A paper exchange running in this process on a free loopback port. Dropping it stops it.
#[derive(Debug)]
pub struct RunningPaper {
    addr: SocketAddr,
    task: JoinHandle<io::Result<()>>,
}

/// Starts a paper exchange on `127.0.0.1` with a port the system picks. Made for tests: each
/// gets its own exchange and its own port.
pub async fn start(config: PaperConfig) -> io::Result<RunningPaper> {
    let app = Arc::new(config.into_app()?);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(run(listener, app, std::future::pending()));
    Ok(RunningPaper { addr, task })
}

impl RunningPaper {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for [`crate::ClientConfig::new`].
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client for its control path.
    pub fn control(&self) -> PaperControl {
        PaperControl::new(self.base_url())
    }
}

impl Drop for RunningPaper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client for the control path of a paper exchange, for tests and demos.
#[derive(Debug, Clone)]
pub struct PaperControl {
    http: reqwest::Client,
    base_url: String,
}

impl PaperControl {
    /// Control client for the paper exchange at `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Self {
            http: reqwest::Client::new(),
            base_url,
        }
    }

    /// Replaces the fault setting.
    pub async fn set_faults(&self, faults: &Faults) -> Result<(), ExchangeError> {
        let body = serde_json::to_vec(faults).map_err(|e| control_error(e.to_string()))?;
        let response = self
            .http
            .post(format!("{}/paper/faults", self.base_url))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| control_error(e.to_string()))?;
        if !response.status().is_success() {
            return Err(control_error(format!(
                "set faults answered {}",
                response.status()
            )));
        }
        Ok(())
    }

    /// Everything the exchange holds.
    pub async fn state(&self) -> Result<PaperState, ExchangeError> {
        self.get("/paper/state").await
    }

    /// The API requests served so far (the newest 100 000), oldest first.
    pub async fn requests(&self) -> Result<Vec<RequestRecord>, ExchangeError> {
        self.get("/paper/requests").await
    }

    async fn get<T: DeserializeOwned>(&self, endpoint: &'static str) -> Result<T, ExchangeError> {
        let response = self
            .http
            .get(format!("{}{endpoint}", self.base_url))
            .send()
            .await
            .map_err(|e| control_error(e.to_string()))?;
        let body = response
            .bytes()
            .await
            .map_err(|e| control_error(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| ExchangeError::Decode {
            endpoint,
            detail: e.to_string(),
        })
    }
}

fn control_error(msg: String) -> ExchangeError {
    ExchangeError::Retryable {
        status: 0,
        code: None,
        msg,
        retry_after: None,
    }
}

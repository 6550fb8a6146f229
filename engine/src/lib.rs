//! The reconcile engine: compares each symbol's exchange position with the ledger and, when
//! the exchange holds more than it should, holds the symbol and publishes a signed
//! reduce-only close plan.
//!
//! - [`drift`]: the arithmetic, pure and property-tested;
//! - [`plan`]: the fields of plans and events;
//! - [`store`]: the Redis keys and commands;
//! - [`engine`]: one cycle, the outstanding-plan rule and the loop;
//! - [`config`], [`metrics`]: settings and Prometheus metrics.
//!
//! Invariants: quantities are exact decimals, rounded down to the step; a plan never widens a
//! drift nor closes more than the exchange holds; a symbol whose ledger or position could not
//! be read is skipped, never taken as flat; the HOLD lease is set before the plan is signed;
//! the engine holds no signing secret and signs only through `RECONCILE.XADDSIGNED`.

#![forbid(unsafe_code)]

pub mod config;
pub mod drift;
pub mod engine;
pub mod metrics;
pub mod plan;
pub mod store;

use std::io;

use prometheus::Registry;
use reconcile_exchange::{Client, ClientConfig, Credentials, ExchangeError};
use reconcile_worker::redis::{ConnectError, ConnectOptions};
use reconcile_worker::{Backoff, Shutdown};
use std::time::Duration;

pub use config::Config;
pub use engine::{CycleReport, Engine, MinReplicas, Outcome, Settings, SkipReason};
pub use metrics::Metrics;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metrics could not be registered.
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The metrics address could not be bound.
    #[error("serving metrics: {0}")]
    MetricsServer(#[from] io::Error),
    /// Redis refused us or the URL is unusable.
    #[error("connecting to redis: {0}")]
    Redis(#[from] ConnectError),
    /// The exchange client could not be built.
    #[error("building the exchange client: {0}")]
    Exchange(#[from] ExchangeError),
}

/// Runs the engine until `shutdown`: serves metrics, connects to Redis and the exchange
/// (retrying with backoff), then runs cycles. Returns `Ok` after a clean stop, also when
/// shutdown came while still connecting.
pub async fn run(
    config: Config,
    credentials: Credentials,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    metrics.start_at_zero(&config.symbols);
    let (_, server) =
        reconcile_worker::metrics::spawn(config.metrics_addr, registry, shutdown.clone()).await?;

    // WAIT blocks for up to its timeout; the reply deadline must outlast it.
    let mut options = ConnectOptions::default();
    if config.min_replicas > 0 {
        let needed = config.min_replicas_timeout + Duration::from_secs(2);
        options.response_timeout = options.response_timeout.map(|t| t.max(needed));
    }
    let redis = match reconcile_worker::redis::connect(&config.redis_url, options, &shutdown).await
    {
        Ok(redis) => redis,
        Err(ConnectError::ShutDown { .. }) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    let exchange = Client::new(ClientConfig::new(config.exchange_url.as_str()), credentials)?;
    if !sync_clock(&exchange, &shutdown).await {
        return Ok(());
    }

    tracing::info!(
        symbols = config.symbols.join(","),
        interval = ?config.interval,
        confirm_cycles = config.confirm_cycles,
        "engine started"
    );
    let engine = Engine::new(redis, exchange, Settings::from(&config), metrics)
        .with_stream(&config.stream)
        .with_min_replicas(MinReplicas::from(&config));
    engine.run(config.interval, shutdown).await;
    // The server stops on the same shutdown; its own result does not change ours.
    let _ = server.await;
    Ok(())
}

/// Learns the exchange's clock offset, retrying with backoff; false if shutdown came first.
async fn sync_clock(exchange: &Client, shutdown: &Shutdown) -> bool {
    let mut backoff =
        Backoff::new(Duration::from_millis(200), Duration::from_secs(30)).with_jitter();
    loop {
        match exchange.sync_clock().await {
            Ok(offset_ms) => {
                tracing::info!(offset_ms, "exchange clock synchronised");
                return true;
            }
            Err(err) => {
                tracing::error!(error = %err, "exchange clock sync failed; retrying");
                if !backoff.sleep(shutdown).await {
                    return false;
                }
            }
        }
    }
}

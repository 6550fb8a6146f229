//! The worker's lifecycle: start the metrics endpoint and the module poller, connect, recover
//! what an earlier run left pending, then read new plans as they arrive until shutdown.
//!
//! The pending entries of this consumer are the retry queue: an attempt that cannot finish
//! leaves its entry pending, and the group's history is read again after a capped, growing
//! delay. New plans keep being read meanwhile, so a plan that cannot finish never holds up
//! the ones behind it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reconcile_exchange::{host_now_ms, Client, ClientConfig, Credentials, ExchangeError};
use reconcile_worker::redis::{connect, is_transient, ConnectError, ConnectOptions, Connection};
use reconcile_worker::{Backoff, Shutdown};
use redis::RedisError;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::execute::{self, Executor};
use crate::lanes;
use crate::metrics::Metrics;
use crate::mode::ModeCache;
use crate::module_info::ModuleInfo;
use crate::plan::Entry;
use crate::stream::{self, From};

/// Extra time a blocking read's reply may take beyond its `BLOCK`, before the connection is
/// presumed dead.
const READ_GRACE: Duration = Duration::from_secs(5);

/// Why the worker could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The metrics endpoint could not listen.
    #[error("serving metrics on {addr}: {source}")]
    Metrics { addr: SocketAddr, source: io::Error },
    /// A metric could not be registered (a name clash, which is a bug).
    #[error("registering metrics: {0}")]
    Registry(#[from] prometheus::Error),
    /// The exchange client refused its configuration.
    #[error("exchange client: {0}")]
    Exchange(#[from] ExchangeError),
    /// Redis refused the connection or its URL is invalid.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Redis answered a setup command with an error that waiting will not cure, such as an
    /// ACL refusal.
    #[error("{what}: {source}")]
    Redis {
        what: &'static str,
        source: RedisError,
    },
    /// The worker task panicked.
    #[error("worker task failed: {0}")]
    Task(String),
}

/// A started worker.
pub struct Running {
    metrics_addr: SocketAddr,
    main: JoinHandle<Result<(), Error>>,
    server: JoinHandle<io::Result<()>>,
}

impl Running {
    /// Where the metrics endpoint listens (useful with port 0).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Waits until the worker stops, after shutdown or a fatal error.
    pub async fn wait(self) -> Result<(), Error> {
        let result = self.main.await;
        if let Ok(Err(err)) = self.server.await {
            error!(error = %err, "metrics endpoint failed");
        }
        result.map_err(|e| Error::Task(e.to_string()))?
    }

    /// Stops the worker and its metrics endpoint at their next await point without any
    /// cleanup, as a crash would. The module poller ends with the shutdown token.
    pub fn kill(self) {
        self.main.abort();
        self.server.abort();
    }
}

/// Runs the worker until `shutdown` fires or it fails.
pub async fn run(
    config: Config,
    credentials: Credentials,
    shutdown: Shutdown,
) -> Result<(), Error> {
    start(config, credentials, shutdown).await?.wait().await
}

/// Starts the worker: builds the exchange client, binds the metrics endpoint, and spawns the
/// task that connects to Redis and processes plans.
pub async fn start(
    config: Config,
    credentials: Credentials,
    shutdown: Shutdown,
) -> Result<Running, Error> {
    let config = Arc::new(config);
    let mut exchange = ClientConfig::new(config.exchange_url.clone());
    exchange.timeout = config.exchange_timeout;
    exchange.unknown_outcome_settle = config.exchange_settle;
    let exchange = Arc::new(Client::new(exchange, credentials)?);

    let metrics = Arc::new(Metrics::new(config.limits.max_qty.symbols())?);
    metrics.watch_exchange(Arc::clone(&exchange))?;
    let (metrics_addr, server) = reconcile_worker::metrics::spawn(
        config.metrics_addr,
        metrics.registry().clone(),
        shutdown.clone(),
    )
    .await
    .map_err(|source| Error::Metrics {
        addr: config.metrics_addr,
        source,
    })?;

    let main = tokio::spawn(main_task(config, exchange, metrics, shutdown));
    Ok(Running {
        metrics_addr,
        main,
        server,
    })
}

async fn main_task(
    config: Arc<Config>,
    exchange: Arc<Client>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> Result<(), Error> {
    info!(consumer = %config.consumer, stream = %config.stream, group = %config.group,
        dry_run = config.dry_run, "apply worker starting");
    let options = ConnectOptions::default();
    let redis = match connect(&config.redis_url, options, &shutdown).await {
        Ok(redis) => redis,
        Err(ConnectError::ShutDown { .. }) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    let poller = tokio::spawn(poll_readings(
        redis.clone(),
        Arc::clone(&config),
        Arc::clone(&metrics),
        shutdown.clone(),
    ));
    if let Err(err) = exchange.sync_clock().await {
        warn!(error = %err, "exchange clock not synced; signed requests resync on demand");
    }
    let modes = Arc::new(ModeCache::new(config.mode_max_age));
    match execute::read_mode(&exchange, &modes).await {
        Ok(mode) => info!(?mode, "position mode read"),
        Err(err) => warn!(error = %err, "position mode not read; the first plan reads it"),
    }

    let mut worker = Worker {
        executor: Executor {
            config: Arc::clone(&config),
            redis,
            exchange,
            metrics,
            modes,
            unsent: Arc::default(),
        },
        reader: None,
        shutdown: shutdown.clone(),
    };
    let result = worker.run().await;
    let _ = poller.await;
    info!(consumer = %config.consumer, "apply worker stopped");
    result
}

struct Worker {
    executor: Executor,
    /// The connection of the blocking reads, used for nothing else: a blocking command on the
    /// shared connection would hold up every other command behind it.
    reader: Option<Connection>,
    shutdown: Shutdown,
}

impl Worker {
    fn config(&self) -> &Config {
        &self.executor.config
    }

    async fn run(&mut self) -> Result<(), Error> {
        if !self.ensure_group().await? {
            return Ok(());
        }
        let config = Arc::clone(&self.executor.config);
        let mut retry = Backoff::new(config.retry_base, config.retry_max).with_jitter();
        let mut trouble =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).with_jitter();
        // First this consumer's own pending entries, then those claimed from dead consumers.
        let mut history_due = Some(Instant::now());
        let mut claim_due = Instant::now();

        while !self.shutdown.is_triggered() {
            let now = Instant::now();
            if history_due.is_some_and(|due| due <= now) {
                history_due = match self.history_pass().await {
                    Ok(0) => {
                        retry.reset();
                        None
                    }
                    Ok(left) => {
                        let delay = retry.next_delay();
                        debug!(
                            left,
                            delay_ms = delay.as_millis() as u64,
                            "plans left pending"
                        );
                        Some(now + delay)
                    }
                    Err(err) => {
                        error!(error = %err, "reading pending plans failed");
                        Some(now + retry.next_delay())
                    }
                };
                continue;
            }
            if claim_due <= now {
                claim_due = now + config.claim_idle;
                match self.claim_idle().await {
                    Ok(0) => {}
                    Ok(claimed) => {
                        info!(claimed, "claimed plans left pending by other consumers");
                        history_due = Some(now);
                    }
                    Err(err) => error!(error = %err, "claiming idle plans failed"),
                }
                continue;
            }

            let next = history_due.map_or(claim_due, |due| due.min(claim_due));
            let block = config.block.min(next.saturating_duration_since(now));
            match self.read_new(block).await {
                Ok(None) => break,
                Ok(Some(left)) => {
                    trouble.reset();
                    if left > 0 && history_due.is_none() {
                        history_due = Some(Instant::now() + retry.next_delay());
                    }
                }
                Err(err) => {
                    error!(error = %err, "reading new plans failed");
                    self.reader = None;
                    if err.code() == Some("NOGROUP") && !self.ensure_group().await? {
                        break;
                    }
                    if !trouble.sleep(&self.shutdown).await {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates the group if needed, retrying while Redis is unreachable. `false` on shutdown.
    async fn ensure_group(&mut self) -> Result<bool, Error> {
        let mut backoff =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).with_jitter();
        loop {
            let (stream, group) = (&self.config().stream, &self.config().group);
            let (stream, group) = (stream.clone(), group.clone());
            match stream::ensure_group(&mut self.executor.redis, &stream, &group).await {
                Ok(()) => return Ok(true),
                Err(err) if is_transient(&err) => {
                    warn!(error = %err, "creating consumer group failed; retrying");
                    if !backoff.sleep(&self.shutdown).await {
                        return Ok(false);
                    }
                }
                Err(source) => {
                    return Err(Error::Redis {
                        what: "creating the consumer group",
                        source,
                    })
                }
            }
        }
    }

    /// Handles every pending entry of this consumer once. Returns how many are still pending.
    async fn history_pass(&mut self) -> Result<usize, RedisError> {
        let config = Arc::clone(&self.executor.config);
        let mut after = "0".to_string();
        let mut left = 0;
        loop {
            let entries = stream::read(
                &mut self.executor.redis,
                &config.stream,
                &config.group,
                &config.consumer,
                config.batch,
                None,
                From::History(&after),
            )
            .await?;
            let Some(last) = entries.last() else {
                return Ok(left);
            };
            after = last.id.clone();
            debug!(count = entries.len(), "pending plans read");
            left += self.handle(entries).await;
            if self.shutdown.is_triggered() {
                return Ok(left);
            }
        }
    }

    async fn claim_idle(&mut self) -> Result<usize, RedisError> {
        let config = Arc::clone(&self.executor.config);
        stream::claim_idle(
            &mut self.executor.redis,
            &config.stream,
            &config.group,
            &config.consumer,
            config.claim_idle,
            config.batch,
        )
        .await
    }

    /// Waits up to `block` for new plans and handles them. Returns how many were left
    /// pending, or `None` on shutdown.
    async fn read_new(&mut self, block: Duration) -> Result<Option<usize>, RedisError> {
        let config = Arc::clone(&self.executor.config);
        let reader = match self.reader.as_mut() {
            Some(reader) => reader,
            None => self.reader.insert(reader_connection(&config).await?),
        };
        let read = stream::read(
            reader,
            &config.stream,
            &config.group,
            &config.consumer,
            config.batch,
            Some(block),
            From::New,
        );
        let entries = tokio::select! {
            entries = read => entries?,
            _ = self.shutdown.wait() => return Ok(None),
        };
        Ok(Some(self.handle(entries).await))
    }

    /// Handles the entries of one read, different symbols side by side. Returns how many were
    /// left pending.
    async fn handle(&mut self, entries: Vec<Entry>) -> usize {
        let concurrency = self.executor.config.concurrency;
        lanes::handle(&mut self.executor, entries, concurrency, &self.shutdown).await
    }
}

async fn reader_connection(config: &Config) -> Result<Connection, RedisError> {
    let connect_timeout = Duration::from_secs(2);
    reconcile_worker::redis::open(
        &config.redis_url,
        connect_timeout,
        config.block + READ_GRACE,
    )
    .await
}

/// Every `interval` until shutdown, reads `INFO reconcile` into the module metrics and the
/// group's pending plans into their gauges. In a cluster both come from the node serving
/// `stream`.
async fn poll_readings(
    mut redis: Connection,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    let stream = config.stream.as_str();
    loop {
        let mut info = redis::cmd("INFO");
        info.arg("reconcile");
        let reading: Result<String, RedisError> = redis.query_at(&info, stream).await;
        match reading {
            Ok(text) => {
                let info = ModuleInfo::parse(&text);
                if info.is_none() {
                    warn!("INFO reconcile has no module fields; is the module loaded?");
                }
                metrics.module.set(info);
            }
            Err(err) => {
                warn!(error = %err, "reading INFO reconcile failed");
                metrics.module.set(None);
            }
        }
        // A failed reading leaves the gauges as they were: the same failure stops the worker's
        // own reads, which its retry metrics and the stall alert report.
        match stream::pending(&mut redis, stream, &config.group).await {
            Ok(pending) => metrics.pending(pending.count, pending.oldest_age(host_now_ms())),
            Err(err) => warn!(error = %err, "reading the group's pending plans failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(config.info_interval) => {}
            _ = shutdown.wait() => return,
        }
    }
}

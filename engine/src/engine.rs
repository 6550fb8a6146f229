//! One reconcile cycle, and the loop that runs cycles until shutdown.
//!
//! Per symbol and cycle: read the ledger and the exchange position, assess the drift, and
//! act once the same drift was seen on `confirm_cycles` consecutive cycles.
//!
//! # When a plan is outstanding
//!
//! The engine remembers, per symbol, the plan id and drift signature of the last plan it
//! published; after a restart it recovers them from the newest plan for the symbol in the
//! close stream. That plan is outstanding, and no new plan is published for the symbol, while
//! - the apply worker's dedupe key for it says `executing` (an order may be in flight, so
//!   even a changed drift waits; the HOLD is renewed meanwhile), or
//! - its HOLD lease is alive and the drift still has the plan's signature (the plan is
//!   queued, being executed, or finished but the position read has not caught up).
//!
//! A plan whose HOLD lapsed without the drift going away counts as lost and a new one is
//! published, so a drift is retried at most once per `hold_ttl`. When the exchange and the
//! ledger agree, the HOLD is removed and the plan forgotten.
//!
//! Anything unknown (a missing ledger, a failed read, a Redis error while checking) skips
//! the symbol for the cycle: a missing report never means flat, and doubt never publishes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reconcile_exchange::{host_now_ms, Client, Decimal, ExchangeError, PositionSide};
use reconcile_worker::redis::Connection;
use reconcile_worker::{Backoff, Shutdown};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::drift::{self, Assessment, Confirmation, Snapshot, Step};
use crate::metrics::Metrics;
use crate::plan::{self, EventKind, Plan};
use crate::store::{self, ApplyState, PublishedPlan, StoreError};

/// What one cycle did with one symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not assessed this cycle.
    Skipped(SkipReason),
    /// Exchange and ledger agree; `hold_cleared` when a HOLD was removed.
    InSync { hold_cleared: bool },
    /// A drift seen on `seen` consecutive cycles, fewer than needed.
    Unconfirmed { seen: u32 },
    /// A plan was signed into the close stream.
    Published { plan_id: String },
    /// The drift's plan is still outstanding; nothing was published.
    Outstanding { plan_id: String },
    /// A drift no reduce-only order can fix; `reported` when the event was written now
    /// (it is written once per drift).
    Manual { reported: bool },
}

/// Why a symbol was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No ledger hash or no `ledger_amt` field.
    LedgerMissing,
    /// `ledger_amt` is not a decimal.
    LedgerInvalid,
    /// The exchange did not answer, or answered with an error.
    ExchangeFailed,
    /// The account reports hedge-mode legs, which a one-amount ledger cannot be compared with.
    HedgeMode,
    /// The symbol's filters have no positive step.
    NoStep,
    /// The quantity to close is below what the exchange accepts.
    QuantityRefused,
    /// A Redis command failed.
    RedisFailed,
}

impl SkipReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::LedgerMissing => "ledger_missing",
            SkipReason::LedgerInvalid => "ledger_invalid",
            SkipReason::ExchangeFailed => "exchange_failed",
            SkipReason::HedgeMode => "hedge_mode",
            SkipReason::NoStep => "no_step",
            SkipReason::QuantityRefused => "quantity_refused",
            SkipReason::RedisFailed => "redis_failed",
        }
    }

    /// Whether the skip comes from a connection that may recover, so the next cycle should
    /// come after a backoff rather than the usual interval.
    pub fn is_io(self) -> bool {
        matches!(self, SkipReason::ExchangeFailed | SkipReason::RedisFailed)
    }
}

impl From<StoreError> for SkipReason {
    fn from(err: StoreError) -> SkipReason {
        match err {
            StoreError::Redis(_) => SkipReason::RedisFailed,
            StoreError::BadLedger { .. } => SkipReason::LedgerInvalid,
        }
    }
}

/// Every symbol's outcome in one cycle, in the configured order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleReport {
    pub outcomes: Vec<(String, Outcome)>,
}

impl CycleReport {
    /// The outcome of `symbol`, if it is configured.
    pub fn outcome(&self, symbol: &str) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|(s, _)| s == symbol)
            .map(|(_, o)| o)
    }

    /// False when a symbol was skipped because Redis or the exchange failed.
    pub fn reached_everything(&self) -> bool {
        !self
            .outcomes
            .iter()
            .any(|(_, outcome)| matches!(outcome, Outcome::Skipped(reason) if reason.is_io()))
    }
}

/// What the engine keeps about one symbol between cycles.
#[derive(Debug, Default)]
struct SymbolState {
    confirmation: Confirmation,
    /// The last plan published for the symbol, `None` before any.
    plan: Option<PublishedPlan>,
    /// Whether `plan` was looked up in the close stream already (once per process).
    recovered: bool,
    /// The signature of the manual drift last reported, so it is reported once.
    manual_reported: Option<String>,
}

/// The settings a cycle needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub symbols: Vec<String>,
    pub hold_ttl: Duration,
    pub confirm_cycles: u32,
    pub stream_maxlen: u64,
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Settings {
        Settings {
            symbols: config.symbols.clone(),
            hold_ttl: config.hold_ttl,
            confirm_cycles: config.confirm_cycles,
            stream_maxlen: config.stream_maxlen,
        }
    }
}

/// How many replicas must acknowledge a plan, and how long to wait for them.
///
/// A plan fewer replicas acknowledged still counts as published: it is in the master's
/// stream, the apply worker reading there executes it, and publishing it again under a new
/// plan id could close twice. Only a failover before the replicas caught up loses it; the
/// HOLD lease then lapses with the drift unchanged and the engine plans it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinReplicas {
    /// 0 sends no WAIT.
    pub count: u32,
    pub timeout: Duration,
}

impl Default for MinReplicas {
    fn default() -> MinReplicas {
        MinReplicas {
            count: 0,
            timeout: Duration::from_secs(1),
        }
    }
}

impl From<&Config> for MinReplicas {
    fn from(config: &Config) -> MinReplicas {
        MinReplicas {
            count: config.min_replicas,
            timeout: config.min_replicas_timeout,
        }
    }
}

/// The reconcile engine: its connections, settings and per-symbol memory.
pub struct Engine {
    redis: Connection,
    /// The guarded stream plans are signed into.
    stream: String,
    exchange: Client,
    settings: Settings,
    min_replicas: MinReplicas,
    metrics: Metrics,
    symbols: HashMap<String, SymbolState>,
}

impl Engine {
    /// An engine over connections that are already open.
    pub fn new(
        redis: Connection,
        exchange: Client,
        settings: Settings,
        metrics: Metrics,
    ) -> Engine {
        Engine {
            redis,
            stream: store::CLOSE_STREAM.to_string(),
            exchange,
            settings,
            min_replicas: MinReplicas::default(),
            metrics,
            symbols: HashMap::new(),
        }
    }

    /// Signs plans into `stream` instead of the usual close stream. In a cluster it needs a
    /// hash tag, which the apply worker's keys then share.
    pub fn with_stream(mut self, stream: &str) -> Engine {
        self.stream = stream.to_string();
        self
    }

    /// Makes every published plan wait for `min_replicas` replica acknowledgements.
    pub fn with_min_replicas(mut self, min_replicas: MinReplicas) -> Engine {
        self.min_replicas = min_replicas;
        self
    }

    /// Runs cycles every `interval` until `shutdown`. After a cycle in which Redis or the
    /// exchange failed, the next one comes after a capped backoff instead, and the exchange
    /// clock is synchronised again.
    pub async fn run(mut self, interval: Duration, shutdown: Shutdown) {
        let mut backoff = Backoff::new(
            interval.min(Duration::from_secs(1)),
            interval.max(Duration::from_secs(60)),
        )
        .with_jitter();
        loop {
            let report = self.cycle().await;
            let delay = if report.reached_everything() {
                backoff.reset();
                interval
            } else {
                if let Err(err) = self.exchange.sync_clock().await {
                    error!(error = %err, "exchange clock sync failed");
                }
                backoff.next_delay()
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait() => break,
            }
        }
        info!("engine stopped");
    }

    /// One pass over every symbol.
    pub async fn cycle(&mut self) -> CycleReport {
        let started = Instant::now();
        let mut report = CycleReport::default();
        for symbol in self.settings.symbols.clone() {
            let outcome = self.check(&symbol).await;
            if let Outcome::Skipped(reason) = outcome {
                self.state(&symbol).confirmation.reset();
                self.metrics
                    .symbols_skipped
                    .with_label_values(&[symbol.as_str(), reason.as_str()])
                    .inc();
            }
            debug!(symbol, ?outcome, "checked");
            report.outcomes.push((symbol, outcome));
        }
        self.metrics
            .cycle_duration
            .observe(started.elapsed().as_secs_f64());
        if report.reached_everything() {
            self.metrics
                .last_good_cycle
                .set(host_now_ms() as f64 / 1000.0);
        }
        report
    }

    async fn check(&mut self, symbol: &str) -> Outcome {
        let snapshot = match self.snapshot(symbol).await {
            Ok(snapshot) => snapshot,
            Err(reason) => return Outcome::Skipped(reason),
        };
        let step = match self.step(symbol).await {
            Ok(step) => step,
            Err(reason) => return Outcome::Skipped(reason),
        };

        let assessment = drift::assess(snapshot, step);
        let Some(kind) = assessment.kind() else {
            return self.in_sync(symbol).await;
        };
        self.metrics
            .drift_seen
            .with_label_values(&[symbol, kind.as_str()])
            .inc();
        let signature = drift::signature(symbol, snapshot);
        let needed = self.settings.confirm_cycles;
        let confirmation = &mut self.state(symbol).confirmation;
        if !confirmation.observe(&signature, needed) {
            let seen = confirmation.seen();
            info!(symbol, %kind, seen, needed, "drift awaiting confirmation");
            return Outcome::Unconfirmed { seen };
        }

        match assessment {
            Assessment::Close { side, qty, .. } => {
                let plan = Plan::new(symbol, snapshot, side, qty, &signature, host_now_ms());
                self.close(plan).await
            }
            _ => self.manual(symbol, snapshot, &signature).await,
        }
    }

    /// Both amounts of `symbol`, or why they could not both be read.
    async fn snapshot(&mut self, symbol: &str) -> Result<Snapshot, SkipReason> {
        let ledger = match store::read_ledger(&mut self.redis, symbol).await {
            Ok(Some(ledger)) => ledger,
            Ok(None) => {
                warn!(symbol, "no ledger; skipping");
                return Err(SkipReason::LedgerMissing);
            }
            Err(err) => {
                error!(symbol, error = %err, "reading ledger failed");
                return Err(err.into());
            }
        };
        let exchange = self.position(symbol).await?;
        Ok(Snapshot {
            exchange_amt: exchange,
            ledger_amt: ledger,
        })
    }

    async fn position(&self, symbol: &str) -> Result<Decimal, SkipReason> {
        let rows = self
            .exchange
            .position_risk(Some(symbol))
            .await
            .map_err(|err| exchange_failed(symbol, "reading position", &err))?;
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|row| row.symbol == symbol)
            .collect();
        if rows
            .iter()
            .any(|row| row.position_side != PositionSide::Both)
        {
            // TODO: hedge mode has a LONG and a SHORT leg per symbol, while the ledger holds
            // one signed amount and a plan names no leg; supporting it needs a per-leg
            // ledger and a positionSide field that the apply worker understands.
            warn!(symbol, "account is in hedge mode; skipping");
            return Err(SkipReason::HedgeMode);
        }
        Ok(rows.iter().map(|row| row.position_amt).sum())
    }

    /// The symbol's step: the coarser of its lot and market-lot steps, so that a multiple of
    /// it is a multiple of both when one divides the other, as on the exchange.
    async fn step(&self, symbol: &str) -> Result<Step, SkipReason> {
        let filters = self
            .exchange
            .symbol_filters(symbol)
            .await
            .map_err(|err| exchange_failed(symbol, "reading filters", &err))?;
        let market = filters.market_lot_size.map(|lot| lot.step_size);
        let step = market.map_or(filters.lot_size.step_size, |m| {
            m.max(filters.lot_size.step_size)
        });
        Step::new(step).ok_or_else(|| {
            error!(symbol, %step, "symbol has no positive step");
            SkipReason::NoStep
        })
    }

    async fn in_sync(&mut self, symbol: &str) -> Outcome {
        let state = self.state(symbol);
        state.confirmation.reset();
        state.manual_reported = None;
        let cleared = match store::clear_hold(&mut self.redis, symbol).await {
            Ok(cleared) => cleared,
            Err(err) => {
                error!(symbol, error = %err, "clearing HOLD failed");
                return Outcome::Skipped(err.into());
            }
        };
        self.state(symbol).plan = None;
        self.metrics.hold_active.with_label_values(&[symbol]).set(0);
        if cleared {
            info!(symbol, "in sync; HOLD cleared");
            self.event(EventKind::HoldCleared, symbol, &[]).await;
        }
        Outcome::InSync {
            hold_cleared: cleared,
        }
    }

    async fn close(&mut self, plan: Plan) -> Outcome {
        let symbol = plan.symbol.clone();
        match self.outstanding(&symbol, &plan.signature).await {
            Ok(Some(plan_id)) => {
                debug!(symbol, plan_id, "plan outstanding");
                return Outcome::Outstanding { plan_id };
            }
            Ok(None) => {}
            Err(err) => {
                error!(symbol, error = %err, "checking the last plan failed");
                return Outcome::Skipped(err.into());
            }
        }
        if let Err(reason) = self.check_quantity(&plan).await {
            return Outcome::Skipped(reason);
        }
        match self.publish(&plan).await {
            Ok(()) => Outcome::Published {
                plan_id: plan.plan_id,
            },
            Err(err) => {
                error!(symbol, plan_id = plan.plan_id, error = %err, "publishing plan failed");
                Outcome::Skipped(err.into())
            }
        }
    }

    /// The id of the symbol's outstanding plan, if one is (see the module docs).
    async fn outstanding(
        &mut self,
        symbol: &str,
        signature: &str,
    ) -> Result<Option<String>, StoreError> {
        if !self.state(symbol).recovered {
            let recovered = store::last_plan(&mut self.redis, &self.stream, symbol).await?;
            let state = self.state(symbol);
            state.recovered = true;
            if state.plan.is_none() {
                state.plan = recovered;
            }
        }
        let Some(plan) = self.state(symbol).plan.clone() else {
            return Ok(None);
        };

        if store::apply_state(&mut self.redis, &self.stream, &plan.plan_id).await?
            == ApplyState::Executing
        {
            store::set_hold(&mut self.redis, symbol, self.settings.hold_ttl).await?;
            self.metrics.hold_active.with_label_values(&[symbol]).set(1);
            return Ok(Some(plan.plan_id));
        }
        let held = store::hold_exists(&mut self.redis, symbol).await?;
        self.metrics
            .hold_active
            .with_label_values(&[symbol])
            .set(i64::from(held));
        if held && plan.signature == signature {
            return Ok(Some(plan.plan_id));
        }
        if plan.signature == signature {
            warn!(
                symbol,
                plan_id = plan.plan_id,
                "HOLD lapsed with the drift unchanged; planning again"
            );
        }
        Ok(None)
    }

    /// Refuses a quantity the exchange's lot filters would not take as it is.
    async fn check_quantity(&self, plan: &Plan) -> Result<(), SkipReason> {
        let filters = self
            .exchange
            .symbol_filters(&plan.symbol)
            .await
            .map_err(|err| exchange_failed(&plan.symbol, "reading filters", &err))?;
        let symbol = plan.symbol.as_str();
        match filters.market_quantity(plan.qty) {
            Ok(quantity) if quantity.value() == plan.qty => Ok(()),
            Ok(quantity) => {
                let accepted = quantity.value();
                warn!(symbol, qty = %plan.qty, %accepted, "quantity not on the lot filters");
                Err(SkipReason::QuantityRefused)
            }
            Err(err) => {
                warn!(symbol, qty = %plan.qty, error = %err, "quantity refused by lot filters");
                Err(SkipReason::QuantityRefused)
            }
        }
    }

    /// HOLD first, so the trading system stands still before the plan can be executed.
    async fn publish(&mut self, plan: &Plan) -> Result<(), StoreError> {
        let symbol = plan.symbol.as_str();
        store::set_hold(&mut self.redis, symbol, self.settings.hold_ttl).await?;
        self.metrics.hold_active.with_label_values(&[symbol]).set(1);
        let ttl_ms = self.settings.hold_ttl.as_millis().to_string();
        self.event(EventKind::HoldSet, symbol, &[("ttl_ms", ttl_ms)])
            .await;

        let id = store::publish_plan(
            &mut self.redis,
            &self.stream,
            &plan.fields(),
            self.settings.stream_maxlen,
        )
        .await?;
        self.await_replicas(symbol, &id).await;
        self.state(symbol).plan = Some(PublishedPlan {
            plan_id: plan.plan_id.clone(),
            signature: plan.signature.clone(),
        });
        self.metrics
            .plans_published
            .with_label_values(&[symbol])
            .inc();
        warn!(
            symbol,
            plan_id = plan.plan_id,
            entry = id,
            side = plan.side.as_str(),
            qty = %plan.qty,
            exchange = %plan.snapshot.exchange_amt,
            ledger = %plan.snapshot.ledger_amt,
            "drift; close plan published"
        );
        let mut detail = vec![
            ("plan_id", plan.plan_id.clone()),
            ("entry_id", id),
            ("side", plan.side.as_str().to_string()),
            ("qty", reconcile_exchange::canonical(plan.qty)),
            ("signature", plan.signature.clone()),
        ];
        detail.extend(plan::snapshot_detail(plan.snapshot));
        self.event(EventKind::PlanPublished, symbol, &detail).await;
        Ok(())
    }

    /// WAITs for the configured replicas after a plan; counts and logs a shortfall. A failed
    /// WAIT counts as a shortfall too, since nothing says the plan reached a replica.
    async fn await_replicas(&mut self, symbol: &str, entry: &str) {
        let MinReplicas { count, timeout } = self.min_replicas;
        if count == 0 {
            return;
        }
        let acked = match store::wait_replicas(&mut self.redis, &self.stream, count, timeout).await
        {
            Ok(acked) => acked,
            Err(err) => {
                error!(symbol, entry, error = %err, "WAIT for replicas failed");
                0
            }
        };
        if acked < u64::from(count) {
            self.metrics
                .plans_unreplicated
                .with_label_values(&[symbol])
                .inc();
            warn!(
                symbol,
                entry,
                acked,
                wanted = count,
                "plan not acknowledged by enough replicas; a failover now would lose it"
            );
        } else {
            debug!(symbol, entry, acked, "plan replicated");
        }
    }

    async fn manual(&mut self, symbol: &str, snapshot: Snapshot, signature: &str) -> Outcome {
        let state = self.state(symbol);
        if state.manual_reported.as_deref() == Some(signature) {
            return Outcome::Manual { reported: false };
        }
        state.manual_reported = Some(signature.to_string());
        warn!(
            symbol,
            exchange = %snapshot.exchange_amt,
            ledger = %snapshot.ledger_amt,
            "drift a reduce-only order cannot fix; manual action required"
        );
        let mut detail = vec![("signature", signature.to_string())];
        detail.extend(plan::snapshot_detail(snapshot));
        self.event(EventKind::ManualRequired, symbol, &detail).await;
        Outcome::Manual { reported: true }
    }

    /// Appends an event. A failure is logged and otherwise ignored: events inform people,
    /// and the action they describe has happened either way.
    async fn event(&mut self, kind: EventKind, symbol: &str, detail: &[(&'static str, String)]) {
        let fields = plan::event_fields(kind, symbol, detail, host_now_ms());
        if let Err(err) =
            store::append_event(&mut self.redis, &fields, self.settings.stream_maxlen).await
        {
            error!(symbol, event = kind.as_str(), error = %err, "writing event failed");
        }
    }

    fn state(&mut self, symbol: &str) -> &mut SymbolState {
        self.symbols.entry(symbol.to_string()).or_default()
    }
}

fn exchange_failed(symbol: &str, what: &'static str, err: &ExchangeError) -> SkipReason {
    error!(symbol, what, error = %err, "exchange read failed; skipping");
    SkipReason::ExchangeFailed
}

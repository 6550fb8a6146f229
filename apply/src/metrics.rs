//! The worker's Prometheus metrics. The names of the first four are the ones the replaced
//! system's dashboards and alerts use.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use reconcile_exchange::Client;

use crate::invariants::Rule;
use crate::module_info::{Latest, ModuleCollector};
use crate::outcome::Status;

/// Symbol label of plans whose symbol is not configured (or not readable), so that a signer
/// cannot grow the label set without bound.
pub const OTHER_SYMBOL: &str = "other";

/// Why a plan was left pending to be tried again: the `cause` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryCause {
    /// A Redis command failed.
    Redis,
    /// The exchange refused for now; nothing was executed.
    Exchange,
    /// The exchange could not say whether the order was executed.
    UnknownOutcome,
    /// An earlier claim on the plan is too young to be settled or taken over.
    Claimed,
}

impl RetryCause {
    pub fn label(self) -> &'static str {
        match self {
            RetryCause::Redis => "redis",
            RetryCause::Exchange => "exchange",
            RetryCause::UnknownOutcome => "unknown_outcome",
            RetryCause::Claimed => "claimed",
        }
    }
}

/// Every metric of the worker, registered in one registry.
pub struct Metrics {
    registry: Registry,
    symbols: BTreeSet<String>,
    consumed: IntCounterVec,
    guardrail_fail: IntCounterVec,
    executed: IntCounterVec,
    dedupe_hits: IntCounter,
    plan_to_order: Histogram,
    retries: IntCounterVec,
    pending: IntGauge,
    oldest_pending: Gauge,
    /// The module's last `INFO reconcile` reading.
    pub module: Latest,
}

impl Metrics {
    /// Registers every metric; the series of the configured `symbols`, of every rule and of
    /// every status start at zero, so that rates and alerts work before the first event.
    pub fn new<'a>(
        symbols: impl IntoIterator<Item = &'a str>,
    ) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let consumed = IntCounterVec::new(
            Opts::new(
                "reconcile_close_consumed_total",
                "Close plans taken off the stream with a final outcome",
            ),
            &["symbol"],
        )?;
        let guardrail_fail = IntCounterVec::new(
            Opts::new(
                "reconcile_close_guardrail_fail_total",
                "Close plans refused, by the invariant they failed",
            ),
            &["symbol", "rule"],
        )?;
        let executed = IntCounterVec::new(
            Opts::new(
                "reconcile_close_executed_total",
                "Close plans that reached the exchange (or would have, in dry-run), by outcome",
            ),
            &["status"],
        )?;
        let dedupe_hits = IntCounter::new(
            "quantum_apply_dedupe_hits_total",
            "Close plans already done when delivered again",
        )?;
        let plan_to_order = Histogram::with_opts(
            HistogramOpts::new(
                "reconcile_close_plan_to_order_seconds",
                "Time from a plan's ts to the exchange's answer to its order",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "reconcile_close_retry_total",
                "Attempts that left a plan pending to be tried again, by cause",
            ),
            &["cause"],
        )?;
        let pending = IntGauge::new(
            "reconcile_close_pending",
            "Close plans delivered to the apply group and not yet acknowledged, at the last reading",
        )?;
        let oldest_pending = Gauge::new(
            "reconcile_close_oldest_pending_seconds",
            "Age of the oldest of those plans by its entry ID, at the last reading; 0 when none",
        )?;
        registry.register(Box::new(consumed.clone()))?;
        registry.register(Box::new(guardrail_fail.clone()))?;
        registry.register(Box::new(executed.clone()))?;
        registry.register(Box::new(dedupe_hits.clone()))?;
        registry.register(Box::new(plan_to_order.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(oldest_pending.clone()))?;
        let module = Latest::default();
        registry.register(Box::new(ModuleCollector::new(module.clone())?))?;

        let symbols: BTreeSet<String> = symbols.into_iter().map(str::to_owned).collect();
        for symbol in symbols.iter().map(String::as_str).chain([OTHER_SYMBOL]) {
            consumed.with_label_values(&[symbol]);
            for rule in Rule::ALL {
                guardrail_fail.with_label_values(&[symbol, rule.label()]);
            }
        }
        for status in Status::EXECUTED {
            executed.with_label_values(&[status.label()]);
        }
        Ok(Metrics {
            registry,
            symbols,
            consumed,
            guardrail_fail,
            executed,
            dedupe_hits,
            plan_to_order,
            retries,
            pending,
            oldest_pending,
            module,
        })
    }

    /// The registry to serve.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The symbol label for `symbol`: itself when configured, [`OTHER_SYMBOL`] otherwise.
    pub fn symbol_label<'a>(&self, symbol: Option<&'a str>) -> &'a str {
        match symbol {
            Some(symbol) if self.symbols.contains(symbol) => symbol,
            _ => OTHER_SYMBOL,
        }
    }

    /// Counts a plan taken off the stream with `status`, refused under `rule` if it was.
    pub(crate) fn settled(&self, symbol: Option<&str>, status: Status, rule: Option<Rule>) {
        let symbol = self.symbol_label(symbol);
        self.consumed.with_label_values(&[symbol]).inc();
        match (status, rule) {
            (Status::Refused, Some(rule)) => {
                self.guardrail_fail
                    .with_label_values(&[symbol, rule.label()])
                    .inc();
            }
            (Status::Duplicate, _) => self.dedupe_hits.inc(),
            (status, _) if Status::EXECUTED.contains(&status) => {
                self.executed.with_label_values(&[status.label()]).inc();
            }
            _ => {}
        }
    }

    pub(crate) fn plan_to_order(&self, seconds: f64) {
        self.plan_to_order.observe(seconds);
    }

    pub(crate) fn retry(&self, cause: RetryCause) {
        self.retries.with_label_values(&[cause.label()]).inc();
    }

    /// Serves the exchange client's clock offset and request pause, read at each scrape.
    pub fn watch_exchange(&self, exchange: Arc<Client>) -> Result<(), prometheus::Error> {
        self.registry
            .register(Box::new(ExchangeGauges::new(exchange)?))
    }

    /// Records a reading of the group's pending plans.
    pub(crate) fn pending(&self, count: u64, oldest_age: Duration) {
        self.pending.set(i64::try_from(count).unwrap_or(i64::MAX));
        self.oldest_pending.set(oldest_age.as_secs_f64());
    }
}

/// The exchange client's state as gauges, taken when Prometheus scrapes.
struct ExchangeGauges {
    exchange: Arc<Client>,
    clock_offset: Gauge,
    pause: Gauge,
}

impl ExchangeGauges {
    fn new(exchange: Arc<Client>) -> Result<ExchangeGauges, prometheus::Error> {
        Ok(ExchangeGauges {
            exchange,
            clock_offset: Gauge::new(
                "reconcile_exchange_clock_offset_seconds",
                "The exchange's clock minus this host's, as last learned; signed requests \
                 correct for it",
            )?,
            pause: Gauge::new(
                "reconcile_exchange_pause_seconds",
                "What remains of the pause the exchange asked for with Retry-After (429 or a \
                 418 ban); no request is sent meanwhile",
            )?,
        })
    }
}

impl Collector for ExchangeGauges {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.clock_offset.desc();
        descs.extend(self.pause.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Milliseconds to seconds: an offset is far below the 2^53 where f64 loses precision.
        let offset_ms = self.exchange.clock_offset_ms() as f64;
        self.clock_offset.set(offset_ms / 1000.0);
        let pause = self.exchange.holding_off().unwrap_or_default();
        self.pause.set(pause.as_secs_f64());
        let mut families = self.clock_offset.collect();
        families.extend(self.pause.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_names_are_served_from_the_start() {
        let metrics = Metrics::new(["BTCUSDT"]).unwrap();
        let text = reconcile_worker::metrics::render(metrics.registry()).unwrap();
        for line in [
            "reconcile_close_consumed_total{symbol=\"BTCUSDT\"} 0",
            "reconcile_close_guardrail_fail_total{rule=\"hmac\",symbol=\"BTCUSDT\"} 0",
            "reconcile_close_executed_total{status=\"success\"} 0",
            "quantum_apply_dedupe_hits_total 0",
            "reconcile_close_plan_to_order_seconds_count 0",
            "reconcile_close_pending 0",
            "reconcile_close_oldest_pending_seconds 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn unknown_symbols_share_one_label() {
        let metrics = Metrics::new(["BTCUSDT"]).unwrap();
        metrics.settled(Some("DOGEUSDT"), Status::Refused, Some(Rule::MaxQty));
        metrics.settled(None, Status::Refused, Some(Rule::Parse));
        metrics.settled(Some("BTCUSDT"), Status::Duplicate, None);
        let text = reconcile_worker::metrics::render(metrics.registry()).unwrap();
        assert!(text.contains("reconcile_close_consumed_total{symbol=\"other\"} 2"));
        assert!(!text.contains("DOGEUSDT"));
        assert!(text.contains("quantum_apply_dedupe_hits_total 1"));
    }
}

//! The engine's Prometheus metrics, registered on the registry the metrics server serves.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::drift::DriftKind;

/// Every metric the engine updates.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Cycles on which a drift was seen, by symbol and kind (excess, opposite, manual).
    pub drift_seen: IntCounterVec,
    /// Close plans signed into the stream, by symbol.
    pub plans_published: IntCounterVec,
    /// Plans fewer than `--min-replicas` replicas acknowledged within the timeout, by symbol.
    pub plans_unreplicated: IntCounterVec,
    /// 1 while the engine holds the symbol's HOLD lease, by symbol.
    pub hold_active: IntGaugeVec,
    /// Symbols left out of a cycle, by symbol and reason.
    pub symbols_skipped: IntCounterVec,
    /// How long one cycle over every symbol took.
    pub cycle_duration: Histogram,
    /// Unix time of the last cycle in which every symbol was read.
    pub last_good_cycle: Gauge,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        let metrics = Metrics {
            drift_seen: IntCounterVec::new(
                Opts::new(
                    "reconcile_drift_seen_total",
                    "Cycles on which a drift was seen",
                ),
                &["symbol", "kind"],
            )?,
            plans_published: IntCounterVec::new(
                Opts::new("reconcile_plans_published_total", "Close plans signed"),
                &["symbol"],
            )?,
            plans_unreplicated: IntCounterVec::new(
                Opts::new(
                    "reconcile_plans_unreplicated_total",
                    "Plans fewer replicas acknowledged than --min-replicas asks",
                ),
                &["symbol"],
            )?,
            hold_active: IntGaugeVec::new(
                Opts::new(
                    "reconcile_hold_active",
                    "Whether the symbol's HOLD lease is set",
                ),
                &["symbol"],
            )?,
            symbols_skipped: IntCounterVec::new(
                Opts::new(
                    "reconcile_symbols_skipped_total",
                    "Symbols left out of a cycle",
                ),
                &["symbol", "reason"],
            )?,
            cycle_duration: Histogram::with_opts(HistogramOpts::new(
                "reconcile_cycle_duration_seconds",
                "Duration of one reconcile cycle",
            ))?,
            last_good_cycle: Gauge::new(
                "reconcile_last_good_cycle_timestamp_seconds",
                "Unix time of the last cycle that read every symbol",
            )?,
        };
        registry.register(Box::new(metrics.drift_seen.clone()))?;
        registry.register(Box::new(metrics.plans_published.clone()))?;
        registry.register(Box::new(metrics.plans_unreplicated.clone()))?;
        registry.register(Box::new(metrics.hold_active.clone()))?;
        registry.register(Box::new(metrics.symbols_skipped.clone()))?;
        registry.register(Box::new(metrics.cycle_duration.clone()))?;
        registry.register(Box::new(metrics.last_good_cycle.clone()))?;
        Ok(metrics)
    }

    /// Creates the per-symbol series at zero, so that `increase()` and `rate()` see the first
    /// plan after a restart instead of a series that appears with it.
    pub fn start_at_zero(&self, symbols: &[String]) {
        for symbol in symbols {
            self.plans_published.with_label_values(&[symbol]).reset();
            self.plans_unreplicated.with_label_values(&[symbol]).reset();
            self.hold_active.with_label_values(&[symbol]).set(0);
            for kind in [DriftKind::Excess, DriftKind::Opposite, DriftKind::Manual] {
                self.drift_seen
                    .with_label_values(&[symbol, kind.as_str()])
                    .reset();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_symbols_are_exported_before_their_first_plan() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        metrics.start_at_zero(&["BTCUSDT".to_string()]);
        let text = reconcile_worker::metrics::render(&registry).unwrap();
        assert!(
            text.contains("reconcile_plans_published_total{symbol=\"BTCUSDT\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("reconcile_hold_active{symbol=\"BTCUSDT\"} 0"),
            "{text}"
        );
        let kind = "reconcile_drift_seen_total{kind=\"manual\",symbol=\"BTCUSDT\"} 0";
        assert!(text.contains(kind), "{text}");
    }
}

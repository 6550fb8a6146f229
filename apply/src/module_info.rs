//! The signing module's `INFO reconcile` counters, re-exported to Prometheus.
//!
//! The usual Redis exporter drops fields it does not know, so a forgery refused inside Redis
//! would never reach an alert. The worker reads the section periodically and serves the last
//! reading as `reconcile_module_*` metrics: counters stay counters (they reset when Redis
//! restarts, as Prometheus expects of counters) and `reconcile_module_up` says whether the
//! last reading succeeded.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

/// Redis prefixes each field of a module's section with the module name.
const FIELD_PREFIX: &str = "reconcile_";

/// The per-reason rejection fields, by the `reason` label they are exported under.
const REJECTION_REASONS: [&str; 5] = [
    "bad_mac",
    "unknown_kid",
    "missing_mac",
    "stale",
    "malformed",
];

/// Counters exported one to one: (INFO field, metric name, help).
const COUNTERS: [(&str, &str, &str); 6] = [
    (
        "signed_total",
        "reconcile_module_signed_total",
        "Entries signed by RECONCILE.XADDSIGNED",
    ),
    (
        "verified_total",
        "reconcile_module_verified_total",
        "Entries that passed verification",
    ),
    (
        "guard_denied_total",
        "reconcile_module_guard_denied_total",
        "Writes to a guarded key that the module refused",
    ),
    (
        "quarantined_total",
        "reconcile_module_quarantined_total",
        "Entries copied to a quarantine stream",
    ),
    (
        "keyring_reloads_total",
        "reconcile_module_keyring_reloads_total",
        "Keyring reloads",
    ),
    (
        "keyring_reload_failures_total",
        "reconcile_module_keyring_reload_failures_total",
        "Keyring reloads that failed and kept the previous keys",
    ),
];

/// Gauges exported one to one.
const GAUGES: [(&str, &str, &str); 2] = [
    (
        "keyring_keys",
        "reconcile_module_keyring_keys",
        "Keys in the keyring",
    ),
    (
        "max_age_ms",
        "reconcile_module_max_age_ms",
        "Freshness window of first deliveries, in milliseconds",
    ),
];

const REJECTED: (&str, &str) = (
    "reconcile_module_rejected_total",
    "Entries that failed verification, by reason",
);
const ACTIVE_KID: (&str, &str) = (
    "reconcile_module_keyring_active",
    "1 for the KID of the signing key",
);
const UP: (&str, &str) = (
    "reconcile_module_up",
    "1 when the last INFO reconcile reading succeeded",
);

/// One reading of the section: numeric fields by name (without the prefix), and the KID of
/// the signing key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModuleInfo {
    pub numbers: BTreeMap<String, f64>,
    pub active_kid: Option<String>,
}

impl ModuleInfo {
    /// Reads the text of `INFO reconcile`. `None` when the section holds no module field,
    /// as when the module is not loaded.
    pub fn parse(text: &str) -> Option<ModuleInfo> {
        let mut info = ModuleInfo::default();
        for line in text.lines() {
            let Some((name, value)) = line.trim().split_once(':') else {
                continue;
            };
            let Some(field) = name.strip_prefix(FIELD_PREFIX) else {
                continue;
            };
            if field == "keyring_active_kid" {
                info.active_kid = Some(value.to_string());
            } else if let Ok(number) = value.parse::<f64>() {
                info.numbers.insert(field.to_string(), number);
            }
        }
        (!info.numbers.is_empty()).then_some(info)
    }
}

/// The last reading, shared between the poller that writes it and the collector.
#[derive(Debug, Clone, Default)]
pub struct Latest(Arc<RwLock<Option<ModuleInfo>>>);

impl Latest {
    /// Replaces the reading; `None` marks the module as unreadable.
    pub fn set(&self, info: Option<ModuleInfo>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = info;
    }

    fn get(&self) -> Option<ModuleInfo> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A Prometheus collector over [`Latest`].
pub struct ModuleCollector {
    latest: Latest,
    descs: Vec<Desc>,
}

impl ModuleCollector {
    pub fn new(latest: Latest) -> Result<ModuleCollector, prometheus::Error> {
        let mut descs = Vec::new();
        for (_, name, help) in COUNTERS.iter().chain(GAUGES.iter()) {
            descs.push(Desc::new(
                name.to_string(),
                help.to_string(),
                vec![],
                Default::default(),
            )?);
        }
        let labelled = [(REJECTED, "reason"), (ACTIVE_KID, "kid")];
        for ((name, help), label) in labelled {
            let labels = vec![label.to_string()];
            descs.push(Desc::new(
                name.into(),
                help.into(),
                labels,
                Default::default(),
            )?);
        }
        descs.push(Desc::new(
            UP.0.into(),
            UP.1.into(),
            vec![],
            Default::default(),
        )?);
        Ok(ModuleCollector { latest, descs })
    }
}

impl Collector for ModuleCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(info) = self.latest.get() else {
            return vec![family(UP, MetricType::GAUGE, vec![sample(&[], 0.0)])];
        };
        let mut families = vec![family(UP, MetricType::GAUGE, vec![sample(&[], 1.0)])];
        let one = |field: &str| info.numbers.get(field).copied();
        for (field, name, help) in COUNTERS {
            if let Some(value) = one(field) {
                families.push(family(
                    (name, help),
                    MetricType::COUNTER,
                    vec![sample(&[], value)],
                ));
            }
        }
        for (field, name, help) in GAUGES {
            if let Some(value) = one(field) {
                families.push(family(
                    (name, help),
                    MetricType::GAUGE,
                    vec![sample(&[], value)],
                ));
            }
        }
        let rejected: Vec<proto::Metric> = REJECTION_REASONS
            .iter()
            .filter_map(|reason| {
                let value = one(&format!("rejected_{reason}"))?;
                Some(sample(&[("reason", reason)], value))
            })
            .collect();
        if !rejected.is_empty() {
            families.push(family(REJECTED, MetricType::COUNTER, rejected));
        }
        if let Some(kid) = &info.active_kid {
            let active = vec![sample(&[("kid", kid)], 1.0)];
            families.push(family(ACTIVE_KID, MetricType::GAUGE, active));
        }
        families
    }
}

fn family(
    (name, help): (&str, &str),
    kind: MetricType,
    metrics: Vec<proto::Metric>,
) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// One sample; counters and gauges are told apart by the family's type, so both values are
/// set and the encoder reads the one the type names.
fn sample(labels: &[(&str, &str)], value: f64) -> proto::Metric {
    let pairs = labels
        .iter()
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect();
    let mut metric = proto::Metric::default();
    metric.set_label(pairs);
    let mut counter = proto::Counter::default();
    counter.set_value(value);
    metric.set_counter(counter);
    let mut gauge = proto::Gauge::default();
    gauge.set_value(value);
    metric.set_gauge(gauge);
    metric
}

#[cfg(test)]
mod tests {
    use prometheus::Registry;

    use super::*;

    const SECTION: &str = "# reconcile\r\n\
        reconcile_signed_total:3\r\nreconcile_verified_total:2\r\n\
        reconcile_rejected_total:2\r\nreconcile_rejected_bad_mac:1\r\n\
        reconcile_rejected_stale:1\r\nreconcile_guard_denied_total:4\r\n\
        reconcile_keyring_active_kid:k20250601\r\nreconcile_keyring_keys:2\r\n\
        reconcile_max_age_ms:300000\r\n";

    fn render(latest: &Latest) -> String {
        let registry = Registry::new();
        let collector = ModuleCollector::new(latest.clone()).unwrap();
        registry.register(Box::new(collector)).unwrap();
        reconcile_worker::metrics::render(&registry).unwrap()
    }

    #[test]
    fn parses_the_prefixed_fields() {
        let info = ModuleInfo::parse(SECTION).unwrap();
        assert_eq!(info.numbers["signed_total"], 3.0);
        assert_eq!(info.numbers["rejected_bad_mac"], 1.0);
        assert_eq!(info.active_kid.as_deref(), Some("k20250601"));
        assert_eq!(ModuleInfo::parse(""), None);
        assert_eq!(
            ModuleInfo::parse("# Server\r\nredis_version:7.0.15\r\n"),
            None
        );
    }

    #[test]
    fn exports_counters_gauges_and_reasons() {
        let latest = Latest::default();
        latest.set(ModuleInfo::parse(SECTION));
        let text = render(&latest);
        for line in [
            "# TYPE reconcile_module_signed_total counter",
            "reconcile_module_signed_total 3",
            "reconcile_module_rejected_total{reason=\"bad_mac\"} 1",
            "reconcile_module_rejected_total{reason=\"stale\"} 1",
            "reconcile_module_guard_denied_total 4",
            "# TYPE reconcile_module_keyring_keys gauge",
            "reconcile_module_max_age_ms 300000",
            "reconcile_module_keyring_active{kid=\"k20250601\"} 1",
            "reconcile_module_up 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn unreadable_module_shows_as_down() {
        let text = render(&Latest::default());
        assert!(text.contains("reconcile_module_up 0"), "{text}");
        assert!(!text.contains("reconcile_module_signed_total"), "{text}");
    }
}

//! Timestamps taken where things happen, not where a client notices them.
//!
//! The paper exchange runs in this process, and it emits one `tracing` event when it has
//! filled an order, while it still holds its book. A layer installed here stamps that event
//! with a monotonic [`Instant`] as it is emitted: that is the acceptance time. The paper
//! exchange's own `updateTime` is in whole milliseconds, too coarse for a one-millisecond
//! target, so it is not used.
//!
//! The same layer stamps the apply worker's audit line (the plan is settled: recorded and
//! acknowledged) and, when profiling, every debug event of the worker and the exchange client,
//! so a plan's path can be laid out on one clock. Warnings and errors go to stderr.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Where the paper exchange's events come from.
const PAPER_TARGET: &str = "reconcile_exchange::paper";
/// The message of the event the paper exchange emits once an order is filled.
const FILLED: &str = "paper order filled";
/// The target of the apply worker's one line per settled plan.
const AUDIT_TARGET: &str = "audit";

/// Something that happened to a plan, and when.
#[derive(Debug)]
pub enum Mark {
    /// The paper exchange filled the order with this client order id.
    Accepted {
        client_order_id: String,
        at: Instant,
    },
    /// The consumer finished with the plan: recorded (the worker) or acknowledged.
    Settled {
        plan_id: String,
        success: bool,
        at: Instant,
    },
    /// A step on the way, kept only when profiling.
    Stage { label: String, at: Instant },
}

static SINK: OnceLock<UnboundedSender<Mark>> = OnceLock::new();
static PROFILING: AtomicBool = AtomicBool::new(false);

/// Installs the layer as the global subscriber and returns the receiving end of the marks.
/// `profile` also keeps the debug events of the close path as [`Mark::Stage`].
pub fn install(profile: bool) -> anyhow::Result<UnboundedReceiver<Mark>> {
    let (sender, receiver) = unbounded_channel();
    SINK.set(sender)
        .map_err(|_| anyhow::anyhow!("probe installed twice"))?;
    PROFILING.store(profile, Ordering::Relaxed);
    tracing_subscriber::registry()
        .with(Probe { profile })
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the probe: {e}"))?;
    Ok(receiver)
}

/// Whether stages are being kept.
pub fn profiling() -> bool {
    PROFILING.load(Ordering::Relaxed)
}

/// Records a mark taken outside `tracing` (the publisher, the minimal consumer).
pub fn mark(mark: Mark) {
    if let Some(sink) = SINK.get() {
        // The receiver lives as long as the run; a send after it is gone is moot.
        let _ = sink.send(mark);
    }
}

/// A stage mark stamped now, when profiling.
pub fn stage(label: &str) {
    if profiling() {
        mark(Mark::Stage {
            label: label.to_owned(),
            at: Instant::now(),
        });
    }
}

struct Probe {
    profile: bool,
}

impl Probe {
    fn wanted(&self, meta: &Metadata<'_>) -> bool {
        if !meta.is_event() {
            return false;
        }
        let target = meta.target();
        let level = *meta.level();
        if target == AUDIT_TARGET || level <= Level::WARN {
            return true;
        }
        if target.starts_with(PAPER_TARGET) {
            return level <= Level::INFO;
        }
        self.profile
            && level <= Level::DEBUG
            && (target.starts_with("reconcile_apply") || target.starts_with("reconcile_exchange"))
    }
}

impl<S: Subscriber> Layer<S> for Probe {
    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.wanted(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(if self.profile {
            LevelFilter::DEBUG
        } else {
            LevelFilter::INFO
        })
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        // Stamped before anything else, so that reading the fields is not counted.
        let at = Instant::now();
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);

        if meta.target().starts_with(PAPER_TARGET) && fields.message == FILLED {
            if let Some(client_order_id) = fields.client_order_id.take() {
                mark(Mark::Accepted {
                    client_order_id,
                    at,
                });
            }
            return;
        } else if meta.target() == AUDIT_TARGET {
            let success = fields.status.as_deref() == Some("success");
            if !success {
                eprintln!("bench: {} audit: {}", meta.level(), fields);
            }
            if let Some(plan_id) = fields.plan_id.take() {
                mark(Mark::Settled {
                    plan_id,
                    success,
                    at,
                });
            }
            return;
        }

        if *meta.level() <= Level::WARN {
            eprintln!("bench: {} {}: {}", meta.level(), meta.target(), fields);
        } else if self.profile {
            mark(Mark::Stage {
                label: fields.label(),
                at,
            });
        }
    }
}

/// The few fields the probe reads; everything else is left unformatted.
#[derive(Default)]
struct Fields {
    message: String,
    client_order_id: Option<String>,
    plan_id: Option<String>,
    status: Option<String>,
    method: Option<String>,
    path: Option<String>,
    error: Option<String>,
    rule: Option<String>,
    detail: Option<String>,
}

impl Fields {
    /// A stage name: the message, and for exchange answers the request and its status.
    fn label(&self) -> String {
        let mut label = self.message.clone();
        for part in [&self.method, &self.path, &self.status]
            .into_iter()
            .flatten()
        {
            label.push(' ');
            label.push_str(part);
        }
        label
    }
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let named = [
            ("plan_id", &self.plan_id),
            ("status", &self.status),
            ("rule", &self.rule),
            ("detail", &self.detail),
            ("error", &self.error),
        ];
        for (name, value) in named {
            if let Some(value) = value {
                write!(f, " {name}={value}")?;
            }
        }
        Ok(())
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.keep(field, || value.to_owned());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.keep(field, || value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.keep(field, || format!("{value:?}"));
    }
}

impl Fields {
    fn keep(&mut self, field: &Field, value: impl FnOnce() -> String) {
        let slot = match field.name() {
            "message" => {
                self.message = value();
                return;
            }
            "client_order_id" => &mut self.client_order_id,
            "plan_id" => &mut self.plan_id,
            "status" => &mut self.status,
            "method" => &mut self.method,
            "path" => &mut self.path,
            "error" => &mut self.error,
            "rule" => &mut self.rule,
            "detail" => &mut self.detail,
            _ => return,
        };
        *slot = Some(value());
    }
}

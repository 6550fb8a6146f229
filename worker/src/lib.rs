//! What the long-running reconcile workers (the engine and the apply worker) share.
//!
//! - [`shutdown`]: a cloneable token that resolves on SIGTERM or SIGINT;
//! - [`backoff`]: capped exponential delays between retries;
//! - [`metrics`]: a `/metrics` and `/healthz` endpoint over a Prometheus registry;
//! - [`duration`]: settings such as `30s` or `200ms`;
//! - [`redis`]: a reconnecting Redis connection whose URL is logged without its password;
//! - [`logging`]: the tracing subscriber.
//!
//! Nothing here knows about plans, positions or keys: those belong to the workers.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod duration;
pub mod logging;
pub mod metrics;
pub mod redis;
pub mod shutdown;

pub use backoff::Backoff;
pub use shutdown::{Shutdown, ShutdownTrigger};

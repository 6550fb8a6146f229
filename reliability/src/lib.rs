//! Fault tests of the whole close path: the module in a real `redis-server`, the apply worker
//! as a real process started from `target/release/reconcile-apply`, and the paper exchange,
//! reached over HTTP.
//!
//! - [`rng`]: the seeded generator every random choice comes from, and the run size;
//! - [`worker`]: starting the apply worker process and killing it with SIGKILL;
//! - [`proxy`]: a loopback TCP forwarder, so a worker keeps one address while Redis moves,
//!   and finds the exchange refusing connections while it is down;
//! - [`rig`]: ACL users, plans, positions and the exactly-once audit at the end;
//! - [`alerts`]: scraping the worker's metrics during a fault and running the alert rules
//!   over the samples with promtool.
//!
//! Every test has a short form that runs in CI and a long one with `RELIABILITY_LONG=1`;
//! RELIABILITY.md at the workspace root lists them with measured figures.

pub mod alerts;
pub mod proxy;
pub mod rig;
pub mod rng;
pub mod worker;

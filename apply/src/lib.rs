//! The apply worker: executes verified close plans from the guarded stream, exactly once, as
//! reduce-only market orders.
//!
//! It reads `quantum:stream:reconcile.close` as consumer group `apply_recon` through
//! `RECONCILE.XREADVERIFIED`, so it only ever sees entries whose MAC the signing module
//! verified. For each plan, in order:
//!
//! 1. the invariants of [`invariants`] are checked; a refusal is recorded and acknowledged,
//!    and nothing else happens for that plan;
//! 2. the dedupe record `quantum:apply:dedupe:{plan_id}` ([`dedupe`]) is read: a plan already
//!    done is acknowledged as a duplicate, one claimed before is first looked up on the
//!    exchange by its client order id;
//! 3. the HOLD key and the exchange position are read and checked. The record and the HOLD
//!    key are read in one pipeline while the position is read from the exchange; the
//!    position mode comes from [`mode::ModeCache`], read again once it is `--mode-max-age`
//!    old or an order is refused for its position side;
//! 4. the plan is claimed (`executing`) and closed with a client order id derived from its
//!    plan id ([`reconcile_exchange::Client::close`] looks that id up before it sends);
//! 5. the outcome goes to `quantum:stream:apply.result`, the record turns `done`, the HOLD
//!    lease is renewed and the entry acknowledged, in one transaction, and one audit line is
//!    logged.
//!
//! A step that fails for a reason that may pass (Redis unreachable, the exchange busy, an
//! outcome the exchange cannot tell yet) leaves the entry pending; it is read again from the
//! group's history after a growing delay, while new plans keep flowing. `--dry-run` runs
//! every check and records what would have been sent, and writes no dedupe record, renews no
//! lease and sends nothing.
//!
//! The plans of one read are split into one lane per symbol: a symbol's plans go
//! one after another, in stream order, and up to `--concurrency` symbols are worked on at
//! once.
//!
//! [`run`] is the whole worker; the binary only parses flags and installs signal handlers.

#![forbid(unsafe_code)]

pub mod config;
pub mod dedupe;
mod execute;
pub mod invariants;
mod lanes;
pub mod metrics;
pub mod mode;
pub mod module_info;
pub mod outcome;
pub mod plan;
pub mod store;
pub mod stream;
mod worker;

pub use config::{Args, Config};
pub use worker::{run, start, Error, Running};

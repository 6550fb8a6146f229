//! Harness for the reconcile integration tests.
//!
//! Every test starts its own `redis-server` on a free loopback port and in its own temporary
//! directory, loads the module built at `target/release/libreconcile.so` (or the path in
//! `RECONCILE_MODULE`) and talks to it with the `redis` crate. Nothing is mocked: the servers are
//! real processes, the keyrings are real files and forged entries reach the module through a real
//! RDB file written by a server that runs without it.
//!
//! Run with `cargo build --release -p reconcile && cargo test -p reconcile-tests`. The
//! randomized tests print their seed; `RECONCILE_FUZZ_SEED=<seed>` replays one, and
//! `REDIS_SERVER` picks another `redis-server` binary.
//!
//! Layout:
//! - [`server`]: starting, restarting and stopping servers, and loads expected to fail;
//! - [`cluster`]: a Redis Cluster of such servers on loopback;
//! - [`fixture`]: the common setup of one key, its keyring and a guarded server;
//! - [`keyring`]: keyring files, good and deliberately bad;
//! - [`client`]: a thin client that keeps server errors as data;
//! - [`reply`]: decoding stream replies and INFO text;
//! - [`canonical`]: an independent computation of the entry MAC from the interface text;
//! - [`forge`]: the forged entries an attacker with write access could plant;
//! - [`plant`]: writing those entries through a server that has no module;
//! - [`monitor`]: capturing MONITOR output over a raw socket;
//! - [`random_calls`]: the random command lines the randomized tests send;
//! - [`seed`]: seeds for the randomized tests;
//! - [`users`]: the engine and apply ACL users the worker tests run as.

pub mod canonical;
pub mod client;
pub mod cluster;
pub mod fixture;
pub mod forge;
pub mod keyring;
pub mod monitor;
pub mod plant;
pub mod random_calls;
pub mod reply;
pub mod seed;
pub mod server;
pub mod users;

pub use client::{Client, ReplyError};
pub use fixture::Guarded;
pub use keyring::{Flaw, Key, KeyringFile};
pub use reply::{Entry, Info, StreamBatch};
pub use server::{LoadFailure, RedisServer, ServerOptions};

/// The stream the module guards when no `guard` argument is given.
pub const STREAM: &str = "quantum:stream:reconcile.close";

/// A secret once published as a default; the module must refuse it in any form.
pub const PUBLIC_DEFAULT_SECRET: &str = "quantum_reconcile_secret_change_in_prod";

/// The quarantine stream that belongs to a guarded key.
pub fn quarantine_of(key: &str) -> String {
    format!("{key}:quarantine")
}

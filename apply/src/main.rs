//! `reconcile-apply`: flags and environment in, the worker until SIGTERM or SIGINT.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use reconcile_apply::Args;
use reconcile_exchange::Credentials;
use reconcile_worker::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Args::parse().into_config();
    reconcile_worker::logging::init();
    let credentials = Credentials::from_env().context("reading exchange credentials")?;
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    reconcile_apply::run(config, credentials, shutdown)
        .await
        .context("apply worker")
}

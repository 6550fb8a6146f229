//! `reconcile-engine`: see the library docs for what it does, `--help` for its settings.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use reconcile_engine::Config;
use reconcile_exchange::Credentials;
use reconcile_worker::Shutdown;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    reconcile_worker::logging::init();
    let config = Config::parse();
    let credentials = Credentials::from_env().context("reading exchange credentials")?;
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    reconcile_engine::run(config, credentials, shutdown)
        .await
        .context("running the reconcile engine")
}

//! `paper-exchange`: serves the paper exchange on a loopback address until interrupted.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::str::FromStr;

use anyhow::{bail, Context};
use clap::Parser;
use reconcile_exchange::paper::{self, PaperConfig};
use reconcile_exchange::{Credentials, Decimal};

/// An in-memory USD-M futures exchange for demos and tests, loopback only.
#[derive(Parser)]
#[command(name = "paper-exchange", version)]
struct Args {
    /// Loopback address to listen on, for example 127.0.0.1:8900.
    #[arg(long)]
    listen: SocketAddr,
    /// The API key clients must send.
    #[arg(long, env = "BINANCE_API_KEY", hide_env_values = true)]
    api_key: String,
    /// The secret clients must sign with.
    #[arg(long, env = "BINANCE_API_SECRET", hide_env_values = true)]
    api_secret: String,
    /// Symbols to list, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "BTCUSDT,ETHUSDT")]
    symbols: Vec<String>,
    /// Start in hedge mode (LONG and SHORT legs) instead of one-way mode.
    #[arg(long)]
    hedge_mode: bool,
    /// Mark price of a listed symbol, as SYMBOL=PRICE; repeatable.
    #[arg(long = "mark-price", value_parser = parse_mark_price)]
    mark_prices: Vec<(String, Decimal)>,
}

fn parse_mark_price(text: &str) -> Result<(String, Decimal), String> {
    let (symbol, price) = text.split_once('=').ok_or("expected SYMBOL=PRICE")?;
    let price = Decimal::from_str(price).map_err(|e| format!("price {price}: {e}"))?;
    Ok((symbol.to_owned(), price))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {}: the paper exchange is loopback only",
            args.listen
        );
    }

    let credentials =
        Credentials::new(args.api_key, args.api_secret).context("reading credentials")?;
    let config = PaperConfig {
        credentials,
        symbols: args.symbols,
        hedge_mode: args.hedge_mode,
        mark_prices: args.mark_prices,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(addr = %args.listen, "paper exchange listening");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    paper::serve_until(listener, config, shutdown)
        .await
        .context("serving")?;
    Ok(())
}

//! Settings: flags, each with an environment fallback. The exchange key and secret come only
//! from `BINANCE_API_KEY` and `BINANCE_API_SECRET`, never from a flag.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use reconcile_worker::duration;

/// Detects position drift between the exchange and the ledger and publishes signed close
/// plans.
#[derive(Debug, Clone, Parser)]
#[command(name = "reconcile-engine", version)]
pub struct Config {
    /// Redis, as an ACL user allowed to call RECONCILE.XADDSIGNED. A comma-separated list of
    /// two or more URLs names the seed nodes of a Redis Cluster.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,

    /// The guarded stream plans are signed into. In a cluster it needs a hash tag, such as
    /// quantum:stream:{reconcile}.close, and the apply worker must be given the same name.
    #[arg(long, env = "RECONCILE_STREAM", default_value = crate::store::CLOSE_STREAM)]
    pub stream: String,

    /// Base URL of the USD-M futures API.
    #[arg(
        long,
        env = "EXCHANGE_URL",
        default_value = reconcile_exchange::TESTNET_URL
    )]
    pub exchange_url: String,

    /// Symbols to reconcile, comma-separated.
    #[arg(
        long,
        env = "RECONCILE_SYMBOLS",
        value_delimiter = ',',
        required = true,
        value_parser = parse_symbol
    )]
    pub symbols: Vec<String>,

    /// Time between cycles, e.g. 30s or 200ms.
    #[arg(
        long,
        env = "RECONCILE_INTERVAL",
        default_value = "30s",
        value_parser = duration::parse_positive
    )]
    pub interval: Duration,

    /// Where /metrics and /healthz are served.
    #[arg(long, env = "RECONCILE_METRICS_ADDR", default_value = "127.0.0.1:8046")]
    pub metrics_addr: SocketAddr,

    /// Lifetime of a HOLD lease.
    #[arg(
        long,
        env = "RECONCILE_HOLD_TTL",
        default_value = "900s",
        value_parser = duration::parse_positive
    )]
    pub hold_ttl: Duration,

    /// Consecutive cycles a drift must be seen on before the engine acts.
    #[arg(
        long,
        env = "RECONCILE_CONFIRM_CYCLES",
        default_value_t = 2,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub confirm_cycles: u32,

    /// Approximate length the close and events streams are trimmed to.
    #[arg(long, env = "RECONCILE_STREAM_MAXLEN", default_value_t = 10_000)]
    pub stream_maxlen: u64,

    /// Replicas that must acknowledge a plan (Redis WAIT) before it counts as replicated;
    /// 0 skips the WAIT.
    #[arg(long, env = "RECONCILE_MIN_REPLICAS", default_value_t = 0)]
    pub min_replicas: u32,

    /// How long the WAIT after a plan may block.
    #[arg(
        long,
        env = "RECONCILE_MIN_REPLICAS_TIMEOUT",
        default_value = "1s",
        value_parser = duration::parse_positive
    )]
    pub min_replicas_timeout: Duration,
}

fn parse_symbol(text: &str) -> Result<String, String> {
    let symbol = text.trim();
    let valid = !symbol.is_empty()
        && symbol.len() <= 32
        && symbol
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if valid {
        Ok(symbol.to_string())
    } else {
        Err(format!("{symbol:?} is not a symbol such as BTCUSDT"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("reconcile-engine").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = parse(&["--symbols", "BTCUSDT,ETHUSDT"]).unwrap();
        assert_eq!(config.symbols, ["BTCUSDT", "ETHUSDT"]);
        assert_eq!(config.interval, Duration::from_secs(30));
        assert_eq!(config.hold_ttl, Duration::from_secs(900));
        assert_eq!(config.confirm_cycles, 2);
        assert_eq!(config.metrics_addr.to_string(), "127.0.0.1:8046");
        assert_eq!(config.min_replicas, 0);
        assert_eq!(config.min_replicas_timeout, Duration::from_secs(1));
    }

    #[test]
    fn min_replicas_takes_a_count_and_a_timeout() {
        let args = [
            "--symbols",
            "BTCUSDT",
            "--min-replicas",
            "1",
            "--min-replicas-timeout",
            "250ms",
        ];
        let config = parse(&args).unwrap();
        assert_eq!(config.min_replicas, 1);
        assert_eq!(config.min_replicas_timeout, Duration::from_millis(250));
        assert!(parse(&["--symbols", "BTCUSDT", "--min-replicas", "-1"]).is_err());
    }

    #[test]
    fn durations_take_units() {
        let config = parse(&[
            "--symbols",
            "BTCUSDT",
            "--interval",
            "200ms",
            "--hold-ttl",
            "15m",
        ])
        .unwrap();
        assert_eq!(config.interval, Duration::from_millis(200));
        assert_eq!(config.hold_ttl, Duration::from_secs(900));
    }

    #[test]
    fn refuses_bad_symbols_zero_confirmations_and_zero_interval() {
        assert!(parse(&["--symbols", "btc-usdt"]).is_err());
        assert!(parse(&["--symbols", "BTCUSDT", "--confirm-cycles", "0"]).is_err());
        assert!(parse(&["--symbols", "BTCUSDT", "--interval", "0s"]).is_err());
    }

    #[test]
    fn has_no_flag_for_the_exchange_secret() {
        assert!(parse(&["--symbols", "BTCUSDT", "--api-secret", "x"]).is_err());
    }
}

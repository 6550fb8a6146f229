//! Settings: [`Config`] is what the worker runs with; [`Args`] reads it from flags, each with
//! an environment fallback.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use reconcile_exchange::TESTNET_URL;
use reconcile_worker::duration::parse_positive;
use reconcile_worker::redis::{in_slot_of, redact};

use crate::invariants::{Limits, MaxQty};

/// The stream the engine publishes close plans to.
pub const PLAN_STREAM: &str = "quantum:stream:reconcile.close";
/// The consumer group of the apply workers.
pub const GROUP: &str = "apply_recon";
/// The stream every outcome is recorded in.
pub const RESULT_STREAM: &str = "quantum:stream:apply.result";
/// Prefix of the HOLD lease keys, one per symbol.
pub const HOLD_PREFIX: &str = "quantum:reconcile:hold:";

/// The HOLD lease key of a symbol.
pub fn hold_key(symbol: &str) -> String {
    format!("{HOLD_PREFIX}{symbol}")
}

impl Config {
    /// Reads plans from `stream`. The result stream follows it into its cluster slot: both
    /// are written in the transaction that finishes a plan.
    pub fn with_stream(mut self, stream: &str) -> Config {
        self.stream = stream.to_string();
        self.result_stream = in_slot_of(RESULT_STREAM, stream);
        self
    }

    /// The dedupe key of `plan_id`, in the plan stream's cluster slot when the stream has a
    /// hash tag, and `quantum:apply:dedupe:<plan_id>` otherwise.
    pub fn dedupe_key(&self, plan_id: &str) -> String {
        in_slot_of(&crate::dedupe::key(plan_id), &self.stream)
    }
}

/// Everything the worker runs with.
#[derive(Clone)]
pub struct Config {
    /// May carry a password; shown only redacted.
    pub redis_url: String,
    pub exchange_url: String,
    /// This worker's name in the group. It must be stable across restarts, so that a restarted
    /// worker finds its own pending plans, and unique among running workers.
    pub consumer: String,
    pub group: String,
    pub stream: String,
    pub result_stream: String,
    /// About how many outcomes the result stream keeps (`MAXLEN ~`).
    pub result_maxlen: usize,
    pub limits: Limits,
    pub metrics_addr: SocketAddr,
    /// Run every check, record what would be sent, send nothing.
    pub dry_run: bool,
    /// Lifetime the HOLD lease is renewed to after a successful close.
    pub hold_ttl: Duration,
    /// Lifetime of a plan's dedupe record.
    pub dedupe_ttl: Duration,
    /// After how long another consumer's claim on a plan counts as abandoned.
    pub claim_lease: Duration,
    /// How long one blocking read waits for a new plan.
    pub block: Duration,
    /// How many entries one read returns at most.
    pub batch: usize,
    /// How long an entry stays pending with another consumer before this one claims it.
    pub claim_idle: Duration,
    /// First and longest delay before a pending plan is tried again.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often the module's `INFO reconcile` counters and the group's pending plans are read.
    pub info_interval: Duration,
    /// Deadline of one exchange request.
    pub exchange_timeout: Duration,
    /// How long after an unknown outcome a missing order is believed to be missing.
    pub exchange_settle: Duration,
    /// Longest time a position mode read from the exchange is used for.
    pub mode_max_age: Duration,
    /// How many symbols' plans are worked on at once. Plans of one symbol always go one after
    /// another, in stream order.
    pub concurrency: usize,
}

impl Config {
    /// A configuration with the defaults the flags have.
    pub fn new(redis_url: &str, exchange_url: &str, consumer: &str, max_qty: MaxQty) -> Config {
        Config {
            redis_url: redis_url.into(),
            exchange_url: exchange_url.into(),
            consumer: consumer.into(),
            group: GROUP.into(),
            stream: PLAN_STREAM.into(),
            result_stream: RESULT_STREAM.into(),
            result_maxlen: 100_000,
            limits: Limits {
                max_qty,
                max_age: Duration::from_secs(300),
            },
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 8043)),
            dry_run: false,
            hold_ttl: Duration::from_secs(900),
            dedupe_ttl: Duration::from_secs(24 * 3600),
            claim_lease: Duration::from_secs(600),
            block: Duration::from_secs(5),
            batch: 16,
            claim_idle: Duration::from_secs(60),
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            info_interval: Duration::from_secs(15),
            exchange_timeout: Duration::from_secs(10),
            exchange_settle: Duration::from_secs(5),
            mode_max_age: Duration::from_secs(30),
            concurrency: 8,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("redis_url", &redact(&self.redis_url))
            .field("exchange_url", &self.exchange_url)
            .field("consumer", &self.consumer)
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("max_qty", &self.limits.max_qty)
            .field("max_age", &self.limits.max_age)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// Executes verified close plans from the guarded stream as reduce-only market orders.
///
/// The exchange key and secret come from BINANCE_API_KEY and BINANCE_API_SECRET.
#[derive(Debug, Parser)]
#[command(name = "reconcile-apply", version)]
pub struct Args {
    /// Redis URL; an ACL user and password go in it (redis://apply:PASSWORD@host:6379). A
    /// comma-separated list of two or more URLs names the seed nodes of a Redis Cluster.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis_url: String,
    /// Exchange REST base URL.
    #[arg(long, env = "EXCHANGE_URL", default_value = TESTNET_URL)]
    exchange_url: String,
    /// The guarded stream plans are read from. In a cluster it needs a hash tag, such as
    /// quantum:stream:{reconcile}.close; the worker's own keys then take the same tag.
    #[arg(long, env = "APPLY_STREAM", default_value = PLAN_STREAM)]
    stream: String,
    /// This worker's consumer name: stable across restarts, unique among workers.
    #[arg(long, env = "APPLY_CONSUMER", default_value = "apply-1")]
    consumer: String,
    /// Per-symbol maximum quantity, e.g. BTCUSDT=0.5,ETHUSDT=10; unlisted symbols are refused.
    #[arg(long, env = "APPLY_MAX_QTY")]
    max_qty: MaxQty,
    /// Address of the Prometheus endpoint.
    #[arg(long, env = "APPLY_METRICS_ADDR", default_value = "127.0.0.1:8043")]
    metrics_addr: SocketAddr,
    /// Check and record every plan, send no order.
    #[arg(long, env = "APPLY_DRY_RUN")]
    dry_run: bool,
    /// Oldest plan executed, by its ts and its signing time.
    #[arg(long, env = "APPLY_MAX_AGE", default_value = "5m", value_parser = parse_positive)]
    max_age: Duration,
    /// Lifetime the HOLD lease is renewed to after a close.
    #[arg(long, env = "APPLY_HOLD_TTL", default_value = "900s", value_parser = parse_positive)]
    hold_ttl: Duration,
    /// Lifetime of a plan's dedupe record.
    #[arg(long, env = "APPLY_DEDUPE_TTL", default_value = "24h", value_parser = parse_positive)]
    dedupe_ttl: Duration,
    /// After how long another worker's claim on a plan counts as abandoned.
    #[arg(long, env = "APPLY_CLAIM_LEASE", default_value = "10m", value_parser = parse_positive)]
    claim_lease: Duration,
    /// How long an entry stays pending with another consumer before it is claimed.
    #[arg(long, env = "APPLY_CLAIM_IDLE", default_value = "60s", value_parser = parse_positive)]
    claim_idle: Duration,
    /// Longest wait of one blocking read.
    #[arg(long, env = "APPLY_BLOCK", default_value = "5s", value_parser = parse_positive)]
    block: Duration,
    /// Longest delay before a pending plan is tried again.
    #[arg(long, env = "APPLY_RETRY_MAX", default_value = "30s", value_parser = parse_positive)]
    retry_max: Duration,
    /// How often the module's INFO counters and the group's pending plans are read.
    #[arg(long, env = "APPLY_INFO_INTERVAL", default_value = "15s", value_parser = parse_positive)]
    info_interval: Duration,
    /// About how many outcomes the result stream keeps.
    #[arg(long, env = "APPLY_RESULT_MAXLEN", default_value_t = 100_000)]
    result_maxlen: usize,
    /// Longest time a position mode read from the exchange is used before it is read again.
    #[arg(long, env = "APPLY_MODE_MAX_AGE", default_value = "30s", value_parser = parse_positive)]
    mode_max_age: Duration,
    /// How many symbols' plans are worked on at once; one symbol's plans go in order.
    #[arg(long, env = "APPLY_CONCURRENCY", default_value_t = 8,
        value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
}

impl Args {
    /// The configuration these flags describe.
    pub fn into_config(self) -> Config {
        let mut config = Config::new(
            &self.redis_url,
            &self.exchange_url,
            &self.consumer,
            self.max_qty,
        )
        .with_stream(&self.stream);
        config.metrics_addr = self.metrics_addr;
        config.dry_run = self.dry_run;
        config.limits.max_age = self.max_age;
        config.hold_ttl = self.hold_ttl;
        config.dedupe_ttl = self.dedupe_ttl;
        config.claim_lease = self.claim_lease;
        config.claim_idle = self.claim_idle;
        config.block = self.block;
        config.retry_max = self.retry_max;
        config.info_interval = self.info_interval;
        config.result_maxlen = self.result_maxlen;
        config.mode_max_age = self.mode_max_age;
        config.concurrency = usize::from(self.concurrency);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_fill_the_config_and_defaults_hold() {
        let args = Args::try_parse_from([
            "reconcile-apply",
            "--max-qty",
            "BTCUSDT=0.5,ETHUSDT=10",
            "--redis-url",
            "redis://apply:hunter2@127.0.0.1:6379",
            "--dry-run",
            "--max-age",
            "90s",
        ])
        .unwrap();
        let config = args.into_config();
        assert!(config.dry_run);
        assert_eq!(config.limits.max_age, Duration::from_secs(90));
        assert_eq!(config.hold_ttl, Duration::from_secs(900));
        assert_eq!(config.dedupe_ttl, Duration::from_secs(86_400));
        assert_eq!(config.metrics_addr.to_string(), "127.0.0.1:8043");
        assert_eq!(config.group, "apply_recon");
        assert_eq!(config.mode_max_age, Duration::from_secs(30));
        assert_eq!(config.concurrency, 8);
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.stream, PLAN_STREAM);
        assert_eq!(config.result_stream, RESULT_STREAM);
        assert_eq!(config.dedupe_key("p1"), "quantum:apply:dedupe:p1");
    }

    #[test]
    fn a_tagged_stream_draws_the_written_keys_into_its_slot() {
        let args = [
            "reconcile-apply",
            "--max-qty",
            "BTCUSDT=1",
            "--stream",
            "quantum:stream:{reconcile}.close",
        ];
        let config = Args::try_parse_from(args).unwrap().into_config();
        assert_eq!(
            config.result_stream,
            "quantum:stream:apply.result:{reconcile}"
        );
        assert_eq!(
            config.dedupe_key("p1"),
            "quantum:apply:dedupe:p1:{reconcile}"
        );
        assert!(reconcile_worker::redis::same_slot(
            &config.dedupe_key("p1"),
            &config.stream
        ));
    }

    #[test]
    fn max_qty_is_required_and_checked() {
        assert!(Args::try_parse_from(["reconcile-apply"]).is_err());
        let bad = ["reconcile-apply", "--max-qty", "BTCUSDT=-1"];
        assert!(Args::try_parse_from(bad).is_err());
    }

    #[test]
    fn concurrency_and_mode_age_are_read_and_bounded() {
        let args = |extra: &[&str]| {
            let mut all = vec!["reconcile-apply", "--max-qty", "BTCUSDT=1"];
            all.extend_from_slice(extra);
            Args::try_parse_from(all)
        };
        let config = args(&["--concurrency", "3", "--mode-max-age", "5s"])
            .unwrap()
            .into_config();
        assert_eq!(config.concurrency, 3);
        assert_eq!(config.mode_max_age, Duration::from_secs(5));
        assert!(args(&["--concurrency", "0"]).is_err());
        assert!(args(&["--mode-max-age", "0s"]).is_err());
    }
}

//! What one measured run stands on: a redis-server (with the signing module, or plain for the
//! baseline), a paper exchange in this process holding one large long position, and the
//! credentials every exchange client of the run shares.
//!
//! Every run gets fresh servers, so that no run inherits another's stream, group, dedupe
//! records or order history.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use reconcile_apply::config::hold_key;
use reconcile_apply::{Config, Running};
use reconcile_core::keyring::Keyring;
use reconcile_exchange::paper::{self, PaperConfig, RunningPaper};
use reconcile_exchange::{
    Client, ClientConfig, ClientOrderId, Credentials, Decimal, MarketOrder, PositionMode, Side,
};
use reconcile_tests::{users, Guarded, Key, RedisServer, ServerOptions};
use reconcile_worker::{Shutdown, ShutdownTrigger};
use zeroize::Zeroizing;

/// The one symbol every plan closes.
pub const SYMBOL: &str = "BTCUSDT";
/// The consumer group of the bench's own consumers (the worker uses its own default).
pub const GROUP: &str = "bench";
const API_KEY: &str = "bench-key";
/// The worker's Redis user, with the rights its README lists and nothing more.
const APPLY_USER: &str = "apply";

/// The paper exchange's secret, made fresh for each run and wiped when dropped.
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// 32 random bytes from the operating system, as hex.
    pub fn random() -> anyhow::Result<Secret> {
        Ok(Secret(Zeroizing::new(random_hex()?)))
    }

    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        Credentials::new(API_KEY, self.0.as_str()).context("building exchange credentials")
    }
}

fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    let mut urandom = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    std::io::Read::read_exact(&mut urandom, &mut bytes).context("reading /dev/urandom")?;
    Ok(hex::encode(bytes))
}

/// The Redis side of a run.
pub enum Store {
    /// A server with the module; plans are signed and verified inside it. The URL is the
    /// worker's, as its least-privilege user.
    Guarded { fixture: Guarded, apply_url: String },
    /// A server without the module, and the key the publisher and the consumer share.
    Plain { server: RedisServer, key: Key },
}

impl Store {
    /// Starts a module server with the worker's ACL user.
    pub fn guarded() -> anyhow::Result<Store> {
        let fixture = Guarded::start();
        let password = random_hex()?;
        let mut admin = fixture.client();
        users::set_user(&mut admin, APPLY_USER, &users::apply_rules(&password));
        let url = format!(
            "redis://{APPLY_USER}:{password}@127.0.0.1:{}/",
            fixture.server.port()
        );
        Ok(Store::Guarded {
            fixture,
            apply_url: url,
        })
    }

    /// Starts a server without the module, with a fresh shared key.
    pub fn plain() -> Store {
        Store::Plain {
            server: ServerOptions::plain().start(),
            key: Key::random("k1"),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            Store::Guarded { fixture, .. } => fixture.server.port(),
            Store::Plain { server, .. } => server.port(),
        }
    }

    /// The default (administrator) user's URL.
    pub fn admin_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port())
    }

    /// The shared key as the consumer's keyring, for the baseline.
    pub fn keyring(&self) -> Option<Keyring> {
        match self {
            Store::Guarded { .. } => None,
            Store::Plain { key, .. } => {
                let text = format!("{} {}\n", key.kid, key.hex());
                Keyring::parse(text.as_bytes()).ok()
            }
        }
    }
}

/// A paper exchange holding a long position of `size` in [`SYMBOL`].
pub async fn exchange(secret: &Secret, size: Decimal) -> anyhow::Result<RunningPaper> {
    let paper = paper::start(PaperConfig::new(secret.credentials()?))
        .await
        .context("starting the paper exchange")?;
    let client = client(&paper, secret)?;
    let filters = client.symbol_filters(SYMBOL).await?;
    let quantity = filters
        .market_quantity(size)
        .context("position size off the symbol's filters")?;
    let id = ClientOrderId::parse("bench-open").context("client order id")?;
    let open = MarketOrder::open(SYMBOL, Side::Buy, quantity, PositionMode::OneWay, id);
    client
        .place_market_order(&open)
        .await
        .context("opening the position")?;
    Ok(paper)
}

/// A client of `paper`, built as the worker builds its own.
pub fn client(paper: &RunningPaper, secret: &Secret) -> anyhow::Result<Client> {
    let mut config = ClientConfig::new(paper.base_url());
    config.timeout = Duration::from_secs(5);
    Client::new(config, secret.credentials()?).context("building the exchange client")
}

/// A running apply worker and the trigger that stops it.
pub struct Worker {
    pub running: Running,
    pub trigger: ShutdownTrigger,
}

/// Starts the apply worker in this process against `store` and `paper`, with the HOLD lease
/// of [`SYMBOL`] set and a per-plan limit far above any plan sent.
pub async fn worker(
    store: &Store,
    paper: &RunningPaper,
    secret: &Secret,
) -> anyhow::Result<Worker> {
    let Store::Guarded { fixture, apply_url } = store else {
        anyhow::bail!("the apply worker needs the module");
    };
    let mut admin = fixture.client();
    admin.ok(&["SET", &hold_key(SYMBOL), "bench", "EX", "3600"]);

    let max_qty = format!("{SYMBOL}=1")
        .parse()
        .map_err(|e| anyhow::anyhow!("max qty: {e}"))?;
    let mut config = Config::new(apply_url, &paper.base_url(), "bench-1", max_qty);
    config.metrics_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.exchange_timeout = Duration::from_secs(5);
    let (trigger, shutdown) = Shutdown::new();
    let running = reconcile_apply::start(config, secret.credentials()?, shutdown)
        .await
        .context("starting the apply worker")?;
    Ok(Worker { running, trigger })
}

impl Worker {
    /// Stops the worker and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.trigger.fire();
        tokio::time::timeout(Duration::from_secs(30), self.running.wait())
            .await
            .context("the worker did not stop")?
            .context("the worker failed")
    }
}

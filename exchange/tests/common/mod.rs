//! Shared setup: a paper exchange on its own port and a client pointed at it.

#![allow(dead_code)]

use std::time::Duration;

use reconcile_exchange::paper::{self, PaperConfig, RunningPaper};
use reconcile_exchange::{
    Client, ClientConfig, ClientOrderId, Credentials, Decimal, MarketOrder, Order, PositionMode,
    Side,
};

pub const KEY: &str = "paper-test-key";
pub const SECRET: &str = "paper-test-secret-0123456789abcdef";

pub fn credentials() -> Credentials {
    Credentials::new(KEY, SECRET).unwrap()
}

pub async fn start(hedge_mode: bool) -> RunningPaper {
    let mut config = PaperConfig::new(credentials());
    config.hedge_mode = hedge_mode;
    paper::start(config).await.unwrap()
}

pub fn client(paper: &RunningPaper) -> Client {
    client_with(paper, |_| {})
}

pub fn client_with(paper: &RunningPaper, tune: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut config = ClientConfig::new(paper.base_url());
    config.timeout = Duration::from_secs(5);
    tune(&mut config);
    Client::new(config, credentials()).unwrap()
}

/// Opens or grows a position the normal way: a signed MARKET order without reduceOnly.
pub async fn open(
    client: &Client,
    symbol: &str,
    side: Side,
    qty: Decimal,
    mode: PositionMode,
) -> Order {
    let filters = client.symbol_filters(symbol).await.unwrap();
    let quantity = filters.market_quantity(qty).unwrap();
    let id = ClientOrderId::parse(&format!("open-{symbol}-{qty}-{side:?}")).unwrap();
    client
        .place_market_order(&MarketOrder::open(symbol, side, quantity, mode, id))
        .await
        .unwrap()
}

/// The signed amount of a one-way position.
pub async fn position_amt(client: &Client, symbol: &str) -> Decimal {
    let rows = client.position_risk(Some(symbol)).await.unwrap();
    rows.iter().map(|p| p.position_amt).sum()
}

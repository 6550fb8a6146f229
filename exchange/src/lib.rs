//! Exchange layer for the close path: a Binance USD-M futures client with exact decimal
//! quantities and idempotent closes, and (feature `paper`, on by default) a paper exchange that
//! speaks the same HTTP API on loopback.
//!
//! The engine reads with [`Client::position_risk`] and [`Client::position_mode`]; the apply
//! worker turns a verified plan into one reduce-only MARKET order with [`Client::close`]. Both
//! build one [`Client`] at startup from [`ClientConfig`] and [`Credentials::from_env`].
//!
//! # Why a small reqwest client and not `binance-sdk`
//!
//! The official crate covers these calls, takes a base path, a client order id and `Decimal`
//! quantities, and can use rustls. It is built for breadth, though, not for this one path: with
//! only the USD-M feature it still compiles about 2.6 MB of generated source for that module
//! alone and pulls a WebSocket stack, ed25519, compression, a builder-derive crate and tokio's
//! full feature set onto a two-core machine that also builds the Redis module. Its timestamps
//! come from the host clock unless the caller supplies a source, it retries some requests on
//! its own, and it reports failures in its own error type, while the close path must decide,
//! per request, between a definitive rejection, a safe retry and an unknown outcome. The
//! protocol used here is seven endpoints and one HMAC, so a few hundred lines over `reqwest`
//! with rustls (ring, no OpenSSL) keep each of those decisions in view and testable against
//! the paper exchange.
//!
//! # Invariants
//!
//! - No float ever holds a quantity or price: they are `Decimal`, sent in canonical text.
//! - A quantity sent is a [`MarketQuantity`], which only the symbol's filters can build.
//! - One plan id maps to one client order id, and [`Client::close`] sends only after a lookup
//!   of that id answered "no such order"; after a send whose outcome is unknown, only a lookup
//!   made once [`ClientConfig::unknown_outcome_settle`] has passed counts. So a plan executes
//!   at most once as far as the exchange's own lookup can tell.
//! - After an answer with `Retry-After` (the exchange's 429 and 418), no request of the client
//!   reaches the exchange until that pause has passed.
//! - Secrets print as `REDACTED` and are wiped on drop.

#![forbid(unsafe_code)]

mod client;
mod client_order_id;
mod clock;
mod close;
mod cooldown;
mod credentials;
mod error;
mod exchange_info;
mod model;
mod quantity;

#[cfg(feature = "paper")]
pub mod paper;

pub use client::{Client, ClientConfig, MarketOrder, MAINNET_URL, TESTNET_URL};
pub use client_order_id::{is_valid as is_valid_client_order_id, ClientOrderId};
pub use clock::host_now_ms;
pub use close::{ClosePlan, CloseReport, PriorLookup};
pub use credentials::{sign, Credentials, API_KEY_ENV, API_SECRET_ENV, MIN_SECRET_LEN};
pub use error::{code, ErrorClass, ExchangeError};
pub use model::{
    ApiError, DualSidePosition, Order, OrderStatus, Position, PositionMode, PositionSide,
    ServerTime, Side,
};
pub use quantity::{canonical, LotSize, MarketQuantity, QuantityError, SymbolFilters};
pub use rust_decimal::Decimal;

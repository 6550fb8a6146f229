//! Values exchanged with USD-M futures, in the exchange's JSON shapes.
//!
//! Every quantity and price is a `Decimal` carried as a JSON string; a JSON number in one of
//! those fields is refused rather than read through a float.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Order side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    /// The side that reduces a position of the given signed amount.
    pub fn closing(position_amt: Decimal) -> Self {
        if position_amt > Decimal::ZERO {
            Self::Sell
        } else {
            Self::Buy
        }
    }

    /// Parameter text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "BUY",
            Self::Sell => "SELL",
        }
    }
}

/// Which leg of a position an order or position belongs to. `Both` is the one-way mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PositionSide {
    Both,
    Long,
    Short,
}

impl PositionSide {
    /// Parameter text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Both => "BOTH",
            Self::Long => "LONG",
            Self::Short => "SHORT",
        }
    }
}

/// The account's position mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionMode {
    /// One net position per symbol (`positionSide=BOTH`); closes use `reduceOnly=true`.
    OneWay,
    /// Separate LONG and SHORT legs; closes name the leg and must not send `reduceOnly`.
    Hedge,
}

/// Body of `GET /fapi/v1/positionSide/dual`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DualSidePosition {
    pub dual_side_position: bool,
}

/// One row of position risk. In hedge mode a symbol has a LONG and a SHORT row whose
/// `position_amt` is positive and negative respectively.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    pub symbol: String,
    pub position_side: PositionSide,
    /// Signed: positive long, negative short.
    pub position_amt: Decimal,
    pub entry_price: Decimal,
    pub mark_price: Decimal,
    pub update_time: i64,
}

/// Order status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Rejected,
    Expired,
    ExpiredInMatch,
}

/// An order as returned by place, query and all-orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: i64,
    pub symbol: String,
    pub client_order_id: String,
    pub status: OrderStatus,
    pub side: Side,
    pub position_side: PositionSide,
    #[serde(rename = "type")]
    pub order_type: String,
    pub reduce_only: bool,
    pub orig_qty: Decimal,
    pub executed_qty: Decimal,
    pub avg_price: Decimal,
    pub cum_quote: Decimal,
    pub update_time: i64,
}

/// Body of an error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: i64,
    pub msg: String,
}

/// Body of `GET /fapi/v1/time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTime {
    pub server_time: i64,
}

//! Exact order quantities: lot filters, rounding down to the step, canonical text.
//!
//! Invariants of a [`MarketQuantity`]: it is a whole multiple of every step that applies, never
//! above the quantity asked for, never below the largest `minQty` nor above the smallest
//! `maxQty`. Nothing here touches floating point.

use std::fmt;

use rust_decimal::Decimal;
use thiserror::Error;

/// One quantity filter as the exchange publishes it (`LOT_SIZE` or `MARKET_LOT_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LotSize {
    pub min_qty: Decimal,
    pub max_qty: Decimal,
    /// Zero means the filter imposes no step.
    pub step_size: Decimal,
}

impl LotSize {
    /// The largest multiple of the step that is not above `qty`.
    pub fn round_down(&self, qty: Decimal) -> Decimal {
        if self.step_size <= Decimal::ZERO {
            return qty;
        }
        // The remainder of two decimals is exact, unlike a division that may not terminate.
        match qty.checked_rem(self.step_size) {
            Some(rem) => qty - rem,
            None => qty,
        }
    }

    /// Whether `qty` is a whole multiple of the step.
    pub fn on_step(&self, qty: Decimal) -> bool {
        self.step_size <= Decimal::ZERO || qty.checked_rem(self.step_size) == Some(Decimal::ZERO)
    }
}

/// The quantity filters of one symbol, as cached from exchange information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolFilters {
    pub symbol: String,
    pub lot_size: LotSize,
    /// Absent on symbols that publish only `LOT_SIZE`.
    pub market_lot_size: Option<LotSize>,
}

impl SymbolFilters {
    /// Rounds a requested MARKET quantity down to the steps of both filters and checks it
    /// against their bounds. This is the only way to build a [`MarketQuantity`].
    pub fn market_quantity(&self, requested: Decimal) -> Result<MarketQuantity, QuantityError> {
        if requested <= Decimal::ZERO {
            return Err(QuantityError::NotPositive { requested });
        }

        let filters: Vec<&LotSize> = std::iter::once(&self.lot_size)
            .chain(self.market_lot_size.as_ref())
            .collect();
        let mut rounded = requested;
        // Rounding down twice could leave the first step unmet only when the steps do not
        // divide each other; such a result is refused below instead of being sent.
        for filter in &filters {
            rounded = filter.round_down(rounded);
        }
        if !filters.iter().all(|f| f.on_step(rounded)) {
            return Err(QuantityError::IncompatibleSteps {
                symbol: self.symbol.clone(),
            });
        }

        let min = filters.iter().map(|f| f.min_qty).max().unwrap_or_default();
        let max = filters
            .iter()
            .map(|f| f.max_qty)
            .filter(|m| *m > Decimal::ZERO)
            .min();
        if rounded <= Decimal::ZERO || rounded < min {
            return Err(QuantityError::BelowMinimum {
                requested,
                rounded,
                min,
            });
        }
        if let Some(max) = max {
            if rounded > max {
                return Err(QuantityError::AboveMaximum {
                    requested,
                    rounded,
                    max,
                });
            }
        }
        Ok(MarketQuantity(rounded.normalize()))
    }
}

/// A MARKET order quantity that passed the symbol's filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MarketQuantity(Decimal);

impl MarketQuantity {
    /// The exact value.
    pub fn value(&self) -> Decimal {
        self.0
    }
}

impl fmt::Display for MarketQuantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&canonical(self.0))
    }
}

/// Shortest plain decimal text of `value`: no exponent, no trailing zeros, no trailing point.
pub fn canonical(value: Decimal) -> String {
    value.normalize().to_string()
}

/// Why a quantity was refused before any request was sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    #[error("requested quantity {requested} is not positive")]
    NotPositive { requested: Decimal },
    #[error("requested {requested} rounds down to {rounded}, below the minimum {min}")]
    BelowMinimum {
        requested: Decimal,
        rounded: Decimal,
        min: Decimal,
    },
    #[error("requested {requested} rounds down to {rounded}, above the maximum {max}")]
    AboveMaximum {
        requested: Decimal,
        rounded: Decimal,
        max: Decimal,
    },
    #[error("lot and market lot steps of {symbol} do not divide each other")]
    IncompatibleSteps { symbol: String },
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;
    use rust_decimal::prelude::FromPrimitive;

    use super::*;

    fn btc() -> SymbolFilters {
        SymbolFilters {
            symbol: "BTCUSDT".into(),
            lot_size: LotSize {
                min_qty: dec!(0.001),
                max_qty: dec!(1000),
                step_size: dec!(0.001),
            },
            market_lot_size: Some(LotSize {
                min_qty: dec!(0.001),
                max_qty: dec!(120),
                step_size: dec!(0.001),
            }),
        }
    }

    #[test]
    fn float_noise_from_the_old_design_is_rounded_away() {
        let noisy = Decimal::from_f64(0.009000000000000001).unwrap();
        let qty = btc().market_quantity(noisy).unwrap();
        assert_eq!(qty.to_string(), "0.009");
    }

    #[test]
    fn canonical_text_has_no_trailing_zeros_or_exponent() {
        assert_eq!(canonical(dec!(0.0100)), "0.01");
        assert_eq!(canonical(dec!(12.000)), "12");
        assert_eq!(canonical(dec!(0.00000001)), "0.00000001");
    }

    #[test]
    fn bounds_are_enforced_after_rounding() {
        let f = btc();
        assert!(matches!(
            f.market_quantity(dec!(0.0009)),
            Err(QuantityError::BelowMinimum { .. })
        ));
        assert!(matches!(
            f.market_quantity(dec!(121)),
            Err(QuantityError::AboveMaximum { .. })
        ));
        assert!(matches!(
            f.market_quantity(dec!(-1)),
            Err(QuantityError::NotPositive { .. })
        ));
        assert_eq!(
            f.market_quantity(dec!(120.0009)).unwrap().value(),
            dec!(120)
        );
    }

    #[test]
    fn steps_that_do_not_nest_are_refused() {
        let mut f = btc();
        f.market_lot_size = Some(LotSize {
            step_size: dec!(0.003),
            ..f.lot_size
        });
        f.lot_size.step_size = dec!(0.002);
        assert_eq!(f.market_quantity(dec!(0.012)).unwrap().value(), dec!(0.012));
        assert!(matches!(
            f.market_quantity(dec!(0.011)),
            Err(QuantityError::IncompatibleSteps { .. })
        ));
    }
}

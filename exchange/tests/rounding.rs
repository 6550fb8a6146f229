//! Properties of rounding a requested close quantity to a symbol's filters.

use proptest::prelude::*;
use reconcile_exchange::{canonical, Decimal, LotSize, QuantityError, SymbolFilters};

/// Steps as exchanges publish them: a power of ten, or a small multiple of one.
fn step() -> impl Strategy<Value = Decimal> {
    (1u32..=5, 0u32..=8).prop_map(|(mult, scale)| Decimal::new(i64::from(mult), scale))
}

/// Quantities with up to 12 decimals, as a float-minded caller might send them.
fn requested() -> impl Strategy<Value = Decimal> {
    (0i64..=50_000_000_000_000, 0u32..=12).prop_map(|(units, scale)| Decimal::new(units, scale))
}

fn filters(step: Decimal, min_steps: i64, max_steps: i64) -> SymbolFilters {
    let lot = LotSize {
        min_qty: step * Decimal::from(min_steps),
        max_qty: step * Decimal::from(max_steps),
        step_size: step,
    };
    SymbolFilters {
        symbol: "X".into(),
        lot_size: lot,
        market_lot_size: Some(lot),
    }
}

proptest! {
    #[test]
    fn rounded_quantity_is_on_step_and_never_above_request(
        step in step(),
        qty in requested(),
        min_steps in 1i64..=10,
        max_steps in 1_000i64..=1_000_000,
    ) {
        let f = filters(step, min_steps, max_steps);
        match f.market_quantity(qty) {
            Ok(q) => {
                let v = q.value();
                prop_assert!(v <= qty);
                prop_assert_eq!(v % step, Decimal::ZERO);
                prop_assert!(qty - v < step);
                prop_assert!(v >= f.lot_size.min_qty);
                prop_assert!(v <= f.lot_size.max_qty);
            }
            Err(QuantityError::NotPositive { .. }) => prop_assert!(qty <= Decimal::ZERO),
            Err(QuantityError::BelowMinimum { rounded, .. }) => {
                prop_assert!(rounded < f.lot_size.min_qty)
            }
            Err(QuantityError::AboveMaximum { rounded, .. }) => {
                prop_assert!(rounded > f.lot_size.max_qty)
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn canonical_text_reads_back_to_the_same_value(qty in requested()) {
        let text = canonical(qty);
        prop_assert!(!text.contains('e') && !text.contains('E'));
        prop_assert!(!(text.contains('.') && text.ends_with('0')));
        prop_assert!(!text.ends_with('.'));
        prop_assert_eq!(text.parse::<Decimal>().unwrap(), qty);
    }

    #[test]
    fn rounding_is_idempotent(step in step(), qty in requested()) {
        let f = filters(step, 1, i64::from(u32::MAX));
        if let Ok(q) = f.market_quantity(qty) {
            prop_assert_eq!(f.market_quantity(q.value()).unwrap(), q);
        }
    }
}

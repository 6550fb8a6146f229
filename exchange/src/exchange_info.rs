//! Reading the quantity filters out of `GET /fapi/v1/exchangeInfo`.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::quantity::{LotSize, SymbolFilters};

#[derive(Deserialize)]
struct Body {
    symbols: Vec<SymbolInfo>,
}

#[derive(Deserialize)]
struct SymbolInfo {
    symbol: String,
    filters: Vec<Filter>,
}

#[derive(Deserialize)]
#[serde(tag = "filterType")]
enum Filter {
    #[serde(rename = "LOT_SIZE")]
    Lot(LotWire),
    #[serde(rename = "MARKET_LOT_SIZE")]
    MarketLot(LotWire),
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LotWire {
    min_qty: Decimal,
    max_qty: Decimal,
    step_size: Decimal,
}

impl From<LotWire> for LotSize {
    fn from(w: LotWire) -> Self {
        Self {
            min_qty: w.min_qty,
            max_qty: w.max_qty,
            step_size: w.step_size,
        }
    }
}

/// Quantity filters by symbol. Symbols without a `LOT_SIZE` filter are left out: an order on
/// them could not be checked.
pub(crate) fn parse(body: &[u8]) -> serde_json::Result<HashMap<String, SymbolFilters>> {
    let body: Body = serde_json::from_slice(body)?;
    let mut out = HashMap::with_capacity(body.symbols.len());
    for info in body.symbols {
        let mut lot = None;
        let mut market = None;
        for filter in info.filters {
            match filter {
                Filter::Lot(w) => lot = Some(w.into()),
                Filter::MarketLot(w) => market = Some(w.into()),
                Filter::Other => {}
            }
        }
        if let Some(lot_size) = lot {
            let filters = SymbolFilters {
                symbol: info.symbol.clone(),
                lot_size,
                market_lot_size: market,
            };
            out.insert(info.symbol, filters);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;

    use super::*;

    #[test]
    fn lot_filters_are_read_and_other_filters_ignored() {
        let body = br#"{"timezone":"UTC","symbols":[{"symbol":"BTCUSDT","status":"TRADING",
            "filters":[{"filterType":"PRICE_FILTER","tickSize":"0.10"},
            {"filterType":"LOT_SIZE","minQty":"0.001","maxQty":"1000","stepSize":"0.001"},
            {"filterType":"MARKET_LOT_SIZE","minQty":"0.001","maxQty":"120","stepSize":"0.001"},
            {"filterType":"MIN_NOTIONAL","notional":"100"}]},
            {"symbol":"NOLOT","filters":[]}]}"#;
        let parsed = parse(body).unwrap();
        let btc = &parsed["BTCUSDT"];
        assert_eq!(btc.lot_size.step_size, dec!(0.001));
        assert_eq!(btc.market_lot_size.unwrap().max_qty, dec!(120));
        assert!(!parsed.contains_key("NOLOT"));
    }
}

//! The engine's Redis keys and every command it sends.
//!
//! The key layout is the replaced system's. The engine reads ledgers and the apply worker's
//! dedupe keys, sets and removes HOLD leases, appends events, and writes close plans only
//! through `RECONCILE.XADDSIGNED`, which signs them inside Redis.

use std::time::Duration;

use reconcile_exchange::Decimal;
use reconcile_worker::redis::{in_slot_of, Connection};
use redis::RedisError;

/// The guarded stream close plans are signed into, unless the engine is given another.
pub const CLOSE_STREAM: &str = "quantum:stream:reconcile.close";
/// Where HOLD_SET, PLAN_PUBLISHED, HOLD_CLEARED and MANUAL_REQUIRED go.
pub const EVENTS_STREAM: &str = "quantum:stream:reconcile.events";
/// The ledger hash field with the signed position.
pub const LEDGER_FIELD: &str = "ledger_amt";
/// How far back [`last_plan`] looks for a symbol's newest plan after a restart.
const RECOVERY_SCAN: usize = 500;

/// The ledger hash of `symbol`.
pub fn ledger_key(symbol: &str) -> String {
    format!("quantum:position:ledger:{symbol}")
}

/// The HOLD lease of `symbol`: while it exists the trading system leaves the symbol alone.
pub fn hold_key(symbol: &str) -> String {
    format!("quantum:reconcile:hold:{symbol}")
}

/// The apply worker's record of a plan: `executing <consumer> <since_ms>` while it works on
/// it, then `done <status> <order_id>`.
pub fn dedupe_key(plan_id: &str) -> String {
    format!("quantum:apply:dedupe:{plan_id}")
}

/// The dedupe key of `plan_id` as the apply worker reading `stream` names it: in a cluster it
/// carries the stream's hash tag.
pub fn dedupe_key_in(stream: &str, plan_id: &str) -> String {
    in_slot_of(&dedupe_key(plan_id), stream)
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer, or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// The ledger field holds something that is not a decimal; its text is not repeated.
    #[error("ledger of {symbol} is not a decimal")]
    BadLedger { symbol: String },
}

/// The apply worker's progress on one plan, from its dedupe key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyState {
    /// No record: not picked up yet, or the record expired.
    Unknown,
    /// Picked up, the order may be in flight.
    Executing,
    /// Finished, whatever the outcome.
    Done,
}

/// A plan the engine published earlier, as remembered or recovered from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPlan {
    pub plan_id: String,
    pub signature: String,
}

/// The ledger amount of `symbol`; `None` when the hash or the field is missing.
pub async fn read_ledger(
    con: &mut Connection,
    symbol: &str,
) -> Result<Option<Decimal>, StoreError> {
    let text: Option<String> = redis::cmd("HGET")
        .arg(ledger_key(symbol))
        .arg(LEDGER_FIELD)
        .query_async(con)
        .await?;
    let Some(text) = text else {
        return Ok(None);
    };
    let parsed = text
        .trim()
        .parse::<Decimal>()
        .map_err(|_| StoreError::BadLedger {
            symbol: symbol.to_string(),
        })?;
    Ok(Some(parsed))
}

/// Sets (or renews) the HOLD lease of `symbol` to `1` for `ttl`.
pub async fn set_hold(con: &mut Connection, symbol: &str, ttl: Duration) -> Result<(), StoreError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    redis::cmd("SET")
        .arg(hold_key(symbol))
        .arg(1)
        .arg("PX")
        .arg(ttl_ms)
        .query_async::<()>(con)
        .await?;
    Ok(())
}

/// Whether the HOLD lease of `symbol` exists.
pub async fn hold_exists(con: &mut Connection, symbol: &str) -> Result<bool, StoreError> {
    Ok(redis::cmd("EXISTS")
        .arg(hold_key(symbol))
        .query_async(con)
        .await?)
}

/// Removes the HOLD lease of `symbol`; true when there was one.
pub async fn clear_hold(con: &mut Connection, symbol: &str) -> Result<bool, StoreError> {
    let removed: u64 = redis::cmd("DEL")
        .arg(hold_key(symbol))
        .query_async(con)
        .await?;
    Ok(removed > 0)
}

/// Signs `fields` into the close stream `stream`, trimmed to about `maxlen`; returns the
/// entry ID.
pub async fn publish_plan(
    con: &mut Connection,
    stream: &str,
    fields: &[(&'static str, String)],
    maxlen: u64,
) -> Result<String, StoreError> {
    append("RECONCILE.XADDSIGNED", stream, con, fields, maxlen).await
}

/// Blocks until `replicas` replicas acknowledged every write made on this connection so far,
/// or `timeout` passed (Redis WAIT); returns how many acknowledged. In a cluster the WAIT
/// goes to the master serving `stream`, the one that took the plan.
pub async fn wait_replicas(
    con: &mut Connection,
    stream: &str,
    replicas: u32,
    timeout: Duration,
) -> Result<u64, StoreError> {
    // WAIT reads 0 as "block forever"; a timeout under a millisecond must not become that.
    let timeout_ms = timeout.as_millis().max(1);
    let mut wait = redis::cmd("WAIT");
    wait.arg(replicas).arg(timeout_ms.to_string());
    Ok(con.query_at(&wait, stream).await?)
}

/// Appends one event, trimmed to about `maxlen`.
pub async fn append_event(
    con: &mut Connection,
    fields: &[(&'static str, String)],
    maxlen: u64,
) -> Result<String, StoreError> {
    append("XADD", EVENTS_STREAM, con, fields, maxlen).await
}

/// `command stream MAXLEN ~ maxlen * fields...`, for XADD and the module's signed twin, which
/// share their syntax.
async fn append(
    command: &str,
    stream: &str,
    con: &mut Connection,
    fields: &[(&'static str, String)],
    maxlen: u64,
) -> Result<String, StoreError> {
    let mut cmd = redis::cmd(command);
    cmd.arg(stream).arg("MAXLEN").arg("~").arg(maxlen).arg("*");
    for (name, value) in fields {
        cmd.arg(*name).arg(value);
    }
    Ok(cmd.query_async(con).await?)
}

/// What the apply worker reading `stream` recorded for `plan_id`. Only a record whose first
/// word is `executing` means an order may be in flight; any other record means the worker is
/// done.
pub async fn apply_state(
    con: &mut Connection,
    stream: &str,
    plan_id: &str,
) -> Result<ApplyState, StoreError> {
    let record: Option<String> = redis::cmd("GET")
        .arg(dedupe_key_in(stream, plan_id))
        .query_async(con)
        .await?;
    Ok(apply_state_of(record.as_deref()))
}

fn apply_state_of(record: Option<&str>) -> ApplyState {
    match record.map(|text| text.split_whitespace().next()) {
        None => ApplyState::Unknown,
        Some(Some("executing")) => ApplyState::Executing,
        Some(_) => ApplyState::Done,
    }
}

/// The newest plan for `symbol` among the last entries of the close stream `stream`, so that a
/// restarted engine knows what it published before.
pub async fn last_plan(
    con: &mut Connection,
    stream: &str,
    symbol: &str,
) -> Result<Option<PublishedPlan>, StoreError> {
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(RECOVERY_SCAN)
        .query_async(con)
        .await?;
    Ok(entries
        .into_iter()
        .find_map(|(_, fields)| plan_of(symbol, &fields)))
}

fn plan_of(symbol: &str, fields: &[String]) -> Option<PublishedPlan> {
    let value = |name: &str| {
        fields
            .chunks_exact(2)
            .find(|pair| pair[0] == name)
            .map(|pair| pair[1].clone())
    };
    if value("symbol")? != symbol || value("source")? != crate::plan::SOURCE {
        return None;
    }
    Some(PublishedPlan {
        plan_id: value("plan_id")?,
        signature: value("signature")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn keys_follow_the_replaced_layout() {
        assert_eq!(ledger_key("BTCUSDT"), "quantum:position:ledger:BTCUSDT");
        assert_eq!(hold_key("BTCUSDT"), "quantum:reconcile:hold:BTCUSDT");
        assert_eq!(
            dedupe_key("reconclose:X:s:1"),
            "quantum:apply:dedupe:reconclose:X:s:1"
        );
        assert_eq!(dedupe_key_in(CLOSE_STREAM, "p"), dedupe_key("p"));
        assert_eq!(
            dedupe_key_in("quantum:stream:{rc}.close", "p"),
            "quantum:apply:dedupe:p:{rc}"
        );
    }

    #[test]
    fn apply_records_are_read_by_their_first_word() {
        assert_eq!(apply_state_of(None), ApplyState::Unknown);
        assert_eq!(
            apply_state_of(Some("executing apply-1 1700000000000")),
            ApplyState::Executing
        );
        assert_eq!(apply_state_of(Some("done FILLED 42")), ApplyState::Done);
        assert_eq!(apply_state_of(Some("1")), ApplyState::Done);
    }

    #[test]
    fn plan_of_picks_only_the_symbols_own_plans() {
        let entry = strings(&[
            "plan_id",
            "reconclose:BTCUSDT:ab:1",
            "symbol",
            "BTCUSDT",
            "source",
            "p3.4",
            "signature",
            "ab",
            "kid",
            "k1",
        ]);
        let found = plan_of("BTCUSDT", &entry).expect("own plan");
        assert_eq!(found.plan_id, "reconclose:BTCUSDT:ab:1");
        assert_eq!(found.signature, "ab");
        assert_eq!(plan_of("ETHUSDT", &entry), None);

        let other_source = strings(&["plan_id", "x", "symbol", "BTCUSDT", "source", "ops"]);
        assert_eq!(plan_of("BTCUSDT", &other_source), None);
    }
}

//! The worker's Redis state besides the plan stream: dedupe records, HOLD leases, and the
//! final write of an outcome.
//!
//! Dedupe keys are passed in whole ([`crate::config::Config::dedupe_key`]): in a cluster they
//! carry the plan stream's hash tag, so that the final transaction stays in one slot. HOLD
//! leases keep the names the trading system reads, so they are never in a transaction with
//! the stream, and reads of both are sent side by side rather than in one pipeline.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::RedisResult;

use crate::config::hold_key;
use crate::dedupe::Record;

/// The dedupe record at `key`, if there is one.
pub async fn dedupe_record(
    con: &mut impl ConnectionLike,
    key: &str,
) -> RedisResult<Option<Record>> {
    let value: Option<String> = redis::cmd("GET").arg(key).query_async(con).await?;
    Ok(value.as_deref().map(Record::parse))
}

/// What is stored for a plan before it is checked.
#[derive(Debug)]
pub struct PlanState {
    /// The dedupe record found, if any. With a claim this is the record that stopped it.
    pub record: Option<Record>,
    /// Whether this call wrote the claim.
    pub claimed: bool,
    /// Whether the symbol's HOLD lease exists.
    pub hold: bool,
}

/// The dedupe record at `key` and whether the HOLD lease of `symbol` exists. With `claim`,
/// the record is written as well where there is none, in the same command (`SET NX GET`), so
/// that claiming costs no round trip of its own. The two commands go out together on the
/// multiplexed connection: one round trip, and no cross-slot pipeline in a cluster.
pub async fn plan_state<C: ConnectionLike + Clone>(
    con: &mut C,
    key: &str,
    symbol: &str,
    claim: Option<(&Record, Duration)>,
) -> RedisResult<PlanState> {
    let mut second = con.clone();
    let read = async {
        let Some((record, ttl)) = claim else {
            return Ok((dedupe_record(con, key).await?, false));
        };
        let previous = set_get(con, key, record, "NX", ttl).await?;
        Ok::<_, redis::RedisError>(match previous {
            Some(text) => (Some(Record::parse(&text)), false),
            None => (None, true),
        })
    };
    let (read, hold) = tokio::join!(read, hold_present(&mut second, symbol));
    let (record, claimed) = read?;
    Ok(PlanState {
        record,
        claimed,
        hold: hold?,
    })
}

/// Replaces the record at the dedupe `key` with `record` when it still reads `stale`. Returns
/// whether this call replaced it. Of two workers racing to take over the same claim, the one
/// that finds its own expected value replaced goes no further.
pub async fn take_over(
    con: &mut impl ConnectionLike,
    key: &str,
    stale: &str,
    record: &Record,
    ttl: Duration,
) -> RedisResult<bool> {
    let previous = set_get(con, key, record, "XX", ttl).await?;
    Ok(previous.as_deref() == Some(stale))
}

/// `SET key record <condition> GET EX ttl`: writes `record` if `condition` (`NX`: no record,
/// `XX`: a record) holds, and returns what was there before either way.
async fn set_get(
    con: &mut impl ConnectionLike,
    key: &str,
    record: &Record,
    condition: &str,
    ttl: Duration,
) -> RedisResult<Option<String>> {
    redis::cmd("SET")
        .arg(key)
        .arg(record.to_string())
        .arg(condition)
        .arg("GET")
        .arg("EX")
        .arg(ttl.as_secs().max(1))
        .query_async(con)
        .await
}

/// Whether the symbol's HOLD lease exists.
pub async fn hold_present(con: &mut impl ConnectionLike, symbol: &str) -> RedisResult<bool> {
    let found: i64 = redis::cmd("EXISTS")
        .arg(hold_key(symbol))
        .query_async(con)
        .await?;
    Ok(found == 1)
}

/// Everything that is written when a plan's outcome is final.
pub struct Finish<'a> {
    pub stream: &'a str,
    pub group: &'a str,
    pub entry_id: &'a str,
    pub result_stream: &'a str,
    pub result_maxlen: usize,
    pub result: Vec<(&'static str, String)>,
    /// The dedupe key and record to write, with its lifetime, when the plan was claimed.
    pub done: Option<(String, Record, Duration)>,
    /// The HOLD lease to renew, with its lifetime, after a successful close.
    pub renew_hold: Option<(&'a str, Duration)>,
}

/// Records the outcome, marks the plan done and acknowledges the entry in one transaction:
/// either the entry stays pending with nothing recorded, or all of it happened. The HOLD
/// lease is renewed beside it, outside the transaction: its key is the trading system's and
/// may live in another slot, and a renewal lost to a crash leaves the lease the engine set.
///
/// Returns whether a HOLD lease was there to renew; a renewal that failed counts as not
/// renewed, and only a failed transaction is an error.
pub async fn finish<C: ConnectionLike + Clone>(
    con: &mut C,
    finish: Finish<'_>,
) -> RedisResult<bool> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("XADD")
        .arg(finish.result_stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(finish.result_maxlen.max(1))
        .arg("*")
        .arg(&finish.result);
    if let Some((key, record, ttl)) = &finish.done {
        pipe.cmd("SET")
            .arg(key)
            .arg(record.to_string())
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .ignore();
    }
    pipe.cmd("XACK")
        .arg(finish.stream)
        .arg(finish.group)
        .arg(finish.entry_id)
        .ignore();
    let mut second = con.clone();
    let renew = async {
        let (symbol, ttl) = finish.renew_hold?;
        let renewed: RedisResult<i64> = redis::cmd("EXPIRE")
            .arg(hold_key(symbol))
            .arg(ttl.as_secs().max(1))
            .query_async(&mut second)
            .await;
        Some(renewed)
    };
    let (written, renewed) = tokio::join!(pipe.query_async::<()>(con), renew);
    written?;
    match renewed {
        Some(Ok(found)) => Ok(found == 1),
        Some(Err(err)) => {
            tracing::warn!(error = %err, "renewing the HOLD lease failed");
            Ok(false)
        }
        None => Ok(false),
    }
}

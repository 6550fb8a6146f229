//! The worker's Redis state besides the plan stream: dedupe records, HOLD leases, and the
//! final write of an outcome.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};

use crate::config::hold_key;
use crate::dedupe::{self, Record};

/// The dedupe record of `plan_id`, if there is one.
pub async fn dedupe_record(
    con: &mut impl ConnectionLike,
    plan_id: &str,
) -> RedisResult<Option<Record>> {
    let value: Option<String> = redis::cmd("GET")
        .arg(dedupe::key(plan_id))
        .query_async(con)
        .await?;
    Ok(value.as_deref().map(Record::parse))
}

/// The dedupe record of `plan_id` and whether the HOLD lease of `symbol` exists, read in one
/// round trip.
pub async fn plan_state(
    con: &mut impl ConnectionLike,
    plan_id: &str,
    symbol: &str,
) -> RedisResult<(Option<Record>, bool)> {
    let (value, found): (Option<String>, i64) = redis::pipe()
        .cmd("GET")
        .arg(dedupe::key(plan_id))
        .cmd("EXISTS")
        .arg(hold_key(symbol))
        .query_async(con)
        .await?;
    Ok((value.as_deref().map(Record::parse), found == 1))
}

/// Writes `record` for `plan_id` if it has none (`SET NX`). Returns whether it was written.
pub async fn claim(
    con: &mut impl ConnectionLike,
    plan_id: &str,
    record: &Record,
    ttl: Duration,
) -> RedisResult<bool> {
    let reply: Value = redis::cmd("SET")
        .arg(dedupe::key(plan_id))
        .arg(record.to_string())
        .arg("NX")
        .arg("EX")
        .arg(ttl.as_secs().max(1))
        .query_async(con)
        .await?;
    Ok(reply != Value::Nil)
}

/// Replaces the record of `plan_id` with `record` when it still reads `stale`. Returns whether
/// this call replaced it. Of two workers racing to take over the same claim, the one that
/// finds its own expected value replaced goes no further.
pub async fn take_over(
    con: &mut impl ConnectionLike,
    plan_id: &str,
    stale: &str,
    record: &Record,
    ttl: Duration,
) -> RedisResult<bool> {
    let previous: Option<String> = redis::cmd("SET")
        .arg(dedupe::key(plan_id))
        .arg(record.to_string())
        .arg("XX")
        .arg("GET")
        .arg("EX")
        .arg(ttl.as_secs().max(1))
        .query_async(con)
        .await?;
    Ok(previous.as_deref() == Some(stale))
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
    /// The dedupe record to write, with its lifetime, when the plan was claimed.
    pub done: Option<(&'a str, Record, Duration)>,
    /// The HOLD lease to renew, with its lifetime, after a successful close.
    pub renew_hold: Option<(&'a str, Duration)>,
}

/// Records the outcome, marks the plan done, renews the HOLD lease and acknowledges the
/// entry, in one transaction: either the entry stays pending with nothing recorded, or all of
/// it happened. Returns whether a HOLD lease was there to renew.
pub async fn finish(con: &mut impl ConnectionLike, finish: Finish<'_>) -> RedisResult<bool> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("XADD")
        .arg(finish.result_stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(finish.result_maxlen.max(1))
        .arg("*")
        .arg(&finish.result);
    if let Some((plan_id, record, ttl)) = &finish.done {
        pipe.cmd("SET")
            .arg(dedupe::key(plan_id))
            .arg(record.to_string())
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .ignore();
    }
    if let Some((symbol, ttl)) = finish.renew_hold {
        pipe.cmd("EXPIRE")
            .arg(hold_key(symbol))
            .arg(ttl.as_secs().max(1));
    }
    pipe.cmd("XACK")
        .arg(finish.stream)
        .arg(finish.group)
        .arg(finish.entry_id)
        .ignore();
    let replies: Vec<Value> = pipe.query_async(con).await?;
    Ok(matches!(replies.get(1), Some(Value::Int(1))))
}

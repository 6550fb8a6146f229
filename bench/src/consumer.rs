//! A minimal consumer of the plan stream: read, verify, place the close, acknowledge. Nothing
//! else of the apply worker's protocol (no invariants, dedupe record, position read or result
//! record), so that the only difference between its two kinds is where the MAC is checked:
//!
//! - [`Verify::Module`]: `RECONCILE.XREADVERIFIED GROUP ... BLOCK`, the module checks the MAC;
//! - [`Verify::ClientSide`]: `XREADGROUP ... BLOCK` on a server without the module, and the
//!   consumer checks the MAC itself (constant-time compare inside `check_entry`), as the
//!   replaced design did.
//!
//! Both place the order with the exchange client's idempotent close (a lookup by client order
//! id, then the order), as the worker does.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use reconcile_apply::plan::Entry;
use reconcile_apply::stream::{self, From};
use reconcile_core::keyring::Keyring;
use reconcile_core::mac::{check_entry, Freshness};
use reconcile_exchange::{host_now_ms, Client, ClosePlan, Decimal, PositionMode, Side};
use reconcile_tests::STREAM;
use reconcile_worker::Shutdown;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use crate::probe::{self, Mark};
use crate::setup::GROUP;

const CONSUMER: &str = "bench-1";
const BATCH: usize = 16;
const BLOCK: Duration = Duration::from_secs(5);
/// The module's default freshness window, applied by the baseline consumer too.
const MAX_AGE_MS: u64 = 300_000;

/// Where the MAC is checked.
pub enum Verify {
    Module,
    ClientSide(Keyring),
}

/// Consumes plans from the group until `shutdown`.
pub async fn run(
    redis_url: String,
    verify: Verify,
    exchange: Arc<Client>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let options = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(BLOCK * 2));
    let mut con = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection_with_config(&options)
        .await
        .context("connecting the consumer")?;
    exchange.sync_clock().await.context("syncing the clock")?;
    let mode = exchange.position_mode().await.context("reading the mode")?;

    loop {
        let entries = tokio::select! {
            entries = read(&mut con, &verify) => entries?,
            _ = shutdown.wait() => return Ok(()),
        };
        probe::stage("consumer: read returned");
        for entry in entries {
            let success = handle(&exchange, mode, &entry).await;
            redis::cmd("XACK")
                .arg(STREAM)
                .arg(GROUP)
                .arg(&entry.id)
                .query_async::<()>(&mut con)
                .await
                .context("acknowledging")?;
            let plan_id = field(&entry, "plan_id").unwrap_or_default().to_owned();
            probe::mark(Mark::Settled {
                plan_id,
                success,
                at: Instant::now(),
            });
        }
    }
}

async fn read(con: &mut MultiplexedConnection, verify: &Verify) -> anyhow::Result<Vec<Entry>> {
    match verify {
        Verify::Module => {
            let from = From::New;
            let cmd = stream::read_command(STREAM, GROUP, CONSUMER, BATCH, Some(BLOCK), from);
            let reply: Value = cmd.query_async(con).await?;
            stream::decode_read(&reply).map_err(|detail| anyhow::anyhow!(detail))
        }
        Verify::ClientSide(ring) => {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(CONSUMER)
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(STREAM)
                .arg(">")
                .query_async(con)
                .await?;
            let mut entries = decode(&reply).context("decoding XREADGROUP")?;
            let freshness = Freshness {
                now_ms: host_now_ms() as u64,
                max_age_ms: MAX_AGE_MS,
            };
            for entry in &mut entries {
                let verified = entry.fields.as_ref().is_some_and(|fields| {
                    let items: Vec<&[u8]> = fields
                        .iter()
                        .flat_map(|(f, v)| [f.as_slice(), v.as_slice()])
                        .collect();
                    check_entry(ring, STREAM.as_bytes(), &items, Some(freshness)).is_ok()
                });
                if !verified {
                    tracing::warn!(entry_id = %entry.id, "entry failed verification");
                    entry.fields = None;
                }
            }
            probe::stage("consumer: verified");
            Ok(entries)
        }
    }
}

/// Places the close of one verified entry. `false` when it could not be placed.
async fn handle(exchange: &Client, mode: PositionMode, entry: &Entry) -> bool {
    let Some(plan) = close_plan(entry) else {
        tracing::warn!(entry_id = %entry.id, "entry is not a readable plan");
        return false;
    };
    match exchange.close(&plan, mode).await {
        Ok(_) => {
            probe::stage("consumer: close returned");
            true
        }
        Err(error) => {
            tracing::warn!(plan_id = %plan.plan_id, %error, "close failed");
            false
        }
    }
}

fn close_plan(entry: &Entry) -> Option<ClosePlan> {
    let side = match field(entry, "side")? {
        "SELL" => Side::Sell,
        "BUY" => Side::Buy,
        _ => return None,
    };
    Some(ClosePlan {
        plan_id: field(entry, "plan_id")?.to_owned(),
        symbol: field(entry, "symbol")?.to_owned(),
        side,
        quantity: Decimal::from_str(field(entry, "qty")?).ok()?,
    })
}

fn field<'a>(entry: &'a Entry, name: &str) -> Option<&'a str> {
    let fields = entry.fields.as_ref()?;
    let (_, value) = fields.iter().find(|(f, _)| f == name.as_bytes())?;
    std::str::from_utf8(value).ok()
}

/// The entries of a one-stream `XREADGROUP` reply; a timeout (nil) is no entries.
fn decode(reply: &Value) -> anyhow::Result<Vec<Entry>> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        other => anyhow::bail!("expected an array, got {other:?}"),
    };
    let mut entries = Vec::new();
    for stream in streams {
        let Value::Array(parts) = stream else {
            anyhow::bail!("expected [stream, entries]");
        };
        let [_, Value::Array(items)] = parts.as_slice() else {
            anyhow::bail!("expected [stream, entries]");
        };
        for item in items {
            entries.push(decode_entry(item)?);
        }
    }
    Ok(entries)
}

fn decode_entry(item: &Value) -> anyhow::Result<Entry> {
    let Value::Array(parts) = item else {
        anyhow::bail!("expected [id, fields]");
    };
    let [Value::BulkString(id), Value::Array(flat)] = parts.as_slice() else {
        anyhow::bail!("expected [id, fields]");
    };
    let bulk = |value: &Value| match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        _ => None,
    };
    let fields = flat
        .chunks_exact(2)
        .map(|pair| Some((bulk(&pair[0])?, bulk(&pair[1])?)))
        .collect::<Option<Vec<_>>>();
    Ok(Entry {
        id: String::from_utf8(id.clone()).context("entry id is not text")?,
        fields,
    })
}

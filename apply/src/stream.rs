//! The consumer group on the plan stream: creating it, verified reads, and claiming entries
//! that dead consumers left pending.
//!
//! Entries are only ever read through `RECONCILE.XREADVERIFIED`, so every entry handed on has a
//! MAC that verified; new deliveries were also fresh. Claimed entries are read back through
//! the group's history in the same way before anything is done with them.

use std::time::Duration;

use reconcile_worker::redis::Connection;
use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};

use crate::plan::Entry;

/// Where a group read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From<'a> {
    /// Entries never delivered to the group (`>`).
    New,
    /// This consumer's pending entries with an ID above this one (`0` for all).
    History(&'a str),
}

/// Creates the group at the end of the stream (and the stream if missing). An existing group
/// is left as it is.
pub async fn ensure_group(
    con: &mut impl ConnectionLike,
    stream: &str,
    group: &str,
) -> RedisResult<()> {
    let created: RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(con)
        .await;
    match created {
        Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
        other => other.map(drop),
    }
}

/// One `RECONCILE.XREADVERIFIED GROUP` read of at most `count` entries. `block` waits for new
/// entries; `None` returns at once. In a cluster the read goes straight to the node serving
/// `stream`, whose name the cluster client would not find in a module command.
pub async fn read(
    con: &mut Connection,
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
    block: Option<Duration>,
    from: From<'_>,
) -> RedisResult<Vec<Entry>> {
    let cmd = read_command(stream, group, consumer, count, block, from);
    let reply: Value = con.query_at(&cmd, stream).await?;
    decode_read(&reply).map_err(|detail| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unexpected verified read reply",
            detail,
        ))
    })
}

/// The `RECONCILE.XREADVERIFIED GROUP` command [`read`] sends; its reply goes to
/// [`decode_read`].
pub fn read_command(
    stream: &str,
    group: &str,
    consumer: &str,
    count: usize,
    block: Option<Duration>,
    from: From<'_>,
) -> redis::Cmd {
    let mut cmd = redis::cmd("RECONCILE.XREADVERIFIED");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count.max(1));
    if let Some(block) = block {
        // BLOCK 0 would wait forever.
        cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
    }
    let id = match from {
        From::New => ">",
        From::History(after) => after,
    };
    cmd.arg("STREAMS").arg(stream).arg(id);
    cmd
}

/// Claims the group's entries that have been pending with any consumer for at least `idle`
/// (`XAUTOCLAIM ... JUSTID`), so that they become this consumer's pending entries. Returns
/// how many were claimed; they are then read back with [`From::History`].
pub async fn claim_idle(
    con: &mut impl ConnectionLike,
    stream: &str,
    group: &str,
    consumer: &str,
    idle: Duration,
    count: usize,
) -> RedisResult<usize> {
    let mut cursor = "0-0".to_string();
    let mut claimed = 0;
    loop {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(idle.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("JUSTID")
            .query_async(con)
            .await?;
        let (next, ids) = decode_autoclaim(&reply).map_err(|detail| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected XAUTOCLAIM reply",
                detail,
            ))
        })?;
        claimed += ids;
        if next == "0-0" {
            return Ok(claimed);
        }
        cursor = next;
    }
}

/// Decodes a verified read reply (the shape of `XREADGROUP`) for one stream.
pub fn decode_read(reply: &Value) -> Result<Vec<Entry>, String> {
    let streams: Vec<&Value> = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams.iter().collect(),
        // RESP3 replies key the streams in a map.
        Value::Map(pairs) => pairs.iter().map(|(_, entries)| entries).collect(),
        other => return Err(format!("expected an array of streams, got {other:?}")),
    };
    let mut entries = Vec::new();
    for stream in streams {
        let list = match stream {
            Value::Array(pair) if pair.len() == 2 => &pair[1],
            // A map value is the entry list itself.
            list @ Value::Array(_) => list,
            other => return Err(format!("expected [key, entries], got {other:?}")),
        };
        let Value::Array(list) = list else {
            return Err("expected an entry list".into());
        };
        for entry in list {
            entries.push(decode_entry(entry)?);
        }
    }
    Ok(entries)
}

fn decode_entry(entry: &Value) -> Result<Entry, String> {
    let Value::Array(parts) = entry else {
        return Err("expected [id, fields]".into());
    };
    let (id, fields) = match parts.as_slice() {
        [id, fields] => (text(id)?, fields),
        _ => return Err("expected [id, fields]".into()),
    };
    // Fields that cannot be read leave only the ID, as a trimmed entry does: the entry is
    // then refused and acknowledged rather than failing the whole read again and again.
    let fields = match fields {
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks_exact(2)
            .map(|pair| Some((bytes(&pair[0]).ok()?, bytes(&pair[1]).ok()?)))
            .collect(),
        Value::Map(items) => items
            .iter()
            .map(|(field, value)| Some((bytes(field).ok()?, bytes(value).ok()?)))
            .collect(),
        _ => None,
    };
    Ok(Entry { id, fields })
}

/// The group's pending entries: how many, and the oldest one's ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSummary {
    pub count: u64,
    pub oldest_id: Option<String>,
}

impl PendingSummary {
    /// How long the oldest pending entry has existed at `now_ms` (Unix milliseconds), going by
    /// the time part of its ID; zero when nothing is pending.
    pub fn oldest_age(&self, now_ms: i64) -> Duration {
        let created_ms = self
            .oldest_id
            .as_deref()
            .and_then(|id| id.split_once('-'))
            .and_then(|(ms, _)| ms.parse::<i64>().ok());
        let age_ms = created_ms.map_or(0, |ms| now_ms.saturating_sub(ms));
        Duration::from_millis(u64::try_from(age_ms).unwrap_or(0))
    }
}

/// The summary form of `XPENDING` for `group`, which counts the entries delivered to any of its
/// consumers and not yet acknowledged. A group or stream that does not exist yet has none.
pub async fn pending(
    con: &mut Connection,
    stream: &str,
    group: &str,
) -> RedisResult<PendingSummary> {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(stream).arg(group);
    let reply: Value = match con.query_at(&cmd, stream).await {
        // Before the worker has created its group, nothing is pending.
        Err(err) if err.code() == Some("NOGROUP") => {
            return Ok(PendingSummary {
                count: 0,
                oldest_id: None,
            })
        }
        other => other?,
    };
    decode_pending(&reply).map_err(|detail| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unexpected XPENDING reply",
            detail,
        ))
    })
}

fn decode_pending(reply: &Value) -> Result<PendingSummary, String> {
    let Value::Array(parts) = reply else {
        return Err("expected an array".into());
    };
    match parts.as_slice() {
        [Value::Int(count), oldest, ..] => Ok(PendingSummary {
            count: u64::try_from(*count).map_err(|_| format!("negative count {count}"))?,
            oldest_id: match oldest {
                Value::Nil => None,
                id => Some(text(id)?),
            },
        }),
        _ => Err("expected [count, oldest ID, newest ID, consumers]".into()),
    }
}

fn decode_autoclaim(reply: &Value) -> Result<(String, usize), String> {
    let Value::Array(parts) = reply else {
        return Err("expected an array".into());
    };
    match parts.as_slice() {
        [cursor, Value::Array(ids), ..] => Ok((text(cursor)?, ids.len())),
        _ => Err("expected [cursor, ids, ...]".into()),
    }
}

fn bytes(value: &Value) -> Result<Vec<u8>, String> {
    match value {
        Value::BulkString(bytes) => Ok(bytes.clone()),
        Value::SimpleString(text) => Ok(text.as_bytes().to_vec()),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn text(value: &Value) -> Result<String, String> {
    String::from_utf8(bytes(value)?).map_err(|_| "expected UTF-8 text".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn decodes_entries_and_trimmed_ids() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("quantum:stream:reconcile.close"),
            Value::Array(vec![
                Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("a"), bulk("b")])]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = decode_read(&reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(
            entries[0].fields,
            Some(vec![(b"a".to_vec(), b"b".to_vec())])
        );
        assert_eq!(entries[1].fields, None);
        assert!(decode_read(&Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn unreadable_fields_leave_the_id_to_acknowledge() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("a")]),
            ])]),
        ])]);
        let entries = decode_read(&reply).unwrap();
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(entries[0].fields, None);
    }

    #[test]
    fn pending_summary_gives_count_and_the_oldest_age() {
        let reply = Value::Array(vec![
            Value::Int(2),
            bulk("1700000000000-3"),
            bulk("1700000005000-0"),
            Value::Array(vec![Value::Array(vec![bulk("apply-1"), bulk("2")])]),
        ]);
        let pending = decode_pending(&reply).unwrap();
        assert_eq!(pending.count, 2);
        assert_eq!(
            pending.oldest_age(1_700_000_090_000),
            Duration::from_secs(90)
        );
        // A clock behind the entry's ID gives zero, never a negative age.
        assert_eq!(pending.oldest_age(1_600_000_000_000), Duration::ZERO);

        let none = Value::Array(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
        let pending = decode_pending(&none).unwrap();
        assert_eq!(pending.count, 0);
        assert_eq!(pending.oldest_age(1_700_000_090_000), Duration::ZERO);
        assert!(decode_pending(&Value::Nil).is_err());
    }

    #[test]
    fn autoclaim_reply_gives_cursor_and_count() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![bulk("1-0"), bulk("2-0")]),
            Value::Array(vec![]),
        ]);
        assert_eq!(decode_autoclaim(&reply).unwrap(), ("0-0".into(), 2));
    }
}

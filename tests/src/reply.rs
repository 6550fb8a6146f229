//! Decoding replies: stream entries, read batches, INFO sections and plain text.

use std::collections::BTreeMap;

use redis::Value;

/// One stream entry: its ID and its field/value pairs in stream order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry ID, `ms-seq`.
    pub id: String,
    /// Field/value pairs as stored, trailer included.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The value of the first field named `name`, as text.
    pub fn get(&self, name: &str) -> Option<String> {
        self.fields
            .iter()
            .find(|(field, _)| field == name.as_bytes())
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }

    /// The field names in order, as text.
    pub fn names(&self) -> Vec<String> {
        self.fields
            .iter()
            .map(|(field, _)| String::from_utf8_lossy(field).into_owned())
            .collect()
    }

    /// The pairs before the `kid`/`signed_ms`/`hmac` trailer the module appends.
    pub fn user_fields(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.fields[..self.fields.len().saturating_sub(3)]
    }
}

/// The part of a read reply that belongs to one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamBatch {
    /// The stream key.
    pub key: String,
    /// The entries returned for it.
    pub entries: Vec<Entry>,
}

/// The text of a bulk string, simple string, status or integer.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Okay => Some("OK".to_string()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The texts of an array of scalars (non-scalars become their debug form).
pub fn texts(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| text(item).unwrap_or_else(|| format!("{item:?}")))
            .collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// Every scalar in a reply, at any depth, joined by newlines: what a secret scan looks at.
pub fn flatten(value: &Value) -> String {
    let mut out = String::new();
    flatten_into(value, &mut out);
    out
}

fn flatten_into(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) | Value::Set(items) => {
            items.iter().for_each(|item| flatten_into(item, out));
        }
        Value::Map(pairs) => pairs.iter().for_each(|(key, value)| {
            flatten_into(key, out);
            flatten_into(value, out);
        }),
        Value::VerbatimString { text, .. } => push_line(out, text),
        Value::ServerError(err) => push_line(out, &format!("{err:?}")),
        other => {
            if let Some(text) = text(other) {
                push_line(out, &text);
            }
        }
    }
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push('\n');
}

/// Decodes an XRANGE-style array of `[id, [field, value, ...]]`.
pub fn entries(value: &Value) -> Vec<Entry> {
    match value {
        Value::Array(items) => items.iter().map(entry).collect(),
        Value::Nil => Vec::new(),
        other => panic!("expected an array of entries, got {other:?}"),
    }
}

fn entry(value: &Value) -> Entry {
    let Value::Array(parts) = value else {
        panic!("expected [id, fields], got {value:?}");
    };
    let [id, fields] = parts.as_slice() else {
        panic!("expected [id, fields], got {value:?}");
    };
    let id = text(id).unwrap_or_else(|| panic!("entry id {id:?}"));
    let flat = match fields {
        Value::Array(items) => items.clone(),
        // XREADGROUP answers nil fields for a pending entry that was deleted.
        Value::Nil => Vec::new(),
        other => panic!("entry fields {other:?}"),
    };
    assert!(flat.len() % 2 == 0, "odd field list in {id}: {flat:?}");
    let bytes = |value: &Value| match value {
        Value::BulkString(bytes) => bytes.clone(),
        other => panic!("field or value is not a bulk string: {other:?}"),
    };
    let fields = flat
        .chunks(2)
        .map(|pair| (bytes(&pair[0]), bytes(&pair[1])))
        .collect();
    Entry { id, fields }
}

/// Decodes an XREAD-style reply; `None` for nil.
pub fn read_batches(value: &Value) -> Option<Vec<StreamBatch>> {
    match value {
        Value::Nil => None,
        Value::Array(streams) => Some(streams.iter().map(batch).collect()),
        // RESP3 answers a map; the tests speak RESP2, but decode it the same way anyway.
        Value::Map(pairs) => Some(
            pairs
                .iter()
                .map(|(key, entries_value)| StreamBatch {
                    key: text(key).expect("stream key"),
                    entries: entries(entries_value),
                })
                .collect(),
        ),
        other => panic!("expected a read reply, got {other:?}"),
    }
}

fn batch(value: &Value) -> StreamBatch {
    let Value::Array(parts) = value else {
        panic!("expected [key, entries], got {value:?}");
    };
    let [key, list] = parts.as_slice() else {
        panic!("expected [key, entries], got {value:?}");
    };
    StreamBatch {
        key: text(key).expect("stream key"),
        entries: entries(list),
    }
}

/// The `name:value` lines of an INFO reply.
#[derive(Clone, Debug, Default)]
pub struct Info {
    fields: BTreeMap<String, String>,
    raw: String,
}

impl Info {
    /// Parses INFO text; section headers and blank lines are skipped.
    pub fn parse(raw: &str) -> Info {
        let fields = raw
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
            .collect();
        Info {
            fields,
            raw: raw.to_string(),
        }
    }

    /// The module's field `name` (Redis prefixes it with `reconcile_`).
    pub fn get(&self, name: &str) -> &str {
        let full = format!("reconcile_{name}");
        match self.fields.get(&full) {
            Some(value) => value,
            None => panic!("INFO has no {full}; it reads:\n{}", self.raw),
        }
    }

    /// The module's field `name` as an integer.
    pub fn int(&self, name: &str) -> i64 {
        let value = self.get(name);
        value
            .parse()
            .unwrap_or_else(|_| panic!("INFO reconcile_{name} is {value:?}"))
    }

    /// Whether the module's field `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(&format!("reconcile_{name}"))
    }

    /// The raw INFO text.
    pub fn raw(&self) -> &str {
        &self.raw
    }
}

/// Whether `text` is exactly `len` lowercase hex digits.
pub fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

//! A close plan as the verified read delivers it: field/value pairs with the module's signing
//! trailer (`kid`, `signed_ms`, `hmac`) last.
//!
//! Decoding only makes the entry readable as text and names it; whether the plan may be
//! executed is decided in [`crate::invariants`].

use std::collections::BTreeMap;

use crate::invariants::{Refusal, Rule};

/// Field the module appends: the id of the key that signed the entry.
pub const KID: &str = "kid";
/// Field the module appends: the Redis server time of signing, in Unix milliseconds.
pub const SIGNED_MS: &str = "signed_ms";
/// Field the module appends: the entry's MAC.
pub const HMAC: &str = "hmac";

/// Longest plan id accepted; it becomes part of a Redis key and of every log line.
const MAX_PLAN_ID_LEN: usize = 128;
/// Longest symbol accepted; exchange symbols are far shorter.
const MAX_SYMBOL_LEN: usize = 32;

/// One entry of a verified read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream entry ID, used to acknowledge it.
    pub id: String,
    /// The field/value pairs; `None` when the entry was trimmed from the stream while it was
    /// pending, so that only its ID is left.
    pub fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// A plan's fields as text, with the signing trailer split off. Nothing in it is checked
/// beyond being readable and naming a plan and a symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPlan {
    pub entry_id: String,
    pub plan_id: String,
    pub symbol: String,
    /// Signing key id from the trailer.
    pub kid: String,
    /// Signing time from the trailer, Redis server clock.
    pub signed_ms: i64,
    fields: BTreeMap<String, String>,
}

impl RawPlan {
    /// The value of a plan field (never one of the trailer's).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// The plan id and symbol of an entry, as far as they can be read, for records of entries
/// that could not be decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub plan_id: Option<String>,
    pub symbol: Option<String>,
}

impl Identity {
    /// Reads `plan_id` and `symbol` when each is present once and well formed.
    pub fn of(entry: &Entry) -> Identity {
        let Some(fields) = &entry.fields else {
            return Identity::default();
        };
        let only = |name: &str| {
            let mut values = fields.iter().filter(|(f, _)| f == name.as_bytes());
            match (values.next(), values.next()) {
                (Some((_, value)), None) => std::str::from_utf8(value).ok(),
                _ => None,
            }
        };
        Identity {
            plan_id: only("plan_id")
                .filter(|v| valid_plan_id(v))
                .map(str::to_owned),
            symbol: only("symbol")
                .filter(|v| valid_symbol(v))
                .map(str::to_owned),
        }
    }
}

/// Decodes an entry into a [`RawPlan`].
///
/// Refused with rule `parse`: a trimmed entry, text that is not UTF-8, a field given twice, a
/// missing or malformed `plan_id` or `symbol`. Refused with rule `hmac`: a missing or
/// misplaced trailer, which the verified read never delivers, so its absence means the entry
/// did not come through the module.
pub fn decode(entry: &Entry) -> Result<RawPlan, Refusal> {
    let parse = |detail: &str| Refusal::new(Rule::Parse, detail);
    let pairs = entry
        .fields
        .as_ref()
        .ok_or_else(|| parse("entry fields are gone (trimmed) or unreadable"))?;

    let mut text = Vec::with_capacity(pairs.len());
    for (field, value) in pairs {
        let field = std::str::from_utf8(field).map_err(|_| parse("field name is not UTF-8"))?;
        let value = std::str::from_utf8(value).map_err(|_| parse("value is not UTF-8"))?;
        text.push((field, value));
    }

    let (user, trailer) = split_trailer(&text)?;
    let mut fields = BTreeMap::new();
    for (field, value) in user {
        if fields
            .insert(field.to_string(), value.to_string())
            .is_some()
        {
            return Err(parse(&format!("field {field} appears more than once")));
        }
    }

    let plan_id = fields
        .get("plan_id")
        .filter(|v| valid_plan_id(v))
        .cloned()
        .ok_or_else(|| parse("plan_id is missing or malformed"))?;
    let symbol = fields
        .get("symbol")
        .filter(|v| valid_symbol(v))
        .cloned()
        .ok_or_else(|| parse("symbol is missing or malformed"))?;
    Ok(RawPlan {
        entry_id: entry.id.clone(),
        plan_id,
        symbol,
        kid: trailer.kid.to_string(),
        signed_ms: trailer.signed_ms,
        fields,
    })
}

struct Trailer<'a> {
    kid: &'a str,
    signed_ms: i64,
}

type Pairs<'a> = [(&'a str, &'a str)];

fn split_trailer<'a, 'b>(text: &'b Pairs<'a>) -> Result<(&'b Pairs<'a>, Trailer<'a>), Refusal> {
    let hmac = |detail: &str| Refusal::new(Rule::Hmac, detail);
    let [user @ .., (kid_f, kid), (signed_f, signed), (hmac_f, _)] = text else {
        return Err(hmac("signing trailer is missing"));
    };
    if (*kid_f, *signed_f, *hmac_f) != (KID, SIGNED_MS, HMAC) {
        return Err(hmac("signing trailer is missing or out of place"));
    }
    if user.iter().any(|(f, _)| [KID, SIGNED_MS, HMAC].contains(f)) {
        return Err(hmac("trailer field repeated among the plan fields"));
    }
    let signed_ms = signed
        .parse()
        .map_err(|_| hmac("signed_ms is not a number"))?;
    Ok((user, Trailer { kid, signed_ms }))
}

/// Printable ASCII without spaces or braces: the id goes into a key name and into log lines,
/// and a brace could give that key a cluster hash tag of its own, away from the stream's slot.
fn valid_plan_id(id: &str) -> bool {
    (1..=MAX_PLAN_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
}

/// Upper-case letters and digits, as exchange symbols are; it goes into the HOLD key name.
fn valid_symbol(symbol: &str) -> bool {
    (1..=MAX_SYMBOL_LEN).contains(&symbol.len())
        && symbol
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(pairs: &[(&str, &str)]) -> Entry {
        let fields = pairs
            .iter()
            .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        Entry {
            id: "1-0".into(),
            fields: Some(fields),
        }
    }

    fn with_trailer(pairs: &[(&str, &str)]) -> Entry {
        let mut all = pairs.to_vec();
        all.extend([
            ("kid", "k1"),
            ("signed_ms", "1700000000000"),
            ("hmac", "00"),
        ]);
        entry(&all)
    }

    fn rule_of(entry: &Entry) -> Rule {
        decode(entry).unwrap_err().rule
    }

    #[test]
    fn decodes_identity_and_trailer() {
        let raw = decode(&with_trailer(&[("plan_id", "p:1"), ("symbol", "BTCUSDT")])).unwrap();
        assert_eq!(raw.plan_id, "p:1");
        assert_eq!(raw.symbol, "BTCUSDT");
        assert_eq!(raw.kid, "k1");
        assert_eq!(raw.signed_ms, 1_700_000_000_000);
        assert_eq!(raw.field("hmac"), None);
        assert_eq!(raw.field("symbol"), Some("BTCUSDT"));
    }

    #[test]
    fn entry_without_trailer_is_refused_under_hmac() {
        let bare = entry(&[("plan_id", "p"), ("symbol", "BTCUSDT")]);
        assert_eq!(rule_of(&bare), Rule::Hmac);
        let shuffled = entry(&[
            ("plan_id", "p"),
            ("hmac", "00"),
            ("kid", "k1"),
            ("signed_ms", "1"),
        ]);
        assert_eq!(rule_of(&shuffled), Rule::Hmac);
        let bad_time = entry(&[("kid", "k1"), ("signed_ms", "soon"), ("hmac", "00")]);
        assert_eq!(rule_of(&bad_time), Rule::Hmac);
    }

    #[test]
    fn unreadable_entries_are_refused_under_parse() {
        let trimmed = Entry {
            id: "1-0".into(),
            fields: None,
        };
        assert_eq!(rule_of(&trimmed), Rule::Parse);
        let twice = with_trailer(&[
            ("plan_id", "p"),
            ("symbol", "BTCUSDT"),
            ("symbol", "ETHUSDT"),
        ]);
        assert_eq!(rule_of(&twice), Rule::Parse);
        assert_eq!(
            rule_of(&with_trailer(&[("symbol", "BTCUSDT")])),
            Rule::Parse
        );
        let braced = with_trailer(&[("plan_id", "p{x}"), ("symbol", "BTCUSDT")]);
        assert!(decode(&braced).is_err());
        let spaced = with_trailer(&[("plan_id", "a b"), ("symbol", "BTCUSDT")]);
        assert_eq!(rule_of(&spaced), Rule::Parse);
        let lower = with_trailer(&[("plan_id", "p"), ("symbol", "btcusdt")]);
        assert_eq!(rule_of(&lower), Rule::Parse);

        let mut binary = with_trailer(&[("plan_id", "p"), ("symbol", "BTCUSDT")]);
        if let Some(fields) = binary.fields.as_mut() {
            fields[0].1 = vec![0xff, 0xfe];
        }
        assert_eq!(rule_of(&binary), Rule::Parse);
    }

    #[test]
    fn identity_reads_what_it_can() {
        let partial = entry(&[("plan_id", "p:2"), ("symbol", "not a symbol")]);
        let identity = Identity::of(&partial);
        assert_eq!(identity.plan_id.as_deref(), Some("p:2"));
        assert_eq!(identity.symbol, None);
    }
}

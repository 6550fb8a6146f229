//! Fuzz inputs for the reconcile-guard parsers and MAC encoding.
//!
//! The properties themselves live next to the code they describe, in the `properties` modules
//! of `reconcile::args`, `reconcile::settings`, `reconcile_core::keyring` and
//! `reconcile_core::mac`, where the property tests use them too. This crate only turns fuzzer
//! bytes into their inputs: argument words that are mostly keywords, numbers and IDs (so that
//! inputs reach past the first check), and the parts of well-formed calls, rings and entries.

use arbitrary::Arbitrary;
use reconcile::args::properties::{TrimCall, XaddCall, XreadCall};
use reconcile::args::{NewId, ReadFrom, StreamId, Trim};
use reconcile::settings::properties::LoadLine;
use reconcile_core::keyring::properties::RingText;
use reconcile_core::mac::properties::EntryItems;

/// The words every command grammar of the module knows, and a few near misses.
const KEYWORDS: [&str; 26] = [
    "NOMKSTREAM",
    "MAXLEN",
    "MINID",
    "LIMIT",
    "~",
    "=",
    "*",
    "GROUP",
    "COUNT",
    "BLOCK",
    "NOACK",
    "STREAMS",
    "$",
    ">",
    "keyring",
    "guard",
    "signers",
    "max-age-ms",
    "kid",
    "signed_ms",
    "hmac",
    "0-0",
    "5-*",
    "a,,b",
    "s:quarantine",
    "",
];

/// One argument word.
#[derive(Arbitrary, Debug)]
pub enum Word {
    Keyword(u8, bool),
    Number(i64),
    Id(u64, u64),
    Bytes(Vec<u8>),
}

impl Word {
    /// The word as sent; a keyword in upper or lower case.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Word::Keyword(n, upper) => {
                let word = KEYWORDS[usize::from(*n) % KEYWORDS.len()];
                if *upper {
                    word.to_ascii_uppercase().into_bytes()
                } else {
                    word.to_ascii_lowercase().into_bytes()
                }
            }
            Word::Number(n) => n.to_string().into_bytes(),
            Word::Id(ms, seq) => format!("{ms}-{seq}").into_bytes(),
            Word::Bytes(bytes) => bytes.clone(),
        }
    }
}

/// `name` followed by the words.
pub fn command(name: &[u8], words: &[Word]) -> Vec<Vec<u8>> {
    let mut args = vec![name.to_vec()];
    args.extend(words.iter().map(Word::bytes));
    args
}

/// Borrowed views of owned arguments.
pub fn views(args: &[Vec<u8>]) -> Vec<&[u8]> {
    args.iter().map(Vec::as_slice).collect()
}

fn stream_id((ms, seq): (u64, u64)) -> StreamId {
    StreamId { ms, seq }
}

#[derive(Arbitrary, Debug)]
pub struct TrimInput {
    min_id: bool,
    threshold: (u64, u64),
    marker: Option<bool>,
    limit: Option<u64>,
}

#[derive(Arbitrary, Debug)]
pub struct XaddInput {
    key: Vec<u8>,
    nomkstream: bool,
    trim: Option<TrimInput>,
    id: Option<(u64, u64)>,
    fields: Vec<Vec<u8>>,
    spelling: u64,
    nomkstream_last: bool,
    short_id: bool,
    loose_number: Option<usize>,
}

impl XaddInput {
    pub fn call(&self) -> XaddCall {
        XaddCall {
            key: self.key.clone(),
            nomkstream: self.nomkstream,
            trim: self.trim.as_ref().map(|t| TrimCall {
                how: if t.min_id {
                    Trim::MinId(stream_id(t.threshold))
                } else {
                    Trim::MaxLen(t.threshold.0)
                },
                marker: t.marker,
                limit: t.limit,
            }),
            id: self
                .id
                .map_or(NewId::Auto, |id| NewId::Explicit(stream_id(id))),
            fields: self.fields.clone(),
            spelling: self.spelling,
            nomkstream_last: self.nomkstream_last,
            short_id: self.short_id,
            loose_number: self.loose_number,
        }
    }
}

/// A key to read and where its read starts: `None` for `$` or `>`, else an ID.
#[derive(Arbitrary, Debug)]
pub struct ReadInput {
    key: Vec<u8>,
    from: Option<(u64, u64)>,
}

#[derive(Arbitrary, Debug)]
pub struct XreadInput {
    group: Option<(Vec<u8>, Vec<u8>)>,
    count: Option<i64>,
    block_ms: Option<u64>,
    noack: bool,
    streams: Vec<ReadInput>,
    spelling: u64,
    order: usize,
    short_ids: bool,
    loose_number: Option<usize>,
}

impl XreadInput {
    pub fn call(&self) -> XreadCall {
        XreadCall {
            group: self.group.clone(),
            count: self.count,
            block_ms: self.block_ms,
            noack: self.noack,
            streams: self
                .streams
                .iter()
                .map(|read| {
                    let from = read
                        .from
                        .map_or(ReadFrom::Last, |id| ReadFrom::After(stream_id(id)));
                    (read.key.clone(), from)
                })
                .collect(),
            spelling: self.spelling,
            order: self.order,
            short_ids: self.short_ids,
            loose_number: self.loose_number,
        }
    }
}

#[derive(Arbitrary, Debug)]
pub struct LoadInput {
    keyring: Vec<u8>,
    guards: Vec<Vec<u8>>,
    signers: Option<Vec<Vec<u8>>>,
    max_age_ms: Option<i64>,
    spelling: u64,
    order: u64,
    spaced_signers: bool,
}

impl LoadInput {
    pub fn line(&self) -> LoadLine {
        LoadLine {
            keyring: self.keyring.clone(),
            guards: self.guards.clone(),
            signers: self.signers.clone(),
            max_age_ms: self.max_age_ms,
            spelling: self.spelling,
            order: self.order,
            spaced_signers: self.spaced_signers,
        }
    }
}

#[derive(Arbitrary, Debug)]
pub struct RingInput {
    keys: Vec<(Vec<u8>, Vec<u8>)>,
    layout: u64,
}

impl RingInput {
    pub fn ring(&self) -> RingText {
        RingText {
            keys: self.keys.clone(),
            layout: self.layout,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub struct ItemsInput {
    kid: Vec<u8>,
    stream: Vec<u8>,
    signed_ms: Vec<u8>,
    fields: Vec<Vec<u8>>,
}

impl ItemsInput {
    pub fn items(&self) -> EntryItems {
        EntryItems {
            kid: self.kid.clone(),
            stream: self.stream.clone(),
            signed_ms: self.signed_ms.clone(),
            fields: self.fields.clone(),
        }
    }
}

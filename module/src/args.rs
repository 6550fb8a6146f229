//! Argument grammar of the module's commands, kept free of Redis calls so it is unit-tested.
//!
//! The grammar and the error texts follow XADD, XREAD and XREADGROUP, so a client that knows
//! the native commands meets no surprise.

use std::fmt;

#[cfg(any(test, fuzzing))]
pub mod properties;

/// An error reply, code first (`ERR ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply(pub String);

impl ErrorReply {
    fn new(text: impl Into<String>) -> ErrorReply {
        ErrorReply(text.into())
    }

    fn syntax() -> ErrorReply {
        ErrorReply::new("ERR syntax error")
    }

    pub fn arity(command: &str) -> ErrorReply {
        ErrorReply(format!(
            "ERR wrong number of arguments for '{command}' command"
        ))
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stream entry ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Parses `ms-seq`, or `ms` alone meaning `ms-0`.
    pub fn parse(text: &[u8]) -> Option<StreamId> {
        let text = std::str::from_utf8(text).ok()?;
        let (ms, seq) = match text.split_once('-') {
            Some((ms, seq)) => (ms, seq),
            None => (text, "0"),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The next ID in order, or `None` after the last one.
    pub fn next(self) -> Option<StreamId> {
        if self.seq < u64::MAX {
            Some(StreamId {
                ms: self.ms,
                seq: self.seq + 1,
            })
        } else {
            self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 })
        }
    }
}

/// A stream ID written out as `ms-seq` in place, for replies and replication, where a `String`
/// per call would be an allocation and a formatter run for nothing.
pub struct IdText {
    buf: [u8; 41],
    len: usize,
}

impl IdText {
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl StreamId {
    pub fn text(self) -> IdText {
        let mut text = IdText {
            buf: [0; 41],
            len: 0,
        };
        let (mut ms, mut seq) = (itoa::Buffer::new(), itoa::Buffer::new());
        for part in [
            ms.format(self.ms).as_bytes(),
            b"-",
            seq.format(self.seq).as_bytes(),
        ] {
            let end = text.len + part.len();
            if let Some(slot) = text.buf.get_mut(text.len..end) {
                slot.copy_from_slice(part);
                text.len = end;
            }
        }
        text
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

/// How a new entry is trimmed after it is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trim {
    MaxLen(u64),
    MinId(StreamId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrimSpec {
    pub how: Trim,
    pub approx: bool,
}

/// The ID a new entry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewId {
    Auto,
    Explicit(StreamId),
}

/// `RECONCILE.XADDSIGNED key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] *|id field value ...`
#[derive(Debug, PartialEq, Eq)]
pub struct XaddArgs {
    pub nomkstream: bool,
    pub trim: Option<TrimSpec>,
    pub id: NewId,
    /// Index in the argument list of the first field.
    pub fields_at: usize,
}

pub fn parse_xadd(args: &[&[u8]]) -> Result<XaddArgs, ErrorReply> {
    const NAME: &str = "reconcile.xaddsigned";
    if args.len() < 5 {
        return Err(ErrorReply::arity(NAME));
    }
    let mut nomkstream = false;
    let mut trim: Option<TrimSpec> = None;
    let mut limit_given = false;
    let mut i = 2;
    let id = loop {
        let Some(&opt) = args.get(i) else {
            return Err(ErrorReply::arity(NAME));
        };
        let more = args.len() - 1 - i;
        if opt == b"*" {
            break NewId::Auto;
        } else if (opt.eq_ignore_ascii_case(b"maxlen") || opt.eq_ignore_ascii_case(b"minid"))
            && more > 0
        {
            if trim.is_some() {
                return Err(ErrorReply::new(
                    "ERR syntax error, MAXLEN and MINID options at the same time are not \
                     compatible",
                ));
            }
            let mut approx = false;
            let next = args.get(i + 1).copied().unwrap_or_default();
            if more >= 2 && (next == b"~" || next == b"=") {
                approx = next == b"~";
                i += 1;
            }
            let threshold = args.get(i + 1).copied().unwrap_or_default();
            let how = if opt.eq_ignore_ascii_case(b"maxlen") {
                Trim::MaxLen(parse_maxlen(threshold)?)
            } else {
                Trim::MinId(StreamId::parse(threshold).ok_or_else(|| ErrorReply::new(INVALID_ID))?)
            };
            trim = Some(TrimSpec { how, approx });
            i += 2;
        } else if opt.eq_ignore_ascii_case(b"limit") && more > 0 {
            let count = args.get(i + 1).copied().unwrap_or_default();
            let count = parse_integer(count).ok_or_else(|| ErrorReply::new(NOT_AN_INTEGER))?;
            if count < 0 {
                return Err(ErrorReply::new("ERR The LIMIT argument must be >= 0."));
            }
            limit_given = true;
            i += 2;
        } else if opt.eq_ignore_ascii_case(b"nomkstream") {
            nomkstream = true;
            i += 1;
        } else {
            break NewId::Explicit(parse_new_id(opt)?);
        }
    };
    match trim {
        None if limit_given => {
            return Err(ErrorReply::new(
                "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy",
            ))
        }
        Some(t) if limit_given && !t.approx => {
            return Err(ErrorReply::new(
                "ERR syntax error, LIMIT cannot be used without the special ~ option",
            ))
        }
        _ => {}
    }
    let fields_at = i + 1;
    let nfields = args.len().saturating_sub(fields_at);
    if nfields < 2 || nfields % 2 != 0 {
        return Err(ErrorReply::arity(NAME));
    }
    Ok(XaddArgs {
        nomkstream,
        trim,
        id,
        fields_at,
    })
}

fn parse_maxlen(text: &[u8]) -> Result<u64, ErrorReply> {
    let n = parse_integer(text).ok_or_else(|| ErrorReply::new(NOT_AN_INTEGER))?;
    u64::try_from(n).map_err(|_| ErrorReply::new("ERR The MAXLEN argument must be >= 0."))
}

fn parse_new_id(text: &[u8]) -> Result<StreamId, ErrorReply> {
    if text.ends_with(b"-*") {
        return Err(ErrorReply::new(
            "ERR partial IDs (ms-*) are not supported: use * or a full ms-seq ID",
        ));
    }
    let id = StreamId::parse(text).ok_or_else(|| ErrorReply::new(INVALID_ID))?;
    if id == StreamId::ZERO {
        return Err(ErrorReply::new(
            "ERR The ID specified in XADD must be greater than 0-0",
        ));
    }
    Ok(id)
}

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// Reads an integer argument as Redis does: `0`, or an optional `-` and digits without a
/// leading zero, within i64. `i64::from_str` alone would also take `+5`, `05` and `-0`, which
/// the native commands refuse.
fn parse_integer(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let written_as_redis_writes = match digits {
        [b'0'] => text.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !written_as_redis_writes {
        return None;
    }
    // Summed as a negative number, which reaches i64::MIN; overflow is a refusal.
    let mut negative: i64 = 0;
    for &d in digits {
        negative = negative.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if text.len() > digits.len() {
        Some(negative)
    } else {
        negative.checked_neg()
    }
}

/// Where a read starts for one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// `$`: entries added after the call (plain reads).
    Last,
    /// `>`: entries never delivered to the group.
    New,
    /// Entries after this ID (plain), or this consumer's pending history after it (group).
    After(StreamId),
}

/// `RECONCILE.XREADVERIFIED [GROUP g c] [COUNT n] [BLOCK ms] [NOACK] STREAMS key... id...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XreadArgs {
    /// Indices of the group and consumer names.
    pub group: Option<(usize, usize)>,
    /// Most entries per stream; `None` for all.
    pub count: Option<u64>,
    pub block_ms: Option<u64>,
    pub noack: bool,
    /// Index of the first key; keys and ids follow, `nkeys` each.
    pub keys_at: usize,
    pub nkeys: usize,
    pub from: Vec<ReadFrom>,
}

pub fn parse_xread(args: &[&[u8]]) -> Result<XreadArgs, ErrorReply> {
    const NAME: &str = "reconcile.xreadverified";
    if args.len() < 4 {
        return Err(ErrorReply::arity(NAME));
    }
    let mut group = None;
    let mut count = None;
    let mut block_ms = None;
    let mut noack = false;
    let mut keys_at = None;
    let mut i = 1;
    while let Some(&opt) = args.get(i) {
        let more = args.len() - 1 - i;
        if opt.eq_ignore_ascii_case(b"block") && more > 0 {
            block_ms = Some(parse_timeout(args.get(i + 1).copied().unwrap_or_default())?);
            i += 2;
        } else if opt.eq_ignore_ascii_case(b"count") && more > 0 {
            let text = args.get(i + 1).copied().unwrap_or_default();
            let n = parse_integer(text).ok_or_else(|| ErrorReply::new(NOT_AN_INTEGER))?;
            count = u64::try_from(n).ok().filter(|&n| n > 0);
            i += 2;
        } else if opt.eq_ignore_ascii_case(b"group") && more >= 2 {
            group = Some((i + 1, i + 2));
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"noack") {
            noack = true;
            i += 1;
        } else if opt.eq_ignore_ascii_case(b"streams") && more > 0 {
            keys_at = Some(i + 1);
            break;
        } else {
            return Err(ErrorReply::syntax());
        }
    }
    let Some(keys_at) = keys_at else {
        return Err(ErrorReply::syntax());
    };
    if noack && group.is_none() {
        return Err(ErrorReply::new(
            "ERR the NOACK option needs GROUP group consumer",
        ));
    }
    let rest = args.len() - keys_at;
    if !rest.is_multiple_of(2) {
        return Err(ErrorReply::new(
            "ERR Unbalanced 'reconcile.xreadverified' list of streams: for each stream key an \
             ID or '$' must be specified.",
        ));
    }
    let nkeys = rest / 2;
    let from = args
        .get(keys_at + nkeys..)
        .unwrap_or_default()
        .iter()
        .map(|id| parse_read_from(id, group.is_some()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(XreadArgs {
        group,
        count,
        block_ms,
        noack,
        keys_at,
        nkeys,
        from,
    })
}

fn parse_timeout(text: &[u8]) -> Result<u64, ErrorReply> {
    let n = parse_integer(text)
        .ok_or_else(|| ErrorReply::new("ERR timeout is not an integer or out of range"))?;
    u64::try_from(n).map_err(|_| ErrorReply::new("ERR timeout is negative"))
}

fn parse_read_from(text: &[u8], group: bool) -> Result<ReadFrom, ErrorReply> {
    match (text, group) {
        (b"$", false) => Ok(ReadFrom::Last),
        (b"$", true) => Err(ErrorReply::new(
            "ERR The $ ID is meaningless with GROUP: use > for new entries or an ID for this \
             consumer's history",
        )),
        (b">", true) => Ok(ReadFrom::New),
        (b">", false) => Err(ErrorReply::new(
            "ERR The > ID can be specified only together with GROUP group consumer",
        )),
        _ => StreamId::parse(text)
            .map(ReadFrom::After)
            .ok_or_else(|| ErrorReply::new(INVALID_ID)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<&[u8]> {
        line.split_whitespace().map(str::as_bytes).collect()
    }

    #[test]
    fn xadd_forms() {
        let a = parse_xadd(&words("X k * f v")).unwrap();
        assert_eq!(
            a,
            XaddArgs {
                nomkstream: false,
                trim: None,
                id: NewId::Auto,
                fields_at: 3
            }
        );

        let a = parse_xadd(&words("X k NOMKSTREAM MAXLEN ~ 100 LIMIT 10 5-1 f v g w")).unwrap();
        assert!(a.nomkstream);
        assert_eq!(
            a.trim,
            Some(TrimSpec {
                how: Trim::MaxLen(100),
                approx: true
            })
        );
        assert_eq!(a.id, NewId::Explicit(StreamId { ms: 5, seq: 1 }));
        assert_eq!(a.fields_at, 9);

        let a = parse_xadd(&words("X k minid = 7 * f v")).unwrap();
        assert_eq!(
            a.trim,
            Some(TrimSpec {
                how: Trim::MinId(StreamId { ms: 7, seq: 0 }),
                approx: false
            })
        );
    }

    #[test]
    fn xadd_refusals() {
        let err = |line| parse_xadd(&words(line)).unwrap_err().0;
        assert!(err("X k * f").starts_with("ERR wrong number"));
        assert!(err("X k * f v g").starts_with("ERR wrong number"));
        assert!(err("X k MAXLEN 1 *").starts_with("ERR wrong number"));
        assert!(err("X k MAXLEN -1 * f v").contains(">= 0"));
        assert!(err("X k MAXLEN 1 LIMIT 5 * f v").contains("~"));
        assert!(err("X k LIMIT 5 * f v").contains("trimming strategy"));
        assert!(err("X k MAXLEN 1 MINID 1 * f v").contains("not compatible"));
        assert!(err("X k 0-0 f v").contains("greater than 0-0"));
        assert!(err("X k 5-* f v").contains("partial"));
        assert!(err("X k bogus f v").contains("Invalid stream ID"));
    }

    #[test]
    fn numbers_redis_refuses_are_refused() {
        // `i64::from_str` took these, so MAXLEN +5 or COUNT 010 passed where XADD and XREAD
        // answer that the value is not an integer.
        let err = |line: &str| parse_xadd(&words(line)).unwrap_err().0;
        for number in ["+5", "05", "-0", "00"] {
            let line = format!("X k MAXLEN {number} * f v");
            assert!(err(&line).contains("not an integer"), "{line}");
        }
        assert!(err("X k MAXLEN ~ 5 LIMIT +1 * f v").contains("not an integer"));
        assert!(err("X k MAXLEN ~ 5 LIMIT -1 * f v").contains(">= 0"));
        let err = |line| parse_xread(&words(line)).unwrap_err().0;
        assert!(err("R COUNT +2 STREAMS s 0").contains("not an integer"));
        assert!(err("R BLOCK 010 STREAMS s 0").contains("timeout is not an integer"));
        assert!(parse_xread(&words("R COUNT -3 BLOCK 0 STREAMS s 0")).is_ok());
    }

    #[test]
    fn xread_forms() {
        let a = parse_xread(&words("R GROUP g c COUNT 10 BLOCK 0 NOACK STREAMS a b > 0")).unwrap();
        assert_eq!(a.group, Some((2, 3)));
        assert_eq!(a.count, Some(10));
        assert_eq!(a.block_ms, Some(0));
        assert!(a.noack);
        assert_eq!((a.keys_at, a.nkeys), (10, 2));
        assert_eq!(a.from, vec![ReadFrom::New, ReadFrom::After(StreamId::ZERO)]);

        let a = parse_xread(&words("R count 0 streams s $")).unwrap();
        assert_eq!(a.count, None);
        assert_eq!(a.from, vec![ReadFrom::Last]);
    }

    #[test]
    fn xread_refusals() {
        let err = |line| parse_xread(&words(line)).unwrap_err().0;
        assert!(err("R STREAMS a").starts_with("ERR wrong number"));
        assert!(err("R COUNT 1 a 0").contains("syntax"));
        assert!(err("R STREAMS a b 0").contains("Unbalanced"));
        assert!(err("R NOACK STREAMS a 0").contains("NOACK"));
        assert!(err("R STREAMS a >").contains(">"));
        assert!(err("R GROUP g c STREAMS a $").contains("$"));
        assert!(err("R BLOCK -1 STREAMS a 0").contains("negative"));
        assert!(err("R STREAMS a x-y").contains("Invalid stream ID"));
    }

    #[test]
    fn stream_id_order_and_next() {
        assert_eq!(StreamId::parse(b"5"), Some(StreamId { ms: 5, seq: 0 }));
        assert_eq!(StreamId::parse(b"-5"), None);
        assert_eq!(
            StreamId {
                ms: 1,
                seq: u64::MAX
            }
            .next(),
            Some(StreamId { ms: 2, seq: 0 })
        );
        assert_eq!(
            StreamId {
                ms: u64::MAX,
                seq: u64::MAX
            }
            .next(),
            None
        );
        assert!(StreamId { ms: 1, seq: 9 } < StreamId { ms: 2, seq: 0 });
        assert_eq!(StreamId { ms: 3, seq: 4 }.to_string(), "3-4");
    }
}

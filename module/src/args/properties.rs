//! Properties the command argument parsers keep, whatever a client sends.
//!
//! The property tests below and the fuzz targets in `fuzz/` drive the same checks with their
//! own generators. Compiled for those two only; nothing here runs inside Redis.
//!
//! - Any argument list: the parser returns, and what it accepts is self-consistent (indices in
//!   range, an even number of fields, the options it reports are present in the list).
//! - A well-formed call rendered from its parts, with keywords in any case and options in any
//!   order, parses back to exactly those parts.
//! - A stream ID that parses prints back to text that parses to the same ID.

use super::*;

/// Spells `word` in upper or lower case as bit `n` of `spelling` says: options are matched
/// without regard to case.
fn keyword(word: &str, spelling: u64, n: u32) -> Vec<u8> {
    if spelling.rotate_right(n) & 1 == 1 {
        word.to_ascii_uppercase().into_bytes()
    } else {
        word.to_ascii_lowercase().into_bytes()
    }
}

/// An ID as `ms-seq`, or as `ms` alone when the sequence is 0 and `short` asks for it.
fn id_text(id: StreamId, short: bool) -> Vec<u8> {
    if short && id.seq == 0 {
        id.ms.to_string().into_bytes()
    } else {
        id.to_string().into_bytes()
    }
}

/// `n` as Redis writes an integer, or, when `loose` says so, in a form `u64::from_str` or
/// `i64::from_str` would take but Redis refuses: a `+` sign, a leading zero, `-0`.
fn number_text(n: impl fmt::Display, loose: Option<usize>) -> Vec<u8> {
    let plain = n.to_string();
    let text = match loose.map(|form| form % 3) {
        None => plain,
        Some(0) if plain.starts_with('-') => format!("-0{}", &plain[1..]),
        Some(0) => format!("+{plain}"),
        Some(1) if plain == "0" => "-0".to_string(),
        Some(_) if plain.starts_with('-') => format!("-0{}", &plain[1..]),
        Some(_) => format!("0{plain}"),
    };
    text.into_bytes()
}

/// Whether `text` is `DIGITS` or `DIGITS-DIGITS`, each part fitting a u64.
fn is_id_text(text: &[u8]) -> bool {
    let fits = |part: &[u8]| {
        !part.is_empty()
            && part.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(part).is_ok_and(|s| s.parse::<u64>().is_ok())
    };
    match text.iter().position(|&b| b == b'-') {
        Some(dash) => fits(&text[..dash]) && fits(&text[dash + 1..]),
        None => fits(text),
    }
}

/// `StreamId::parse` accepts exactly the ID texts, and what it accepts prints back to an
/// equal ID.
pub fn stream_id_text(text: &[u8]) {
    let parsed = StreamId::parse(text);
    assert_eq!(parsed.is_some(), is_id_text(text), "{text:?}");
    if let Some(id) = parsed {
        assert_eq!(StreamId::parse(id.to_string().as_bytes()), Some(id));
        assert_eq!(id.text().as_bytes(), id.to_string().as_bytes());
        if let Some(next) = id.next() {
            assert!(next > id);
        }
    }
}

/// `parse_integer` takes exactly the texts Redis writes for an i64, and reads them right.
pub fn integer_text(text: &[u8]) {
    let canonical = std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| n.to_string().as_bytes() == text);
    assert_eq!(parse_integer(text), canonical, "{text:?}");
}

/// `parse_xadd` on any argument list: no panic, and an accepted call is consistent.
pub fn xadd_accepts_consistently(args: &[&[u8]]) {
    let Ok(parsed) = parse_xadd(args) else {
        return;
    };
    let at = parsed.fields_at;
    assert!(
        at >= 3 && at < args.len(),
        "fields at {at} of {}",
        args.len()
    );
    let fields = args.len() - at;
    assert!(
        fields >= 2 && fields.is_multiple_of(2),
        "{fields} field arguments"
    );

    let id_arg = args[at - 1];
    match parsed.id {
        NewId::Auto => assert_eq!(id_arg, b"*"),
        NewId::Explicit(id) => {
            assert!(id > StreamId::ZERO);
            assert_eq!(StreamId::parse(id_arg), Some(id));
        }
    }
    let options = &args[2..at - 1];
    let has = |word: &[u8]| options.iter().any(|o| o.eq_ignore_ascii_case(word));
    assert_eq!(parsed.nomkstream, has(b"nomkstream"));
    match parsed.trim {
        None => assert!(!has(b"maxlen") && !has(b"minid") && !has(b"limit")),
        Some(TrimSpec { how, approx }) => {
            match how {
                Trim::MaxLen(_) => assert!(has(b"maxlen")),
                Trim::MinId(_) => assert!(has(b"minid")),
            }
            assert_eq!(approx, options.contains(&&b"~"[..]));
        }
    }
}

/// How a trim is written: the strategy, the `=` or `~` marker if any, and a `LIMIT` (written
/// only with `~`, the one form that allows it).
#[derive(Clone, Debug)]
pub struct TrimCall {
    pub how: Trim,
    /// `Some(true)` writes `~`, `Some(false)` writes `=`.
    pub marker: Option<bool>,
    pub limit: Option<u64>,
}

/// A well-formed `RECONCILE.XADDSIGNED` call, and choices of how to write it.
#[derive(Clone, Debug)]
pub struct XaddCall {
    pub key: Vec<u8>,
    pub nomkstream: bool,
    pub trim: Option<TrimCall>,
    pub id: NewId,
    /// Field and value arguments; an odd last one is dropped, and an empty list gets one pair.
    pub fields: Vec<Vec<u8>>,
    /// One bit per keyword: upper or lower case.
    pub spelling: u64,
    /// Writes NOMKSTREAM after the trim instead of before it.
    pub nomkstream_last: bool,
    /// Writes an explicit ID with sequence 0 as its milliseconds alone.
    pub short_id: bool,
    /// Writes the threshold of a MAXLEN (or else the LIMIT count) in a form Redis refuses, so
    /// that the call must be refused; the value picks the form.
    pub loose_number: Option<usize>,
}

impl XaddCall {
    /// The call with the values the grammar cannot take replaced: thresholds above `i64::MAX`
    /// (Redis reads them as signed), the ID `0-0`, and an odd or empty field list.
    fn normalized(&self) -> XaddCall {
        let mut call = self.clone();
        if let Some(trim) = call.trim.as_mut() {
            if let Trim::MaxLen(n) = trim.how {
                trim.how = Trim::MaxLen(n.min(i64::MAX as u64));
            }
        }
        if let Some(trim) = call.trim.as_mut() {
            trim.limit = trim.limit.map(|n| n.min(i64::MAX as u64));
        }
        let writes_number = call.trim.as_ref().is_some_and(|t| {
            matches!(t.how, Trim::MaxLen(_)) || (t.limit.is_some() && t.marker == Some(true))
        });
        if !writes_number {
            call.loose_number = None;
        }
        if call.id == NewId::Explicit(StreamId::ZERO) {
            call.id = NewId::Auto;
        }
        if !call.fields.len().is_multiple_of(2) {
            call.fields.pop();
        }
        if call.fields.is_empty() {
            call.fields = vec![b"f".to_vec(), b"v".to_vec()];
        }
        call
    }

    fn render(&self) -> Vec<Vec<u8>> {
        let mut words = vec![b"RECONCILE.XADDSIGNED".to_vec(), self.key.clone()];
        let mut options: Vec<Vec<Vec<u8>>> = Vec::new();
        if self.nomkstream {
            options.push(vec![keyword("nomkstream", self.spelling, 0)]);
        }
        if let Some(trim) = &self.trim {
            let mut part = Vec::new();
            match trim.how {
                Trim::MaxLen(n) => {
                    part.push(keyword("maxlen", self.spelling, 1));
                    if let Some(marker) = trim.marker {
                        part.push(if marker { b"~".to_vec() } else { b"=".to_vec() });
                    }
                    part.push(number_text(n, self.loose_number));
                }
                Trim::MinId(id) => {
                    part.push(keyword("minid", self.spelling, 1));
                    if let Some(marker) = trim.marker {
                        part.push(if marker { b"~".to_vec() } else { b"=".to_vec() });
                    }
                    part.push(id_text(id, self.short_id));
                }
            }
            if let (Some(limit), Some(true)) = (trim.limit, trim.marker) {
                let loose = match trim.how {
                    Trim::MaxLen(_) => None,
                    Trim::MinId(_) => self.loose_number,
                };
                part.push(keyword("limit", self.spelling, 2));
                part.push(number_text(limit, loose));
            }
            options.push(part);
        }
        if self.nomkstream_last {
            options.reverse();
        }
        words.extend(options.into_iter().flatten());
        words.push(match self.id {
            NewId::Auto => b"*".to_vec(),
            NewId::Explicit(id) => id_text(id, self.short_id),
        });
        words.extend(self.fields.iter().cloned());
        words
    }
}

/// A well-formed call, written out, parses back to what it says.
pub fn xadd_round_trip(call: &XaddCall) {
    let call = call.normalized();
    let words = call.render();
    let args: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
    let expected = XaddArgs {
        nomkstream: call.nomkstream,
        trim: call.trim.as_ref().map(|t| TrimSpec {
            how: t.how,
            approx: t.marker == Some(true),
        }),
        id: call.id,
        fields_at: args.len() - call.fields.len(),
    };
    if call.loose_number.is_some() {
        assert!(
            parse_xadd(&args).is_err(),
            "{words:?} has a number Redis refuses"
        );
        return;
    }
    assert_eq!(parse_xadd(&args), Ok(expected), "{words:?}");
    xadd_accepts_consistently(&args);
}

/// `parse_xread` on any argument list: no panic, and an accepted call is consistent.
pub fn xread_accepts_consistently(args: &[&[u8]]) {
    let Ok(parsed) = parse_xread(args) else {
        return;
    };
    let keys_at = parsed.keys_at;
    assert!(keys_at >= 2 && parsed.nkeys >= 1);
    assert_eq!(keys_at + 2 * parsed.nkeys, args.len());
    assert!(args[keys_at - 1].eq_ignore_ascii_case(b"streams"));
    assert_eq!(parsed.from.len(), parsed.nkeys);
    if let Some((group, consumer)) = parsed.group {
        assert!(args[group - 1].eq_ignore_ascii_case(b"group"));
        assert_eq!(consumer, group + 1);
        assert!(consumer < keys_at - 1);
    }
    assert!(!parsed.noack || parsed.group.is_some());
    assert!(parsed.count != Some(0));
    let ids = &args[keys_at + parsed.nkeys..];
    for (from, text) in parsed.from.iter().zip(ids) {
        match from {
            ReadFrom::Last => assert!(parsed.group.is_none() && *text == b"$"),
            ReadFrom::New => assert!(parsed.group.is_some() && *text == b">"),
            ReadFrom::After(id) => assert_eq!(StreamId::parse(text), Some(*id)),
        }
    }
}

/// A well-formed `RECONCILE.XREADVERIFIED` call, and choices of how to write it.
#[derive(Clone, Debug)]
pub struct XreadCall {
    pub group: Option<(Vec<u8>, Vec<u8>)>,
    /// Written as is; zero and below mean "no limit", as for XREAD.
    pub count: Option<i64>,
    pub block_ms: Option<u64>,
    /// Written only with a group, the one form that allows it.
    pub noack: bool,
    /// Keys and where each read starts; `$` is turned into `>` under a group and back, since
    /// each belongs to one form only. An empty list reads one key from `0`.
    pub streams: Vec<(Vec<u8>, ReadFrom)>,
    pub spelling: u64,
    /// Rotates the options before STREAMS: they may come in any order.
    pub order: usize,
    pub short_ids: bool,
    /// Writes the COUNT (or else the BLOCK) value in a form Redis refuses, so that the call
    /// must be refused; the value picks the form.
    pub loose_number: Option<usize>,
}

impl XreadCall {
    fn normalized(&self) -> XreadCall {
        let mut call = self.clone();
        call.block_ms = call.block_ms.map(|ms| ms.min(i64::MAX as u64));
        call.noack &= call.group.is_some();
        if call.count.is_none() && call.block_ms.is_none() {
            call.loose_number = None;
        }
        if call.streams.is_empty() {
            call.streams
                .push((b"k".to_vec(), ReadFrom::After(StreamId::ZERO)));
        }
        let grouped = call.group.is_some();
        for (_, from) in call.streams.iter_mut() {
            *from = match *from {
                ReadFrom::Last | ReadFrom::New if grouped => ReadFrom::New,
                ReadFrom::Last | ReadFrom::New => ReadFrom::Last,
                after => after,
            };
        }
        call
    }

    /// The words, and the indices of the group and consumer names.
    fn render(&self) -> (Vec<Vec<u8>>, Option<(usize, usize)>) {
        let mut options: Vec<Vec<Vec<u8>>> = Vec::new();
        if let Some((group, consumer)) = &self.group {
            let word = keyword("group", self.spelling, 0);
            options.push(vec![word, group.clone(), consumer.clone()]);
        }
        if let Some(count) = self.count {
            let word = keyword("count", self.spelling, 1);
            options.push(vec![word, number_text(count, self.loose_number)]);
        }
        if let Some(ms) = self.block_ms {
            let loose = self.loose_number.filter(|_| self.count.is_none());
            let word = keyword("block", self.spelling, 2);
            options.push(vec![word, number_text(ms, loose)]);
        }
        if self.noack {
            options.push(vec![keyword("noack", self.spelling, 3)]);
        }
        if !options.is_empty() {
            let turn = self.order % options.len();
            options.rotate_left(turn);
        }

        let mut words = vec![b"RECONCILE.XREADVERIFIED".to_vec()];
        let mut group_at = None;
        for option in options {
            if option.len() == 3 {
                group_at = Some((words.len() + 1, words.len() + 2));
            }
            words.extend(option);
        }
        words.push(keyword("streams", self.spelling, 4));
        words.extend(self.streams.iter().map(|(key, _)| key.clone()));
        words.extend(self.streams.iter().map(|(_, from)| match *from {
            ReadFrom::Last => b"$".to_vec(),
            ReadFrom::New => b">".to_vec(),
            ReadFrom::After(id) => id_text(id, self.short_ids),
        }));
        (words, group_at)
    }
}

/// A well-formed read, written out, parses back to what it says.
pub fn xread_round_trip(call: &XreadCall) {
    let call = call.normalized();
    let (words, group) = call.render();
    let args: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
    let nkeys = call.streams.len();
    let expected = XreadArgs {
        group,
        count: call
            .count
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n > 0),
        block_ms: call.block_ms,
        noack: call.noack,
        keys_at: args.len() - 2 * nkeys,
        nkeys,
        from: call.streams.iter().map(|(_, from)| *from).collect(),
    };
    if call.loose_number.is_some() {
        assert!(
            parse_xread(&args).is_err(),
            "{words:?} has a number Redis refuses"
        );
        return;
    }
    assert_eq!(parse_xread(&args), Ok(expected), "{words:?}");
    xread_accepts_consistently(&args);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Enough cases to reach the rarer option combinations, few enough for a second or two.
    const CASES: u32 = 4096;

    const WORDS: [&str; 16] = [
        "NOMKSTREAM",
        "maxlen",
        "MINID",
        "limit",
        "~",
        "=",
        "*",
        "GROUP",
        "count",
        "BLOCK",
        "noack",
        "STREAMS",
        "$",
        ">",
        "0-0",
        "5-*",
    ];

    /// Keywords, numbers and IDs most of the time, so that calls get past the first check.
    fn word() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::sample::select(&WORDS[..]).prop_map(|w| w.as_bytes().to_vec()),
            2 => any::<i64>().prop_map(|n| n.to_string().into_bytes()),
            2 => (any::<u64>(), any::<u64>()).prop_map(|(a, b)| format!("{a}-{b}").into_bytes()),
            1 => "[0-9-]{0,6}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 0..6),
        ]
    }

    /// Mostly well-written numbers; a loose one in one call of eight.
    fn loose_number() -> impl Strategy<Value = Option<usize>> {
        prop_oneof![7 => Just(None), 1 => any::<usize>().prop_map(Some)]
    }

    fn stream_id() -> impl Strategy<Value = StreamId> {
        let part = prop_oneof![0..3u64, any::<u64>()];
        (part.clone(), part).prop_map(|(ms, seq)| StreamId { ms, seq })
    }

    fn trim_call() -> impl Strategy<Value = TrimCall> {
        let how = prop_oneof![
            any::<u64>().prop_map(Trim::MaxLen),
            stream_id().prop_map(Trim::MinId),
        ];
        let marker = prop::option::of(any::<bool>());
        (how, marker, prop::option::of(any::<u64>())).prop_map(|(how, marker, limit)| TrimCall {
            how,
            marker,
            limit,
        })
    }

    fn xadd_call() -> impl Strategy<Value = XaddCall> {
        let id = prop_oneof![Just(NewId::Auto), stream_id().prop_map(NewId::Explicit)];
        let fields = prop::collection::vec(word(), 0..8);
        let trim = prop::option::of(trim_call());
        let choices = (any::<u64>(), any::<bool>(), any::<bool>(), loose_number());
        (word(), any::<bool>(), trim, id, fields, choices).prop_map(
            |(key, nomkstream, trim, id, fields, choices)| XaddCall {
                key,
                nomkstream,
                trim,
                id,
                fields,
                spelling: choices.0,
                nomkstream_last: choices.1,
                short_id: choices.2,
                loose_number: choices.3,
            },
        )
    }

    fn read_from() -> impl Strategy<Value = ReadFrom> {
        prop_oneof![
            Just(ReadFrom::Last),
            Just(ReadFrom::New),
            stream_id().prop_map(ReadFrom::After),
        ]
    }

    fn xread_call() -> impl Strategy<Value = XreadCall> {
        let group = prop::option::of((word(), word()));
        let streams = prop::collection::vec((word(), read_from()), 0..5);
        let options = (
            prop::option::of(any::<i64>()),
            prop::option::of(any::<u64>()),
            any::<bool>(),
        );
        let choices = (any::<u64>(), any::<usize>(), any::<bool>(), loose_number());
        (group, options, streams, choices).prop_map(
            |(group, (count, block_ms, noack), streams, choices)| XreadCall {
                group,
                count,
                block_ms,
                noack,
                streams,
                spelling: choices.0,
                order: choices.1,
                short_ids: choices.2,
                loose_number: choices.3,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn stream_ids_print_back_to_themselves(text in prop_oneof![
            "[0-9]{1,21}(-[0-9]{1,21})?",
            "[0-9+ -]{0,12}",
        ]) {
            stream_id_text(text.as_bytes());
        }

        #[test]
        fn any_xadd_arguments_are_refused_or_consistent(
            mut args in prop::collection::vec(word(), 0..12),
        ) {
            args.insert(0, b"RECONCILE.XADDSIGNED".to_vec());
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            xadd_accepts_consistently(&args);
        }

        #[test]
        fn written_xadd_calls_parse_back(call in xadd_call()) {
            xadd_round_trip(&call);
        }

        #[test]
        fn any_xread_arguments_are_refused_or_consistent(
            mut args in prop::collection::vec(word(), 0..12),
        ) {
            args.insert(0, b"RECONCILE.XREADVERIFIED".to_vec());
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            xread_accepts_consistently(&args);
        }

        #[test]
        fn written_xread_calls_parse_back(call in xread_call()) {
            xread_round_trip(&call);
        }

        #[test]
        fn integers_parse_as_redis_writes_them(
            text in prop_oneof![
                "[-+]?[0-9]{1,20}",
                any::<i64>().prop_map(|n| n.to_string()),
                Just(i64::MIN.to_string()),
                Just(i64::MAX.to_string()),
                Just("9223372036854775808".to_string()),
                Just("-9223372036854775809".to_string()),
            ],
        ) {
            integer_text(text.as_bytes());
        }
    }
}

//! Reading the RESP2 reply of an XREAD or XREADGROUP of one stream from the bytes the called
//! command wrote.
//!
//! The module API turns a call reply into a tree of elements, one allocation per array, the
//! first time anything about it is asked, and the verified read asks for every field of every
//! entry. Reading the protocol bytes directly borrows every field in place and allocates two
//! vectors per read, and it leaves the reply untouched, so that when every entry verifies the
//! reply can be relayed to the client whole.
//!
//! The reader accepts exactly the shapes these commands produce and nothing else; anything it
//! does not recognise is `None`, and the caller falls back to the module API.

use std::ops::Range;

/// The entries of one stream, as read from a reply.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StreamRead<'a> {
    /// Each entry's ID and the range of its fields in `items`, or `None` when the entry is a
    /// pending one whose data was trimmed away.
    pub entries: Vec<(&'a [u8], Option<Range<usize>>)>,
    /// Fields and values of all entries, in order.
    pub items: Vec<&'a [u8]>,
}

/// Reads the reply of a read of one stream: a null array (nothing to read), or one stream with
/// its entries. `None` for anything else, including a reply with bytes left over.
pub fn stream_read(proto: &[u8]) -> Option<StreamRead<'_>> {
    let mut cursor = Cursor { buf: proto, pos: 0 };
    let mut read = StreamRead::default();
    // About what a plan's fields take; a larger read grows the vector once or twice.
    read.items.reserve(proto.len() / 16);
    match cursor.header(b'*')? {
        -1 => {}
        1 => {
            if cursor.header(b'*')? != 2 {
                return None;
            }
            cursor.bulk()?;
            let count = cursor.length(b'*')?;
            // The count is only believed as far as the bytes could hold it.
            read.entries.reserve(count.min(proto.len() / 16));
            for _ in 0..count {
                if cursor.header(b'*')? != 2 {
                    return None;
                }
                let id = cursor.bulk()?;
                let fields = match cursor.header(b'*')? {
                    -1 => None,
                    n if n >= 0 && n % 2 == 0 => {
                        let start = read.items.len();
                        for _ in 0..n {
                            read.items.push(cursor.bulk()?);
                        }
                        Some(start..read.items.len())
                    }
                    _ => return None,
                };
                read.entries.push((id, fields));
            }
        }
        _ => return None,
    }
    (cursor.pos == proto.len()).then_some(read)
}

/// The text of an error reply (`-ERR ...`), if `proto` is one.
pub fn error_text(proto: &[u8]) -> Option<&[u8]> {
    let text = proto.strip_prefix(b"-")?;
    Some(text.strip_suffix(b"\r\n").unwrap_or(text))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A header line with type byte `kind` and a decimal integer as Redis writes one (an
    /// optional minus sign, then digits): `*3\r\n`, `$-1\r\n`. Scanned and parsed in one pass,
    /// since a read of 100 entries has over 3,000 of them.
    fn header(&mut self, kind: u8) -> Option<i64> {
        let buf = self.buf;
        let mut i = self.pos;
        if *buf.get(i)? != kind {
            return None;
        }
        i += 1;
        let negative = buf.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let digits = i;
        let mut value: i64 = 0;
        while let Some(&d) = buf.get(i) {
            if !d.is_ascii_digit() {
                break;
            }
            if i - digits == 18 {
                return None;
            }
            value = value * 10 + i64::from(d - b'0');
            i += 1;
        }
        if i == digits || buf.get(i..i + 2)? != b"\r\n" {
            return None;
        }
        self.pos = i + 2;
        Some(if negative { -value } else { value })
    }

    /// A header whose integer is a length, not -1.
    fn length(&mut self, kind: u8) -> Option<usize> {
        usize::try_from(self.header(kind)?).ok()
    }

    /// A bulk string's bytes.
    fn bulk(&mut self) -> Option<&'a [u8]> {
        let len = self.length(b'$')?;
        let end = self.pos.checked_add(len)?;
        let bytes = self.buf.get(self.pos..end)?;
        if self.buf.get(end..end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        self.pos = end + 2;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of a reply to build: its ID and its fields, or `None` for a trimmed one.
    type Shaped<'a> = (&'a [u8], Option<&'a [&'a [u8]]>);
    /// The same, owned.
    type Owned = (Vec<u8>, Option<Vec<Vec<u8>>>);

    fn bulk(b: &[u8]) -> Vec<u8> {
        let mut out = format!("${}\r\n", b.len()).into_bytes();
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The reply of a read of `stream` returning `entries`, as Redis writes it.
    fn reply(stream: &[u8], entries: &[Shaped<'_>]) -> Vec<u8> {
        let mut out = b"*1\r\n*2\r\n".to_vec();
        out.extend(bulk(stream));
        out.extend(format!("*{}\r\n", entries.len()).into_bytes());
        for (id, fields) in entries {
            out.extend_from_slice(b"*2\r\n");
            out.extend(bulk(id));
            match fields {
                Some(fields) => {
                    out.extend(format!("*{}\r\n", fields.len()).into_bytes());
                    for f in *fields {
                        out.extend(bulk(f));
                    }
                }
                None => out.extend_from_slice(b"*-1\r\n"),
            }
        }
        out
    }

    #[test]
    fn reads_entries_fields_and_trimmed_entries() {
        let fields: &[&[u8]] = &[b"plan_id", b"p:1", b"qty", b"", b"bin\r\n\0", b"x"];
        let proto = reply(
            b"s",
            &[(b"1-1", Some(fields)), (b"2-0", None), (b"3-0", Some(&[]))],
        );
        let read = stream_read(&proto).unwrap();
        assert_eq!(read.entries.len(), 3);
        assert_eq!(read.entries[0], (&b"1-1"[..], Some(0..6)));
        assert_eq!(read.items, fields);
        assert_eq!(read.entries[1], (&b"2-0"[..], None));
        assert_eq!(read.entries[2], (&b"3-0"[..], Some(6..6)));
    }

    #[test]
    fn null_and_empty_replies_have_no_entries() {
        assert_eq!(stream_read(b"*-1\r\n"), Some(StreamRead::default()));
        assert_eq!(stream_read(&reply(b"s", &[])), Some(StreamRead::default()));
    }

    #[test]
    fn other_shapes_are_not_read() {
        let good = reply(b"s", &[(b"1-1", Some(&[b"a", b"b"]))]);
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"*0\r\n".to_vec(),
            b"*2\r\n".to_vec(),
            b"%1\r\n".to_vec(),
            b"-ERR no\r\n".to_vec(),
            // An odd number of fields.
            reply(b"s", &[(b"1-1", Some(&[b"a"]))]),
        ];
        let mut extra = good.clone();
        extra.extend_from_slice(b"*-1\r\n");
        cases.push(extra);
        for cut in 0..good.len() {
            cases.push(good[..cut].to_vec());
        }
        let mut wrong_length = good.clone();
        let at = wrong_length.windows(5).position(|w| w == b"$1\r\na");
        wrong_length[at.expect("the reply holds the field") + 1] = b'2';
        cases.push(wrong_length);
        for case in &cases {
            assert_eq!(
                stream_read(case),
                None,
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn integers_are_read_as_redis_writes_them() {
        let header = |text: &[u8]| Cursor { buf: text, pos: 0 }.header(b'*');
        assert_eq!(header(b"*0\r\n"), Some(0));
        assert_eq!(header(b"*-1\r\n"), Some(-1));
        assert_eq!(
            header(b"*123456789012345678\r\n"),
            Some(123_456_789_012_345_678)
        );
        for bad in [
            &b"*\r\n"[..],
            b"*-\r\n",
            b"*+1\r\n",
            b"*1 \r\n",
            b"*1\n",
            b"*1\r",
            b"*1234567890123456789\r\n",
            b"*x\r\n",
            b"$1\r\n",
            b"",
        ] {
            assert_eq!(header(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        #[test]
        fn any_bytes_are_read_or_refused_without_panic(bytes in proptest::collection::vec(
            proptest::prelude::any::<u8>(), 0..256,
        )) {
            let _ = stream_read(&bytes);
        }

        #[test]
        fn generated_replies_read_back_to_their_parts(
            entries in proptest::collection::vec(
                (
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
                    proptest::option::of(proptest::collection::vec(
                        proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
                        0..4,
                    )),
                ),
                0..6,
            )
        ) {
            // Fields come in pairs: each generated item is a field and its value.
            let pairs: Vec<Owned> = entries
                .into_iter()
                .map(|(id, fields)| {
                    let doubled = fields.map(|f| f.iter().flat_map(|x| [x.clone(), x.clone()]).collect());
                    (id, doubled)
                })
                .collect();
            let slices: Vec<Vec<&[u8]>> = pairs
                .iter()
                .map(|(_, f)| f.iter().flatten().map(Vec::as_slice).collect())
                .collect();
            let shaped: Vec<Shaped<'_>> = pairs
                .iter()
                .zip(&slices)
                .map(|((id, f), s)| (id.as_slice(), f.as_ref().map(|_| s.as_slice())))
                .collect();
            let proto = reply(b"stream", &shaped);
            let read = stream_read(&proto).expect("a well-formed reply reads");
            proptest::prop_assert_eq!(read.entries.len(), shaped.len());
            for ((id, range), (want_id, want_fields)) in read.entries.iter().zip(&shaped) {
                proptest::prop_assert_eq!(id, want_id);
                let got = range.clone().map(|r| read.items[r].to_vec());
                proptest::prop_assert_eq!(got, want_fields.map(|f| f.to_vec()));
            }
        }
    }

    #[test]
    fn error_replies_give_their_text() {
        assert_eq!(error_text(b"-ERR no\r\n"), Some(&b"ERR no"[..]));
        assert_eq!(error_text(b"*-1\r\n"), None);
    }
}

//! The MAC over a stream entry and its canonical encoding.
//!
//! An entry signed by the module ends with three fields it appends itself: `kid`, `signed_ms`
//! and `hmac`. The MAC is HMAC-SHA256 over a canonical encoding of, in order: a versioned domain
//! tag, the key id, the stream key, the signing time, the number of user field/value pairs and
//! every field and value. Every item is length-prefixed (u64, big-endian), so no two different
//! entries encode to the same bytes, and a MAC made for one stream never verifies in another.

use std::mem::ManuallyDrop;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::keyring::Keyring;

#[cfg(any(test, fuzzing))]
pub mod properties;

/// Bumped whenever the encoding changes, so old and new MACs can never be confused.
const DOMAIN_TAG: &[u8] = b"reconcile-guard/v1";
const FINGERPRINT_TAG: &[u8] = b"reconcile-guard/fingerprint/v1";

/// The fields the module appends, in order. User fields with these names are refused.
pub const KID_FIELD: &[u8] = b"kid";
pub const SIGNED_MS_FIELD: &[u8] = b"signed_ms";
pub const HMAC_FIELD: &[u8] = b"hmac";
pub const RESERVED_FIELDS: [&[u8]; 3] = [KID_FIELD, SIGNED_MS_FIELD, HMAC_FIELD];

/// Length of the hex tag stored in the `hmac` field.
pub const TAG_HEX_LEN: usize = 64;

/// A keyed HMAC-SHA256, with the key's inner and outer pads already hashed so that each MAC
/// costs only the message. It can also keep, per stream named in advance, the state after the
/// encoding's fixed head (domain tag, kid, stream key), which saves a plan one of its SHA-256
/// blocks. Every state is wiped when dropped.
pub struct MacKey {
    state: WipedState,
    heads: Vec<Head>,
}

/// The state after the fixed head of one (kid, stream) pair.
struct Head {
    kid: Box<[u8]>,
    stream: Box<[u8]>,
    state: WipedState,
}

/// An HMAC state that is zeroed when dropped.
struct WipedState(ManuallyDrop<Hmac<Sha256>>);

impl WipedState {
    fn new(state: Hmac<Sha256>) -> WipedState {
        WipedState(ManuallyDrop::new(state))
    }

    fn resume(&self) -> Hmac<Sha256> {
        (*self.0).clone()
    }
}

impl Drop for WipedState {
    fn drop(&mut self) {
        let state: *mut Hmac<Sha256> = &mut *self.0;
        // SAFETY: an HMAC-SHA256 state is two SHA-256 cores (integer arrays and a block counter)
        // and a fixed block buffer: no pointers, no heap, no Drop of its own, and all-zero bytes
        // are a valid value. The state is wrapped in ManuallyDrop and never used again.
        unsafe { zeroize::zeroize_flat_type(state) }
    }
}

impl MacKey {
    /// Keys a new MAC. `bytes` is not kept; only the padded-key hash states are.
    pub fn new(bytes: &[u8]) -> MacKey {
        // HMAC accepts keys of any length, so this cannot fail; the fallback keeps it panic-free.
        let state = Hmac::<Sha256>::new_from_slice(bytes)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        MacKey {
            state: WipedState::new(state),
            heads: Vec::new(),
        }
    }

    /// Hashes the fixed head of entries signed as `kid` in `stream` once, so that MACs for
    /// that pair start after it. The tags are the same with or without it.
    pub fn prepare(&mut self, kid: &[u8], stream: &[u8]) {
        if self.prepared(kid, stream).is_some() {
            return;
        }
        let mut head = vec![0; head_len(kid, stream)];
        write_head(&mut Writer(&mut head), kid, stream);
        let mut state = self.state.resume();
        state.update(&head);
        self.heads.push(Head {
            kid: kid.into(),
            stream: stream.into(),
            state: WipedState::new(state),
        });
    }

    fn prepared(&self, kid: &[u8], stream: &[u8]) -> Option<&Head> {
        self.heads
            .iter()
            .find(|h| *h.stream == *stream && *h.kid == *kid)
    }

    /// A state to continue from, and whether it has already taken the head.
    fn start(&self, kid: &[u8], stream: &[u8]) -> (Hmac<Sha256>, bool) {
        match self.prepared(kid, stream) {
            Some(head) => (head.state.resume(), true),
            None => (self.state.resume(), false),
        }
    }
}

/// A short, non-secret identifier of a key for listings: 16 hex digits of a tagged SHA-256.
pub fn fingerprint(key_bytes: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(FINGERPRINT_TAG);
    hash.update(key_bytes);
    hex::encode(&hash.finalize()[..8])
}

/// Encodings up to this length are laid out on the stack; a plan takes about 540 bytes.
const STACK_MESSAGE: usize = 1024;

/// Length of the encoding's fixed head: domain tag, kid and stream key.
fn head_len(kid: &[u8], stream: &[u8]) -> usize {
    DOMAIN_TAG.len() + kid.len() + stream.len() + 3 * 8
}

/// Length of the rest: signing time, pair count, fields and values.
fn body_len(signed_ms: &[u8], fields: &[&[u8]]) -> usize {
    let items: usize = fields.iter().map(|item| item.len() + 8).sum();
    signed_ms.len() + 8 + 8 + items
}

fn write_head(out: &mut Writer, kid: &[u8], stream: &[u8]) {
    for item in [DOMAIN_TAG, kid, stream] {
        out.item(item);
    }
}

fn write_body(out: &mut Writer, signed_ms: &[u8], fields: &[&[u8]]) {
    out.item(signed_ms);
    out.number(fields.len() / 2);
    for item in fields {
        out.item(item);
    }
}

/// Writes the encoding into `out`, sized exactly: the head only when `head` is given.
fn write_encoding(
    out: &mut [u8],
    head: Option<(&[u8], &[u8])>,
    signed_ms: &[u8],
    fields: &[&[u8]],
) {
    let mut out = Writer(out);
    if let Some((kid, stream)) = head {
        write_head(&mut out, kid, stream);
    }
    write_body(&mut out, signed_ms, fields);
}

/// Fills a buffer from the front. Bytes past its end are dropped; callers size it exactly.
struct Writer<'a>(&'a mut [u8]);

impl Writer<'_> {
    fn raw(&mut self, bytes: &[u8]) {
        let rest = std::mem::take(&mut self.0);
        let (dst, tail) = rest.split_at_mut(bytes.len().min(rest.len()));
        if let Some(src) = bytes.get(..dst.len()) {
            copy_short(dst, src);
        }
        self.0 = tail;
    }

    /// A count or length: eight bytes, big-endian.
    fn number(&mut self, n: usize) {
        let rest = std::mem::take(&mut self.0);
        if let Some((dst, tail)) = rest.split_first_chunk_mut::<8>() {
            *dst = (n as u64).to_be_bytes();
            self.0 = tail;
        }
    }

    /// One length-prefixed item.
    fn item(&mut self, item: &[u8]) {
        self.number(item.len());
        self.raw(item);
    }
}

/// `dst.copy_from_slice(src)` for slices of one length. Most items of a plan are under 16 bytes,
/// and for those a call to `memcpy` costs more than the copy: they are moved as two fixed-size
/// pieces that overlap in the middle instead.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    fn ends<const N: usize>(dst: &mut [u8], src: &[u8]) {
        if let (Some(d), Some(s)) = (dst.first_chunk_mut::<N>(), src.first_chunk::<N>()) {
            *d = *s;
        }
        if let (Some(d), Some(s)) = (dst.last_chunk_mut::<N>(), src.last_chunk::<N>()) {
            *d = *s;
        }
    }
    match src.len() {
        n if n != dst.len() => {}
        0 => {}
        1..=3 => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
        }
        4..=7 => ends::<4>(dst, src),
        8..=15 => ends::<8>(dst, src),
        16..=32 => ends::<16>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// The bytes the MAC covers, in the order the module documents: each of the domain tag, `kid`,
/// `stream` and `signed_ms` length-prefixed, then the number of field/value pairs, then each
/// field and value length-prefixed. Every item carries its length, so the bytes determine the
/// items: two different entries never share an encoding.
pub fn canonical_message(kid: &[u8], stream: &[u8], signed_ms: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    encoding_on_heap(Some((kid, stream)), signed_ms, fields)
}

/// The encoding in a vector of its own: the head only when `head` is given.
fn encoding_on_heap(head: Option<(&[u8], &[u8])>, signed_ms: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let len = head.map_or(0, |(kid, stream)| head_len(kid, stream)) + body_len(signed_ms, fields);
    let mut buf = vec![0; len];
    write_encoding(&mut buf, head, signed_ms, fields);
    buf
}

fn encode(
    key: &MacKey,
    kid: &[u8],
    stream: &[u8],
    signed_ms: &[u8],
    fields: &[&[u8]],
) -> Hmac<Sha256> {
    // Laid out in one buffer and hashed in one call: many small updates cost a quarter more
    // than the hashing itself for a plan-sized entry. A plan's buffer lives on the stack.
    let (mut mac, head_done) = key.start(kid, stream);
    let head = (!head_done).then_some((kid, stream));
    let len = head.map_or(0, |(kid, stream)| head_len(kid, stream)) + body_len(signed_ms, fields);
    let mut stack = [0u8; STACK_MESSAGE];
    if let Some(buf) = stack.get_mut(..len) {
        write_encoding(buf, head, signed_ms, fields);
        mac.update(buf);
    } else {
        mac.update(&encoding_on_heap(head, signed_ms, fields));
    }
    mac
}

/// The lowercase hex tag for user `fields` (field, value, field, value, ...) of an entry of
/// `stream`, signed by `kid` at `signed_ms` (decimal text).
pub fn sign(
    key: &MacKey,
    kid: &[u8],
    stream: &[u8],
    signed_ms: &[u8],
    fields: &[&[u8]],
) -> [u8; TAG_HEX_LEN] {
    let tag = encode(key, kid, stream, signed_ms, fields)
        .finalize()
        .into_bytes();
    let mut out = [0u8; TAG_HEX_LEN];
    // The output buffer is exactly twice the tag length, so encoding cannot fail.
    let _ = hex::encode_to_slice(tag, &mut out);
    out
}

/// Why an entry was refused. The names are the labels counted in `INFO reconcile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The tag does not match the entry: altered, forged, or a truncated tag.
    BadMac,
    /// The entry names a key id that is not in the ring.
    UnknownKid,
    /// The entry has no `hmac` field.
    MissingMac,
    /// The entry's signing time is further than the allowed age from the server clock.
    Stale,
    /// The entry has an `hmac` field but not the layout the module writes.
    Malformed,
}

impl Rejection {
    pub const ALL: [Rejection; 5] = [
        Rejection::BadMac,
        Rejection::UnknownKid,
        Rejection::MissingMac,
        Rejection::Stale,
        Rejection::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::BadMac => "bad_mac",
            Rejection::UnknownKid => "unknown_kid",
            Rejection::MissingMac => "missing_mac",
            Rejection::Stale => "stale",
            Rejection::Malformed => "malformed",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How fresh an entry must be: its signing time within `max_age_ms` of `now_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Freshness {
    pub now_ms: u64,
    pub max_age_ms: u64,
}

/// Checks a stored entry, given as its flat field/value list, against the ring.
///
/// `freshness` is `None` when only authenticity matters (audits, history reads).
pub fn check_entry(
    ring: &Keyring,
    stream: &[u8],
    items: &[&[u8]],
    freshness: Option<Freshness>,
) -> Result<(), Rejection> {
    if !items.len().is_multiple_of(2) {
        return Err(Rejection::Malformed);
    }
    let has_hmac = items
        .chunks_exact(2)
        .any(|pair| pair.first() == Some(&HMAC_FIELD));
    if !has_hmac {
        return Err(Rejection::MissingMac);
    }
    let Some(split) = items.len().checked_sub(6) else {
        return Err(Rejection::Malformed);
    };
    let (user, appended) = items.split_at(split);
    let [KID_FIELD, kid, SIGNED_MS_FIELD, signed_ms, HMAC_FIELD, tag] = appended else {
        return Err(Rejection::Malformed);
    };
    let Some(signed_at) = parse_ms(signed_ms) else {
        return Err(Rejection::Malformed);
    };
    let Some(key) = ring.find(kid) else {
        return Err(Rejection::UnknownKid);
    };
    let mut expected = [0u8; 32];
    if tag.len() != TAG_HEX_LEN
        || !tag.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        || hex::decode_to_slice(tag, &mut expected).is_err()
    {
        return Err(Rejection::BadMac);
    }
    let mac = encode(key.mac(), kid, stream, signed_ms, user);
    // Constant-time comparison of the whole tag.
    if mac.verify_slice(&expected).is_err() {
        return Err(Rejection::BadMac);
    }
    if let Some(f) = freshness {
        if f.now_ms.abs_diff(signed_at) > f.max_age_ms {
            return Err(Rejection::Stale);
        }
    }
    Ok(())
}

/// Parses the canonical decimal form written by the module: digits only, no leading zero.
fn parse_ms(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || (text.len() > 1 && text[0] == b'0') {
        return None;
    }
    // `u64::from_str` also takes a leading `+`, which the module never writes.
    if !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: &str = "k2 1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100\n\
                        k1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
    const STREAM: &[u8] = b"quantum:stream:reconcile.close";

    fn ring() -> Keyring {
        Keyring::parse(RING.as_bytes()).unwrap()
    }

    fn signed_entry(ring: &Keyring, fields: &[&[u8]], ms: &[u8]) -> Vec<Vec<u8>> {
        let key = ring.signing();
        let tag = sign(key.mac(), key.kid().as_bytes(), STREAM, ms, fields);
        let mut items: Vec<Vec<u8>> = fields.iter().map(|f| f.to_vec()).collect();
        for item in [
            KID_FIELD,
            key.kid().as_bytes(),
            SIGNED_MS_FIELD,
            ms,
            HMAC_FIELD,
            &tag,
        ] {
            items.push(item.to_vec());
        }
        items
    }

    fn check(ring: &Keyring, items: &[Vec<u8>], fresh: Option<Freshness>) -> Result<(), Rejection> {
        let refs: Vec<&[u8]> = items.iter().map(|i| i.as_slice()).collect();
        check_entry(ring, STREAM, &refs, fresh)
    }

    #[test]
    fn encoding_is_the_documented_byte_layout() {
        // Builds the canonical bytes by hand and MACs them in one piece: pins the layout that
        // every stored entry depends on.
        let key_bytes = hex::decode(&RING[3..67]).unwrap();
        let mut expected = Vec::new();
        for item in [DOMAIN_TAG, b"k2", STREAM, b"1700000000000"] {
            expected.extend_from_slice(&(item.len() as u64).to_be_bytes());
            expected.extend_from_slice(item);
        }
        expected.extend_from_slice(&1u64.to_be_bytes());
        for item in [&b"side"[..], b"SELL"] {
            expected.extend_from_slice(&(item.len() as u64).to_be_bytes());
            expected.extend_from_slice(item);
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&key_bytes).unwrap();
        mac.update(&expected);
        let want = hex::encode(mac.finalize().into_bytes());

        // The same with the head hashed in advance, as the module holds its rings.
        let mut prepared = ring();
        prepared.prepare_streams(&[STREAM]);
        for ring in [ring(), prepared] {
            let tag = sign(
                ring.signing().mac(),
                b"k2",
                STREAM,
                b"1700000000000",
                &[b"side", b"SELL"],
            );
            assert_eq!(std::str::from_utf8(&tag).unwrap(), want);
        }
    }

    #[test]
    fn entries_too_long_for_the_stack_get_the_same_mac() {
        // Past the stack buffer the encoding is built on the heap; the tag must not change.
        let long = vec![b'x'; STACK_MESSAGE * 2];
        let fields: [&[u8]; 2] = [b"blob", &long];
        let key_bytes = hex::decode(&RING[3..67]).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key_bytes).unwrap();
        mac.update(&canonical_message(b"k2", STREAM, b"1700000000000", &fields));
        let want = hex::encode(mac.finalize().into_bytes());
        let mut prepared = ring();
        prepared.prepare_streams(&[STREAM]);
        for ring in [ring(), prepared] {
            let tag = sign(
                ring.signing().mac(),
                b"k2",
                STREAM,
                b"1700000000000",
                &fields,
            );
            assert_eq!(std::str::from_utf8(&tag).unwrap(), want);
        }
    }

    #[test]
    fn signed_entry_verifies() {
        let ring = ring();
        let items = signed_entry(&ring, &[b"symbol", b"BTCUSDT", b"side", b"SELL"], b"1000");
        assert_eq!(check(&ring, &items, None), Ok(()));
    }

    #[test]
    fn any_altered_item_fails() {
        let ring = ring();
        let items = signed_entry(&ring, &[b"symbol", b"BTCUSDT", b"side", b"SELL"], b"1000");
        for i in 0..items.len() {
            let mut altered = items.clone();
            altered[i].push(b'x');
            assert!(
                check(&ring, &altered, None).is_err(),
                "item {i} altered still verified"
            );
        }
    }

    #[test]
    fn moving_bytes_between_field_and_value_fails() {
        let ring = ring();
        let items = signed_entry(&ring, &[b"ab", b"c"], b"1000");
        let mut moved = items.clone();
        moved[0] = b"a".to_vec();
        moved[1] = b"bc".to_vec();
        assert_eq!(check(&ring, &moved, None), Err(Rejection::BadMac));
    }

    #[test]
    fn mac_is_bound_to_the_stream() {
        let ring = ring();
        let items = signed_entry(&ring, &[b"side", b"SELL"], b"1000");
        let refs: Vec<&[u8]> = items.iter().map(|i| i.as_slice()).collect();
        assert_eq!(
            check_entry(&ring, b"other", &refs, None),
            Err(Rejection::BadMac)
        );
    }

    #[test]
    fn reasons() {
        let ring = ring();
        let good = signed_entry(&ring, &[b"side", b"SELL"], b"1000");

        let missing: Vec<Vec<u8>> = good[..6].to_vec();
        assert_eq!(check(&ring, &missing, None), Err(Rejection::MissingMac));

        let mut truncated = good.clone();
        truncated[7].truncate(63);
        assert_eq!(check(&ring, &truncated, None), Err(Rejection::BadMac));

        let mut upper = good.clone();
        upper[7].make_ascii_uppercase();
        assert_eq!(check(&ring, &upper, None), Err(Rejection::BadMac));

        let mut unknown = good.clone();
        unknown[3] = b"k9".to_vec();
        assert_eq!(check(&ring, &unknown, None), Err(Rejection::UnknownKid));

        let mut reordered = good.clone();
        reordered.swap(2, 4);
        reordered.swap(3, 5);
        assert_eq!(check(&ring, &reordered, None), Err(Rejection::Malformed));

        let mut bad_ms = good.clone();
        bad_ms[5] = b"01000".to_vec();
        assert_eq!(check(&ring, &bad_ms, None), Err(Rejection::Malformed));

        let odd: Vec<Vec<u8>> = good[..7].to_vec();
        assert_eq!(check(&ring, &odd, None), Err(Rejection::Malformed));
    }

    #[test]
    fn signed_ms_with_a_plus_sign_is_malformed_even_when_signed() {
        // A key holder's MAC over "+1000" once verified, because the decimal parser took the
        // sign; the module writes digits only, so anything else is not its layout.
        let ring = ring();
        let items = signed_entry(&ring, &[b"side", b"SELL"], b"+1000");
        assert_eq!(check(&ring, &items, None), Err(Rejection::Malformed));
    }

    #[test]
    fn freshness_window() {
        let ring = ring();
        let items = signed_entry(&ring, &[b"side", b"SELL"], b"1000");
        let at = |now_ms| {
            Some(Freshness {
                now_ms,
                max_age_ms: 500,
            })
        };
        assert_eq!(check(&ring, &items, at(1500)), Ok(()));
        assert_eq!(check(&ring, &items, at(1501)), Err(Rejection::Stale));
        assert_eq!(check(&ring, &items, at(499)), Err(Rejection::Stale));
    }

    #[test]
    fn other_key_in_ring_verifies_its_own_entries() {
        let ring = ring();
        let old = ring.find(b"k1").unwrap();
        let tag = sign(old.mac(), b"k1", STREAM, b"5", &[b"a", b"b"]);
        let items: Vec<&[u8]> = vec![b"a", b"b", b"kid", b"k1", b"signed_ms", b"5", b"hmac", &tag];
        assert_eq!(check_entry(&ring, STREAM, &items, None), Ok(()));
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        let fp = fingerprint(b"some key bytes");
        assert_eq!(fp.len(), 16);
        assert_eq!(fp, fingerprint(b"some key bytes"));
        assert_ne!(fp, fingerprint(b"other key bytes"));
    }
}

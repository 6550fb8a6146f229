//! Properties of the canonical encoding and of the entry MAC.
//!
//! The property tests below and the fuzz targets in `fuzz/` drive the same checks with their
//! own generators. Compiled for those two only.
//!
//! - The encoding is injective: its bytes decode back to exactly the items that were encoded,
//!   so no two different entries share a MAC input.
//! - An entry signed by [`sign`] verifies, and changing any one of its items, moving a field
//!   boundary, or reading it from another stream makes it fail.
//! - [`check_entry`] never panics, and accepts an entry exactly when its trailer is the
//!   documented one, names a key of the ring, carries a decimal signing time inside the age
//!   window and a tag equal to what [`sign`] gives for it.

use super::*;
use crate::keyring::Keyring;

/// The items an entry's MAC covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryItems {
    pub kid: Vec<u8>,
    pub stream: Vec<u8>,
    pub signed_ms: Vec<u8>,
    /// Field, value, field, value, ...
    pub fields: Vec<Vec<u8>>,
}

impl EntryItems {
    fn encode(&self) -> Vec<u8> {
        let fields: Vec<&[u8]> = self.fields.iter().map(Vec::as_slice).collect();
        canonical_message(&self.kid, &self.stream, &self.signed_ms, &fields)
    }
}

fn take_u64(bytes: &mut &[u8]) -> Option<u64> {
    let (n, rest) = bytes.split_first_chunk::<8>()?;
    *bytes = rest;
    Some(u64::from_be_bytes(*n))
}

fn take_item(bytes: &mut &[u8]) -> Option<Vec<u8>> {
    let len = usize::try_from(take_u64(bytes)?).ok()?;
    if bytes.len() < len {
        return None;
    }
    let (item, rest) = bytes.split_at(len);
    *bytes = rest;
    Some(item.to_vec())
}

/// Reads canonical bytes back into the items they encode; `None` when they are not the
/// encoding of any entry.
pub fn decode(mut bytes: &[u8]) -> Option<EntryItems> {
    if take_item(&mut bytes)? != DOMAIN_TAG {
        return None;
    }
    let kid = take_item(&mut bytes)?;
    let stream = take_item(&mut bytes)?;
    let signed_ms = take_item(&mut bytes)?;
    let pairs = take_u64(&mut bytes)?;
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        fields.push(take_item(&mut bytes)?);
    }
    if fields.len() as u64 / 2 != pairs {
        return None;
    }
    Some(EntryItems {
        kid,
        stream,
        signed_ms,
        fields,
    })
}

/// The encoding of `items` decodes back to `items`, which makes the encoding injective.
pub fn encoding_decodes_back(items: &EntryItems) {
    assert_eq!(decode(&items.encode()).as_ref(), Some(items));
}

/// Two entries share an encoding only when they are the same entry.
pub fn distinct_entries_encode_apart(a: &EntryItems, b: &EntryItems) {
    assert_eq!(a == b, a.encode() == b.encode(), "{a:?} / {b:?}");
}

/// `items` with the last byte of item `at` (modulo the item count, fields counted after kid,
/// stream and signed_ms) moved to the front of the next item: the same bytes end to end, a
/// different entry, the near miss a sloppy encoding would confuse.
pub fn moved_boundary(items: &EntryItems, at: usize) -> EntryItems {
    let mut flat = vec![
        items.kid.clone(),
        items.stream.clone(),
        items.signed_ms.clone(),
    ];
    flat.extend(items.fields.iter().cloned());
    let at = at % flat.len();
    if at + 1 < flat.len() {
        if let Some(byte) = flat[at].pop() {
            flat[at + 1].insert(0, byte);
        }
    }
    let mut rest = flat.into_iter();
    EntryItems {
        kid: rest.next().unwrap_or_default(),
        stream: rest.next().unwrap_or_default(),
        signed_ms: rest.next().unwrap_or_default(),
        fields: rest.collect(),
    }
}

/// A key for the MAC checks: `secret` stretched to the minimum length and kept from being a
/// single repeated byte, under kid `k1`.
pub fn ring_with(secret: &[u8]) -> (Keyring, Vec<u8>) {
    let mut bytes = secret.to_vec();
    while bytes.len() < crate::keyring::MIN_KEY_BYTES {
        bytes.push(bytes.len() as u8);
    }
    if bytes.iter().all(|&b| b == bytes[0]) {
        bytes[0] ^= 1;
    }
    let text = format!("k1 {}\n", hex::encode(&bytes));
    let ring = Keyring::parse(text.as_bytes()).expect("a valid one-key ring");
    (ring, bytes)
}

/// The stored form of an entry: user fields, then `kid`, `signed_ms` and `hmac`.
pub fn signed_entry(
    ring: &Keyring,
    stream: &[u8],
    signed_ms: &[u8],
    user: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    let key = ring.signing();
    let refs: Vec<&[u8]> = user.iter().map(Vec::as_slice).collect();
    let tag = sign(key.mac(), key.kid().as_bytes(), stream, signed_ms, &refs);
    let mut items = user.to_vec();
    for item in [
        KID_FIELD,
        key.kid().as_bytes(),
        SIGNED_MS_FIELD,
        signed_ms,
        HMAC_FIELD,
        &tag,
    ] {
        items.push(item.to_vec());
    }
    items
}

fn check(
    ring: &Keyring,
    stream: &[u8],
    items: &[Vec<u8>],
    fresh: Option<Freshness>,
) -> Result<(), Rejection> {
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    check_entry(ring, stream, &refs, fresh)
}

/// An entry signed at `signed_at` verifies, within the age window only; changing item
/// `change` (modulo the item count) in any way, moving the boundary between two neighbouring
/// user items, or reading it from another stream makes it fail.
pub fn signed_entry_verifies_and_changes_fail(
    secret: &[u8],
    stream: &[u8],
    signed_at: u64,
    user: &[Vec<u8>],
    change: usize,
    window: Freshness,
) {
    let (ring, _) = ring_with(secret);
    let mut user = user.to_vec();
    if !user.len().is_multiple_of(2) {
        user.pop();
    }
    let ms = signed_at.to_string();
    let items = signed_entry(&ring, stream, ms.as_bytes(), &user);
    assert_eq!(check(&ring, stream, &items, None), Ok(()));
    let fresh = window.now_ms.abs_diff(signed_at) <= window.max_age_ms;
    let expected = if fresh { Ok(()) } else { Err(Rejection::Stale) };
    assert_eq!(check(&ring, stream, &items, Some(window)), expected);

    let at = change % items.len();
    let mut altered = items.clone();
    altered[at].push((change >> 8) as u8);
    assert!(
        check(&ring, stream, &altered, None).is_err(),
        "item {at} altered"
    );
    let mut shortened = items.clone();
    if shortened[at].pop().is_some() {
        assert!(
            check(&ring, stream, &shortened, None).is_err(),
            "item {at} cut"
        );
    }

    // Moving one byte across a field boundary keeps the concatenation: only the lengths in
    // the encoding tell the two apart.
    if at + 1 < user.len() && !items[at].is_empty() {
        let mut moved = items.clone();
        let byte = moved[at].pop().unwrap_or_default();
        moved[at + 1].insert(0, byte);
        assert!(
            check(&ring, stream, &moved, None).is_err(),
            "boundary {at} moved"
        );
    }

    let mut elsewhere = stream.to_vec();
    elsewhere.push(b'x');
    assert_eq!(
        check(&ring, &elsewhere, &items, None),
        Err(Rejection::BadMac)
    );
}

/// A ring prepared for `stream` signs every entry, of that stream or any other, with the tags
/// of an unprepared ring, and each ring accepts what the other signed.
pub fn prepared_ring_signs_alike(secret: &[u8], stream: &[u8], other: &[u8], user: &[Vec<u8>]) {
    let (plain, _) = ring_with(secret);
    let (mut prepared, _) = ring_with(secret);
    prepared.prepare_streams(&[stream]);
    let mut user = user.to_vec();
    if !user.len().is_multiple_of(2) {
        user.pop();
    }
    for target in [stream, other] {
        let by_plain = signed_entry(&plain, target, b"1700000000000", &user);
        let by_prepared = signed_entry(&prepared, target, b"1700000000000", &user);
        assert_eq!(by_plain, by_prepared);
        assert_eq!(check(&prepared, target, &by_plain, None), Ok(()));
        assert_eq!(check(&plain, target, &by_prepared, None), Ok(()));
    }
    if stream != other {
        let moved = signed_entry(&prepared, stream, b"1700000000000", &user);
        assert_eq!(
            check(&prepared, other, &moved, None),
            Err(Rejection::BadMac)
        );
    }
}

/// The canonical decimal form the module writes: digits only, no leading zero.
fn is_decimal(text: &[u8]) -> bool {
    !text.is_empty()
        && text.iter().all(u8::is_ascii_digit)
        && (text.len() == 1 || text[0] != b'0')
        && std::str::from_utf8(text).is_ok_and(|s| s.parse::<u64>().is_ok())
}

/// Whether `items` is an entry `ring` vouches for: the oracle `check_entry` is held to.
fn is_genuine(ring: &Keyring, stream: &[u8], items: &[&[u8]], fresh: Option<Freshness>) -> bool {
    if !items.len().is_multiple_of(2) || items.len() < 6 {
        return false;
    }
    let (user, trailer) = items.split_at(items.len() - 6);
    let [KID_FIELD, kid, SIGNED_MS_FIELD, ms, HMAC_FIELD, tag] = trailer else {
        return false;
    };
    let Some(key) = ring.find(kid) else {
        return false;
    };
    if !is_decimal(ms) || sign(key.mac(), kid, stream, ms, user) != **tag {
        return false;
    }
    let signed_at: u64 = std::str::from_utf8(ms)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    fresh.is_none_or(|f| f.now_ms.abs_diff(signed_at) <= f.max_age_ms)
}

/// `check_entry` on any item list: no panic, and acceptance exactly for genuine entries.
pub fn accepts_exactly_genuine(
    ring: &Keyring,
    stream: &[u8],
    items: &[Vec<u8>],
    fresh: Option<Freshness>,
) {
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    let verdict = check_entry(ring, stream, &refs, fresh);
    assert_eq!(
        verdict.is_ok(),
        is_genuine(ring, stream, &refs, fresh),
        "{verdict:?} for {items:?}"
    );
    if verdict == Err(Rejection::MissingMac) {
        let has_hmac = refs.chunks_exact(2).any(|pair| pair[0] == HMAC_FIELD);
        assert!(!has_hmac, "missing_mac although an hmac field is present");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CASES: u32 = 4096;

    /// Short items, often empty or made of the bytes a length prefix is made of, so that
    /// neighbouring items could run into each other if the lengths were missing.
    fn item() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(prop_oneof![Just(0u8), Just(8u8), any::<u8>()], 0..12),
            Just(Vec::new()),
            Just(DOMAIN_TAG.to_vec()),
        ]
    }

    fn entry_items() -> impl Strategy<Value = EntryItems> {
        let fields = prop::collection::vec(item(), 0..7);
        (item(), item(), item(), fields).prop_map(|(kid, stream, signed_ms, fields)| EntryItems {
            kid,
            stream,
            signed_ms,
            fields,
        })
    }

    /// Two entries, the second often derived from the first by moving one byte to a
    /// neighbouring item.
    fn entry_pair() -> impl Strategy<Value = (EntryItems, EntryItems)> {
        (entry_items(), entry_items(), any::<usize>(), any::<bool>()).prop_map(
            |(a, b, at, derive)| {
                let b = if derive { moved_boundary(&a, at) } else { b };
                (a, b)
            },
        )
    }

    fn window() -> impl Strategy<Value = (u64, Freshness)> {
        (0..4_000_000_000_000u64, 0..1_000_000u64, 1..600_000u64).prop_map(|(at, skew, max)| {
            let now_ms = (at + skew).saturating_sub(500_000);
            (
                at,
                Freshness {
                    now_ms,
                    max_age_ms: max,
                },
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn encodings_decode_back(items in entry_items()) {
            encoding_decodes_back(&items);
        }

        #[test]
        fn distinct_entries_never_encode_alike((a, b) in entry_pair()) {
            distinct_entries_encode_apart(&a, &b);
        }

        #[test]
        fn signed_entries_verify_and_any_change_fails(
            secret in prop::collection::vec(any::<u8>(), 0..48),
            stream in item(),
            (signed_at, fresh) in window(),
            user in prop::collection::vec(item(), 0..8),
            change in any::<usize>(),
        ) {
            signed_entry_verifies_and_changes_fail(&secret, &stream, signed_at, &user, change, fresh);
        }

        #[test]
        fn prepared_rings_sign_alike(
            secret in prop::collection::vec(any::<u8>(), 32..40),
            stream in item(),
            other in item(),
            user in prop::collection::vec(item(), 0..8),
        ) {
            prepared_ring_signs_alike(&secret, &stream, &other, &user);
        }

        #[test]
        fn only_genuine_entries_are_accepted(
            secret in prop::collection::vec(any::<u8>(), 32..40),
            user in prop::collection::vec(item(), 0..6),
            ms in prop_oneof!["[1-9][0-9]{0,3}", "0", "[+-]?0*[0-9]{1,3}", "[+0-9 -]{0,4}"],
            sign_it in any::<bool>(),
            tail in prop::collection::vec(item(), 0..3),
            now in 0..20_000u64,
        ) {
            // Entries signed by the key (with any signing-time text), then possibly given
            // trailing items, checked with and without an age window.
            let (ring, _) = ring_with(&secret);
            let mut items = if sign_it {
                signed_entry(&ring, b"s", ms.as_bytes(), &user)
            } else {
                let mut items = user.clone();
                items.extend([b"kid".to_vec(), b"k1".to_vec(), b"signed_ms".to_vec()]);
                items.extend([ms.as_bytes().to_vec(), b"hmac".to_vec(), vec![b'0'; 64]]);
                items
            };
            items.extend(tail);
            let window = Freshness { now_ms: now, max_age_ms: 5_000 };
            accepts_exactly_genuine(&ring, b"s", &items, None);
            accepts_exactly_genuine(&ring, b"s", &items, Some(window));
        }
    }
}

//! The entry MAC computed from the interface text alone, independent of the module's code.
//!
//! The tests use it two ways: to check that the module's `hmac` is exactly the documented MAC
//! (so any other verifier can check entries), and to build entries that a holder of the key
//! could have signed, such as one signed long ago, which the module must still reject as stale.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The domain tag that starts every canonical encoding.
pub const DOMAIN_TAG: &[u8] = b"reconcile-guard/v1";

/// The canonical bytes of an entry: each item as a u64 big-endian length then its bytes, in
/// the order tag, kid, stream key, signed_ms; then the pair count as a bare u64 big-endian;
/// then each user field and value, length-prefixed.
pub fn canonical(kid: &str, key: &str, signed_ms: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in [
        DOMAIN_TAG,
        kid.as_bytes(),
        key.as_bytes(),
        signed_ms.as_bytes(),
    ] {
        push_prefixed(&mut out, item);
    }
    out.extend_from_slice(&(fields.len() as u64).to_be_bytes());
    for (field, value) in fields {
        push_prefixed(&mut out, field);
        push_prefixed(&mut out, value);
    }
    out
}

/// The lowercase hex HMAC-SHA256 of the canonical bytes under `secret`.
pub fn mac_hex(
    secret: &[u8],
    kid: &str,
    key: &str,
    signed_ms: &str,
    fields: &[(Vec<u8>, Vec<u8>)],
) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&canonical(kid, key, signed_ms, fields));
    hex::encode(mac.finalize().into_bytes())
}

fn push_prefixed(out: &mut Vec<u8>, item: &[u8]) {
    out.extend_from_slice(&(item.len() as u64).to_be_bytes());
    out.extend_from_slice(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_follow_the_documented_layout() {
        let fields = vec![(b"ab".to_vec(), b"c".to_vec())];
        let bytes = canonical("k", "s", "7", &fields);

        let mut expected = Vec::new();
        for item in [&b"reconcile-guard/v1"[..], b"k", b"s", b"7"] {
            expected.extend_from_slice(&(item.len() as u64).to_be_bytes());
            expected.extend_from_slice(item);
        }
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, b'c']);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn moving_a_field_boundary_changes_the_mac() {
        let secret = [7u8; 32];
        let one = vec![(b"ab".to_vec(), b"c".to_vec())];
        let other = vec![(b"a".to_vec(), b"bc".to_vec())];
        assert_ne!(
            mac_hex(&secret, "k", "s", "1", &one),
            mac_hex(&secret, "k", "s", "1", &other)
        );
    }
}

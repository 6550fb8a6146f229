//! The entries an attacker with write access to Redis could plant in a guarded stream.
//!
//! Each forgery starts from a genuine signed entry (read back from a module server) or from the
//! unsigned fields an attacker would send, and says which rejection reasons the module may give.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngExt;

use crate::canonical::mac_hex;
use crate::keyring::Key;
use crate::reply::Entry;

/// A planted entry and the rejection reasons the interface allows for it.
#[derive(Clone, Debug)]
pub struct Forgery {
    /// What the forgery tries, for failure messages.
    pub name: &'static str,
    /// The field/value pairs to XADD.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// The reasons a correct module may report; the first is the expected one.
    pub reasons: &'static [&'static str],
}

/// The user fields an order-like entry carries.
pub fn order_fields(qty: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        ("decision", "RECONCILE_CLOSE"),
        ("symbol", "BTCUSDT"),
        ("qty", qty),
        ("side", "SELL"),
    ]
    .iter()
    .map(|(field, value)| (field.as_bytes().to_vec(), value.as_bytes().to_vec()))
    .collect()
}

/// The current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    since.as_millis() as u64
}

fn pair(field: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
    (field.as_bytes().to_vec(), value.as_bytes().to_vec())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    hex::encode(buf)
}

/// Fields plus a trailer carrying a MAC computed with `secret`, as a key holder would sign them.
pub fn signed_with(
    secret: &Key,
    kid: &str,
    key: &str,
    signed_ms: &str,
    user: &[(Vec<u8>, Vec<u8>)],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields = user.to_vec();
    fields.push(pair("kid", kid));
    fields.push(pair("signed_ms", signed_ms));
    fields.push(pair(
        "hmac",
        &mac_hex(&secret.bytes, kid, key, signed_ms, user),
    ));
    fields
}

/// Every forgery of the set, built around `genuine` (an entry signed into `key` with `signer`).
///
/// `max_age_ms` is the module's freshness window; the stale forgery is signed twice that long
/// ago. `genuine` must have at least one user field with a non-empty value.
pub fn all(genuine: &Entry, key: &str, signer: &Key, max_age_ms: u64) -> Vec<Forgery> {
    vec![
        altered_value(genuine),
        shifted_boundary(genuine),
        random_hmac(genuine, &signer.kid),
        missing_hmac(),
        truncated_hmac(genuine),
        unknown_kid(key),
        stale(key, signer, max_age_ms),
        future_dated(key, signer, max_age_ms),
        malformed_signed_ms(key, signer),
        reordered_trailer(genuine),
    ]
}

/// A genuine entry with one user value changed (the quantity, as an attacker would).
pub fn altered_value(genuine: &Entry) -> Forgery {
    let mut fields = genuine.fields.clone();
    fields[0].1 = b"100.0".to_vec();
    if fields[0].1 == genuine.fields[0].1 {
        fields[0].1 = b"200.0".to_vec();
    }
    Forgery {
        name: "altered value",
        fields,
        reasons: &["bad_mac"],
    }
}

/// A genuine entry with the first field/value boundary moved by one byte: the concatenated
/// bytes stay the same, so only a length-prefixed encoding tells the two apart.
pub fn shifted_boundary(genuine: &Entry) -> Forgery {
    let mut fields = genuine.fields.clone();
    let (field, value) = fields[0].clone();
    assert!(
        !value.is_empty(),
        "the genuine entry needs a non-empty first value"
    );
    let mut longer = field;
    longer.push(value[0]);
    fields[0] = (longer, value[1..].to_vec());
    Forgery {
        name: "shifted field boundary",
        fields,
        reasons: &["bad_mac"],
    }
}

/// The genuine user fields with a well-formed trailer whose MAC is random.
pub fn random_hmac(genuine: &Entry, kid: &str) -> Forgery {
    let mut fields = genuine.user_fields().to_vec();
    fields.push(pair("kid", kid));
    fields.push(pair("signed_ms", &now_ms().to_string()));
    fields.push(pair("hmac", &random_hex(32)));
    Forgery {
        name: "random hmac",
        fields,
        reasons: &["bad_mac"],
    }
}

/// An order with no trailer at all: what a plain XADD by an attacker looks like.
pub fn missing_hmac() -> Forgery {
    Forgery {
        name: "missing hmac",
        fields: order_fields("100.0"),
        reasons: &["missing_mac"],
    }
}

/// A genuine entry whose hmac is cut to half its length.
pub fn truncated_hmac(genuine: &Entry) -> Forgery {
    let mut fields = genuine.fields.clone();
    let last = fields.len() - 1;
    let cut = fields[last].1[..32].to_vec();
    fields[last].1 = cut;
    // A MAC of the wrong length is a layout fault and a MAC mismatch at once.
    Forgery {
        name: "truncated hmac",
        fields,
        reasons: &["malformed", "bad_mac"],
    }
}

/// An entry signed with a key the ring does not hold, under a kid it does not know.
pub fn unknown_kid(key: &str) -> Forgery {
    let outsider = Key::random("ghost");
    let now = now_ms().to_string();
    let fields = signed_with(&outsider, "ghost", key, &now, &order_fields("100.0"));
    Forgery {
        name: "unknown kid",
        fields,
        reasons: &["unknown_kid"],
    }
}

/// A correctly signed entry whose signing time lies twice the freshness window in the past.
pub fn stale(key: &str, signer: &Key, max_age_ms: u64) -> Forgery {
    let old = now_ms().saturating_sub(2 * max_age_ms).to_string();
    let fields = signed_with(signer, &signer.kid, key, &old, &order_fields("0.007"));
    Forgery {
        name: "stale",
        fields,
        reasons: &["stale"],
    }
}

/// A correctly signed entry dated twice the freshness window ahead: pre-signed orders must not
/// stay fresh until their date comes.
pub fn future_dated(key: &str, signer: &Key, max_age_ms: u64) -> Forgery {
    let ahead = (now_ms() + 2 * max_age_ms).to_string();
    let fields = signed_with(signer, &signer.kid, key, &ahead, &order_fields("0.007"));
    Forgery {
        name: "future-dated",
        fields,
        reasons: &["stale"],
    }
}

/// Whether the forgery carries a valid MAC and fails on its signing time alone.
pub fn fails_on_age_only(forgery: &Forgery) -> bool {
    forgery.reasons == ["stale"]
}

/// A correctly MACed entry whose signed_ms is not a decimal number.
pub fn malformed_signed_ms(key: &str, signer: &Key) -> Forgery {
    let fields = signed_with(
        signer,
        &signer.kid,
        key,
        "yesterday",
        &order_fields("0.007"),
    );
    Forgery {
        name: "non-numeric signed_ms",
        fields,
        reasons: &["malformed"],
    }
}

/// A genuine entry with its trailer in the wrong order (hmac before kid).
pub fn reordered_trailer(genuine: &Entry) -> Forgery {
    let mut fields = genuine.fields.clone();
    let len = fields.len();
    fields[len - 3..].rotate_right(1);
    Forgery {
        name: "reordered trailer",
        fields,
        reasons: &["malformed", "bad_mac"],
    }
}

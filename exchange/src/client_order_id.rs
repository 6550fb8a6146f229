//! Client order ids derived from close plan ids.
//!
//! The same plan id always yields the same id, so a resend of one plan is recognisable by the
//! exchange and by a lookup. Plan ids can exceed the exchange's 36 characters, so the id is a
//! fixed prefix and a truncated SHA-256 of the whole plan id.

use std::fmt;

use sha2::{Digest, Sha256};

/// Longest client order id the exchange accepts.
pub const MAX_LEN: usize = 36;

/// Prefix that marks ids made by this crate, so they stand out in the order history.
const PREFIX: &str = "rgc-";

/// A client order id that satisfies `^[.A-Z:/a-z0-9_-]{1,36}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientOrderId(String);

impl ClientOrderId {
    /// The id for a close plan: `rgc-` and the first 128 bits of SHA-256(plan id) in hex.
    pub fn for_plan(plan_id: &str) -> Self {
        let digest = Sha256::digest(plan_id.as_bytes());
        let hash_hex = hex::encode(&digest[..(MAX_LEN - PREFIX.len()) / 2]);
        Self(format!("{PREFIX}{hash_hex}"))
    }

    /// Accepts an id chosen elsewhere if the exchange would accept it.
    pub fn parse(id: &str) -> Option<Self> {
        is_valid(id).then(|| Self(id.to_owned()))
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `id` matches `^[.A-Z:/a-z0-9_-]{1,36}$`.
pub fn is_valid(id: &str) -> bool {
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'_' | b'-');
    (1..=MAX_LEN).contains(&id.len()) && id.bytes().all(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "reconclose:BTCUSDT:a1b2c3d4e5f6:1737846123456";

    #[test]
    fn long_plan_ids_give_valid_stable_ids() {
        let id = ClientOrderId::for_plan(PLAN);
        assert!(PLAN.len() > MAX_LEN);
        assert_eq!(id.as_str().len(), MAX_LEN);
        assert!(is_valid(id.as_str()));
        assert_eq!(id, ClientOrderId::for_plan(PLAN));
    }

    #[test]
    fn different_plans_give_different_ids() {
        let other = "reconclose:BTCUSDT:a1b2c3d4e5f6:1737846123457";
        assert_ne!(
            ClientOrderId::for_plan(PLAN),
            ClientOrderId::for_plan(other)
        );
    }

    #[test]
    fn validity_follows_the_exchange_pattern() {
        assert!(is_valid("a.B:c/d_e-0"));
        assert!(!is_valid(""));
        assert!(!is_valid(&"x".repeat(37)));
        assert!(!is_valid("has space"));
        assert!(!is_valid("emoji\u{1F600}"));
        assert!(!is_valid("plus+sign"));
    }
}

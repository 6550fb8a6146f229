//! The API key and secret, and the HMAC-SHA256 request signature made with them.
//!
//! Invariants: neither value is ever printed (`Debug` shows `REDACTED`), both are wiped from
//! memory when dropped, and signatures are compared in constant time.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::ExchangeError;

/// Environment variable holding the API key.
pub const API_KEY_ENV: &str = "BINANCE_API_KEY";
/// Environment variable holding the API secret.
pub const API_SECRET_ENV: &str = "BINANCE_API_SECRET";

/// Secrets shorter than this are refused: real exchange secrets are 64 characters, and a short
/// one is almost always a placeholder left in a config file.
pub const MIN_SECRET_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// An API key and its secret. Built once at startup and shared by reference.
pub struct Credentials {
    api_key: Zeroizing<String>,
    secret: Zeroizing<String>,
}

impl Credentials {
    /// Accepts a key and secret, refusing empty values and secrets shorter than
    /// [`MIN_SECRET_LEN`].
    pub fn new(
        api_key: impl Into<String>,
        secret: impl Into<String>,
    ) -> Result<Self, ExchangeError> {
        let api_key = Zeroizing::new(api_key.into());
        let secret = Zeroizing::new(secret.into());
        if api_key.trim().is_empty() {
            return Err(ExchangeError::Config("api key is empty".into()));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(ExchangeError::Config(format!(
                "api secret is shorter than {MIN_SECRET_LEN} characters"
            )));
        }
        Ok(Self { api_key, secret })
    }

    /// Reads `BINANCE_API_KEY` and `BINANCE_API_SECRET`. A missing variable is an error; there
    /// is no default.
    pub fn from_env() -> Result<Self, ExchangeError> {
        let read = |name: &str| {
            std::env::var(name).map_err(|_| ExchangeError::Config(format!("{name} is not set")))
        };
        Self::new(read(API_KEY_ENV)?, read(API_SECRET_ENV)?)
    }

    /// The key sent in the `X-MBX-APIKEY` header. It is not secret on its own, but it is still
    /// kept out of logs.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Lowercase hex HMAC-SHA256 of `payload` under the secret.
    pub fn sign(&self, payload: &str) -> String {
        sign(self.secret.as_bytes(), payload)
    }

    /// Checks a hex signature over `payload` in constant time. Malformed hex is a mismatch.
    pub fn verify(&self, payload: &str, signature_hex: &str) -> bool {
        let Ok(tag) = hex::decode(signature_hex) else {
            return false;
        };
        mac(self.secret.as_bytes(), payload)
            .verify_slice(&tag)
            .is_ok()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key", &"REDACTED")
            .field("secret", &"REDACTED")
            .finish()
    }
}

/// Lowercase hex HMAC-SHA256 of `payload` under `secret`, as the exchange expects in the
/// `signature` parameter.
pub fn sign(secret: &[u8], payload: &str) -> String {
    hex::encode(mac(secret, payload).finalize().into_bytes())
}

fn mac(secret: &[u8], payload: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(payload.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_values() {
        let creds = Credentials::new("key-visible-nowhere", "secret-visible-nowhere").unwrap();
        let shown = format!("{creds:?}");
        assert!(shown.contains("REDACTED"));
        assert!(!shown.contains("visible-nowhere"));
    }

    #[test]
    fn short_or_empty_values_are_refused() {
        assert!(Credentials::new("", "0123456789abcdef").is_err());
        assert!(Credentials::new("key", "short").is_err());
        assert!(Credentials::new("key", "0123456789abcdef").is_ok());
    }

    #[test]
    fn verify_accepts_own_signature_and_refuses_others() {
        let creds = Credentials::new("key", "0123456789abcdef").unwrap();
        let sig = creds.sign("a=1&b=2");
        assert!(creds.verify("a=1&b=2", &sig));
        assert!(!creds.verify("a=1&b=3", &sig));
        assert!(!creds.verify("a=1&b=2", "not hex"));
        assert!(!creds.verify("a=1&b=2", &sig[..10]));
    }
}

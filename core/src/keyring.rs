//! The keyring: the MAC keys the module signs and verifies with.
//!
//! The file holds one key per line, `KID HEX`. Blank lines and lines starting with `#` are
//! ignored. The first key signs; every key verifies. The file must not be readable or writable
//! by group or others, and no key may be short, trivially weak, or the public default secret of
//! the system this project replaces.

use std::fmt;
use std::path::Path;

use crate::mac::{fingerprint, MacKey};

// Beside this file rather than under `keyring/`: the repository ignores every path named
// `keyring`, so that no keyring file is ever committed.
#[cfg(any(test, fuzzing))]
#[path = "keyring_properties.rs"]
pub mod properties;

/// The shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;
/// The longest key id accepted, in characters.
pub const MAX_KID_LEN: usize = 32;
/// The secret the replaced system shipped as its default. It is public, so it is refused.
const PUBLIC_DEFAULT_SECRET: &[u8] = b"quantum_reconcile_secret_change_in_prod";

/// Why a keyring could not be read. No variant carries key material.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyringError {
    /// The file could not be opened or read.
    Io(String),
    /// The file grants permissions to group or others (octal mode given).
    Permissions(u32),
    /// A line is not `KID HEX`.
    Malformed { line: usize, why: &'static str },
    /// The same key id appears twice.
    DuplicateKid { line: usize, kid: String },
    /// A key decodes to fewer than [`MIN_KEY_BYTES`] bytes.
    ShortKey {
        line: usize,
        kid: String,
        bytes: usize,
    },
    /// A key is the replaced system's public default secret.
    PublicDefault { line: usize },
    /// A key's bytes are all the same value.
    WeakKey { line: usize, kid: String },
    /// The file holds no key at all.
    Empty,
}

impl fmt::Display for KeyringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "cannot read the keyring file: {e}"),
            Self::Permissions(mode) => write!(
                f,
                "the keyring file has mode {mode:04o}: group and others must have no access \
                 (chmod 600)"
            ),
            Self::Malformed { line, why } => write!(f, "keyring line {line}: {why}"),
            Self::DuplicateKid { line, kid } => {
                write!(f, "keyring line {line}: key id '{kid}' appears twice")
            }
            Self::ShortKey { line, kid, bytes } => write!(
                f,
                "keyring line {line}: key '{kid}' has {bytes} bytes, at least {MIN_KEY_BYTES} \
                 are required"
            ),
            Self::PublicDefault { line } => write!(
                f,
                "keyring line {line}: the key is the public default secret of the replaced \
                 system; generate a new one"
            ),
            Self::WeakKey { line, kid } => {
                write!(f, "keyring line {line}: key '{kid}' repeats a single byte")
            }
            Self::Empty => write!(f, "the keyring file holds no key"),
        }
    }
}

impl std::error::Error for KeyringError {}

/// One key of the ring.
pub struct Key {
    kid: String,
    fingerprint: String,
    mac: MacKey,
}

impl Key {
    /// The key id, as written into every entry this key signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A short hash that tells keys apart in listings without revealing them.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The keyed MAC.
    pub fn mac(&self) -> &MacKey {
        &self.mac
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("fingerprint", &self.fingerprint)
            .field("secret", &"REDACTED")
            .finish()
    }
}

/// The keys in file order. Never empty: the first one signs.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// Reads and checks the keyring file at `path`.
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        check_permissions(path)?;
        let text = std::fs::read(path).map_err(|e| KeyringError::Io(e.kind().to_string()))?;
        // The buffer held key text; wipe it whatever the outcome.
        let text = zeroize::Zeroizing::new(text);
        Self::parse(&text)
    }

    /// Parses keyring text. Separate from [`Keyring::load`] so it is testable without files.
    pub fn parse(text: &[u8]) -> Result<Keyring, KeyringError> {
        let mut keys: Vec<Key> = Vec::new();
        for (index, raw_line) in text.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let trimmed = raw_line.trim_ascii();
            if trimmed.is_empty() || trimmed.starts_with(b"#") {
                continue;
            }
            let key = parse_line(line, trimmed)?;
            if keys.iter().any(|k| k.kid == key.kid) {
                return Err(KeyringError::DuplicateKid { line, kid: key.kid });
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring { keys })
    }

    /// The key that signs new entries.
    pub fn signing(&self) -> &Key {
        // `parse` never builds an empty ring.
        &self.keys[0]
    }

    /// The key with this id, if the ring holds it.
    pub fn find(&self, kid: &[u8]) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid.as_bytes() == kid)
    }

    /// All keys, signing key first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Hashes, for every key, the fixed head of entries of these streams once, so that signing
    /// and checking entries of them skip it. The tags are unchanged, and entries of any other
    /// stream are handled from the start as before.
    pub fn prepare_streams<S: AsRef<[u8]>>(&mut self, streams: &[S]) {
        for key in &mut self.keys {
            for stream in streams {
                key.mac.prepare(key.kid.as_bytes(), stream.as_ref());
            }
        }
    }
}

fn check_permissions(path: &Path) -> Result<(), KeyringError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| KeyringError::Io(e.kind().to_string()))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyringError::Permissions(mode));
    }
    Ok(())
}

fn parse_line(line: usize, text: &[u8]) -> Result<Key, KeyringError> {
    let mut words = text
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let (Some(kid), Some(secret), None) = (words.next(), words.next(), words.next()) else {
        return Err(KeyringError::Malformed {
            line,
            why: "expected 'KID HEX'",
        });
    };
    if kid.is_empty() || kid.len() > MAX_KID_LEN || !kid.iter().all(|&b| is_kid_byte(b)) {
        return Err(KeyringError::Malformed {
            line,
            why: "a key id is 1 to 32 characters of A-Z a-z 0-9 . _ -",
        });
    }
    // Checked before decoding: the default is not hex, and an operator who pasted it deserves
    // the precise reason rather than "not hex".
    if secret == PUBLIC_DEFAULT_SECRET {
        return Err(KeyringError::PublicDefault { line });
    }
    let bytes =
        zeroize::Zeroizing::new(hex::decode(secret).map_err(|_| KeyringError::Malformed {
            line,
            why: "the key is not hexadecimal",
        })?);
    // `kid` holds only the checked ASCII bytes, so this conversion cannot lose anything.
    let kid = String::from_utf8_lossy(kid).into_owned();
    if bytes.as_slice() == PUBLIC_DEFAULT_SECRET {
        return Err(KeyringError::PublicDefault { line });
    }
    if bytes.len() < MIN_KEY_BYTES {
        return Err(KeyringError::ShortKey {
            line,
            kid,
            bytes: bytes.len(),
        });
    }
    if bytes.iter().all(|&b| b == bytes[0]) {
        return Err(KeyringError::WeakKey { line, kid });
    }
    Ok(Key {
        kid,
        fingerprint: fingerprint(&bytes),
        mac: MacKey::new(&bytes),
    })
}

fn is_kid_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn first_key_signs_and_all_verify() {
        let text = format!("# ring\n\nk2 {B}\n  k1 {A}  \n");
        let ring = Keyring::parse(text.as_bytes()).unwrap();
        assert_eq!(ring.signing().kid(), "k2");
        assert!(ring.find(b"k1").is_some());
        assert!(ring.find(b"k3").is_none());
        assert_eq!(ring.keys().len(), 2);
    }

    #[test]
    fn refuses_duplicate_kid() {
        let text = format!("k1 {A}\nk1 {B}\n");
        let err = Keyring::parse(text.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            KeyringError::DuplicateKid {
                line: 2,
                kid: "k1".into()
            }
        );
    }

    #[test]
    fn refuses_short_key() {
        let err = Keyring::parse(b"k1 00112233445566778899aabbccddeeff").unwrap_err();
        assert!(matches!(err, KeyringError::ShortKey { bytes: 16, .. }));
    }

    #[test]
    fn refuses_public_default_as_text_and_as_hex() {
        let err = Keyring::parse(b"k1 quantum_reconcile_secret_change_in_prod").unwrap_err();
        assert_eq!(err, KeyringError::PublicDefault { line: 1 });
        let hexed = format!("k1 {}", hex::encode(PUBLIC_DEFAULT_SECRET));
        let err = Keyring::parse(hexed.as_bytes()).unwrap_err();
        assert_eq!(err, KeyringError::PublicDefault { line: 1 });
    }

    #[test]
    fn refuses_repeated_byte_key() {
        let text = format!("k1 {}", "ab".repeat(32));
        assert!(matches!(
            Keyring::parse(text.as_bytes()),
            Err(KeyringError::WeakKey { .. })
        ));
    }

    #[test]
    fn refuses_malformed_lines() {
        for bad in [
            format!("k1 {A} extra"),
            "k1".to_string(),
            format!("bad/kid {A}"),
            format!("{} {A}", "k".repeat(33)),
            "k1 zz".to_string(),
            "k1 abc".to_string(),
        ] {
            let err = Keyring::parse(bad.as_bytes()).unwrap_err();
            assert!(
                matches!(err, KeyringError::Malformed { line: 1, .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn refuses_empty_ring() {
        assert_eq!(
            Keyring::parse(b"# nothing\n\n").unwrap_err(),
            KeyringError::Empty
        );
    }

    #[test]
    fn errors_and_debug_never_show_key_bytes() {
        let ring = Keyring::parse(format!("k1 {A}").as_bytes()).unwrap();
        let debug = format!("{ring:?}");
        assert!(!debug.contains(A) && debug.contains("REDACTED"), "{debug}");
        let err = Keyring::parse(format!("k1 {}", &A[..40]).as_bytes()).unwrap_err();
        assert!(!err.to_string().contains(&A[..40]));
    }

    #[test]
    fn refuses_group_readable_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("keyring-perm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ring");
        std::fs::write(&path, format!("k1 {A}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            Keyring::load(&path).unwrap_err(),
            KeyringError::Permissions(0o640)
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Keyring::load(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Keyring files: the good ones the module loads and the flawed ones it must refuse.
//!
//! A keyring is one `KID HEX` pair per line; the first key signs and every key verifies. The file
//! must not be readable by group or others, so every good file is written with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngExt;
use tempfile::TempDir;

use crate::PUBLIC_DEFAULT_SECRET;

/// One signing key: its id and its secret bytes.
#[derive(Clone)]
pub struct Key {
    /// The key id written next to each entry signed with this key.
    pub kid: String,
    /// The secret bytes.
    pub bytes: Vec<u8>,
}

impl Key {
    /// A fresh 32-byte key from the thread RNG (seeded by the operating system).
    pub fn random(kid: &str) -> Key {
        let mut bytes = vec![0u8; 32];
        rand::rng().fill(&mut bytes[..]);
        Key {
            kid: kid.to_string(),
            bytes,
        }
    }

    /// The secret as lowercase hex, as it is written into the keyring file.
    pub fn hex(&self) -> String {
        hex::encode(&self.bytes)
    }

    /// Every text form of the secret that must never show up in any output.
    pub fn leak_forms(&self) -> Vec<String> {
        let lower = self.hex();
        vec![lower.to_uppercase(), lower]
    }

    fn line(&self) -> String {
        format!("{} {}", self.kid, self.hex())
    }
}

// The redacted form keeps a failing assertion from printing the secret it was guarding.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("bytes", &"REDACTED")
            .finish()
    }
}

/// A defect the module must refuse when it loads (or reloads) a keyring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flaw {
    /// A good key, but the file has mode 0644.
    WorldReadable,
    /// A good key, but the file has mode 0640.
    GroupReadable,
    /// A line with a third token after the hex.
    MalformedLine,
    /// A kid with a character outside `[A-Za-z0-9._-]`.
    BadKid,
    /// Two lines with the same kid.
    DuplicateKid,
    /// A key of 31 bytes, one short of the minimum.
    ShortKey,
    /// A 32-byte key whose bytes are all the same.
    AllEqualBytes,
    /// The public default secret written as the HEX field, verbatim.
    PublicDefaultText,
    /// The public default secret hex-encoded, so that it decodes to the known bytes.
    PublicDefaultHex,
    /// Only comments and blank lines.
    NoKey,
}

impl Flaw {
    /// Every flaw, for tests that walk all of them.
    pub const ALL: [Flaw; 10] = [
        Flaw::WorldReadable,
        Flaw::GroupReadable,
        Flaw::MalformedLine,
        Flaw::BadKid,
        Flaw::DuplicateKid,
        Flaw::ShortKey,
        Flaw::AllEqualBytes,
        Flaw::PublicDefaultText,
        Flaw::PublicDefaultHex,
        Flaw::NoKey,
    ];

    /// The file text and mode for this flaw, built around `good` where a real key is needed.
    ///
    /// The returned secrets are every hex string in the file that must never reach a log.
    pub fn render(self, good: &Key) -> (String, u32, Vec<String>) {
        let other = Key::random("other");
        let good_line = good.line();
        match self {
            Flaw::WorldReadable => (format!("{good_line}\n"), 0o644, good.leak_forms()),
            Flaw::GroupReadable => (format!("{good_line}\n"), 0o640, good.leak_forms()),
            Flaw::MalformedLine => (format!("{good_line} trailing\n"), 0o600, good.leak_forms()),
            Flaw::BadKid => (
                format!("bad/kid {}\n", good.hex()),
                0o600,
                good.leak_forms(),
            ),
            Flaw::DuplicateKid => {
                let text = format!("{good_line}\n{} {}\n", good.kid, other.hex());
                let mut secrets = good.leak_forms();
                secrets.extend(other.leak_forms());
                (text, 0o600, secrets)
            }
            Flaw::ShortKey => {
                let short = hex::encode(&good.bytes[..31]);
                (format!("{} {short}\n", good.kid), 0o600, vec![short])
            }
            Flaw::AllEqualBytes => {
                let flat = "ab".repeat(32);
                (format!("{} {flat}\n", good.kid), 0o600, vec![flat])
            }
            Flaw::PublicDefaultText => (
                format!("{} {PUBLIC_DEFAULT_SECRET}\n", good.kid),
                0o600,
                Vec::new(),
            ),
            Flaw::PublicDefaultHex => {
                let hexed = hex::encode(PUBLIC_DEFAULT_SECRET);
                (format!("{} {hexed}\n", good.kid), 0o600, vec![hexed])
            }
            Flaw::NoKey => ("# no keys here\n\n".to_string(), 0o600, Vec::new()),
        }
    }
}

/// A keyring file in its own temporary directory.
pub struct KeyringFile {
    _dir: TempDir,
    path: PathBuf,
}

impl KeyringFile {
    /// A good keyring holding `keys`, the first one signing, with mode 0600.
    pub fn new(keys: &[&Key]) -> KeyringFile {
        let file = KeyringFile::empty();
        file.write_keys(keys);
        file
    }

    /// A keyring whose content carries `flaw`; the secrets are the hex strings it contains.
    pub fn flawed(flaw: Flaw, good: &Key) -> (KeyringFile, Vec<String>) {
        let file = KeyringFile::empty();
        let (text, mode, secrets) = flaw.render(good);
        file.write_text(&text, mode);
        (file, secrets)
    }

    /// A path in a fresh directory where no keyring file exists.
    pub fn missing() -> KeyringFile {
        KeyringFile::empty()
    }

    /// Replaces the content with `keys`, the first one signing, mode 0600.
    pub fn write_keys(&self, keys: &[&Key]) {
        let text: String = keys.iter().map(|key| key.line() + "\n").collect();
        self.write_text(&text, 0o600);
    }

    /// Replaces the content with `text` and sets `mode`.
    pub fn write_text(&self, text: &str, mode: u32) {
        // Write to a sibling and rename, so a reload never sees a half-written file.
        let staging = self.path.with_extension("new");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staging)
            .expect("creating keyring file");
        file.write_all(text.as_bytes())
            .expect("writing keyring file");
        file.sync_all().expect("syncing keyring file");
        fs::set_permissions(&staging, fs::Permissions::from_mode(mode))
            .expect("setting keyring mode");
        fs::rename(&staging, &self.path).expect("moving keyring into place");
    }

    /// Where the file is (or would be).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as text, for load arguments.
    pub fn path_str(&self) -> String {
        self.path
            .to_str()
            .expect("temp paths are UTF-8")
            .to_string()
    }

    fn empty() -> KeyringFile {
        let dir = tempfile::Builder::new()
            .prefix("reconcile-keyring")
            .tempdir()
            .expect("creating keyring dir");
        let path = dir.path().join("keyring");
        KeyringFile { _dir: dir, path }
    }
}

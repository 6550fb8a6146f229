//! The keyring file's text, edited line by line so that comments and layout survive.
//!
//! Every text this module produces is checked by `reconcile-core` (the parser the module itself
//! uses) before anyone may write it, so the tool cannot write a ring Redis would refuse.

use std::time::{Duration, SystemTime};

use reconcile_core::keyring::{Keyring, KeyringError};
use zeroize::Zeroizing;

use crate::kid;

/// The first lines of a keyring the tool creates.
const HEADER: &str = "# reconcile-guard keyring: the first key signs, every key verifies.\n\
                      # Edited by reconcile-keyring; owner redis, mode 0600.\n";

/// Why a keyring text was not accepted or could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The text breaks a keyring rule; the module would refuse it as well.
    #[error(transparent)]
    Invalid(#[from] KeyringError),
    /// The key lines the tool sees are not the keys the parser reads.
    #[error("the keyring's lines could not be matched to its keys; edit it by hand")]
    Layout,
    /// The new key's id is already in the ring.
    #[error("key id '{0}' is already in the keyring; pass another with --kid")]
    KidTaken(String),
    /// A retirement would remove the key that signs.
    #[error("key '{0}' signs new entries and cannot be retired")]
    SigningKey(String),
}

/// Which keys `retire` drops.
#[derive(Clone, Copy, Debug)]
pub enum Retire {
    /// Keep the first `n` keys (at least one), drop the rest.
    Keep(usize),
    /// Drop each key whose successor, the key above it, was made more than `age` before `now`:
    /// it has not signed anything for that long.
    OlderThan { age: Duration, now: SystemTime },
}

/// A keyring's text with its key ids, in file order (signing key first).
pub struct RingText {
    text: Zeroizing<String>,
    kids: Vec<String>,
}

impl RingText {
    /// Checks `text` as a keyring and remembers its key ids.
    pub fn parse(text: Zeroizing<String>) -> Result<RingText, RingError> {
        let ring = Keyring::parse(text.as_bytes())?;
        let kids = key_lines(&text)
            .map(|(_, kid)| kid.to_string())
            .collect::<Vec<_>>();
        let parsed = ring.keys().iter().map(|key| key.kid());
        if !kids.iter().map(String::as_str).eq(parsed) {
            return Err(RingError::Layout);
        }
        Ok(RingText { text, kids })
    }

    /// The text of a new keyring that holds no key yet. Only [`RingText::with_new_key`] makes
    /// it usable.
    pub fn blank() -> RingText {
        RingText {
            text: Zeroizing::new(HEADER.to_string()),
            kids: Vec::new(),
        }
    }

    /// The key ids, signing key first.
    pub fn kids(&self) -> &[String] {
        &self.kids
    }

    /// The text, as it is written to the file.
    pub fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }

    /// The parsed keys.
    pub fn keyring(&self) -> Result<Keyring, RingError> {
        Ok(Keyring::parse(self.text.as_bytes())?)
    }

    /// The text with `secret` under `kid` as the first key, the others kept below it.
    pub fn with_new_key(&self, kid: &str, secret: &[u8]) -> Result<RingText, RingError> {
        if self.kids.iter().any(|k| k == kid) {
            return Err(RingError::KidTaken(kid.to_string()));
        }
        let line = Zeroizing::new(format!("{kid} {}\n", *Zeroizing::new(hex::encode(secret))));
        let at = key_lines(&self.text).next().map(|(start, _)| start);
        let mut text = Zeroizing::new(String::with_capacity(self.text.len() + line.len() + 1));
        match at {
            Some(start) => {
                text.push_str(&self.text[..start]);
                text.push_str(&line);
                text.push_str(&self.text[start..]);
            }
            None => {
                text.push_str(&self.text);
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&line);
            }
        }
        let ring = RingText::parse(text)?;
        if ring.kids.first().map(String::as_str) != Some(kid) {
            return Err(RingError::Layout);
        }
        Ok(ring)
    }

    /// The keys `policy` would drop, in file order. Never the signing key.
    pub fn to_retire(&self, policy: Retire) -> Vec<String> {
        let kids = &self.kids;
        match policy {
            Retire::Keep(n) => kids.iter().skip(n.max(1)).cloned().collect(),
            Retire::OlderThan { age, now } => (1..kids.len())
                .filter(|&i| {
                    kid::time_of(&kids[i - 1])
                        .and_then(|made| now.duration_since(made).ok())
                        .is_some_and(|elapsed| elapsed >= age)
                })
                .map(|i| kids[i].clone())
                .collect(),
        }
    }

    /// Keys that `OlderThan` cannot judge because the key above them has no date in its id.
    pub fn undated(&self) -> Vec<String> {
        (1..self.kids.len())
            .filter(|&i| kid::time_of(&self.kids[i - 1]).is_none())
            .map(|i| self.kids[i].clone())
            .collect()
    }

    /// The text without the lines of the keys in `retired`.
    pub fn without(&self, retired: &[String]) -> Result<RingText, RingError> {
        if let Some(signing) = self.kids.first().filter(|k| retired.contains(k)) {
            return Err(RingError::SigningKey(signing.clone()));
        }
        let mut text = Zeroizing::new(String::with_capacity(self.text.len()));
        for line in self.text.split_inclusive('\n') {
            let dropped = kid_of_line(line).is_some_and(|kid| retired.iter().any(|r| r == kid));
            if !dropped {
                text.push_str(line);
            }
        }
        RingText::parse(text)
    }
}

/// The byte offset and key id of each line that holds a key, in file order.
fn key_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut start = 0;
    text.split_inclusive('\n').filter_map(move |line| {
        let here = start;
        start += line.len();
        kid_of_line(line).map(|kid| (here, kid))
    })
}

/// The key id of a key line; `None` for blank lines and comments, which the format ignores.
fn kid_of_line(line: &str) -> Option<&str> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    trimmed.split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
    const C: [u8; 32] = [
        7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31,
    ];

    fn ring(text: &str) -> RingText {
        RingText::parse(Zeroizing::new(text.to_string())).unwrap()
    }

    fn text_of(ring: &RingText) -> String {
        String::from_utf8(ring.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn new_key_goes_first_and_comments_stay() {
        let old = ring(&format!("# header\n\nkold {A}\n# note\nkolder {B}\n"));
        let new = old.with_new_key("knew", &C).unwrap();
        assert_eq!(new.kids(), ["knew", "kold", "kolder"]);
        assert_eq!(
            text_of(&new),
            format!(
                "# header\n\nknew {}\nkold {A}\n# note\nkolder {B}\n",
                hex::encode(C)
            )
        );
        assert_eq!(new.keyring().unwrap().signing().kid(), "knew");
    }

    #[test]
    fn blank_ring_takes_its_first_key() {
        let new = RingText::blank().with_new_key("k1", &C).unwrap();
        assert_eq!(new.kids(), ["k1"]);
        assert!(text_of(&new).starts_with('#'));
    }

    #[test]
    fn refuses_a_taken_kid_and_a_weak_key() {
        let old = ring(&format!("kold {A}\n"));
        assert!(matches!(
            old.with_new_key("kold", &C),
            Err(RingError::KidTaken(_))
        ));
        assert!(matches!(
            old.with_new_key("knew", &[9u8; 32]),
            Err(RingError::Invalid(KeyringError::WeakKey { .. }))
        ));
        assert!(matches!(
            old.with_new_key("bad/kid", &C),
            Err(RingError::Invalid(KeyringError::Malformed { .. }))
        ));
    }

    #[test]
    fn keep_never_drops_the_signing_key() {
        let three = ring(&format!("k3 {}\nk2 {A}\nk1 {B}\n", hex::encode(C)));
        assert_eq!(three.to_retire(Retire::Keep(2)), ["k1"]);
        assert_eq!(three.to_retire(Retire::Keep(0)), ["k2", "k1"]);
        assert!(three.to_retire(Retire::Keep(5)).is_empty());
    }

    #[test]
    fn older_than_counts_from_the_successor() {
        let text = format!(
            "k20250301T000000Z {}\nk20250201T000000Z {A}\nk20250101T000000Z {B}\n",
            hex::encode(C)
        );
        let r = ring(&text);
        let now = kid::time_of("k20250310T000000Z").unwrap();
        let day = Duration::from_secs(86_400);
        // The middle key stopped signing on March 1, nine days ago; the last one on February 1.
        assert_eq!(
            r.to_retire(Retire::OlderThan { age: day * 8, now }),
            ["k20250201T000000Z", "k20250101T000000Z"]
        );
        assert_eq!(
            r.to_retire(Retire::OlderThan { age: day * 10, now }),
            ["k20250101T000000Z"]
        );
        assert!(r
            .to_retire(Retire::OlderThan { age: day * 40, now })
            .is_empty());
    }

    #[test]
    fn older_than_keeps_keys_below_an_undated_one() {
        let r = ring(&format!(
            "manual {}\nk20200101T000000Z {A}\n",
            hex::encode(C)
        ));
        let policy = Retire::OlderThan {
            age: Duration::ZERO,
            now: SystemTime::now(),
        };
        assert!(r.to_retire(policy).is_empty());
        assert_eq!(r.undated(), ["k20200101T000000Z"]);
    }

    #[test]
    fn without_drops_lines_and_keeps_the_rest() {
        let r = ring(&format!("# h\nk3 {}\nk2 {A}\n\nk1 {B}\n", hex::encode(C)));
        let smaller = r.without(&["k2".to_string(), "k1".to_string()]).unwrap();
        assert_eq!(text_of(&smaller), format!("# h\nk3 {}\n\n", hex::encode(C)));
        assert!(matches!(
            r.without(&["k3".to_string()]),
            Err(RingError::SigningKey(_))
        ));
    }

    #[test]
    fn errors_never_show_key_bytes() {
        let old = ring(&format!("kold {A}\n"));
        let err = old.with_new_key("kold", &C).err().unwrap().to_string();
        assert!(!err.contains(&hex::encode(C)) && !err.contains(A), "{err}");
    }
}

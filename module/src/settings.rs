//! Load arguments: `keyring PATH guard KEY [guard KEY ...] [signers a,b] [max-age-ms N]`.

use std::fmt;
use std::path::PathBuf;

#[cfg(any(test, fuzzing))]
pub mod properties;

/// The stream guarded when the load line names none.
pub const DEFAULT_GUARD: &[u8] = b"quantum:stream:reconcile.close";
/// Suffix of the stream that keeps refused entries of a guarded stream.
pub const QUARANTINE_SUFFIX: &[u8] = b":quarantine";
pub const DEFAULT_MAX_AGE_MS: i64 = 300_000;
pub const MIN_MAX_AGE_MS: i64 = 1;
/// A week: beyond this an "age limit" no longer protects anything.
pub const MAX_MAX_AGE_MS: i64 = 7 * 24 * 3600 * 1000;

/// What the load line configures. Fixed for the life of the module: none of it can be changed
/// at run time, because each would be a way around the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub keyring: PathBuf,
    /// Guarded stream names, without duplicates, in load-line order.
    pub guards: Vec<Vec<u8>>,
    /// ACL users allowed to sign; `None` lets every user the ACL allows.
    pub signers: Option<Vec<Vec<u8>>>,
    pub max_age_ms: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SettingsError {
    UnknownName(String),
    MissingValue(String),
    MissingKeyring,
    BadNumber {
        name: &'static str,
        value: String,
    },
    BadGuard(&'static str),
    BadSigners,
    /// In a cluster, a guarded name whose quarantine stream would fall in another slot.
    UntaggedInCluster(String),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownName(n) => write!(
                f,
                "unknown load argument '{n}' (known: keyring, guard, signers, max-age-ms)"
            ),
            Self::MissingValue(n) => write!(f, "load argument '{n}' needs a value"),
            Self::MissingKeyring => write!(f, "the load argument 'keyring PATH' is required"),
            Self::BadNumber { name, value } => write!(
                f,
                "load argument '{name}' must be a whole number from {MIN_MAX_AGE_MS} to \
                 {MAX_MAX_AGE_MS}, not '{value}'"
            ),
            Self::BadGuard(why) => write!(f, "load argument 'guard': {why}"),
            Self::UntaggedInCluster(name) => write!(
                f,
                "load argument 'guard': in a cluster, '{name}' needs a hash tag (such as \
                 'quantum:stream:{{reconcile}}.close') so that its ':quarantine' stream shares \
                 its slot"
            ),
            Self::BadSigners => {
                write!(
                    f,
                    "load argument 'signers' must be a comma list of ACL user names"
                )
            }
        }
    }
}

impl Settings {
    /// Parses the load arguments (name/value pairs).
    pub fn parse(args: &[&[u8]]) -> Result<Settings, SettingsError> {
        let mut keyring = None;
        let mut guards: Vec<Vec<u8>> = Vec::new();
        let mut signers = None;
        let mut max_age_ms = DEFAULT_MAX_AGE_MS;

        let mut rest = args;
        while let Some((name, tail)) = rest.split_first() {
            let shown = crate::ffi::printable(name);
            let lower = name.to_ascii_lowercase();
            let known = matches!(
                lower.as_slice(),
                b"keyring" | b"guard" | b"signers" | b"max-age-ms"
            );
            if !known {
                return Err(SettingsError::UnknownName(shown));
            }
            let Some((value, tail)) = tail.split_first() else {
                return Err(SettingsError::MissingValue(shown));
            };
            rest = tail;
            match lower.as_slice() {
                b"keyring" => {
                    use std::os::unix::ffi::OsStrExt;
                    keyring = Some(PathBuf::from(std::ffi::OsStr::from_bytes(value)));
                }
                b"guard" => {
                    if value.is_empty() {
                        return Err(SettingsError::BadGuard("the key name is empty"));
                    }
                    if value.ends_with(QUARANTINE_SUFFIX) {
                        return Err(SettingsError::BadGuard(
                            "a ':quarantine' stream is guarded with its parent; name the parent",
                        ));
                    }
                    if !guards.iter().any(|g| g == value) {
                        guards.push(value.to_vec());
                    }
                }
                b"signers" => signers = Some(parse_signers(value)?),
                _ => max_age_ms = parse_max_age(value)?,
            }
        }

        if guards.is_empty() {
            guards.push(DEFAULT_GUARD.to_vec());
        }
        Ok(Settings {
            keyring: keyring.ok_or(SettingsError::MissingKeyring)?,
            guards,
            signers,
            max_age_ms,
        })
    }

    /// Every name the filter protects: each guard and its quarantine stream.
    pub fn protected_names(&self) -> Vec<Vec<u8>> {
        let mut names = Vec::with_capacity(self.guards.len() * 2);
        for g in &self.guards {
            names.push(g.clone());
            names.push(quarantine_name(g));
        }
        names
    }

    /// In a cluster every guarded name needs a hash tag: `<name>:quarantine` then keeps the
    /// tag, and with it the slot, so that a group read can move a refused entry aside on the
    /// node that serves the stream.
    pub fn check_cluster(&self) -> Result<(), SettingsError> {
        match self.guards.iter().find(|g| hash_tag(g).is_none()) {
            Some(untagged) => Err(SettingsError::UntaggedInCluster(crate::ffi::printable(
                untagged,
            ))),
            None => Ok(()),
        }
    }

    pub fn is_guard(&self, key: &[u8]) -> bool {
        self.guards.iter().any(|g| g == key)
    }

    pub fn may_sign(&self, user: Option<&[u8]>) -> bool {
        match (&self.signers, user) {
            (None, _) => true,
            (Some(list), Some(user)) => list.iter().any(|s| s == user),
            (Some(_), None) => false,
        }
    }
}

/// The hash tag of a key name as Redis Cluster reads it: the bytes between the first `{` and
/// the first `}` after it, when there are any.
pub fn hash_tag(name: &[u8]) -> Option<&[u8]> {
    let open = name.iter().position(|&b| b == b'{')?;
    let rest = name.get(open + 1..)?;
    let close = rest.iter().position(|&b| b == b'}')?;
    rest.get(..close).filter(|tag| !tag.is_empty())
}

/// The quarantine stream of `key`.
pub fn quarantine_name(key: &[u8]) -> Vec<u8> {
    let mut name = key.to_vec();
    name.extend_from_slice(QUARANTINE_SUFFIX);
    name
}

fn parse_signers(value: &[u8]) -> Result<Vec<Vec<u8>>, SettingsError> {
    let names: Vec<Vec<u8>> = value
        .split(|&b| b == b',')
        .map(|n| n.trim_ascii().to_vec())
        .collect();
    if names
        .iter()
        .any(|n| n.is_empty() || n.iter().any(|b| b.is_ascii_whitespace()))
    {
        return Err(SettingsError::BadSigners);
    }
    Ok(names)
}

/// Parses a max-age value in milliseconds within the accepted range.
pub fn parse_max_age(value: &[u8]) -> Result<i64, SettingsError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| (MIN_MAX_AGE_MS..=MAX_MAX_AGE_MS).contains(n))
        .ok_or_else(|| SettingsError::BadNumber {
            name: "max-age-ms",
            value: crate::ffi::printable(value),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Settings, SettingsError> {
        let words: Vec<&[u8]> = line.split_whitespace().map(str::as_bytes).collect();
        Settings::parse(&words)
    }

    #[test]
    fn full_line() {
        let s =
            parse("keyring /k guard a guard b guard a signers engine,ops max-age-ms 1000").unwrap();
        assert_eq!(s.keyring, PathBuf::from("/k"));
        assert_eq!(s.guards, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(s.signers, Some(vec![b"engine".to_vec(), b"ops".to_vec()]));
        assert_eq!(s.max_age_ms, 1000);
        assert!(s.may_sign(Some(b"ops")));
        assert!(!s.may_sign(Some(b"default")));
        assert!(!s.may_sign(None));
        assert_eq!(s.protected_names().len(), 4);
    }

    #[test]
    fn defaults_guard_the_close_stream() {
        let s = parse("keyring /k").unwrap();
        assert_eq!(s.guards, vec![DEFAULT_GUARD.to_vec()]);
        assert_eq!(s.max_age_ms, DEFAULT_MAX_AGE_MS);
        assert!(s.may_sign(None));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse("guard a").unwrap_err(), SettingsError::MissingKeyring);
        assert_eq!(
            parse("keyring").unwrap_err(),
            SettingsError::MissingValue("keyring".into())
        );
        assert_eq!(
            parse("keyring /k secret abc").unwrap_err(),
            SettingsError::UnknownName("secret".into())
        );
        assert!(matches!(
            parse("keyring /k max-age-ms 0"),
            Err(SettingsError::BadNumber { .. })
        ));
        assert!(matches!(
            parse("keyring /k max-age-ms x"),
            Err(SettingsError::BadNumber { .. })
        ));
        assert_eq!(
            parse("keyring /k signers a,,b").unwrap_err(),
            SettingsError::BadSigners
        );
        assert!(matches!(
            parse("keyring /k guard s:quarantine"),
            Err(SettingsError::BadGuard(_))
        ));
    }

    #[test]
    fn a_cluster_needs_tagged_guards() {
        let tagged = parse("keyring /k guard quantum:stream:{rc}.close guard s:{BTCUSDT}").unwrap();
        assert_eq!(tagged.check_cluster(), Ok(()));
        let mixed = parse("keyring /k guard s:{BTCUSDT} guard plain").unwrap();
        assert_eq!(
            mixed.check_cluster(),
            Err(SettingsError::UntaggedInCluster("plain".into()))
        );
        // The default name has no tag, so a cluster must name its guards.
        assert!(parse("keyring /k").unwrap().check_cluster().is_err());
        assert_eq!(hash_tag(b"a{}b{c}"), None);
        assert_eq!(hash_tag(b"x{tag}y"), Some(&b"tag"[..]));
        assert_eq!(hash_tag(b"x{tag"), None);
    }
}

//! Properties the load-argument parser keeps, whatever the load line holds.
//!
//! The property tests below and the `load_args` fuzz target drive the same checks with their
//! own generators. Compiled for those two only; nothing here runs inside Redis.
//!
//! - Any argument list: the parser returns, and accepted settings keep their invariants: a
//!   keyring path, at least one guard, no guard twice, none empty or ending in `:quarantine`,
//!   an age limit in range, signer names that are non-empty and free of spaces.
//! - A valid load line written from its parts, names in any case and pairs in any order,
//!   parses back to those parts.

use std::os::unix::ffi::OsStrExt;

use super::*;

/// `Settings::parse` on any argument list: no panic, and accepted settings are sound.
pub fn load_accepts_consistently(args: &[&[u8]]) {
    let settings = match Settings::parse(args) {
        Ok(settings) => settings,
        Err(e) => {
            // Every refusal reaches the log, so it must also print.
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(args.len() % 2, 0, "an accepted line is made of pairs");
    let names: Vec<Vec<u8>> = args
        .chunks_exact(2)
        .map(|pair| pair[0].to_ascii_lowercase())
        .collect();
    let last_keyring = args
        .chunks_exact(2)
        .rfind(|pair| pair[0].eq_ignore_ascii_case(b"keyring"))
        .map(|pair| pair[1]);
    assert_eq!(Some(settings.keyring.as_os_str().as_bytes()), last_keyring);

    assert!(!settings.guards.is_empty());
    if !names.iter().any(|n| n == b"guard") {
        assert_eq!(settings.guards, vec![DEFAULT_GUARD.to_vec()]);
    }
    for (i, guard) in settings.guards.iter().enumerate() {
        assert!(!guard.is_empty() && !guard.ends_with(QUARANTINE_SUFFIX));
        assert!(!settings.guards[..i].contains(guard), "guard listed twice");
        assert!(settings.is_guard(guard));
    }
    assert_eq!(settings.protected_names().len(), 2 * settings.guards.len());

    assert!((MIN_MAX_AGE_MS..=MAX_MAX_AGE_MS).contains(&settings.max_age_ms));
    if let Some(signers) = &settings.signers {
        assert!(!signers.is_empty());
        for name in signers {
            assert!(!name.is_empty());
            assert!(!name.iter().any(|b| b.is_ascii_whitespace() || *b == b','));
            assert!(settings.may_sign(Some(name)));
        }
        assert!(
            !settings.may_sign(None),
            "a signers list refuses unknown users"
        );
    }
}

/// A valid load line, and choices of how to write it.
#[derive(Clone, Debug)]
pub struct LoadLine {
    pub keyring: Vec<u8>,
    /// Empty names and names ending in `:quarantine` are dropped; repeats are kept, since the
    /// parser must fold them.
    pub guards: Vec<Vec<u8>>,
    /// Whitespace and commas are removed from each name, and names left empty are dropped.
    pub signers: Option<Vec<Vec<u8>>>,
    /// Folded into the accepted range.
    pub max_age_ms: Option<i64>,
    /// One bit per name: upper or lower case.
    pub spelling: u64,
    /// Where the keyring, signers and max-age pairs go among the guards.
    pub order: u64,
    /// Puts spaces around the commas of the signers list, which the parser trims.
    pub spaced_signers: bool,
}

impl LoadLine {
    fn normalized(&self) -> LoadLine {
        let mut line = self.clone();
        line.guards
            .retain(|g| !g.is_empty() && !g.ends_with(QUARANTINE_SUFFIX));
        line.signers = line.signers.take().and_then(|names| {
            let names: Vec<Vec<u8>> = names
                .into_iter()
                .map(|n| {
                    n.into_iter()
                        .filter(|b| !b.is_ascii_whitespace() && *b != b',')
                        .collect::<Vec<u8>>()
                })
                .filter(|n| !n.is_empty())
                .collect();
            (!names.is_empty()).then_some(names)
        });
        let span = MAX_MAX_AGE_MS - MIN_MAX_AGE_MS + 1;
        line.max_age_ms = line.max_age_ms.map(|n| MIN_MAX_AGE_MS + n.rem_euclid(span));
        line
    }

    fn name(&self, word: &str, n: u32) -> Vec<u8> {
        if self.spelling.rotate_right(n) & 1 == 1 {
            word.to_ascii_uppercase().into_bytes()
        } else {
            word.as_bytes().to_vec()
        }
    }

    fn render(&self) -> Vec<Vec<u8>> {
        let mut pairs: Vec<[Vec<u8>; 2]> = self
            .guards
            .iter()
            .enumerate()
            .map(|(i, g)| [self.name("guard", 3 + i as u32), g.clone()])
            .collect();
        let mut others = vec![[self.name("keyring", 0), self.keyring.clone()]];
        if let Some(names) = &self.signers {
            let comma: &[u8] = if self.spaced_signers { b" , " } else { b"," };
            others.push([self.name("signers", 1), names.join(comma)]);
        }
        if let Some(ms) = self.max_age_ms {
            others.push([self.name("max-age-ms", 2), ms.to_string().into_bytes()]);
        }
        for (n, pair) in others.into_iter().enumerate() {
            let at = (self.order >> (8 * n)) as usize % (pairs.len() + 1);
            pairs.insert(at, pair);
        }
        pairs.into_iter().flatten().collect()
    }
}

/// A valid load line, written out, parses back to what it says.
pub fn load_round_trip(line: &LoadLine) {
    let line = line.normalized();
    let words = line.render();
    let args: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();

    let mut guards: Vec<Vec<u8>> = Vec::new();
    for g in &line.guards {
        if !guards.contains(g) {
            guards.push(g.clone());
        }
    }
    if guards.is_empty() {
        guards.push(DEFAULT_GUARD.to_vec());
    }
    let expected = Settings {
        keyring: PathBuf::from(std::ffi::OsStr::from_bytes(&line.keyring)),
        guards,
        signers: line.signers.clone(),
        max_age_ms: line.max_age_ms.unwrap_or(DEFAULT_MAX_AGE_MS),
    };
    assert_eq!(Settings::parse(&args), Ok(expected), "{words:?}");
    load_accepts_consistently(&args);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CASES: u32 = 4096;

    const WORDS: [&str; 9] = [
        "keyring",
        "GUARD",
        "signers",
        "max-age-ms",
        "Keyring",
        "0",
        "604800001",
        "a,,b",
        "s:quarantine",
    ];

    fn word() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::sample::select(&WORDS[..]).prop_map(|w| w.as_bytes().to_vec()),
            2 => any::<i64>().prop_map(|n| n.to_string().into_bytes()),
            2 => "[a-z:, ]{0,10}".prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 0..8),
        ]
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-z:/._ -]{0,16}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 0..16),
        ]
    }

    fn load_line() -> impl Strategy<Value = LoadLine> {
        let guards = prop::collection::vec(
            prop_oneof![bytes(), Just(b"quantum:stream:reconcile.close".to_vec())],
            0..5,
        );
        let signers = prop::option::of(prop::collection::vec(bytes(), 0..4));
        let choices = (any::<u64>(), any::<u64>(), any::<bool>());
        (
            bytes(),
            guards,
            signers,
            prop::option::of(any::<i64>()),
            choices,
        )
            .prop_map(
                |(keyring, guards, signers, max_age_ms, (spelling, order, spaced_signers))| {
                    LoadLine {
                        keyring,
                        guards,
                        signers,
                        max_age_ms,
                        spelling,
                        order,
                        spaced_signers,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn any_load_arguments_are_refused_or_sound(
            args in prop::collection::vec(word(), 0..10),
        ) {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            load_accepts_consistently(&args);
        }

        #[test]
        fn written_load_lines_parse_back(line in load_line()) {
            load_round_trip(&line);
        }
    }
}

//! Loading the module: every refusal stops redis-server with a log line that gives the reason
//! and never the key, and the forms the interface allows do load.

use reconcile_tests::server::module_path;
use reconcile_tests::{reply, Flaw, Key, KeyringFile, LoadFailure, ServerOptions, STREAM};

/// The lines the module wrote about a refused load, lowercased, with the module's own path
/// removed so that the file name cannot pass for a reason.
fn module_lines(failure: &LoadFailure) -> String {
    let path = module_path().display().to_string();
    failure
        .log
        .lines()
        .filter(|line| line.to_lowercase().contains("reconcile"))
        .map(|line| line.replace(&path, "<module>").to_lowercase() + "\n")
        .collect()
}

/// Checks that the load was refused, the module's log names one of `reasons`, and no secret
/// text appears anywhere in the log.
fn assert_refused(failure: &LoadFailure, reasons: &[&str], secrets: &[String]) {
    assert!(
        !failure.status.success(),
        "redis-server exited with {}",
        failure.status
    );
    let lines = module_lines(failure);
    assert!(
        reasons.iter().any(|reason| lines.contains(reason)),
        "no log line about the module mentions any of {reasons:?}; log:\n{}",
        failure.log
    );
    let log = failure.log.to_lowercase();
    for secret in secrets {
        assert!(
            !log.contains(&secret.to_lowercase()),
            "the log shows key material"
        );
    }
}

fn refuse_flaw(flaw: Flaw, reasons: &[&str]) {
    let good = Key::random("k1");
    let (keyring, secrets) = KeyringFile::flawed(flaw, &good);
    let failure = ServerOptions::guarded(&keyring).expect_load_failure();
    assert_refused(&failure, reasons, &secrets);
}

#[test]
fn missing_keyring_file_refuses_load() {
    let keyring = KeyringFile::missing();
    let failure = ServerOptions::guarded(&keyring).expect_load_failure();
    let reasons = [
        "no such file",
        "not found",
        "missing",
        "does not exist",
        "open",
    ];
    assert_refused(&failure, &reasons, &[]);
}

#[test]
fn world_readable_keyring_refuses_load() {
    refuse_flaw(
        Flaw::WorldReadable,
        &["mode", "permission", "644", "group", "other", "readable"],
    );
}

#[test]
fn group_readable_keyring_refuses_load() {
    refuse_flaw(
        Flaw::GroupReadable,
        &["mode", "permission", "640", "group", "other", "readable"],
    );
}

#[test]
fn malformed_keyring_line_refuses_load_without_echoing_it() {
    refuse_flaw(
        Flaw::MalformedLine,
        &["malformed", "line", "invalid", "parse", "expected"],
    );
}

#[test]
fn invalid_kid_characters_refuse_load() {
    refuse_flaw(Flaw::BadKid, &["kid", "malformed", "invalid", "line"]);
}

#[test]
fn duplicate_kid_refuses_load() {
    refuse_flaw(
        Flaw::DuplicateKid,
        &["duplicate", "twice", "already", "more than once"],
    );
}

#[test]
fn short_key_refuses_load() {
    refuse_flaw(
        Flaw::ShortKey,
        &["short", "32", "length", "at least", "too few"],
    );
}

#[test]
fn key_of_all_equal_bytes_refuses_load() {
    let reasons = [
        "equal", "same", "weak", "repeat", "constant", "uniform", "entropy",
    ];
    refuse_flaw(Flaw::AllEqualBytes, &reasons);
}

#[test]
fn public_default_secret_as_text_refuses_load() {
    refuse_flaw(
        Flaw::PublicDefaultText,
        &["default", "public", "known", "weak"],
    );
}

#[test]
fn public_default_secret_as_hex_bytes_refuses_load() {
    refuse_flaw(
        Flaw::PublicDefaultHex,
        &["default", "public", "known", "weak"],
    );
}

#[test]
fn keyring_without_any_key_refuses_load() {
    refuse_flaw(Flaw::NoKey, &["no key", "empty", "no keys", "at least one"]);
}

#[test]
fn unknown_load_argument_is_named_in_the_log() {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let options = ServerOptions::guarded(&keyring).load_arg("frobnicate-level", "3");
    let failure = options.expect_load_failure();
    assert_refused(&failure, &["frobnicate-level"], &key.leak_forms());
}

#[test]
fn missing_keyring_argument_refuses_load() {
    let failure = ServerOptions::with_module_args(&["guard", STREAM]).expect_load_failure();
    assert_refused(&failure, &["keyring"], &[]);
}

#[test]
fn load_argument_without_value_refuses_load() {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let path = keyring.path_str();
    let failure =
        ServerOptions::with_module_args(&["keyring", &path, "guard"]).expect_load_failure();
    assert_refused(&failure, &["guard", "value", "missing"], &key.leak_forms());
}

#[test]
fn non_numeric_max_age_refuses_load() {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let failure = ServerOptions::guarded(&keyring)
        .load_arg("max-age-ms", "soon")
        .expect_load_failure();
    assert_refused(
        &failure,
        &["max-age-ms", "number", "integer", "invalid"],
        &key.leak_forms(),
    );
}

#[test]
fn out_of_range_max_age_refuses_load() {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    for value in ["-5", "604800001"] {
        let options = ServerOptions::guarded(&keyring).load_arg("max-age-ms", value);
        let failure = options.expect_load_failure();
        let reasons = ["max-age-ms", "range", "number", "integer", "invalid"];
        assert_refused(&failure, &reasons, &key.leak_forms());
    }
}

#[test]
fn kid_longer_than_32_characters_refuses_load() {
    let key = Key::random("k1");
    let keyring = KeyringFile::missing();
    keyring.write_text(&format!("{} {}\n", "k".repeat(33), key.hex()), 0o600);
    let failure = ServerOptions::guarded(&keyring).expect_load_failure();
    assert_refused(
        &failure,
        &["kid", "malformed", "invalid", "line", "long"],
        &key.leak_forms(),
    );
}

#[test]
fn kid_of_32_characters_and_key_of_32_bytes_are_accepted() {
    let kid = "A-z_0.9".repeat(5)[..32].to_string();
    let key = Key::random(&kid);
    let keyring = KeyringFile::new(&[&key]);
    let server = ServerOptions::guarded(&keyring).start();
    let mut client = server.client();
    assert_eq!(client.info_reconcile().get("keyring_active_kid"), kid);
    let id = client.sign(STREAM, &[("qty", "1")]);
    assert_eq!(client.verify(STREAM, &id), "OK");
}

#[test]
fn comments_blank_lines_and_uppercase_hex_are_accepted() {
    let signer = Key::random("k1");
    let verifier = Key::random("k2");
    let keyring = KeyringFile::missing();
    let text = format!(
        "# signing key first\n\n{} {}\n   \n# older key\n{} {}\n",
        signer.kid,
        signer.hex().to_uppercase(),
        verifier.kid,
        verifier.hex()
    );
    keyring.write_text(&text, 0o600);
    let server = ServerOptions::guarded(&keyring).start();
    let mut client = server.client();

    let list = client.ok(&["RECONCILE.KEYRING", "LIST"]);
    let rows: Vec<Vec<String>> = match &list {
        redis::Value::Array(rows) => rows.iter().map(reply::texts).collect(),
        other => panic!("KEYRING LIST gave {other:?}"),
    };
    let roles: Vec<(&str, &str)> = rows
        .iter()
        .map(|row| (row[0].as_str(), row[1].as_str()))
        .collect();
    assert_eq!(roles, [("k1", "signing"), ("k2", "verifying")]);

    let id = client.sign(STREAM, &[("qty", "1")]);
    let entry = client.xrange(STREAM).pop().expect("signed entry");
    assert_eq!(entry.id, id);
    assert_eq!(entry.get("kid").as_deref(), Some("k1"));
    assert_eq!(client.verify(STREAM, &id), "OK");
}

#[test]
fn default_guard_applies_when_no_guard_is_given() {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let server = ServerOptions::with_module_args(&["keyring", &keyring.path_str()]).start();
    let mut client = server.client();

    let id = client.sign(STREAM, &[("qty", "1")]);
    assert_eq!(client.verify(STREAM, &id), "OK");
    let refused = client.err(&["XADD", STREAM, "*", "qty", "100"]);
    assert_eq!(refused.code, "GUARDED", "{refused}");
    assert_eq!(client.int(&["XLEN", STREAM]), 1);
}

#[test]
fn max_age_load_argument_sets_the_window() {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let server = ServerOptions::guarded(&keyring)
        .load_arg("max-age-ms", "1234")
        .start();
    let mut client = server.client();
    assert_eq!(client.info_reconcile().int("max_age_ms"), 1234);
    assert_eq!(client.config_get("reconcile.max-age-ms"), "1234");
}

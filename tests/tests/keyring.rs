//! Key rotation through RECONCILE.KEYRING RELOAD, failed reloads, and what KEYRING LIST shows.

use std::fs;

use reconcile_tests::canonical::mac_hex;
use reconcile_tests::reply::{self, Entry};
use reconcile_tests::{quarantine_of, Client, Flaw, Key, KeyringFile, ServerOptions, STREAM};
use redis::Value;

/// KEYRING LIST as rows of `[kid, role, fingerprint]`.
fn keyring_list(client: &mut Client) -> Vec<Vec<String>> {
    match client.ok(&["RECONCILE.KEYRING", "LIST"]) {
        Value::Array(rows) => rows.iter().map(reply::texts).collect(),
        other => panic!("KEYRING LIST gave {other:?}"),
    }
}

fn roles(rows: &[Vec<String>]) -> Vec<(String, String)> {
    rows.iter()
        .map(|row| (row[0].clone(), row[1].clone()))
        .collect()
}

fn pair(kid: &str, role: &str) -> (String, String) {
    (kid.to_string(), role.to_string())
}

fn kid_of(client: &mut Client, id: &str) -> String {
    let entries = client.xrange(STREAM);
    let entry: &Entry = entries
        .iter()
        .find(|entry| entry.id == id)
        .expect("entry present");
    entry.get("kid").expect("kid")
}

#[test]
fn rotation_signs_with_the_new_key_and_retires_the_old_one() {
    let old_key = Key::random("a");
    let new_key = Key::random("b");
    let keyring = KeyringFile::new(&[&old_key]);
    let server = ServerOptions::guarded(&keyring).start();
    let mut client = server.client();
    let old = client.sign(STREAM, &[("qty", "1")]);
    assert_eq!(kid_of(&mut client, &old), "a");
    let reloads = client.info_reconcile().int("keyring_reloads_total");

    // Step 1: the new key signs, the old one still verifies.
    keyring.write_keys(&[&new_key, &old_key]);
    assert_eq!(client.text(&["RECONCILE.KEYRING", "RELOAD"]), "OK");
    let info = client.info_reconcile();
    assert_eq!(info.get("keyring_active_kid"), "b");
    assert_eq!(info.int("keyring_keys"), 2);
    assert_eq!(info.int("keyring_reloads_total"), reloads + 1);
    assert_eq!(
        roles(&keyring_list(&mut client)),
        [pair("b", "signing"), pair("a", "verifying")]
    );

    let new = client.sign(STREAM, &[("qty", "2")]);
    assert_eq!(kid_of(&mut client, &new), "b");
    // The reloaded ring is prepared for the guarded stream like the first: the documented MAC.
    let entries = client.xrange(STREAM);
    let entry = entries.iter().find(|e| e.id == new).expect("new entry");
    let signed_ms = entry.get("signed_ms").expect("signed_ms");
    let expected = mac_hex(&new_key.bytes, "b", STREAM, &signed_ms, entry.user_fields());
    assert_eq!(entry.get("hmac"), Some(expected));
    assert_eq!(client.verify(STREAM, &old), "OK");
    assert_eq!(client.verify(STREAM, &new), "OK");
    let read = client.read_entries(&["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"], STREAM);
    assert_eq!(
        read.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        [old.clone(), new.clone()]
    );

    // Step 2: the old key leaves the ring; what it signed no longer verifies.
    keyring.write_keys(&[&new_key]);
    assert_eq!(client.text(&["RECONCILE.KEYRING", "RELOAD"]), "OK");
    assert_eq!(roles(&keyring_list(&mut client)), [pair("b", "signing")]);
    assert!(client
        .verify(STREAM, &old)
        .starts_with("REJECTED unknown_kid"));
    assert_eq!(client.verify(STREAM, &new), "OK");

    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    let args = [
        "RECONCILE.XREADVERIFIED",
        "GROUP",
        "g",
        "c1",
        "STREAMS",
        STREAM,
        ">",
    ];
    let read = client.read_entries(&args, STREAM);
    assert_eq!(read.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), [new]);
    let quarantined = client.xrange(&quarantine_of(STREAM));
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].get("reason").as_deref(), Some("unknown_kid"));
    assert_eq!(quarantined[0].get("orig_id"), Some(old));
}

#[test]
fn failed_reload_keeps_the_current_ring() {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let server = ServerOptions::guarded(&keyring).start();
    let mut client = server.client();
    let signed = client.sign(STREAM, &[("qty", "1")]);
    let list_before = keyring_list(&mut client);

    for (attempt, flaw) in Flaw::ALL.iter().enumerate() {
        let failures = client.info_reconcile().int("keyring_reload_failures_total");
        let replacement = Key::random("k2");
        let (text, mode, secrets) = flaw.render(&replacement);
        keyring.write_text(&text, mode);

        let refused = client.err(&["RECONCILE.KEYRING", "RELOAD"]);
        assert!(
            refused.text.starts_with("ERR keyring reload failed"),
            "{flaw:?}: {refused}"
        );
        for secret in &secrets {
            assert!(
                !refused.text.to_lowercase().contains(secret),
                "{flaw:?}: error shows the key"
            );
        }
        let info = client.info_reconcile();
        assert_eq!(
            info.int("keyring_reload_failures_total"),
            failures + 1,
            "{flaw:?}"
        );
        assert_eq!(info.get("keyring_active_kid"), "k1");
        assert_eq!(keyring_list(&mut client), list_before, "{flaw:?}");
        assert_eq!(client.verify(STREAM, &signed), "OK", "{flaw:?}");
        let id = client.sign(STREAM, &[("attempt", &attempt.to_string())]);
        assert_eq!(kid_of(&mut client, &id), "k1");
    }

    fs::remove_file(keyring.path()).expect("removing keyring");
    let refused = client.err(&["RECONCILE.KEYRING", "RELOAD"]);
    assert!(
        refused.text.starts_with("ERR keyring reload failed"),
        "missing file: {refused}"
    );
    assert_eq!(client.verify(STREAM, &signed), "OK");
}

#[test]
fn keyring_list_shows_fingerprints_and_never_key_material() {
    let signer = Key::random("signer.2025-q1");
    let verifier = Key::random("verifier_old");
    let keyring = KeyringFile::new(&[&signer, &verifier]);
    let server = ServerOptions::guarded(&keyring).start();
    let mut client = server.client();

    let list = client.ok(&["RECONCILE.KEYRING", "LIST"]);
    let flat = reply::flatten(&list).to_lowercase();
    let rows = keyring_list(&mut client);
    assert_eq!(
        roles(&rows),
        [
            pair("signer.2025-q1", "signing"),
            pair("verifier_old", "verifying")
        ]
    );

    for (row, key) in rows.iter().zip([&signer, &verifier]) {
        let fingerprint = &row[2];
        assert_eq!(fingerprint.len(), 16, "{row:?}");
        assert!(
            fingerprint.bytes().all(|b| b.is_ascii_hexdigit()),
            "{row:?}"
        );
        assert!(
            !key.hex().contains(&fingerprint.to_lowercase()),
            "the fingerprint of {} is a slice of the key itself",
            key.kid
        );
        assert!(
            !flat.contains(&key.hex()),
            "KEYRING LIST shows key {}",
            key.kid
        );
    }
    assert_ne!(rows[0][2], rows[1][2], "distinct keys share a fingerprint");

    // A fingerprint names a key, so it survives a reload that only changes the order.
    keyring.write_keys(&[&verifier, &signer]);
    client.ok(&["RECONCILE.KEYRING", "RELOAD"]);
    let reloaded = keyring_list(&mut client);
    assert_eq!(reloaded[0][2], rows[1][2]);
    assert_eq!(reloaded[1][2], rows[0][2]);
}

#[test]
fn keyring_command_refuses_unknown_subcommands() {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let server = ServerOptions::guarded(&keyring).start();
    let mut client = server.client();
    for call in [
        vec!["RECONCILE.KEYRING"],
        vec!["RECONCILE.KEYRING", "ROTATE"],
    ] {
        let refused = client.err(&call);
        assert!(refused.text.starts_with("ERR"), "{call:?}: {refused}");
    }
    assert_eq!(client.info_reconcile().get("keyring_active_kid"), "k1");
}

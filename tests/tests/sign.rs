//! RECONCILE.XADDSIGNED: the entry layout, the MAC, the XADD options and every refusal.

use reconcile_tests::canonical::mac_hex;
use reconcile_tests::forge::now_ms;
use reconcile_tests::plant::plant_with;
use reconcile_tests::reply::is_lower_hex;
use reconcile_tests::server::data_dir;
use reconcile_tests::{quarantine_of, Guarded, Key, KeyringFile, ServerOptions, STREAM};
use redis::Value;

#[test]
fn signed_entry_ends_with_kid_signed_ms_and_hmac() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let before = now_ms();
    let args = [
        "RECONCILE.XADDSIGNED",
        STREAM,
        "*",
        "symbol",
        "BTCUSDT",
        "qty",
        "0.007",
    ];
    let id = match client.ok(&args) {
        Value::BulkString(id) => String::from_utf8(id).expect("ASCII id"),
        other => panic!("the entry ID must come back as a bulk string, got {other:?}"),
    };
    let after = now_ms();

    let entries = client.xrange(STREAM);
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.id, id);
    assert_eq!(entry.names(), ["symbol", "qty", "kid", "signed_ms", "hmac"]);
    assert_eq!(entry.get("symbol").as_deref(), Some("BTCUSDT"));
    assert_eq!(entry.get("kid").as_deref(), Some("k1"));
    let signed_ms: u64 = entry
        .get("signed_ms")
        .expect("signed_ms")
        .parse()
        .expect("decimal");
    assert!(
        signed_ms + 2_000 >= before && signed_ms <= after + 2_000,
        "signed_ms {signed_ms} is not the server clock ({before}..{after})"
    );
    let hmac = entry.get("hmac").expect("hmac");
    assert!(
        is_lower_hex(&hmac, 64),
        "hmac {hmac:?} is not 64 lowercase hex"
    );
}

#[test]
fn hmac_is_the_documented_canonical_mac() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    client.sign(
        STREAM,
        &[("symbol", "ETHUSDT"), ("qty", "1.5"), ("side", "BUY")],
    );

    let entry = client.xrange(STREAM).pop().expect("entry");
    let signed_ms = entry.get("signed_ms").expect("signed_ms");
    let expected = mac_hex(
        &fixture.key.bytes,
        "k1",
        STREAM,
        &signed_ms,
        entry.user_fields(),
    );
    assert_eq!(entry.get("hmac").expect("hmac"), expected);
}

#[test]
fn every_guarded_stream_gets_the_documented_mac() {
    // The module hashes the fixed head of each guarded stream's entries once, at load; the
    // tags must be those of the documented encoding all the same, in every guarded stream.
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let other = "quantum:stream:reconcile.close.eth";
    let server = ServerOptions::guarded(&keyring)
        .load_arg("guard", other)
        .start();
    let mut client = server.client();
    for stream in [STREAM, other, STREAM] {
        client.sign(stream, &[("symbol", "ETHUSDT"), ("qty", "1.5")]);
        let entry = client.xrange(stream).pop().expect("entry");
        let signed_ms = entry.get("signed_ms").expect("signed_ms");
        let expected = mac_hex(&key.bytes, "k1", stream, &signed_ms, entry.user_fields());
        assert_eq!(entry.get("hmac").expect("hmac"), expected, "{stream}");
    }
}

#[test]
fn binary_and_empty_values_round_trip_and_verify() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let binary: &[u8] = &[0, 255, b'\r', b'\n', b' ', 0x80];
    let args: Vec<&[u8]> = vec![
        b"RECONCILE.XADDSIGNED",
        STREAM.as_bytes(),
        b"*",
        b"",
        b"",
        b"blob",
        binary,
    ];
    let id = client.text(&args);

    let entry = client.xrange(STREAM).pop().expect("entry");
    assert_eq!(
        entry.user_fields(),
        [(vec![], vec![]), (b"blob".to_vec(), binary.to_vec())]
    );
    let signed_ms = entry.get("signed_ms").expect("signed_ms");
    let expected = mac_hex(
        &fixture.key.bytes,
        "k1",
        STREAM,
        &signed_ms,
        entry.user_fields(),
    );
    assert_eq!(entry.get("hmac").expect("hmac"), expected);
    assert_eq!(client.verify(STREAM, &id), "OK");
}

#[test]
fn explicit_id_is_used_and_must_grow() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    assert_eq!(
        client.text(&["RECONCILE.XADDSIGNED", STREAM, "5-1", "qty", "1"]),
        "5-1"
    );

    for id in ["5-1", "4-9"] {
        let refused = client.err(&["RECONCILE.XADDSIGNED", STREAM, id, "qty", "2"]);
        assert!(refused.text.contains("equal or smaller"), "{id}: {refused}");
    }
    assert_eq!(client.int(&["XLEN", STREAM]), 1);
    assert_eq!(client.verify(STREAM, "5-1"), "OK");
}

#[test]
fn maxlen_exact_keeps_the_newest_entries() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let mut ids = Vec::new();
    for n in 0..10 {
        let seq = n.to_string();
        let args = [
            "RECONCILE.XADDSIGNED",
            STREAM,
            "MAXLEN",
            "=",
            "3",
            "*",
            "seq",
            &seq,
        ];
        ids.push(client.text(&args));
    }
    let kept: Vec<String> = client
        .xrange(STREAM)
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(kept, ids[7..]);
    for id in &kept {
        assert_eq!(client.verify(STREAM, id), "OK");
    }

    client.ok(&[
        "RECONCILE.XADDSIGNED",
        STREAM,
        "MAXLEN",
        "2",
        "*",
        "seq",
        "last",
    ]);
    assert_eq!(client.int(&["XLEN", STREAM]), 2);
}

#[test]
fn maxlen_approximate_trims_whole_nodes() {
    let fixture = Guarded::start_with(|options| options.config("stream-node-max-entries", &["2"]));
    let mut client = fixture.client();
    for n in 0..20 {
        let seq = n.to_string();
        let args = [
            "RECONCILE.XADDSIGNED",
            STREAM,
            "MAXLEN",
            "~",
            "4",
            "*",
            "seq",
            &seq,
        ];
        client.ok(&args);
    }
    let len = client.int(&["XLEN", STREAM]);
    assert!((4..20).contains(&len), "XLEN {len} after MAXLEN ~ 4");

    let args = [
        "RECONCILE.XADDSIGNED",
        STREAM,
        "MAXLEN",
        "~",
        "2",
        "LIMIT",
        "100",
        "*",
        "a",
        "b",
    ];
    client.ok(&args);
    assert!(client.int(&["XLEN", STREAM]) <= len + 1);
}

#[test]
fn minid_drops_older_entries() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    for ms in 1..=5 {
        let id = format!("{ms}-1");
        client.ok(&["RECONCILE.XADDSIGNED", STREAM, &id, "seq", &id]);
    }
    let id = client.text(&[
        "RECONCILE.XADDSIGNED",
        STREAM,
        "MINID",
        "=",
        "3",
        "6-1",
        "seq",
        "6",
    ]);
    assert_eq!(id, "6-1");
    let kept: Vec<String> = client
        .xrange(STREAM)
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(kept, ["3-1", "4-1", "5-1", "6-1"]);
}

#[test]
fn nomkstream_does_not_create_the_stream() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let reply = client.ok(&[
        "RECONCILE.XADDSIGNED",
        STREAM,
        "NOMKSTREAM",
        "*",
        "qty",
        "1",
    ]);
    assert_eq!(reply, Value::Nil);
    assert_eq!(client.int(&["EXISTS", STREAM]), 0);

    client.sign(STREAM, &[("qty", "1")]);
    let id = client.text(&[
        "RECONCILE.XADDSIGNED",
        STREAM,
        "NOMKSTREAM",
        "*",
        "qty",
        "2",
    ]);
    assert_eq!(client.verify(STREAM, &id), "OK");
    assert_eq!(client.int(&["XLEN", STREAM]), 2);
}

#[test]
fn reserved_field_names_are_refused() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    for reserved in ["kid", "signed_ms", "hmac"] {
        let refused = client.err(&[
            "RECONCILE.XADDSIGNED",
            STREAM,
            "*",
            "qty",
            "1",
            reserved,
            "x",
        ]);
        assert_eq!(refused.code, "ERR", "{refused}");
        let expected = format!("field '{reserved}' is reserved");
        assert!(refused.text.contains(&expected), "{refused}");
    }
    assert_eq!(client.int(&["EXISTS", STREAM]), 0);
}

#[test]
fn odd_field_counts_and_short_calls_are_refused() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let calls: [&[&str]; 4] = [
        &["RECONCILE.XADDSIGNED", STREAM, "*", "qty"],
        &["RECONCILE.XADDSIGNED", STREAM, "*", "qty", "1", "side"],
        &["RECONCILE.XADDSIGNED", STREAM, "*"],
        &["RECONCILE.XADDSIGNED", STREAM],
    ];
    for call in calls {
        let refused = client.err(call);
        assert!(
            refused.text.starts_with("ERR wrong number of arguments"),
            "{call:?}: {refused}"
        );
    }
    assert_eq!(client.int(&["EXISTS", STREAM]), 0);
}

#[test]
fn unguarded_key_cannot_be_signed_into() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let quarantine = quarantine_of(STREAM);
    for key in ["orders:elsewhere", quarantine.as_str()] {
        let refused = client.err(&["RECONCILE.XADDSIGNED", key, "*", "qty", "1"]);
        assert!(refused.text.starts_with("ERR"), "{key}: {refused}");
        assert!(
            refused.text.contains("not a guarded key"),
            "{key}: {refused}"
        );
        assert_eq!(client.int(&["EXISTS", key]), 0);
    }
}

#[test]
fn user_outside_signers_gets_noperm() {
    let fixture = Guarded::start_with(|options| options.load_arg("signers", "engine,ops"));
    let mut admin = fixture.client();
    for user in ["engine", "ops", "intruder"] {
        let password = format!(">pw-{user}");
        admin.ok(&["ACL", "SETUSER", user, "on", &password, "~*", "&*", "+@all"]);
    }

    let refused = admin.err(&["RECONCILE.XADDSIGNED", STREAM, "*", "qty", "1"]);
    assert_eq!(refused.code, "NOPERM", "default user: {refused}");

    let mut intruder = fixture.client();
    intruder.ok(&["AUTH", "intruder", "pw-intruder"]);
    let refused = intruder.err(&["RECONCILE.XADDSIGNED", STREAM, "*", "qty", "100"]);
    assert_eq!(refused.code, "NOPERM", "{refused}");
    assert!(
        refused.text.contains("user 'intruder' may not sign"),
        "{refused}"
    );
    assert_eq!(admin.int(&["EXISTS", STREAM]), 0);

    for user in ["engine", "ops"] {
        let mut signer = fixture.client();
        signer.ok(&["AUTH", user, &format!("pw-{user}")]);
        let id = signer.sign(STREAM, &[("qty", "1")]);
        assert_eq!(signer.verify(STREAM, &id), "OK");
    }
    assert_eq!(admin.int(&["XLEN", STREAM]), 2);
}

#[test]
fn guarded_key_holding_a_string_answers_wrongtype() {
    let other = "quantum:stream:other";
    let dir = data_dir();
    plant_with(&dir, |client| client.ok(&["SET", other, "not a stream"]));

    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let server = ServerOptions::guarded(&keyring)
        .load_arg("guard", other)
        .in_dir(&dir)
        .start();
    let mut client = server.client();
    let refused = client.err(&["RECONCILE.XADDSIGNED", other, "*", "qty", "1"]);
    assert_eq!(refused.code, "WRONGTYPE", "{refused}");
    assert_eq!(client.text(&["TYPE", other]), "string");
}

#[test]
fn every_guard_key_can_be_signed_into_and_is_guarded() {
    let second = "quantum:stream:second";
    let fixture = Guarded::start_with(|options| options.load_arg("guard", second));
    let mut client = fixture.client();
    for key in [STREAM, second] {
        let id = client.sign(key, &[("qty", "1")]);
        assert_eq!(client.verify(key, &id), "OK");
        let refused = client.err(&["XADD", key, "*", "qty", "100"]);
        assert_eq!(refused.code, "GUARDED", "{key}: {refused}");
        assert_eq!(client.int(&["XLEN", key]), 1);
    }
}

#[test]
fn signing_works_in_another_db() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    client.ok(&["SELECT", "3"]);
    let id = client.sign(STREAM, &[("qty", "1")]);
    assert_eq!(client.verify(STREAM, &id), "OK");
    assert_eq!(client.int(&["XLEN", STREAM]), 1);
    client.ok(&["SELECT", "0"]);
    assert_eq!(client.int(&["EXISTS", STREAM]), 0);
}

#[test]
fn signed_total_counts_each_signed_entry() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let before = client.info_reconcile().int("signed_total");
    client.sign_many(STREAM, 3);
    client.err(&["RECONCILE.XADDSIGNED", STREAM, "*", "kid", "x"]);
    assert_eq!(client.info_reconcile().int("signed_total"), before + 3);
}

//! RECONCILE.VERIFY and plain (group-less) RECONCILE.XREADVERIFIED reads.

use reconcile_tests::fixture::{genuine_entry, Forged};
use reconcile_tests::forge::fails_on_age_only;
use reconcile_tests::plant::plant_entries;
use reconcile_tests::reply::{self, is_lower_hex};
use reconcile_tests::server::data_dir;
use reconcile_tests::{quarantine_of, Guarded, Key, KeyringFile, ServerOptions, STREAM};
use redis::Value;

#[test]
fn verify_answers_ok_for_a_signed_entry() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let id = client.sign(STREAM, &[("qty", "1")]);
    assert_eq!(client.verify(STREAM, &id), "OK");
}

#[test]
fn verify_rejects_each_planted_forgery_with_its_reason() {
    let forged = Forged::start();
    let mut client = forged.client();
    for (id, forgery) in &forged.planted {
        let answer = client.verify(STREAM, id);
        if fails_on_age_only(forgery) {
            // VERIFY checks the MAC only; a correctly signed old entry passes it.
            assert_eq!(answer, "OK", "{}", forgery.name);
            continue;
        }
        let reason = answer
            .strip_prefix("REJECTED ")
            .map(|rest| rest.split(' ').next());
        let reason = reason.flatten().unwrap_or_default();
        assert!(
            forgery.reasons.contains(&reason),
            "{}: VERIFY answered {answer:?}, expected REJECTED {:?}",
            forgery.name,
            forgery.reasons
        );
    }
}

#[test]
fn verify_of_a_missing_entry_answers_no_such_entry() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    assert_eq!(client.verify(STREAM, "9-9"), "ERR no such entry");
    client.sign(STREAM, &[("qty", "1")]);
    assert_eq!(client.verify(STREAM, "9-9"), "ERR no such entry");
}

#[test]
fn plain_read_has_the_xread_reply_shape() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    client.sign_many(STREAM, 3);

    let verified = client.ok(&["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"]);
    let plain = client.ok(&["XREAD", "STREAMS", STREAM, "0"]);
    assert_eq!(verified, plain);
    let batches = reply::read_batches(&verified).expect("entries");
    for entry in &batches[0].entries {
        let names = entry.names();
        assert_eq!(
            names[names.len() - 3..],
            ["kid", "signed_ms", "hmac"],
            "{entry:?}"
        );
        let hmac = entry.get("hmac").expect("hmac");
        assert!(is_lower_hex(&hmac, 64), "hmac {hmac:?}");
    }

    let verified = client.ok(&[
        "RECONCILE.XREADVERIFIED",
        "COUNT",
        "2",
        "STREAMS",
        STREAM,
        "0",
    ]);
    let plain = client.ok(&["XREAD", "COUNT", "2", "STREAMS", STREAM, "0"]);
    assert_eq!(verified, plain);
    assert_eq!(
        client
            .read_entries(&["XREAD", "COUNT", "2", "STREAMS", STREAM, "0"], STREAM)
            .len(),
        2
    );
}

#[test]
fn plain_read_past_the_last_entry_is_nil() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let ids = client.sign_many(STREAM, 2);
    let reply = client.ok(&["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, &ids[1]]);
    assert_eq!(reply, Value::Nil);
    let reply = client.ok(&["RECONCILE.XREADVERIFIED", "STREAMS", "no:such:stream", "0"]);
    assert_eq!(reply, Value::Nil);
}

#[test]
fn plain_read_skips_forgeries_without_quarantining_them() {
    let forged = Forged::start();
    let mut client = forged.client();
    let good = client.sign_many(STREAM, 2);

    let entries = client.read_entries(&["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"], STREAM);
    let ids: Vec<String> = entries.iter().map(|entry| entry.id.clone()).collect();
    assert_eq!(ids, good, "only the signed entries come back");
    assert_eq!(client.int(&["EXISTS", &quarantine_of(STREAM)]), 0);
    let total = (forged.planted.len() + good.len()) as i64;
    assert_eq!(
        client.int(&["XLEN", STREAM]),
        total,
        "a plain read removes nothing"
    );
}

#[test]
fn forgeries_ahead_do_not_stall_a_count_one_plain_reader() {
    let forged = Forged::start();
    let mut client = forged.client();
    let good = client.sign_many(STREAM, 2);

    let mut last = "0".to_string();
    for expected in &good {
        let args = [
            "RECONCILE.XREADVERIFIED",
            "COUNT",
            "1",
            "STREAMS",
            STREAM,
            &last,
        ];
        let entries = client.read_entries(&args, STREAM);
        let ids: Vec<&str> = entries.iter().map(|entry| entry.id.as_str()).collect();
        assert_eq!(ids, [expected.as_str()], "reading COUNT 1 after {last}");
        last = expected.clone();
    }
}

#[test]
fn plain_read_serves_several_streams_at_once() {
    let second = "quantum:stream:second";
    let fixture = Guarded::start_with(|options| options.load_arg("guard", second));
    let mut client = fixture.client();
    let first_id = client.sign(STREAM, &[("qty", "1")]);
    let second_id = client.sign(second, &[("qty", "2")]);

    let args = [
        "RECONCILE.XREADVERIFIED",
        "STREAMS",
        STREAM,
        second,
        "0",
        "0",
    ];
    let batches = client.read(&args).expect("entries");
    let got: Vec<(String, Vec<String>)> = batches
        .into_iter()
        .map(|batch| {
            (
                batch.key,
                batch.entries.into_iter().map(|entry| entry.id).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (STREAM.to_string(), vec![first_id]),
            (second.to_string(), vec![second_id])
        ]
    );
}

#[test]
fn entry_copied_into_another_guarded_stream_fails_its_mac() {
    let second = "quantum:stream:second";
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let genuine = genuine_entry(&keyring, STREAM);

    let dir = data_dir();
    let copied = plant_entries(&dir, second, std::slice::from_ref(&genuine.fields));
    let replayed = plant_entries(&dir, STREAM, std::slice::from_ref(&genuine.fields));
    let server = ServerOptions::guarded(&keyring)
        .load_arg("guard", second)
        .in_dir(&dir)
        .start();
    let mut client = server.client();

    // The same bytes verify under the stream they were signed for, and not under another.
    assert_eq!(client.verify(STREAM, &replayed[0]), "OK");
    let answer = client.verify(second, &copied[0]);
    assert!(answer.starts_with("REJECTED bad_mac"), "{answer}");
    let read = client.ok(&["RECONCILE.XREADVERIFIED", "STREAMS", second, "0"]);
    assert_eq!(read, Value::Nil);
}

#[test]
fn plain_read_hides_an_entry_older_than_max_age() {
    let fixture = Guarded::start_with(|options| options.load_arg("max-age-ms", "100"));
    let mut client = fixture.client();
    let id = client.sign(STREAM, &[("qty", "1")]);
    std::thread::sleep(std::time::Duration::from_millis(400));

    let reply = client.ok(&["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"]);
    assert_eq!(reply, Value::Nil, "a stale entry must not be delivered");
    assert_eq!(
        client.verify(STREAM, &id),
        "OK",
        "VERIFY does not check age"
    );
}

//! The key never leaves the keyring file: no reply, log, slow log or MONITOR stream shows it.

use std::time::Duration;

use reconcile_tests::monitor::Monitor;
use reconcile_tests::reply;
use reconcile_tests::{Client, Key, KeyringFile, ServerOptions, STREAM};

/// Fails naming `place` if any form of either key appears in `text`.
fn assert_no_key(place: &str, text: &str, keys: &[&Key]) {
    for key in keys {
        for form in key.leak_forms() {
            assert!(!text.contains(&form), "{place} shows key {}", key.kid);
        }
    }
}

/// Exercises every module command once.
fn exercise(client: &mut Client) {
    let id = client.sign(STREAM, &[("symbol", "BTCUSDT"), ("qty", "0.007")]);
    client.verify(STREAM, &id);
    client.ok(&["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"]);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    client.ok(&[
        "RECONCILE.XREADVERIFIED",
        "GROUP",
        "g",
        "c1",
        "STREAMS",
        STREAM,
        ">",
    ]);
    client.ok(&["RECONCILE.KEYRING", "LIST"]);
    client.ok(&["RECONCILE.KEYRING", "RELOAD"]);
}

#[test]
fn key_hex_never_appears_in_any_output() {
    let signer = Key::random("k1");
    let verifier = Key::random("k0");
    let keys = [&signer, &verifier];
    let keyring = KeyringFile::new(&keys);
    let options = ServerOptions::guarded(&keyring).config("slowlog-log-slower-than", &["0"]);
    let server = options.config("slowlog-max-len", &["10000"]).start();
    let mut client = server.client();

    let monitor = Monitor::start(server.port());
    exercise(&mut client);
    client.ok(&["PING"]);
    let watched = monitor.finish(Duration::from_millis(300));
    assert!(
        watched.contains("RECONCILE.XADDSIGNED"),
        "MONITOR saw nothing: {watched}"
    );
    assert_no_key("MONITOR", &watched, &keys);

    let outputs: [(&str, &[&str]); 7] = [
        ("MODULE LIST", &["MODULE", "LIST"]),
        ("CONFIG GET *", &["CONFIG", "GET", "*"]),
        ("INFO everything", &["INFO", "everything"]),
        ("SLOWLOG GET", &["SLOWLOG", "GET", "10000"]),
        ("CLIENT LIST", &["CLIENT", "LIST"]),
        (
            "COMMAND INFO",
            &[
                "COMMAND",
                "INFO",
                "RECONCILE.XADDSIGNED",
                "RECONCILE.KEYRING",
            ],
        ),
        ("ACL LOG", &["ACL", "LOG"]),
    ];
    for (place, args) in outputs {
        let text = reply::flatten(&client.ok(args));
        assert_no_key(place, &text, &keys);
    }
    let slowlog = reply::flatten(&client.ok(&["SLOWLOG", "GET", "10000"]));
    assert!(
        slowlog.contains("RECONCILE.XADDSIGNED"),
        "the slow log recorded nothing"
    );
    assert_no_key("the log file", &server.log(), &keys);
}

#[test]
fn debug_form_of_a_key_is_redacted() {
    // The harness's own Debug output must not leak keys into test failure messages either.
    let key = Key::random("k1");
    let shown = format!("{key:?}");
    assert!(shown.contains("REDACTED"));
    assert_no_key("Key's Debug", &shown, &[&key]);
}

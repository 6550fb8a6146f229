//! INFO reconcile, CONFIG reconcile.max-age-ms, and the keys each command declares.

use std::thread;
use std::time::Duration;

use reconcile_tests::reply;
use reconcile_tests::{quarantine_of, Guarded, STREAM};
use redis::Value;

const FIELDS: [&str; 16] = [
    "signed_total",
    "signed_unpropagated_total",
    "verified_total",
    "rejected_total",
    "rejected_bad_mac",
    "rejected_unknown_kid",
    "rejected_missing_mac",
    "rejected_stale",
    "rejected_malformed",
    "guard_denied_total",
    "quarantined_total",
    "keyring_active_kid",
    "keyring_keys",
    "keyring_reloads_total",
    "keyring_reload_failures_total",
    "max_age_ms",
];

#[test]
fn info_reconcile_lists_every_field_with_its_starting_value() {
    let fixture = Guarded::start();
    let info = fixture.client().info_reconcile();
    for field in FIELDS {
        assert!(
            info.has(field),
            "INFO lacks reconcile_{field}:\n{}",
            info.raw()
        );
    }
    for counter in FIELDS
        .iter()
        .filter(|name| name.ends_with("_total") || name.starts_with("rej"))
    {
        assert_eq!(info.int(counter), 0, "{counter}");
    }
    assert_eq!(info.get("keyring_active_kid"), "k1");
    assert_eq!(info.int("keyring_keys"), 1);
    assert_eq!(info.int("max_age_ms"), 300_000);
}

#[test]
fn config_max_age_round_trips_and_shows_in_info() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    assert_eq!(client.config_get("reconcile.max-age-ms"), "300000");
    client.ok(&["CONFIG", "SET", "reconcile.max-age-ms", "5000"]);
    assert_eq!(client.config_get("reconcile.max-age-ms"), "5000");
    assert_eq!(client.info_reconcile().int("max_age_ms"), 5000);
    client.ok(&["CONFIG", "SET", "reconcile.max-age-ms", "604800000"]);
    assert_eq!(client.config_get("reconcile.max-age-ms"), "604800000");
}

#[test]
fn config_max_age_refuses_out_of_range_values() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    for bad in ["0", "-1", "604800001", "soon", ""] {
        client.err(&["CONFIG", "SET", "reconcile.max-age-ms", bad]);
        assert_eq!(
            client.config_get("reconcile.max-age-ms"),
            "300000",
            "after {bad:?}"
        );
    }
}

#[test]
fn shrinking_max_age_makes_a_fresh_entry_stale_for_new_reads() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let id = client.sign(STREAM, &[("qty", "1")]);
    let read = ["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"];
    assert_eq!(
        client.read_entries(&read, STREAM).len(),
        1,
        "fresh under the default window"
    );

    client.ok(&["CONFIG", "SET", "reconcile.max-age-ms", "1"]);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(client.ok(&read), Value::Nil);

    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    let stale_before = client.info_reconcile().int("rejected_stale");
    let group = [
        "RECONCILE.XREADVERIFIED",
        "GROUP",
        "g",
        "c1",
        "STREAMS",
        STREAM,
        ">",
    ];
    assert_eq!(client.read_entries(&group, STREAM).len(), 0);
    let quarantined = client.xrange(&quarantine_of(STREAM));
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].get("reason").as_deref(), Some("stale"));
    assert_eq!(quarantined[0].get("orig_id"), Some(id));
    assert_eq!(
        client.info_reconcile().int("rejected_stale"),
        stale_before + 1
    );
}

#[test]
fn command_getkeys_reports_the_declared_keys() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["RECONCILE.XADDSIGNED", STREAM, "*", "qty", "1"],
            &[STREAM],
        ),
        (
            &[
                "RECONCILE.XADDSIGNED",
                STREAM,
                "NOMKSTREAM",
                "MAXLEN",
                "~",
                "9",
                "*",
                "a",
                "b",
            ],
            &[STREAM],
        ),
        (
            &["RECONCILE.XREADVERIFIED", "STREAMS", "a", "b", "0", "0"],
            &["a", "b"],
        ),
        (
            &[
                "RECONCILE.XREADVERIFIED",
                "COUNT",
                "5",
                "BLOCK",
                "10",
                "STREAMS",
                "a",
                "0",
            ],
            &["a"],
        ),
        (
            &[
                "RECONCILE.XREADVERIFIED",
                "GROUP",
                "g",
                "c",
                "NOACK",
                "STREAMS",
                "a",
                "b",
                ">",
                ">",
            ],
            &["a", "b"],
        ),
        (&["RECONCILE.VERIFY", STREAM, "1-1"], &[STREAM]),
    ];
    for (call, keys) in cases {
        let mut args = vec!["COMMAND", "GETKEYS"];
        args.extend_from_slice(call);
        let got = reply::texts(&client.ok(&args));
        assert_eq!(got, keys, "{call:?}");
    }
}

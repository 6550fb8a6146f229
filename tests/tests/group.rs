//! RECONCILE.XREADVERIFIED with GROUP: delivery, acknowledgement and quarantine of failures.

use std::collections::BTreeMap;
use std::thread;
use std::time::Duration;

use reconcile_tests::fixture::Forged;
use reconcile_tests::forge::fails_on_age_only;
use reconcile_tests::reply::{self, Entry};
use reconcile_tests::{quarantine_of, Client, Guarded, STREAM};
use redis::Value;

fn group_read(client: &mut Client, group: &str, consumer: &str, extra: &[&str], id: &str) -> Value {
    let mut args = vec!["RECONCILE.XREADVERIFIED", "GROUP", group, consumer];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["STREAMS", STREAM, id]);
    client.ok(&args)
}

fn ids_of(value: &Value) -> Vec<String> {
    let batches = reply::read_batches(value).unwrap_or_default();
    batches
        .into_iter()
        .flat_map(|batch| batch.entries)
        .map(|entry| entry.id)
        .collect()
}

fn pending_ids(client: &mut Client, group: &str) -> Vec<String> {
    let value = client.ok(&["XPENDING", STREAM, group, "-", "+", "1000"]);
    let Value::Array(rows) = value else {
        panic!("XPENDING gave {value:?}");
    };
    rows.iter()
        .map(|row| reply::texts(row)[0].clone())
        .collect()
}

#[test]
fn group_read_has_the_xreadgroup_reply_shape() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    client.sign_many(STREAM, 3);
    client.ok(&["XGROUP", "CREATE", STREAM, "plain", "0"]);
    client.ok(&["XGROUP", "CREATE", STREAM, "verified", "0"]);

    let plain = client.ok(&["XREADGROUP", "GROUP", "plain", "c1", "STREAMS", STREAM, ">"]);
    let verified = group_read(&mut client, "verified", "c1", &[], ">");
    assert_eq!(verified, plain);
    assert_eq!(ids_of(&verified).len(), 3);

    let plain = client.ok(&["XREADGROUP", "GROUP", "plain", "c1", "STREAMS", STREAM, "0"]);
    let verified = group_read(&mut client, "verified", "c1", &[], "0");
    assert_eq!(verified, plain, "history reads match too");
}

#[test]
fn group_read_over_resp3_has_the_xreadgroup_reply_shape() {
    let fixture = Guarded::start();
    let mut client = Client::connect_resp3(fixture.server.port());
    client.sign_many(STREAM, 3);
    client.ok(&["XGROUP", "CREATE", STREAM, "plain", "0"]);
    client.ok(&["XGROUP", "CREATE", STREAM, "verified", "0"]);

    for id in [">", "0"] {
        let plain = client.ok(&["XREADGROUP", "GROUP", "plain", "c1", "STREAMS", STREAM, id]);
        let verified = group_read(&mut client, "verified", "c1", &[], id);
        assert!(matches!(verified, Value::Map(_)), "{verified:?}");
        assert_eq!(verified, plain, "read from {id}");
    }
}

#[test]
fn delivered_entries_stay_pending_until_acked() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let ids = client.sign_many(STREAM, 2);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);

    let delivered = ids_of(&group_read(&mut client, "g", "c1", &[], ">"));
    assert_eq!(delivered, ids);
    assert_eq!(pending_ids(&mut client, "g"), ids);
    assert_eq!(client.int(&["XACK", STREAM, "g", &ids[0]]), 1);
    assert_eq!(pending_ids(&mut client, "g"), ids[1..]);
    assert_eq!(group_read(&mut client, "g", "c1", &[], ">"), Value::Nil);
}

#[test]
fn noack_read_leaves_nothing_pending() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let ids = client.sign_many(STREAM, 2);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    assert_eq!(
        ids_of(&group_read(&mut client, "g", "c1", &["NOACK"], ">")),
        ids
    );
    assert!(pending_ids(&mut client, "g").is_empty());
}

#[test]
fn count_limits_a_group_read_and_consumers_share_the_stream() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let ids = client.sign_many(STREAM, 4);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    let first = ids_of(&group_read(&mut client, "g", "alice", &["COUNT", "3"], ">"));
    let second = ids_of(&group_read(&mut client, "g", "bob", &["COUNT", "3"], ">"));
    assert_eq!(first, ids[..3]);
    assert_eq!(second, ids[3..]);
}

#[test]
fn forged_entries_are_acked_quarantined_and_counted() {
    let forged = Forged::start();
    let mut client = forged.client();
    let good = client.sign_many(STREAM, 2);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    let before = client.info_reconcile();

    let delivered = ids_of(&group_read(&mut client, "g", "worker-1", &[], ">"));
    assert_eq!(delivered, good, "only signed entries are delivered");
    assert_eq!(
        pending_ids(&mut client, "g"),
        good,
        "failing entries are acked"
    );

    let quarantined = client.xrange(&quarantine_of(STREAM));
    assert_eq!(quarantined.len(), forged.planted.len());
    let mut reasons: BTreeMap<String, i64> = BTreeMap::new();
    for (copy, (id, forgery)) in quarantined.iter().zip(&forged.planted) {
        let reason = check_quarantine_copy(copy, id, &forgery.fields, "g", "worker-1");
        assert!(
            forgery.reasons.contains(&reason.as_str()),
            "{}: quarantined as {reason}, expected one of {:?}",
            forgery.name,
            forgery.reasons
        );
        *reasons.entry(reason).or_default() += 1;
    }

    let after = client.info_reconcile();
    let delta = |name: &str| after.int(name) - before.int(name);
    for reason in [
        "bad_mac",
        "unknown_kid",
        "missing_mac",
        "stale",
        "malformed",
    ] {
        let expected = reasons.get(reason).copied().unwrap_or(0);
        assert_eq!(
            delta(&format!("rejected_{reason}")),
            expected,
            "rejected_{reason}"
        );
    }
    let count = forged.planted.len() as i64;
    assert_eq!(delta("rejected_total"), count);
    assert_eq!(delta("quarantined_total"), count);
    assert!(
        delta("verified_total") >= 2,
        "verified_total did not count the delivered entries"
    );
}

/// Checks one quarantine entry against the planted original; returns its reason.
fn check_quarantine_copy(
    copy: &Entry,
    orig_id: &str,
    orig_fields: &[(Vec<u8>, Vec<u8>)],
    group: &str,
    consumer: &str,
) -> String {
    let names = copy.names();
    assert_eq!(
        names[..4],
        ["reason", "orig_id", "group", "consumer"],
        "{copy:?}"
    );
    assert_eq!(copy.get("orig_id").as_deref(), Some(orig_id));
    assert_eq!(copy.get("group").as_deref(), Some(group));
    assert_eq!(copy.get("consumer").as_deref(), Some(consumer));
    assert_eq!(
        copy.fields[4..],
        *orig_fields,
        "the original pairs are copied verbatim"
    );
    copy.get("reason").expect("reason")
}

#[test]
fn forged_entries_ahead_do_not_stall_a_count_one_group_reader() {
    let forged = Forged::start();
    let mut client = forged.client();
    let good = client.sign_many(STREAM, 2);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);

    let mut delivered = Vec::new();
    let calls = forged.planted.len() + good.len() + 2;
    for _ in 0..calls {
        let reply = group_read(&mut client, "g", "c1", &["COUNT", "1"], ">");
        if reply == Value::Nil {
            break;
        }
        delivered.extend(ids_of(&reply));
    }
    // A nil reply tells a consumer there is nothing to do, so it must not come while signed
    // entries are still waiting behind forged ones.
    assert_eq!(delivered, good);
}

#[test]
fn history_read_checks_the_mac_but_not_the_age() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let id = client.sign(STREAM, &[("qty", "1")]);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    let first = group_read(&mut client, "g", "c1", &[], ">");
    assert_eq!(ids_of(&first), [id.as_str()]);

    client.ok(&["CONFIG", "SET", "reconcile.max-age-ms", "1"]);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(ids_of(&group_read(&mut client, "g", "c1", &[], "0")), [id]);
    let plain = client.ok(&["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"]);
    assert_eq!(
        plain,
        Value::Nil,
        "a new delivery of the same entry is stale"
    );
}

#[test]
fn history_read_withholds_forged_entries_delivered_by_plain_xreadgroup() {
    let forged = Forged::start();
    let mut client = forged.client();
    let good = client.sign(STREAM, &[("qty", "1")]);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    // An attacker (or a careless consumer) moves everything into the PEL with plain XREADGROUP.
    client.ok(&["XREADGROUP", "GROUP", "g", "c1", "STREAMS", STREAM, ">"]);

    let history = ids_of(&group_read(&mut client, "g", "c1", &[], "0"));
    let unverifiable: Vec<String> = forged
        .planted
        .iter()
        .filter(|(_, forgery)| !fails_on_age_only(forgery))
        .map(|(id, _)| id.clone())
        .collect();
    for id in &unverifiable {
        assert!(
            !history.contains(id),
            "history read returned forged entry {id}"
        );
    }
    assert!(history.contains(&good));
    let pending = pending_ids(&mut client, "g");
    for id in &unverifiable {
        assert!(!pending.contains(id), "forged entry {id} is still pending");
    }
}

#[test]
fn missing_group_answers_nogroup() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    client.sign(STREAM, &[("qty", "1")]);
    let refused = client.err(&[
        "RECONCILE.XREADVERIFIED",
        "GROUP",
        "nobody",
        "c1",
        "STREAMS",
        STREAM,
        ">",
    ]);
    assert_eq!(refused.code, "NOGROUP", "{refused}");
}

#[test]
fn malformed_read_calls_answer_errors() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    client.sign(STREAM, &[("qty", "1")]);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    let calls: [&[&str]; 6] = [
        &["RECONCILE.XREADVERIFIED"],
        &["RECONCILE.XREADVERIFIED", "STREAMS", STREAM],
        &["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "other", "0"],
        &[
            "RECONCILE.XREADVERIFIED",
            "COUNT",
            "many",
            "STREAMS",
            STREAM,
            "0",
        ],
        &[
            "RECONCILE.XREADVERIFIED",
            "GROUP",
            "g",
            "STREAMS",
            STREAM,
            ">",
        ],
        &[
            "RECONCILE.XREADVERIFIED",
            "BLOCK",
            "soon",
            "STREAMS",
            STREAM,
            "0",
        ],
    ];
    for call in calls {
        let refused = client.err(call);
        assert!(refused.text.starts_with("ERR"), "{call:?}: {refused}");
    }
    assert_eq!(pending_ids(&mut client, "g"), Vec::<String>::new());
}

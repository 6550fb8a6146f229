//! Replication: a replica running the module applies signed entries byte for byte, and the
//! internal command that carries them cannot be called by an ordinary client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use reconcile_tests::forge::now_ms;
use reconcile_tests::reply;
use reconcile_tests::{
    quarantine_of, Client, Key, KeyringFile, RedisServer, ServerOptions, STREAM,
};

const PUBLIC_COMMANDS: [&str; 4] = [
    "reconcile.xaddsigned",
    "reconcile.xreadverified",
    "reconcile.verify",
    "reconcile.keyring",
];

struct Pair {
    _keyring: KeyringFile,
    master: RedisServer,
    replica: RedisServer,
}

/// A master and a replica, both with the module and the same keyring, linked and in sync.
fn pair() -> Pair {
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    // Without this the master waits five seconds for more replicas before a diskless sync.
    let master = ServerOptions::guarded(&keyring).config("repl-diskless-sync-delay", &["0"]);
    let master = master.start();
    let replica = ServerOptions::guarded(&keyring).replica_of(&master).start();
    wait_until(&mut replica.client(), "replica link up", |client| {
        client
            .text(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    Pair {
        _keyring: keyring,
        master,
        replica,
    }
}

fn wait_until(client: &mut Client, what: &str, mut done: impl FnMut(&mut Client) -> bool) {
    let until = Instant::now() + Duration::from_secs(15);
    while !done(client) {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the replica has acknowledged everything written on the master so far.
fn sync(master: &mut Client, replica: &mut Client) {
    assert_eq!(
        master.int(&["WAIT", "1", "5000"]),
        1,
        "the replica did not acknowledge"
    );
    let expected = master.ok(&["XRANGE", STREAM, "-", "+"]);
    wait_until(replica, "replica catching up", |client| {
        client.ok(&["XRANGE", STREAM, "-", "+"]) == expected
    });
}

#[test]
fn signed_entries_reach_the_replica_intact_and_verify_there() {
    let pair = pair();
    let mut master = pair.master.client();
    let mut replica = pair.replica.client();
    let ids = master.sign_many(STREAM, 3);
    sync(&mut master, &mut replica);

    assert_eq!(replica.xrange(STREAM), master.xrange(STREAM));
    for id in &ids {
        assert_eq!(replica.verify(STREAM, id), "OK");
    }
}

#[test]
fn plain_verified_read_works_on_a_replica() {
    // A plain read writes nothing, so like XREAD it must be served by a read-only replica.
    let pair = pair();
    let mut master = pair.master.client();
    let mut replica = pair.replica.client();
    let ids = master.sign_many(STREAM, 2);
    sync(&mut master, &mut replica);

    let args = ["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"];
    let read = replica.read_entries(&args, STREAM);
    assert_eq!(
        read.into_iter().map(|entry| entry.id).collect::<Vec<_>>(),
        ids
    );
}

#[test]
fn group_read_on_a_replica_is_refused_and_changes_nothing() {
    // A GROUP read moves consumer-group state; on a replica that would diverge from the master.
    let pair = pair();
    let mut master = pair.master.client();
    let mut replica = pair.replica.client();
    master.ok(&["XGROUP", "CREATE", STREAM, "g", "0", "MKSTREAM"]);
    master.sign_many(STREAM, 2);
    sync(&mut master, &mut replica);

    let args = [
        "RECONCILE.XREADVERIFIED",
        "GROUP",
        "g",
        "c",
        "STREAMS",
        STREAM,
        ">",
    ];
    let refused = replica.err(&args);
    assert_eq!(refused.code, "READONLY", "{refused}");
    let pending = replica.ok(&["XPENDING", STREAM, "g"]);
    assert_eq!(
        reply::texts(&pending).first().map(String::as_str),
        Some("0")
    );
}

#[test]
fn forgery_on_the_master_is_refused_and_never_reaches_the_replica() {
    let pair = pair();
    let mut master = pair.master.client();
    let mut replica = pair.replica.client();
    master.sign(STREAM, &[("qty", "1")]);
    let refused = master.err(&["XADD", STREAM, "*", "qty", "100"]);
    assert_eq!(refused.code, "GUARDED", "{refused}");
    let last = master.sign(STREAM, &[("qty", "2")]);
    sync(&mut master, &mut replica);

    assert_eq!(replica.int(&["XLEN", STREAM]), 2);
    assert_eq!(replica.verify(STREAM, &last), "OK");
    assert_eq!(replica.xrange(STREAM), master.xrange(STREAM));
}

#[test]
fn internal_replication_command_is_refused_from_clients() {
    let pair = pair();
    let mut master = pair.master.client();
    master.sign(STREAM, &[("qty", "1")]);
    let listed = reply::texts(&master.ok(&["COMMAND", "LIST", "FILTERBY", "MODULE", "reconcile"]));
    let listed: Vec<String> = listed.into_iter().map(|name| name.to_lowercase()).collect();
    for name in PUBLIC_COMMANDS {
        assert!(
            listed.iter().any(|listed| listed == name),
            "{name} missing from {listed:?}"
        );
    }

    let now = now_ms().to_string();
    let zeros = "0".repeat(64);
    for internal in listed
        .iter()
        .filter(|name| !PUBLIC_COMMANDS.contains(&name.as_str()))
    {
        let args = [
            internal.as_str(),
            STREAM,
            "*",
            "qty",
            "100",
            "kid",
            "k1",
            "signed_ms",
            &now,
            "hmac",
            &zeros,
        ];
        for client in [&mut master, &mut pair.replica.client()] {
            let outcome = client.call(&args);
            assert!(outcome.is_err(), "{internal} ran for a client: {outcome:?}");
        }
    }
    assert_eq!(master.int(&["XLEN", STREAM]), 1);
}

#[test]
fn group_delivery_state_reaches_the_replica() {
    let pair = pair();
    let mut master = pair.master.client();
    let mut replica = pair.replica.client();
    master.sign_many(STREAM, 2);
    master.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    let args = [
        "RECONCILE.XREADVERIFIED",
        "GROUP",
        "g",
        "c1",
        "STREAMS",
        STREAM,
        ">",
    ];
    assert_eq!(master.read_entries(&args, STREAM).len(), 2);
    sync(&mut master, &mut replica);

    let expected = master.ok(&["XPENDING", STREAM, "g"]);
    wait_until(&mut replica, "pending entries on the replica", |client| {
        client.call(&["XPENDING", STREAM, "g"]).ok().as_ref() == Some(&expected)
    });
}

#[test]
fn quarantine_and_acks_reach_the_replica() {
    let pair = pair();
    let mut master = pair.master.client();
    let mut replica = pair.replica.client();
    let stale = master.sign(STREAM, &[("qty", "1")]);
    master.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    master.ok(&["CONFIG", "SET", "reconcile.max-age-ms", "1"]);
    thread::sleep(Duration::from_millis(50));
    let args = [
        "RECONCILE.XREADVERIFIED",
        "GROUP",
        "g",
        "c1",
        "STREAMS",
        STREAM,
        ">",
    ];
    assert!(master.read_entries(&args, STREAM).is_empty());
    let quarantine = quarantine_of(STREAM);
    let on_master = master.xrange(&quarantine);
    assert_eq!(on_master.len(), 1);
    assert_eq!(on_master[0].get("orig_id"), Some(stale));
    sync(&mut master, &mut replica);

    wait_until(&mut replica, "the quarantine on the replica", |client| {
        client.xrange(&quarantine) == on_master
    });
    let expected = master.ok(&["XPENDING", STREAM, "g"]);
    assert_eq!(replica.ok(&["XPENDING", STREAM, "g"]), expected);
}

/// `INFO reconcile`'s count of entries signed while nothing read the replication stream.
fn unpropagated(client: &mut Client) -> i64 {
    client.info_reconcile().int("signed_unpropagated_total")
}

#[test]
fn entries_signed_before_and_while_a_replica_attaches_all_reach_it() {
    // Alone, the master builds no replicated command. The replica's SYNC must end that before
    // the snapshot it is sent is taken, or entries signed in between would never reach it.
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let master = ServerOptions::guarded(&keyring)
        .config("repl-diskless-sync-delay", &["0"])
        .start();
    let mut client = master.client();
    client.sign_many(STREAM, 20);
    assert_eq!(
        unpropagated(&mut client),
        20,
        "a lone master without AOF skips replication"
    );

    // A writer signs without pause from before the replica starts until after it is online.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut client = master.client();
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut signed = 0;
            while !stop.load(Ordering::Relaxed) {
                client.sign(STREAM, &[("during", &signed.to_string())]);
                signed += 1;
            }
            signed
        })
    };
    let replica = ServerOptions::guarded(&keyring).replica_of(&master).start();
    wait_until(&mut client, "the replica online", |client| {
        client
            .text(&["INFO", "replication"])
            .contains("state=online")
    });
    thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let during = writer.join().expect("the writer thread");
    assert!(during > 0, "nothing was signed while the replica attached");

    let before = unpropagated(&mut client);
    client.sign_many(STREAM, 5);
    assert_eq!(
        unpropagated(&mut client),
        before,
        "appends went unreplicated with a replica attached"
    );
    let mut on_replica = replica.client();
    sync(&mut client, &mut on_replica);
    let entries = client.xrange(STREAM);
    assert_eq!(entries.len(), 20 + during + 5);
    assert_eq!(on_replica.xrange(STREAM), entries);
    let args = ["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"];
    assert_eq!(on_replica.read_entries(&args, STREAM).len(), entries.len());
}

#[test]
fn a_master_that_was_a_replica_replicates_into_its_backlog() {
    // `a` first runs alone and skips replication. It then serves as a replica, which gives it a
    // backlog, and is promoted: its appends must reach that backlog even with no replica
    // attached, for `b` rejoins with a partial resynchronisation from it.
    let key = Key::random("k1");
    let keyring = KeyringFile::new(&[&key]);
    let start = || {
        ServerOptions::guarded(&keyring)
            .config("repl-diskless-sync-delay", &["0"])
            .start()
    };
    let (a_server, b_server) = (start(), start());
    let (mut a, mut b) = (a_server.client(), b_server.client());
    a.sign_many(STREAM, 3);
    assert_eq!(unpropagated(&mut a), 3);
    b.sign_many(STREAM, 2);

    let linked = |client: &mut Client| {
        client
            .text(&["INFO", "replication"])
            .contains("master_link_status:up")
    };
    a.ok(&["REPLICAOF", "127.0.0.1", &b_server.port().to_string()]);
    wait_until(&mut a, "a linked to b", linked);
    // Not WAIT: its acknowledgement request would move b's offset past a's, and rule out the
    // partial resynchronisation this test is about.
    let on_b = b.ok(&["XRANGE", STREAM, "-", "+"]);
    wait_until(&mut a, "a holding b's entries", |client| {
        client.ok(&["XRANGE", STREAM, "-", "+"]) == on_b
    });
    a.ok(&["REPLICAOF", "NO", "ONE"]);
    a.sign_many(STREAM, 4);
    assert_eq!(
        unpropagated(&mut a),
        3,
        "after its promotion a skipped its backlog"
    );

    let partial = |client: &mut Client| {
        let info = client.text(&["INFO", "stats"]);
        info.lines()
            .find_map(|line| line.strip_prefix("sync_partial_ok:"))
            .map(|n| n.trim().to_string())
    };
    let partial_before = partial(&mut a);
    b.ok(&["REPLICAOF", "127.0.0.1", &a_server.port().to_string()]);
    wait_until(&mut b, "b linked to a", linked);
    sync(&mut a, &mut b);
    assert_ne!(
        partial(&mut a),
        partial_before,
        "b rejoined with a full copy, which would hide a gap in the backlog"
    );
    let entries = a.xrange(STREAM);
    assert_eq!(entries.len(), 6);
    assert_eq!(b.xrange(STREAM), entries);
}

//! The module in a three-master Redis Cluster on loopback: both commands declare their keys,
//! so the cluster routes them (MOVED from the wrong node, CROSSSLOT across slots); signing,
//! verified reads, quarantine and the guard work on the node that serves each stream; and a
//! guarded name without a hash tag is refused at load, since its quarantine stream would fall
//! in another slot.

use std::thread;
use std::time::Duration;

use reconcile_tests::cluster::Cluster;
use reconcile_tests::reply::{self, texts};
use reconcile_tests::{quarantine_of, Key, KeyringFile, ServerOptions};

/// A layout with one stream for the whole close path, and one per symbol.
const SHARED: &str = "quantum:stream:{reconcile}.close";
const BTC: &str = "quantum:stream:reconcile.close:{BTCUSDT}";
const ETH: &str = "quantum:stream:reconcile.close:{ETHUSDT}";

struct Rig {
    _keyring: KeyringFile,
    cluster: Cluster,
}

fn rig() -> Rig {
    let keyring = KeyringFile::new(&[&Key::random("k1")]);
    let cluster = Cluster::start(3, || {
        ServerOptions::with_module_args(&[
            "keyring",
            &keyring.path_str(),
            "guard",
            SHARED,
            "guard",
            BTC,
            "guard",
            ETH,
        ])
    });
    Rig {
        _keyring: keyring,
        cluster,
    }
}

#[test]
fn untagged_guard_is_refused_in_a_cluster() {
    let keyring = KeyringFile::new(&[&Key::random("k1")]);
    // With no guard named, the module would guard the untagged default stream.
    for options in [
        ServerOptions::with_module_args(&["keyring", &keyring.path_str()]),
        ServerOptions::with_module_args(&["keyring", &keyring.path_str(), "guard", BTC])
            .load_arg("guard", "quantum:stream:reconcile.close"),
    ] {
        let failure = options.cluster_node().expect_load_failure();
        assert!(
            failure.log.contains("needs a hash tag"),
            "no reason given:\n{}",
            failure.log
        );
    }
}

#[test]
fn both_commands_declare_their_keys() {
    let rig = rig();
    let mut any = rig.cluster.nodes()[0].client();
    let keys = |client: &mut reconcile_tests::Client, args: &[&str]| {
        let mut all = vec!["COMMAND", "GETKEYS"];
        all.extend_from_slice(args);
        texts(&client.ok(&all))
    };
    assert_eq!(
        keys(
            &mut any,
            &["RECONCILE.XADDSIGNED", BTC, "*", "symbol", "BTCUSDT"]
        ),
        [BTC]
    );
    assert_eq!(
        keys(
            &mut any,
            &[
                "RECONCILE.XREADVERIFIED",
                "COUNT",
                "5",
                "STREAMS",
                BTC,
                ETH,
                "0",
                "0"
            ]
        ),
        [BTC, ETH]
    );
    assert_eq!(
        keys(
            &mut any,
            &[
                "RECONCILE.XREADVERIFIED",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "10",
                "STREAMS",
                SHARED,
                ">"
            ]
        ),
        [SHARED]
    );
    assert_eq!(keys(&mut any, &["RECONCILE.VERIFY", ETH, "1-0"]), [ETH]);
}

#[test]
fn commands_are_routed_to_the_node_serving_the_stream() {
    let rig = rig();
    let cluster = &rig.cluster;
    for stream in [SHARED, BTC, ETH] {
        let mut wrong = cluster.other_than_owner_of(stream).client();
        let moved = wrong.err(&["RECONCILE.XADDSIGNED", stream, "*", "symbol", "BTCUSDT"]);
        assert_eq!(moved.code, "MOVED", "{stream}: {moved}");
        let moved = wrong.err(&["RECONCILE.XREADVERIFIED", "STREAMS", stream, "0"]);
        assert_eq!(moved.code, "MOVED", "{stream}: {moved}");

        let mut owner = cluster.client_for(stream);
        let id = owner.sign(stream, &[("symbol", "BTCUSDT"), ("qty", "0.001")]);
        assert_eq!(owner.verify(stream, &id), "OK");
        let read = owner.read_entries(&["RECONCILE.XREADVERIFIED", "STREAMS", stream, "0"], stream);
        assert_eq!(read.len(), 1, "{stream}");
        assert_eq!(read[0].id, id);
    }
    // Streams in different slots cannot be read in one command.
    let mut owner = cluster.client_for(BTC);
    let crossed = owner.err(&["RECONCILE.XREADVERIFIED", "STREAMS", BTC, ETH, "0", "0"]);
    assert_eq!(crossed.code, "CROSSSLOT", "{crossed}");
    // The three streams were spread over more than one node, or the test proves little.
    let owners: std::collections::HashSet<u16> = [SHARED, BTC, ETH]
        .iter()
        .map(|s| cluster.owner_of(s).port())
        .collect();
    assert!(owners.len() > 1, "every stream on one node");
}

#[test]
fn the_guard_holds_on_every_node() {
    let rig = rig();
    let cluster = &rig.cluster;
    for stream in [SHARED, BTC] {
        let quarantine = quarantine_of(stream);
        for node in cluster.nodes() {
            let mut client = node.client();
            for args in [
                vec!["XADD", stream, "*", "symbol", "BTCUSDT"],
                vec!["DEL", stream],
                vec!["XADD", &quarantine, "*", "a", "b"],
                vec!["RENAME", stream, "x"],
            ] {
                let refused = client.err(&args);
                assert!(
                    refused.text.contains("guarded"),
                    "{args:?} on {}: {refused}",
                    node.port()
                );
            }
        }
        // Moving the key to another node is a write to it, and refused like any other: a
        // guarded stream stays in its slot's node (see the README on resharding).
        let mut owner = cluster.client_for(stream);
        owner.sign(stream, &[("symbol", "BTCUSDT")]);
        let target = cluster.other_than_owner_of(stream).port().to_string();
        let refused = owner.err(&["MIGRATE", "127.0.0.1", &target, stream, "0", "1000"]);
        assert!(refused.text.contains("guarded"), "{refused}");
        assert_eq!(owner.int(&["XLEN", stream]), 1);
    }
}

#[test]
fn quarantine_stays_in_the_stream_slot() {
    let rig = rig();
    let cluster = &rig.cluster;
    for stream in [SHARED, ETH] {
        let mut owner = cluster.client_for(stream);
        owner.ok(&["XGROUP", "CREATE", stream, "g", "$", "MKSTREAM"]);
        owner.ok(&["CONFIG", "SET", "reconcile.max-age-ms", "1"]);
        let stale = owner.sign(stream, &[("symbol", "ETHUSDT")]);
        thread::sleep(Duration::from_millis(20));
        let fresh_read = owner.read_entries(
            &[
                "RECONCILE.XREADVERIFIED",
                "GROUP",
                "g",
                "c",
                "STREAMS",
                stream,
                ">",
            ],
            stream,
        );
        assert!(fresh_read.is_empty(), "a stale entry was handed out");
        owner.ok(&["CONFIG", "SET", "reconcile.max-age-ms", "300000"]);

        let quarantine = quarantine_of(stream);
        assert_eq!(cluster.slot_of(&quarantine), cluster.slot_of(stream));
        let moved = owner.xrange(&quarantine);
        assert_eq!(moved.len(), 1, "{stream}: not quarantined");
        assert!(reply::flatten(&owner.ok(&["XRANGE", &quarantine, "-", "+"])).contains(&stale));
        // Acknowledged, so nothing stays pending behind it.
        let pending = texts(&owner.ok(&["XPENDING", stream, "g"]));
        assert_eq!(
            pending.first().map(String::as_str),
            Some("0"),
            "{pending:?}"
        );
    }
}

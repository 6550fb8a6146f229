//! Persistence: signed entries survive restarts through the AOF (plain, rewritten, after a
//! crash) and the RDB file, and still verify afterwards.

use std::thread;
use std::time::{Duration, Instant};

use reconcile_tests::reply;
use reconcile_tests::{quarantine_of, Client, Guarded, RedisServer, STREAM};

/// Checks that `ids` are the stream's entries, each verifies, and a plain read returns them.
fn assert_all_verify(client: &mut Client, ids: &[String]) {
    let stored: Vec<String> = client
        .xrange(STREAM)
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(stored, ids);
    for id in ids {
        assert_eq!(client.verify(STREAM, id), "OK", "{id}");
    }
    let args = ["RECONCILE.XREADVERIFIED", "STREAMS", STREAM, "0"];
    let read: Vec<String> = client
        .read_entries(&args, STREAM)
        .into_iter()
        .map(|entry| entry.id)
        .collect();
    assert_eq!(read, ids);
    let refused = client.err(&["XADD", STREAM, "*", "qty", "100"]);
    assert_eq!(
        refused.code, "GUARDED",
        "the guard is back after the restart: {refused}"
    );
}

fn restart_in_place(fixture: Guarded, restart: impl FnOnce(RedisServer) -> RedisServer) -> Guarded {
    let Guarded {
        key,
        keyring,
        server,
    } = fixture;
    Guarded {
        key,
        keyring,
        server: restart(server),
    }
}

#[test]
fn aof_restart_keeps_signed_entries_verifiable() {
    let fixture = Guarded::start_with(|options| options.appendonly());
    let ids = fixture.client().sign_many(STREAM, 3);
    let fixture = restart_in_place(fixture, RedisServer::restart);
    assert_all_verify(&mut fixture.client(), &ids);
}

#[test]
fn crash_restart_replays_the_aof() {
    let fixture =
        Guarded::start_with(|options| options.appendonly().config("appendfsync", &["always"]));
    let ids = fixture.client().sign_many(STREAM, 3);
    let fixture = restart_in_place(fixture, |server| server.kill().start());
    assert_all_verify(&mut fixture.client(), &ids);
}

fn wait_for_rewrite(client: &mut Client) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let info = client.text(&["INFO", "persistence"]);
        let idle =
            info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0");
        if idle {
            assert!(
                info.contains("aof_last_bgrewrite_status:ok"),
                "rewrite failed:\n{info}"
            );
            return;
        }
        assert!(Instant::now() < until, "AOF rewrite did not finish");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rewritten_aof_without_rdb_preamble_reloads_the_guarded_stream() {
    // Without the preamble a rewrite stores the stream as plain XADD commands, which the
    // guard must let the AOF loader run.
    let fixture =
        Guarded::start_with(|options| options.appendonly().config("aof-use-rdb-preamble", &["no"]));
    let mut client = fixture.client();
    let mut ids = client.sign_many(STREAM, 3);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    client.ok(&["BGREWRITEAOF"]);
    wait_for_rewrite(&mut client);
    ids.push(client.sign(STREAM, &[("after", "rewrite")]));
    drop(client);

    let fixture = restart_in_place(fixture, RedisServer::restart);
    let mut client = fixture.client();
    assert_all_verify(&mut client, &ids);
    let groups = reply::flatten(&client.ok(&["XINFO", "GROUPS", STREAM]));
    assert!(
        groups.lines().any(|line| line == "g"),
        "the consumer group is gone: {groups}"
    );
}

#[test]
fn rdb_restart_keeps_signed_entries_verifiable() {
    let fixture = Guarded::start_with(|options| options.persist_rdb());
    let mut client = fixture.client();
    let ids = client.sign_many(STREAM, 3);
    client.ok(&["SAVE"]);
    drop(client);
    let fixture = restart_in_place(fixture, |server| server.kill().start());
    assert_all_verify(&mut fixture.client(), &ids);
}

#[test]
fn quarantine_and_group_state_survive_an_aof_restart() {
    let fixture = Guarded::start_with(|options| options.appendonly());
    let mut client = fixture.client();
    let stale = client.sign(STREAM, &[("qty", "1")]);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "0"]);
    client.ok(&["CONFIG", "SET", "reconcile.max-age-ms", "1"]);
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
    assert!(client.read_entries(&args, STREAM).is_empty());
    let quarantine = quarantine_of(STREAM);
    let before = client.xrange(&quarantine);
    assert_eq!(before.len(), 1);
    let pending = client.ok(&["XPENDING", STREAM, "g"]);
    drop(client);

    let fixture = restart_in_place(fixture, RedisServer::restart);
    let mut client = fixture.client();
    assert_eq!(client.xrange(&quarantine), before);
    assert_eq!(client.ok(&["XPENDING", STREAM, "g"]), pending);
    assert_eq!(client.verify(STREAM, &stale), "OK");
}

/// `rdb_changes_since_last_save` from `INFO persistence`.
fn changes_since_save(client: &mut Client) -> i64 {
    let info = client.text(&["INFO", "persistence"]);
    info.lines()
        .find_map(|line| line.strip_prefix("rdb_changes_since_last_save:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rdb_changes_since_last_save in:\n{info}"))
}

#[test]
fn signed_entries_count_as_changes_for_save_points_with_or_without_an_aof() {
    for aof in [false, true] {
        let fixture =
            Guarded::start_with(|options| if aof { options.appendonly() } else { options });
        let mut client = fixture.client();
        let before = changes_since_save(&mut client);
        client.sign_many(STREAM, 5);
        assert_eq!(changes_since_save(&mut client) - before, 5, "aof: {aof}");
        let skipped = client.info_reconcile().int("signed_unpropagated_total");
        assert_eq!(skipped, if aof { 0 } else { 5 }, "aof: {aof}");
    }
}

#[test]
fn entries_signed_after_the_aof_is_switched_on_at_run_time_survive_a_crash() {
    let fixture = Guarded::start_with(|options| options.config("appendfsync", &["always"]));
    let mut client = fixture.client();
    let mut ids = client.sign_many(STREAM, 3);
    client.ok(&["CONFIG", "SET", "appendonly", "yes"]);
    wait_for_rewrite(&mut client);
    ids.extend(client.sign_many(STREAM, 3));
    assert_eq!(
        client.info_reconcile().int("signed_unpropagated_total"),
        3,
        "appends after the AOF was switched on skipped it"
    );
    drop(client);

    let fixture = restart_in_place(fixture, |server| server.kill().appendonly().start());
    assert_all_verify(&mut fixture.client(), &ids);
}

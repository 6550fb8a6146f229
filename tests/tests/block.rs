//! BLOCK: a blocked verified read wakes for a newly signed entry and times out to nil.

use std::thread;
use std::time::{Duration, Instant};

use reconcile_tests::reply;
use reconcile_tests::{Client, Guarded, STREAM};
use redis::Value;

/// Waits until the server reports at least one blocked client.
fn wait_for_blocked_client(client: &mut Client) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let info = client.text(&["INFO", "clients"]);
        let blocked = info
            .lines()
            .find_map(|line| line.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse::<i64>().ok())
            .unwrap_or(0);
        if blocked > 0 {
            return;
        }
        assert!(Instant::now() < until, "the reader never blocked");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `args` on its own connection in a thread and returns its reply when it comes.
fn spawn_reader(port: u16, args: Vec<String>) -> thread::JoinHandle<Value> {
    thread::spawn(move || {
        let mut client = Client::connect(port);
        client.set_read_timeout(Some(Duration::from_secs(20)));
        client.ok(&args)
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

fn ids_of(value: &Value) -> Vec<String> {
    let batches = reply::read_batches(value).unwrap_or_default();
    batches
        .into_iter()
        .flat_map(|batch| batch.entries)
        .map(|entry| entry.id)
        .collect()
}

#[test]
fn blocked_plain_read_wakes_when_an_entry_is_signed() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let first = client.sign(STREAM, &[("qty", "1")]);

    let args = [
        "RECONCILE.XREADVERIFIED",
        "BLOCK",
        "10000",
        "STREAMS",
        STREAM,
        &first,
    ];
    let reader = spawn_reader(fixture.server.port(), strings(&args));
    wait_for_blocked_client(&mut client);
    let second = client.sign(STREAM, &[("qty", "2")]);

    let reply = reader.join().expect("reader thread");
    assert_eq!(ids_of(&reply), [second]);
}

#[test]
fn blocked_group_read_wakes_when_an_entry_is_signed() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    client.sign(STREAM, &[("qty", "1")]);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "$"]);

    let args = [
        "RECONCILE.XREADVERIFIED",
        "GROUP",
        "g",
        "c1",
        "BLOCK",
        "10000",
        "STREAMS",
        STREAM,
        ">",
    ];
    let reader = spawn_reader(fixture.server.port(), strings(&args));
    wait_for_blocked_client(&mut client);
    let signed = client.sign(STREAM, &[("qty", "2")]);

    let reply = reader.join().expect("reader thread");
    assert_eq!(ids_of(&reply), [signed.as_str()]);
    let pending = client.ok(&["XPENDING", STREAM, "g", "-", "+", "10"]);
    assert!(
        reply::flatten(&pending).contains(&signed),
        "the woken read left {signed} pending"
    );
}

#[test]
fn blocked_plain_read_times_out_to_nil() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let last = client.sign(STREAM, &[("qty", "1")]);

    let started = Instant::now();
    let reply = client.ok(&[
        "RECONCILE.XREADVERIFIED",
        "BLOCK",
        "300",
        "STREAMS",
        STREAM,
        &last,
    ]);
    assert_eq!(reply, Value::Nil);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "BLOCK did not wait"
    );
}

#[test]
fn blocked_group_read_times_out_to_nil() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    client.sign(STREAM, &[("qty", "1")]);
    client.ok(&["XGROUP", "CREATE", STREAM, "g", "$"]);

    let started = Instant::now();
    let args = [
        "RECONCILE.XREADVERIFIED",
        "GROUP",
        "g",
        "c1",
        "BLOCK",
        "300",
        "STREAMS",
        STREAM,
        ">",
    ];
    assert_eq!(client.ok(&args), Value::Nil);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "BLOCK did not wait"
    );
}

#[test]
fn blocked_reader_is_not_woken_by_a_refused_write() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let last = client.sign(STREAM, &[("qty", "1")]);

    let args = [
        "RECONCILE.XREADVERIFIED",
        "BLOCK",
        "1500",
        "STREAMS",
        STREAM,
        &last,
    ];
    let reader = spawn_reader(fixture.server.port(), strings(&args));
    wait_for_blocked_client(&mut client);
    let refused = client.err(&["XADD", STREAM, "*", "qty", "100"]);
    assert_eq!(refused.code, "GUARDED", "{refused}");

    assert_eq!(reader.join().expect("reader thread"), Value::Nil);
}

#[test]
fn blocked_reader_on_a_missing_stream_wakes_for_its_first_entry() {
    let fixture = Guarded::start();
    let mut client = fixture.client();
    let args = [
        "RECONCILE.XREADVERIFIED",
        "BLOCK",
        "10000",
        "STREAMS",
        STREAM,
        "0",
    ];
    let reader = spawn_reader(fixture.server.port(), strings(&args));
    wait_for_blocked_client(&mut client);
    let signed = client.sign(STREAM, &[("qty", "1")]);
    assert_eq!(ids_of(&reader.join().expect("reader thread")), [signed]);
}

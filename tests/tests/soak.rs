//! Soak: a long, seeded mix of module commands, valid and not, refused writes and plain
//! commands against one live server, in phases.
//!
//! After every phase the server must still run and answer PING, the module's counters must
//! agree with the replies (entries signed, writes refused, entries quarantined), and no genuine
//! entry may have reached a quarantine stream. Memory is measured after the warm-up phase and
//! after the last one, each time with the same data in the server; the growth must stay under
//! [`GROWTH_BOUND`].
//!
//! CI runs the short form. `RECONCILE_SOAK_COMMANDS=<n>` runs about n commands instead (see
//! RELIABILITY.md). The run prints its seed; `RECONCILE_FUZZ_SEED=<seed>` replays one.

use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reconcile_tests::client::{nested_error, Reply};
use reconcile_tests::fixture::DEFAULT_MAX_AGE_MS;
use reconcile_tests::forge::{self, Forgery};
use reconcile_tests::random_calls::{data_write, module_call};
use reconcile_tests::reply::{self, Entry};
use reconcile_tests::seed::fuzz_seed;
use reconcile_tests::{quarantine_of, Client, Flaw, Guarded, Key, STREAM};
use redis::Value;

/// Commands in the short form: four phases of 3000, warm-up included.
const SHORT_COMMANDS: usize = 12_000;
/// The variable that selects the long form, with its number of commands.
const COMMANDS_VAR: &str = "RECONCILE_SOAK_COMMANDS";
/// No phase is longer, so that no entry lives long enough to go stale (five minutes).
const MAX_PHASE_COMMANDS: usize = 20_000;
const MIN_PHASES: usize = 4;

/// How much `used_memory` may grow from the end of the warm-up to the end of the last phase.
///
/// With the same keys, groups, keyring and connections in place at both points, a server
/// that frees what it allocates comes back to the same figure give or take a few hundred bytes
/// of allocator rounding and client buffers (within 1 KiB in the runs in RELIABILITY.md). A
/// leak of 16 bytes on every RECONCILE.XREADVERIFIED call, about a third of the module calls, made
/// the short form grow by 27 KiB; the long form widens that margin with its length.
const GROWTH_BOUND: i64 = 16 * 1024;

/// The second guarded stream: blocked reads wait on it.
const SECOND: &str = "quantum:stream:soak.second";
/// An unguarded stream that takes plain XADDs, forged entries included: the quarantine path.
const OPEN: &str = "soak:open";
/// Another unguarded stream, for reads that wait through a forged entry.
const WAITED: &str = "soak:waited";
/// The ID after which a stream takes no entry. The random module calls could send it to a
/// guarded stream, which no command may reset; the soak's streams must accept entries to the
/// end.
const LAST_ID: &[u8] = b"18446744073709551615-18446744073709551615";

const FIELD_NAMES: [&str; 6] = ["symbol", "qty", "side", "plan_id", "note", "x"];

/// What the replies said, to hold the module's counters to.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    commands: usize,
    module_calls: usize,
    signed: i64,
    denied: i64,
    quarantined: i64,
}

/// The server, its keys and the random source, across phases.
struct Soak {
    seed: u64,
    rng: StdRng,
    fixture: Guarded,
    /// The keyring's second key; the two swap places at each rotation.
    second_key: Key,
    rotated: bool,
}

impl Soak {
    fn start(seed: u64) -> Soak {
        let fixture = Guarded::start_with(|options| options.load_arg("guard", SECOND));
        let second_key = Key::random("k2");
        let soak = Soak {
            seed,
            rng: StdRng::seed_from_u64(seed),
            fixture,
            second_key,
            rotated: false,
        };
        soak.write_keyring();
        let mut client = soak.fixture.client();
        assert_eq!(client.text(&["RECONCILE.KEYRING", "RELOAD"]), "OK");
        soak
    }

    /// The keys in signing order: `k1` first unless rotated.
    fn keys(&self) -> [&Key; 2] {
        if self.rotated {
            [&self.second_key, &self.fixture.key]
        } else {
            [&self.fixture.key, &self.second_key]
        }
    }

    fn write_keyring(&self) {
        self.fixture.keyring.write_keys(&self.keys());
    }

    fn signing_kid(&self) -> String {
        self.keys()[0].kid.clone()
    }

    /// Runs `commands` random commands on fresh connections and checks the counters after.
    fn phase(&mut self, number: usize, commands: usize) -> Tally {
        let seed = self.seed;
        let mut phase = Phase::new(self);
        let before = phase.client.info_reconcile();
        while phase.tally.commands < commands {
            phase.step();
        }
        let tally = phase.tally;
        let after = phase.client.info_reconcile();
        let delta = |name| after.int(name) - before.int(name);
        assert_eq!(
            delta("signed_total"),
            tally.signed,
            "seed {seed}, phase {number}"
        );
        assert_eq!(
            delta("guard_denied_total"),
            tally.denied,
            "seed {seed}, phase {number}"
        );
        assert_eq!(
            delta("quarantined_total"),
            tally.quarantined,
            "seed {seed}, phase {number}"
        );
        drop(phase);

        assert!(
            self.fixture.server.is_running(),
            "seed {seed}: redis-server died"
        );
        let mut client = self.fixture.client();
        assert_eq!(client.text(&["PING"]), "PONG");
        for guarded in [STREAM, SECOND] {
            let quarantine = quarantine_of(guarded);
            let exists = client.int(&["EXISTS", &quarantine]);
            assert_eq!(
                exists, 0,
                "seed {seed}: a genuine entry reached {quarantine}"
            );
        }
        tally
    }

    /// Brings the data back to the state every measurement starts from: the two guarded
    /// streams empty and without groups, the keyring unrotated, no other key in any
    /// database, no cached script, empty slow log and error statistics.
    fn reset(&mut self) {
        let mut client = self.fixture.client();
        for guarded in [STREAM, SECOND] {
            let groups = client.ok(&["XINFO", "GROUPS", guarded]);
            for group in group_names(&groups) {
                client.ok(&["XGROUP", "DESTROY", guarded, &group]);
            }
            // An exact MAXLEN 0 removes every entry, the new one included.
            client.ok(&[
                "RECONCILE.XADDSIGNED",
                guarded,
                "MAXLEN",
                "0",
                "*",
                "reset",
                "1",
            ]);
            assert_eq!(client.int(&["XLEN", guarded]), 0);
        }
        if self.rotated {
            self.rotated = false;
            self.write_keyring();
            assert_eq!(client.text(&["RECONCILE.KEYRING", "RELOAD"]), "OK");
        }
        for db in 0..16 {
            client.ok(&["SELECT", &db.to_string()]);
            delete_all_but(&mut client, &[STREAM, SECOND]);
        }
        client.ok(&["SELECT", "0"]);
        client.ok(&["SCRIPT", "FLUSH"]);
        client.ok(&["SLOWLOG", "RESET"]);
        client.ok(&["CONFIG", "RESETSTAT"]);
    }
}

/// One kind of step of a phase.
type Step<'a> = fn(&mut Phase<'a>);

/// One phase: its connections and what their replies said.
struct Phase<'a> {
    soak: &'a mut Soak,
    client: Client,
    /// The connection that waits in blocking reads while `client` writes.
    waiter: Client,
    tally: Tally,
}

impl<'a> Phase<'a> {
    fn new(soak: &'a mut Soak) -> Phase<'a> {
        let client = soak.fixture.client();
        let waiter = soak.fixture.client();
        for connection in [&client, &waiter] {
            connection.set_read_timeout(Some(Duration::from_secs(10)));
        }
        let mut phase = Phase {
            soak,
            client,
            waiter,
            tally: Tally::default(),
        };
        for (key, group) in [
            (STREAM, "soak"),
            (STREAM, "g"),
            (SECOND, "soakw"),
            (OPEN, "og"),
        ] {
            phase.expect(&["XGROUP", "CREATE", key, group, "$", "MKSTREAM"]);
        }
        phase
    }

    /// Runs one step, picked by weight.
    fn step(&mut self) {
        let steps: [(u32, Step<'a>); 20] = [
            (14, Phase::sign),
            (4, Phase::sign_refused),
            (8, Phase::read_plain),
            (8, Phase::read_group),
            (3, Phase::read_history),
            (3, Phase::acknowledge),
            (2, Phase::blocked_read_woken),
            (1, Phase::blocked_read_skips_forgery),
            (1, Phase::blocked_client_disconnects),
            (4, Phase::verify),
            (5, Phase::forged_entries_quarantined),
            (1, Phase::keyring_list),
            (1, Phase::keyring_rotate),
            (1, Phase::keyring_bad_reload),
            (8, Phase::refused_write),
            (2, Phase::transaction),
            (3, Phase::script),
            (12, Phase::plain),
            (12, Phase::garbage_module_call),
            (7, Phase::random_data_write),
        ];
        let total: u32 = steps.iter().map(|(weight, _)| weight).sum();
        let mut pick = self.soak.rng.random_range(0..total);
        for (weight, step) in steps {
            if pick < weight {
                return step(self);
            }
            pick -= weight;
        }
    }

    fn seed(&self) -> u64 {
        self.soak.seed
    }

    /// Sends one command on the main connection; a lost connection fails the run.
    fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        self.tally.commands += 1;
        let reply = self.client.call(args);
        self.note(args, &reply);
        reply
    }

    /// Counts what a reply says about signing and refusals, and fails on a lost connection.
    fn note<A: AsRef<[u8]>>(&mut self, args: &[A], reply: &Reply) {
        let name = args.first().map(|a| a.as_ref()).unwrap_or_default();
        if name.len() > 10 && name[..10].eq_ignore_ascii_case(b"RECONCILE.") {
            self.tally.module_calls += 1;
        }
        match reply {
            Err(err) if err.code == "IO" => {
                panic!(
                    "seed {}: {} broke the link: {err}",
                    self.seed(),
                    shown(args)
                )
            }
            Err(err) if err.code == "GUARDED" => self.tally.denied += 1,
            Ok(Value::Nil) | Err(_) => {}
            Ok(_) if name.eq_ignore_ascii_case(b"RECONCILE.XADDSIGNED") => self.tally.signed += 1,
            Ok(_) => {}
        }
    }

    fn expect<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Value {
        let reply = self.call(args);
        reply.unwrap_or_else(|err| panic!("seed {}: {} failed: {err}", self.seed(), shown(args)))
    }

    fn expect_err<A: AsRef<[u8]>>(&mut self, args: &[A]) -> String {
        match self.call(args) {
            Err(err) => err.text,
            Ok(value) => panic!("seed {}: {} gave {value:?}", self.seed(), shown(args)),
        }
    }

    fn int<A: AsRef<[u8]>>(&mut self, args: &[A]) -> i64 {
        match self.expect(args) {
            Value::Int(n) => n,
            other => panic!("{} gave {other:?}", shown(args)),
        }
    }

    fn random_fields(&mut self) -> Vec<Vec<u8>> {
        let rng = &mut self.soak.rng;
        let mut fields = Vec::new();
        for _ in 0..rng.random_range(1..=4) {
            fields.push(FIELD_NAMES[rng.random_range(0..FIELD_NAMES.len())].into());
            let len = if rng.random_range(0..50) == 0 {
                16 * 1024
            } else {
                rng.random_range(0..48)
            };
            fields.push((0..len).map(|_| rng.random::<u8>()).collect());
        }
        fields
    }

    /// Signs random fields into `key` and returns the new entry's ID.
    fn sign_into(&mut self, key: &str) -> String {
        let mut args: Vec<Vec<u8>> = vec!["RECONCILE.XADDSIGNED".into(), key.into()];
        if self.soak.rng.random_bool(0.3) {
            args.extend(["MAXLEN".into(), "~".into(), "200".into()]);
        }
        args.push("*".into());
        args.extend(self.random_fields());
        let value = self.expect(&args);
        reply::text(&value).unwrap_or_else(|| panic!("XADDSIGNED gave {value:?}"))
    }

    fn sign(&mut self) {
        let key = if self.soak.rng.random_bool(0.8) {
            STREAM
        } else {
            SECOND
        };
        self.sign_into(key);
    }

    fn sign_refused(&mut self) {
        let err = match self.soak.rng.random_range(0..4) {
            0 => self.expect_err(&["RECONCILE.XADDSIGNED", STREAM, "*", "kid", "k9"]),
            1 => self.expect_err(&["RECONCILE.XADDSIGNED", OPEN, "*", "a", "b"]),
            2 => self.expect_err(&["RECONCILE.XADDSIGNED", STREAM, "*", "a"]),
            _ => self.expect_err(&[
                "RECONCILE.XADDSIGNED",
                STREAM,
                "MAXLEN",
                "+5",
                "*",
                "a",
                "b",
            ]),
        };
        assert!(err.starts_with("ERR "), "seed {}: {err}", self.seed());
    }

    fn read_plain(&mut self) {
        let count = self.soak.rng.random_range(1..20u64);
        let len = self.int(&["XLEN", STREAM]);
        let value = self.expect(&[
            "RECONCILE.XREADVERIFIED",
            "COUNT",
            &count.to_string(),
            "STREAMS",
            STREAM,
            "0",
        ]);
        let entries = entries_of(&value, STREAM);
        // Every entry of the guarded stream is genuine and fresh, so none may be held back.
        assert_eq!(
            entries.len() as u64,
            count.min(len as u64),
            "seed {}",
            self.seed()
        );
        assert!(entries.iter().all(has_trailer));
    }

    fn read_group(&mut self) {
        let count = self.soak.rng.random_range(1..10u64).to_string();
        let consumer = self.consumer();
        let mut args = vec!["RECONCILE.XREADVERIFIED", "GROUP", "soak", &consumer];
        args.extend(["COUNT", &count]);
        if self.soak.rng.random_bool(0.1) {
            args.push("NOACK");
        }
        args.extend(["STREAMS", STREAM, ">"]);
        let value = self.expect(&args);
        let entries = entries_of(&value, STREAM);
        assert!(entries.len() as u64 <= count.parse().unwrap_or_default());
        assert!(entries.iter().all(has_trailer));
    }

    /// A history read returns exactly the consumer's pending entries, trimmed ones included.
    fn read_history(&mut self) {
        let consumer = self.consumer();
        let pending = self.pending(&consumer);
        let args = [
            "RECONCILE.XREADVERIFIED",
            "GROUP",
            "soak",
            &consumer,
            "STREAMS",
            STREAM,
            "0",
        ];
        let value = self.expect(&args);
        let ids: Vec<String> = entries_of(&value, STREAM)
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, pending, "seed {}: history of {consumer}", self.seed());
    }

    fn acknowledge(&mut self) {
        let consumer = self.consumer();
        let pending = self.pending(&consumer);
        if pending.is_empty() {
            return;
        }
        let mut args = vec!["XACK", STREAM, "soak"];
        args.extend(pending.iter().map(String::as_str));
        assert_eq!(self.int(&args), pending.len() as i64);
    }

    fn consumer(&mut self) -> String {
        format!("c{}", self.soak.rng.random_range(1..=3))
    }

    fn pending(&mut self, consumer: &str) -> Vec<String> {
        let value = self.expect(&["XPENDING", STREAM, "soak", "-", "+", "100000", consumer]);
        match value {
            Value::Array(rows) => rows
                .iter()
                .map(|row| reply::texts(row)[0].clone())
                .collect(),
            other => panic!("XPENDING gave {other:?}"),
        }
    }

    /// Waits until the server counts `n` blocked clients.
    fn wait_blocked(&mut self, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.tally.commands += 1;
            if info_field(&mut self.client, "clients", "blocked_clients") == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "seed {}: never {n} blocked",
                self.seed()
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// A read blocked on the second stream, plain or under a group, wakes with the entry
    /// signed while it waits.
    fn blocked_read_woken(&mut self) {
        let grouped = self.soak.rng.random_bool(0.5);
        let mut args = vec!["RECONCILE.XREADVERIFIED"];
        if grouped {
            // Whatever the group has not seen yet would answer at once: take it first.
            let drain = ["GROUP", "soakw", "w1", "NOACK", "STREAMS", SECOND, ">"];
            self.expect(&[&["RECONCILE.XREADVERIFIED"][..], &drain[..]].concat());
            args.extend(["GROUP", "soakw", "w1"]);
        }
        args.extend([
            "BLOCK",
            "5000",
            "STREAMS",
            SECOND,
            if grouped { ">" } else { "$" },
        ]);
        self.tally.commands += 1;
        self.waiter.send(&args);
        self.wait_blocked(1);

        let id = self.sign_into(SECOND);
        let woken = self.waiter.receive();
        self.note(&args, &woken);
        let value = woken.unwrap_or_else(|err| panic!("seed {}: woken read: {err}", self.seed()));
        let ids: Vec<String> = entries_of(&value, SECOND)
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![id], "seed {}: grouped {grouped}", self.seed());
    }

    /// A forged entry added while a read waits does not wake it; the genuine entry added next
    /// does, and alone.
    fn blocked_read_skips_forgery(&mut self) {
        let args = [
            "RECONCILE.XREADVERIFIED",
            "BLOCK",
            "0",
            "STREAMS",
            WAITED,
            "$",
        ];
        self.tally.commands += 1;
        self.waiter.send(&args);
        self.wait_blocked(1);
        self.xadd_fields(WAITED, &forge::missing_hmac().fields);
        // The waiting read looked at the forged entry before XADD answered, and kept waiting.
        self.wait_blocked(1);

        let signer = self.soak.fixture.key.clone();
        let now = forge::now_ms().to_string();
        let qty = forge::order_fields("0.002");
        let id = self.xadd_fields(
            WAITED,
            &forge::signed_with(&signer, &signer.kid, WAITED, &now, &qty),
        );
        let woken = self.waiter.receive();
        self.note(&args, &woken);
        let value = woken.unwrap_or_else(|err| panic!("seed {}: woken read: {err}", self.seed()));
        let ids: Vec<String> = entries_of(&value, WAITED)
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![id], "seed {}", self.seed());
    }

    /// A client that goes away while blocked leaves nothing behind.
    fn blocked_client_disconnects(&mut self) {
        let mut leaving = self.soak.fixture.client();
        self.tally.commands += 1;
        leaving.send(&[
            "RECONCILE.XREADVERIFIED",
            "BLOCK",
            "0",
            "STREAMS",
            STREAM,
            "$",
        ]);
        self.wait_blocked(1);
        drop(leaving);
        self.wait_blocked(0);
    }

    fn verify(&mut self) {
        let id = self.sign_into(STREAM);
        let value = self.expect(&["RECONCILE.VERIFY", STREAM, &id]);
        assert_eq!(reply::text(&value).as_deref(), Some("OK"));
        let err = self.expect_err(&["RECONCILE.VERIFY", STREAM, "not-an-id"]);
        assert!(err.starts_with("ERR"), "{err}");
    }

    fn xadd_fields(&mut self, key: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> String {
        let mut args: Vec<Vec<u8>> = vec!["XADD".into(), key.into(), "*".into()];
        for (field, value) in fields {
            args.extend([field.clone(), value.clone()]);
        }
        let value = self.expect(&args);
        reply::text(&value).unwrap_or_else(|| panic!("XADD gave {value:?}"))
    }

    /// Adds one to five entries to the unguarded stream, some signed with a key of the ring,
    /// the others forgeries; returns the IDs of the first and the second with their forgery.
    fn add_forged_and_genuine(&mut self) -> (Vec<String>, Vec<(String, Forgery)>) {
        let signer = if self.soak.rng.random_bool(0.5) {
            self.soak.fixture.key.clone()
        } else {
            self.soak.second_key.clone()
        };
        let sign_open = |qty: &str| {
            let now = forge::now_ms().to_string();
            forge::signed_with(&signer, &signer.kid, OPEN, &now, &forge::order_fields(qty))
        };
        let template = Entry {
            id: String::new(),
            fields: sign_open("0.001"),
        };
        let mut forgeries = forge::all(&template, OPEN, &signer, DEFAULT_MAX_AGE_MS);
        let newest = self.expect(&["XREVRANGE", STREAM, "+", "-", "COUNT", "1"]);
        forgeries.extend(reply::entries(&newest).pop().map(|entry| Forgery {
            name: "moved from the guarded stream",
            fields: entry.fields,
            reasons: &["bad_mac"],
        }));

        let mut genuine = Vec::new();
        let mut forged = Vec::new();
        for n in 0..self.soak.rng.random_range(1..=5) {
            if self.soak.rng.random_bool(0.4) {
                genuine.push(self.xadd_fields(OPEN, &sign_open(&format!("0.00{n}"))));
            } else {
                let pick = self.soak.rng.random_range(0..forgeries.len());
                let forgery = forgeries.swap_remove(pick);
                forged.push((self.xadd_fields(OPEN, &forgery.fields), forgery));
            }
        }
        (genuine, forged)
    }

    /// Forged entries among genuine ones in an unguarded stream: a group read returns the
    /// genuine ones only, and each forgery lands in the quarantine with an allowed reason.
    fn forged_entries_quarantined(&mut self) {
        let (genuine, forged) = self.add_forged_and_genuine();
        let quarantine = quarantine_of(OPEN);
        let before = self.int(&["XLEN", &quarantine]);
        let read = [
            "RECONCILE.XREADVERIFIED",
            "GROUP",
            "og",
            "q1",
            "COUNT",
            "100",
        ];
        let value = self.expect(&[&read[..], &["STREAMS", OPEN, ">"]].concat());
        let ids: Vec<String> = entries_of(&value, OPEN).into_iter().map(|e| e.id).collect();
        assert_eq!(
            ids,
            genuine,
            "seed {}: forged entries delivered",
            self.seed()
        );

        let added = self.int(&["XLEN", &quarantine]) - before;
        assert_eq!(added, forged.len() as i64, "seed {}", self.seed());
        self.tally.quarantined += added;
        let newest = self.expect(&[
            "XREVRANGE",
            &quarantine,
            "+",
            "-",
            "COUNT",
            &added.to_string(),
        ]);
        let mut held = reply::entries(&newest);
        held.reverse();
        for (entry, (id, forgery)) in held.iter().zip(&forged) {
            assert_eq!(entry.get("orig_id").as_deref(), Some(id.as_str()));
            let reason = entry.get("reason").unwrap_or_default();
            let seed = self.seed();
            let name = forgery.name;
            assert!(
                forgery.reasons.contains(&reason.as_str()),
                "seed {seed}: {name} as {reason}"
            );
        }
        if self.soak.rng.random_bool(0.1) {
            self.expect(&["DEL", OPEN, &quarantine]);
            self.expect(&["XGROUP", "CREATE", OPEN, "og", "$", "MKSTREAM"]);
        }
    }

    fn keyring_list(&mut self) {
        let value = self.expect(&["RECONCILE.KEYRING", "LIST"]);
        let Value::Array(rows) = value else {
            panic!("KEYRING LIST gave {value:?}");
        };
        let rows: Vec<Vec<String>> = rows.iter().map(reply::texts).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0], self.soak.signing_kid());
        assert_eq!(rows[0][1], "signing");
        assert_eq!(rows[1][1], "verifying");
    }

    /// The keys swap places; entries signed from then on carry the new signing kid.
    fn keyring_rotate(&mut self) {
        self.soak.rotated = !self.soak.rotated;
        self.soak.write_keyring();
        let value = self.expect(&["RECONCILE.KEYRING", "RELOAD"]);
        assert_eq!(reply::text(&value).as_deref(), Some("OK"));
        let id = self.sign_into(STREAM);
        let entry = reply::entries(&self.expect(&["XRANGE", STREAM, &id, &id])).pop();
        let kid = entry.and_then(|e| e.get("kid"));
        assert_eq!(kid, Some(self.soak.signing_kid()), "seed {}", self.seed());
        self.keyring_list();
    }

    /// A flawed keyring file is refused and the keys in force stay.
    fn keyring_bad_reload(&mut self) {
        let flaw = Flaw::ALL[self.soak.rng.random_range(0..Flaw::ALL.len())];
        let (text, mode, _) = flaw.render(&self.soak.fixture.key);
        self.soak.fixture.keyring.write_text(&text, mode);
        let err = self.expect_err(&["RECONCILE.KEYRING", "RELOAD"]);
        assert!(err.contains("keyring reload failed"), "{flaw:?}: {err}");
        self.soak.write_keyring();
        self.keyring_list();
        self.sign_into(STREAM);
    }

    fn refused_write(&mut self) {
        let q = quarantine_of(STREAM);
        let script = "return redis.call('XADD', KEYS[1], '*', 'a', 'b')";
        let writes: [&[&str]; 20] = [
            &["XADD", STREAM, "*", "qty", "100"],
            &["XADD", &q, "*", "reason", "none"],
            &["XDEL", STREAM, "1-1"],
            &["XTRIM", STREAM, "MAXLEN", "0"],
            &["XSETID", STREAM, "99999999999999-0"],
            &["DEL", STREAM],
            &["UNLINK", SECOND],
            &["EXPIRE", STREAM, "10"],
            &["PERSIST", STREAM],
            &["RENAME", STREAM, "soak:x"],
            &["RENAMENX", "soak:plain:0", SECOND],
            &["COPY", STREAM, "soak:x"],
            &["SET", STREAM, "x"],
            &["MOVE", STREAM, "1"],
            &["RESTORE", STREAM, "0", "x"],
            &["SORT", "soak:list", "STORE", STREAM],
            &["FLUSHDB"],
            &["FLUSHALL"],
            &["SWAPDB", "0", "1"],
            &["EVAL", script, "1", STREAM],
        ];
        let write = writes[self.soak.rng.random_range(0..writes.len())];
        let err = self.expect_err(write);
        assert!(
            err.starts_with("GUARDED "),
            "seed {}: {write:?}: {err}",
            self.seed()
        );
    }

    /// Queues a command of a transaction; what it does is counted from the EXEC reply.
    fn queue(&mut self, args: &[&str]) {
        self.tally.commands += 1;
        let reply = self.client.call(args);
        assert_eq!(
            reply::text(&reply.unwrap_or(Value::Nil)).as_deref(),
            Some("QUEUED")
        );
    }

    /// In a transaction, a signing call succeeds and a plain write fails in its own slot.
    fn transaction(&mut self) {
        self.expect(&["MULTI"]);
        self.queue(&["RECONCILE.XADDSIGNED", STREAM, "*", "via", "multi"]);
        self.queue(&["XADD", STREAM, "*", "via", "multi"]);
        self.queue(&[
            "RECONCILE.XREADVERIFIED",
            "COUNT",
            "1",
            "STREAMS",
            STREAM,
            "0",
        ]);
        self.tally.module_calls += 2;
        let Value::Array(slots) = self.expect(&["EXEC"]) else {
            panic!("EXEC gave no array");
        };
        assert_eq!(slots.len(), 3);
        assert!(nested_error(&slots[0]).is_none(), "{:?}", slots[0]);
        self.tally.signed += 1;
        let refused = nested_error(&slots[1]).map(|err| err.code);
        assert_eq!(refused.as_deref(), Some("GUARDED"));
        self.tally.denied += 1;
        assert!(nested_error(&slots[2]).is_none(), "{:?}", slots[2]);
    }

    fn script(&mut self) {
        let sign = "return redis.call('RECONCILE.XADDSIGNED', KEYS[1], '*', 'via', ARGV[1])";
        let read = "return redis.call('RECONCILE.XREADVERIFIED', 'COUNT', '2', 'BLOCK', '0', \
                    'STREAMS', KEYS[1], '0')";
        match self.soak.rng.random_range(0..2) {
            0 => {
                let value = self.expect(&["EVAL", sign, "1", STREAM, "script"]);
                assert!(reply::text(&value).is_some(), "{value:?}");
                self.tally.signed += 1;
                self.tally.module_calls += 1;
            }
            _ => {
                // Inside a script BLOCK cannot wait; the read answers at once.
                self.expect(&["EVAL", read, "1", STREAM]);
                self.tally.module_calls += 1;
            }
        }
    }

    fn plain(&mut self) {
        let n = self.soak.rng.random_range(0..16).to_string();
        let key = format!("soak:plain:{n}");
        let calls: [&[&str]; 12] = [
            &["SET", &key, "value"],
            &["GET", &key],
            &["INCR", "soak:counter"],
            &["HSET", "soak:hash", &n, "v"],
            &["LPUSH", "soak:list", &n],
            &["LTRIM", "soak:list", "0", "99"],
            &["EXPIRE", &key, "100"],
            &["XADD", "soak:stream", "MAXLEN", "~", "100", "*", "n", &n],
            &["XRANGE", STREAM, "-", "+", "COUNT", "3"],
            &["XINFO", "STREAM", STREAM],
            &["MEMORY", "USAGE", STREAM],
            &["PING"],
        ];
        let call = calls[self.soak.rng.random_range(0..calls.len())];
        self.expect(call);
    }

    fn garbage_module_call(&mut self) {
        let mut call = module_call(&mut self.soak.rng);
        for arg in call.iter_mut().filter(|arg| arg.as_slice() == LAST_ID) {
            *arg = b"1-1".to_vec();
        }
        let _ = self.call(&call);
    }

    fn random_data_write(&mut self) {
        let names = [
            STREAM.to_string(),
            quarantine_of(STREAM),
            SECOND.to_string(),
            "soak:scratch".to_string(),
            "soak:numbers".to_string(),
        ];
        let call = data_write(&mut self.soak.rng, &names);
        let _ = self.call(&call);
    }
}

fn shown<A: AsRef<[u8]>>(args: &[A]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|arg| String::from_utf8_lossy(arg.as_ref()).into_owned())
        .collect();
    words.join(" ")
}

fn entries_of(value: &Value, key: &str) -> Vec<Entry> {
    let batches = reply::read_batches(value).unwrap_or_default();
    batches
        .into_iter()
        .find(|batch| batch.key == key)
        .map(|batch| batch.entries)
        .unwrap_or_default()
}

/// Whether the entry ends with the module's trailer (or had its data trimmed away).
fn has_trailer(entry: &Entry) -> bool {
    let names = entry.names();
    names.is_empty() || names.ends_with(&["kid".into(), "signed_ms".into(), "hmac".into()])
}

fn group_names(groups: &Value) -> Vec<String> {
    let Value::Array(groups) = groups else {
        panic!("XINFO GROUPS gave {groups:?}");
    };
    groups
        .iter()
        .map(|group| {
            let fields = reply::texts(group);
            let at = fields
                .iter()
                .position(|f| f == "name")
                .expect("a group name");
            fields[at + 1].clone()
        })
        .collect()
}

/// Deletes every key of the selected database except `keep`.
fn delete_all_but(client: &mut Client, keep: &[&str]) {
    let mut cursor = "0".to_string();
    loop {
        let value = client.ok(&["SCAN", &cursor, "COUNT", "1000"]);
        let Value::Array(parts) = value else {
            panic!("SCAN gave {value:?}");
        };
        cursor = reply::text(&parts[0]).expect("a SCAN cursor");
        let Value::Array(keys) = &parts[1] else {
            panic!("SCAN gave no key list");
        };
        for key in keys {
            let Value::BulkString(key) = key else {
                continue;
            };
            if !keep.iter().any(|k| k.as_bytes() == key.as_slice()) {
                client.ok(&[b"DEL".as_slice(), key.as_slice()]);
            }
        }
        if cursor == "0" {
            return;
        }
    }
}

fn info_field(client: &mut Client, section: &str, name: &str) -> i64 {
    let text = client.text(&["INFO", section]);
    let prefix = format!("{name}:");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO {section} has no {name}"))
}

/// The memory figures taken at a measurement point.
#[derive(Debug)]
struct Memory {
    used: i64,
    rss: i64,
    clients: i64,
}

/// Waits until the server is quiet (only this connection, nothing blocked, nothing left to
/// free in the background, `used_memory` steady over three readings while the cron shrinks
/// the tables the phase grew), then reads the figures.
fn measure(soak: &Soak) -> Memory {
    let mut client = soak.fixture.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let quiet = |client: &mut Client| {
        info_field(client, "clients", "connected_clients") == 1
            && info_field(client, "clients", "blocked_clients") == 0
            && info_field(client, "memory", "lazyfree_pending_objects") == 0
    };
    while !quiet(&mut client) {
        assert!(Instant::now() < deadline, "the server did not settle");
        thread::sleep(Duration::from_millis(20));
    }
    let mut used = info_field(&mut client, "memory", "used_memory");
    let mut steady = 0;
    while steady < 2 {
        assert!(Instant::now() < deadline, "used_memory kept moving");
        thread::sleep(Duration::from_millis(150));
        let now = info_field(&mut client, "memory", "used_memory");
        steady = if now == used { steady + 1 } else { 0 };
        used = now;
    }
    client.ok(&["MEMORY", "PURGE"]);
    Memory {
        used: info_field(&mut client, "memory", "used_memory"),
        rss: info_field(&mut client, "memory", "used_memory_rss"),
        clients: info_field(&mut client, "memory", "mem_clients_normal"),
    }
}

/// How many commands to run: the short form, or the number in `RECONCILE_SOAK_COMMANDS`.
fn planned_commands() -> usize {
    match std::env::var(COMMANDS_VAR) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{COMMANDS_VAR} is a number of commands")),
        Err(_) => SHORT_COMMANDS,
    }
}

#[test]
fn random_commands_in_phases_keep_the_server_up_and_memory_flat() {
    let seed = fuzz_seed("soak");
    let commands = planned_commands();
    let phases = commands.div_ceil(MAX_PHASE_COMMANDS).max(MIN_PHASES);
    let per_phase = commands / phases;
    let started = Instant::now();
    let mut soak = Soak::start(seed);

    let mut total = Tally::default();
    let mut used = Vec::new();
    for number in 0..phases {
        let tally = soak.phase(number, per_phase);
        soak.reset();
        let memory = measure(&soak);
        println!(
            "phase {number}: {} commands, {} module calls, {} signed, {} refused, {} \
             quarantined; used_memory {} rss {} clients {} after {:.1}s",
            tally.commands,
            tally.module_calls,
            tally.signed,
            tally.denied,
            tally.quarantined,
            memory.used,
            memory.rss,
            memory.clients,
            started.elapsed().as_secs_f64()
        );
        total.commands += tally.commands;
        total.module_calls += tally.module_calls;
        total.signed += tally.signed;
        total.denied += tally.denied;
        total.quarantined += tally.quarantined;
        used.push(memory.used);
    }
    // The warm-up phase grows every table and cache to its working size.
    let (warm, last) = (used[0], used[used.len() - 1]);
    let growth = last - warm;
    println!(
        "soak: seed {seed}, {} commands ({} module calls) in {phases} phases, {:.1}s; {} \
         signed, {} refused, {} quarantined; used_memory {warm} after the warm-up, {last} at \
         the end ({growth:+} bytes), from {} to {} over all phases",
        total.commands,
        total.module_calls,
        started.elapsed().as_secs_f64(),
        total.signed,
        total.denied,
        total.quarantined,
        used.iter().min().unwrap_or(&0),
        used.iter().max().unwrap_or(&0),
    );
    assert!(total.signed > 0 && total.denied > 0 && total.quarantined > 0);
    assert!(
        growth < GROWTH_BOUND,
        "seed {seed}: used_memory grew by {growth} bytes over the soak (bound {GROWTH_BOUND})"
    );
}

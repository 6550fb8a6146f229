//! `reconcile-keyring` against a real `redis-server` with the module: a rotation from
//! generate to retire, and the ways it must fail without damage.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reconcile_tests::{Client, RedisServer, ServerOptions, STREAM};
use redis::Value;
use tempfile::TempDir;

const ADMIN_PASSWORD: &str = "keytool-test-password";

/// One run of the tool, with everything it printed kept for the leak check.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn keytool(args: &[&str]) -> Run {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_reconcile-keyring"))
        .args(args)
        .env("REDISCLI_AUTH", ADMIN_PASSWORD)
        .env_remove("RECONCILE_KEYRING")
        .output()
        .expect("running reconcile-keyring");
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Run {
    fn expect_ok(self, what: &str) -> Run {
        assert!(self.ok, "{what} failed\n{}\n{}", self.stdout, self.stderr);
        self
    }

    fn expect_err(self, what: &str) -> Run {
        assert!(!self.ok, "{what} should fail\n{}", self.stdout);
        self
    }
}

/// The hex secrets in a keyring file.
fn secrets(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_whitespace().nth(1).map(str::to_lowercase))
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

/// A server that loads the module with `keyring`, plus a `keyadmin` user that may only manage
/// the keyring, as in redis.conf.example.
fn server(keyring: &Path) -> RedisServer {
    let path = keyring.to_str().unwrap();
    ServerOptions::with_module_args(&["keyring", path, "guard", STREAM])
        .config(
            "user",
            &[
                "keyadmin",
                "on",
                &format!(">{ADMIN_PASSWORD}"),
                "-@all",
                "+reconcile.keyring",
                "+ping",
                "+info",
            ],
        )
        .start()
}

fn url(server: &RedisServer) -> String {
    format!("redis://keyadmin@127.0.0.1:{}/", server.port())
}

fn listed(client: &mut Client) -> Vec<(String, String)> {
    match client.ok(&["RECONCILE.KEYRING", "LIST"]) {
        Value::Array(rows) => rows
            .iter()
            .map(|row| {
                let row = reconcile_tests::reply::texts(row);
                (row[0].clone(), row[1].clone())
            })
            .collect(),
        other => panic!("KEYRING LIST gave {other:?}"),
    }
}

fn kid_of(client: &mut Client, id: &str) -> String {
    let entries = client.xrange(STREAM);
    let entry = entries.iter().find(|e| e.id == id).expect("entry present");
    entry.get("kid").expect("kid field")
}

fn ring_path() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reconcile.keyring");
    (dir, path)
}

fn pair(kid: &str, role: &str) -> (String, String) {
    (kid.to_string(), role.to_string())
}

#[test]
fn generate_reload_then_retire_rotates_without_a_gap() {
    let (dir, path) = ring_path();
    let ring = path.to_str().unwrap();
    let mut runs = Vec::new();
    let mut seen_secrets = Vec::new();

    runs.push(
        keytool(&["generate", "--keyring", ring, "--kid", "kold", "--create"]).expect_ok("create"),
    );
    assert_eq!(mode(&path), 0o600);
    seen_secrets.extend(secrets(&path));
    let server = server(&path);
    let mut client = server.client();
    let old = client.sign(STREAM, &[("symbol", "BTCUSDT")]);
    assert_eq!(kid_of(&mut client, &old), "kold");

    // Generate and reload in one step: the new key signs at once, the old one still verifies.
    let generated =
        keytool(&["generate", "--keyring", ring, "--reload", &url(&server)]).expect_ok("generate");
    assert_eq!(mode(&path), 0o600);
    seen_secrets.extend(secrets(&path));
    let rows = listed(&mut client);
    let new_kid = rows[0].0.clone();
    assert!(
        new_kid.starts_with("k20") && new_kid.ends_with('Z'),
        "{new_kid}"
    );
    assert_eq!(rows, [pair(&new_kid, "signing"), pair("kold", "verifying")]);
    assert!(generated.stdout.contains(&new_kid), "{}", generated.stdout);
    runs.push(generated);
    let new = client.sign(STREAM, &[("symbol", "BTCUSDT")]);
    assert_eq!(kid_of(&mut client, &new), new_kid);
    assert_eq!(client.verify(STREAM, &old), "OK");
    assert_eq!(client.verify(STREAM, &new), "OK");

    let listing = keytool(&["list", "--keyring", ring]).expect_ok("list");
    assert!(
        listing.stdout.contains(&format!("{new_kid} signing")),
        "{}",
        listing.stdout
    );
    assert!(
        listing.stdout.contains("kold verifying"),
        "{}",
        listing.stdout
    );
    runs.push(listing);

    // After the overlap the old key goes; what it signed no longer verifies.
    runs.push(
        keytool(&[
            "retire",
            "--keyring",
            ring,
            "--keep",
            "1",
            "--reload",
            &url(&server),
        ])
        .expect_ok("retire"),
    );
    assert_eq!(mode(&path), 0o600);
    assert_eq!(listed(&mut client), [pair(&new_kid, "signing")]);
    assert!(client
        .verify(STREAM, &old)
        .starts_with("REJECTED unknown_kid"));
    assert_eq!(client.verify(STREAM, &new), "OK");

    // Nothing is left to retire, and the signing key is never retired.
    let again = keytool(&["retire", "--keyring", ring, "--keep", "1"]).expect_ok("retire again");
    assert!(
        again.stdout.contains("nothing to retire"),
        "{}",
        again.stdout
    );
    runs.push(again);
    runs.push(keytool(&["retire", "--keyring", ring, "--keep", "0"]).expect_err("keep 0"));
    assert_eq!(listed(&mut client).len(), 1);
    assert!(temp_files(dir.path()).is_empty());

    for run in &runs {
        for secret in &seen_secrets {
            let upper = secret.to_uppercase();
            for out in [&run.stdout, &run.stderr] {
                assert!(
                    !out.contains(secret.as_str()) && !out.contains(&upper),
                    "a key was printed"
                );
            }
        }
    }
}

#[test]
fn retire_older_than_drops_only_keys_replaced_long_enough_ago() {
    let (_dir, path) = ring_path();
    let ring = path.to_str().unwrap();
    keytool(&[
        "generate",
        "--keyring",
        ring,
        "--kid",
        "k20200101T000000Z",
        "--create",
    ])
    .expect_ok("first");
    keytool(&["generate", "--keyring", ring, "--kid", "k20200201T000000Z"]).expect_ok("second");
    keytool(&["generate", "--keyring", ring]).expect_ok("third, dated now");

    // The first key stopped signing in 2020, the second only now.
    let run = keytool(&["retire", "--keyring", ring, "--older-than", "30days"]).expect_ok("retire");
    assert!(
        run.stdout.contains("retired k20200101T000000Z;"),
        "{}",
        run.stdout
    );
    let listing = keytool(&["list", "--keyring", ring])
        .expect_ok("list")
        .stdout;
    assert_eq!(listing.lines().count(), 2, "{listing}");
    assert!(listing.contains("k20200201T000000Z verifying"), "{listing}");
}

#[test]
fn a_bad_keyring_is_never_rewritten() {
    let (dir, path) = ring_path();
    let ring = path.to_str().unwrap();
    let good = "kgood 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
    for (text, file_mode) in [
        (format!("{good}kbad 0011\n"), 0o600),
        (format!("{good}{good}"), 0o600),
        (good.to_string(), 0o640),
    ] {
        fs::write(&path, &text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(file_mode)).unwrap();
        let run = keytool(&["generate", "--keyring", ring]).expect_err("generate on a bad ring");
        assert!(run.stderr.contains("keyring"), "{}", run.stderr);
        keytool(&["retire", "--keyring", ring, "--keep", "1"]).expect_err("retire on a bad ring");
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        assert_eq!(mode(&path), file_mode);
        assert!(temp_files(dir.path()).is_empty());
    }

    // A missing file is created only on request.
    fs::remove_file(&path).unwrap();
    keytool(&["generate", "--keyring", ring]).expect_err("generate without --create");
    assert!(!path.exists());
}

#[test]
fn a_failed_reload_is_reported_and_the_server_keeps_its_keys() {
    let (_dir, path) = ring_path();
    let ring = path.to_str().unwrap();
    keytool(&["generate", "--keyring", ring, "--kid", "kone", "--create"]).expect_ok("create");
    let server = server(&path);
    let mut client = server.client();

    // A hand edit leaves the file readable by its group: the module refuses it.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let run = keytool(&["reload", &url(&server)]).expect_err("reload of a refused file");
    assert!(
        run.stderr.contains("keyring reload failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{}", server.port())),
        "{}",
        run.stderr
    );
    assert_eq!(listed(&mut client), [pair("kone", "signing")]);
    assert_eq!(
        client.info_reconcile().int("keyring_reload_failures_total"),
        1
    );
}

#[test]
fn a_server_with_another_file_fails_the_check() {
    let (_dir, path) = ring_path();
    let (_other_dir, other) = ring_path();
    let ring = path.to_str().unwrap();
    keytool(&["generate", "--keyring", ring, "--kid", "kone", "--create"]).expect_ok("create");
    keytool(&[
        "generate",
        "--keyring",
        other.to_str().unwrap(),
        "--kid",
        "kelse",
        "--create",
    ])
    .expect_ok("create the other");
    let server = server(&other);

    let run = keytool(&["reload", "--keyring", ring, &url(&server)]).expect_err("reload");
    assert!(run.stderr.contains("signs with kelse"), "{}", run.stderr);
}

#[test]
fn a_password_in_the_url_is_refused_and_not_repeated() {
    let run =
        keytool(&["reload", "redis://keyadmin:sup3r-secret@127.0.0.1:1/"]).expect_err("reload");
    assert!(!run.stderr.contains("sup3r-secret"), "{}", run.stderr);
    assert!(run.stderr.contains("REDISCLI_AUTH"), "{}", run.stderr);
}

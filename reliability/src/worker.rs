//! The apply worker as a separate process, so that a kill is a real SIGKILL in the middle of
//! whatever it was doing.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use reconcile_tests::{reply, Client, STREAM};

use crate::rig::{APPLY_PASSWORD, GROUP, KEY, SECRET};

/// The worker binary: `RECONCILE_APPLY`, or the workspace's release build.
pub fn apply_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RECONCILE_APPLY") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/reconcile-apply");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p reconcile-apply` \
         or point RECONCILE_APPLY at the binary",
        path.display()
    );
    path.canonicalize().expect("resolving worker path")
}

/// How a worker process is started; the same spec starts it again after a kill.
#[derive(Clone)]
pub struct WorkerSpec {
    /// Port of Redis (or of a proxy in front of it).
    pub redis_port: u16,
    pub exchange_url: String,
    pub consumer: String,
    /// Where stdout and stderr of every run are appended.
    pub log: PathBuf,
}

/// A running worker process, killed when dropped.
pub struct WorkerProcess {
    child: Child,
}

impl WorkerSpec {
    /// Starts the worker and waits until its consumer group exists on `group_port`.
    pub fn start(&self, group_port: u16) -> WorkerProcess {
        self.start_with(group_port, &[])
    }

    /// The same, with `flags` (name and value, such as `("--retry-max", "2s")`) replacing
    /// the defaults of the same name or added to them.
    pub fn start_with(&self, group_port: u16, flags: &[(&str, &str)]) -> WorkerProcess {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening worker log");
        let url = format!(
            "redis://apply:{APPLY_PASSWORD}@127.0.0.1:{}/",
            self.redis_port
        );
        let mut args: Vec<(&str, &str)> = vec![
            ("--redis-url", &url),
            ("--exchange-url", &self.exchange_url),
            ("--consumer", &self.consumer),
            ("--max-qty", "BTCUSDT=0.5,ETHUSDT=5"),
            ("--metrics-addr", "127.0.0.1:0"),
            ("--block", "200ms"),
            ("--retry-max", "300ms"),
            ("--info-interval", "1s"),
        ];
        for (name, value) in flags {
            match args.iter_mut().find(|(n, _)| n == name) {
                Some(arg) => arg.1 = value,
                None => args.push((name, value)),
            }
        }
        let child = Command::new(apply_binary())
            .env("BINANCE_API_KEY", KEY)
            .env("BINANCE_API_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .args(args.iter().flat_map(|(name, value)| [*name, *value]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning worker log"))
            .stderr(log)
            .spawn()
            .expect("spawning reconcile-apply");
        let mut process = WorkerProcess { child };
        process.wait_for_group(group_port, &self.log);
        process
    }
}

/// A loopback port nobody listened on a moment ago, for a worker's metrics endpoint.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

/// The worker's first delay before it reads its pending plans again (`retry_base` in its
/// configuration, which has no flag).
pub const RETRY_BASE: Duration = Duration::from_millis(500);

/// The most passes over its pending plans the worker's retry schedule fits into `window`
/// with `--retry-max` set to `retry_max`, counting the first, which comes without delay.
///
/// The delays start at [`RETRY_BASE`] and double up to the cap (never below the base), each
/// drawn from the upper half of its value; the count takes the shortest draws, from the start
/// of the schedule. A claim of idle plans every `claim_idle` adds one pass each.
pub fn most_retry_passes(window: Duration, retry_max: Duration, claim_idle: Duration) -> u64 {
    let cap = retry_max.max(RETRY_BASE);
    let mut passes = 1;
    let mut spent = Duration::ZERO;
    let mut full = RETRY_BASE;
    loop {
        spent += full.min(cap) / 2;
        if spent > window {
            break;
        }
        passes += 1;
        full = full.saturating_mul(2);
    }
    let claims = window.as_millis() / claim_idle.as_millis().max(1) + 1;
    passes + claims as u64
}

impl WorkerProcess {
    fn wait_for_group(&mut self, port: u16, log: &Path) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let text = fs::read_to_string(log).unwrap_or_default();
                panic!("reconcile-apply exited with {status}\n{text}");
            }
            let groups = Client::connect(port).call(&["XINFO", "GROUPS", STREAM]);
            if groups.is_ok_and(|g| reply::flatten(&g).contains(GROUP)) {
                return;
            }
            assert!(Instant::now() < until, "the worker never created its group");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown path runs, whatever was in flight stays as it was.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn passes_follow_the_shortest_draws_of_the_doubling_delays() {
        // Shortest draws 250, 500, 1000, 1000, ... ms: 250, 750, 1750, 2750 ms in all.
        assert_eq!(most_retry_passes(Duration::ZERO, 2000 * MS, HOUR), 1 + 1);
        assert_eq!(most_retry_passes(750 * MS, 2000 * MS, HOUR), 3 + 1);
        assert_eq!(most_retry_passes(2749 * MS, 2000 * MS, HOUR), 4 + 1);
        assert_eq!(most_retry_passes(2750 * MS, 2000 * MS, HOUR), 5 + 1);
    }

    #[test]
    fn a_cap_below_the_base_keeps_the_base_and_claims_add_passes() {
        // Every delay is at least 250 ms: four in a second, and one claim pass per minute.
        assert_eq!(most_retry_passes(1000 * MS, 300 * MS, HOUR), 5 + 1);
        let minutes = Duration::from_secs(150);
        let capped = most_retry_passes(minutes, 300 * MS, HOUR);
        assert_eq!(
            most_retry_passes(minutes, 300 * MS, Duration::from_secs(60)),
            capped + 2
        );
    }
}

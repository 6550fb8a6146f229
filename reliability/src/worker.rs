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
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening worker log");
        let url = format!(
            "redis://apply:{APPLY_PASSWORD}@127.0.0.1:{}/",
            self.redis_port
        );
        let child = Command::new(apply_binary())
            .env("BINANCE_API_KEY", KEY)
            .env("BINANCE_API_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .args(["--redis-url", &url])
            .args(["--exchange-url", &self.exchange_url])
            .args(["--consumer", &self.consumer])
            .args(["--max-qty", "BTCUSDT=0.5,ETHUSDT=5"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--block", "200ms"])
            .args(["--retry-max", "300ms"])
            .args(["--info-interval", "1s"])
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

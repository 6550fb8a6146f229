//! Real `redis-server` processes: started on a free loopback port in a temporary directory,
//! waited for with a deadline, and killed when dropped.
//!
//! A server is described by [`ServerOptions`]; the same options start it again on the same
//! directory, which is how the persistence tests restart and how forged entries planted by a
//! server without the module reach one with it.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::client::Client;
use crate::keyring::KeyringFile;
use crate::STREAM;

/// How long a server may take to answer PING, or to exit when its load is expected to fail.
pub const START_DEADLINE: Duration = Duration::from_secs(10);

/// How many fresh ports a start tries when the chosen one is taken before the server binds it.
const PORT_ATTEMPTS: usize = 5;

/// A data directory that outlives the servers started in it.
pub type DataDir = Arc<TempDir>;

/// A fresh data directory.
pub fn data_dir() -> DataDir {
    let dir = tempfile::Builder::new().prefix("reconcile-redis").tempdir();
    Arc::new(dir.expect("creating server dir"))
}

/// The module library under test: `RECONCILE_MODULE`, or the workspace's release build.
pub fn module_path() -> PathBuf {
    if let Some(path) = std::env::var_os("RECONCILE_MODULE") {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("target/release/libreconcile.so");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p reconcile` \
         or point RECONCILE_MODULE at the library",
        path.display()
    );
    path.canonicalize().expect("resolving module path")
}

fn redis_server_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER").map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

/// What a server runs with. Cheap to clone; clones share the data directory.
#[derive(Clone)]
pub struct ServerOptions {
    module_args: Option<Vec<String>>,
    dir: DataDir,
    persist_rdb: bool,
    appendonly: bool,
    replica_of: Option<u16>,
    cluster: bool,
    config: Vec<(String, Vec<String>)>,
}

impl ServerOptions {
    /// A server without the module, in a fresh directory.
    pub fn plain() -> ServerOptions {
        ServerOptions {
            module_args: None,
            dir: data_dir(),
            persist_rdb: false,
            appendonly: false,
            replica_of: None,
            cluster: false,
            config: Vec::new(),
        }
    }

    /// A server that loads the module with exactly `args` as its load arguments.
    pub fn with_module_args(args: &[&str]) -> ServerOptions {
        let args = args.iter().map(|arg| arg.to_string()).collect();
        ServerOptions {
            module_args: Some(args),
            ..ServerOptions::plain()
        }
    }

    /// The usual setup: the module with `keyring` and the default stream guarded.
    pub fn guarded(keyring: &KeyringFile) -> ServerOptions {
        ServerOptions::with_module_args(&["keyring", &keyring.path_str(), "guard", STREAM])
    }

    /// Appends one `name value` pair to the module's load arguments.
    pub fn load_arg(mut self, name: &str, value: &str) -> ServerOptions {
        let args = self.module_args.get_or_insert_with(Vec::new);
        args.push(name.to_string());
        args.push(value.to_string());
        self
    }

    /// Runs in `dir` instead of a fresh directory.
    pub fn in_dir(mut self, dir: &DataDir) -> ServerOptions {
        self.dir = Arc::clone(dir);
        self
    }

    /// Keeps Redis's default RDB save points instead of `save ""`.
    pub fn persist_rdb(mut self) -> ServerOptions {
        self.persist_rdb = true;
        self
    }

    /// Turns on the append-only file.
    pub fn appendonly(mut self) -> ServerOptions {
        self.appendonly = true;
        self
    }

    /// Makes the server a replica of `master`.
    pub fn replica_of(mut self, master: &RedisServer) -> ServerOptions {
        self.replica_of = Some(master.port());
        self
    }

    /// Runs as a Redis Cluster node, with its cluster bus on a free port of its own (the
    /// default, port + 10000, may not exist for a high port).
    pub fn cluster_node(mut self) -> ServerOptions {
        self.cluster = true;
        self
    }

    /// Adds a config line `name value...`.
    pub fn config(mut self, name: &str, values: &[&str]) -> ServerOptions {
        let values = values.iter().map(|value| value.to_string()).collect();
        self.config.push((name.to_string(), values));
        self
    }

    /// The data directory the server runs in.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// Starts the server and waits until it answers PING; panics with the log tail otherwise.
    pub fn start(&self) -> RedisServer {
        for _ in 0..PORT_ATTEMPTS {
            let mark = self.log_mark();
            let (child, port) = self.spawn();
            match wait_until_ready(child, port, START_DEADLINE) {
                Startup::Ready(child) => {
                    return RedisServer {
                        child: Some(child),
                        port,
                        options: self.clone(),
                    };
                }
                Startup::Exited(_) if self.lost_port_race(mark) => continue,
                Startup::Exited(status) => {
                    panic!(
                        "redis-server exited with {status} while starting\n{}",
                        self.log_tail()
                    )
                }
                Startup::TimedOut => {
                    panic!(
                        "redis-server did not answer PING in time\n{}",
                        self.log_tail()
                    )
                }
            }
        }
        panic!(
            "no free port after {PORT_ATTEMPTS} attempts\n{}",
            self.log_tail()
        );
    }

    /// Starts a server whose module load must be refused, and returns how it exited.
    ///
    /// Panics if the server comes up and answers PING, or neither answers nor exits in time.
    pub fn expect_load_failure(&self) -> LoadFailure {
        for _ in 0..PORT_ATTEMPTS {
            let mark = self.log_mark();
            let (child, port) = self.spawn();
            match wait_until_ready(child, port, START_DEADLINE) {
                Startup::Ready(mut child) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "redis-server started although the load should be refused\n{}",
                        self.log_tail()
                    );
                }
                Startup::Exited(_) if self.lost_port_race(mark) => continue,
                Startup::Exited(status) => {
                    let (log, stdio) = self.written_since(mark);
                    return LoadFailure {
                        status,
                        log: log + &stdio,
                    };
                }
                Startup::TimedOut => {
                    panic!(
                        "redis-server neither started nor exited in time\n{}",
                        self.log_tail()
                    )
                }
            }
        }
        panic!(
            "no free port after {PORT_ATTEMPTS} attempts\n{}",
            self.log_tail()
        );
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn stdio_path(&self) -> PathBuf {
        self.dir.path().join("stdio.log")
    }

    fn spawn(&self) -> (Child, u16) {
        let port = free_port();
        let conf = self.dir.path().join("redis.conf");
        fs::write(&conf, self.config_text(port)).expect("writing redis.conf");
        let stdio = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stdio_path())
            .expect("opening stdio log");
        let child = Command::new(redis_server_binary())
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(stdio.try_clone().expect("cloning stdio log"))
            .stderr(stdio)
            .spawn()
            .expect("spawning redis-server");
        (child, port)
    }

    fn config_text(&self, port: u16) -> String {
        let dir = self.dir.path().to_str().expect("temp paths are UTF-8");
        let mut lines = vec![
            format!("port {port}"),
            "bind 127.0.0.1".to_string(),
            format!("dir {}", quote(dir)),
            format!("logfile {}", quote(&format!("{dir}/redis.log"))),
            "daemonize no".to_string(),
            "dbfilename dump.rdb".to_string(),
            format!("appendonly {}", if self.appendonly { "yes" } else { "no" }),
        ];
        if !self.persist_rdb {
            lines.push("save \"\"".to_string());
        }
        if let Some(master) = self.replica_of {
            lines.push(format!("replicaof 127.0.0.1 {master}"));
        }
        if self.cluster {
            lines.push("cluster-enabled yes".to_string());
            lines.push(format!("cluster-config-file nodes-{port}.conf"));
            lines.push(format!("cluster-port {}", free_port()));
            lines.push("cluster-node-timeout 2000".to_string());
        }
        if let Some(args) = &self.module_args {
            let path = module_path();
            let mut line = format!("loadmodule {}", quote(path.to_str().expect("UTF-8 path")));
            for arg in args {
                line.push(' ');
                line.push_str(&quote(arg));
            }
            lines.push(line);
        }
        for (name, values) in &self.config {
            let values: Vec<String> = values.iter().map(|value| quote(value)).collect();
            lines.push(format!("{name} {}", values.join(" ")));
        }
        lines.join("\n") + "\n"
    }

    /// Where the log files end now, so that one attempt's output can be told from older ones
    /// in the same directory.
    fn log_mark(&self) -> (usize, usize) {
        (
            read_lossy(&self.log_path()).len(),
            read_lossy(&self.stdio_path()).len(),
        )
    }

    fn written_since(&self, (log, stdio): (usize, usize)) -> (String, String) {
        let tail = |text: String, from: usize| text.get(from..).unwrap_or_default().to_string();
        (
            tail(read_lossy(&self.log_path()), log),
            tail(read_lossy(&self.stdio_path()), stdio),
        )
    }

    fn lost_port_race(&self, mark: (usize, usize)) -> bool {
        let (log, stdio) = self.written_since(mark);
        log.contains("Address already in use") || stdio.contains("Address already in use")
    }

    fn log_tail(&self) -> String {
        let mut tail = String::from("--- redis.log (tail) ---\n");
        tail.push_str(&last_lines(&read_lossy(&self.log_path()), 40));
        tail.push_str("--- stdout/stderr (tail) ---\n");
        tail.push_str(&last_lines(&read_lossy(&self.stdio_path()), 20));
        tail
    }
}

/// How a server whose load was refused ended.
pub struct LoadFailure {
    /// The exit status of `redis-server`.
    pub status: ExitStatus,
    /// The whole log file.
    pub log: String,
}

/// A running `redis-server`, killed (and reaped) when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    options: ServerOptions,
}

impl RedisServer {
    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new connection to the server.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// The options the server was started with.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.options.dir
    }

    /// The whole log file as it is now.
    pub fn log(&self) -> String {
        read_lossy(&self.options.log_path())
    }

    /// Whether the handle still holds a process: false once [`RedisServer::crash`] killed it.
    pub fn is_alive(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server with SHUTDOWN and waits for it; returns its options for a restart.
    pub fn shutdown(mut self) -> ServerOptions {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.write_all(b"*1\r\n$8\r\nSHUTDOWN\r\n");
            // The server closes the connection when it goes; an error reply means it refused.
            let mut reply = Vec::new();
            let _ = stream.set_read_timeout(Some(START_DEADLINE));
            let _ = stream.read_to_end(&mut reply);
        }
        let mut child = self.child.take().expect("server process present");
        let deadline = Instant::now() + START_DEADLINE;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        self.options.clone()
    }

    /// Kills the server with SIGKILL, as a crash would; returns its options for a restart.
    pub fn kill(mut self) -> ServerOptions {
        self.crash();
        self.options.clone()
    }

    /// Kills the server with SIGKILL, as a crash would, and keeps the handle: for a server
    /// that others hold by reference, such as a cluster node.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SHUTDOWN, then start again with the same options on the same directory.
    pub fn restart(self) -> RedisServer {
        self.shutdown().start()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

enum Startup {
    Ready(Child),
    Exited(ExitStatus),
    TimedOut,
}

fn wait_until_ready(mut child: Child, port: u16, deadline: Duration) -> Startup {
    let until = Instant::now() + deadline;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Startup::Exited(status);
        }
        if answers_as(port, child.id()) {
            return Startup::Ready(child);
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return Startup::TimedOut;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `port` answers PING and belongs to process `pid` (not another test's server that
/// happened to take the port first).
fn answers_as(port: u16, pid: u32) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut writer = match stream.try_clone() {
        Ok(writer) => writer,
        Err(_) => return false,
    };
    let mut reader = BufReader::new(stream);
    if writer.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || !line.starts_with("+PONG") {
        return false;
    }
    if writer
        .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        .is_err()
    {
        return false;
    }
    let mut header = String::new();
    if reader.read_line(&mut header).is_err() {
        return false;
    }
    let Some(len) = header
        .trim()
        .strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return false;
    };
    let mut body = vec![0u8; len + 2];
    if reader.read_exact(&mut body).is_err() {
        return false;
    }
    let expected = format!("process_id:{pid}");
    String::from_utf8_lossy(&body)
        .lines()
        .any(|line| line.trim() == expected)
}

fn free_port() -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("binding a probe socket");
    listener.local_addr().expect("probe socket address").port()
}

/// Quotes a config argument for Redis's config parser.
fn quote(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(count);
    lines[start..]
        .iter()
        .map(|line| format!("{line}\n"))
        .collect()
}

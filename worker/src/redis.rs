//! A Redis connection for a long-running worker, to one server or to a Redis Cluster.
//!
//! The worker is given one URL for a single server, or a comma-separated list of two or more
//! for a cluster: the list names seed nodes, and the cluster client learns the rest from
//! `CLUSTER SLOTS`. [`connect`] retries the first connection with capped backoff until it
//! succeeds, the error turns out not to be transient (a bad URL, a refused password), or
//! shutdown fires. The returned [`Connection`] then reconnects by itself after a dropped
//! connection (and, in a cluster, follows the slot map after a failover); a command issued
//! while it does fails, and the worker retries it on its own schedule.
//!
//! In a cluster, keys written in one transaction must share a slot. [`hash_tag`] and
//! [`in_slot_of`] name a key so that it lands in the slot of another.
//!
//! URLs are logged only through [`redact`]: a password in `redis://user:secret@host` never
//! reaches a log line or an error message.

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use ::redis::{
    Client, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};

use crate::backoff::Backoff;
use crate::shutdown::Shutdown;

/// How [`connect`] connects and retries.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// How long one command may wait for its reply; `None` waits forever. A worker that
    /// issues blocking reads needs more than its `BLOCK` time here.
    pub response_timeout: Option<Duration>,
    /// How long one attempt to open the connection may take.
    pub connect_timeout: Duration,
    /// Delays between failed attempts to connect.
    pub backoff: Backoff,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            response_timeout: Some(Duration::from_secs(5)),
            connect_timeout: Duration::from_secs(2),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
                .with_jitter(),
        }
    }
}

/// Why [`connect`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL cannot be used; the message names the redacted URL, never the password.
    #[error("invalid redis url {url}: {kind:?}")]
    InvalidUrl { url: String, kind: ErrorKind },
    /// The server answered, but refused us (for instance a wrong password or user).
    #[error("redis at {url} refused the connection: {source}")]
    Refused { url: String, source: RedisError },
    /// Shutdown fired before a connection was made.
    #[error("shutdown before redis at {url} was reached")]
    ShutDown { url: String },
}

/// A connection to one Redis server or to a Redis Cluster. Cloning it is cheap: clones share
/// the underlying multiplexed connections.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// Whether this connection speaks to a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// Sends `cmd` to the master serving the slot of `key`.
    ///
    /// The cluster client finds a command's node from where common commands keep their keys.
    /// Module commands, `WAIT` and `INFO` are not among them: a `WAIT` or an `INFO` must go to
    /// the node that holds the stream they are about, and is routed here by that key. On a
    /// single server this is an ordinary query.
    pub async fn query_at<T: FromRedisValue>(&mut self, cmd: &Cmd, key: &str) -> RedisResult<T> {
        match self {
            Connection::Single(con) => cmd.query_async(con).await,
            Connection::Cluster(con) => {
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = con.route_command(cmd.clone(), routing).await?;
                Ok(::redis::from_redis_value(value)?)
            }
        }
    }
}

impl std::fmt::Debug for Connection {
    /// Names the kind of connection only: the addresses are logged, redacted, when it opens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connection::Single(_) => f.write_str("Connection::Single"),
            Connection::Cluster(_) => f.write_str("Connection::Cluster"),
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(con) => con.req_packed_command(cmd),
            Connection::Cluster(con) => con.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(con) => con.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(con) => con.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(con) => con.get_db(),
            Connection::Cluster(con) => con.get_db(),
        }
    }
}

/// Where a worker's Redis is: one server, or the seed nodes of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoints {
    Single(String),
    Cluster(Vec<String>),
}

impl Endpoints {
    /// Reads one URL, or a comma-separated list of two or more cluster seed nodes.
    pub fn parse(text: &str) -> Endpoints {
        let urls: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(String::from)
            .collect();
        match <[String; 1]>::try_from(urls) {
            Ok([url]) => Endpoints::Single(url),
            Err(urls) if urls.is_empty() => Endpoints::Single(String::new()),
            Err(urls) => Endpoints::Cluster(urls),
        }
    }

    /// The URLs, each with its password redacted, for logs.
    pub fn shown(&self) -> String {
        match self {
            Endpoints::Single(url) => redact(url),
            Endpoints::Cluster(urls) => {
                let shown: Vec<String> = urls.iter().map(|url| redact(url)).collect();
                format!("cluster {}", shown.join(","))
            }
        }
    }
}

/// Opens one connection to `urls` (see [`Endpoints::parse`]) without retrying. Fit for a
/// connection of its own, such as the one that carries blocking reads: `response_timeout`
/// must then outlast the `BLOCK` time.
pub async fn open(
    urls: &str,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> RedisResult<Connection> {
    match Endpoints::parse(urls) {
        Endpoints::Single(url) => {
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(response_timeout))
                .set_connection_timeout(Some(connect_timeout))
                .set_max_delay(Duration::from_secs(10));
            let client = Client::open(url.as_str())?;
            let manager = ConnectionManager::new_with_config(client, config).await?;
            Ok(Connection::Single(manager))
        }
        Endpoints::Cluster(nodes) => {
            let client = cluster_builder(&nodes, connect_timeout, Some(response_timeout))?;
            Ok(Connection::Cluster(client.get_async_connection().await?))
        }
    }
}

fn cluster_builder(
    nodes: &[String],
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
) -> RedisResult<::redis::cluster::ClusterClient> {
    let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(connect_timeout)
        // MOVED and ASK after a failover or a slot move are followed; a few tries are
        // enough, and the worker's own retry takes over after that.
        .retries(3);
    if let Some(timeout) = response_timeout {
        builder = builder.response_timeout(timeout);
    }
    builder.build()
}

/// Connects to `url` (one URL, or a comma-separated list of cluster seed nodes), retrying
/// transient failures with `options.backoff` until `shutdown`.
pub async fn connect(
    url: &str,
    options: ConnectOptions,
    shutdown: &Shutdown,
) -> Result<Connection, ConnectError> {
    let endpoints = Endpoints::parse(url);
    let shown = endpoints.shown();
    let mut backoff = options.backoff.clone();
    let open = || async {
        match &endpoints {
            Endpoints::Single(url) => {
                // The parse error is reduced to its kind: its text could echo parts of the URL.
                let client =
                    Client::open(url.as_str()).map_err(|err| ConnectError::InvalidUrl {
                        url: shown.clone(),
                        kind: err.kind(),
                    })?;
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(options.response_timeout)
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_max_delay(Duration::from_secs(10));
                Ok(ConnectionManager::new_with_config(client, config)
                    .await
                    .map(Connection::Single))
            }
            Endpoints::Cluster(nodes) => {
                let client =
                    cluster_builder(nodes, options.connect_timeout, options.response_timeout)
                        .map_err(|err| ConnectError::InvalidUrl {
                            url: shown.clone(),
                            kind: err.kind(),
                        })?;
                Ok(client.get_async_connection().await.map(Connection::Cluster))
            }
        }
    };

    loop {
        let attempt = tokio::select! {
            attempt = open() => attempt?,
            _ = shutdown.wait() => return Err(ConnectError::ShutDown { url: shown }),
        };
        match attempt {
            Ok(connection) => {
                tracing::info!(url = %shown, attempts = backoff.attempts() + 1, "redis connected");
                return Ok(connection);
            }
            Err(err) if is_transient(&err) => {
                tracing::error!(url = %shown, error = %err, "redis connect failed; retrying");
                if !backoff.sleep(shutdown).await {
                    return Err(ConnectError::ShutDown { url: shown });
                }
            }
            Err(source) => return Err(ConnectError::Refused { url: shown, source }),
        }
    }
}

/// The hash tag of a key name as Redis Cluster reads it: what lies between the first `{` and
/// the first `}` after it, when that is not empty. Keys with the same tag share a slot.
pub fn hash_tag(name: &str) -> Option<&str> {
    let open = name.find('{')?;
    let rest = &name[open + 1..];
    let close = rest.find('}')?;
    (close > 0).then(|| &rest[..close])
}

/// `name`, made to share the cluster slot of `anchor`: unchanged when `anchor` has no hash
/// tag (a single server, where slots do not matter), otherwise `name` followed by `:{tag}`.
/// A `name` that has a hash tag of its own keeps it, and is unchanged too.
pub fn in_slot_of(name: &str, anchor: &str) -> String {
    match (hash_tag(anchor), hash_tag(name)) {
        (Some(tag), None) => format!("{name}:{{{tag}}}"),
        _ => name.to_string(),
    }
}

/// Whether two keys fall in the same cluster slot.
pub fn same_slot(a: &str, b: &str) -> bool {
    Slot::for_key(a.as_bytes()) == Slot::for_key(b.as_bytes())
}

/// Whether `err` may go away by itself: the connection broke or timed out, or the server is
/// busy loading or failing over. Errors in the command or in the credentials are not.
pub fn is_transient(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_connection_dropped()
        || matches!(
            err.code(),
            Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN")
        )
}

/// `url` with its password (and any `password=`/`pass=` query value) replaced by `REDACTED`.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut shown = redact_userinfo(base);
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if matches!(name, "password" | "pass") => {
                    format!("{name}=REDACTED")
                }
                _ => pair.to_string(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

fn redact_userinfo(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    // The last '@' ends the userinfo: a password may itself contain '@'.
    let Some(at) = authority.rfind('@') else {
        return base.to_string();
    };
    let (userinfo, host) = authority.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:REDACTED{host}{path}"),
        None => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_and_keeps_the_rest() {
        assert_eq!(
            redact("redis://engine:s3cr@t@127.0.0.1:6379/0"),
            "redis://engine:REDACTED@127.0.0.1:6379/0"
        );
        assert_eq!(redact("rediss://:pw@host/"), "rediss://:REDACTED@host/");
        assert_eq!(
            redact("redis+unix:///run/redis.sock?db=1&pass=pw"),
            "redis+unix:///run/redis.sock?db=1&pass=REDACTED"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://user@host"), "redis://user@host");
    }

    #[test]
    fn one_url_is_a_server_and_a_list_is_a_cluster() {
        assert_eq!(
            Endpoints::parse("redis://a:1"),
            Endpoints::Single("redis://a:1".into())
        );
        assert_eq!(
            Endpoints::parse(" redis://a:1 , redis://b:2,"),
            Endpoints::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        let shown = Endpoints::parse("redis://u:pw@a:1,redis://u:pw@b:2").shown();
        assert_eq!(
            shown,
            "cluster redis://u:REDACTED@a:1,redis://u:REDACTED@b:2"
        );
    }

    #[test]
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(
            hash_tag("quantum:stream:{reconcile}.close"),
            Some("reconcile")
        );
        assert_eq!(hash_tag("a{}b{c}"), None);
        assert_eq!(hash_tag("a{b"), None);
        assert_eq!(hash_tag("a}b{c}"), Some("c"));
        assert_eq!(hash_tag("plain"), None);
    }

    #[test]
    fn in_slot_of_places_a_name_beside_its_anchor() {
        let anchor = "quantum:stream:{reconcile}.close";
        let placed = in_slot_of("quantum:apply:dedupe:p1", anchor);
        assert_eq!(placed, "quantum:apply:dedupe:p1:{reconcile}");
        assert!(same_slot(&placed, anchor));
        // Without a tag on the anchor the name is kept: one server has no slots.
        assert_eq!(in_slot_of("x", "quantum:stream:reconcile.close"), "x");
        // A name with its own tag is not given a second one, which Redis would ignore.
        assert_eq!(in_slot_of("x:{own}", anchor), "x:{own}");
        assert!(!same_slot("a", "b"));
    }

    #[test]
    fn invalid_url_error_does_not_show_the_password() {
        let (_trigger, shutdown) = Shutdown::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = "nosuchscheme://u:hunter2@host";
        let err = runtime
            .block_on(connect(url, ConnectOptions::default(), &shutdown))
            .expect_err("bad scheme accepted");
        assert!(matches!(err, ConnectError::InvalidUrl { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_server_is_retried_until_shutdown() {
        let (trigger, shutdown) = Shutdown::new();
        // Port 1 on loopback refuses at once, so every attempt fails as a transient refusal.
        let attempt = tokio::spawn({
            let shutdown = shutdown.clone();
            let url = "redis://127.0.0.1:1/";
            async move { connect(url, ConnectOptions::default(), &shutdown).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!attempt.is_finished(), "gave up before shutdown");
        trigger.fire();
        let err = attempt.await.unwrap().expect_err("connected to port 1");
        assert!(matches!(err, ConnectError::ShutDown { .. }), "{err}");
    }
}

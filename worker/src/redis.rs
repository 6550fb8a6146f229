//! A Redis connection for a long-running worker.
//!
//! [`connect`] retries the first connection with capped backoff until it succeeds, the error
//! turns out not to be transient (a bad URL, a refused password), or shutdown fires. The
//! returned [`ConnectionManager`] then reconnects by itself after a dropped connection; a
//! command issued while it does fails, and the worker retries it on its own schedule.
//!
//! URLs are logged only through [`redact`]: a password in `redis://user:secret@host` never
//! reaches a log line or an error message.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, RedisError};

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

/// Connects to `url`, retrying transient failures with `options.backoff` until `shutdown`.
pub async fn connect(
    url: &str,
    options: ConnectOptions,
    shutdown: &Shutdown,
) -> Result<ConnectionManager, ConnectError> {
    let shown = redact(url);
    // The parse error is reduced to its kind: its text could echo parts of the URL.
    let client = Client::open(url).map_err(|err| ConnectError::InvalidUrl {
        url: shown.clone(),
        kind: err.kind(),
    })?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(options.response_timeout)
        .set_connection_timeout(Some(options.connect_timeout))
        .set_max_delay(Duration::from_secs(10));
    let mut backoff = options.backoff;

    loop {
        let attempt = tokio::select! {
            attempt = ConnectionManager::new_with_config(client.clone(), config.clone()) => attempt,
            _ = shutdown.wait() => return Err(ConnectError::ShutDown { url: shown }),
        };
        match attempt {
            Ok(manager) => {
                tracing::info!(url = %shown, attempts = backoff.attempts() + 1, "redis connected");
                return Ok(manager);
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

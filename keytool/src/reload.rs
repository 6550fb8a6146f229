//! Asking servers to reload their keyring file, and reading back what they hold.
//!
//! Each server reads its own file, so a reload only proves something when the tool also checks
//! the signing key each server reports afterwards.

use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo};

/// How long connecting, and each reply, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// One key as `RECONCILE.KEYRING LIST` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub kid: String,
    pub role: String,
    pub fingerprint: String,
}

/// Why a server could not be reloaded.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The URL could not be parsed. Its text is not repeated: it could hold a password.
    #[error("not a redis:// URL")]
    BadUrl,
    /// The URL carries a password, which the process list would show to every local user.
    #[error("{0}: a password in the URL is visible to every local user; put it in ${1} instead")]
    PasswordInUrl(String, String),
    /// Connecting, authenticating or a command failed.
    #[error("{server}: {source}")]
    Redis {
        server: String,
        source: redis::RedisError,
    },
    /// The server answered LIST with something else than rows of three strings.
    #[error("{0}: unexpected RECONCILE.KEYRING LIST reply")]
    BadList(String),
}

/// A server to reload, with the password (if any) from the environment.
pub struct Server {
    shown: String,
    info: ConnectionInfo,
}

impl Server {
    /// Parses `url` (`redis://[user@]host:port`, or `unix:///path`) and adds `password`.
    pub fn new(
        url: &str,
        password: Option<&str>,
        password_env: &str,
    ) -> Result<Server, ReloadError> {
        let info = url
            .into_connection_info()
            .map_err(|_| ReloadError::BadUrl)?;
        let settings = info.redis_settings().clone();
        let shown = match settings.username() {
            Some(user) => format!("{user}@{}", info.addr()),
            None => info.addr().to_string(),
        };
        if settings.password().is_some() {
            return Err(ReloadError::PasswordInUrl(shown, password_env.to_string()));
        }
        let info = match password {
            Some(password) => info.set_redis_settings(settings.set_password(password)),
            None => info,
        };
        Ok(Server { shown, info })
    }

    /// The server as it may be printed: user, host and port, never a password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `RECONCILE.KEYRING RELOAD`, then the keys the server holds afterwards.
    pub fn reload(&self) -> Result<Vec<Listed>, ReloadError> {
        let mut con = self.connect()?;
        redis::cmd("RECONCILE.KEYRING")
            .arg("RELOAD")
            .query::<()>(&mut con)
            .map_err(|source| self.error(source))?;
        self.list_on(&mut con)
    }

    /// The keys the server holds.
    pub fn list(&self) -> Result<Vec<Listed>, ReloadError> {
        let mut con = self.connect()?;
        self.list_on(&mut con)
    }

    fn connect(&self) -> Result<redis::Connection, ReloadError> {
        let client = redis::Client::open(self.info.clone()).map_err(|source| self.error(source))?;
        let con = client
            .get_connection_with_timeout(TIMEOUT)
            .map_err(|source| self.error(source))?;
        con.set_read_timeout(Some(TIMEOUT))
            .and_then(|()| con.set_write_timeout(Some(TIMEOUT)))
            .map_err(|source| self.error(source))?;
        Ok(con)
    }

    fn list_on(&self, con: &mut redis::Connection) -> Result<Vec<Listed>, ReloadError> {
        let rows: Vec<Vec<String>> = redis::cmd("RECONCILE.KEYRING")
            .arg("LIST")
            .query(con)
            .map_err(|source| self.error(source))?;
        rows.into_iter()
            .map(|row| match <[String; 3]>::try_from(row) {
                Ok([kid, role, fingerprint]) => Ok(Listed {
                    kid,
                    role,
                    fingerprint,
                }),
                Err(_) => Err(ReloadError::BadList(self.shown.clone())),
            })
            .collect()
    }

    fn error(&self, source: redis::RedisError) -> ReloadError {
        ReloadError::Redis {
            server: self.shown.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_password_in_the_url_without_repeating_it() {
        let err = Server::new(
            "redis://keyadmin:hunter2@10.0.0.5:6379",
            None,
            "REDISCLI_AUTH",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(
            err.contains("keyadmin@10.0.0.5:6379") && err.contains("REDISCLI_AUTH"),
            "{err}"
        );
    }

    #[test]
    fn shows_user_host_and_port_only() {
        let server = Server::new("redis://keyadmin@127.0.0.1:6380/", Some("s3cret"), "X").unwrap();
        assert_eq!(server.shown(), "keyadmin@127.0.0.1:6380");
        assert!(matches!(
            Server::new("http://x", None, "X"),
            Err(ReloadError::BadUrl)
        ));
    }
}

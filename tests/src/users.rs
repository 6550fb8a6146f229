//! The ACL users the worker tests run as, shaped like those of `redis.conf.example`:
//! `engine`, which may sign, and `apply`, which holds only what the apply worker needs on a
//! single server. Tests that start the workers against a module server share them from here.

use crate::client::Client;
use crate::server::ServerOptions;

/// The engine's password in tests.
pub const ENGINE_PASSWORD: &str = "pw-engine";
/// The apply worker's password in tests.
pub const APPLY_PASSWORD: &str = "pw-apply";

/// The engine may run anything, signing included.
pub fn engine_rules(password: &str) -> Vec<String> {
    ["on", &format!(">{password}"), "~*", "&*", "+@all"]
        .iter()
        .map(|rule| rule.to_string())
        .collect()
}

/// The apply worker's keys and commands on a single server, and nothing else.
pub fn apply_rules(password: &str) -> Vec<String> {
    let mut rules = vec!["on".to_string(), format!(">{password}")];
    rules.extend(
        [
            "resetkeys",
            "~quantum:stream:reconcile.close",
            "~quantum:stream:apply.result",
            "~quantum:apply:dedupe:*",
            "~quantum:reconcile:hold:*",
            "resetchannels",
            "-@all",
            "+reconcile.xreadverified",
            "+xack",
            "+xautoclaim",
            "+xgroup|create",
            "+xpending",
            "+xadd",
            "+get",
            "+set",
            "+exists",
            "+expire",
            "+multi",
            "+exec",
            "+info",
            "+ping",
        ]
        .iter()
        .map(|rule| rule.to_string()),
    );
    rules
}

/// Creates `user` with `rules` on a running server (ACL SETUSER: in memory only, neither
/// replicated nor kept across a restart).
pub fn set_user(admin: &mut Client, user: &str, rules: &[String]) {
    let mut args = vec!["ACL".to_string(), "SETUSER".to_string(), user.to_string()];
    args.extend(rules.iter().cloned());
    admin.ok(&args);
}

/// Creates both users, with the test passwords, on a running server.
pub fn create_users(admin: &mut Client) {
    set_user(admin, "engine", &engine_rules(ENGINE_PASSWORD));
    set_user(admin, "apply", &apply_rules(APPLY_PASSWORD));
}

/// `options` with both users, with the test passwords, in the config file, so that they come
/// back with every restart.
pub fn with_users(options: ServerOptions) -> ServerOptions {
    let line = |user: &str, rules: Vec<String>| {
        let mut words = vec![user.to_string()];
        words.extend(rules);
        words
    };
    let engine = line("engine", engine_rules(ENGINE_PASSWORD));
    let apply = line("apply", apply_rules(APPLY_PASSWORD));
    options
        .config("user", &as_strs(&engine))
        .config("user", &as_strs(&apply))
}

fn as_strs(words: &[String]) -> Vec<&str> {
    words.iter().map(String::as_str).collect()
}

/// A connection to `port` authenticated as `engine`.
pub fn engine_client(port: u16) -> Client {
    let mut client = Client::connect(port);
    client.ok(&["AUTH", "engine", ENGINE_PASSWORD]);
    client
}

/// The URL of `user` with `password` on `port`.
pub fn url(user: &str, password: &str, port: u16) -> String {
    format!("redis://{user}:{password}@127.0.0.1:{port}/")
}

//! The tracing subscriber both workers install at startup.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs a formatting subscriber on stdout filtered by `RUST_LOG`, `info` when it is unset
/// or invalid. Colours only on a terminal, so journald and files get plain text.
///
/// Returns `false` when a global subscriber was already installed (as in tests that call it
/// twice); the existing one stays.
pub fn init() -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal())
        .try_init()
        .is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn second_init_keeps_the_first_subscriber() {
        super::init();
        assert!(!super::init());
    }
}

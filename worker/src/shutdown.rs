//! A shutdown token shared by every task of a worker.
//!
//! [`Shutdown`] is cheap to clone; [`Shutdown::wait`] resolves once the matching
//! [`ShutdownTrigger`] fires or is dropped, so a task blocked in `select!` never outlives the
//! process that owns the trigger. [`Shutdown::on_signals`] fires it on SIGTERM or SIGINT.

use std::io;
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Resolves when the worker should stop. Clone it into every task.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Fires the [`Shutdown`] it was created with. Dropping every clone fires it too.
#[derive(Clone, Debug)]
pub struct ShutdownTrigger {
    tx: Arc<watch::Sender<bool>>,
}

impl Shutdown {
    /// A token and the trigger that fires it.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx: Arc::new(tx) }, Shutdown { rx })
    }

    /// A token that fires on the first SIGTERM or SIGINT. Must be called inside a tokio
    /// runtime; fails when the signal handlers cannot be installed.
    pub fn on_signals() -> io::Result<Shutdown> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutting down");
            trigger.fire();
        });
        Ok(shutdown)
    }

    /// Whether shutdown has been asked for (or the trigger is gone).
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Resolves once shutdown is asked for; at once if it already was.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means every trigger was dropped: nobody can fire it any more, so stop.
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

impl ShutdownTrigger {
    /// Asks every clone of the token to stop. Firing twice is harmless.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn wait_resolves_for_every_clone_after_fire() {
        let (trigger, shutdown) = Shutdown::new();
        let other = shutdown.clone();
        assert!(!shutdown.is_triggered());
        let waiter = tokio::spawn(async move { other.wait().await });

        trigger.fire();
        waiter.await.expect("waiter task");
        shutdown.wait().await;
        assert!(shutdown.is_triggered());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_stays_pending_until_fired() {
        let (trigger, shutdown) = Shutdown::new();
        let waited = tokio::time::timeout(Duration::from_secs(3600), shutdown.wait()).await;
        assert!(waited.is_err(), "resolved without a trigger");
        drop(trigger);
    }

    #[tokio::test]
    async fn dropping_the_trigger_counts_as_shutdown() {
        let (trigger, shutdown) = Shutdown::new();
        drop(trigger);
        shutdown.wait().await;
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn on_signals_installs_handlers_and_starts_unfired() {
        let shutdown = Shutdown::on_signals().expect("installing handlers");
        assert!(!shutdown.is_triggered());
    }
}

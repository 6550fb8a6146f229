//! The module's process-wide state: settings fixed at load, the current keyring, the run-time
//! age limit, and the counters shown by `INFO reconcile`.
//!
//! Redis calls the module from its main thread only; the locks and atomics are there so the
//! types are sound, not because of contention.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crate::keyring::Keyring;
use crate::mac::Rejection;
use crate::settings::Settings;

static SETTINGS: OnceLock<Settings> = OnceLock::new();
/// Guard names (each guard and its quarantine stream), kept flat for the filter's hot path.
static PROTECTED: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
static KEYRING: RwLock<Option<Arc<Keyring>>> = RwLock::new(None);
pub static MAX_AGE_MS: AtomicI64 = AtomicI64::new(crate::settings::DEFAULT_MAX_AGE_MS);

/// Installs the settings and first keyring. Returns false if the module was already set up.
pub fn install(settings: Settings, ring: Keyring) -> bool {
    MAX_AGE_MS.store(settings.max_age_ms, Ordering::Relaxed);
    let protected = settings.protected_names();
    let fresh = SETTINGS.set(settings).is_ok() && PROTECTED.set(protected).is_ok();
    replace_keyring(ring);
    fresh
}

pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get()
}

pub fn protected_names() -> &'static [Vec<u8>] {
    PROTECTED.get().map(Vec::as_slice).unwrap_or(&[])
}

/// The ring in force. Cloning the `Arc` lets a command finish with the ring it started with
/// even if a reload swaps it meanwhile.
pub fn keyring() -> Option<Arc<Keyring>> {
    KEYRING
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Puts `ring` in force, prepared for the guarded streams.
pub fn replace_keyring(mut ring: Keyring) {
    if let Some(settings) = settings() {
        ring.prepare_streams(&settings.guards);
    }
    let mut slot = KEYRING
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *slot = Some(Arc::new(ring));
}

pub fn max_age_ms() -> u64 {
    u64::try_from(MAX_AGE_MS.load(Ordering::Relaxed)).unwrap_or(0)
}

/// Counters for `INFO reconcile`.
pub struct Stats {
    pub signed: AtomicU64,
    /// Signed entries that nothing would have read from the replication stream.
    pub signed_unpropagated: AtomicU64,
    pub verified: AtomicU64,
    pub rejected: [AtomicU64; 5],
    pub guard_denied: AtomicU64,
    pub quarantined: AtomicU64,
    pub keyring_reloads: AtomicU64,
    pub keyring_reload_failures: AtomicU64,
}

pub static STATS: Stats = Stats {
    signed: AtomicU64::new(0),
    signed_unpropagated: AtomicU64::new(0),
    verified: AtomicU64::new(0),
    rejected: [const { AtomicU64::new(0) }; 5],
    guard_denied: AtomicU64::new(0),
    quarantined: AtomicU64::new(0),
    keyring_reloads: AtomicU64::new(0),
    keyring_reload_failures: AtomicU64::new(0),
};

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn reject(&self, why: Rejection) {
        if let Some(c) = self.rejected.get(why.index()) {
            Self::add(c, 1);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(Self::get).sum()
    }
}

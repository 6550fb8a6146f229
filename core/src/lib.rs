//! The parts of reconcile-guard that decide what a signed entry is, with no Redis in them:
//! the keyring file format and the canonical MAC over a stream entry.
//!
//! The Redis module signs and verifies with this crate; the key management tool reads and
//! writes keyring files with it. Keeping it free of Redis lets both be tested on their own.

pub mod keyring;
pub mod mac;

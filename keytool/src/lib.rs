//! The pieces of `reconcile-keyring`, the key management command of reconcile-guard.
//!
//! A rotation is three steps that must never leave Redis without a usable ring: put a fresh key
//! first in the keyring file, have every server reload it, and drop the old keys once nothing
//! they signed can still be delivered. Each step is one call of the command.
//!
//! - [`kid`]: key ids that carry the time a key was made;
//! - [`ring`]: the keyring text, edited line by line and checked by `reconcile-core`;
//! - [`atomic`]: replacing the file so that a reader sees the old ring or the new one, never a
//!   half-written one, with mode 0600 and the right owner;
//! - [`reload`]: `RECONCILE.KEYRING RELOAD` and `LIST` on each server.
//!
//! Key bytes live only in zeroized buffers and in the file; nothing here formats them.

#![forbid(unsafe_code)]

pub mod atomic;
pub mod kid;
pub mod reload;
pub mod ring;

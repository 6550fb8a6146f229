//! The setups tests share: one random key, its keyring, and a module server guarding
//! [`STREAM`]; optionally with forged entries already planted in it.

use crate::client::Client;
use crate::forge::{self, Forgery};
use crate::keyring::{Key, KeyringFile};
use crate::plant::plant_entries;
use crate::reply::Entry;
use crate::server::{data_dir, RedisServer, ServerOptions};
use crate::STREAM;

/// A running module server with a one-key keyring.
pub struct Guarded {
    /// The signing key, kid `k1`.
    pub key: Key,
    /// The keyring file the server loaded.
    pub keyring: KeyringFile,
    /// The server.
    pub server: RedisServer,
}

impl Guarded {
    /// Starts a server guarding the default stream with a fresh key.
    pub fn start() -> Guarded {
        Guarded::start_with(|options| options)
    }

    /// Like [`Guarded::start`], with the options adjusted by `adjust` first.
    pub fn start_with(adjust: impl FnOnce(ServerOptions) -> ServerOptions) -> Guarded {
        let key = Key::random("k1");
        let keyring = KeyringFile::new(&[&key]);
        let server = adjust(ServerOptions::guarded(&keyring)).start();
        Guarded {
            key,
            keyring,
            server,
        }
    }

    /// A new connection to the server.
    pub fn client(&self) -> Client {
        self.server.client()
    }
}

/// The module's freshness window when no `max-age-ms` is given.
pub const DEFAULT_MAX_AGE_MS: u64 = 300_000;

/// A server whose guarded stream already holds every forgery of [`forge::all`], planted through
/// an RDB file, followed by nothing else yet.
pub struct Forged {
    /// The module server and its key.
    pub fixture: Guarded,
    /// The planted entries: their IDs and what each one tries.
    pub planted: Vec<(String, Forgery)>,
}

impl Forged {
    /// Signs a genuine entry on a throwaway server, plants the forgeries built from it into a
    /// fresh directory, and starts the module server there with the same keyring.
    pub fn start() -> Forged {
        let key = Key::random("k1");
        let keyring = KeyringFile::new(&[&key]);
        let genuine = genuine_entry(&keyring, STREAM);

        let forgeries = forge::all(&genuine, STREAM, &key, DEFAULT_MAX_AGE_MS);
        let dir = data_dir();
        let fields: Vec<_> = forgeries
            .iter()
            .map(|forgery| forgery.fields.clone())
            .collect();
        let ids = plant_entries(&dir, STREAM, &fields);

        let server = ServerOptions::guarded(&keyring).in_dir(&dir).start();
        let planted = ids.into_iter().zip(forgeries).collect();
        Forged {
            fixture: Guarded {
                key,
                keyring,
                server,
            },
            planted,
        }
    }

    /// A new connection to the module server.
    pub fn client(&self) -> Client {
        self.fixture.client()
    }
}

/// Signs one order into `stream` on a throwaway server that loads `keyring` and returns it as
/// stored, trailer included.
pub fn genuine_entry(keyring: &KeyringFile, stream: &str) -> Entry {
    let options = ServerOptions::with_module_args(&["keyring", &keyring.path_str()]);
    let server = options.load_arg("guard", stream).start();
    let mut client = server.client();
    client.sign(
        stream,
        &[("symbol", "BTCUSDT"), ("qty", "0.007"), ("side", "SELL")],
    );
    client.xrange(stream).pop().expect("the signed entry")
}

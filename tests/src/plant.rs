//! Writing entries the guard would refuse, through a server that runs without the module.
//!
//! The plain server writes `dump.rdb` in a data directory; a module server started afterwards
//! in the same directory loads it. This is how a forged entry reaches a guarded stream without
//! any command the guard could refuse: a copied or tampered RDB file.

use crate::client::Client;
use crate::server::{DataDir, ServerOptions};

/// Runs `write` against a module-less server in `dir`, then SAVEs and stops it.
pub fn plant_with<T>(dir: &DataDir, write: impl FnOnce(&mut Client) -> T) -> T {
    let server = ServerOptions::plain().in_dir(dir).start();
    let mut client = server.client();
    let result = write(&mut client);
    client.ok(&["SAVE"]);
    server.shutdown();
    result
}

/// XADDs each field list to `key` with an auto ID; returns the IDs in order.
pub fn plant_entries(dir: &DataDir, key: &str, entries: &[Vec<(Vec<u8>, Vec<u8>)>]) -> Vec<String> {
    plant_with(dir, |client| {
        entries
            .iter()
            .map(|fields| xadd(client, key, fields))
            .collect()
    })
}

/// XADD of raw field/value pairs with an auto ID.
pub fn xadd(client: &mut Client, key: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    let mut args: Vec<Vec<u8>> = vec![b"XADD".to_vec(), key.as_bytes().to_vec(), b"*".to_vec()];
    for (field, value) in fields {
        args.push(field.clone());
        args.push(value.clone());
    }
    client.text(&args)
}

//! Replies of a read as the verified read takes them apart: any bytes are read or refused
//! without a panic, and what is read is consistent (every entry's fields lie inside the items
//! and come in pairs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reconcile::resp::stream_read;

fuzz_target!(|bytes: &[u8]| {
    if let Some(read) = stream_read(bytes) {
        for (_, fields) in &read.entries {
            if let Some(range) = fields {
                assert!(range.end <= read.items.len() && range.start <= range.end);
                assert_eq!(range.len() % 2, 0);
            }
        }
    }
});

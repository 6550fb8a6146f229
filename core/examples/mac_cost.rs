//! What signing one close plan costs, against the floor of this machine: SHA-256 over the same
//! number of bytes, and HMAC-SHA256 over them in one piece.
//!
//! `cargo run --release -p reconcile-core --example mac_cost [iterations]` prints one line per
//! measurement as `name ns_per_entry`, for `scripts/bench.sh` to put in its table.

use std::hint::black_box;
use std::time::Instant;

use hmac::{Hmac, Mac};
use reconcile_core::keyring::Keyring;
use reconcile_core::mac;
use sha2::{Digest, Sha256};

/// The fields of a close plan as the engine publishes them, but the last.
const PLAN: [&[u8]; 24] = [
    b"plan_id",
    b"reconclose:BTCUSDT:a1b2c3d4e5f6:1737846123456",
    b"decision",
    b"RECONCILE_CLOSE",
    b"symbol",
    b"BTCUSDT",
    b"side",
    b"SELL",
    b"type",
    b"MARKET",
    b"qty",
    b"0.002",
    b"reduceOnly",
    b"true",
    b"reason",
    b"reconcile_drift",
    b"source",
    b"p3.4",
    b"signature",
    b"a1b2c3d4e5f6",
    b"exchange_amt",
    b"0.012",
    b"ledger_amt",
    b"0.010",
    // ts, the thirteenth field, is added below to keep the array a literal.
];

fn time(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    // A throwaway key for the measurement; it never leaves this process.
    let mut ring =
        Keyring::parse(b"bench 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n")
            .expect("the literal keyring parses");
    let stream = b"quantum:stream:reconcile.close";
    // Prepared for the stream, as the module prepares its ring for the guarded streams.
    ring.prepare_streams(&[stream]);
    let key = ring.signing();
    let mut fields: Vec<&[u8]> = PLAN.to_vec();
    fields.extend_from_slice(&[b"ts", b"1737846123456"]);

    // The bytes the MAC covers, laid out as the canonical encoding does.
    let header = [
        b"reconcile-guard/v1".len(),
        b"bench".len(),
        stream.len(),
        13,
    ];
    let items = header.into_iter().chain(fields.iter().map(|f| f.len()));
    let encoded_len: usize = items.map(|len| len + 8).sum::<usize>() + 8;
    let flat = vec![0x5au8; encoded_len];

    let sign = time(iterations, || {
        black_box(mac::sign(
            key.mac(),
            b"bench",
            stream,
            b"1737846123456",
            black_box(&fields),
        ));
    });
    let sha_floor = time(iterations, || {
        black_box(Sha256::digest(black_box(&flat)));
    });
    let raw_key = [7u8; 32];
    let hmac_keyed = Hmac::<Sha256>::new_from_slice(&raw_key).expect("any key length");
    let hmac_floor = time(iterations, || {
        let mut m = hmac_keyed.clone();
        m.update(black_box(&flat));
        black_box(m.finalize());
    });

    let sign_again = time(iterations, || {
        black_box(mac::sign(
            key.mac(),
            b"bench",
            stream,
            b"1737846123456",
            black_box(&fields),
        ));
    });
    let sign = sign.min(sign_again);
    println!("encoded_bytes {encoded_len}");
    println!("sign_ns {sign:.0}");
    println!("hmac_one_piece_ns {hmac_floor:.0}");
    println!("sha256_floor_ns {sha_floor:.0}");
}

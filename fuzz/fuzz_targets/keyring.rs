//! Keyring text: any bytes are refused (without quoting a key) or read consistently, a ring
//! written out in any layout parses back to the same keys, and a bad line among good ones is
//! refused with its own line number.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use reconcile_core::keyring::properties::{
    bad_line_is_reported_at_its_line, parse_accepts_consistently, ring_round_trip,
};
use reconcile_fuzz::RingInput;

#[derive(Arbitrary, Debug)]
struct Input {
    text: Vec<u8>,
    ring: RingInput,
    flaw: usize,
    at: usize,
    short: usize,
}

fuzz_target!(|input: Input| {
    parse_accepts_consistently(&input.text);
    let ring = input.ring.ring();
    ring_round_trip(&ring);
    bad_line_is_reported_at_its_line(&ring, input.flaw, input.at, input.short);
});

//! `RECONCILE.XREADVERIFIED` arguments: any word list is refused or parsed consistently, and a
//! well-formed read written out with its options in any order parses back to its parts.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use reconcile::args::properties::{xread_accepts_consistently, xread_round_trip};
use reconcile_fuzz::{command, views, Word, XreadInput};

#[derive(Arbitrary, Debug)]
struct Input {
    words: Vec<Word>,
    call: XreadInput,
}

fuzz_target!(|input: Input| {
    let args = command(b"RECONCILE.XREADVERIFIED", &input.words);
    xread_accepts_consistently(&views(&args));
    xread_round_trip(&input.call.call());
});

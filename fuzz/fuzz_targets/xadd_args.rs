//! `RECONCILE.XADDSIGNED` arguments: any word list is refused or parsed consistently, every
//! word that parses as a stream ID prints back to itself, and a well-formed call written out in
//! any spelling parses back to its parts.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use reconcile::args::properties::{stream_id_text, xadd_accepts_consistently, xadd_round_trip};
use reconcile_fuzz::{command, views, Word, XaddInput};

#[derive(Arbitrary, Debug)]
struct Input {
    words: Vec<Word>,
    call: XaddInput,
}

fuzz_target!(|input: Input| {
    let args = command(b"RECONCILE.XADDSIGNED", &input.words);
    for word in &args {
        stream_id_text(word);
    }
    xadd_accepts_consistently(&views(&args));
    xadd_round_trip(&input.call.call());
});

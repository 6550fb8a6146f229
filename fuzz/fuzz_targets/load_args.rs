//! Module load arguments: any word list is refused or gives sound settings, and a valid load
//! line written out with its pairs in any order parses back to its parts.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use reconcile::settings::properties::{load_accepts_consistently, load_round_trip};
use reconcile_fuzz::{views, LoadInput, Word};

#[derive(Arbitrary, Debug)]
struct Input {
    words: Vec<Word>,
    line: LoadInput,
}

fuzz_target!(|input: Input| {
    let args: Vec<Vec<u8>> = input.words.iter().map(Word::bytes).collect();
    load_accepts_consistently(&views(&args));
    load_round_trip(&input.line.line());
});

//! The canonical MAC encoding: every encoding decodes back to its items (so it is injective),
//! two entries, one often a byte-moved copy of the other, encode alike only when equal, and a
//! signed entry verifies while any change to it fails.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use reconcile_core::mac::properties::{
    distinct_entries_encode_apart, encoding_decodes_back, moved_boundary,
    signed_entry_verifies_and_changes_fail,
};
use reconcile_core::mac::Freshness;
use reconcile_fuzz::ItemsInput;

#[derive(Arbitrary, Debug)]
struct Input {
    a: ItemsInput,
    b: ItemsInput,
    /// Where to move a byte across an item boundary of `a`, instead of comparing with `b`.
    moved: Option<usize>,
    secret: Vec<u8>,
    signed_at: u64,
    change: usize,
    now_ms: u64,
    max_age_ms: u64,
}

fuzz_target!(|input: Input| {
    let a = input.a.items();
    encoding_decodes_back(&a);
    let b = match input.moved {
        Some(at) => moved_boundary(&a, at),
        None => input.b.items(),
    };
    distinct_entries_encode_apart(&a, &b);

    let window = Freshness {
        now_ms: input.now_ms,
        max_age_ms: input.max_age_ms,
    };
    signed_entry_verifies_and_changes_fail(
        &input.secret,
        &a.stream,
        input.signed_at,
        &a.fields,
        input.change,
        window,
    );
});

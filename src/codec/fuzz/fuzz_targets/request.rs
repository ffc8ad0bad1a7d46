//! cargo-fuzz target: a client's byte stream through the framer, header parser, version
//! check, body decoder and the broker handlers' input checks (see `request` in src/lib.rs).
#![no_main]

use sluice_codec_fuzz::{request, seeds};

libfuzzer_sys::fuzz_target!(
    init: seeds::write_from_env(&seeds::requests()),
    |data: &[u8]| request(data)
);

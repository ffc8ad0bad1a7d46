//! cargo-fuzz target: a records blob through the batch header views, `validate_batch`, the
//! in-place stamping, `BatchIter` and the vendored RecordBatchDecoder (see `record_batch` in
//! src/lib.rs).
#![no_main]

use sluice_codec_fuzz::{record_batch, seeds};

libfuzzer_sys::fuzz_target!(
    init: seeds::write_from_env(&seeds::record_batches()),
    |data: &[u8]| record_batch(data)
);

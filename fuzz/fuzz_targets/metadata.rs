//! Arbitrary bytes as a `_metadata` file: decoding must return a value or a `Corrupt` error, never panic,
//! and whatever decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use statebackend::{CheckpointMetadata, ErrorKind};

fuzz_target!(|data: &[u8]| {
    match CheckpointMetadata::from_bytes(data, "fuzz/_metadata") {
        Ok(meta) => assert_eq!(meta.to_bytes(), data),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt),
    }
});

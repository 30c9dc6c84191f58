//! Arbitrary bytes as a `_metadata` file: decoding must return a value or a `Corrupt` error, never panic,
//! and whatever decodes must survive an encode/decode round trip unchanged (older versions re-encode as the
//! current one, so the bytes themselves may differ).
#![no_main]

use libfuzzer_sys::fuzz_target;
use statebackend::{CheckpointMetadata, ErrorKind};

fuzz_target!(|data: &[u8]| {
    match CheckpointMetadata::from_bytes(data, "fuzz/_metadata") {
        Ok(meta) => {
            let bytes = meta.to_bytes().expect("decoded metadata encodes");
            let again = CheckpointMetadata::from_bytes(&bytes, "fuzz/_metadata").expect("re-decodes");
            assert_eq!(again, meta);
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt),
    }
});

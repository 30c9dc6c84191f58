//! Bytes as the LSM backend's row keys, list values and state meta information (pure-Rust decoders): never
//! a panic; what decodes re-encodes (see `statebackend::fuzzing::lsm_decoders`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    statebackend::fuzzing::lsm_decoders(data);
});

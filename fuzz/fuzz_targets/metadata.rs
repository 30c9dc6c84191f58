//! Bytes as a `_metadata` file, with the body checksum repaired so that mutations reach the decoder:
//! decoding must return a value or a `Corrupt` error, never panic, and whatever decodes must survive an
//! encode/decode round trip as a value (decoding is not canonical: older versions re-encode as the current
//! one, so the bytes may differ). The operator state in it is then restored at a few parallelisms:
//! `OperatorStateBackend::restore` and the states' reads must also give values or typed errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use statebackend::ErrorKind;
use statebackend::operator::OperatorStateBackend;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    statebackend::fuzzing::repair_metadata(&mut bytes);
    match statebackend::format::decode_metadata(&bytes, "fuzz/_metadata") {
        Ok(meta) => {
            let encoded =
                statebackend::format::encode_metadata(&meta).expect("decoded metadata encodes");
            let again = statebackend::format::decode_metadata(&encoded, "fuzz/_metadata")
                .expect("re-decodes");
            assert_eq!(again, meta);
            for (index, parallelism) in [(0, 1), (1, 2), (2, 3)] {
                match OperatorStateBackend::restore("op", index, parallelism, &meta.tasks) {
                    Ok(mut state) => {
                        if let Ok(list) = state.list_state::<u64>("offsets") {
                            let _ = list.get(&state);
                        }
                        if let Ok(rules) = state.broadcast_state::<String, u64>("rules") {
                            let _ = rules.entries(&state);
                        }
                        let _ = state.snapshot();
                    }
                    Err(e) => assert!(matches!(
                        e.kind(),
                        ErrorKind::Corrupt | ErrorKind::InvalidArgument
                    )),
                }
            }
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt),
    }
});

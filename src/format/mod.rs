//! File formats (specified byte by byte in `docs/formats.md`).

pub(crate) mod bytes;
pub(crate) mod keyed_file;
// The RocksDB backend's rows; without RocksDB only the fuzz target uses them.
#[cfg(any(feature = "rocksdb", feature = "fuzzing"))]
#[cfg_attr(
    not(feature = "rocksdb"),
    allow(dead_code, reason = "only the decoders and their encoders are fuzzed")
)]
pub(crate) mod lsm_rows;
pub(crate) mod metadata;

//! File formats (specified byte by byte in `docs/formats.md`), bytes in and bytes out. Public: the
//! `_metadata` codec, for engines that pass checkpoint metadata between processes.

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

pub use metadata::{decode_metadata, encode_metadata};

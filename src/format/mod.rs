//! File formats (specified byte by byte in `docs/formats.md`).

pub(crate) mod bytes;
pub(crate) mod keyed_file;
pub(crate) mod metadata;

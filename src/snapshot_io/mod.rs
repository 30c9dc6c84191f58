//! Keyed snapshot files between the format and checkpoint storage: streaming a file to storage while it
//! is encoded (`upload`), and reading a handle's file back, whole or only the owned key groups by ranged
//! reads (`load`), a heap incremental chain merged into the records of its newest state (`chain`, its append and patch records by `element_merge`); the local copies of local recovery (`local_copy`). The layer between `storage/` (object-store I/O) and the backends; `format/` stays bytes
//! in, bytes out.

pub(crate) mod chain;
pub(crate) mod element_merge;
pub(crate) mod load;
pub(crate) mod loaded;
pub(crate) mod local_copy;
pub(crate) mod upload;

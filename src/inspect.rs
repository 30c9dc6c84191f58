//! Reading what checkpoint storage holds, for operators' tools (`statectl`): a snapshot location parsed
//! from a path or URL, its keyed records decoded, and encoded bytes shown as text.

pub use crate::checkpoint::read::{KeyedRecord, SnapshotLocation};
pub use crate::codec_text::{describe_encoded, hex_bytes};

//! Reading what checkpoint storage holds, for operators' tools (`statectl`): a snapshot location parsed
//! from a path or URL, a canonical snapshot's states and records decoded, and encoded bytes shown as text.
//! Read-only: nothing here writes or deletes.

mod keyed;
mod location;

pub use crate::codec_text::{TtlView, describe_encoded, describe_encoded_at, hex_bytes};
pub use keyed::{KeyedRecord, keyed_file_entry_counts, keyed_file_records, keyed_file_states};
pub use location::SnapshotLocation;

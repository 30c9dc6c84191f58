//! Decoding a restored state's records into its typed table when the job registers it (schema migration
//! included), key groups spread over several threads: they are independent, and the decode is the
//! larger part of a heap restore (`benches/savepoint.rs`).

use crate::codec::{Migration, migration_failed};
use crate::error::Result;
use crate::heap::cow_map::GroupBuilder;
use crate::heap::table::{RawTable, StateTable, entry_hash, group_records};
use crate::key_group::stable_key_hash;
use crate::keyed::backend::StateKey;

/// Below this many bytes of records a state is decoded on the calling thread alone (a thread costs more
/// than it saves).
const PARALLEL_FROM_BYTES: usize = 1 << 20;

/// Key groups one thread built: `(key-group index, its map)`.
type Built<K, N, S> = Vec<(usize, GroupBuilder<K, N, S>)>;

/// Fills the empty `table` with `raw`'s records: keys and namespaces decoded by their codecs, values by
/// the table's serde or, if the state was written by an older value codec, by `migration`. Uses up to
/// `threads` threads (the calling one included), each building whole key groups, sized in advance.
///
/// # Errors
/// [`crate::Error::Corrupt`] for a record that does not decode or a value that does not migrate; the
/// table is then partly filled and must be dropped.
pub(crate) fn decode_raw<K: StateKey, N: StateKey, S: Clone + Send + Sync + 'static>(
    raw: &RawTable,
    table: &mut StateTable<K, N, S>,
    migration: Option<&Migration<S>>,
    threads: usize,
) -> Result<()> {
    let groups = &raw.groups[..];
    let total: usize = groups.iter().map(|(_, b)| b.len()).sum();
    let threads = if total < PARALLEL_FROM_BYTES {
        1
    } else {
        threads.clamp(1, groups.len().max(1))
    };
    let (decode, epoch) = (table.serde.decode, table.map.epoch());
    let (state, stored) = (&table.meta.name, &raw.meta.value_codec);
    let ours = &table.meta.value_codec;
    let value = |v: &[u8]| match migration {
        None => decode(v),
        Some(m) => m(v).map_err(|e| migration_failed(state, stored, ours, e)),
    };
    let build = |chunk: Vec<&(usize, Vec<u8>)>| -> Result<Built<K, N, S>> {
        let mut built = Vec::with_capacity(chunk.len());
        for (kg, bytes) in chunk {
            let mut group = GroupBuilder::new(group_records(*kg, bytes).count(), epoch);
            for record in group_records(*kg, bytes) {
                let (_, k, n, v) = record?;
                let (key, ns) = (K::decode(k)?, N::decode(n)?);
                let hash = entry_hash(stable_key_hash(k), &ns);
                group.insert(hash, key, ns, value(v)?);
            }
            built.push((*kg, group));
        }
        Ok(built)
    };
    let chunks =
        crate::parallel::runs_by_weight(groups.iter().collect(), threads, |(_, b)| b.len());
    let results = crate::parallel::run_each(chunks, |_, chunk| build(chunk));
    for result in results {
        for (kg, group) in result? {
            table.map.install(kg, group);
        }
    }
    Ok(())
}

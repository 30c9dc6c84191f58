//! What a checkpoint's synchronous phase leaves for its asynchronous phase: a frozen table per state
//! ([`FrozenTable`]), written out key group by key group, and the frozen version of a registered
//! state's table ([`FrozenStateTable`]): whole, or a delta's changes, with its size estimated
//! (`docs/state-sizes.md`).

use crate::error::Result;
use crate::format::keyed_file::{ElementRecord, KeyedFileWriter};
use crate::heap::cow_map::{CowSnapshot, Entry};
use crate::heap::delta::{FrozenChanges, Part};
use crate::heap::serde::{TtlSerde, ValueSerde};
use crate::keyed::backend::StateKey;

/// A frozen table, written out key group by key group.
pub(crate) trait FrozenTable: Send {
    /// Whether the records written replace every earlier record of the state (a full write); false for
    /// a delta's changes, which apply on top of the earlier files of the chain.
    fn rewrites(&self) -> bool {
        true
    }
    /// Whether the records written may include append records (a delta's changes of a list state that
    /// saw appends only): the file must then be of the version that has them.
    fn appends(&self) -> bool {
        false
    }
    /// Whether the records written may include patch records (a delta's changes of a map state that
    /// saw user-key puts and removes only).
    fn patches(&self) -> bool {
        false
    }
    /// For a delta's changes of a state not written whole: the state's `(entries, record bytes)` in key
    /// group `kg_index`, entries exact, bytes estimated from a sample of entries; call before
    /// [`FrozenTable::write_group`] of that group when it is not written whole. `None` for a table
    /// written whole.
    fn estimate_group(&mut self, _kg_index: usize) -> Option<(u64, u64)> {
        None
    }
    /// Writes the records of key group `kg_index` as state number `state`, then releases that group:
    /// every live entry if `whole` (a full file, or a key group of a delta's whole range), else only
    /// what a delta has of it.
    fn write_group(
        &mut self,
        kg_index: usize,
        state: u32,
        whole: bool,
        writer: &mut KeyedFileWriter,
    ) -> Result<()>;
}

/// A registered state's table frozen by a synchronous phase: its copy-on-write snapshot, written out
/// whole or, for a delta, as its changes.
pub(crate) struct FrozenStateTable<K, N, S> {
    snapshot: CowSnapshot<K, N, S>,
    serde: ValueSerde<S>,
    /// With TTL and something expired at the synchronous phase: the cutoff values are written at.
    ttl: Option<(TtlSerde<S>, u64)>,
    /// For a delta that writes this table's changes: what changed since the diff base.
    delta: Option<FrozenChanges<K, N>>,
    /// A delta's estimate of the record bytes of an entry, once sampled.
    bytes_per_entry: Option<f64>,
}

/// The mean record bytes (`docs/formats.md`: state word, key, namespace and value with their length
/// prefixes) of up to 4 entries from each of up to 64 key groups spread over `snapshot`; 0 if it holds
/// none.
fn sample_bytes_per_entry<K: StateKey, N: StateKey, S>(
    snapshot: &CowSnapshot<K, N, S>,
    encode: fn(&S, &mut Vec<u8>),
) -> f64 {
    let groups = snapshot.groups();
    let step = groups.len().div_ceil(64).max(1);
    let (mut sampled, mut bytes, mut scratch) = (0u64, 0usize, Vec::new());
    for group in groups.iter().step_by(step).flatten() {
        for e in group.iter().take(4) {
            scratch.clear();
            e.key.encode(&mut scratch);
            e.ns.encode(&mut scratch);
            encode(&e.value, &mut scratch);
            bytes += 16 + scratch.len();
            sampled += 1;
        }
    }
    if sampled == 0 {
        0.0
    } else {
        bytes as f64 / sampled as f64
    }
}

impl<K: StateKey, N: StateKey, S> FrozenStateTable<K, N, S> {
    /// The table frozen as `snapshot`, its values encoded by `serde`; with TTL and something expired,
    /// the cutoff values are written at; for a delta, the changes since the diff base.
    pub(crate) fn new(
        snapshot: CowSnapshot<K, N, S>,
        serde: ValueSerde<S>,
        ttl: Option<(TtlSerde<S>, u64)>,
        delta: Option<FrozenChanges<K, N>>,
    ) -> Self {
        FrozenStateTable {
            snapshot,
            serde,
            ttl,
            delta,
            bytes_per_entry: None,
        }
    }

    /// Writes `part` of entry `e` as a record of `state`; false (nothing written) if everything in it
    /// expired. A list's tail or a map's user keys become an append or patch record (a state without
    /// TTL; others are written whole).
    fn write_entry(
        &self,
        e: &Entry<K, N, S>,
        part: Part<'_>,
        state: u32,
        writer: &mut KeyedFileWriter,
        live: &mut Vec<u8>,
    ) -> Result<bool> {
        let (key, ns) = (
            |b: &mut Vec<u8>| e.key.encode(b),
            |b: &mut Vec<u8>| e.ns.encode(b),
        );
        let serde = &self.serde;
        match (part, serde.encode_tail, serde.encode_patch) {
            (Part::Tail(from), Some(tail), _) if serde.ttl.is_none() => {
                writer.add_element(ElementRecord::Append, state, key, ns, |b| {
                    tail(&e.value, from, b)
                })?;
                return Ok(true);
            }
            (Part::UserKeys(keys), _, Some(patch)) if serde.ttl.is_none() => {
                live.clear();
                patch(&e.value, keys, live)?;
                writer.add_element(ElementRecord::Patch, state, key, ns, |b| {
                    b.extend_from_slice(live)
                })?;
                return Ok(true);
            }
            _ => {}
        }
        let Some((ttl, cutoff)) = self.ttl else {
            let encode = self.serde.encode;
            writer.add_record(
                state,
                |b| e.key.encode(b),
                |b| e.ns.encode(b),
                |b| encode(&e.value, b),
            )?;
            return Ok(true);
        };
        // Expired entries, list elements and map entries are left out.
        live.clear();
        if !ttl.encode_live(&e.value, cutoff, live) {
            return Ok(false);
        }
        writer.add_record(
            state,
            |b| e.key.encode(b),
            |b| e.ns.encode(b),
            |b| b.extend_from_slice(live),
        )?;
        Ok(true)
    }
}

impl<K: StateKey, N: StateKey, S: Send + Sync + 'static> FrozenTable for FrozenStateTable<K, N, S> {
    fn rewrites(&self) -> bool {
        self.delta.is_none()
    }
    fn appends(&self) -> bool {
        self.delta.as_ref().is_some_and(FrozenChanges::appends)
    }
    fn patches(&self) -> bool {
        self.delta.as_ref().is_some_and(FrozenChanges::patches)
    }
    fn estimate_group(&mut self, kg_index: usize) -> Option<(u64, u64)> {
        self.delta.as_ref()?;
        let per_entry = *self
            .bytes_per_entry
            .get_or_insert_with(|| sample_bytes_per_entry(&self.snapshot, self.serde.encode));
        let entries = self.snapshot.group_len(kg_index) as u64;
        Some((entries, (entries as f64 * per_entry).round() as u64))
    }
    fn write_group(
        &mut self,
        kg_index: usize,
        state: u32,
        whole: bool,
        writer: &mut KeyedFileWriter,
    ) -> Result<()> {
        let group = self.snapshot.take_group(kg_index);
        let mut live = Vec::new();
        if !whole && let Some(mut delta) = self.delta.take() {
            let written =
                delta.write_group(kg_index, group.as_deref(), state, writer, |e, from, w| {
                    self.write_entry(e, from, state, w, &mut live)
                });
            self.delta = Some(delta);
            return written;
        }
        let Some(group) = group else {
            return Ok(());
        };
        // Expired entries are left out (cleanup in full snapshots).
        for e in group.iter() {
            self.write_entry(e, Part::Whole, state, writer, &mut live)?;
        }
        Ok(())
    }
}

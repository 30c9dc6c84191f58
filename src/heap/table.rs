//! Heap state tables: the typed copy-on-write table of a registered state, the raw table of a restored
//! state not yet registered, and their frozen views for the asynchronous phase.

use std::any::Any;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::codec::{Codec, Migration, migration_for};
use crate::error::Result;
use crate::format::bytes::{Decoder, PutExt};
use crate::format::keyed_file::KeyedFileWriter;
use crate::heap::cow_map::{CowMap, CowSnapshot};
use crate::keyed::backend::StateKey;
use crate::snapshot::state_meta::StateMeta;

/// The current key of a heap backend, located: its stable hash, key group and index in the owned range.
pub(crate) struct CurrentKey<K> {
    pub(crate) key: K,
    pub(crate) key_hash: u64,
    pub(crate) key_group: u32,
    pub(crate) kg_index: usize,
}

/// Map hash of `(key, namespace)` from the key's stable hash (`xxh3_64`, well mixed in every bit).
///
/// The key group takes the low bits of the key's hash (`hash % max_parallelism`), so every key of a key
/// group shares them; the map of a key group uses the low bits for its directory and bits 32.. inside a
/// page. Rotating by 16 gives it xxh3 bits that the key group did not use (max parallelism is at most
/// 2^15). The namespace's hash is mixed in by `xor`; for `VoidNamespace` it is a constant. No multiply:
/// the per-record path counts instructions (`benches/heap_ops.rs`).
#[inline]
pub(crate) fn entry_hash<N: std::hash::Hash>(key_hash: u64, ns: &N) -> u64 {
    mix_entry_hash(key_hash, namespace_hash(ns))
}

/// The namespace's part of [`entry_hash`] (a batch in one namespace computes it once).
#[inline]
pub(crate) fn namespace_hash<N: std::hash::Hash>(ns: &N) -> u64 {
    foldhash::fast::FixedState::with_seed(0).hash_one(ns)
}

/// [`entry_hash`] from the key's stable hash and [`namespace_hash`].
#[inline]
pub(crate) fn mix_entry_hash(key_hash: u64, namespace_hash: u64) -> u64 {
    (key_hash ^ namespace_hash).rotate_right(16)
}

/// How a table's stored value becomes bytes and back (value, list or map encoding), and how it is read
/// from an older value codec (schema evolution, `docs/savepoints.md`).
pub(crate) struct ValueSerde<S> {
    pub(crate) encode: fn(&S, &mut Vec<u8>),
    pub(crate) decode: fn(&[u8]) -> Result<S>,
    /// `(state name, stored value codec)`: `None` if the stored codec is the registered one, else the
    /// decoder of values written by the stored one.
    pub(crate) migration: fn(&str, &str) -> Result<Option<Migration<S>>>,
}

impl<S> Clone for ValueSerde<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for ValueSerde<S> {}

/// Stored form of list state.
pub(crate) type ListCell<V> = Arc<Vec<V>>;
/// Stored form of map state.
pub(crate) type MapCell<UK, V> = Arc<hashbrown::HashMap<UK, V, foldhash::fast::FixedState>>;

/// Serde of value, reducing and aggregating state: the value's codec.
pub(crate) fn value_serde<V: Codec>() -> ValueSerde<V> {
    ValueSerde {
        encode: V::encode,
        decode: V::decode,
        migration: migration_for::<V>,
    }
}

/// Serde of list state: `u32` count, then each element `u32` length + bytes (little-endian).
pub(crate) fn list_serde<V: Codec + 'static>() -> ValueSerde<ListCell<V>> {
    ValueSerde {
        encode: |list, out| {
            // Saturates: such a list is far over the 1 GiB frame limit, which the writer reports.
            out.put_u32(u32::try_from(list.len()).unwrap_or(u32::MAX));
            for v in list.iter() {
                out.put_len_prefixed(|b| v.encode(b));
            }
        },
        decode: |bytes| decode_list(bytes, V::decode),
        migration: |state, stored| {
            Ok(
                migration_for::<V>(state, stored)?.map(|m| -> Migration<ListCell<V>> {
                    Arc::new(move |bytes| decode_list(bytes, &*m))
                }),
            )
        },
    }
}

fn decode_list<V>(bytes: &[u8], element: impl Fn(&[u8]) -> Result<V>) -> Result<ListCell<V>> {
    let mut d = Decoder::new(bytes, 0, "<list value>");
    let n = d.count("list length", 4)?;
    let mut list = Vec::with_capacity(n);
    for _ in 0..n {
        list.push(element(d.bytes("list element")?)?);
    }
    d.finish("list")?;
    Ok(Arc::new(list))
}

/// Serde of map state: `u32` count, then each entry: `u32` length + user key, `u32` length + value.
pub(crate) fn map_serde<UK: StateKey, V: Codec + 'static>() -> ValueSerde<MapCell<UK, V>> {
    ValueSerde {
        encode: |map, out| {
            // Saturates: such a map is far over the 1 GiB frame limit, which the writer reports.
            out.put_u32(u32::try_from(map.len()).unwrap_or(u32::MAX));
            for (k, v) in map.iter() {
                out.put_len_prefixed(|b| k.encode(b));
                out.put_len_prefixed(|b| v.encode(b));
            }
        },
        decode: |bytes| decode_map(bytes, V::decode),
        migration: |state, stored| {
            Ok(
                migration_for::<V>(state, stored)?.map(|m| -> Migration<MapCell<UK, V>> {
                    Arc::new(move |bytes| decode_map(bytes, &*m))
                }),
            )
        },
    }
}

fn decode_map<UK: StateKey, V>(
    bytes: &[u8],
    value: impl Fn(&[u8]) -> Result<V>,
) -> Result<MapCell<UK, V>> {
    let mut d = Decoder::new(bytes, 0, "<map value>");
    let n = d.count("map size", 8)?;
    let mut map = hashbrown::HashMap::with_capacity_and_hasher(n, Default::default());
    for _ in 0..n {
        let k = UK::decode(d.bytes("map user key")?)?;
        map.insert(k, value(d.bytes("map value")?)?);
    }
    d.finish("map")?;
    Ok(Arc::new(map))
}

/// A state table whose types are erased, as the backend keeps them.
///
/// The backend finds the typed table of a state handle by upcasting to `dyn Any` and downcasting: one
/// virtual call (`type_id`) per state access.
pub(crate) trait ErasedTable<K>: Any + Send {
    fn meta(&self) -> &StateMeta;
    /// Synchronous phase: a frozen view, O(key groups).
    fn freeze(&mut self) -> Box<dyn FrozenTable>;
    /// Entries in the table.
    fn len(&self) -> usize;
    /// Keys with an entry in namespace `ns`; `None` if `ns` is not this table's namespace type.
    fn keys_in_namespace(&self, ns: &dyn Any) -> Option<Vec<K>>;
    /// Appends every `(key, namespace)` to `out`, a `Vec<(K, N)>`; false if `N` is not this table's
    /// namespace type (or the table is raw: the backend decodes those).
    fn keys_and_namespaces(&self, out: &mut dyn Any) -> bool;
    /// Whether the state was dropped ([`DroppedTable`]).
    fn is_dropped(&self) -> bool {
        false
    }
}

/// What stays of a dropped state: its id answers `InvalidArgument`, snapshots skip it.
pub(crate) struct DroppedTable(pub(crate) StateMeta);

impl<K: StateKey> ErasedTable<K> for DroppedTable {
    fn meta(&self) -> &StateMeta {
        &self.0
    }
    fn freeze(&mut self) -> Box<dyn FrozenTable> {
        Box::new(FrozenRawTable(Arc::new(Vec::new())))
    }
    fn len(&self) -> usize {
        0
    }
    fn keys_in_namespace(&self, _ns: &dyn Any) -> Option<Vec<K>> {
        None
    }
    fn keys_and_namespaces(&self, _out: &mut dyn Any) -> bool {
        false
    }
    fn is_dropped(&self) -> bool {
        true
    }
}

/// A frozen table, written out key group by key group.
pub(crate) trait FrozenTable: Send {
    /// Writes the records of key group `kg_index` as state number `state`, then releases that group.
    fn write_group(
        &mut self,
        kg_index: usize,
        state: u32,
        writer: &mut KeyedFileWriter,
    ) -> Result<()>;
}

/// The typed table of a registered state: `(key, namespace) -> S`.
pub(crate) struct StateTable<K, N, S> {
    pub(crate) meta: StateMeta,
    pub(crate) map: CowMap<K, N, S>,
    pub(crate) serde: ValueSerde<S>,
}

impl<K: StateKey, N: StateKey, S: Clone + Send + Sync + 'static> StateTable<K, N, S> {
    pub(crate) fn new(meta: StateMeta, groups: usize, serde: ValueSerde<S>) -> Self {
        StateTable {
            meta,
            map: CowMap::new(groups),
            serde,
        }
    }
}

impl<K: StateKey, N: StateKey, S: Clone + Send + Sync + 'static> ErasedTable<K>
    for StateTable<K, N, S>
{
    fn meta(&self) -> &StateMeta {
        &self.meta
    }
    fn freeze(&mut self) -> Box<dyn FrozenTable> {
        Box::new(FrozenStateTable {
            snapshot: self.map.snapshot(),
            serde: self.serde,
        })
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn keys_in_namespace(&self, ns: &dyn Any) -> Option<Vec<K>> {
        let ns = ns.downcast_ref::<N>()?;
        Some(
            (0..self.map.groups())
                .flat_map(|g| self.map.iter_group(g))
                .filter(|e| e.ns == *ns)
                .map(|e| e.key.clone())
                .collect(),
        )
    }
    fn keys_and_namespaces(&self, out: &mut dyn Any) -> bool {
        let Some(out) = out.downcast_mut::<Vec<(K, N)>>() else {
            return false;
        };
        out.extend(
            (0..self.map.groups())
                .flat_map(|g| self.map.iter_group(g))
                .map(|e| (e.key.clone(), e.ns.clone())),
        );
        true
    }
}

struct FrozenStateTable<K, N, S> {
    snapshot: CowSnapshot<K, N, S>,
    serde: ValueSerde<S>,
}

impl<K: StateKey, N: StateKey, S: Send + Sync + 'static> FrozenTable for FrozenStateTable<K, N, S> {
    fn write_group(
        &mut self,
        kg_index: usize,
        state: u32,
        writer: &mut KeyedFileWriter,
    ) -> Result<()> {
        let Some(group) = self.snapshot.take_group(kg_index) else {
            return Ok(());
        };
        let encode = self.serde.encode;
        for e in group.iter() {
            writer.add_record(
                state,
                |b| e.key.encode(b),
                |b| e.ns.encode(b),
                |b| encode(&e.value, b),
            )?;
        }
        Ok(())
    }
}

/// One restored record: key-group index, key, namespace and value bytes.
pub(crate) type RawRecord<'a> = (usize, &'a [u8], &'a [u8], &'a [u8]);

/// Records of a restored state that the job has not registered yet: `(key-group index, records)` for the
/// key groups that have records, ascending by index; the records are the raw `u32 len + key, u32 len +
/// namespace, u32 len + value` triples exactly as restored.
pub(crate) struct RawTable {
    pub(crate) meta: StateMeta,
    pub(crate) groups: Arc<Vec<(usize, Vec<u8>)>>,
    pub(crate) len: usize,
}

impl RawTable {
    /// Iterates `(kg_index, key, namespace, value)` of every record.
    pub(crate) fn records(&self) -> impl Iterator<Item = Result<RawRecord<'_>>> {
        self.groups
            .iter()
            .flat_map(|(kg, bytes)| group_records(*kg, bytes))
    }
}

/// Iterates the records of one key group's bytes of a [`RawTable`].
pub(crate) fn group_records(
    kg: usize,
    bytes: &[u8],
) -> impl Iterator<Item = Result<RawRecord<'_>>> {
    let mut d = Decoder::new(bytes, 0, "<restored records>");
    std::iter::from_fn(move || {
        if d.is_empty() {
            return None;
        }
        Some((|| {
            Ok((
                kg,
                d.bytes("key")?,
                d.bytes("namespace")?,
                d.bytes("value")?,
            ))
        })())
    })
}

impl<K: StateKey> ErasedTable<K> for RawTable {
    fn meta(&self) -> &StateMeta {
        &self.meta
    }
    fn freeze(&mut self) -> Box<dyn FrozenTable> {
        Box::new(FrozenRawTable(self.groups.clone()))
    }
    fn len(&self) -> usize {
        self.len
    }
    fn keys_in_namespace(&self, _ns: &dyn Any) -> Option<Vec<K>> {
        // Raw records need the namespace's codec; the backend answers for them (it knows `N`).
        None
    }
    fn keys_and_namespaces(&self, _out: &mut dyn Any) -> bool {
        false
    }
}

struct FrozenRawTable(Arc<Vec<(usize, Vec<u8>)>>);

impl FrozenTable for FrozenRawTable {
    fn write_group(
        &mut self,
        kg_index: usize,
        state: u32,
        writer: &mut KeyedFileWriter,
    ) -> Result<()> {
        let Ok(at) = self.0.binary_search_by_key(&kg_index, |(kg, _)| *kg) else {
            return Ok(());
        };
        let bytes = &self.0[at].1;
        let mut d = Decoder::new(bytes, 0, "<restored records>");
        while !d.is_empty() {
            let (k, n, v) = (d.bytes("key")?, d.bytes("namespace")?, d.bytes("value")?);
            writer.add_record(
                state,
                |b| b.extend_from_slice(k),
                |b| b.extend_from_slice(n),
                |b| b.extend_from_slice(v),
            )?;
        }
        Ok(())
    }
}

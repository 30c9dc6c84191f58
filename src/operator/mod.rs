//! Operator (non-keyed) state, as Flink's `OperatorStateBackend`: list state split among the subtasks on
//! rescale, union list state given whole to every subtask, and broadcast state (a map every subtask holds
//! the same copy of). Snapshots are small named blobs in [`TaskStateSnapshot::operator_state`]
//! (`state:<name>`, format in `docs/formats.md`); blobs under other names are the engine's own and are left
//! alone.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use crate::codec::{ByteMigration, Codec, byte_migration, migration_failed};
use crate::error::{Error, Result};
use crate::format::bytes::{Decoder, PutExt};
use crate::snapshot::handle::TaskStateSnapshot;

/// Prefix of the operator-state blob names this backend owns.
pub const OPERATOR_STATE_PREFIX: &str = "state:";
const VERSION: u8 = 1;

/// How a state's entries are handed out when the job restores, at the same or another parallelism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redistribution {
    /// List state (Flink's `getListState`): all subtasks' elements are concatenated in subtask order and
    /// split into contiguous, even shares; at unchanged parallelism every subtask gets its own back.
    Split,
    /// Union list state (Flink's `getUnionListState`): every subtask gets every element.
    Union,
    /// Broadcast state (Flink's `getBroadcastState`): every subtask holds the same map and gets it back
    /// (the copy of the lowest subtask that has one).
    Broadcast,
}

impl Redistribution {
    fn tag(self) -> u8 {
        match self {
            Redistribution::Split => 0,
            Redistribution::Union => 1,
            Redistribution::Broadcast => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            0 => Redistribution::Split,
            1 => Redistribution::Union,
            2 => Redistribution::Broadcast,
            _ => return None,
        })
    }
}

/// One state: its redistribution, codec ids, and entries as encoded bytes (list elements; for broadcast
/// state, `(key, value)` pairs, kept sorted by key bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entries {
    redistribution: Redistribution,
    codecs: String,
    items: Items,
}

/// Encoded entries: list elements (second part empty) or broadcast `(key, value)` pairs.
type Items = Vec<(Vec<u8>, Vec<u8>)>;

/// The operator state of one subtask: named states, each list or broadcast.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorStateBackend {
    states: BTreeMap<String, Entries>,
}

/// A list of `V` in an [`OperatorStateBackend`] (split or union, as registered).
pub struct OperatorListState<V> {
    name: String,
    _types: PhantomData<fn() -> V>,
}

/// A map `K -> V` in an [`OperatorStateBackend`] that every subtask holds the same copy of.
pub struct BroadcastState<K, V> {
    name: String,
    _types: PhantomData<fn() -> (K, V)>,
}

impl OperatorStateBackend {
    /// An empty operator state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The operator state of subtask `subtask_index` of `parallelism` from the acknowledgements of
    /// `operator_id` in one checkpoint (`tasks`: every subtask's, of whatever parallelism wrote them),
    /// redistributed as each state's [`Redistribution`] says.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `subtask_index >= parallelism`; [`Error::Corrupt`] naming the task and
    /// state if a blob does not decode, or if subtasks disagree on a state's kind or codecs.
    pub fn restore(
        operator_id: &str,
        subtask_index: u32,
        parallelism: u32,
        tasks: &[TaskStateSnapshot],
    ) -> Result<Self> {
        if subtask_index >= parallelism {
            return Err(Error::InvalidArgument(format!(
                "subtask {subtask_index} of parallelism {parallelism}"
            )));
        }
        let mut tasks: Vec<&TaskStateSnapshot> = tasks
            .iter()
            .filter(|t| t.operator_id == operator_id)
            .collect();
        tasks.sort_by_key(|t| t.subtask_index);
        // Saturating: a corrupt or hostile `_metadata` may name subtask u32::MAX (found by cargo fuzz).
        let old_parallelism = tasks
            .last()
            .map_or(0, |t| t.subtask_index.saturating_add(1));
        // Per state: each old subtask's entries, in subtask order.
        let mut gathered: BTreeMap<String, (Entries, Vec<(u32, Items)>)> = BTreeMap::new();
        for task in &tasks {
            for (blob_name, bytes) in &task.operator_state {
                let Some(name) = blob_name.strip_prefix(OPERATOR_STATE_PREFIX) else {
                    continue;
                };
                let what = format!(
                    "operator state `{name}` of {operator_id}/{}",
                    task.subtask_index
                );
                let entries = decode(bytes, &what)?;
                let (first, parts) = gathered.entry(name.to_string()).or_insert_with(|| {
                    let mut shape = entries.clone();
                    shape.items.clear();
                    (shape, Vec::new())
                });
                if first.redistribution != entries.redistribution || first.codecs != entries.codecs
                {
                    return Err(Error::corrupt(
                        what,
                        "subtasks disagree on the state's kind or codecs",
                    ));
                }
                parts.push((task.subtask_index, entries.items));
            }
        }
        let mut states = BTreeMap::new();
        for (name, (mut shape, parts)) in gathered {
            shape.items = match shape.redistribution {
                Redistribution::Broadcast => {
                    parts.into_iter().next().map(|(_, i)| i).unwrap_or_default()
                }
                Redistribution::Union => parts.into_iter().flat_map(|(_, i)| i).collect(),
                Redistribution::Split if old_parallelism == parallelism => parts
                    .into_iter()
                    .filter(|(s, _)| *s == subtask_index)
                    .flat_map(|(_, i)| i)
                    .collect(),
                Redistribution::Split => {
                    let all: Vec<_> = parts.into_iter().flat_map(|(_, i)| i).collect();
                    let n = all.len() as u64;
                    let (p, i) = (u64::from(parallelism), u64::from(subtask_index));
                    let (from, to) = ((i * n / p) as usize, ((i + 1) * n / p) as usize);
                    all.into_iter().skip(from).take(to - from).collect()
                }
            };
            states.insert(name, shape);
        }
        Ok(OperatorStateBackend { states })
    }

    /// The blobs of every state, for [`TaskStateSnapshot::operator_state`] (merge them with the engine's
    /// own blobs, if any). Taking them is the whole snapshot: operator state is small and copied.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.states
            .iter()
            .map(|(name, e)| (format!("{OPERATOR_STATE_PREFIX}{name}"), encode(e)))
            .collect()
    }

    /// Names of all states, registered or restored.
    pub fn state_names(&self) -> Vec<String> {
        self.states.keys().cloned().collect()
    }

    /// Registers (or finds) state `name`. A state of the same redistribution whose stored `codecs` differ
    /// is migrated: `migration(stored codecs)` gives the rewrite of each item's value part (the list
    /// element, the broadcast value), or the error that names the incompatible change.
    fn register(
        &mut self,
        name: &str,
        redistribution: Redistribution,
        codecs: String,
        migration: &dyn Fn(&str) -> Result<Option<ByteMigration>>,
    ) -> Result<()> {
        let entries = self
            .states
            .entry(name.to_string())
            .or_insert_with(|| Entries {
                redistribution,
                codecs: codecs.clone(),
                items: Vec::new(),
            });
        if entries.redistribution != redistribution {
            return Err(Error::InvalidArgument(format!(
                "operator state `{name}` is {:?} of {}, not {redistribution:?} of {codecs}",
                entries.redistribution, entries.codecs
            )));
        }
        if entries.codecs == codecs {
            return Ok(());
        }
        if let Some(rewrite) = migration(&entries.codecs)? {
            // Into a new list first: a value that does not migrate leaves the state as it was.
            let mut items = entries.items.clone();
            for item in &mut items {
                let value = match redistribution {
                    Redistribution::Broadcast => &mut item.1,
                    _ => &mut item.0,
                };
                let old = std::mem::take(value);
                rewrite(&old, value)
                    .map_err(|e| migration_failed(name, &entries.codecs, &codecs, e))?;
            }
            entries.items = items;
        }
        entries.codecs = codecs;
        Ok(())
    }

    /// Registers (or finds) list state `name`, split among the subtasks on rescale. A restored state whose
    /// element codec differs is migrated if `V` declares a migration from it ([`Codec::migration_from`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `name` exists with another kind; [`Error::IncompatibleSchema`] if its
    /// element codec differs and `V` cannot read it; [`Error::Corrupt`] if an element does not migrate
    /// (the state is left as it was).
    pub fn list_state<V: Codec + 'static>(&mut self, name: &str) -> Result<OperatorListState<V>> {
        let migration = |stored: &str| byte_migration::<V>(name, stored);
        self.register(name, Redistribution::Split, V::codec_id(), &migration)?;
        Ok(OperatorListState::new(name))
    }

    /// Registers (or finds) union list state `name`: every subtask gets all elements on restore. Errors as
    /// [`OperatorStateBackend::list_state`].
    pub fn union_list_state<V: Codec + 'static>(
        &mut self,
        name: &str,
    ) -> Result<OperatorListState<V>> {
        let migration = |stored: &str| byte_migration::<V>(name, stored);
        self.register(name, Redistribution::Union, V::codec_id(), &migration)?;
        Ok(OperatorListState::new(name))
    }

    /// Registers (or finds) broadcast state `name`; its values migrate as list elements do, its keys never
    /// (the entries are sorted by their key bytes). Errors as [`OperatorStateBackend::list_state`].
    pub fn broadcast_state<K: Codec, V: Codec + 'static>(
        &mut self,
        name: &str,
    ) -> Result<BroadcastState<K, V>> {
        let key_part = format!("{}->", K::codec_id());
        let codecs = format!("{key_part}{}", V::codec_id());
        let migration = |stored: &str| match stored.strip_prefix(&key_part) {
            Some(value) => byte_migration::<V>(name, value),
            None => Err(Error::IncompatibleSchema {
                state: name.to_string(),
                reason: format!(
                    "broadcast codecs `{codecs}` do not match the restored `{stored}` (only values \
                     migrate)"
                ),
            }),
        };
        self.register(name, Redistribution::Broadcast, codecs.clone(), &migration)?;
        Ok(BroadcastState {
            name: name.to_string(),
            _types: PhantomData,
        })
    }

    fn entries(&self, name: &str) -> Result<&Entries> {
        self.states.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!("operator state `{name}` is not registered"))
        })
    }

    fn entries_mut(&mut self, name: &str) -> Result<&mut Entries> {
        self.states.get_mut(name).ok_or_else(|| {
            Error::InvalidArgument(format!("operator state `{name}` is not registered"))
        })
    }
}

impl<V: Codec> OperatorListState<V> {
    fn new(name: &str) -> Self {
        OperatorListState {
            name: name.to_string(),
            _types: PhantomData,
        }
    }

    /// The elements, in order.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a restored element does not decode.
    pub fn get(&self, backend: &OperatorStateBackend) -> Result<Vec<V>> {
        backend
            .entries(&self.name)?
            .items
            .iter()
            .map(|(v, _)| V::decode(v))
            .collect()
    }

    /// Appends `value`. Errors as [`OperatorListState::get`].
    pub fn add(&self, backend: &mut OperatorStateBackend, value: &V) -> Result<()> {
        let mut bytes = Vec::new();
        value.encode(&mut bytes);
        backend
            .entries_mut(&self.name)?
            .items
            .push((bytes, Vec::new()));
        Ok(())
    }

    /// Replaces the elements with `values`. Errors as [`OperatorListState::get`].
    pub fn update(&self, backend: &mut OperatorStateBackend, values: &[V]) -> Result<()> {
        let items = values
            .iter()
            .map(|v| {
                let mut bytes = Vec::new();
                v.encode(&mut bytes);
                (bytes, Vec::new())
            })
            .collect();
        backend.entries_mut(&self.name)?.items = items;
        Ok(())
    }
}

impl<K: Codec, V: Codec> BroadcastState<K, V> {
    fn find(entries: &Entries, key: &[u8]) -> std::result::Result<usize, usize> {
        entries
            .items
            .binary_search_by(|(k, _)| k.as_slice().cmp(key))
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a restored value does not decode.
    pub fn get(&self, backend: &OperatorStateBackend, key: &K) -> Result<Option<V>> {
        let entries = backend.entries(&self.name)?;
        let mut k = Vec::new();
        key.encode(&mut k);
        match Self::find(entries, &k) {
            Ok(i) => V::decode(&entries.items[i].1).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Sets `key` to `value`. Every subtask must make the same changes (broadcast state's contract).
    /// Errors as [`BroadcastState::get`].
    pub fn put(&self, backend: &mut OperatorStateBackend, key: &K, value: &V) -> Result<()> {
        let entries = backend.entries_mut(&self.name)?;
        let (mut k, mut v) = (Vec::new(), Vec::new());
        key.encode(&mut k);
        value.encode(&mut v);
        match Self::find(entries, &k) {
            Ok(i) => entries.items[i].1 = v,
            Err(i) => entries.items.insert(i, (k, v)),
        }
        Ok(())
    }

    /// Removes `key`. Errors as [`BroadcastState::get`].
    pub fn remove(&self, backend: &mut OperatorStateBackend, key: &K) -> Result<()> {
        let entries = backend.entries_mut(&self.name)?;
        let mut k = Vec::new();
        key.encode(&mut k);
        if let Ok(i) = Self::find(entries, &k) {
            entries.items.remove(i);
        }
        Ok(())
    }

    /// All entries, in the order of the keys' encodings. Errors as [`BroadcastState::get`].
    pub fn entries(&self, backend: &OperatorStateBackend) -> Result<Vec<(K, V)>> {
        backend
            .entries(&self.name)?
            .items
            .iter()
            .map(|(k, v)| Ok((K::decode(k)?, V::decode(v)?)))
            .collect()
    }
}

/// `u8` version 1, `u8` redistribution (0 split, 1 union, 2 broadcast), `u32` length + codec ids (UTF-8),
/// `u32` count, then per entry `u32` length + element (list) or `u32` length + key, `u32` length + value
/// (broadcast); integers little-endian.
fn encode(e: &Entries) -> Vec<u8> {
    let mut out = vec![VERSION, e.redistribution.tag()];
    out.put_len_prefixed(|b| b.extend_from_slice(e.codecs.as_bytes()));
    // Saturates: operator state is small; a blob this large cannot be written anyway (the metadata's u32
    // lengths refuse it with a clear error).
    out.put_u32(u32::try_from(e.items.len()).unwrap_or(u32::MAX));
    for (a, b) in &e.items {
        out.put_len_prefixed(|o| o.extend_from_slice(a));
        if e.redistribution == Redistribution::Broadcast {
            out.put_len_prefixed(|o| o.extend_from_slice(b));
        }
    }
    out
}

fn decode(bytes: &[u8], what: &str) -> Result<Entries> {
    let mut d = Decoder::new(bytes, 0, what);
    let version = d.u8("version")?;
    if version != VERSION {
        return Err(Error::corrupt(
            what,
            format!("unknown operator state version {version}"),
        ));
    }
    let tag = d.u8("redistribution")?;
    let redistribution = Redistribution::from_tag(tag)
        .ok_or_else(|| Error::corrupt(what, format!("unknown redistribution {tag}")))?;
    let codecs = String::from_utf8(d.bytes("codec ids")?.to_vec())
        .map_err(|_| Error::corrupt(what, "codec ids are not UTF-8"))?;
    let per_item = if redistribution == Redistribution::Broadcast {
        8
    } else {
        4
    };
    let n = d.count("entries", per_item)?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        let a = d.bytes("element")?.to_vec();
        let b = if redistribution == Redistribution::Broadcast {
            d.bytes("value")?.to_vec()
        } else {
            Vec::new()
        };
        items.push((a, b));
    }
    d.finish("operator state")?;
    Ok(Entries {
        redistribution,
        codecs,
        items,
    })
}

#[cfg(test)]
mod tests;

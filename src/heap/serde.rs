//! How a heap table's stored values become bytes and back: the value, list and map encodings of keyed
//! snapshot records (`docs/formats.md`), reading older codecs (schema evolution, `docs/savepoints.md`),
//! and for a state with TTL how its values expire (the TTL serdes themselves: `heap/ttl.rs`).

use std::sync::Arc;

use crate::codec::{Codec, Migration};
use crate::error::Result;
use crate::format::bytes::{Decoder, PutExt};
use crate::heap::cow_map::sweep::Sweep;
use crate::keyed::backend::StateKey;
use crate::keyed::ttl::{StateTtlConfig, TtlTimes};
use crate::keyed::ttl_switch::ReadStored;

/// `(state name, stored value codec, restore time)` → the decoder of values written by the stored codec,
/// `None` if it is the registered one ([`ReadStored::migration`]).
pub(crate) type MigrationFor<S> = fn(&str, &str, u64) -> Result<Option<Migration<S>>>;

/// How a table's stored value becomes bytes and back (value, list or map encoding), and how it is read
/// from an older value codec (schema evolution, `docs/savepoints.md`).
pub(crate) struct ValueSerde<S> {
    pub(crate) encode: fn(&S, &mut Vec<u8>),
    /// A list: encodes the elements from the given position on as a list value (an append record of a
    /// delta file, `docs/formats.md`); `None` for other kinds.
    pub(crate) encode_tail: Option<fn(&S, usize, &mut Vec<u8>)>,
    /// A map: encodes a patch record's value (`docs/formats.md`) of the user keys given as codec bytes:
    /// those the map holds with their values, then the others as removed; `None` for other kinds.
    pub(crate) encode_patch: Option<EncodePatch<S>>,
    pub(crate) decode: fn(&[u8]) -> Result<S>,
    /// `(state name, stored value codec, restore time)`: `None` if the stored codec is the registered
    /// one, else the decoder of values written by the stored one (TTL switched on stamps values with the
    /// restore time: [`ReadStored`]).
    pub(crate) migration: MigrationFor<S>,
    /// A state with TTL: how its values expire (`heap/ttl.rs`).
    pub(crate) ttl: Option<TtlSerde<S>>,
}

impl<S> ValueSerde<S> {
    /// This serde for a state with TTL `ttl`.
    pub(crate) fn with_ttl(self, ttl: TtlSerde<S>) -> Self {
        ValueSerde {
            ttl: Some(ttl),
            ..self
        }
    }
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

/// Encodes a map's patch record value for the given user keys ([`ValueSerde::encode_patch`]).
pub(crate) type EncodePatch<S> = fn(&S, &[&[u8]], &mut Vec<u8>) -> Result<()>;

/// Serde of value, reducing and aggregating state: the value's codec; stored values of another codec are
/// read as `R` says (with or without TTL).
pub(crate) fn value_serde<V: Codec, R: ReadStored<V>>() -> ValueSerde<V> {
    ValueSerde {
        encode: V::encode,
        encode_tail: None,
        encode_patch: None,
        decode: V::decode,
        migration: R::migration,
        ttl: None,
    }
}

/// Serde of list state: `u32` count, then each element `u32` length + bytes (little-endian); elements of
/// another codec are read as `R` says.
pub(crate) fn list_serde<V: Codec + 'static, R: ReadStored<V>>() -> ValueSerde<ListCell<V>> {
    ValueSerde {
        encode: |list, out| encode_list(list, out),
        encode_tail: Some(|list, from, out| encode_list(list.get(from..).unwrap_or_default(), out)),
        encode_patch: None,
        decode: |bytes| decode_list(bytes, V::decode),
        migration: |state, stored, restored_at_ms| {
            Ok(
                R::migration(state, stored, restored_at_ms)?.map(|m| -> Migration<ListCell<V>> {
                    Arc::new(move |bytes| decode_list(bytes, &*m))
                }),
            )
        },
        ttl: None,
    }
}

fn encode_list<V: Codec>(list: &[V], out: &mut Vec<u8>) {
    // Saturates: such a list is far over the 1 GiB frame limit, which the writer reports.
    out.put_u32(u32::try_from(list.len()).unwrap_or(u32::MAX));
    for v in list {
        out.put_len_prefixed(|b| v.encode(b));
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

/// Serde of map state: `u32` count, then each entry: `u32` length + user key, `u32` length + value;
/// values of another codec are read as `R` says.
pub(crate) fn map_serde<UK: StateKey, V: Codec + 'static, R: ReadStored<V>>()
-> ValueSerde<MapCell<UK, V>> {
    ValueSerde {
        encode_tail: None,
        encode_patch: Some(encode_map_patch::<UK, V>),
        encode: |map, out| {
            // Saturates: such a map is far over the 1 GiB frame limit, which the writer reports.
            out.put_u32(u32::try_from(map.len()).unwrap_or(u32::MAX));
            for (k, v) in map.iter() {
                out.put_len_prefixed(|b| k.encode(b));
                out.put_len_prefixed(|b| v.encode(b));
            }
        },
        decode: |bytes| decode_map(bytes, V::decode),
        migration: |state, stored, restored_at_ms| {
            Ok(
                R::migration(state, stored, restored_at_ms)?.map(
                    |m| -> Migration<MapCell<UK, V>> {
                        Arc::new(move |bytes| decode_map(bytes, &*m))
                    },
                ),
            )
        },
        ttl: None,
    }
}

/// A patch record's value of `map` for `user_keys` (codec bytes): `u32` count, then each user key the map
/// holds with its value as a map value's entries, then `u32` count and each removed user key (`u32`
/// length + bytes).
fn encode_map_patch<UK: StateKey, V: Codec>(
    map: &MapCell<UK, V>,
    user_keys: &[&[u8]],
    out: &mut Vec<u8>,
) -> Result<()> {
    let mut removed = Vec::new();
    let mut held = Vec::with_capacity(user_keys.len());
    for &bytes in user_keys {
        match map.get(&UK::decode(bytes)?) {
            Some(v) => held.push((bytes, v)),
            None => removed.push(bytes),
        }
    }
    out.put_u32(held.len() as u32);
    for (k, v) in held {
        out.put_bytes(k);
        out.put_len_prefixed(|b| v.encode(b));
    }
    out.put_u32(removed.len() as u32);
    for k in removed {
        out.put_bytes(k);
    }
    Ok(())
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

/// The TTL of a table's values, and how to judge and write them at a cutoff: a part (a value, a list
/// element, a map entry) last written at or before the cutoff has expired.
pub(crate) struct TtlSerde<S> {
    config: StateTtlConfig,
    /// Whether any part of the value was written after the cutoff (ms).
    live: fn(&S, u64) -> bool,
    /// Appends the encoding of the value's parts written after the cutoff (the table's encoding: a list
    /// or map with fewer elements); false, with nothing appended, if none was.
    encode_live: fn(&S, u64, &mut Vec<u8>) -> bool,
    /// What incremental cleanup does with the value at the cutoff: keep it (nothing expired), remove it
    /// (everything did), or replace it with its live parts; and the oldest stamp kept (`u64::MAX` if
    /// none).
    prune: fn(&S, u64) -> (Sweep<S>, u64),
}

impl<S> Clone for TtlSerde<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for TtlSerde<S> {}

impl<S> TtlSerde<S> {
    /// `config`'s expiry of values judged by `live`, written by `encode_live` and cleaned up by `prune`
    /// (see the fields).
    pub(crate) fn new(
        config: StateTtlConfig,
        live: fn(&S, u64) -> bool,
        encode_live: fn(&S, u64, &mut Vec<u8>) -> bool,
        prune: fn(&S, u64) -> (Sweep<S>, u64),
    ) -> Self {
        TtlSerde {
            config,
            live,
            encode_live,
            prune,
        }
    }

    /// The cutoff now on `times`, for a snapshot or (`for_reads`) a read: [`StateTtlConfig::cutoff`].
    pub(crate) fn cutoff(&self, times: &TtlTimes, for_reads: bool) -> Option<u64> {
        self.config.cutoff(times, for_reads)
    }

    /// Whether `value` has a part written after `cutoff`.
    #[inline]
    pub(crate) fn live(&self, value: &S, cutoff: u64) -> bool {
        (self.live)(value, cutoff)
    }

    /// Appends `value`'s parts written after `cutoff`; false if there is none.
    pub(crate) fn encode_live(&self, value: &S, cutoff: u64, out: &mut Vec<u8>) -> bool {
        (self.encode_live)(value, cutoff, out)
    }

    /// `value` without its parts written at or before `cutoff` (incremental cleanup), and the oldest
    /// stamp of what is kept (`u64::MAX` if nothing).
    #[inline]
    pub(crate) fn prune(&self, value: &S, cutoff: u64) -> (Sweep<S>, u64) {
        (self.prune)(value, cutoff)
    }

    /// The state's time to live (ms).
    pub(crate) fn ttl_ms(&self) -> u64 {
        self.config.ttl_ms
    }
}

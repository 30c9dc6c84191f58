//! Key layout of the RocksDB backend, row format 2 (`docs/formats.md`, "RocksDB backend rows"): key group first,
//! big-endian, so that a key-group range is one contiguous key range of every column family.
//!
//! `[key group: 1 byte, or u16 BE when max parallelism > 128][varint key len][key][varint ns len][ns]` then,
//! for map state, `[user key]`. The key-group width is Flink's
//! (`CompositeKeySerializationUtils.computeRequiredBytesInKeyGroupPrefix`); lengths are unsigned LEB128.
//! A length-prefixed field is a prefix-free code, so the rows of one (key, namespace) are exactly the rows
//! that start with its encoding, which map state scans.

use crate::error::{Error, Result};
use crate::format::bytes::PutExt;

/// Row format of the RocksDB backend that this version writes and reads (recorded as the state handles'
/// format, [`crate::snapshot::HandleFormat::RocksIncremental`]). Format 1 had a 2-byte key group and `u32 BE`
/// lengths.
pub(crate) const ROW_FORMAT: u8 = 2;

/// Bytes of the key-group prefix for `max_parallelism` (at most 2^15): 1 up to 128 key groups, else 2.
#[inline]
pub(crate) fn key_group_bytes(max_parallelism: u32) -> usize {
    if max_parallelism <= 128 { 1 } else { 2 }
}

/// Appends the first key of key group `key_group` (also the exclusive end of the group before it;
/// `key_group` may be `max_parallelism`, which still fits the width).
#[inline]
pub(crate) fn push_key_group(key_group: u32, max_parallelism: u32, out: &mut Vec<u8>) {
    if key_group_bytes(max_parallelism) == 1 {
        out.push(key_group as u8);
    } else {
        out.extend_from_slice(&(key_group as u16).to_be_bytes());
    }
}

/// The first key of key group `key_group`, as [`push_key_group`] writes it.
pub(crate) fn key_group_prefix(key_group: u32, max_parallelism: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(2);
    push_key_group(key_group, max_parallelism, &mut out);
    out
}

/// Appends `len` as unsigned LEB128 (1 byte below 128, at most 5).
#[inline]
pub(crate) fn push_varint(mut len: u32, out: &mut Vec<u8>) {
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

/// Reads an unsigned LEB128 `u32` at the start of `bytes`: the value and the bytes it took. `None` if it
/// is cut off, longer than 5 bytes, overflows, or is overlong (a last byte of 0 after the first: `80 00`
/// for 0). Only the shortest encoding, which [`push_varint`] writes, is accepted, so a row key has one
/// encoding and the prefix scans of a (key, namespace) find every row of it (found by `cargo fuzz`,
/// target `lsm_rows`).
fn take_varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return None;
            }
            return u32::try_from(value).ok().map(|v| (v as usize, i + 1));
        }
    }
    None
}

/// `[key group][key len][key]`: the part of every row key that the current key determines.
#[inline]
pub(crate) fn key_prefix(
    key_group: u32,
    max_parallelism: u32,
    key_bytes: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    push_key_prefix(key_group, max_parallelism, key_bytes, out);
}

/// As [`key_prefix`], appended to `out` (a buffer of several row keys, `import_rows::Rows`).
#[inline]
pub(crate) fn push_key_prefix(
    key_group: u32,
    max_parallelism: u32,
    key_bytes: &[u8],
    out: &mut Vec<u8>,
) {
    push_key_group(key_group, max_parallelism, out);
    push_varint(key_bytes.len() as u32, out);
    out.extend_from_slice(key_bytes);
}

/// Appends `[ns len][ns]` to a key prefix, `encode` writing the namespace bytes. The length is reserved as
/// one byte and the bytes moved in the rare case (128 bytes or more) that it takes more.
#[inline]
pub(crate) fn push_namespace(out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.push(0);
    encode(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut varint = Vec::with_capacity(5);
        push_varint(len as u32, &mut varint);
        out.splice(at..at + 1, varint);
    }
}

/// The parts of a row key.
pub(crate) struct RowKey<'a> {
    pub(crate) key_group: u32,
    pub(crate) key: &'a [u8],
    pub(crate) namespace: &'a [u8],
    /// The rest of the row key: a map row's user key, empty for other kinds.
    pub(crate) user_key: &'a [u8],
}

/// Splits a row key of a backend with `max_parallelism` into its parts.
///
/// # Errors
/// [`Error::Corrupt`] if the lengths do not fit the bytes.
pub(crate) fn split_row_key(row: &[u8], max_parallelism: u32) -> Result<RowKey<'_>> {
    let bad = || {
        Error::corrupt(
            "<lsm row key>",
            format!("malformed row key of {} bytes", row.len()),
        )
    };
    let kg_bytes = key_group_bytes(max_parallelism);
    let kg = row.get(..kg_bytes).ok_or_else(bad)?;
    let key_group = kg.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    let rest = &row[kg_bytes..];
    let (key_len, n) = take_varint(rest).ok_or_else(bad)?;
    let key = rest.get(n..n + key_len).ok_or_else(bad)?;
    let rest = &rest[n + key_len..];
    let (ns_len, n) = take_varint(rest).ok_or_else(bad)?;
    let namespace = rest.get(n..n + ns_len).ok_or_else(bad)?;
    Ok(RowKey {
        key_group,
        key,
        namespace,
        user_key: &rest[n + ns_len..],
    })
}

/// Appends a timer row key, `[key group][timestamp: u64 BE][varint key len][key][namespace]` (value empty):
/// within a key group, byte order is timestamp order, so the earliest timers of a key group are the
/// first rows of its range. `key_prefix` is the current key's `[key group][varint key len][key]`
/// ([`key_prefix`]), whose key-group bytes the timestamp follows.
#[inline]
pub(crate) fn push_timer_row(
    key_prefix: &[u8],
    max_parallelism: u32,
    timestamp: u64,
    out: &mut Vec<u8>,
    namespace: impl FnOnce(&mut Vec<u8>),
) {
    let kg = key_group_bytes(max_parallelism).min(key_prefix.len());
    out.extend_from_slice(&key_prefix[..kg]);
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&key_prefix[kg..]);
    namespace(out);
}

/// The parts of a timer row key.
pub(crate) struct TimerRow<'a> {
    pub(crate) key_group: u32,
    pub(crate) timestamp: u64,
    pub(crate) key: &'a [u8],
    pub(crate) namespace: &'a [u8],
}

/// The timestamp of timer row `row` alone (the 8 bytes after the key group), without decoding the rest
/// as [`split_timer_row`] does; `None` for a row too short to hold one.
#[inline]
pub(crate) fn timer_row_timestamp(row: &[u8], max_parallelism: u32) -> Option<u64> {
    let at = key_group_bytes(max_parallelism);
    let ts: [u8; 8] = row.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(ts))
}

/// Splits a timer row key ([`push_timer_row`]) of a backend with `max_parallelism`.
///
/// # Errors
/// [`Error::Corrupt`] if the row is too short for its lengths.
pub(crate) fn split_timer_row(row: &[u8], max_parallelism: u32) -> Result<TimerRow<'_>> {
    let bad = || {
        Error::corrupt(
            "<lsm timer row>",
            format!("malformed timer row of {} bytes", row.len()),
        )
    };
    let kg_bytes = key_group_bytes(max_parallelism);
    let kg = row.get(..kg_bytes).ok_or_else(bad)?;
    let key_group = kg.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    let ts: [u8; 8] = row
        .get(kg_bytes..kg_bytes + 8)
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    let rest = &row[kg_bytes + 8..];
    let (key_len, n) = take_varint(rest).ok_or_else(bad)?;
    let key = rest.get(n..n + key_len).ok_or_else(bad)?;
    Ok(TimerRow {
        key_group,
        timestamp: u64::from_be_bytes(ts),
        key,
        namespace: &rest[n + key_len..],
    })
}

/// Encodes list elements as the value of a list row: each element as varint length + bytes, so that
/// concatenating two encodings (the merge operator) gives the encoding of the concatenated list.
pub(crate) fn push_list_element(element: &[u8], out: &mut Vec<u8>) {
    push_varint(element.len() as u32, out);
    out.extend_from_slice(element);
}

/// The value of a list row holding `values`, each element encoded by its codec and pushed as
/// [`push_list_element`] does.
pub(crate) fn encode_list<V: crate::codec::Codec>(values: &[V]) -> Vec<u8> {
    let (mut out, mut element) = (Vec::new(), Vec::new());
    for v in values {
        element.clear();
        v.encode(&mut element);
        push_list_element(&element, &mut out);
    }
    out
}

/// Splits the value of a list row into its elements.
///
/// # Errors
/// [`Error::Corrupt`] if the lengths do not fit the bytes.
pub(crate) fn split_list(mut value: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let bad = || Error::corrupt("<lsm list value>", "malformed list element");
        let (len, n) = take_varint(value).ok_or_else(bad)?;
        let element = value.get(n..n + len).ok_or_else(bad)?;
        out.push(element);
        value = &value[n + len..];
    }
    Ok(out)
}

/// Row key of a state's meta information in the `default` column family.
pub(crate) fn meta_key(state_name: &str) -> Vec<u8> {
    let mut k = b"meta:".to_vec();
    k.extend_from_slice(state_name.as_bytes());
    k
}

/// What a state's column family name starts with.
pub(crate) const CF_PREFIX: &str = "s:";

/// Column family name of a state.
pub(crate) fn cf_name(state_name: &str) -> String {
    format!("{CF_PREFIX}{state_name}")
}

/// Encodes a state's meta information (same fields as in the keyed snapshot header, `docs/formats.md`).
pub(crate) fn encode_meta(meta: &crate::snapshot::state_meta::StateMeta) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_str(&meta.name);
    out.put_u8(meta.kind.tag());
    out.put_str(&meta.key_codec);
    out.put_str(&meta.namespace_codec);
    out.put_str(&meta.value_codec);
    out.put_str(&meta.user_key_codec);
    out
}

/// Decodes [`encode_meta`].
///
/// # Errors
/// [`Error::Corrupt`] naming `path` if the bytes are not a state meta.
pub(crate) fn decode_meta(
    bytes: &[u8],
    path: &str,
) -> Result<crate::snapshot::state_meta::StateMeta> {
    let mut d = crate::format::bytes::Decoder::new(bytes, 0, path);
    let meta = d.state_meta()?;
    d.finish("state meta")?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kg: u32, max_parallelism: u32, key: &[u8], ns: &[u8], user_key: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        key_prefix(kg, max_parallelism, key, &mut out);
        push_namespace(&mut out, |o| o.extend_from_slice(ns));
        out.extend_from_slice(user_key);
        out
    }

    #[test]
    fn fuzz_lsm_rows_overlong_varint_is_refused() {
        // The input `cargo fuzz` found: at max parallelism 32,768, key group 0x0331 and a key length
        // `80 00`, an overlong encoding of 0 that re-encoded as `00`, a second encoding of one row key.
        let found = [0x03, 0x31, 0x80, 0x00, 0x00, 0x04, 0x0b, 0, 0, 0, 0];
        assert!(split_row_key(&found, 1 << 15).is_err());
        assert!(split_list(&[0x80, 0x00]).is_err());
        // The shortest encodings still decode: 0, 127, 128 and u32::MAX.
        for len in [0u32, 127, 128, u32::MAX] {
            let mut b = Vec::new();
            push_varint(len, &mut b);
            assert_eq!(take_varint(&b), Some((len as usize, b.len())));
        }
    }

    #[test]
    fn row_keys_split_back_and_sort_by_key_group_first() {
        for max_parallelism in [1, 128, 129, 4096, 1 << 15] {
            let last = max_parallelism - 1;
            let long = vec![7u8; 300];
            for (kg, key, ns) in [
                (0, &b"zz"[..], &b"ns"[..]),
                (last, b"", b""),
                (last / 2, &long[..], &long[..200]),
            ] {
                let a = row(kg, max_parallelism, key, ns, b"uk");
                let split = split_row_key(&a, max_parallelism).unwrap();
                assert_eq!((split.key_group, split.key, split.namespace), (kg, key, ns));
                assert!(a.as_slice() >= key_group_prefix(kg, max_parallelism).as_slice());
                assert!(a.as_slice() < key_group_prefix(kg + 1, max_parallelism).as_slice());
                assert!(split_row_key(&a[..a.len() - 3], max_parallelism).is_err());
            }
        }
        // The width: Flink's, one byte up to 128 key groups.
        assert_eq!(row(5, 128, b"k", b"", b"").len(), 1 + 1 + 1 + 1);
        assert_eq!(row(5, 129, b"k", b"", b"").len(), 2 + 1 + 1 + 1);
    }

    /// The rows of one (key, namespace) are exactly those that start with its encoding, whatever the other
    /// keys and namespaces are (map state scans this prefix).
    #[test]
    fn a_key_and_namespace_prefix_matches_only_its_own_rows() {
        let parts: [&[u8]; 5] = [b"", b"a", b"ab", &[0x80; 130], &[0x01]];
        for k1 in parts {
            for n1 in parts {
                let p = row(3, 128, k1, n1, b"");
                for k2 in parts {
                    for n2 in parts {
                        let r = row(3, 128, k2, n2, b"user key");
                        assert_eq!(r.starts_with(&p), (k1, n1) == (k2, n2));
                    }
                }
            }
        }
    }

    #[test]
    fn varints_round_trip_and_reject_overlong_input() {
        for v in [0u32, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut out = Vec::new();
            push_varint(v, &mut out);
            assert_eq!(take_varint(&out), Some((v as usize, out.len())));
            assert_eq!(take_varint(&out[..out.len() - 1]), None);
        }
        assert_eq!(take_varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), None);
        assert_eq!(
            take_varint(&[0xff, 0xff, 0xff, 0xff, 0x7f]),
            None,
            "over u32"
        );
    }

    #[test]
    fn timer_rows_split_back_and_sort_by_key_group_then_timestamp() {
        for max_parallelism in [128, 4096] {
            let row = |kg: u32, ts: u64, key: &[u8], ns: &[u8]| {
                let mut prefix = Vec::new();
                key_prefix(kg, max_parallelism, key, &mut prefix);
                let mut out = Vec::new();
                push_timer_row(&prefix, max_parallelism, ts, &mut out, |o| {
                    o.extend_from_slice(ns)
                });
                out
            };
            let r = row(7, 0x0102_0304_0506_0708, b"key", b"ns");
            let parts = split_timer_row(&r, max_parallelism).unwrap();
            assert_eq!(parts.key_group, 7);
            assert_eq!(parts.timestamp, 0x0102_0304_0506_0708);
            assert_eq!((parts.key, parts.namespace), (&b"key"[..], &b"ns"[..]));
            let mut rows = [
                row(2, 5, b"a", b""),
                row(1, 9, b"a", b""),
                row(1, 3, b"zz", b"x"),
                row(1, 3, b"b", b""),
                row(1, 256, b"a", b""),
            ];
            rows.sort();
            let order: Vec<(u32, u64)> = rows
                .iter()
                .map(|r| split_timer_row(r, max_parallelism).unwrap())
                .map(|p| (p.key_group, p.timestamp))
                .collect();
            assert_eq!(order, [(1, 3), (1, 3), (1, 9), (1, 256), (2, 5)]);
            assert!(split_timer_row(&r[..r.len() - 6], max_parallelism).is_err());
        }
        // The example of docs/formats.md: 1000 ms, i64 key 42, key group 5 of 128, void namespace.
        let mut prefix = Vec::new();
        key_prefix(5, 128, &42i64.to_be_bytes(), &mut prefix);
        let mut row = Vec::new();
        push_timer_row(&prefix, 128, 1000, &mut row, |_| {});
        let documented = [5, 0, 0, 0, 0, 0, 0, 3, 0xe8, 8, 0, 0, 0, 0, 0, 0, 0, 0x2a];
        assert_eq!(row, documented);
    }

    #[test]
    fn list_values_concatenate() {
        let mut v = Vec::new();
        push_list_element(b"ab", &mut v);
        push_list_element(b"", &mut v);
        push_list_element(&[9; 200], &mut v);
        push_list_element(b"c", &mut v);
        assert_eq!(
            split_list(&v).unwrap(),
            vec![&b"ab"[..], b"", &[9; 200], b"c"]
        );
        assert!(split_list(&v[..v.len() - 1]).is_err());
    }
}

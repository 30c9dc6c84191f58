//! Key layout of the LSM backend (`docs/lsm.md`): big-endian, key group first, so that a key-group range
//! is one contiguous key range of every column family.
//!
//! `[key group u16 BE][key len u32 BE][key][ns len u32 BE][ns]` then, for map state, `[user key]`.

use crate::error::{Error, Result};
use crate::format::bytes::PutExt;

/// Bytes of the key-group prefix.
pub(crate) const KEY_GROUP_BYTES: usize = 2;

/// The first key of key group `key_group` (also the exclusive end of the group before it).
pub(crate) fn key_group_prefix(key_group: u32) -> [u8; KEY_GROUP_BYTES] {
    // Max parallelism is at most 2^15 (UPPER_BOUND_MAX_PARALLELISM), so `key_group` fits in a u16, and
    // `key_group_prefix(max_parallelism)` is a valid exclusive upper bound.
    (key_group as u16).to_be_bytes()
}

/// `[key group][key len][key]`: the part of every row key that the current key determines.
pub(crate) fn key_prefix(key_group: u32, key_bytes: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&key_group_prefix(key_group));
    out.extend_from_slice(&(key_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(key_bytes);
}

/// Appends `[ns len][ns]` to a key prefix.
#[cfg(test)]
pub(crate) fn push_namespace(ns_bytes: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(ns_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(ns_bytes);
}

/// The parts of a row key.
pub(crate) struct RowKey<'a> {
    pub(crate) key_group: u32,
    pub(crate) key: &'a [u8],
    pub(crate) namespace: &'a [u8],
}

/// Splits a row key into its parts.
///
/// # Errors
/// [`Error::Corrupt`] if the lengths do not fit the bytes.
pub(crate) fn split_row_key(row: &[u8]) -> Result<RowKey<'_>> {
    let bad = || {
        Error::corrupt(
            "<lsm row key>",
            format!("malformed row key of {} bytes", row.len()),
        )
    };
    let take_len = |at: usize| -> Option<usize> {
        let b = row.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let kg = row.get(..KEY_GROUP_BYTES).ok_or_else(bad)?;
    let key_group = u32::from(u16::from_be_bytes([kg[0], kg[1]]));
    let key_len = take_len(KEY_GROUP_BYTES).ok_or_else(bad)?;
    let key_start = KEY_GROUP_BYTES + 4;
    let key = row.get(key_start..key_start + key_len).ok_or_else(bad)?;
    let ns_len_at = key_start + key_len;
    let ns_len = take_len(ns_len_at).ok_or_else(bad)?;
    let ns_start = ns_len_at + 4;
    let namespace = row.get(ns_start..ns_start + ns_len).ok_or_else(bad)?;
    Ok(RowKey {
        key_group,
        key,
        namespace,
    })
}

/// Encodes list elements as the value of a list row: each element as `u32 BE length` + bytes, so that
/// concatenating two encodings (the merge operator) gives the encoding of the concatenated list.
pub(crate) fn push_list_element(element: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(element.len() as u32).to_be_bytes());
    out.extend_from_slice(element);
}

/// Splits the value of a list row into its elements.
///
/// # Errors
/// [`Error::Corrupt`] if the lengths do not fit the bytes.
pub(crate) fn split_list(mut value: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let bad = || Error::corrupt("<lsm list value>", "malformed list element");
        let len = value.get(..4).ok_or_else(bad)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let element = value.get(4..4 + len).ok_or_else(bad)?;
        out.push(element);
        value = &value[4 + len..];
    }
    Ok(out)
}

/// Row key of a state's meta information in the `default` column family.
pub(crate) fn meta_key(state_name: &str) -> Vec<u8> {
    let mut k = b"meta:".to_vec();
    k.extend_from_slice(state_name.as_bytes());
    k
}

/// Column family name of a state.
pub(crate) fn cf_name(state_name: &str) -> String {
    format!("s:{state_name}")
}

/// Encodes a state's meta information (same fields as in the keyed snapshot header, `docs/formats.md`).
pub(crate) fn encode_meta(meta: &crate::keyed::descriptor::StateMeta) -> Vec<u8> {
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
pub(crate) fn decode_meta(bytes: &[u8], path: &str) -> Result<crate::keyed::descriptor::StateMeta> {
    use crate::keyed::descriptor::{StateKind, StateMeta};
    let mut d = crate::format::bytes::Decoder::new(bytes, 0, path);
    let name = d.str("state name")?.to_string();
    let tag = d.u8("state kind")?;
    let kind =
        StateKind::from_tag(tag).ok_or_else(|| d.error(format!("unknown state kind {tag}")))?;
    let meta = StateMeta {
        name,
        kind,
        key_codec: d.str("key codec")?.to_string(),
        namespace_codec: d.str("namespace codec")?.to_string(),
        value_codec: d.str("value codec")?.to_string(),
        user_key_codec: d.str("user key codec")?.to_string(),
    };
    d.finish("state meta")?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_split_back_and_sort_by_key_group_first() {
        let mut a = Vec::new();
        key_prefix(3, b"zz", &mut a);
        push_namespace(b"ns", &mut a);
        a.extend_from_slice(b"uk");
        let row = split_row_key(&a).unwrap();
        assert_eq!(
            (row.key_group, row.key, row.namespace),
            (3, &b"zz"[..], &b"ns"[..])
        );
        let mut b = Vec::new();
        key_prefix(4, b"aa", &mut b);
        push_namespace(b"", &mut b);
        assert!(a < b && b.as_slice() < key_group_prefix(5).as_slice());
        assert!(split_row_key(&a[..a.len() - 5]).is_err());
    }

    #[test]
    fn list_values_concatenate() {
        let mut v = Vec::new();
        push_list_element(b"ab", &mut v);
        push_list_element(b"", &mut v);
        push_list_element(b"c", &mut v);
        assert_eq!(split_list(&v).unwrap(), vec![&b"ab"[..], b"", b"c"]);
        assert!(split_list(&v[..v.len() - 1]).is_err());
    }
}

//! Merging a chain's element records into the record that decides their entry
//! (`docs/formats.md`, "Delta files"): a list value followed by the elements of append records, a map
//! value with patch records applied. Values are taken as bytes: elements and map values are copied as
//! they are, user keys compared by their codec bytes.

use crate::error::{Error, Result};
use crate::format::bytes::{Decoder, PutExt};

/// A record's value and the path of its file (for errors).
pub(crate) type Part<'a> = (&'a [u8], &'a str);

/// Writes into `out` the list value `base` followed by the elements of the list values `tails` (newest
/// first, so appended last to first): `u32` count (little-endian), then the elements as they are. Each
/// value comes with the path of its file.
///
/// # Errors
/// [`Error::Corrupt`] naming the file of a value shorter than its count, or of the tail that takes the
/// list past `u32::MAX` elements.
pub(crate) fn merge_list(base: Part<'_>, tails: &[Part<'_>], out: &mut Vec<u8>) -> Result<()> {
    let count = |(v, path): Part<'_>| -> Result<u32> {
        let prefix = v.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok());
        prefix.map(u32::from_le_bytes).ok_or_else(|| {
            Error::corrupt(path, "an append record on a value that is not a list value")
        })
    };
    let mut total = count(base)?;
    for &tail in tails {
        total = total.checked_add(count(tail)?).ok_or_else(|| {
            Error::corrupt(
                tail.1,
                "append records make a list of more than 2^32 elements",
            )
        })?;
    }
    out.clear();
    out.put_u32(total);
    out.extend_from_slice(&base.0[4..]);
    for (tail, _) in tails.iter().rev() {
        out.extend_from_slice(&tail[4..]);
    }
    Ok(())
}

/// Writes into `out` the map value `base` with the patch record values `patches` (newest first, so
/// applied last to first): each puts its user keys' values and removes its removed user keys, user
/// keys compared as bytes. The map value's entries keep the base's order, new user keys after them.
///
/// # Errors
/// [`Error::Corrupt`] naming the file of a value that does not parse as a map value or a patch.
pub(crate) fn merge_map(base: Part<'_>, patches: &[Part<'_>], out: &mut Vec<u8>) -> Result<()> {
    let mut entries: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
    let mut at: hashbrown::HashMap<&[u8], usize, foldhash::fast::FixedState> = Default::default();
    let mut put = |k, v| match at.get(k) {
        Some(&i) => entries[i] = (k, v),
        None => {
            at.insert(k, entries.len());
            entries.push((k, v));
        }
    };
    let mut d = Decoder::new(base.0, 0, base.1);
    for _ in 0..d.count("map size", 8)? {
        put(d.bytes("map user key")?, Some(d.bytes("map value")?));
    }
    d.finish("map")?;
    for &(patch, path) in patches.iter().rev() {
        let mut d = Decoder::new(patch, 0, path);
        for _ in 0..d.count("patched user keys", 8)? {
            put(d.bytes("map user key")?, Some(d.bytes("map value")?));
        }
        for _ in 0..d.count("removed user keys", 4)? {
            put(d.bytes("removed user key")?, None);
        }
        d.finish("patch")?;
    }
    out.clear();
    let live = entries.iter().filter(|(_, v)| v.is_some()).count();
    out.put_u32(u32::try_from(live).map_err(|_| Error::corrupt(base.1, "a map of 2^32 entries"))?);
    for (k, v) in entries {
        if let Some(v) = v {
            out.put_bytes(k);
            out.put_bytes(v);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::merge_list;
    use crate::format::bytes::PutExt;

    /// A list value of `elements`, each as its own bytes.
    pub(crate) fn list(elements: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_u32(elements.len() as u32);
        for e in elements {
            out.put_bytes(e);
        }
        out
    }

    #[test]
    fn appended_elements_follow_the_base_oldest_first() {
        let base = list(&[b"a", b"bb"]);
        let (newest, oldest) = (list(&[b"d"]), list(&[b"c"]));
        let mut out = Vec::new();
        merge_list((&base, "f"), &[(&newest, "f"), (&oldest, "f")], &mut out).unwrap();
        assert_eq!(out, list(&[b"a", b"bb", b"c", b"d"]));
        merge_list((&list(&[]), "f"), &[(&list(&[]), "f")], &mut out).unwrap();
        assert_eq!(out, list(&[]));
    }

    #[test]
    fn a_value_without_a_count_or_too_many_elements_is_corrupt() {
        let mut out = Vec::new();
        let x = list(&[b"x"]);
        let short = merge_list((&[1, 0], "base"), &[(&x, "tail")], &mut out).unwrap_err();
        assert!(
            short
                .to_string()
                .contains("`base`: an append record on a value"),
            "{short}"
        );
        let short = merge_list((&x, "base"), &[(&[0u8][..], "tail")], &mut out).unwrap_err();
        assert!(
            short
                .to_string()
                .contains("`tail`: an append record on a value"),
            "{short}"
        );
        let huge = u32::MAX.to_le_bytes();
        let overflow = merge_list((&x, "base"), &[(&huge[..], "tail")], &mut out).unwrap_err();
        assert!(
            overflow.to_string().contains("`tail`: append records make"),
            "{overflow}"
        );
    }
}

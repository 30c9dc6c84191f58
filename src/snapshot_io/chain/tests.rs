//! The merge of heap incremental chains: element records, patches, whole key groups, corrupt chains.

use super::merge;
use crate::format::bytes::PutExt;
use crate::format::keyed_file::{APPEND, FileHeader, PATCH, TOMBSTONE};
use crate::key_group::KeyGroupRange;
use crate::snapshot::state_meta::{StateKind, StateMeta};
use crate::snapshot_io::element_merge::tests::list;
use crate::snapshot_io::loaded::LoadedFile;

/// The record bytes of `records` `(state word, key, value)`, `u64` keys, empty namespaces.
fn record_bytes(records: &[(u32, u64, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (state, key, value) in records {
        bytes.put_u32(*state);
        bytes.put_bytes(&key.to_be_bytes());
        bytes.put_bytes(&[]);
        bytes.put_bytes(value);
    }
    bytes
}

/// A file of one list state (`u64` keys) holding `records` `(state word, key, list value)` in key
/// group 0; a delta (version 3) unless `full`.
fn file(path: &str, full: bool, records: &[(u32, u64, Vec<u8>)]) -> LoadedFile {
    let bytes = record_bytes(records);
    LoadedFile {
        path: path.into(),
        header: FileHeader {
            max_parallelism: 1,
            key_groups: KeyGroupRange::new(0, 0).unwrap(),
            states: vec![StateMeta::new::<u64, (), u64>("l", StateKind::List)],
            rewrite: (!full).then(Vec::new),
            appends: !full,
            patches: !full,
            whole: crate::key_group::KeyGroupRange::EMPTY,
        },
        groups: vec![(0, bytes)],
        sources: Default::default(),
    }
}

/// A merged record: key and value bytes.
type KeyValue = (Vec<u8>, Vec<u8>);

/// The records `merge` makes of `files`, or the error's text.
fn merged(files: Vec<LoadedFile>) -> Result<Vec<KeyValue>, String> {
    let out = merge(files).map_err(|e| e.to_string())?;
    let records = crate::format::keyed_file::read::records(&out.groups[0].1, "merged");
    Ok(records
        .map(|r| r.unwrap())
        .map(|r| (r.key.to_vec(), r.value.to_vec()))
        .collect())
}

#[test]
fn a_chain_of_appends_restores_the_whole_list_and_an_append_on_nothing_is_corrupt() {
    let full = || {
        file(
            "full",
            true,
            &[(0, 1, list(&[b"a"])), (0, 2, list(&[b"z"]))],
        )
    };
    let chain = vec![
        full(),
        file(
            "d1",
            false,
            &[(APPEND, 1, list(&[b"b"])), (TOMBSTONE, 2, vec![])],
        ),
        file("d2", false, &[(APPEND, 1, list(&[b"c", b"d"]))]),
    ];
    let key = 1u64.to_be_bytes().to_vec();
    assert_eq!(
        merged(chain).unwrap(),
        vec![(key, list(&[b"a", b"b", b"c", b"d"]))]
    );
    for (expected, delta) in [
        (
            "`d2`: append or patch records with no earlier record",
            (APPEND, 3, list(&[b"x"])),
        ),
        (
            "`d1`: append or patch records on top of a tombstone",
            (APPEND, 2, list(&[b"x"])),
        ),
        (
            "`d2`: a record of two kinds",
            (APPEND | TOMBSTONE, 1, vec![]),
        ),
        (
            "`d2`: an append record on a value that is not a list",
            (APPEND, 1, vec![1]),
        ),
    ] {
        let tombstone = file("d1", false, &[(TOMBSTONE, 2, vec![])]);
        let err = merged(vec![full(), tombstone, file("d2", false, &[delta])]).unwrap_err();
        assert!(err.contains(expected), "expected `{expected}`: {err}");
    }
    // A file of version 2 has no append records: the bit makes an unknown state.
    let mut v2 = file("v2", false, &[(APPEND, 1, list(&[b"b"]))]);
    v2.header.appends = false;
    let err = merged(vec![full(), v2]).unwrap_err();
    assert!(err.contains("unknown state"), "{err}");
}

/// Records `(state word, key, list value)` of a key group.
type Records<'r> = &'r [(u32, u64, Vec<u8>)];

/// A delta file of one list state over key groups 0 and 1 that rewrites no state, holds `whole`
/// whole and `groups`' records `(state word, key, list value)` per key group.
fn slice_file(path: &str, whole: KeyGroupRange, groups: &[(u32, Records<'_>)]) -> LoadedFile {
    let mut file = file(path, false, &[]);
    file.header.max_parallelism = 2;
    file.header.key_groups = KeyGroupRange::new(0, 1).unwrap();
    file.header.whole = whole;
    file.groups = (groups.iter())
        .map(|(kg, records)| (*kg, record_bytes(records)))
        .collect();
    file
}

#[test]
fn a_key_group_is_read_back_to_its_newest_whole_file_only() {
    let kg = |k: u32| KeyGroupRange::new(k, k).unwrap();
    let p0 = || {
        slice_file(
            "p0",
            kg(0),
            &[(0, &[(0, 1, list(&[b"a"])), (0, 9, list(&[b"z"]))])],
        )
    };
    let p1 = || slice_file("p1", kg(1), &[(1, &[(0, 2, list(&[b"b"]))])]);
    let d2 = || {
        let kg0: &[_] = &[(APPEND, 1, list(&[b"c"]))];
        let kg1: &[_] = &[(TOMBSTONE, 2, vec![])];
        slice_file("d2", KeyGroupRange::EMPTY, &[(0, kg0), (1, kg1)])
    };
    let s3 = |kg0: &[(u32, u64, Vec<u8>)]| {
        let kg1: &[_] = &[(0, 3, list(&[b"e"]))];
        slice_file("s3", kg(0), &[(0, kg0), (1, kg1)])
    };
    let whole_kg0 = [(0, 1, list(&[b"a", b"c", b"d"]))];
    let out = merge(vec![p0(), p1(), d2(), s3(&whole_kg0)]).unwrap();
    let records: Vec<(u32, u64, Vec<u8>)> = (out.groups.iter())
        .flat_map(|(kg, bytes)| {
            crate::format::keyed_file::read::records(bytes, "merged").map(move |r| {
                let r = r.unwrap();
                let key = u64::from_be_bytes(r.key.try_into().unwrap());
                (*kg, key, r.value.to_vec())
            })
        })
        .collect();
    // Key 9 is in no file from key group 0's whole file on: gone, not taken from `p0`.
    assert_eq!(
        records,
        vec![(0, 1, list(&[b"a", b"c", b"d"])), (1, 3, list(&[b"e"]))]
    );
    let err = merge(vec![p1(), d2()]).err().unwrap().to_string();
    assert!(
        err.contains("no file of the chain holds key group 0 whole"),
        "{err}"
    );
    let tombstone = [(TOMBSTONE, 1, vec![])];
    let err = merge(vec![p0(), p1(), d2(), s3(&tombstone)])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`s3`: a tombstone in a file that holds its key group whole"),
        "{err}"
    );
}

/// A map value of `entries`, or a patch value of `entries` put and `removed` when `removed` is given.
fn map(entries: &[(&[u8], &[u8])], removed: Option<&[&[u8]]>) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u32(entries.len() as u32);
    for (k, v) in entries {
        out.put_bytes(k);
        out.put_bytes(v);
    }
    if let Some(removed) = removed {
        // The removed user keys: counted byte strings, as a list value's elements.
        out.extend(list(removed));
    }
    out
}

#[test]
fn patches_apply_to_the_base_map_oldest_first_and_never_mix_with_appends() {
    let full = || {
        file(
            "full",
            true,
            &[(0, 1, map(&[(b"a", b"1"), (b"b", b"2")], None))],
        )
    };
    let d1 = file(
        "d1",
        false,
        &[(PATCH, 1, map(&[(b"b", b"3"), (b"c", b"4")], Some(&[])))],
    );
    let d2 = file(
        "d2",
        false,
        &[(PATCH, 1, map(&[(b"d", b"5")], Some(&[b"a", b"c"])))],
    );
    let d3 = file(
        "d3",
        false,
        &[(PATCH, 1, map(&[(b"c", b"6")], Some(&[b"zz"])))],
    );
    let key = 1u64.to_be_bytes().to_vec();
    let expected = map(&[(b"b", b"3"), (b"c", b"6"), (b"d", b"5")], None);
    assert_eq!(
        merged(vec![full(), d1, d2, d3]).unwrap(),
        vec![(key, expected)]
    );
    let append = file("d2", false, &[(APPEND, 1, list(&[b"x"]))]);
    let patch = file("d1", false, &[(PATCH, 1, map(&[], Some(&[b"a"])))]);
    let err = merged(vec![full(), patch, append]).unwrap_err();
    assert!(
        err.contains("`d1`: append and patch records of one entry"),
        "{err}"
    );
    let bad = file("d1", false, &[(PATCH, 1, map(&[(b"b", b"3")], None))]);
    let err = merged(vec![full(), bad]).unwrap_err();
    assert!(
        err.contains("`d1`"),
        "a patch without its removed keys: {err}"
    );
}

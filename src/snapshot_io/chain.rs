//! Merging the files of a heap incremental chain (`docs/heap-incremental.md`): a full file, then deltas,
//! into the records of the chain's newest state, so that a restore decodes them as one full file's.
//!
//! Per key group the files are read newest first. A record decides its `(state, key, namespace)`: the
//! first one seen (the newest) wins, a tombstone removes it, and older records of it are skipped. A state
//! takes records from the newest file back to the first file that rewrites it (or the full file); a
//! file whose header lacks the state ends its history (the state was dropped there and registered anew).
//! Only the deltas' records are remembered, so the full file's records cost one lookup each.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::format::bytes::PutExt;
use crate::format::keyed_file::read::records;
use crate::format::keyed_file::{FileHeader, TOMBSTONE};
use crate::snapshot_io::loaded::LoadedFile;

/// The records of the chain `files` (full file first, each checked by `load_handle`) as one full file's:
/// the newest file's states, each record in the newest state's numbering (for readers that take a
/// file's records, such as `statectl dump`; the heap restore visits them with [`visit`]).
///
/// # Errors
/// As [`visit`].
pub(crate) fn merge(files: Vec<LoadedFile>) -> Result<LoadedFile> {
    if files.len() == 1 {
        return Ok(files.into_iter().next().expect("one file"));
    }
    let mut groups: Vec<(u32, Vec<u8>)> = Vec::new();
    let header = visit(&files, |kg, state, key, namespace, value| {
        if groups.last().is_none_or(|(last, _)| *last != kg) {
            groups.push((kg, Vec::new()));
        }
        let out = &mut groups.last_mut().expect("pushed above").1;
        out.put_u32(state);
        out.put_bytes(key);
        out.put_bytes(namespace);
        out.put_bytes(value);
        Ok(())
    })?;
    let mut sources = crate::snapshot::result::RestoreSources::default();
    for f in &files {
        sources.merge(&f.sources);
    }
    let path = files.last().map(|f| f.path.clone()).unwrap_or_default();
    Ok(LoadedFile {
        path,
        header,
        groups,
        sources,
    })
}

/// Calls `f(key group, state, key, namespace, value)` for every record of the chain `files`' state (full
/// file first, each checked by `load_handle`), key groups ascending, `state` numbering the newest file's
/// states; returns the header the records belong to (the newest file's states, as a full file's).
///
/// # Errors
/// [`Error::Corrupt`] naming a file whose header disagrees with the chain (another key-group range or
/// max parallelism, a state whose codecs change without a rewrite), a record of an unknown state or a
/// tombstone in the full file; the first error of `f`.
pub(crate) fn visit(
    files: &[LoadedFile],
    mut f: impl FnMut(u32, u32, &[u8], &[u8], &[u8]) -> Result<()>,
) -> Result<FileHeader> {
    let Some(newest) = files.last() else {
        return Err(Error::InvalidArgument("a chain of no file".into()));
    };
    for file in files {
        if file.header.max_parallelism != newest.header.max_parallelism
            || file.header.key_groups != newest.header.key_groups
        {
            return Err(Error::corrupt(
                &file.path,
                "file of a chain covers other key groups than the chain's newest file",
            ));
        }
    }
    let targets = state_targets(files)?;
    // Per key group: the decoded records of each file that has some, newest file first.
    let mut by_group: BTreeMap<u32, Vec<(usize, &[u8])>> = BTreeMap::new();
    for (j, file) in files.iter().enumerate().rev() {
        for (kg, bytes) in &file.groups {
            by_group.entry(*kg).or_default().push((j, bytes));
        }
    }
    let mut seen = hashbrown::HashSet::with_hasher(foldhash::fast::FixedState::with_seed(0));
    for (kg, parts) in by_group {
        seen.clear();
        for (j, bytes) in parts {
            let file = &files[j];
            for record in records(bytes, &file.path) {
                let r = record?;
                let tombstone = r.state & TOMBSTONE != 0;
                let state = r.state & !TOMBSTONE;
                let Some(target) = *targets[j].get(state as usize).ok_or_else(|| {
                    Error::corrupt(&file.path, format!("record of unknown state {state}"))
                })?
                else {
                    continue;
                };
                if tombstone && j == 0 {
                    return Err(Error::corrupt(&file.path, "a tombstone in a full file"));
                }
                // Only the deltas' records are remembered: nothing older than the full file is read.
                let first = if j == 0 {
                    seen.is_empty() || !seen.contains(&(target, r.key, r.namespace))
                } else {
                    seen.insert((target, r.key, r.namespace))
                };
                if first && !tombstone {
                    f(kg, target, r.key, r.namespace, r.value)?;
                }
            }
        }
    }
    Ok(FileHeader {
        max_parallelism: newest.header.max_parallelism,
        key_groups: newest.header.key_groups,
        states: newest.header.states.clone(),
        rewrite: None,
    })
}

/// Per file, per state index of its header: the newest file's index of that state when the file's
/// records of it are part of the chain's state, `None` when they are not (a newer file rewrites the
/// state, or a file between lacks it).
fn state_targets(files: &[LoadedFile]) -> Result<Vec<Vec<Option<u32>>>> {
    let mut targets: Vec<Vec<Option<u32>>> = files
        .iter()
        .map(|f| vec![None; f.header.states.len()])
        .collect();
    let newest = files.len() - 1;
    for (target, meta) in files[newest].header.states.iter().enumerate() {
        for j in (0..=newest).rev() {
            let header = &files[j].header;
            let Some(index) = header.states.iter().position(|s| s.name == meta.name) else {
                break;
            };
            if header.states[index] != *meta {
                return Err(Error::corrupt(
                    &files[j].path,
                    format!(
                        "state `{}` has other codecs than in a later file of its chain, which does not \
                         rewrite it",
                        meta.name
                    ),
                ));
            }
            targets[j][index] = Some(target as u32);
            let rewrites = header
                .rewrite
                .as_ref()
                .is_none_or(|r| r.contains(&(index as u32)));
            if rewrites {
                break;
            }
        }
    }
    Ok(targets)
}

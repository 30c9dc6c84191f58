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
use crate::format::keyed_file::read::{Record, records};
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
/// As [`Chain::new`] and [`Chain::visit_group`]; the first error of `f`.
pub(crate) fn visit(
    files: &[LoadedFile],
    mut f: impl FnMut(u32, u32, &[u8], &[u8], &[u8]) -> Result<()>,
) -> Result<FileHeader> {
    let chain = Chain::new(files)?;
    let mut seen = Seen::default();
    for group in 0..chain.groups.len() {
        let kg = chain.groups[group].0;
        chain.visit_group(group, &mut seen, |state, r, _| {
            f(kg, state, r.key, r.namespace, r.value)
        })?;
    }
    Ok(chain.header())
}

/// The `(state, key, namespace)` a key group's visit has decided; kept by the caller between key groups
/// so that its memory is reused.
#[derive(Default)]
pub(crate) struct Seen<'a>(
    hashbrown::HashSet<(u32, &'a [u8], &'a [u8]), foldhash::fast::FixedState>,
);

/// The files of a heap incremental chain, checked to fit together and grouped by key group, for visits
/// of one key group at a time (a restore visits runs of key groups on several threads).
pub(crate) struct Chain<'a> {
    files: &'a [LoadedFile],
    /// Per file, per state of its header: the newest file's state its records belong to, if any.
    targets: Vec<Vec<Option<u32>>>,
    /// Per key group with records, ascending: the decoded records of each file that has some, newest
    /// file first.
    groups: Vec<(u32, Vec<FilePart<'a>>)>,
}

/// One file's decoded records of a key group: `(position of the file in the chain, records)`.
type FilePart<'a> = (usize, &'a [u8]);

impl<'a> Chain<'a> {
    /// The chain of `files` (full file first, each checked by `load_handle`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no file; [`Error::Corrupt`] naming a file whose header disagrees
    /// with the chain (another key-group range or max parallelism, a state whose codecs change without
    /// a rewrite).
    pub(crate) fn new(files: &'a [LoadedFile]) -> Result<Self> {
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
        let mut by_group: BTreeMap<u32, Vec<(usize, &[u8])>> = BTreeMap::new();
        for (j, file) in files.iter().enumerate().rev() {
            for (kg, bytes) in &file.groups {
                by_group.entry(*kg).or_default().push((j, bytes));
            }
        }
        Ok(Chain {
            files,
            targets,
            groups: by_group.into_iter().collect(),
        })
    }

    /// The header the chain's records belong to: the newest file's states, as a full file's.
    pub(crate) fn header(&self) -> FileHeader {
        let newest = &self.files[self.files.len() - 1].header;
        FileHeader {
            max_parallelism: newest.max_parallelism,
            key_groups: newest.key_groups,
            states: newest.states.clone(),
            rewrite: None,
        }
    }

    /// The path of the chain's newest file (for errors).
    pub(crate) fn path(&self) -> &'a str {
        &self.files[self.files.len() - 1].path
    }

    /// `(key group, bytes of its records in all files)` of every key group with records, ascending; a
    /// visit takes the group's position in this list.
    pub(crate) fn groups(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        (self.groups.iter()).map(|(kg, parts)| (*kg, parts.iter().map(|(_, b)| b.len()).sum()))
    }

    /// Calls `f(state, record, record bytes)` for every live record of the `group`th key group (see
    /// [`Chain::groups`]): `state` numbers the newest file's states, `record bytes` are the record as
    /// its file holds it. `seen` is cleared first.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the file of a record that does not parse, of an unknown state, or of a
    /// tombstone in the full file; the first error of `f`.
    pub(crate) fn visit_group(
        &self,
        group: usize,
        seen: &mut Seen<'a>,
        mut f: impl FnMut(u32, Record<'a>, &'a [u8]) -> Result<()>,
    ) -> Result<()> {
        let seen = &mut seen.0;
        seen.clear();
        for &(j, bytes) in &self.groups[group].1 {
            let file = &self.files[j];
            let mut at = 0;
            for record in records(bytes, &file.path) {
                let r = record?;
                let len = 16 + r.key.len() + r.namespace.len() + r.value.len();
                let raw = &bytes[at..at + len];
                at += len;
                let tombstone = r.state & TOMBSTONE != 0;
                let state = r.state & !TOMBSTONE;
                let Some(target) = *self.targets[j].get(state as usize).ok_or_else(|| {
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
                    f(target, r, raw)?;
                }
            }
        }
        Ok(())
    }
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

//! Merging the files of a heap incremental chain (`docs/heap-incremental.md`): a full file, then deltas,
//! into the records of the chain's newest state, so that a restore decodes them as one full file's.
//!
//! Per key group the files are read newest first, back to the newest file that holds the key group
//! whole (a full file, or a delta of rolling materialization whose whole range holds it); older files
//! are not read for it. A record decides its `(state, key, namespace)`: the first one seen (the newest)
//! wins, a tombstone removes it, and older records of it are skipped. A state takes records from the
//! newest file back to the first file that rewrites it; a file whose header lacks the state ends its
//! history (the state was dropped there and registered anew). Only the records of files newer than the
//! key group's whole file are remembered, so the whole file's records cost one lookup each. An append
//! record (a list's new elements) or a patch record (a map's changed user keys) does not decide its
//! entry: it waits for the older record that does, and the entry is that record's list followed by the
//! appended elements, or its map with the patches applied, oldest first.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::format::bytes::PutExt;
use crate::format::keyed_file::read::{Record, records};
use crate::format::keyed_file::{APPEND, FileHeader, PATCH, TOMBSTONE};
use crate::snapshot_io::element_merge::{Part, merge_list, merge_map};
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

/// The `(state, key, namespace)` a key group's visit has decided, and the append records waiting for
/// the record that decides theirs; kept by the caller between key groups so that its memory is reused.
#[derive(Default)]
pub(crate) struct Seen<'a> {
    decided: hashbrown::HashSet<Entry<'a>, foldhash::fast::FixedState>,
    /// Per entry, the values of its append or patch records seen so far with their files' paths, newest
    /// first, and whether they are patches.
    appended: hashbrown::HashMap<Entry<'a>, (Vec<Part<'a>>, bool), foldhash::fast::FixedState>,
    /// The merged value of the entry being passed on.
    merged: Vec<u8>,
}

/// `(state, key, namespace)` of a record.
type Entry<'a> = (u32, &'a [u8], &'a [u8]);

/// The files of a heap incremental chain, checked to fit together and grouped by key group, for visits
/// of one key group at a time (a restore visits runs of key groups on several threads).
pub(crate) struct Chain<'a> {
    files: &'a [LoadedFile],
    /// Per file, per state of its header: the newest file's state its records belong to, if any.
    targets: Vec<Vec<Option<u32>>>,
    /// Per key group with records, ascending: the decoded records of each file that has some, newest
    /// file first, back to the key group's whole file.
    groups: Vec<(u32, Vec<FilePart<'a>>)>,
    /// Per key group of `groups`: the position in the chain of its whole file (the last file visited).
    whole: Vec<usize>,
}

/// One file's decoded records of a key group: `(position of the file in the chain, records)`.
type FilePart<'a> = (usize, &'a [u8]);

impl<'a> Chain<'a> {
    /// The chain of `files` (full file first, each checked by `load_handle`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no file; [`Error::Corrupt`] naming a file whose header disagrees
    /// with the chain (another key-group range or max parallelism, a state whose codecs change without
    /// a rewrite), or the newest file when some key group of the chain's range is whole in no file.
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
        let range = newest.header.key_groups;
        // Per key group of the range: the newest file that holds it whole.
        let mut whole_file: Vec<Option<usize>> = vec![None; range.len() as usize];
        for (j, file) in files.iter().enumerate() {
            for kg in file.header.whole_range().iter() {
                if let Some(i) = range.index_of(kg) {
                    whole_file[i] = Some(j);
                }
            }
        }
        if let Some(i) = whole_file.iter().position(Option::is_none) {
            return Err(Error::corrupt(
                &newest.path,
                format!(
                    "no file of the chain holds key group {} whole",
                    range.start() + i as u32
                ),
            ));
        }
        let whole_of = |kg: u32| range.index_of(kg).and_then(|i| whole_file[i]).unwrap_or(0);
        let mut by_group: BTreeMap<u32, Vec<(usize, &[u8])>> = BTreeMap::new();
        for (j, file) in files.iter().enumerate().rev() {
            for (kg, bytes) in &file.groups {
                if j >= whole_of(*kg) {
                    by_group.entry(*kg).or_default().push((j, bytes));
                }
            }
        }
        let groups: Vec<_> = by_group.into_iter().collect();
        let whole = groups.iter().map(|(kg, _)| whole_of(*kg)).collect();
        Ok(Chain {
            files,
            targets,
            groups,
            whole,
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
            appends: false,
            patches: false,
            whole: crate::key_group::KeyGroupRange::EMPTY,
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
    /// its file holds it, `None` for an entry whose list was merged from append records (its value is
    /// then the merged list value). `seen` is cleared first.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the file of a record that does not parse, of an unknown state, of a
    /// tombstone in the key group's whole file, of an append record in a file of a version without them, or one
    /// whose entry's older record is a tombstone, missing or not a list value; the first error of `f`.
    pub(crate) fn visit_group(
        &self,
        group: usize,
        seen: &mut Seen<'a>,
        mut f: impl FnMut(u32, Record<'_>, Option<&'a [u8]>) -> Result<()>,
    ) -> Result<()> {
        let Seen {
            decided,
            appended,
            merged,
        } = seen;
        decided.clear();
        appended.clear();
        let whole = self.whole[group];
        for &(j, bytes) in &self.groups[group].1 {
            let file = &self.files[j];
            let mut kinds = TOMBSTONE;
            if file.header.appends {
                kinds |= APPEND;
            }
            if file.header.patches {
                kinds |= PATCH;
            }
            let mut at = 0;
            for record in records(bytes, &file.path) {
                let r = record?;
                let len = 16 + r.key.len() + r.namespace.len() + r.value.len();
                let raw = &bytes[at..at + len];
                at += len;
                let tombstone = r.state & TOMBSTONE != 0;
                let patch = r.state & kinds & PATCH != 0;
                let append = r.state & kinds & APPEND != 0;
                if u8::from(tombstone) + u8::from(patch) + u8::from(append) > 1 {
                    return Err(Error::corrupt(&file.path, "a record of two kinds"));
                }
                let state = r.state & !kinds;
                let Some(target) = *self.targets[j].get(state as usize).ok_or_else(|| {
                    Error::corrupt(&file.path, format!("record of unknown state {state}"))
                })?
                else {
                    continue;
                };
                if tombstone && j == whole {
                    return Err(Error::corrupt(
                        &file.path,
                        "a tombstone in a file that holds its key group whole",
                    ));
                }
                let entry = (target, r.key, r.namespace);
                if append || patch {
                    if !decided.contains(&entry) {
                        let (parts, patches) = appended.entry(entry).or_insert((Vec::new(), patch));
                        if *patches != patch {
                            return Err(Error::corrupt(
                                &file.path,
                                "append and patch records of one entry",
                            ));
                        }
                        parts.push((r.value, &file.path));
                    }
                    continue;
                }
                // Only newer files' records are remembered: nothing older than the whole file is read.
                let first = if j == whole {
                    decided.is_empty() || !decided.contains(&entry)
                } else {
                    decided.insert(entry)
                };
                if !first {
                    continue;
                }
                let tails = if appended.is_empty() {
                    None
                } else {
                    appended.remove(&entry)
                };
                match tails {
                    None if tombstone => {}
                    None => f(target, r, Some(raw))?,
                    Some(_) if tombstone => {
                        return Err(Error::corrupt(
                            &file.path,
                            "append or patch records on top of a tombstone",
                        ));
                    }
                    Some((parts, patches)) => {
                        let base = (r.value, file.path.as_str());
                        match patches {
                            false => merge_list(base, &parts, merged)?,
                            true => merge_map(base, &parts, merged)?,
                        }
                        let merged = Record {
                            value: &merged[..],
                            ..r
                        };
                        f(target, merged, None)?;
                    }
                }
            }
        }
        if !appended.is_empty() {
            return Err(Error::corrupt(
                self.path(),
                "append or patch records with no earlier record of their entry in the chain",
            ));
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

#[cfg(test)]
mod tests;

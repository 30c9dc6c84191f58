//! Rolling materialization of a heap incremental chain (`docs/heap-incremental.md`, "Rolling
//! materialization"): the key groups are cut into *slices*; a full checkpoint of a chain writes a file
//! per slice, and each delta after the first also rewrites one slice whole, in rotation; a file leaves
//! the chain once newer files hold each of its key groups whole. No checkpoint after the first is full,
//! and storage never holds a second full copy of the state.

use crate::key_group::KeyGroupRange;
use crate::snapshot::handle::StateFile;

/// A file of a chain as the chain book knows it: its handle entry, the key groups it holds whole (all of
/// them for a full file) and the bytes of its frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainFile {
    pub(crate) file: StateFile,
    pub(crate) whole: KeyGroupRange,
    pub(crate) bytes: FrameBytes,
}

/// The bytes of a file's frames (stored, compressed), apart from its header, index and footer; estimated
/// for a file a restore read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FrameBytes {
    /// Of the key groups the file holds whole.
    pub(crate) whole: u64,
    /// Of the other key groups: changes since the file's diff base.
    pub(crate) changes: u64,
}

/// A file a checkpoint of a chain writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewFile {
    /// A full file (version 1) of every key group.
    Full,
    /// A delta file of the changes since the diff base in every key group, also holding the key
    /// groups of this range whole (none if empty).
    Delta(KeyGroupRange),
    /// One slice of a full checkpoint: a delta file (version 5) that rewrites no state and holds the
    /// key groups of this range whole and no other.
    Slice(KeyGroupRange),
}

impl NewFile {
    /// The key groups the file holds whole, of a backend of the key groups `range`.
    pub(crate) fn whole(self, range: KeyGroupRange) -> KeyGroupRange {
        match self {
            NewFile::Full => range,
            NewFile::Delta(whole) | NewFile::Slice(whole) => whole,
        }
    }
}

/// What the next checkpoint of a chain writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// A full checkpoint ([`Rotation::full_files`]): a new chain.
    Full,
    /// A delta appended to `kept` (the base's files, oldest first, minus those the delta makes
    /// unneeded), holding the key groups of `whole` whole.
    Delta {
        kept: Vec<ChainFile>,
        whole: KeyGroupRange,
    },
}

/// The rotation of the slices of one backend's key groups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rotation {
    range: KeyGroupRange,
    /// Files a chain holds at most (at least 1).
    max_files: usize,
    /// Key groups of a slice: `ceil(key groups / (max_files - 1))`; 0 when chains hold one file.
    slice: u32,
}

impl Rotation {
    /// The rotation of the key groups of `range` for chains of at most `max_files` files: slices of
    /// `ceil(range.len() / (max_files - 1))` key groups, so that a key group is rewritten every
    /// `max_files - 1` checkpoints.
    pub(crate) fn new(range: KeyGroupRange, max_files: usize) -> Self {
        let max_files = max_files.max(1);
        let slices = (max_files - 1) as u32;
        let slice = match slices {
            0 => 0,
            m => range.len().div_ceil(m),
        };
        Rotation {
            range,
            max_files,
            slice,
        }
    }

    /// The files of a full checkpoint: one per slice, or one full file when the key groups make one
    /// slice or chains hold one file.
    pub(crate) fn full_files(&self) -> Vec<NewFile> {
        if self.slice == 0 || self.slice >= self.range.len() {
            return vec![NewFile::Full];
        }
        let end = self.range.start() + self.range.len();
        (self.range.start()..end)
            .step_by(self.slice as usize)
            .filter_map(|start| {
                let last = (start + self.slice).min(end) - 1;
                KeyGroupRange::new(start, last).ok().map(NewFile::Slice)
            })
            .collect()
    }

    /// The plan of the next checkpoint on the chain `base` (oldest first): a delta while the chain,
    /// pruned, stays within `max_files` files with the new one and its files' frames of changes stay
    /// within the live whole frames (those of each key group's newest whole file); a full checkpoint
    /// otherwise. The first delta on a full checkpoint's files writes no slice (checkpoint 2 stays a
    /// small delta); every later one writes the slice after the newest file's.
    pub(crate) fn plan(&self, base: &[ChainFile]) -> Plan {
        if base.is_empty() || self.slice == 0 {
            return Plan::Full;
        }
        let one_checkpoint = base
            .iter()
            .all(|f| f.file.created_by == base[0].file.created_by);
        let whole = if one_checkpoint || self.range.is_empty() {
            KeyGroupRange::EMPTY
        } else {
            self.next_slice(base)
        };
        // Newest first: the live whole bytes before the new slice, then which files the new one leaves
        // needed (a file is needed while some key group is whole in no newer file).
        let mut coverage = Coverage::new(self.range);
        let mut live = 0u64;
        for f in base.iter().rev() {
            let fresh = coverage.add(f.whole);
            if !f.whole.is_empty() {
                live += f.bytes.whole * fresh / u64::from(f.whole.len());
            }
        }
        let mut coverage = Coverage::new(self.range);
        coverage.add(whole);
        let mut kept = Vec::with_capacity(base.len());
        for f in base.iter().rev() {
            if !coverage.complete() {
                kept.push(f.clone());
            }
            coverage.add(f.whole);
        }
        kept.reverse();
        let delta_bytes: u64 = kept.iter().map(|f| f.bytes.changes).sum();
        if kept.len() + 1 > self.max_files || delta_bytes > live {
            return Plan::Full;
        }
        Plan::Delta { kept, whole }
    }

    /// The slice after the newest file's partial whole range (the first slice if none has one).
    fn next_slice(&self, base: &[ChainFile]) -> KeyGroupRange {
        let end = self.range.start() + self.range.len();
        let partial = base
            .iter()
            .rev()
            .find(|f| !f.whole.is_empty() && f.whole != self.range);
        let start = match partial {
            Some(f) if f.whole.start() + f.whole.len() < end => f.whole.start() + f.whole.len(),
            _ => self.range.start(),
        };
        let last = (start + self.slice).min(end) - 1;
        KeyGroupRange::new(start, last).unwrap_or(KeyGroupRange::EMPTY)
    }
}

/// Which key groups of a range some file holds whole.
struct Coverage {
    range: KeyGroupRange,
    covered: Vec<bool>,
    count: usize,
}

impl Coverage {
    fn new(range: KeyGroupRange) -> Self {
        Coverage {
            range,
            covered: vec![false; range.len() as usize],
            count: 0,
        }
    }

    /// Marks the key groups of `whole` inside the range; returns how many were not marked yet.
    fn add(&mut self, whole: KeyGroupRange) -> u64 {
        let mut fresh = 0;
        for i in whole.iter().filter_map(|kg| self.range.index_of(kg)) {
            if !self.covered[i] {
                self.covered[i] = true;
                fresh += 1;
            }
        }
        self.count += fresh as usize;
        fresh
    }

    /// Whether every key group of the range is marked.
    fn complete(&self) -> bool {
        self.count == self.covered.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::handle::FileScope;

    fn file(n: u64, size: u64, whole: KeyGroupRange, whole_bytes: u64) -> ChainFile {
        let bytes = FrameBytes {
            whole: whole_bytes,
            changes: size - whole_bytes,
        };
        ChainFile {
            file: StateFile {
                path: format!("shared/f-{n}"),
                scope: FileScope::Shared,
                size_bytes: size,
                crc32: 0,
                created_by: n,
                local_name: String::new(),
            },
            whole,
            bytes,
        }
    }

    /// Runs `checkpoints` checkpoints of a state of `full` bytes spread evenly over `range`, each
    /// delta's changes `delta` bytes, and checks the chain after each: within `max_files`, every key
    /// group whole in some file, and the bytes stored while the next file uploads (the previous chain
    /// and the new file) within `bound` times the full size. Returns the plans' whole ranges.
    fn run(
        range: KeyGroupRange,
        max_files: usize,
        full: u64,
        delta: u64,
        checkpoints: u64,
        bound: f64,
    ) -> Vec<KeyGroupRange> {
        let rotation = Rotation::new(range, max_files);
        let mut chain: Vec<ChainFile> = Vec::new();
        let mut wholes = Vec::new();
        for n in 1..=checkpoints {
            let (kept, new) = match rotation.plan(&chain) {
                Plan::Full => (Vec::new(), rotation.full_files()),
                Plan::Delta { kept, whole } => (kept, vec![NewFile::Delta(whole)]),
            };
            let new: Vec<ChainFile> = (new.iter())
                .map(|f| {
                    let whole = f.whole(range);
                    let whole_bytes = full * u64::from(whole.len()) / u64::from(range.len());
                    let changes = if kept.is_empty() { 0 } else { delta };
                    file(n, whole_bytes + changes, whole, whole_bytes)
                })
                .collect();
            let size: u64 = new.iter().map(|f| f.file.size_bytes).sum();
            let whole = match new.as_slice() {
                [one] => one.whole,
                _ => range,
            };
            let stored: u64 = chain.iter().map(|f| f.file.size_bytes).sum::<u64>() + size;
            assert!(
                stored as f64 <= bound * full as f64,
                "checkpoint {n}: {stored} bytes stored, full {full}"
            );
            chain = kept;
            chain.extend(new);
            assert!(chain.len() <= max_files, "checkpoint {n}: {chain:?}");
            for kg in range.iter() {
                assert!(
                    chain.iter().any(|f| f.whole.contains(kg)),
                    "checkpoint {n}: key group {kg} whole nowhere"
                );
            }
            wholes.push(whole);
        }
        wholes
    }

    #[test]
    fn a_rotation_at_one_percent_churn_never_stores_two_full_copies_and_never_writes_a_second_full_file()
     {
        let range = KeyGroupRange::new(0, 127).unwrap();
        let wholes = run(range, 10, 7_600_000, 130_000, 100, 1.5);
        assert_eq!(wholes[0], range);
        assert!(
            wholes[1].is_empty(),
            "checkpoint 2 is a delta without a slice"
        );
        assert_eq!(wholes[2], KeyGroupRange::new(0, 14).unwrap());
        assert_eq!(wholes[3], KeyGroupRange::new(15, 29).unwrap());
        assert_eq!(wholes[10], KeyGroupRange::new(120, 127).unwrap());
        assert_eq!(wholes[11], KeyGroupRange::new(0, 14).unwrap());
        assert!(
            wholes[1..].iter().all(|w| *w != range),
            "no second full file"
        );
    }

    #[test]
    fn a_range_smaller_than_the_rotation_gets_slices_of_one_key_group() {
        let range = KeyGroupRange::new(5, 7).unwrap();
        let wholes = run(range, 10, 3_000, 100, 30, 2.0);
        assert_eq!(wholes[2], KeyGroupRange::new(5, 5).unwrap());
        assert_eq!(wholes[4], KeyGroupRange::new(7, 7).unwrap());
        assert_eq!(wholes[5], KeyGroupRange::new(5, 5).unwrap());
    }

    #[test]
    fn chains_of_one_file_are_always_full_and_of_two_rotate_the_whole_range() {
        let range = KeyGroupRange::new(0, 9).unwrap();
        let wholes = run(range, 1, 1_000, 10, 5, 2.0);
        assert!(wholes.iter().all(|w| *w == range));
        let wholes = run(range, 2, 1_000, 10, 6, 2.1);
        assert!(wholes[1].is_empty());
        assert_eq!(
            wholes[2], range,
            "one slice: the whole range, as a delta file"
        );
    }

    #[test]
    fn deltas_past_the_live_bytes_start_a_new_chain() {
        let range = KeyGroupRange::new(0, 127).unwrap();
        let rotation = Rotation::new(range, 10);
        let chain = vec![
            file(1, 1_000, range, 1_000),
            file(2, 600, KeyGroupRange::EMPTY, 0),
        ];
        assert!(matches!(rotation.plan(&chain), Plan::Delta { .. }));
        let chain = vec![
            file(1, 1_000, range, 1_000),
            file(2, 600, KeyGroupRange::EMPTY, 0),
            file(3, 600, KeyGroupRange::new(0, 14).unwrap(), 117),
        ];
        assert_eq!(rotation.plan(&chain), Plan::Full);
    }

    #[test]
    fn a_chain_too_long_to_prune_within_the_limit_is_followed_by_a_full_file() {
        // A chain of a full file and 9 plain deltas (as written before rolling materialization).
        let range = KeyGroupRange::new(0, 127).unwrap();
        let mut chain = vec![file(1, 1_000_000, range, 1_000_000)];
        chain.extend((2..=10).map(|n| file(n, 1_000, KeyGroupRange::EMPTY, 0)));
        assert_eq!(Rotation::new(range, 10).plan(&chain), Plan::Full);
        chain.truncate(5);
        let Plan::Delta { kept, whole } = Rotation::new(range, 10).plan(&chain) else {
            panic!("a chain of 5 takes a delta");
        };
        assert_eq!(kept.len(), 5);
        assert_eq!(whole, KeyGroupRange::new(0, 14).unwrap());
    }
}

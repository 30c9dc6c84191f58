//! How large each state and each key group is at a snapshot (`docs/state-sizes.md`): exact on the heap
//! backend (the record bytes its full snapshot writes), RocksDB's estimates on the RocksDB backend.

/// Key groups a checkpoint's `_stats` file and [`StateSizes::keep_largest_key_groups`] keep: the largest
/// ones only, so that a job with a max parallelism of 32768 does not write 32768 lines per checkpoint.
pub const LARGEST_KEY_GROUPS: usize = 16;

/// The size of one state of one subtask at a snapshot, or (in a checkpoint's figures) summed over its
/// subtasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSize {
    /// The state's name (its descriptor's).
    pub name: String,
    /// Heap backend: `(key, namespace)` pairs, a list or a map counted once. RocksDB backend: RocksDB's
    /// estimate of the rows of the state's column family (`rocksdb.estimate-num-keys`), a map counted once
    /// per user key.
    pub entries: u64,
    /// Heap backend: uncompressed record bytes a full snapshot writes for the state (key, namespace and
    /// value encodings with their length prefixes, `docs/formats.md`). RocksDB backend: RocksDB's
    /// estimate of the live data in the state's SST files (`rocksdb.estimate-live-data-size`, compressed
    /// on-disk bytes; the synchronous phase flushed the memtables).
    pub bytes: u64,
    /// Whether both figures are exact (heap) rather than estimates (RocksDB). A sum is exact only if
    /// every part is.
    pub exact: bool,
}

/// The bytes of one key group of a subtask at a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGroupSize {
    /// The key group.
    pub key_group: u32,
    /// Heap backend: uncompressed record bytes of all states in the key group. RocksDB backend: RocksDB's
    /// approximation of the SST bytes of the key group's key range, summed over the states
    /// (`GetApproximateSizes`).
    pub bytes: u64,
    /// Whether `bytes` is exact (heap) rather than an estimate (RocksDB).
    pub exact: bool,
}

/// The sizes of the states and key groups of a snapshot (`docs/state-sizes.md`). Empty when the backend
/// measured none. A heap delta of an incremental chain writes only what changed: its states written
/// whole are exact, the others estimated (entries exact, bytes from a sample of entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateSizes {
    /// One entry per state, in the order of the snapshot's states (a sum: by first appearance).
    pub states: Vec<StateSize>,
    /// Key groups with bytes, in ascending order; in a `_stats` file only the [`LARGEST_KEY_GROUPS`]
    /// largest, largest first.
    pub key_groups: Vec<KeyGroupSize>,
}

impl StateSizes {
    /// The figures of state `name`, if measured.
    pub fn state(&self, name: &str) -> Option<&StateSize> {
        self.states.iter().find(|s| s.name == name)
    }

    /// Whether nothing was measured.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.key_groups.is_empty()
    }

    /// Adds `other` (another subtask's figures): states by name, key groups by number; a sum is exact only
    /// if both parts are.
    pub fn merge(&mut self, other: &StateSizes) {
        for s in &other.states {
            match self.states.iter_mut().find(|m| m.name == s.name) {
                Some(m) => {
                    m.entries += s.entries;
                    m.bytes += s.bytes;
                    m.exact &= s.exact;
                }
                None => self.states.push(s.clone()),
            }
        }
        for g in &other.key_groups {
            match self
                .key_groups
                .binary_search_by_key(&g.key_group, |m| m.key_group)
            {
                Ok(i) => {
                    let m = &mut self.key_groups[i];
                    m.bytes += g.bytes;
                    m.exact &= g.exact;
                }
                Err(i) => self.key_groups.insert(i, *g),
            }
        }
    }

    /// Keeps the `n` largest key groups, largest first (ties: lower key group first).
    pub fn keep_largest_key_groups(&mut self, n: usize) {
        self.key_groups
            .sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.key_group.cmp(&b.key_group)));
        self.key_groups.truncate(n);
    }
}

/// Per-state and per-key-group figures of a keyed snapshot file counted while it is written: the writer's
/// record and byte counters are read after each state's part of each key group, so it costs nothing per
/// record.
pub(crate) struct SizeTally {
    sizes: StateSizes,
    /// The writer's `(records, bytes)` at the last call of `add`.
    last: (u64, u64),
}

impl SizeTally {
    /// A tally of the states `names` (in the file header's order).
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let states = names
            .into_iter()
            .map(|name| StateSize {
                name: name.to_string(),
                entries: 0,
                bytes: 0,
                exact: true,
            })
            .collect();
        SizeTally {
            sizes: StateSizes {
                states,
                key_groups: Vec::new(),
            },
            last: (0, 0),
        }
    }

    /// Starts crediting a new writer's counters (a snapshot of several files: one writer each).
    pub(crate) fn new_file(&mut self) {
        self.last = (0, 0);
    }

    /// Credits what the writer wrote since the last call (its counters are now `counts`, `(records,
    /// bytes)`) to state `state` (header index) in `key_group`; key groups must come in ascending order.
    pub(crate) fn add(&mut self, key_group: u32, state: usize, counts: (u64, u64)) {
        let (records, bytes) = (counts.0 - self.last.0, counts.1 - self.last.1);
        self.last = counts;
        if records == 0 {
            return;
        }
        if let Some(s) = self.sizes.states.get_mut(state) {
            s.entries += records;
            s.bytes += bytes;
        }
        match self.sizes.key_groups.last_mut() {
            Some(g) if g.key_group == key_group => g.bytes += bytes,
            _ => self.sizes.key_groups.push(KeyGroupSize {
                key_group,
                bytes,
                exact: true,
            }),
        }
    }

    /// Credits state `state` (header index) in `key_group` with an estimate, `entries` and `bytes`,
    /// instead of what the writer wrote since the last call (a heap delta's changes of a state it does
    /// not write whole; its counters are now `counts`); the state's and the key group's figures are then
    /// estimates.
    pub(crate) fn add_estimate(
        &mut self,
        key_group: u32,
        state: usize,
        counts: (u64, u64),
        (entries, bytes): (u64, u64),
    ) {
        self.last = counts;
        if let Some(s) = self.sizes.states.get_mut(state) {
            s.entries += entries;
            s.bytes += bytes;
            s.exact = false;
        }
        if entries == 0 {
            return;
        }
        match self.sizes.key_groups.last_mut() {
            Some(g) if g.key_group == key_group => {
                g.bytes += bytes;
                g.exact = false;
            }
            _ => self.sizes.key_groups.push(KeyGroupSize {
                key_group,
                bytes,
                exact: false,
            }),
        }
    }

    /// The figures counted.
    pub(crate) fn finish(self) -> StateSizes {
        self.sizes
    }
}

/// Lower-case hex of a state name, as a `_stats` file's keys carry it (a name may hold spaces or newlines).
pub(crate) fn name_to_hex(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The state name of `hex` ([`name_to_hex`]), if it is lower-case hex of UTF-8.
pub(crate) fn name_from_hex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_credits_each_state_and_key_group_what_was_written_since_the_last_call() {
        let mut tally = SizeTally::new(["a", "b"]);
        tally.add(3, 0, (2, 40));
        tally.add(3, 1, (2, 40)); // b wrote nothing in group 3
        tally.add(5, 0, (3, 55));
        tally.add(5, 1, (6, 100));
        let sizes = tally.finish();
        assert_eq!(
            sizes.state("a").map(|s| (s.entries, s.bytes)),
            Some((3, 55))
        );
        assert_eq!(
            sizes.state("b").map(|s| (s.entries, s.bytes)),
            Some((3, 45))
        );
        let groups: Vec<(u32, u64)> = sizes
            .key_groups
            .iter()
            .map(|g| (g.key_group, g.bytes))
            .collect();
        assert_eq!(groups, vec![(3, 40), (5, 60)]);
    }

    #[test]
    fn a_merge_sums_by_name_and_key_group_and_is_exact_only_if_both_are() {
        let mut a = StateSizes {
            states: vec![StateSize {
                name: "x".into(),
                entries: 1,
                bytes: 10,
                exact: true,
            }],
            key_groups: vec![KeyGroupSize {
                key_group: 1,
                bytes: 10,
                exact: true,
            }],
        };
        let b = StateSizes {
            states: vec![
                StateSize {
                    name: "y".into(),
                    entries: 2,
                    bytes: 20,
                    exact: true,
                },
                StateSize {
                    name: "x".into(),
                    entries: 3,
                    bytes: 30,
                    exact: false,
                },
            ],
            key_groups: vec![
                KeyGroupSize {
                    key_group: 0,
                    bytes: 5,
                    exact: false,
                },
                KeyGroupSize {
                    key_group: 1,
                    bytes: 1,
                    exact: true,
                },
            ],
        };
        a.merge(&b);
        assert_eq!(
            a.states[0],
            StateSize {
                name: "x".into(),
                entries: 4,
                bytes: 40,
                exact: false
            }
        );
        assert_eq!(a.states[1].name, "y");
        assert_eq!(
            a.key_groups,
            vec![
                KeyGroupSize {
                    key_group: 0,
                    bytes: 5,
                    exact: false
                },
                KeyGroupSize {
                    key_group: 1,
                    bytes: 11,
                    exact: true
                }
            ]
        );
        a.keep_largest_key_groups(1);
        assert_eq!(
            a.key_groups.iter().map(|g| g.key_group).collect::<Vec<_>>(),
            vec![1]
        );
    }

    #[test]
    fn state_names_round_trip_through_hex_and_bad_hex_is_none() {
        for name in ["", "counts", "with space\nand newline", "ünïcode"] {
            assert_eq!(name_from_hex(&name_to_hex(name)).as_deref(), Some(name));
        }
        for bad in ["a", "zz", "ff"] {
            assert_eq!(name_from_hex(bad), None, "{bad}");
        }
    }
}

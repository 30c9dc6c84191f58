//! A completed checkpoint's `_stats` file (`docs/formats.md`): its phase durations, state bytes and state
//! sizes as ASCII `key value` lines, for `statectl history` and `inspect`.

use std::time::Duration;

use crate::snapshot::sizes::{KeyGroupSize, StateSize, StateSizes, name_from_hex, name_to_hex};

/// The first line of every `_stats` file of this version.
const FIRST_LINE: &str = "statebackend-stats 1";

/// What a checkpoint's `_stats` file holds (`docs/formats.md`, "`_stats`").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsFile {
    /// The checkpoint.
    pub checkpoint_id: u64,
    /// Longest synchronous phase of a subtask (microsecond precision).
    pub sync_duration: Duration,
    /// Longest asynchronous phase of a subtask (microsecond precision).
    pub async_duration: Duration,
    /// Uncompressed state bytes written, summed over the subtasks.
    pub state_bytes: u64,
    /// Per-state sizes summed over the subtasks and the [`LARGEST_KEY_GROUPS`](crate::snapshot::LARGEST_KEY_GROUPS) largest key groups;
    /// empty for a file written before they were recorded, or when no subtask measured them.
    pub sizes: StateSizes,
}

impl StatsFile {
    /// The file's bytes: the version line, then `checkpoint`, `sync_us`, `async_us`, `state_bytes`, then
    /// per state `state.<name hex>.entries`, `.bytes` and `.exact` (0 or 1), then per key group
    /// `key_group.<g>.bytes` and `.exact`. Every value is one decimal `u64`, so a reader of the first
    /// release (which knew only the first five lines) reads it too.
    pub(crate) fn encode(&self) -> bytes::Bytes {
        use std::fmt::Write;
        let mut out = format!(
            "{FIRST_LINE}\ncheckpoint {}\nsync_us {}\nasync_us {}\nstate_bytes {}\n",
            self.checkpoint_id,
            self.sync_duration.as_micros(),
            self.async_duration.as_micros(),
            self.state_bytes
        );
        for s in &self.sizes.states {
            let name = name_to_hex(&s.name);
            let _ = write!(
                out,
                "state.{name}.entries {}\nstate.{name}.bytes {}\nstate.{name}.exact {}\n",
                s.entries,
                s.bytes,
                u8::from(s.exact)
            );
        }
        for g in &self.sizes.key_groups {
            let _ = write!(
                out,
                "key_group.{0}.bytes {1}\nkey_group.{0}.exact {2}\n",
                g.key_group,
                g.bytes,
                u8::from(g.exact)
            );
        }
        bytes::Bytes::from(out)
    }

    /// The `_stats` file `bytes` of checkpoint `checkpoint_id`; `None` if it is not one of version 1 for
    /// that checkpoint or lacks one of the first five lines. Lines it does not know (a later release's)
    /// are skipped, and so is a state or key group without its bytes.
    pub fn parse(bytes: &[u8], checkpoint_id: u64) -> Option<StatsFile> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()? != FIRST_LINE {
            return None;
        }
        let mut fields = std::collections::HashMap::new();
        let mut states: Vec<(String, [Option<u64>; 3])> = Vec::new();
        let mut key_groups: Vec<(u32, [Option<u64>; 2])> = Vec::new();
        for line in lines {
            let Some((key, value)) = line.split_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            if let Some(rest) = key.strip_prefix("state.") {
                let Some((hex, field)) = rest.rsplit_once('.') else {
                    continue;
                };
                let (Some(name), Some(i)) = (
                    name_from_hex(hex),
                    field_index(field, &["entries", "bytes", "exact"]),
                ) else {
                    continue;
                };
                set_field(&mut states, name, i, value);
            } else if let Some(rest) = key.strip_prefix("key_group.") {
                let Some((group, field)) = rest.split_once('.') else {
                    continue;
                };
                let (Ok(group), Some(i)) = (
                    group.parse::<u32>(),
                    field_index(field, &["bytes", "exact"]),
                ) else {
                    continue;
                };
                set_field(&mut key_groups, group, i, value);
            } else {
                fields.insert(key, value);
            }
        }
        if fields.get("checkpoint") != Some(&checkpoint_id) {
            return None;
        }
        let states = states
            .into_iter()
            .filter_map(|(name, [entries, bytes, exact])| {
                Some(StateSize {
                    name,
                    entries: entries?,
                    bytes: bytes?,
                    exact: exact == Some(1),
                })
            })
            .collect();
        let key_groups = key_groups
            .into_iter()
            .filter_map(|(key_group, [bytes, exact])| {
                Some(KeyGroupSize {
                    key_group,
                    bytes: bytes?,
                    exact: exact == Some(1),
                })
            })
            .collect();
        Some(StatsFile {
            checkpoint_id,
            sync_duration: Duration::from_micros(*fields.get("sync_us")?),
            async_duration: Duration::from_micros(*fields.get("async_us")?),
            state_bytes: *fields.get("state_bytes")?,
            sizes: StateSizes { states, key_groups },
        })
    }
}

/// Sets field `i` of the entry for `key` in `entries` (appended if new, so entries keep the file's order).
fn set_field<K: PartialEq, const N: usize>(
    entries: &mut Vec<(K, [Option<u64>; N])>,
    key: K,
    i: usize,
    value: u64,
) {
    let at = match entries.iter().position(|(k, _)| *k == key) {
        Some(at) => at,
        None => {
            entries.push((key, [None; N]));
            entries.len() - 1
        }
    };
    entries[at].1[i] = Some(value);
}

/// The position of `field` in `known`.
fn field_index(field: &str, known: &[&str]) -> Option<usize> {
    known.iter().position(|k| *k == field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sizes: StateSizes) -> StatsFile {
        StatsFile {
            checkpoint_id: 7,
            sync_duration: Duration::from_micros(12),
            async_duration: Duration::from_micros(3456),
            state_bytes: 789,
            sizes,
        }
    }

    #[test]
    fn a_stats_file_round_trips_with_names_holding_spaces_and_newlines() {
        let sizes = StateSizes {
            states: vec![
                StateSize {
                    name: "counts".into(),
                    entries: 3,
                    bytes: 90,
                    exact: true,
                },
                StateSize {
                    name: "a b\nc".into(),
                    entries: 0,
                    bytes: 0,
                    exact: false,
                },
                StateSize {
                    name: String::new(),
                    entries: 1,
                    bytes: 2,
                    exact: true,
                },
            ],
            key_groups: vec![
                KeyGroupSize {
                    key_group: 9,
                    bytes: 50,
                    exact: true,
                },
                KeyGroupSize {
                    key_group: 2,
                    bytes: 40,
                    exact: true,
                },
            ],
        };
        let written = file(sizes);
        assert_eq!(
            StatsFile::parse(&written.encode(), 7),
            Some(written.clone())
        );
        assert_eq!(
            StatsFile::parse(&written.encode(), 8),
            None,
            "another checkpoint's file"
        );
    }

    #[test]
    fn a_file_of_the_first_release_reads_with_no_sizes() {
        let old =
            b"statebackend-stats 1\ncheckpoint 7\nsync_us 12\nasync_us 3456\nstate_bytes 789\n";
        assert_eq!(StatsFile::parse(old, 7), Some(file(StateSizes::default())));
    }

    #[test]
    fn every_line_of_a_new_file_is_one_key_and_one_u64_as_the_first_release_parsed_them() {
        let sizes = StateSizes {
            states: vec![StateSize {
                name: "x y".into(),
                entries: 1,
                bytes: 2,
                exact: true,
            }],
            key_groups: vec![KeyGroupSize {
                key_group: 1,
                bytes: 2,
                exact: false,
            }],
        };
        let encoded = file(sizes).encode();
        let text = std::str::from_utf8(&encoded).unwrap();
        for line in text.lines().skip(1) {
            let (key, value) = line.split_once(' ').unwrap();
            assert!(!key.contains(' ') && value.parse::<u64>().is_ok(), "{line}");
        }
    }

    #[test]
    fn unknown_and_damaged_lines_are_skipped_but_a_missing_duration_is_not_a_stats_file() {
        let text = "statebackend-stats 1\ncheckpoint 7\nsync_us 12\nasync_us 3456\nstate_bytes 789\n\
                    later_key 5\nstate.zz.bytes 3\nstate.61.entries 1\nstate.61.colour 4\n\
                    key_group.x.bytes 3\nno_value\nstate.62.entries 2\nstate.62.bytes 9\n";
        let parsed = StatsFile::parse(text.as_bytes(), 7).unwrap();
        // "a" (61) has no bytes line: left out; "b" (62) has no exact line: an estimate.
        assert_eq!(
            parsed.sizes.states,
            vec![StateSize {
                name: "b".into(),
                entries: 2,
                bytes: 9,
                exact: false
            }]
        );
        assert!(parsed.sizes.key_groups.is_empty());
        let no_sync = "statebackend-stats 1\ncheckpoint 7\nasync_us 3456\nstate_bytes 789\n";
        assert_eq!(StatsFile::parse(no_sync.as_bytes(), 7), None);
        assert_eq!(
            StatsFile::parse(b"statebackend-stats 2\ncheckpoint 7\n", 7),
            None
        );
    }
}

//! Key groups: the unit in which keyed state is partitioned, snapshotted and redistributed on rescale.
//!
//! The range and operator-index formulas are those of Flink's `KeyGroupRangeAssignment`; the hash that
//! assigns a key to its group is ours and is specified here, because it decides where state lives and must
//! never change: `xxh3_64(seed 0)` of the key's [`Codec`](crate::Codec) bytes, modulo max parallelism.

pub(crate) mod router;

pub use router::{KeyGroupRouter, KeyRoute};

use crate::error::{Error, Result};

/// Largest max parallelism, `2^15` (as Flink's `UPPER_BOUND_MAX_PARALLELISM`).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;
/// Smallest default max parallelism (as Flink's `DEFAULT_LOWER_BOUND_MAX_PARALLELISM`).
pub const DEFAULT_LOWER_BOUND_MAX_PARALLELISM: u32 = 1 << 7;

/// A contiguous, inclusive range of key groups `[start, end]`, possibly empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    start: u32,
    /// Exclusive end, so that the empty range needs no special case.
    end_exclusive: u32,
}

impl KeyGroupRange {
    /// The range `[start, end]`, both inclusive.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `end < start` or `end >= 2^15`.
    pub fn new(start: u32, end: u32) -> Result<Self> {
        if end < start || end >= UPPER_BOUND_MAX_PARALLELISM {
            return Err(Error::InvalidArgument(format!(
                "key-group range [{start}, {end}] is not within [0, {}]",
                UPPER_BOUND_MAX_PARALLELISM - 1
            )));
        }
        Ok(KeyGroupRange {
            start,
            end_exclusive: end + 1,
        })
    }

    /// The empty range.
    pub const EMPTY: KeyGroupRange = KeyGroupRange {
        start: 0,
        end_exclusive: 0,
    };

    /// All key groups of a job with `max_parallelism`: `[0, max_parallelism - 1]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `max_parallelism` is 0 or above `2^15`.
    pub fn all(max_parallelism: u32) -> Result<Self> {
        check_max_parallelism(max_parallelism)?;
        KeyGroupRange::new(0, max_parallelism - 1)
    }

    /// First key group (meaningless for an empty range).
    pub fn start(&self) -> u32 {
        self.start
    }

    /// Last key group, inclusive; `None` for an empty range.
    pub fn end(&self) -> Option<u32> {
        self.end_exclusive
            .checked_sub(1)
            .filter(|_| !self.is_empty())
    }

    /// Number of key groups.
    pub fn len(&self) -> u32 {
        self.end_exclusive.saturating_sub(self.start)
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key_group` lies in the range.
    pub fn contains(&self, key_group: u32) -> bool {
        key_group >= self.start && key_group < self.end_exclusive
    }

    /// The key groups in both ranges.
    pub fn intersection(&self, other: &KeyGroupRange) -> KeyGroupRange {
        let start = self.start.max(other.start);
        let end_exclusive = self.end_exclusive.min(other.end_exclusive);
        if start < end_exclusive {
            KeyGroupRange {
                start,
                end_exclusive,
            }
        } else {
            KeyGroupRange::EMPTY
        }
    }

    /// Position of `key_group` inside the range (`key_group - start`), if it is in the range.
    pub fn index_of(&self, key_group: u32) -> Option<usize> {
        self.contains(key_group)
            .then(|| (key_group - self.start) as usize)
    }

    /// Iterates the key groups in ascending order.
    pub fn iter(&self) -> std::ops::Range<u32> {
        self.start..self.end_exclusive.max(self.start)
    }
}

impl std::fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.end() {
            Some(end) => write!(f, "[{}, {}]", self.start, end),
            None => write!(f, "[]"),
        }
    }
}

fn check_max_parallelism(max_parallelism: u32) -> Result<()> {
    if max_parallelism == 0 || max_parallelism > UPPER_BOUND_MAX_PARALLELISM {
        return Err(Error::InvalidArgument(format!(
            "max parallelism {max_parallelism} is not within [1, {UPPER_BOUND_MAX_PARALLELISM}]"
        )));
    }
    Ok(())
}

pub use crate::codec::stable_key_hash;

/// Key group of a key hash: `hash % max_parallelism`.
///
/// A power-of-two max parallelism (Flink's default of 128 among them) takes a mask instead of a 64-bit
/// division; the result is the same.
#[inline]
pub fn key_group_for_hash(key_hash: u64, max_parallelism: u32) -> u32 {
    let m = u64::from(max_parallelism);
    if m.is_power_of_two() {
        (key_hash & (m - 1)) as u32
    } else {
        (key_hash % m) as u32
    }
}

/// Where a key lives: its stable hash, key group, and that group's index in the owning range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyLocation {
    /// `xxh3_64` of the key's encoding.
    pub(crate) hash: u64,
    /// Key group of the key.
    pub(crate) key_group: u32,
    /// Index of `key_group` inside the owning range.
    pub(crate) index: usize,
}

/// Encodes `key` into `buf` (cleared first) and locates it, as the RocksDB backend's `set_current_key` does
/// (it needs the bytes for its row keys).
///
/// # Errors
/// [`Error::InvalidArgument`] if the key's group is outside `range`.
#[cfg(feature = "rocksdb")]
#[inline]
pub(crate) fn locate_key<K: crate::codec::Codec>(
    key: &K,
    buf: &mut Vec<u8>,
    max_parallelism: u32,
    range: KeyGroupRange,
) -> Result<KeyLocation> {
    buf.clear();
    key.encode(buf);
    locate_hash(stable_key_hash(buf), max_parallelism, range)
}

/// Locates a key by its stable hash ([`Codec::stable_hash`](crate::Codec::stable_hash)), as the heap
/// backend's `set_current_key` does.
///
/// # Errors
/// [`Error::InvalidArgument`] if the key's group is outside `range`.
#[inline]
pub(crate) fn locate_hash(
    hash: u64,
    max_parallelism: u32,
    range: KeyGroupRange,
) -> Result<KeyLocation> {
    let key_group = key_group_for_hash(hash, max_parallelism);
    match range.index_of(key_group) {
        Some(index) => Ok(KeyLocation {
            hash,
            key_group,
            index,
        }),
        None => Err(outside_range(key_group, range)),
    }
}

/// The error of a key outside the backend's range; out of line, so the per-record path stays short.
#[cold]
#[inline(never)]
fn outside_range(key_group: u32, range: KeyGroupRange) -> Error {
    Error::InvalidArgument(format!(
        "key group {key_group} of the key is not in this backend's range {range}"
    ))
}

/// Key group of a key: `xxh3_64(key_bytes) % max_parallelism`.
///
/// # Errors
/// [`Error::InvalidArgument`] if `max_parallelism` is not within `[1, 2^15]`.
pub fn assign_to_key_group(key_bytes: &[u8], max_parallelism: u32) -> Result<u32> {
    check_max_parallelism(max_parallelism)?;
    Ok(key_group_for_hash(
        stable_key_hash(key_bytes),
        max_parallelism,
    ))
}

/// Key groups owned by subtask `operator_index` of `parallelism`:
/// `[ceil(i * maxP / p), ((i + 1) * maxP - 1) / p]`, as Flink's
/// `computeKeyGroupRangeForOperatorIndex`.
///
/// # Errors
/// [`Error::InvalidArgument`] if `parallelism` is 0 or above `max_parallelism`, or `operator_index >=
/// parallelism`, or `max_parallelism` is out of `[1, 2^15]`.
pub fn key_group_range_for_operator(
    max_parallelism: u32,
    parallelism: u32,
    operator_index: u32,
) -> Result<KeyGroupRange> {
    check_max_parallelism(max_parallelism)?;
    if parallelism == 0 || parallelism > max_parallelism || operator_index >= parallelism {
        return Err(Error::InvalidArgument(format!(
            "subtask {operator_index} of parallelism {parallelism} does not fit max parallelism {max_parallelism}"
        )));
    }
    let (max_p, p, i) = (
        u64::from(max_parallelism),
        u64::from(parallelism),
        u64::from(operator_index),
    );
    let start = (i * max_p).div_ceil(p);
    let end = ((i + 1) * max_p - 1) / p;
    KeyGroupRange::new(start as u32, end as u32)
}

/// Subtask that owns `key_group` at `parallelism`: `kg * p / maxP`, as Flink's
/// `computeOperatorIndexForKeyGroup`.
///
/// # Errors
/// [`Error::InvalidArgument`] if `max_parallelism` is not within `[1, 2^15]`, `parallelism` is 0 or
/// above it, or `key_group` is not below it.
pub fn operator_index_for_key_group(
    max_parallelism: u32,
    parallelism: u32,
    key_group: u32,
) -> Result<u32> {
    check_max_parallelism(max_parallelism)?;
    if parallelism == 0 || parallelism > max_parallelism || key_group >= max_parallelism {
        return Err(Error::InvalidArgument(format!(
            "key group {key_group} at parallelism {parallelism} does not fit max parallelism \
             {max_parallelism}"
        )));
    }
    // Below `parallelism`, since `key_group < max_parallelism`.
    Ok((u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32)
}

/// Default max parallelism for a job of `parallelism`: `min(max(next_pow2(p + p/2), 128), 32768)`, as
/// Flink's `computeDefaultMaxParallelism`.
///
/// Total: a parallelism above `2^15` (more than any job can have) gives the upper bound, `2^15`.
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    let p = u64::from(parallelism);
    let wanted = (p + p / 2).max(1).next_power_of_two();
    wanted.clamp(
        u64::from(DEFAULT_LOWER_BOUND_MAX_PARALLELISM),
        u64::from(UPPER_BOUND_MAX_PARALLELISM),
    ) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_all_key_groups_like_flink() {
        for max_p in [1u32, 7, 128, 1000, 32768] {
            for p in [1u32, 2, 3, 7, 128].into_iter().filter(|p| *p <= max_p) {
                let mut next = 0;
                for i in 0..p {
                    let r = key_group_range_for_operator(max_p, p, i).unwrap();
                    assert_eq!(r.start(), next);
                    for kg in r.iter() {
                        assert_eq!(operator_index_for_key_group(max_p, p, kg).unwrap(), i);
                    }
                    next = r.start() + r.len();
                }
                assert_eq!(next, max_p);
            }
        }
        // Values Flink gives for maxP 128, p 3: [0,42], [43,85], [86,127].
        assert_eq!(
            key_group_range_for_operator(128, 3, 1).unwrap(),
            KeyGroupRange::new(43, 85).unwrap()
        );
    }

    #[test]
    fn default_max_parallelism_matches_flink() {
        assert_eq!(default_max_parallelism(1), 128);
        assert_eq!(default_max_parallelism(100), 256);
        assert_eq!(default_max_parallelism(1000), 2048);
        assert_eq!(default_max_parallelism(30000), 32768);
    }

    #[test]
    fn the_stable_hash_is_pinned() {
        // Pinned values: if these change, every existing snapshot would restore into the wrong groups.
        assert_eq!(stable_key_hash(b""), 0x2d06800538d394c2);
        assert_eq!(
            assign_to_key_group(b"hello", 128).unwrap(),
            (stable_key_hash(b"hello") % 128) as u32
        );
    }

    #[test]
    fn key_group_is_the_hash_modulo_max_parallelism_for_every_max_parallelism() {
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            h = h.rotate_left(17).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ 0x94d0_49bb_1331_11eb;
            for max_p in [1u32, 2, 3, 100, 128, 4096, 32767, 32768] {
                assert_eq!(key_group_for_hash(h, max_p), (h % u64::from(max_p)) as u32);
            }
        }
    }

    #[test]
    fn range_set_operations() {
        let a = KeyGroupRange::new(0, 63).unwrap();
        let b = KeyGroupRange::new(32, 127).unwrap();
        assert_eq!(a.intersection(&b), KeyGroupRange::new(32, 63).unwrap());
        assert!(
            a.intersection(&KeyGroupRange::new(64, 64).unwrap())
                .is_empty()
        );
        assert_eq!(KeyGroupRange::EMPTY.iter().count(), 0);
        assert_eq!(b.index_of(33), Some(1));
        assert!(KeyGroupRange::new(5, 4).is_err());
        assert!(key_group_range_for_operator(128, 0, 0).is_err());
    }
}

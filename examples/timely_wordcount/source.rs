//! The replayable source: `splits` independent, seekable sequences of generated words. Split `j` is read
//! by worker `j % workers`; its offset (the next position) is the source's operator state.

use std::collections::HashMap;

/// Word number `position` of split `split`: log-uniform over `[0, distinct)` from a SplitMix64 hash of
/// (seed, split, position), so any position is computed directly (the source seeks by recomputing
/// nothing).
pub(crate) fn word_at(seed: u64, split: u32, position: u64, distinct: u64) -> u64 {
    let mut z = seed ^ (u64::from(split) << 40) ^ position.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    // distinct^u is in [1, distinct): word n has probability log((n + 2) / (n + 1)) / log(distinct).
    ((distinct as f64).powf(u) as u64)
        .saturating_sub(1)
        .min(distinct - 1)
}

/// The word text of a word number.
pub(crate) fn word_text(n: u64) -> String {
    format!("w{n}")
}

/// One split being read: its index and the position of its next word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    pub(crate) index: u32,
    pub(crate) next: u64,
}

/// The splits worker `worker` of `workers` reads in a job that starts from nothing: `j % workers == worker`,
/// from position 0. (A restored job takes its share of the source's list state instead.)
pub(crate) fn assign(splits: u32, worker: u32, workers: u32) -> Vec<Split> {
    (0..splits)
        .filter(|j| j % workers == worker)
        .map(|index| Split { index, next: 0 })
        .collect()
}

/// Counts of a single pass over every split: `(word, window) -> count`, the window being
/// `position / window_ms` (0 without windows).
pub(crate) fn single_pass(
    seed: u64,
    splits: u32,
    words_per_split: u64,
    distinct: u64,
    window_ms: Option<u64>,
) -> HashMap<(String, u64), u64> {
    let mut by_number: HashMap<(u64, u64), u64> = HashMap::new();
    for split in 0..splits {
        for position in 0..words_per_split {
            let window = window_ms.map_or(0, |w| position / w);
            *by_number
                .entry((word_at(seed, split, position, distinct), window))
                .or_insert(0) += 1;
        }
    }
    by_number
        .into_iter()
        .map(|((n, w), c)| ((word_text(n), w), c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_spread_over_workers_once_and_words_are_skewed() {
        for workers in [1, 3, 4] {
            let mut all: Vec<u32> = (0..workers)
                .flat_map(|w| assign(10, w, workers).into_iter().map(|s| s.index))
                .collect();
            all.sort();
            assert_eq!(all, (0..10).collect::<Vec<_>>());
        }
        let counts = single_pass(1, 2, 20_000, 1000, None);
        let hot = counts.get(&("w0".to_string(), 0)).copied().unwrap_or(0);
        let cold = counts.get(&("w900".to_string(), 0)).copied().unwrap_or(0);
        assert!(hot > 10 * cold.max(1), "w0 {hot} w900 {cold}");
        assert_eq!(word_at(1, 0, 5, 1000), word_at(1, 0, 5, 1000));
    }
}

//! The earliest timestamp of each owned key group and the earliest of all, for timer queues partitioned by
//! key group (as Flink's `KeyGroupPartitionedPriorityQueue` keeps a heap of the key groups' heads): a
//! tournament tree of minimums over the key groups, updated in place in O(log key groups) with no
//! allocation, the earliest read in O(1).

/// A key group without timers (greater than every head: a key group index is below `u32::MAX`).
const EMPTY: u128 = u128::MAX;

/// A head as one integer, `timestamp << 32 | key group`: one comparison orders by timestamp, then key group.
#[inline]
fn entry(ts: u64, kg: usize) -> u128 {
    (u128::from(ts) << 32) | kg as u128
}

/// Heads of `groups` key groups (indexes in the owned range).
pub(crate) struct KeyGroupHeads {
    /// Leaves (a power of two, at least the key groups).
    leaves: usize,
    /// `tree[1]` the root, `tree[leaves + g]` key group `g`'s [`entry`]; a parent holds the smaller of its
    /// children (ties to the lower key group).
    tree: Vec<u128>,
}

impl KeyGroupHeads {
    /// All `groups` key groups empty.
    pub(crate) fn new(groups: usize) -> Self {
        let leaves = groups.next_power_of_two().max(1);
        KeyGroupHeads {
            leaves,
            tree: vec![EMPTY; 2 * leaves],
        }
    }

    /// Key group `kg`'s head.
    #[inline]
    pub(crate) fn get(&self, kg: usize) -> Option<u64> {
        let head = self.tree[self.leaves + kg];
        (head != EMPTY).then_some((head >> 32) as u64)
    }

    /// Sets key group `kg`'s head (`None`: no timers).
    #[inline]
    pub(crate) fn set(&mut self, kg: usize, head: Option<u64>) {
        let mut i = self.leaves + kg;
        self.tree[i] = head.map_or(EMPTY, |ts| entry(ts, kg));
        while i > 1 {
            // The parent's new value: the smaller of the child just set and its sibling.
            let least = self.tree[self.smaller_child(i)];
            i /= 2;
            if self.tree[i] == least {
                break;
            }
            self.tree[i] = least;
        }
    }

    /// Sets the head of the key group that holds the earliest head ([`KeyGroupHeads::first`]'s, after
    /// its earliest timer was taken) to `head`: [`KeyGroupHeads::set`] without comparing each ancestor
    /// before writing it (every ancestor of that key group holds its old head, so each is rewritten).
    /// Called only while some key group has a head (checked in debug builds).
    #[inline]
    pub(crate) fn replace_first(&mut self, head: Option<u64>) {
        debug_assert!(self.tree[1] != EMPTY, "no key group has a head");
        let kg = self.tree[1] as u32 as usize;
        let mut i = self.leaves + kg;
        self.tree[i] = head.map_or(EMPTY, |ts| entry(ts, kg));
        while i > 1 {
            self.tree[i / 2] = self.tree[self.smaller_child(i)];
            i /= 2;
        }
    }

    /// Of node `i` and its sibling, the one with the smaller entry (`i` on a tie), chosen by index
    /// arithmetic rather than a comparison of the values: which one wins is as random as the timestamps,
    /// and `u128::min` compiled to a jump that was mispredicted half the time at every level (firing
    /// 1M RocksDB timers went from 3.7 to 4.4 M/s with this alone, `docs/timers.md`).
    #[inline]
    fn smaller_child(&self, i: usize) -> usize {
        let sibling = i ^ 1;
        sibling ^ usize::from(self.tree[sibling] >= self.tree[i])
    }

    /// The earliest head and its key group.
    #[inline]
    pub(crate) fn first(&self) -> Option<(u64, usize)> {
        let head = self.tree[1];
        (head != EMPTY).then_some(((head >> 32) as u64, head as u32 as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::KeyGroupHeads;
    use std::collections::BTreeSet;

    #[test]
    fn the_first_head_is_the_least_of_a_model_under_random_updates_and_replacements_of_the_first() {
        for groups in [1usize, 2, 3, 7, 128, 200] {
            let mut heads = KeyGroupHeads::new(groups);
            let mut model: Vec<Option<u64>> = vec![None; groups];
            let mut x = 0x2545_f491_4f6c_dd1d_u64;
            for _ in 0..2000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let head = (x >> 40 != 0).then_some((x >> 20) % 50);
                // Every third update replaces the first head (a timer taken), the rest set any.
                let kg = match heads.first() {
                    Some((_, first)) if x.is_multiple_of(3) => {
                        heads.replace_first(head);
                        first
                    }
                    _ => {
                        let kg = (x % groups as u64) as usize;
                        heads.set(kg, head);
                        kg
                    }
                };
                model[kg] = head;
                let least: BTreeSet<(u64, usize)> = model
                    .iter()
                    .enumerate()
                    .filter_map(|(g, h)| h.map(|t| (t, g)))
                    .collect();
                assert_eq!(heads.first(), least.first().copied(), "{groups} groups");
                assert_eq!(heads.get(kg), head);
            }
        }
    }
}

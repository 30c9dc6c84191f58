//! A frozen version of a [`CowMap`](super::CowMap): what a checkpoint's synchronous phase takes and its
//! asynchronous phase writes out, key group by key group.

use std::sync::Arc;

use super::KeyGroupMap;

/// A key group's map as a snapshot holds it: `None` once taken out.
type FrozenGroup<K, N, S> = Option<Arc<KeyGroupMap<K, N, S>>>;

/// A frozen version of a [`CowMap`](super::CowMap), independent of later writes; `Send` if the entries
/// are.
pub(crate) struct CowSnapshot<K, N, S> {
    /// Per key group of the map, its map when the snapshot was taken; `None` once taken out.
    groups: Vec<FrozenGroup<K, N, S>>,
    /// The epoch its map moved on to when it was taken: above every stamp of a page it reaches.
    epoch: u64,
}

impl<K, N, S> CowSnapshot<K, N, S> {
    /// The snapshot of `groups`, taken when its map moved on to `epoch`.
    pub(super) fn new(groups: Vec<FrozenGroup<K, N, S>>, epoch: u64) -> Self {
        CowSnapshot { groups, epoch }
    }

    /// Per key group, its map, `None` where taken out.
    pub(crate) fn groups(&self) -> &[FrozenGroup<K, N, S>] {
        &self.groups
    }

    /// Entries of key group `kg` (0 once taken out, or past the last key group).
    pub(crate) fn group_len(&self, kg: usize) -> usize {
        self.groups
            .get(kg)
            .and_then(Option::as_ref)
            .map_or(0, |g| g.len())
    }

    /// The epoch its map moved on to when it was taken.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Takes key group `kg` out of the snapshot; dropping it releases pages that writers copied away from.
    pub(crate) fn take_group(&mut self, kg: usize) -> Option<Arc<KeyGroupMap<K, N, S>>> {
        self.groups.get_mut(kg)?.take()
    }
}

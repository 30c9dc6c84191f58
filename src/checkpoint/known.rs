//! The checkpoints a store knows, each with its role (retained on the job's line, pinned, abandoned), in
//! the order of recency `(generation, id)`, and the shared-file registry derived from them
//! (`docs/protocol.md`, "Subsumption and garbage collection"; `docs/faults.md`).

use std::collections::BTreeMap;

use crate::checkpoint::lineage::Lineage;
use crate::checkpoint::registry::{SharedFileRegistry, Use};
use crate::snapshot::handle::CheckpointMetadata;

/// One known checkpoint.
#[derive(Debug, Clone)]
struct Entry {
    meta: CheckpointMetadata,
    /// Restored in NO_CLAIM mode (`_pinned` marker): never subsumed nor deleted by the job.
    pinned: bool,
}

/// Readable checkpoints in storage that a store knows, by id, and their registry.
#[derive(Debug, Clone, Default)]
pub(crate) struct KnownCheckpoints {
    entries: BTreeMap<u64, Entry>,
    registry: SharedFileRegistry,
}

impl KnownCheckpoints {
    /// Adds (or replaces) checkpoint `meta`; `pinned` as its marker says. The caller rebuilds the registry.
    pub(crate) fn insert(&mut self, meta: CheckpointMetadata, pinned: bool) {
        self.entries
            .insert(meta.checkpoint_id, Entry { meta, pinned });
    }

    /// Forgets checkpoint `id` (its metadata is gone). The caller rebuilds the registry.
    pub(crate) fn remove(&mut self, id: u64) -> Option<CheckpointMetadata> {
        self.entries.remove(&id).map(|e| e.meta)
    }

    /// Pins checkpoint `id`; false if it is unknown.
    pub(crate) fn pin(&mut self, id: u64) -> bool {
        match self.entries.get_mut(&id) {
            Some(e) => {
                e.pinned = true;
                true
            }
            None => false,
        }
    }

    /// Keeps only the checkpoints whose id `exists` says still exist.
    pub(crate) fn retain(&mut self, exists: impl Fn(u64) -> bool) -> bool {
        let before = self.entries.len();
        self.entries.retain(|id, _| exists(*id));
        self.entries.len() != before
    }

    /// The role of a checkpoint under `lineage`: abandoned (by a lineage record, pinned or not: never
    /// restored), else pinned or retained.
    fn role(entry: &Entry, lineage: &Lineage) -> Use {
        if lineage.abandons(entry.meta.generation, entry.meta.checkpoint_id) {
            Use::Abandoned
        } else if entry.pinned {
            Use::Pinned
        } else {
            Use::Retained
        }
    }

    /// Recomputes the registry under `lineage`; returns the shared files no known checkpoint references
    /// any more (with their sizes), which the caller dooms if it may delete.
    pub(crate) fn rebuild_registry(&mut self, lineage: &Lineage) -> Vec<(String, u64)> {
        let mut next = self.registry.clone();
        // A pinned checkpoint's files count as pinned whatever its role: never reused, never deleted.
        next.rebuild(self.entries.values().map(|e| {
            let role = match Self::role(e, lineage) {
                Use::Abandoned if e.pinned => Use::Pinned,
                role => role,
            };
            (&e.meta, role)
        }));
        let dropped = self.registry.dropped_by(&next);
        self.registry = next;
        dropped
    }

    pub(crate) fn registry(&self) -> &SharedFileRegistry {
        &self.registry
    }

    pub(crate) fn registry_mut(&mut self) -> &mut SharedFileRegistry {
        &mut self.registry
    }

    /// A known checkpoint by id, whatever its role.
    pub(crate) fn get(&self, id: u64) -> Option<&CheckpointMetadata> {
        self.entries.get(&id).map(|e| &e.meta)
    }

    /// Whether checkpoint `id` is known.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    /// Whether checkpoint `id` is known and pinned (whether or not a lineage record abandoned it).
    pub(crate) fn is_pinned(&self, id: u64) -> bool {
        self.entries.get(&id).is_some_and(|e| e.pinned)
    }

    /// Every known checkpoint, any role, by id.
    pub(crate) fn all(&self) -> impl Iterator<Item = &CheckpointMetadata> {
        self.entries.values().map(|e| &e.meta)
    }

    /// Known checkpoints of role `role` under `lineage`, oldest first by recency `(generation, id)`.
    pub(crate) fn with_role(&self, role: Use, lineage: &Lineage) -> Vec<&CheckpointMetadata> {
        let mut out: Vec<&CheckpointMetadata> = self
            .entries
            .values()
            .filter(|e| Self::role(e, lineage) == role)
            .map(|e| &e.meta)
            .collect();
        out.sort_by_key(|m| m.recency());
        out
    }

    /// Restorable checkpoints (retained and pinned, not abandoned), newest first by recency.
    pub(crate) fn restorable(&self, lineage: &Lineage) -> Vec<&CheckpointMetadata> {
        let mut out: Vec<&CheckpointMetadata> = self
            .entries
            .values()
            .filter(|e| Self::role(e, lineage) != Use::Abandoned)
            .map(|e| &e.meta)
            .collect();
        out.sort_by_key(|m| std::cmp::Reverse(m.recency()));
        out
    }

    /// What subsumption removes now, oldest first: every abandoned checkpoint, and the retained ones
    /// beyond the newest `retained` by recency. Pinned checkpoints never, abandoned or not (a pinned
    /// checkpoint another line left behind is kept with its files, though it is no longer restorable).
    pub(crate) fn to_subsume(&self, retained: usize, lineage: &Lineage) -> Vec<u64> {
        let mut victims: Vec<&CheckpointMetadata> = self
            .entries
            .values()
            .filter(|e| !e.pinned && Self::role(e, lineage) == Use::Abandoned)
            .map(|e| &e.meta)
            .collect();
        let kept = self.with_role(Use::Retained, lineage);
        let beyond = kept.len().saturating_sub(retained);
        victims.extend(kept.into_iter().take(beyond));
        victims.sort_by_key(|m| m.recency());
        victims.into_iter().map(|m| m.checkpoint_id).collect()
    }
}

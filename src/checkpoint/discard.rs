//! Where the coordinator's attempts (checkpoints and savepoints in flight) write, as a component that owns
//! it: the job's storage, the targets of the savepoints it triggered, and its name in their reservations;
//! and what it deletes of an attempt that did not complete: the uploads of its tasks that nothing
//! references, and its private directory (`docs/protocol.md`, table of outcomes).

use std::collections::{BTreeMap, HashSet};

use crate::checkpoint::savepoint::{delete_own_savepoint_dir, reserve_savepoint_id};
use crate::error::Result;
use crate::snapshot::handle::TaskStateSnapshot;
use crate::snapshot::layout::{TRIGGER_MARKER, checkpoint_dir};
use crate::storage::CheckpointStorage;

/// Savepoint targets a coordinator remembers (for late acknowledgements of aborted savepoints).
const MAX_SAVEPOINT_TARGETS: usize = 64;

/// The storages one coordinator's attempts write to.
pub(crate) struct Attempts {
    storage: CheckpointStorage,
    /// The coordinator instance, named in its savepoint reservations.
    instance: String,
    /// Where the savepoints this coordinator triggered are written, by id (bounded, newest kept): their
    /// clean-up after an abort or a late acknowledgement happens there.
    savepoint_targets: BTreeMap<u64, CheckpointStorage>,
}

impl Attempts {
    pub(crate) fn new(storage: CheckpointStorage, instance: String) -> Self {
        Attempts {
            storage,
            instance,
            savepoint_targets: BTreeMap::new(),
        }
    }

    /// The storage checkpoint `checkpoint_id`'s files are in: a savepoint's target, else the job's.
    pub(super) fn storage_of(&self, checkpoint_id: u64) -> &CheckpointStorage {
        self.savepoint_targets
            .get(&checkpoint_id)
            .unwrap_or(&self.storage)
    }

    /// The content of this coordinator's reservation of savepoint `id` in a target.
    fn savepoint_owner(&self, id: u64) -> String {
        format!(
            "savepoint {id} reserved by coordinator {} of job {}\n",
            self.instance,
            self.storage.path("")
        )
    }

    /// Reserves savepoint `id` in `target` for this coordinator, and remembers the target if it is ours.
    ///
    /// # Errors
    /// Storage errors (the reservation may have taken effect; it only keeps others off the id).
    pub(super) async fn reserve_savepoint(
        &mut self,
        target: &CheckpointStorage,
        id: u64,
    ) -> Result<bool> {
        let reserved = reserve_savepoint_id(target, id, &self.savepoint_owner(id)).await?;
        if reserved {
            self.remember_savepoint_target(id, target.clone());
        } else {
            tracing::warn!(
                savepoint_id = id,
                "the savepoint target holds this id already; trying the next one"
            );
        }
        Ok(reserved)
    }

    /// Remembers where savepoint `id` is written; forgets the oldest beyond [`MAX_SAVEPOINT_TARGETS`].
    fn remember_savepoint_target(&mut self, id: u64, target: CheckpointStorage) {
        self.savepoint_targets.insert(id, target);
        while self.savepoint_targets.len() > MAX_SAVEPOINT_TARGETS {
            self.savepoint_targets.pop_first();
        }
    }

    /// Deletes the private files of a checkpoint this coordinator reserved and that has no metadata,
    /// keeping the reservation marker (the id watermark, `docs/protocol.md`).
    ///
    /// For a savepoint, what this attempt put in its directory in the target storage, while the
    /// directory's reservation is this coordinator's (`docs/faults.md`).
    pub(super) async fn discard_private_dir(&self, checkpoint_id: u64) -> Result<()> {
        if let Some(target) = self.savepoint_targets.get(&checkpoint_id) {
            let owner = self.savepoint_owner(checkpoint_id);
            return delete_own_savepoint_dir(target, checkpoint_id, &owner)
                .await
                .map(|_| ());
        }
        self.storage
            .delete_dir_except(&checkpoint_dir(checkpoint_id), &[TRIGGER_MARKER])
            .await
    }

    /// Deletes the files of `tasks`' handles that checkpoint `checkpoint_id` uploaded itself (`created_by`)
    /// and that neither `store_references` (what the checkpoints the store knows reference) nor
    /// `accepted` (an acknowledgement of the same task that stays) names.
    pub(super) async fn discard_own_uploads<'a>(
        &self,
        store_references: HashSet<&str>,
        checkpoint_id: u64,
        tasks: impl IntoIterator<Item = &'a TaskStateSnapshot>,
        accepted: Option<&TaskStateSnapshot>,
    ) -> Result<()> {
        let referenced: HashSet<String> = store_references
            .into_iter()
            .map(str::to_string)
            .chain(
                accepted
                    .and_then(|t| t.keyed_state.as_ref())
                    .into_iter()
                    .flat_map(|h| h.files.iter().map(|f| f.path.clone())),
            )
            .collect();
        let storage = self.storage_of(checkpoint_id);
        let mut first_error = None;
        for file in tasks
            .into_iter()
            .filter_map(|t| t.keyed_state.as_ref())
            .flat_map(|h| &h.files)
        {
            if file.created_by == checkpoint_id
                && !referenced.contains(&file.path)
                && let Err(e) = storage.delete(&file.path).await
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

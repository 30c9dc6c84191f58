//! In-process recovery of the heap backend (`docs/local-recovery.md`, "In-process recovery"): a shared
//! component that keeps, per checkpoint, a frozen version of a backend's states, matched to the handle that
//! checkpoint produced, so that a backend restored from that handle in the same process takes the version
//! back without reading or decoding a file.

use std::any::Any;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::clock::ManualClock;
use crate::error::Result;
use crate::format::keyed_file::read::decode_frames;
use crate::format::keyed_file::{FileHeader, KeyedFileWriter, WriterOptions};
use crate::heap::delta::Cut;
use crate::heap::table::{ErasedTable, RawTable, RetainedTable};
use crate::key_group::KeyGroupRange;
use crate::keyed::backend::StateKey;
use crate::keyed::ttl::TtlTimes;
use crate::snapshot::handle::KeyedStateHandle;

/// Versions kept per backend and job, the last confirmed one included: a backend whose checkpoints are
/// never confirmed (lost notifications) keeps only its newest ones.
const KEPT_PER_BACKEND: usize = 4;

/// Frozen versions of heap backends' checkpoints, kept in memory for a restore in the same process.
///
/// Create one per process and give it to every heap backend
/// ([`HeapKeyedStateBackend::set_in_process_recovery`](crate::heap::HeapKeyedStateBackend::set_in_process_recovery),
/// [`HeapKeyedStateBackend::restore_in_process`](crate::heap::HeapKeyedStateBackend::restore_in_process)); clones
/// share the versions. A version holds the pages of the copy-on-write maps as they were at the
/// checkpoint's synchronous phase: while its backend lives, only the pages written since (each held twice);
/// after the backend is gone, the whole state, until a later checkpoint of the job is confirmed or
/// [`InProcessRecovery::clear`] is called. Kept, per job: the last confirmed checkpoint of each backend and
/// the unresolved ones after it, at most 4 per backend.
#[derive(Clone, Default)]
pub struct InProcessRecovery {
    inner: Arc<Mutex<Kept>>,
}

impl std::fmt::Debug for InProcessRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessRecovery")
            .field("versions", &self.len())
            .finish()
    }
}

#[derive(Default)]
struct Kept {
    versions: Vec<Version>,
    /// Per job root: the highest checkpoint id confirmed to any of its backends.
    confirmed: Vec<(String, u64)>,
}

/// One backend's frozen states at one checkpoint.
struct Version {
    job: String,
    handle: KeyedStateHandle,
    /// A [`RetainedTables`] of the backend's key type.
    tables: Arc<dyn Any + Send + Sync>,
}

impl InProcessRecovery {
    /// An empty set of versions.
    pub fn new() -> Self {
        InProcessRecovery::default()
    }

    /// Number of versions kept.
    pub fn len(&self) -> usize {
        self.inner.lock().versions.len()
    }

    /// Whether no version is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every version (their jobs ended; restores read their files from then on).
    pub fn clear(&self) {
        let gone = {
            let mut kept = self.inner.lock();
            kept.confirmed.clear();
            std::mem::take(&mut kept.versions)
        };
        // Freed outside the lock: a version may hold a whole state.
        drop(gone);
    }

    /// Keeps `tables`, the frozen states of the checkpoint `handle` describes, of the job at `job` (the
    /// checkpoint storage's job root). Dropped at once if a later checkpoint of the job is confirmed
    /// already; the same checkpoint of the same backend kept again replaces the first.
    pub(crate) fn publish<K: StateKey>(
        &self,
        job: String,
        handle: KeyedStateHandle,
        tables: RetainedTables<K>,
    ) {
        let mut kept = self.inner.lock();
        let confirmed = kept.confirmed_of(&job);
        if confirmed.is_some_and(|c| c > handle.checkpoint_id) {
            return;
        }
        let backend_id = handle.backend_id.clone();
        let same_backend = |v: &Version| v.job == job && v.handle.backend_id == backend_id;
        let mut gone =
            kept.take_where(|v| same_backend(v) && v.handle.checkpoint_id == handle.checkpoint_id);
        kept.versions.push(Version {
            job: job.clone(),
            handle,
            tables: Arc::new(tables),
        });
        // Oldest first by checkpoint id among this backend's; the newest confirmed one always stays.
        let mut ids: Vec<u64> = kept
            .versions
            .iter()
            .filter(|v| same_backend(v))
            .map(|v| v.handle.checkpoint_id)
            .collect();
        if ids.len() > KEPT_PER_BACKEND {
            ids.sort_unstable();
            let keep_confirmed =
                confirmed.and_then(|c| ids.iter().rev().find(|&&i| i <= c).copied());
            let surplus = ids.len() - KEPT_PER_BACKEND;
            let dropped: Vec<u64> = ids
                .into_iter()
                .filter(|i| Some(*i) != keep_confirmed)
                .take(surplus)
                .collect();
            gone.extend(
                kept.take_where(|v| same_backend(v) && dropped.contains(&v.handle.checkpoint_id)),
            );
        }
        drop(kept);
        drop(gone);
    }

    /// Checkpoint `checkpoint_id` of the job at `job` was confirmed: every version of an earlier
    /// checkpoint of the job goes, whichever backend kept it.
    pub(crate) fn confirmed(&self, job: &str, checkpoint_id: u64) {
        let mut kept = self.inner.lock();
        match kept.confirmed.iter_mut().find(|(j, _)| j == job) {
            Some((_, c)) => *c = (*c).max(checkpoint_id),
            None => kept.confirmed.push((job.to_string(), checkpoint_id)),
        }
        let gone = kept.take_where(|v| v.job == job && v.handle.checkpoint_id < checkpoint_id);
        drop(kept);
        drop(gone);
    }

    /// Checkpoint `checkpoint_id` of backend `backend_id` was aborted: its version goes.
    pub(crate) fn aborted(&self, job: &str, backend_id: &str, checkpoint_id: u64) {
        let gone = self.inner.lock().take_where(|v| {
            v.job == job
                && v.handle.backend_id == backend_id
                && v.handle.checkpoint_id == checkpoint_id
        });
        drop(gone);
    }

    /// The version of the job at `job` that produced exactly `handle` (every field and file equal), if
    /// kept and of key type `K`; otherwise why not.
    pub(crate) fn find<K: StateKey>(
        &self,
        job: &str,
        handle: &KeyedStateHandle,
    ) -> std::result::Result<Arc<RetainedTables<K>>, &'static str> {
        let kept = self.inner.lock();
        let version = kept
            .versions
            .iter()
            .find(|v| v.job == job && v.handle == *handle)
            .ok_or("no in-process copy of this handle")?;
        Arc::clone(&version.tables)
            .downcast::<RetainedTables<K>>()
            .map_err(|_| "the in-process copy has another key type")
    }
}

impl Kept {
    /// Takes out the versions `doomed` picks, for the caller to drop once the lock is released (a
    /// version may hold a whole state, which takes a while to free).
    fn take_where(&mut self, mut doomed: impl FnMut(&Version) -> bool) -> Vec<Version> {
        let (gone, kept) = std::mem::take(&mut self.versions)
            .into_iter()
            .partition(|v| doomed(v));
        self.versions = kept;
        gone
    }

    fn confirmed_of(&self, job: &str) -> Option<u64> {
        self.confirmed
            .iter()
            .find(|(j, _)| j == job)
            .map(|(_, c)| *c)
    }
}

/// Keeps a checkpoint's second frozen version in memory under the checkpoint's handle, once uploaded.
pub(crate) type KeepVersion = Box<dyn FnOnce(KeyedStateHandle) + Send>;

/// The frozen live states of one backend at one checkpoint, in the backend's order.
pub(crate) struct RetainedTables<K>(pub(crate) Vec<Box<dyn RetainedTable<K>>>);

/// The records a keyed file holds of `table` (a table restored from memory that a registration does not
/// take as it is): each key group written as a full snapshot writes it, uncompressed, and decoded back,
/// so that what follows is a restore of those records from a file.
///
/// # Errors
/// Those of writing the records (a record over the frame limit).
pub(crate) fn to_raw<K: StateKey>(
    table: &mut dyn ErasedTable<K>,
    groups: usize,
) -> Result<RawTable> {
    let meta = table.meta().clone();
    // At time 0 nothing has expired: every record the table holds is written (the restore swept out
    // what the checkpoint's file leaves out already).
    let mut at_zero = TtlTimes::default();
    at_zero.set_clock(Arc::new(ManualClock::new(std::time::UNIX_EPOCH)));
    let mut frozen = table.freeze(&at_zero, Cut::Untracked);
    let header = FileHeader {
        // Only the records are read back: the header's figures are never looked at.
        max_parallelism: 1,
        key_groups: KeyGroupRange::EMPTY,
        states: vec![meta.clone()],
        rewrite: None,
        appends: false,
        patches: false,
        whole: crate::key_group::KeyGroupRange::EMPTY,
    };
    let options = WriterOptions {
        zstd_level: None,
        frame_bytes: 1 << 20,
    };
    let mut writer = KeyedFileWriter::new(&header, options)?;
    writer.take_output();
    let mut out = Vec::new();
    let mut len = 0;
    for kg_index in 0..groups {
        let before = writer.counts().0;
        writer.begin_key_group(kg_index as u32)?;
        frozen.write_group(kg_index, 0, true, &mut writer)?;
        writer.end_key_group()?;
        let frames = writer.take_output();
        let records = (writer.counts().0 - before) as usize;
        if records > 0 {
            out.push((kg_index, decode_frames(&frames, 0, "<in-process copy>")?));
            len += records;
        }
    }
    Ok(RawTable {
        meta,
        groups: Arc::new(out),
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::handle::HandleFormat;

    fn handle(backend: &str, checkpoint_id: u64) -> KeyedStateHandle {
        KeyedStateHandle {
            backend_id: backend.into(),
            operator_id: "op".into(),
            checkpoint_id,
            max_parallelism: 128,
            key_groups: KeyGroupRange::EMPTY,
            format: HandleFormat::KeyedFile,
            files: Vec::new(),
        }
    }

    fn publish(r: &InProcessRecovery, job: &str, backend: &str, id: u64) {
        r.publish::<u64>(job.into(), handle(backend, id), RetainedTables(Vec::new()));
    }

    fn ids(r: &InProcessRecovery, job: &str, backend: &str) -> Vec<u64> {
        let kept = r.inner.lock();
        let mut ids: Vec<u64> = (kept.versions.iter())
            .filter(|v| v.job == job && v.handle.backend_id == backend)
            .map(|v| v.handle.checkpoint_id)
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn unconfirmed_versions_are_capped_and_the_confirmed_one_stays() {
        let r = InProcessRecovery::new();
        for id in 1..=6 {
            publish(&r, "job", "a", id);
        }
        assert_eq!(ids(&r, "job", "a"), vec![3, 4, 5, 6], "the newest four");
        r.confirmed("job", 4);
        assert_eq!(ids(&r, "job", "a"), vec![4, 5, 6]);
        for id in 7..=9 {
            publish(&r, "job", "a", id);
        }
        assert_eq!(
            ids(&r, "job", "a"),
            vec![4, 7, 8, 9],
            "the confirmed one stays"
        );
        // Another backend and another job keep their own.
        publish(&r, "job", "b", 9);
        publish(&r, "other", "a", 1);
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn late_publishes_aborts_and_another_key_type_keep_nothing_usable() {
        let r = InProcessRecovery::new();
        r.confirmed("job", 5);
        publish(&r, "job", "a", 4);
        assert!(r.is_empty(), "published after checkpoint 5 was confirmed");
        publish(&r, "job", "a", 6);
        publish(&r, "job", "a", 6);
        assert_eq!(
            r.len(),
            1,
            "the same checkpoint kept again replaces the first"
        );
        assert!(r.find::<u64>("job", &handle("a", 6)).is_ok());
        assert_eq!(
            r.find::<String>("job", &handle("a", 6)).err(),
            Some("the in-process copy has another key type")
        );
        assert!(r.find::<u64>("other", &handle("a", 6)).is_err());
        r.aborted("job", "b", 6);
        assert_eq!(r.len(), 1, "another backend's abort");
        r.aborted("job", "a", 6);
        assert!(r.is_empty());
        publish(&r, "job", "a", 7);
        r.clear();
        assert!(r.is_empty());
        publish(&r, "job", "a", 1);
        assert_eq!(r.len(), 1, "clear forgets the confirmations too");
    }
}

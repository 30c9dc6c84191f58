//! Local recovery on both backends: a restore on the same machine reads its files from the local copies
//! (no byte from checkpoint storage, counted by the store), a damaged or missing copy falls back to
//! storage and says so, a rescale reads the overlapping copies locally, and copies go with the
//! checkpoints they copy (an abort; a later confirmation, also of copies a dead backend left).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::faulty::FaultyStore;
use crate::common::{backend_kinds, identity};
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;
const MAX_P: u32 = 128;

fn config(kind: BackendKind, work: &Path, local: &Path) -> StateBackendConfig {
    let mut config = crate::common::backend_config(kind, work);
    config.heap.local_recovery_dir = Some(local.to_path_buf());
    config.rocksdb.local_recovery_dir = Some(local.to_path_buf());
    config
}

fn counts() -> ValueStateDescriptor<VoidNamespace, u64> {
    ValueStateDescriptor::new("counts")
}

/// Writes `key * 10 + round` under every key of `keys` the backend owns.
fn write(b: &mut StateBackend<u64>, keys: std::ops::Range<u64>, round: u64) {
    let s = b.value_state(&counts()).unwrap();
    for k in keys {
        if b.set_current_key(k).is_ok() {
            s.update(b, &NS, k * 10 + round).unwrap();
        }
    }
}

/// Checks `key * 10 + round` under every key of `keys` the backend owns; how many it owns.
fn check(b: &mut StateBackend<u64>, keys: std::ops::Range<u64>, round: u64) -> usize {
    let s = b.value_state(&counts()).unwrap();
    let mut owned = 0;
    for k in keys {
        if b.set_current_key(k).is_ok() {
            assert_eq!(s.value(b, &NS).unwrap(), Some(k * 10 + round), "key {k}");
            owned += 1;
        }
    }
    owned
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Names of the checkpoint copies under `local` (`<job>/<backend id>/chk-<n>`), as `<backend id>/chk-<n>`;
/// a leftover empty backend directory shows as `<backend id>/`.
fn copies(local: &Path) -> Vec<String> {
    let list = |dir: &Path| -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .collect()
    };
    let mut out = Vec::new();
    for job in list(local) {
        for backend in list(&job.path()) {
            let name = backend.file_name().to_string_lossy().into_owned();
            let chks = list(&backend.path());
            if chks.is_empty() {
                out.push(format!("{name}/"));
            }
            for chk in chks {
                out.push(format!("{name}/{}", chk.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

struct Job {
    faulty: Arc<FaultyStore>,
    storage: CheckpointStorage,
    coordinator: CheckpointCoordinator,
    backends: Vec<StateBackend<u64>>,
}

/// Two subtasks of `kind` with keys 0..2000 written (round 1), checkpointed and confirmed twice (round 2
/// written between).
async fn job_with_two_checkpoints(kind: BackendKind, work: &Path, local: &Path) -> Job {
    let faulty = FaultyStore::new();
    let storage = CheckpointStorage::new(faulty.clone(), "local-recovery").unwrap();
    let mut coordinator = crate::common::coordinator(&storage, 1, 2).await;
    let mut backends: Vec<StateBackend<u64>> = (0..2)
        .map(|i| StateBackend::new(&identity(MAX_P, 2, i), &config(kind, work, local)).unwrap())
        .collect();
    for round in 1..=2 {
        for b in &mut backends {
            write(b, 0..2_000, round);
        }
        crate::common::checkpoint(&mut coordinator, &mut backends).await;
    }
    Job {
        faulty,
        storage,
        coordinator,
        backends,
    }
}

async fn restore_all(
    job: &Job,
    kind: BackendKind,
    work: &Path,
    local: &Path,
    parallelism: u32,
) -> Vec<StateBackend<u64>> {
    let meta = job.coordinator.store().latest().unwrap().clone();
    let mut out = Vec::new();
    for i in 0..parallelism {
        out.push(
            StateBackend::restore_checkpoint(
                &identity(MAX_P, parallelism, i),
                &config(kind, work, local),
                &job.storage,
                &meta,
                RestoreMode::Claim,
            )
            .await
            .unwrap(),
        );
    }
    out
}

#[test]
fn a_same_range_restore_reads_nothing_from_checkpoint_storage() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let (work, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let job = job_with_two_checkpoints(kind, work.path(), local.path()).await;
            // One copy per subtask: the first checkpoint's went when the second was confirmed.
            let kept = copies(local.path());
            assert_eq!(kept.len(), 2, "{kind}: {kept:?}");
            assert!(
                kept.iter().all(|c| c.ends_with("/chk-2")),
                "{kind}: {kept:?}"
            );
            job.faulty.take_bytes_read();

            let mut restored = restore_all(&job, kind, work.path(), local.path(), 2).await;
            assert_eq!(
                job.faulty.take_bytes_read(),
                0,
                "{kind}: bytes read from storage"
            );
            let mut owned = 0;
            for b in &mut restored {
                let sources = b.restore_sources().clone();
                assert_eq!(sources.remote_files, 0, "{kind}: {sources:?}");
                assert!(sources.local_files >= 1, "{kind}: {sources:?}");
                assert!(sources.fallbacks.is_empty(), "{kind}: {sources:?}");
                owned += check(b, 0..2_000, 2);
            }
            assert_eq!(owned, 2_000, "{kind}");
        }
    });
}

#[test]
fn a_flipped_byte_in_a_local_copy_restores_from_checkpoint_storage_and_says_so() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let (work, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let job = job_with_two_checkpoints(kind, work.path(), local.path()).await;
            // The largest local file (the keyed file, or an SST) gets one byte flipped, in place: a hard
            // link to a live file would be damaged too, so the copy is rewritten under its name.
            let victim = files_under(local.path())
                .into_iter()
                .max_by_key(|p| std::fs::metadata(p).unwrap().len())
                .unwrap();
            let mut bytes = std::fs::read(&victim).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            std::fs::remove_file(&victim).unwrap();
            std::fs::write(&victim, &bytes).unwrap();
            job.faulty.take_bytes_read();

            let mut restored = restore_all(&job, kind, work.path(), local.path(), 2).await;
            assert!(job.faulty.take_bytes_read() > 0, "{kind}");
            let mut owned = 0;
            let mut fallbacks = Vec::new();
            for b in &mut restored {
                let sources = b.restore_sources().clone();
                fallbacks.extend(sources.fallbacks.clone());
                owned += check(b, 0..2_000, 2);
            }
            assert_eq!(owned, 2_000, "{kind}");
            assert_eq!(fallbacks.len(), 1, "{kind}: {fallbacks:?}");
            assert!(
                fallbacks[0].contains("damaged") && fallbacks[0].contains("CRC32"),
                "{kind}: {fallbacks:?}"
            );
        }
    });
}

#[test]
fn without_local_copies_a_restore_reads_storage_and_reports_each_missing_file() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let (work, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let job = job_with_two_checkpoints(kind, work.path(), local.path()).await;
            // Another machine: its local-recovery directory is empty.
            let elsewhere = tempfile::tempdir().unwrap();
            let mut restored = restore_all(&job, kind, work.path(), elsewhere.path(), 2).await;
            for b in &mut restored {
                let sources = b.restore_sources().clone();
                assert_eq!(sources.local_files, 0, "{kind}: {sources:?}");
                assert!(sources.remote_bytes > 0, "{kind}: {sources:?}");
                assert_eq!(
                    sources.fallbacks.len() as u32,
                    sources.remote_files,
                    "{kind}: {sources:?}"
                );
                assert!(
                    sources
                        .fallbacks
                        .iter()
                        .all(|f| f.contains("no local copy"))
                );
            }
        }
    });
}

#[test]
fn a_rescale_reads_the_overlapping_copies_locally() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let (work, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let job = job_with_two_checkpoints(kind, work.path(), local.path()).await;
            job.faulty.take_bytes_read();
            let mut three = restore_all(&job, kind, work.path(), local.path(), 3).await;
            assert_eq!(job.faulty.take_bytes_read(), 0, "{kind}");
            let mut owned = 0;
            for b in &mut three {
                let sources = b.restore_sources().clone();
                assert_eq!(sources.remote_files, 0, "{kind}: {sources:?}");
                owned += check(b, 0..2_000, 2);
            }
            assert_eq!(owned, 2_000, "{kind}");
        }
    });
}

#[test]
fn local_copies_go_with_the_checkpoints_they_copy() {
    crate::common::runtime().block_on(async {
        for kind in backend_kinds() {
            let (work, local) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let mut job = job_with_two_checkpoints(kind, work.path(), local.path()).await;

            // An aborted checkpoint's copy is deleted by the abort.
            let id = job.coordinator.trigger().await.unwrap();
            for b in &mut job.backends {
                write(b, 0..2_000, 3);
                b.snapshot(id, &job.storage).unwrap().run().await.unwrap();
            }
            assert_eq!(copies(local.path()).len(), 4, "{kind}");
            for b in &mut job.backends {
                b.notify_checkpoint_aborted(id);
            }
            let kept = copies(local.path());
            assert!(
                kept.iter().all(|c| c.ends_with("/chk-2")),
                "{kind}: {kept:?}"
            );

            // A checkpoint snapshotted and copied, then the process dies: neither confirmed nor aborted.
            let id = job.coordinator.trigger().await.unwrap();
            for b in &mut job.backends {
                b.snapshot(id, &job.storage).unwrap().run().await.unwrap();
            }
            assert_eq!(copies(local.path()).len(), 4, "{kind}");
            drop(std::mem::take(&mut job.backends));

            // The restore leaves every copy; its first confirmed checkpoint deletes all earlier ones of
            // the job, the dead backends' included: only the new checkpoint's copies are left.
            let before: Vec<String> = copies(local.path());
            let mut restored = restore_all(&job, kind, work.path(), local.path(), 2).await;
            assert_eq!(copies(local.path()), before, "{kind}");
            let mut coordinator = crate::common::coordinator(&job.storage, 1, 2).await;
            crate::common::checkpoint(&mut coordinator, &mut restored).await;
            let ids: Vec<String> = restored
                .iter()
                .map(|b| b.backend_id().unwrap().to_string())
                .collect();
            let latest = coordinator.store().latest().unwrap().checkpoint_id;
            let kept = copies(local.path());
            assert_eq!(kept.len(), 2, "{kind}: {kept:?}");
            for c in &kept {
                assert!(
                    ids.iter().any(|id| c.starts_with(id.as_str()))
                        && c.ends_with(&format!("/chk-{latest}")),
                    "{kind}: {c} is not a copy of the restored backends' checkpoint {latest}"
                );
            }
        }
    });
}

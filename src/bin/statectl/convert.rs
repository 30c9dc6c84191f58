//! `statectl savepoint convert SRC DST --to canonical`: a checkpoint or native savepoint rewritten as a
//! canonical savepoint, offline. Each task's keyed state is restored into a backend of exactly its key
//! groups (heap for canonical files, LSM for native RocksDB files; keys stay bytes, states stay
//! unregistered) and written out as a canonical savepoint; operator state is copied as it is.

use std::process::ExitCode;

use bytes::Bytes;
use object_store::{PutMode, PutOptions, PutPayload};
use statebackend::ids::RandomIds;
use statebackend::key_group::key_group_range_for_operator;
use statebackend::snapshot::{HandleFormat, SnapshotKind};
use statebackend::{
    BackendKind, CheckpointMetadata, CheckpointStorage, IdSource, KeyedStateBackend, RestoreMode,
    SavepointFormat, StateBackend, StateBackendConfig, StorageConfig, SubtaskIdentity,
    TaskStateSnapshot, rocksdb::RocksDbConfig,
};

use crate::job::{kind_name, open_snapshot};

pub(crate) async fn convert(src: &str, dst: &str) -> Result<ExitCode, String> {
    let (at, meta) = open_snapshot(src).await?;
    // The job's id is the directory above `chk-<n>` or `savepoints/`.
    let job = at
        .storage
        .path("")
        .as_ref()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("job")
        .to_string();
    let target = CheckpointStorage::from_url(dst, &job, &StorageConfig::default())
        .map_err(|e| e.to_string())?;
    // This conversion's identity in its reservation: no other writer produces it.
    let run = format!("{:016x}", RandomIds.next_id());
    let id = reserve_id(&target, meta.checkpoint_id, src, &run).await?;
    let written = write(&at, &meta, &target, id).await;
    if written.is_err() {
        // The id is reserved for this conversion: what it wrote there is its own.
        let _ =
            statebackend::checkpoint::delete_own_savepoint_dir(&target, id, &owner(src, id, &run))
                .await;
    }
    written?;
    out!(
        "{} {} of {src} converted to the canonical savepoint {}/{job}/savepoints/sp-{id}",
        kind_name(meta.kind),
        meta.checkpoint_id,
        dst.trim_end_matches('/')
    );
    Ok(ExitCode::SUCCESS)
}

/// The reservation line of conversion `run` of `src` into savepoint `id`.
fn owner(src: &str, id: u64, run: &str) -> String {
    format!("savepoint {id} reserved by statectl savepoint convert {run} of {src}\n")
}

/// Reserves the first savepoint id above `restored` (a restored backend takes only later snapshot ids)
/// and above every savepoint directory in `target`, as a coordinator reserves one
/// (`savepoints/sp-<id>/_trigger`): another job's savepoint of that id in the target is never touched.
async fn reserve_id(
    target: &CheckpointStorage,
    restored: u64,
    src: &str,
    run: &str,
) -> Result<u64, String> {
    let highest = target
        .list_savepoint_dirs()
        .await
        .map_err(|e| e.to_string())?
        .last()
        .copied()
        .unwrap_or(0);
    let first = restored.max(highest) + 1;
    for id in first..first + 64 {
        if statebackend::checkpoint::reserve_savepoint_id(target, id, &owner(src, id, run))
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(id);
        }
    }
    Err("64 savepoint ids in a row are taken in the target".into())
}

/// Restores every task of `meta` and writes it into `target` as canonical savepoint `id`.
async fn write(
    at: &statebackend::inspect::SnapshotLocation,
    meta: &CheckpointMetadata,
    target: &CheckpointStorage,
    id: u64,
) -> Result<(), String> {
    let local = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let mut tasks = Vec::with_capacity(meta.tasks.len());
    for task in &meta.tasks {
        let mut converted = TaskStateSnapshot {
            operator_id: task.operator_id.clone(),
            subtask_index: task.subtask_index,
            keyed_state: None,
            operator_state: task.operator_state.clone(),
        };
        if let Some(handle) = &task.keyed_state {
            let parallelism = meta
                .tasks
                .iter()
                .filter(|t| t.operator_id == task.operator_id && t.keyed_state.is_some())
                .count() as u32;
            let expected = key_group_range_for_operator(
                handle.max_parallelism,
                parallelism,
                task.subtask_index,
            )
            .map_err(|e| e.to_string())?;
            if expected != handle.key_groups {
                return Err(format!(
                    "task {} {} holds key groups {}, not those of subtask {} of {parallelism} ({expected})",
                    task.operator_id, task.subtask_index, handle.key_groups, task.subtask_index
                ));
            }
            let kind = match handle.format {
                HandleFormat::KeyedFile | HandleFormat::KeyedChain => BackendKind::Heap,
                _ => BackendKind::RocksDb,
            };
            let identity = SubtaskIdentity::new(
                task.operator_id.clone(),
                handle.max_parallelism,
                parallelism,
                task.subtask_index,
            )
            .map_err(|e| e.to_string())?;
            let config = StateBackendConfig {
                kind,
                rocksdb: RocksDbConfig {
                    local_dir: local.path().to_path_buf(),
                    ..RocksDbConfig::default()
                },
                ..StateBackendConfig::default()
            };
            let mut backend = StateBackend::<Vec<u8>>::restore(
                &identity,
                &config,
                &at.storage,
                std::slice::from_ref(handle),
                RestoreMode::NoClaim,
            )
            .await
            .map_err(|e| {
                format!(
                    "restoring task {} {}: {e}",
                    task.operator_id, task.subtask_index
                )
            })?;
            let written = backend
                .savepoint(id, target, SavepointFormat::Canonical)
                .map_err(|e| e.to_string())?
                .run()
                .await
                .map_err(|e| e.to_string())?;
            converted.keyed_state = Some(written.handle);
        }
        tasks.push(converted);
    }
    let out = CheckpointMetadata {
        checkpoint_id: id,
        timestamp_ms: meta.timestamp_ms,
        kind: SnapshotKind::Savepoint,
        generation: meta.generation,
        tasks,
    };
    let bytes = statebackend::format::encode_metadata(&out).map_err(|e| e.to_string())?;
    let path = target.path(&format!("savepoints/sp-{id}/_metadata"));
    target
        .object_store()
        .put_opts(
            &path,
            PutPayload::from(Bytes::from(bytes)),
            PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            },
        )
        .await
        .map_err(|e| format!("writing {path} (is there a savepoint {id} already?): {e}"))?;
    Ok(())
}

//! `statectl savepoint convert SRC DST --to canonical`: a checkpoint or native savepoint rewritten as a
//! canonical savepoint, offline. Each task's keyed state is restored into a backend of exactly its key
//! groups (heap for canonical files, LSM for native RocksDB files; keys stay bytes, states stay
//! unregistered) and written out as a canonical savepoint; operator state is copied as it is.

use std::process::ExitCode;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use statebackend::{
    BackendKind, CheckpointMetadata, CheckpointStorage, HandleFormat, KeyedStateBackend,
    RestoreMode, SavepointFormat, SnapshotKind, StateBackend, StateBackendConfig, StorageSettings,
    TaskStateSnapshot, key_group_range_for_operator,
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
    let target = CheckpointStorage::from_url(dst, &job, &StorageSettings::default())
        .map_err(|e| e.to_string())?;
    // A restored backend takes only later snapshot ids: the converted savepoint is the next id.
    let id = meta.checkpoint_id + 1;
    let metadata = target.path(&format!("savepoints/sp-{id}/_metadata"));
    if target.object_store().head(&metadata).await.is_ok() {
        return Err(format!(
            "{dst} already holds savepoint {id} of job {job}: nothing was written"
        ));
    }
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
                HandleFormat::KeyedFile => BackendKind::Heap,
                _ => BackendKind::Lsm,
            };
            let config = StateBackendConfig {
                kind,
                operator_id: task.operator_id.clone(),
                max_parallelism: handle.max_parallelism,
                parallelism,
                subtask_index: task.subtask_index,
                local_dir: local.path().to_path_buf(),
                ..StateBackendConfig::default()
            };
            let mut backend = StateBackend::<Vec<u8>>::restore(
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
                .savepoint(id, &target, SavepointFormat::Canonical)
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
        tasks,
    };
    let bytes = out.to_bytes().map_err(|e| e.to_string())?;
    let path = metadata;
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
    out!(
        "{} {} of {src} converted to the canonical savepoint {}/{job}/savepoints/sp-{id}",
        kind_name(meta.kind),
        meta.checkpoint_id,
        dst.trim_end_matches('/')
    );
    Ok(ExitCode::SUCCESS)
}

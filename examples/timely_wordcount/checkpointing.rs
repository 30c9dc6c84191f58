//! What the job adds to timely for checkpoints: the coordinator at worker 0 and the acknowledgements that
//! travel to it as timely records (a one-task `_metadata` encoding, `docs/formats.md`).

use std::time::Duration;

use statebackend::operator::OperatorStateBackend;
use statebackend::snapshot::{SnapshotKind, SnapshotMetrics};
use statebackend::*;

use crate::args::Args;

/// The source operator: its operator state is the offset of each split (`split-<j>`, u64 LE).
pub(crate) const SOURCE: &str = "source";
/// The counting operator: keyed state.
pub(crate) const COUNT: &str = "count";

/// An acknowledgement on its way to the coordinator: checkpoint id, the task's snapshot (encoded), and
/// its metrics (sync and async phase in µs, bytes uploaded, bytes referenced, files uploaded, reused).
pub(crate) type AckRecord = (u64, Vec<u8>, [u64; 6]);

/// The metrics of a snapshot as an [`AckRecord`] carries them.
pub(crate) fn metrics_fields(m: &SnapshotMetrics) -> [u64; 6] {
    [
        m.sync_duration.as_micros() as u64,
        m.async_duration.as_micros() as u64,
        m.checkpointed_bytes,
        m.full_bytes,
        u64::from(m.files_uploaded),
        u64::from(m.files_reused),
    ]
}

fn metrics_of(f: &[u64; 6]) -> SnapshotMetrics {
    SnapshotMetrics {
        sync_duration: Duration::from_micros(f[0]),
        async_duration: Duration::from_micros(f[1]),
        checkpointed_bytes: f[2],
        full_bytes: f[3],
        files_uploaded: f[4] as u32,
        files_reused: f[5] as u32,
        ..SnapshotMetrics::default()
    }
}

/// Encodes a task's acknowledgement as a record.
pub(crate) fn encode_ack(
    checkpoint_id: u64,
    task: TaskStateSnapshot,
    metrics: Option<&SnapshotMetrics>,
) -> AckRecord {
    let meta = CheckpointMetadata {
        checkpoint_id,
        timestamp_ms: 0,
        kind: SnapshotKind::Checkpoint,
        generation: 0,
        tasks: vec![task],
    };
    (
        checkpoint_id,
        statebackend::format::encode_metadata(&meta).expect("a task snapshot fits the format"),
        metrics.map_or([u64::MAX; 6], metrics_fields),
    )
}

/// The name of the source's list state: one `(split, next position)` element per split it reads.
const SPLITS: &str = "splits";

/// The source's acknowledgement: its splits and their offsets at the end of the epoch, as operator list
/// state (split among the workers when the job restores at another number of workers).
pub(crate) fn source_ack(checkpoint_id: u64, worker: u32, splits: &[(u32, u64)]) -> AckRecord {
    let mut state = OperatorStateBackend::new();
    let list = state
        .list_state::<(u32, u64)>(SPLITS)
        .expect("a new backend has no conflicting state");
    list.update(&mut state, splits)
        .expect("the state was just registered");
    encode_ack(
        checkpoint_id,
        TaskStateSnapshot {
            operator_id: SOURCE.into(),
            subtask_index: worker,
            keyed_state: None,
            operator_state: state.snapshot(),
        },
        None,
    )
}

/// The splits worker `worker` of `workers` reads after restoring `meta`, with their offsets: its share of
/// the source's list state (Flink's redistribution of operator list state).
pub(crate) fn restored_splits(
    meta: &CheckpointMetadata,
    worker: u32,
    workers: u32,
) -> Result<Vec<(u32, u64)>> {
    let mut state = OperatorStateBackend::restore(SOURCE, worker, workers, &meta.tasks)?;
    state.list_state::<(u32, u64)>(SPLITS)?.get(&state)
}

/// The job's checkpoint storage.
pub(crate) fn storage(args: &Args) -> Result<CheckpointStorage> {
    CheckpointStorage::from_url(
        &args.checkpoint_dir,
        &args.job_id,
        &StorageConfig::default(),
    )
}

/// Opens the coordinator (worker 0): one source and one count task per worker.
pub(crate) async fn open_coordinator(
    storage: &CheckpointStorage,
    peers: u32,
) -> Result<CheckpointCoordinator> {
    CheckpointCoordinator::open(
        storage.clone(),
        CoordinatorConfig {
            operators: vec![
                OperatorTasks::without_keyed_state(SOURCE, peers),
                OperatorTasks::keyed(COUNT, peers),
            ],
            retained_checkpoints: 2,
            checkpoint_timeout: Duration::from_secs(60),
            ..CoordinatorConfig::default()
        },
    )
    .await
}

/// Hands an acknowledgement record to the coordinator.
pub(crate) async fn acknowledge(coordinator: &mut CheckpointCoordinator, record: &AckRecord) {
    let (id, bytes, fields) = record;
    let metrics = (fields[0] != u64::MAX).then(|| metrics_of(fields));
    let task = match statebackend::format::decode_metadata(bytes, "<ack record>") {
        Ok(mut meta) if meta.tasks.len() == 1 => meta.tasks.remove(0),
        Ok(_) | Err(_) => {
            eprintln!("checkpoint {id}: an acknowledgement that does not decode, ignored");
            return;
        }
    };
    match coordinator.acknowledge(*id, task, metrics).await {
        Ok(Acknowledgement::Completed(stats)) => {
            eprintln!(
                "checkpoint {id} completed: {} bytes uploaded, {} bytes in all, sync phase max {} µs",
                stats.checkpointed_bytes,
                stats.full_bytes,
                stats.sync_duration.as_micros()
            );
        }
        Ok(Acknowledgement::Declined(why)) => eprintln!("checkpoint {id} declined: {why:?}"),
        Ok(Acknowledgement::Discarded(why)) => {
            eprintln!("checkpoint {id}: acknowledgement discarded: {why:?}")
        }
        Ok(_) => {}
        Err(e) => eprintln!("checkpoint {id}: acknowledgement refused: {e}"),
    }
}

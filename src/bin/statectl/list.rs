//! `statectl list` and `statectl history`.

use std::process::ExitCode;

use serde_json::json;
use statebackend::checkpoint::StatsFile;
use statebackend::snapshot::SnapshotKind;
use statebackend::snapshot::StateSizes;
use statebackend::{CheckpointMetadata, CheckpointStorage, snapshot::layout::STATS_FILE};

use crate::job::{Found, bytes, kind_name, open_job, snapshots, time};

/// Full size (every file referenced), checkpointed size (files it uploaded itself) and file count.
fn sizes(meta: &CheckpointMetadata) -> (u64, u64, usize) {
    let full = meta.files().map(|f| f.size_bytes).sum();
    let own = meta
        .files()
        .filter(|f| f.created_by == meta.checkpoint_id)
        .map(|f| f.size_bytes)
        .sum();
    (full, own, meta.files().count())
}

pub(crate) async fn list(url: &str, as_json: bool) -> Result<ExitCode, String> {
    let storage = open_job(url)?;
    let all = snapshots(&storage).await?;
    // A savepoint's id is reserved as `chk-<n>/_trigger`: that directory is not a checkpoint.
    let savepoint_ids: std::collections::HashSet<u64> = all
        .iter()
        .filter(|s| s.kind == SnapshotKind::Savepoint)
        .map(|s| s.id)
        .collect();
    let all: Vec<_> = all
        .into_iter()
        .filter(|s| {
            !(s.kind == SnapshotKind::Checkpoint
                && matches!(s.state, Found::NoMetadata)
                && savepoint_ids.contains(&s.id))
        })
        .collect();
    if as_json {
        let rows: Vec<_> = all
            .iter()
            .map(|s| match &s.state {
                Found::Complete(meta) => {
                    let (full, own, files) = sizes(meta);
                    json!({"kind": kind_name(s.kind), "id": s.id, "status": "complete",
                        "time": time(meta.timestamp_ms), "timestamp_ms": meta.timestamp_ms,
                        "full_bytes": full, "checkpointed_bytes": own, "files": files,
                        "tasks": meta.tasks.len()})
                }
                Found::NoMetadata => json!({"kind": kind_name(s.kind), "id": s.id,
                    "status": "no metadata"}),
                Found::Unreadable(why) => json!({"kind": kind_name(s.kind), "id": s.id,
                    "status": "unreadable", "reason": why}),
            })
            .collect();
        out!("{}", serde_json::Value::Array(rows));
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:<10} {:>6}  {:<20} {:>12} {:>14} {:>6}  status",
        "kind",
        "id",
        "time (UTC)",
        "full",
        "checkpointed",
        "files"
    );
    for s in &all {
        match &s.state {
            Found::Complete(meta) => {
                let (full, own, files) = sizes(meta);
                out!(
                    "{:<10} {:>6}  {:<20} {:>12} {:>14} {:>6}  complete",
                    kind_name(s.kind),
                    s.id,
                    time(meta.timestamp_ms),
                    bytes(full),
                    bytes(own),
                    files
                );
            }
            Found::NoMetadata => out!(
                "{:<10} {:>6}  {:<20} {:>12} {:>14} {:>6}  no metadata (in progress, aborted, or an id reservation)",
                kind_name(s.kind),
                s.id,
                "-",
                "-",
                "-",
                "-"
            ),
            Found::Unreadable(why) => out!(
                "{:<10} {:>6}  {:<20} {:>12} {:>14} {:>6}  UNREADABLE: {why}",
                kind_name(s.kind),
                s.id,
                "-",
                "-",
                "-",
                "-"
            ),
        }
    }
    if all.is_empty() {
        out!("(no checkpoints or savepoints under {url})");
    }
    Ok(ExitCode::SUCCESS)
}

/// Width of the bar column, in characters.
const BAR: usize = 30;

pub(crate) async fn history(url: &str, as_json: bool) -> Result<ExitCode, String> {
    let storage = open_job(url)?;
    let metas: Vec<CheckpointMetadata> = snapshots(&storage)
        .await?
        .into_iter()
        .filter(|s| s.kind == SnapshotKind::Checkpoint)
        .filter_map(|s| match s.state {
            Found::Complete(meta) => Some(*meta),
            _ => None,
        })
        .collect();
    let largest = metas.iter().map(|m| sizes(m).0).max().unwrap_or(0).max(1);
    let mut rows = Vec::new();
    let mut previous: Option<u64> = None;
    for meta in &metas {
        let (full, uploaded, files) = sizes(meta);
        let uploaded_files = meta
            .files()
            .filter(|f| f.created_by == meta.checkpoint_id)
            .count();
        let since_ms = previous.map(|p| meta.timestamp_ms.saturating_sub(p));
        previous = Some(meta.timestamp_ms);
        let stats = stats_file(&storage, meta.checkpoint_id).await;
        rows.push((meta, full, uploaded, files, uploaded_files, since_ms, stats));
    }
    if as_json {
        let out: Vec<_> = rows
            .iter()
            .map(
                |(meta, full, uploaded, files, uploaded_files, since_ms, stats)| {
                    let phases = stats.as_ref().map(phases_ms);
                    json!({"id": meta.checkpoint_id, "time": time(meta.timestamp_ms),
                    "sync_ms": phases.map(|p| p.0), "async_ms": phases.map(|p| p.1),
                    "states": stats.as_ref().map(|s| states_json(&s.sizes)),
                    "largest_key_groups": stats.as_ref().map(|s| key_groups_json(&s.sizes)),
                    "timestamp_ms": meta.timestamp_ms, "since_previous_ms": since_ms,
                    "full_bytes": full, "uploaded_bytes": uploaded,
                    "reused_bytes": full - uploaded, "files": files,
                    "uploaded_files": uploaded_files, "reused_files": files - uploaded_files})
                },
            )
            .collect();
        out!("{}", serde_json::Value::Array(out));
        return Ok(ExitCode::SUCCESS);
    }
    out!(
        "{:>6}  {:<20} {:>9} {:>9} {:>10} {:>11} {:>11} {:>9}  {:<BAR$}  largest state",
        "id",
        "time (UTC)",
        "since",
        "sync ms",
        "async ms",
        "uploaded",
        "reused",
        "files",
        format!("# uploaded, . reused (of {})", bytes(largest))
    );
    for (meta, full, uploaded, files, uploaded_files, since_ms, stats) in &rows {
        let phases = stats.as_ref().map(phases_ms);
        let width = |n: u64| ((n as f64 / largest as f64) * BAR as f64).round() as usize;
        let up = width(*uploaded).max(usize::from(*uploaded > 0));
        let total = width(*full).max(up);
        out!(
            "{:>6}  {:<20} {:>9} {:>9} {:>10} {:>11} {:>11} {:>4}/{:<4}  {:<BAR$}  {}",
            meta.checkpoint_id,
            time(meta.timestamp_ms),
            since_ms.map_or("-".to_string(), |ms| format!("{:.1} s", ms as f64 / 1e3)),
            phases.map_or("-".to_string(), |p| format!("{:.3}", p.0)),
            phases.map_or("-".to_string(), |p| format!("{:.1}", p.1)),
            bytes(*uploaded),
            bytes(full - uploaded),
            uploaded_files,
            files,
            format!("{}{}", "#".repeat(up), ".".repeat(total - up)),
            stats
                .as_ref()
                .and_then(|s| largest_state(&s.sizes))
                .unwrap_or_else(|| "-".to_string())
        );
    }
    if rows.is_empty() {
        out!("(no completed checkpoints under {url})");
    }
    Ok(ExitCode::SUCCESS)
}

/// Checkpoint `id`'s `_stats` file, if it has a readable one (phases of the longest subtask, state sizes
/// summed over the subtasks, as the coordinator recorded them).
pub(crate) async fn stats_file(storage: &CheckpointStorage, id: u64) -> Option<StatsFile> {
    use object_store::ObjectStoreExt;
    let path = storage.path(&format!("chk-{id}/{STATS_FILE}"));
    let bytes = storage
        .object_store()
        .get(&path)
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    StatsFile::parse(&bytes, id)
}

/// `(sync ms, async ms)` of a `_stats` file.
fn phases_ms(stats: &StatsFile) -> (f64, f64) {
    (
        stats.sync_duration.as_secs_f64() * 1e3,
        stats.async_duration.as_secs_f64() * 1e3,
    )
}

/// The largest state by bytes, as `name bytes` (`~` before an estimate).
fn largest_state(sizes: &StateSizes) -> Option<String> {
    let s = sizes.states.iter().max_by_key(|s| s.bytes)?;
    let approx = if s.exact { "" } else { "~" };
    Some(format!("{} {approx}{}", s.name, bytes(s.bytes)))
}

/// Each state's figures, as JSON.
pub(crate) fn states_json(sizes: &StateSizes) -> serde_json::Value {
    sizes
        .states
        .iter()
        .map(|s| json!({"name": s.name, "entries": s.entries, "bytes": s.bytes, "exact": s.exact}))
        .collect()
}

/// The key groups' figures (a `_stats` file keeps the largest), as JSON.
pub(crate) fn key_groups_json(sizes: &StateSizes) -> serde_json::Value {
    sizes
        .key_groups
        .iter()
        .map(|g| json!({"key_group": g.key_group, "bytes": g.bytes, "exact": g.exact}))
        .collect()
}

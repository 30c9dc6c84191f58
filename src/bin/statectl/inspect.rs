//! `statectl inspect`: what one checkpoint or savepoint holds.

use std::process::ExitCode;

use serde_json::json;
use statebackend::snapshot::{FileScope, HandleFormat, SnapshotKind, StateKind, StateMeta};

use crate::job::{bytes, kind_name, open_snapshot, time};
use crate::list::{key_groups_json, states_json, stats_file};

fn scope(s: FileScope) -> &'static str {
    match s {
        FileScope::Private => "private",
        FileScope::Shared => "shared",
    }
}

fn format_name(f: HandleFormat) -> &'static str {
    match f {
        HandleFormat::KeyedFile => "canonical keyed file",
        HandleFormat::RocksIncremental => "LSM native (RocksDB files)",
        HandleFormat::RocksIncrementalRowsV1 => "LSM native, row format 1 (not restorable)",
        HandleFormat::KeyedChain => "heap incremental chain (full keyed file, then deltas)",
        _ => "unknown",
    }
}

/// Whether a handle of format `f` holds keyed files, which name their states (a chain's newest file
/// names the chain's).
fn keyed(f: HandleFormat) -> bool {
    matches!(f, HandleFormat::KeyedFile | HandleFormat::KeyedChain)
}

fn state_kind(k: StateKind) -> &'static str {
    match k {
        StateKind::Value => "value",
        StateKind::List => "list",
        StateKind::Map => "map",
        StateKind::Reducing => "reducing",
        StateKind::Aggregating => "aggregating",
        StateKind::Timers => "timers",
    }
}

fn state_json((s, entries): &(StateMeta, Option<u64>)) -> serde_json::Value {
    json!({"name": s.name, "kind": state_kind(s.kind), "key_codec": s.key_codec,
        "namespace_codec": s.namespace_codec, "value_codec": s.value_codec,
        "user_key_codec": s.user_key_codec, "entries": entries})
}

pub(crate) async fn inspect(dir: &str, entries: bool, as_json: bool) -> Result<ExitCode, String> {
    let (at, meta) = open_snapshot(dir).await?;
    let mut tasks = Vec::new();
    for task in &meta.tasks {
        let states: Option<Vec<(StateMeta, Option<u64>)>> = match &task.keyed_state {
            Some(h) if keyed(h.format) && entries => {
                let (states, counts) =
                    statebackend::inspect::keyed_file_entry_counts(&at.storage, h)
                        .await
                        .map_err(|e| e.to_string())?;
                Some(
                    states
                        .into_iter()
                        .zip(counts.into_iter().map(Some))
                        .collect(),
                )
            }
            Some(h) if keyed(h.format) => Some(
                statebackend::inspect::keyed_file_states(&at.storage, h)
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|s| (s, None))
                    .collect(),
            ),
            _ => None,
        };
        tasks.push((task, states));
    }
    // A checkpoint's figures as the coordinator recorded them (a savepoint has no `_stats` file).
    let stats = match at.kind {
        SnapshotKind::Checkpoint => stats_file(&at.storage, at.id).await,
        SnapshotKind::Savepoint => None,
    };
    if as_json {
        let out: Vec<_> = tasks
            .iter()
            .map(|(task, states)| {
                let keyed = task.keyed_state.as_ref().map(|h| {
                    json!({"backend_id": h.backend_id, "format": format_name(h.format),
                        "max_parallelism": h.max_parallelism,
                        "key_groups": h.key_groups.to_string(),
                        "full_bytes": h.full_size_bytes(),
                        "checkpointed_bytes": h.checkpointed_size_bytes(),
                        "states": states.as_ref().map(|s| s.iter().map(state_json).collect::<Vec<_>>()),
                        "files": h.files.iter().map(|f| json!({"path": f.path,
                            "scope": scope(f.scope), "size_bytes": f.size_bytes,
                            "crc32": format!("{:08x}", f.crc32), "created_by": f.created_by,
                            "local_name": f.local_name})).collect::<Vec<_>>()})
                });
                json!({"operator": task.operator_id, "subtask": task.subtask_index,
                    "keyed_state": keyed,
                    "operator_state": task.operator_state.iter()
                        .map(|(k, v)| json!({"name": k, "bytes": v.len()})).collect::<Vec<_>>()})
            })
            .collect();
        out!(
            "{}",
            json!({"kind": kind_name(meta.kind), "id": meta.checkpoint_id,
                "time": time(meta.timestamp_ms), "timestamp_ms": meta.timestamp_ms, "tasks": out,
                "states": stats.as_ref().map(|s| states_json(&s.sizes)),
                "largest_key_groups": stats.as_ref().map(|s| key_groups_json(&s.sizes))})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let full: u64 = meta.files().map(|f| f.size_bytes).sum();
    out!(
        "{} {} of {} ({} tasks, {} in {} files)",
        kind_name(meta.kind),
        meta.checkpoint_id,
        time(meta.timestamp_ms),
        meta.tasks.len(),
        bytes(full),
        meta.files().count()
    );
    if let Some(sizes) = stats.as_ref().map(|s| &s.sizes).filter(|s| !s.is_empty()) {
        out!("state sizes, summed over the subtasks (~: RocksDB's estimate):");
        for s in &sizes.states {
            let approx = if s.exact { "" } else { "~" };
            out!(
                "  state {:<24} {approx}{} entries, {approx}{}",
                s.name,
                s.entries,
                bytes(s.bytes)
            );
        }
        let groups: Vec<String> = sizes
            .key_groups
            .iter()
            .map(|g| {
                let approx = if g.exact { "" } else { "~" };
                format!("{} {approx}{}", g.key_group, bytes(g.bytes))
            })
            .collect();
        if !groups.is_empty() {
            out!("  largest key groups: {}", groups.join(", "));
        }
    }
    for (task, states) in &tasks {
        out!("\ntask {} subtask {}", task.operator_id, task.subtask_index);
        if let Some(h) = &task.keyed_state {
            out!(
                "  keyed state: key groups {} of max parallelism {}, {}, backend {}",
                h.key_groups,
                h.max_parallelism,
                format_name(h.format),
                h.backend_id
            );
            out!(
                "  size: {} referenced, {} uploaded by this snapshot",
                bytes(h.full_size_bytes()),
                bytes(h.checkpointed_size_bytes())
            );
            match states {
                Some(states) => {
                    for (s, count) in states {
                        out!(
                            "  state {:<24} {:<11} key {} namespace {} value {}{}{}",
                            s.name,
                            state_kind(s.kind),
                            s.key_codec,
                            s.namespace_codec,
                            s.value_codec,
                            if s.user_key_codec.is_empty() {
                                String::new()
                            } else {
                                format!(" user key {}", s.user_key_codec)
                            },
                            count.map_or(String::new(), |n| format!(", {n} entries"))
                        );
                    }
                }
                None => out!(
                    "  states: inside the RocksDB files (a canonical savepoint lists them here)"
                ),
            }
            for f in &h.files {
                let reused = if f.created_by == h.checkpoint_id {
                    String::new()
                } else {
                    format!(", reused from {}", f.created_by)
                };
                out!(
                    "  file {:<7} {:>10}  crc32 {:08x}  {}{}",
                    scope(f.scope),
                    bytes(f.size_bytes),
                    f.crc32,
                    f.path,
                    reused
                );
            }
        }
        for (name, value) in &task.operator_state {
            out!("  operator state {name}: {} bytes", value.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

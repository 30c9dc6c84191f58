//! `statectl du` (what the job's storage holds, and what each checkpoint alone holds) and `statectl gc`
//! (the orphan sweep).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::Duration;

use futures::TryStreamExt;
use serde_json::json;
use statebackend::snapshot::SnapshotKind;
use statebackend::{
    CheckpointMetadata, ErrorKind, SystemClock, snapshot::layout::METADATA_FILE,
    snapshot::layout::PINNED_MARKER, snapshot::layout::SHARED_DIR, snapshot::layout::STATS_FILE,
    snapshot::layout::TRIGGER_MARKER,
};

use crate::job::{Found, bytes, kind_name, open_job, snapshots, spinner};

/// Which part of the layout a file (path relative to the job root) belongs to.
fn category(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    if path.starts_with(&format!("{SHARED_DIR}/")) {
        "shared"
    } else if ["_coordinators/", "_lineage/", "_probe/", "_clock"]
        .iter()
        .any(|p| path.starts_with(p))
        || [METADATA_FILE, TRIGGER_MARKER, PINNED_MARKER, STATS_FILE].contains(&name)
    {
        "metadata"
    } else {
        "private"
    }
}

/// The directory of a snapshot a path lies in: `chk-<n>/` or `savepoints/sp-<n>/`.
fn snapshot_dir(path: &str) -> Option<&str> {
    if let Some(rest) = path.strip_prefix("savepoints/") {
        let end = rest.find('/')?;
        return Some(&path[.."savepoints/".len() + end]);
    }
    path.starts_with("chk-").then(|| path.split('/').next())?
}

pub(crate) async fn du(url: &str, as_json: bool) -> Result<ExitCode, String> {
    let storage = open_job(url)?;
    let root = storage.path("");
    let prefix = format!("{}/", root.as_ref().trim_end_matches('/'));
    let progress = spinner("listing files:", true, as_json);
    let listed: Vec<(String, u64)> = storage
        .object_store()
        .list(Some(&root))
        .map_ok(|m| {
            progress.inc(1);
            (m.location.to_string(), m.size)
        })
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| format!("listing {url}: {e}"))?
        .into_iter()
        .filter_map(|(p, size)| Some((p.strip_prefix(&prefix)?.to_string(), size)))
        .collect();
    let mut by_category: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for (path, size) in &listed {
        let e = by_category.entry(category(path)).or_default();
        e.0 += size;
        e.1 += 1;
    }
    progress.set_message("files listed; reading metadata:");
    let complete: Vec<(SnapshotKind, CheckpointMetadata)> = snapshots(&storage)
        .await?
        .into_iter()
        .filter_map(|s| match s.state {
            Found::Complete(meta) => Some((s.kind, *meta)),
            _ => None,
        })
        .collect();
    // How many complete snapshots reference each file.
    let mut users: HashMap<&str, usize> = HashMap::new();
    for (_, meta) in &complete {
        for f in meta.files() {
            *users.entry(f.path.as_str()).or_default() += 1;
        }
    }
    progress.finish_and_clear();
    let sizes: HashMap<&str, u64> = listed.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    let mut alone = Vec::new();
    for (kind, meta) in &complete {
        let dir = match kind {
            SnapshotKind::Checkpoint => format!("chk-{}", meta.checkpoint_id),
            SnapshotKind::Savepoint => format!("savepoints/sp-{}", meta.checkpoint_id),
        };
        // Its directory (private files, metadata, markers) and the shared files nobody else uses.
        let own_dir: u64 = listed
            .iter()
            .filter(|(p, _)| snapshot_dir(p) == Some(dir.as_str()))
            .map(|(_, s)| s)
            .sum();
        let shared_alone: u64 = meta
            .files()
            .filter(|f| {
                !f.path.starts_with(&format!("{dir}/")) && users.get(f.path.as_str()) == Some(&1)
            })
            .map(|f| sizes.get(f.path.as_str()).copied().unwrap_or(0))
            .sum();
        alone.push((*kind, meta.checkpoint_id, own_dir + shared_alone));
    }
    let total: u64 = listed.iter().map(|(_, s)| s).sum();
    // Invisible to LIST and billed until aborted (where the store can list them: S3).
    let uploads = storage
        .incomplete_uploads()
        .await
        .map_err(|e| format!("listing incomplete multipart uploads of {url}: {e}"))?
        .map(|u| u.len());
    if as_json {
        out!(
            "{}",
            json!({"total_bytes": total, "files": listed.len(), "incomplete_multipart_uploads": uploads,
                "by_category": by_category.iter().map(|(k, (b, n))| (k.to_string(), json!({"bytes": b, "files": n}))).collect::<serde_json::Map<_, _>>(),
                "alone": alone.iter().map(|(k, id, b)| json!({"kind": kind_name(*k), "id": id, "bytes_freed_by_deleting": b})).collect::<Vec<_>>()})
        );
        return Ok(ExitCode::SUCCESS);
    }
    out!("{url}: {} in {} files", bytes(total), listed.len());
    match uploads {
        Some(n) => out!("  incomplete multipart uploads: {n}"),
        None => out!("  incomplete multipart uploads: not listed by this store"),
    }
    for (cat, (b, n)) in &by_category {
        out!("  {cat:<9} {:>12} in {n} files", bytes(*b));
    }
    out!("what deleting each snapshot alone would free:");
    for (kind, id, b) in &alone {
        out!("  {:<10} {id:>6} {:>12}", kind_name(*kind), bytes(*b));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn gc(
    url: &str,
    dry_run: bool,
    force: bool,
    min_age: Duration,
    as_json: bool,
) -> Result<ExitCode, String> {
    let storage = open_job(url)?;
    let progress = spinner("reading checkpoints and sweeping", false, as_json);
    let report = if dry_run {
        // Read-only: no generation, no clock probe, no delete (safe on a running job).
        statebackend::checkpoint::plan_orphan_sweep(&storage, min_age, std::time::SystemTime::now())
            .await
            .map_err(|e| e.to_string())?
    } else {
        let swept = statebackend::checkpoint::collect_garbage(
            &storage,
            min_age,
            force,
            std::sync::Arc::new(SystemClock),
        )
        .await;
        if swept.is_err() {
            progress.finish_and_clear();
        }
        swept.map_err(|e| match e.kind() {
            ErrorKind::IllegalState => format!("{e} (pass --force; `--dry-run` is always safe)"),
            _ => e.to_string(),
        })?
    };
    progress.finish_and_clear();
    if as_json {
        out!(
            "{}",
            json!({"dry_run": dry_run, "listed": report.listed, "referenced": report.referenced,
                "kept_young_or_watermark": report.too_young,
                "deleted": report.deleted, "blocked_by_unreadable": report.blocked_by_unreadable,
                "fenced": report.fenced, "uploads_aborted": report.uploads_aborted,
                "ages_on_store_clock": report.store_clock})
        );
    } else {
        let verb = if dry_run { "would delete" } else { "deleted" };
        for path in &report.deleted {
            out!("{verb} {path}");
        }
        out!(
            "{} files listed, {} in use, {} kept (younger than {}, or the id watermark), {} {verb}",
            report.listed,
            report.referenced,
            report.too_young,
            humantime::format_duration(min_age),
            report.deleted.len()
        );
    }
    if !report.blocked_by_unreadable.is_empty() {
        return Err(format!(
            "refusing to delete anything: the metadata of checkpoint(s) {:?} is unreadable (they may use any file)",
            report.blocked_by_unreadable
        ));
    }
    if report.fenced {
        return Err("a newer coordinator of this job registered meanwhile: deleted nothing".into());
    }
    Ok(ExitCode::SUCCESS)
}

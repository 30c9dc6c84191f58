//! Opening a job's checkpoint root and finding its checkpoints and savepoints.

use statebackend::inspect::SnapshotLocation;
use statebackend::snapshot::SnapshotKind;
use statebackend::{CheckpointMetadata, CheckpointStorage, ErrorKind, StorageConfig};

/// The storage of the job whose checkpoint root is `url` (`<root>/<job id>`, a path or URL).
pub(crate) fn open_job(url: &str) -> Result<CheckpointStorage, String> {
    let trimmed = url.trim_end_matches('/');
    let (root, job) = match trimmed.rsplit_once('/') {
        Some((root, job)) if !job.is_empty() && !root.ends_with(':') && !root.ends_with(":/") => {
            (if root.is_empty() { "/" } else { root }, job)
        }
        None if !trimmed.is_empty() => (".", trimmed),
        _ => {
            return Err(format!(
                "`{url}` is not a job's checkpoint root (<checkpoint dir>/<job id>)"
            ));
        }
    };
    CheckpointStorage::from_url(root, job, &StorageConfig::default()).map_err(|e| e.to_string())
}

/// One checkpoint's or savepoint's directory and what its metadata says.
pub(crate) struct Snapshot {
    pub(crate) kind: SnapshotKind,
    pub(crate) id: u64,
    pub(crate) state: Found,
}

/// What a snapshot directory holds.
pub(crate) enum Found {
    Complete(Box<CheckpointMetadata>),
    /// No `_metadata`: in progress, aborted, or only an id reservation.
    NoMetadata,
    /// `_metadata` that does not decode (corrupt, or of a newer release): why.
    Unreadable(String),
}

/// Every `chk-<n>` and `savepoints/sp-<n>` directory of the job, checkpoints first, by id.
pub(crate) async fn snapshots(storage: &CheckpointStorage) -> Result<Vec<Snapshot>, String> {
    let mut out = Vec::new();
    let checkpoints = storage
        .list_checkpoint_dirs()
        .await
        .map_err(|e| e.to_string())?;
    for id in checkpoints {
        let read = storage.read_checkpoint_metadata(id).await;
        out.push(Snapshot {
            kind: SnapshotKind::Checkpoint,
            id,
            state: found(read)?,
        });
    }
    for id in storage
        .list_savepoint_dirs()
        .await
        .map_err(|e| e.to_string())?
    {
        let read = storage.read_savepoint_metadata(id).await;
        out.push(Snapshot {
            kind: SnapshotKind::Savepoint,
            id,
            state: found(read)?,
        });
    }
    Ok(out)
}

fn found(read: statebackend::Result<CheckpointMetadata>) -> Result<Found, String> {
    match read {
        Ok(meta) => Ok(Found::Complete(Box::new(meta))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Found::NoMetadata),
        Err(e) if e.kind() == ErrorKind::Corrupt => Ok(Found::Unreadable(e.to_string())),
        Err(e) => Err(e.to_string()),
    }
}

/// One snapshot directory, from `CHECKPOINT`.
pub(crate) async fn open_snapshot(
    dir: &str,
) -> Result<(SnapshotLocation, CheckpointMetadata), String> {
    let at = SnapshotLocation::parse(dir, &StorageConfig::default()).map_err(|e| e.to_string())?;
    let meta = at
        .read_metadata()
        .await
        .map_err(|e| format!("{dir}: {e}"))?;
    Ok((at, meta))
}

/// `kind` as a word.
pub(crate) fn kind_name(kind: SnapshotKind) -> &'static str {
    match kind {
        SnapshotKind::Checkpoint => "checkpoint",
        SnapshotKind::Savepoint => "savepoint",
    }
}

/// `ms` since the Unix epoch as RFC 3339 UTC, to the second.
pub(crate) fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Bytes for people: `1.5 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Whether stdout is a terminal (progress bars then; quiet when piped).
pub(crate) fn interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}

/// A spinner on stderr with a message (and the count of `inc` calls if `counting`), ticking while a long step runs (listing a large
/// store, the sweep) when stdout is a terminal; hidden when piped or with `--json`.
pub(crate) fn spinner(message: &str, counting: bool, as_json: bool) -> indicatif::ProgressBar {
    if !interactive() || as_json {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(message.to_string());
    let template = if counting {
        "{spinner} {msg} {pos} ({elapsed})"
    } else {
        "{spinner} {msg} ({elapsed})"
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Writes one line to stdout. A closed pipe (`statectl dump ... | head`) ends the program quietly with
/// success, as the reader wanted no more; other write errors end it with a one-line error.
pub(crate) fn emit(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("statectl: writing to stdout: {e}");
        std::process::exit(1);
    }
}

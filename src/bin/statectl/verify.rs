//! `statectl verify`: reads every file of one checkpoint or savepoint and checks its size and CRC32
//! against the handle that references it.

use std::process::ExitCode;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use serde_json::json;
use statebackend::CheckpointStorage;
use statebackend::snapshot::StateFile;

use crate::job::{bytes, interactive, kind_name, open_snapshot};

/// What is wrong with a file, if anything.
async fn check(
    storage: &CheckpointStorage,
    file: &StateFile,
    progress: &indicatif::ProgressBar,
) -> Result<Option<String>, String> {
    let path = storage.path(&file.path);
    let got = match storage.object_store().get(&path).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(Some("missing".into())),
        Err(e) => return Err(format!("{path}: {e}")),
    };
    if got.meta.size != file.size_bytes {
        return Ok(Some(format!(
            "size {} B, the handle says {} B",
            got.meta.size, file.size_bytes
        )));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut stream = got.into_stream();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| format!("{path}: {e}"))?
    {
        crc.update(&chunk);
        progress.inc(chunk.len() as u64);
    }
    let crc = crc.finalize();
    Ok((crc != file.crc32).then(|| {
        format!(
            "CRC32 {crc:08x}, the handle says {:08x}: damaged",
            file.crc32
        )
    }))
}

pub(crate) async fn verify(
    dir: &str,
    concurrency: usize,
    as_json: bool,
) -> Result<ExitCode, String> {
    let (at, meta) = open_snapshot(dir).await?;
    let files: Vec<&StateFile> = meta.files().collect();
    let total: u64 = files.iter().map(|f| f.size_bytes).sum();
    let progress = if interactive() && !as_json {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let storage = &at.storage;
    let progress_ref = &progress;
    let results: Vec<(String, Result<Option<String>, String>)> = futures::stream::iter(&files)
        .map(|f| async move { (f.path.clone(), check(storage, f, progress_ref).await) })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let mut damaged = Vec::new();
    for (path, result) in results {
        if let Some(problem) = result? {
            damaged.push((path, problem));
        }
    }
    damaged.sort();
    let rate = total as f64 / seconds.max(1e-9) / 1e6;
    if as_json {
        out!(
            "{}",
            json!({"kind": kind_name(meta.kind), "id": meta.checkpoint_id, "files": files.len(),
                "bytes": total, "seconds": seconds, "mb_per_s": rate, "intact": damaged.is_empty(),
                "damaged": damaged.iter().map(|(p, why)| json!({"path": p, "problem": why}))
                    .collect::<Vec<_>>()})
        );
    } else {
        for (path, problem) in &damaged {
            out!("DAMAGED {path}: {problem}");
        }
        out!(
            "{} {}: {} files, {} read in {seconds:.2} s ({rate:.0} MB/s): {}",
            kind_name(meta.kind),
            meta.checkpoint_id,
            files.len(),
            bytes(total),
            if damaged.is_empty() {
                "all intact".to_string()
            } else {
                format!("{} damaged or missing", damaged.len())
            }
        );
    }
    Ok(if damaged.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

//! `statectl dump`: the keys, namespaces and values of one state of a canonical snapshot.

use std::process::ExitCode;

use serde_json::json;
use statebackend::inspect::{TtlView, describe_encoded_at, hex_bytes};
use statebackend::snapshot::{HandleFormat, StateKind, StateMeta};

use crate::job::open_snapshot;

/// `bytes` as text by their codec, hex if the codec is not one of the crate's; a TTL state's values judged
/// by `ttl` if given.
fn text(codec: &str, bytes: &[u8], ttl: Option<TtlView>) -> String {
    describe_encoded_at(codec, bytes, ttl).unwrap_or_else(|| hex_bytes(bytes))
}

/// Reads a `u32` little-endian count or length at `*at`.
fn u32_at(value: &[u8], at: &mut usize) -> Option<usize> {
    let v = u32::from_le_bytes(value.get(*at..*at + 4)?.try_into().ok()?) as usize;
    *at += 4;
    Some(v)
}

fn bytes_at<'a>(value: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = u32_at(value, at)?;
    let b = value.get(*at..at.checked_add(len)?)?;
    *at += len;
    Some(b)
}

/// A record's value as text by its state's kind (`docs/formats.md`, "Record").
fn value_text(meta: &StateMeta, value: &[u8], ttl: Option<TtlView>) -> Option<String> {
    match meta.kind {
        StateKind::Value | StateKind::Reducing | StateKind::Aggregating => {
            Some(text(&meta.value_codec, value, ttl))
        }
        // A timer's value is its timestamp (ms), 8 bytes big-endian.
        StateKind::Timers => {
            let ts: [u8; 8] = value.try_into().ok()?;
            Some(format!("timer at {}", u64::from_be_bytes(ts)))
        }
        StateKind::List => {
            let mut at = 0;
            let n = u32_at(value, &mut at)?;
            let mut parts = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                parts.push(text(&meta.value_codec, bytes_at(value, &mut at)?, ttl));
            }
            (at == value.len()).then(|| format!("[{}]", parts.join(", ")))
        }
        StateKind::Map => {
            let mut at = 0;
            let n = u32_at(value, &mut at)?;
            let mut parts = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                let k = text(&meta.user_key_codec, bytes_at(value, &mut at)?, None);
                let v = text(&meta.value_codec, bytes_at(value, &mut at)?, ttl);
                parts.push(format!("{k}: {v}"));
            }
            (at == value.len()).then(|| format!("{{{}}}", parts.join(", ")))
        }
    }
}

/// Prints state `state` of the snapshot in `dir` (only `key_group`'s records if given), as JSON with
/// `as_json`; with `ttl`, a TTL state's values say when they expire or that they have.
pub(crate) async fn dump(
    dir: &str,
    state: &str,
    key_group: Option<u32>,
    as_json: bool,
    ttl: Option<TtlView>,
) -> Result<ExitCode, String> {
    let (at, meta) = open_snapshot(dir).await?;
    let mut rows = Vec::new();
    let mut found = false;
    for handle in meta.tasks.iter().filter_map(|t| t.keyed_state.as_ref()) {
        if key_group.is_some_and(|g| !handle.key_groups.contains(g)) {
            continue;
        }
        if !matches!(
            handle.format,
            HandleFormat::KeyedFile | HandleFormat::KeyedChain
        ) {
            return Err(format!(
                "{dir} is a native LSM snapshot (its rows are inside RocksDB's files): dump reads canonical snapshots (heap checkpoints, canonical savepoints)"
            ));
        }
        let (states, records) =
            statebackend::inspect::keyed_file_records(&at.storage, handle, key_group)
                .await
                .map_err(|e| e.to_string())?;
        let Some(index) = states.iter().position(|s| s.name == state) else {
            continue;
        };
        found = true;
        let meta = &states[index];
        for r in records.iter().filter(|r| r.state == index) {
            rows.push((
                r.key_group,
                text(&meta.key_codec, &r.key, None),
                text(&meta.namespace_codec, &r.namespace, None),
                value_text(meta, &r.value, ttl).unwrap_or_else(|| hex_bytes(&r.value)),
            ));
        }
    }
    if !found {
        return Err(format!(
            "{dir} has no state `{state}`{}",
            key_group.map_or(String::new(), |g| format!(" in key group {g}"))
        ));
    }
    rows.sort();
    if as_json {
        let out: Vec<_> = rows
            .iter()
            .map(|(g, k, n, v)| json!({"key_group": g, "key": k, "namespace": n, "value": v}))
            .collect();
        out!("{}", serde_json::Value::Array(out));
    } else {
        for (g, k, n, v) in &rows {
            out!("{g}\t{k}\t{n}\t{v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

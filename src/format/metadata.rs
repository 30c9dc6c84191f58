//! The `_metadata` file of a checkpoint. Byte layout: `docs/formats.md`, "Checkpoint metadata file".

use crate::error::{Error, Result};
use crate::format::bytes::{Decoder, PutExt};
use crate::snapshot::handle::{
    CheckpointMetadata, FileScope, HandleFormat, KeyedStateHandle, SnapshotKind, StateFile,
    TaskStateSnapshot,
};

/// First 8 bytes of a metadata file.
pub(crate) const MAGIC: &[u8; 8] = b"SBCHKMD\x01";
/// Current format version. Version 4 added the writer's coordinator generation, version 3 each handle's
/// operator id, version 2 each file's local name; versions 1 to 3 are still read (generation 0).
pub(crate) const VERSION: u16 = 4;

/// Encodes `meta` as the bytes of a `_metadata` file (`docs/formats.md`, "Checkpoint metadata file",
/// the newest version): for an engine that passes metadata between processes.
///
/// # Errors
/// [`Error::InvalidArgument`] if a string, blob or count exceeds the format's `u32` lengths (an operator
/// state blob over 4 GiB, say).
pub fn encode_metadata(meta: &CheckpointMetadata) -> Result<Vec<u8>> {
    encode(meta)
}

/// Decodes the bytes of a `_metadata` file of any version this build reads (versions 1 to 4); `path`
/// names the file in errors.
///
/// # Errors
/// [`Error::Corrupt`] naming `path` for a bad magic, version, checksum or field.
pub fn decode_metadata(bytes: &[u8], path: &str) -> Result<CheckpointMetadata> {
    decode(bytes, path)
}

/// Encodes `meta` into the bytes of a `_metadata` file.
///
/// # Errors
/// [`Error::InvalidArgument`] if a string, blob or count does not fit its `u32` length field.
pub(crate) fn encode(meta: &CheckpointMetadata) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    body.put_u64(meta.checkpoint_id);
    body.put_u64(meta.timestamp_ms);
    body.put_u8(match meta.kind {
        SnapshotKind::Checkpoint => 0,
        SnapshotKind::Savepoint => 1,
    });
    body.put_u64(meta.generation);
    body.try_put_count(meta.tasks.len(), "task count")?;
    for t in &meta.tasks {
        body.try_put_bytes(t.operator_id.as_bytes(), "operator id")?;
        body.put_u32(t.subtask_index);
        match &t.keyed_state {
            None => body.put_u8(0),
            Some(h) => {
                body.put_u8(1);
                encode_handle(h, &mut body)?;
            }
        }
        body.try_put_count(t.operator_state.len(), "operator state count")?;
        for (name, value) in &t.operator_state {
            body.try_put_bytes(name.as_bytes(), "operator state name")?;
            body.try_put_bytes(value, "operator state value")?;
        }
    }
    let mut out = Vec::with_capacity(body.len() + 18);
    out.extend_from_slice(MAGIC);
    out.put_u16(VERSION);
    out.try_put_bytes(&body, "metadata body")?;
    out.put_u32(crc32fast::hash(&body));
    Ok(out)
}

fn encode_handle(h: &KeyedStateHandle, out: &mut Vec<u8>) -> Result<()> {
    out.try_put_bytes(h.backend_id.as_bytes(), "backend id")?;
    out.try_put_bytes(h.operator_id.as_bytes(), "handle operator id")?;
    out.put_u64(h.checkpoint_id);
    out.put_u32(h.max_parallelism);
    out.put_u32(h.key_groups.start());
    out.put_u32(h.key_groups.len());
    out.put_u8(h.format.tag());
    out.try_put_count(h.files.len(), "file count")?;
    for f in &h.files {
        out.try_put_bytes(f.path.as_bytes(), "file path")?;
        out.put_u8(match f.scope {
            FileScope::Private => 0,
            FileScope::Shared => 1,
        });
        out.put_u64(f.size_bytes);
        out.put_u32(f.crc32);
        out.put_u64(f.created_by);
        out.try_put_bytes(f.local_name.as_bytes(), "file local name")?;
    }
    Ok(())
}

/// Decodes a `_metadata` file read from `path`.
///
/// # Errors
/// [`Error::Corrupt`] naming `path` for a bad magic, version, checksum, length or field.
pub(crate) fn decode(bytes: &[u8], path: &str) -> Result<CheckpointMetadata> {
    let mut d = Decoder::new(bytes, 0, path);
    if d.take(8, "magic")? != MAGIC {
        return Err(Error::corrupt(
            path,
            "bad magic: not a checkpoint metadata file",
        ));
    }
    let version = d.u16("version")?;
    if !(1..=VERSION).contains(&version) {
        return Err(Error::corrupt(
            path,
            format!(
                "unsupported metadata version {version} (written by a newer release?), this build reads 1 to {VERSION}"
            ),
        ));
    }
    let body = d.bytes("metadata body")?;
    let crc = d.u32("metadata crc")?;
    d.finish("metadata")?;
    if crc32fast::hash(body) != crc {
        return Err(Error::corrupt(path, "metadata checksum mismatch"));
    }
    let mut d = Decoder::new(body, 14, path);
    let checkpoint_id = d.u64("checkpoint id")?;
    let timestamp_ms = d.u64("timestamp")?;
    let kind = match d.u8("kind")? {
        0 => SnapshotKind::Checkpoint,
        1 => SnapshotKind::Savepoint,
        other => return Err(d.error(format!("unknown snapshot kind {other}"))),
    };
    let generation = if version >= 4 {
        d.u64("generation")?
    } else {
        0
    };
    let n = d.count("task count", 13)?;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let operator_id = d.str("operator id")?.to_string();
        let subtask_index = d.u32("subtask index")?;
        let keyed_state = match d.u8("keyed state flag")? {
            0 => None,
            1 => Some(decode_handle(&mut d, version, &operator_id)?),
            other => return Err(d.error(format!("bad keyed state flag {other}"))),
        };
        let m = d.count("operator state count", 8)?;
        let mut operator_state = std::collections::BTreeMap::new();
        for _ in 0..m {
            let name = d.str("operator state name")?.to_string();
            operator_state.insert(name, d.bytes("operator state")?.to_vec());
        }
        tasks.push(TaskStateSnapshot {
            operator_id,
            subtask_index,
            keyed_state,
            operator_state,
        });
    }
    d.finish("metadata body")?;
    Ok(CheckpointMetadata {
        checkpoint_id,
        timestamp_ms,
        kind,
        generation,
        tasks,
    })
}

/// Decodes a handle; before version 3 a handle had no operator id of its own and takes its task's.
fn decode_handle(
    d: &mut Decoder<'_>,
    version: u16,
    task_operator_id: &str,
) -> Result<KeyedStateHandle> {
    let backend_id = d.str("backend id")?.to_string();
    let operator_id = if version >= 3 {
        d.str("handle operator id")?.to_string()
    } else {
        task_operator_id.to_string()
    };
    let checkpoint_id = d.u64("handle checkpoint id")?;
    let max_parallelism = d.u32("max parallelism")?;
    let key_groups = d.key_group_range(max_parallelism)?;
    let tag = d.u8("handle format")?;
    let format = HandleFormat::from_tag(tag)
        .ok_or_else(|| d.error(format!("unknown handle format {tag}")))?;
    let n = d.count("file count", 29)?;
    let mut files = Vec::with_capacity(n);
    for _ in 0..n {
        let path = d.str("file path")?.to_string();
        let scope = match d.u8("file scope")? {
            0 => FileScope::Private,
            1 => FileScope::Shared,
            other => return Err(d.error(format!("unknown file scope {other}"))),
        };
        files.push(StateFile {
            path,
            scope,
            size_bytes: d.u64("file size")?,
            crc32: d.u32("file crc")?,
            created_by: d.u64("file created by")?,
            local_name: if version >= 2 {
                d.str("file local name")?.to_string()
            } else {
                String::new()
            },
        });
    }
    Ok(KeyedStateHandle {
        backend_id,
        operator_id,
        checkpoint_id,
        max_parallelism,
        key_groups,
        format,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_group::KeyGroupRange;

    pub(crate) fn sample() -> CheckpointMetadata {
        CheckpointMetadata {
            checkpoint_id: 7,
            timestamp_ms: 1_700_000_000_000,
            kind: SnapshotKind::Checkpoint,
            generation: 3,
            tasks: vec![TaskStateSnapshot {
                operator_id: "counter".into(),
                subtask_index: 1,
                keyed_state: Some(KeyedStateHandle {
                    backend_id: "b-1".into(),
                    operator_id: "counter".into(),
                    checkpoint_id: 7,
                    max_parallelism: 128,
                    key_groups: KeyGroupRange::new(64, 127).unwrap(),
                    format: HandleFormat::KeyedFile,
                    files: vec![StateFile {
                        path: "chk-7/counter-1.keyed".into(),
                        scope: FileScope::Private,
                        size_bytes: 1234,
                        crc32: 0xdead_beef,
                        created_by: 7,
                        local_name: String::new(),
                    }],
                }),
                operator_state: [("offset".to_string(), 42u64.to_le_bytes().to_vec())].into(),
            }],
        }
    }

    /// The content of the pinned `tests/fixtures/metadata/v<version>/_metadata` (written by
    /// `tests/fixtures/writers/metadata_v<version>.rs`) as this build decodes it: before version 4 the
    /// generation is 0, before 3 a handle takes its task's operator id, before 2 files have no local name.
    fn pinned_content(version: u16) -> CheckpointMetadata {
        let file = |path: &str, scope, size_bytes, crc32, created_by, local: &str| StateFile {
            path: path.into(),
            scope,
            size_bytes,
            crc32,
            created_by,
            local_name: if version >= 2 {
                local.into()
            } else {
                String::new()
            },
        };
        let handle = |backend_id: &str, start, end, format, files| KeyedStateHandle {
            backend_id: backend_id.into(),
            operator_id: "window".into(),
            checkpoint_id: 12,
            max_parallelism: 128,
            key_groups: KeyGroupRange::new(start, end).unwrap(),
            format,
            files,
        };
        let lsm_format = if version == 1 {
            HandleFormat::KeyedFile
        } else {
            HandleFormat::RocksIncremental
        };
        CheckpointMetadata {
            checkpoint_id: 12,
            timestamp_ms: 1_764_000_000_000,
            kind: SnapshotKind::Checkpoint,
            generation: if version >= 4 { 5 } else { 0 },
            tasks: vec![
                TaskStateSnapshot {
                    operator_id: "window".into(),
                    subtask_index: 0,
                    keyed_state: Some(handle(
                        "heap-window-0",
                        0,
                        63,
                        HandleFormat::KeyedFile,
                        vec![
                            file(
                                "chk-12/window-0.keyed",
                                FileScope::Private,
                                2048,
                                0x1234_5678,
                                12,
                                "",
                            ),
                            file(
                                "shared/window-0-a.keyed",
                                FileScope::Shared,
                                4096,
                                0x9abc_def0,
                                10,
                                "",
                            ),
                        ],
                    )),
                    operator_state: [
                        ("offsets".to_string(), vec![1, 2, 3]),
                        ("watermark".to_string(), 99u64.to_le_bytes().to_vec()),
                    ]
                    .into(),
                },
                TaskStateSnapshot {
                    operator_id: "window".into(),
                    subtask_index: 1,
                    keyed_state: Some(handle(
                        "lsm-window-1",
                        64,
                        127,
                        lsm_format,
                        vec![
                            file(
                                "chk-12/window-1-MANIFEST",
                                FileScope::Private,
                                311,
                                0x0bad_cafe,
                                12,
                                "MANIFEST-000005",
                            ),
                            file(
                                "shared/window-1-000012.sst",
                                FileScope::Shared,
                                65536,
                                0xfeed_f00d,
                                11,
                                "000012.sst",
                            ),
                        ],
                    )),
                    operator_state: Default::default(),
                },
                TaskStateSnapshot {
                    operator_id: "source".into(),
                    subtask_index: 0,
                    keyed_state: None,
                    operator_state: [("offset".to_string(), 42u64.to_le_bytes().to_vec())].into(),
                },
            ],
        }
    }

    fn pinned_bytes(version: u16) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/metadata/v{version}/_metadata",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn every_metadata_version_read_has_a_pinned_file_that_decodes_to_its_content() {
        for version in 1..=VERSION {
            let bytes = pinned_bytes(version);
            assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), version);
            let decoded = decode(&bytes, "pinned").unwrap();
            assert_eq!(decoded, pinned_content(version), "version {version}");
        }
    }

    #[test]
    fn todays_encoder_writes_the_newest_pinned_metadata_byte_for_byte() {
        let written = encode(&pinned_content(VERSION)).unwrap();
        assert!(
            written == pinned_bytes(VERSION),
            "the metadata encoder changed its bytes: add version {} with a fixture, keep {VERSION}'s",
            VERSION + 1
        );
    }

    #[test]
    fn round_trip_and_every_corruption_is_caught() {
        let meta = sample();
        let bytes = encode(&meta).unwrap();
        assert_eq!(decode(&bytes, "m").unwrap(), meta);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(
                decode(&bad, "m").is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len], "m").is_err());
        }
    }
}

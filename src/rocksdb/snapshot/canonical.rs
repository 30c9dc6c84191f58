//! Canonical savepoints of the RocksDB backend: its rows written as a keyed snapshot file (the format the heap
//! backend writes and both backends restore; `docs/savepoints.md`), from a native checkpoint opened
//! read-only while processing goes on. What had expired in TTL states is left out.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rocksdb::DB;

use crate::error::{Error, Result};
use crate::format::bytes::PutExt;
use crate::format::keyed_file::{DEFAULT_FRAME_BYTES, DEFAULT_ZSTD_LEVEL};
use crate::format::keyed_file::{FileHeader, FileSummary, KeyedFileWriter, WriterOptions};
use crate::format::lsm_rows::{
    cf_name, key_group_prefix, split_list, split_row_key, split_timer_row,
};
use crate::keyed::identity::SubtaskIdentity;
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::db::db_error;
use crate::rocksdb::options::{ColumnFamilyOptions, Memory, options_with};
use crate::rocksdb::snapshot::upload::UploadGuard;
use crate::rocksdb::ttl::RowExpiry;
use crate::snapshot::layout::savepoint_dir;
use crate::snapshot::result::SnapshotResult;
use crate::snapshot::sizes::{SizeTally, StateSizes};
use crate::snapshot::state_meta::{StateKind, StateMeta};
use crate::snapshot_io::upload::{ChunkSink, keyed_file_result, upload_keyed_file};
use crate::storage::CheckpointStorage;

/// The asynchronous phase of a canonical savepoint; owns no reference to the live DB.
pub(crate) struct CanonicalExport {
    pub(crate) savepoint_id: u64,
    /// The native checkpoint directory (hard links), removed when the job ends or is dropped.
    pub(crate) local_dir: PathBuf,
    pub(crate) _guard: UploadGuard,
    pub(crate) storage: CheckpointStorage,
    pub(crate) backend_id: String,
    pub(crate) config: RocksDbConfig,
    /// The backend's memory (its cache or budget), for the read-only open of the native checkpoint.
    pub(crate) memory: Memory,
    pub(crate) identity: SubtaskIdentity,
    /// The states in the savepoint, in header order.
    pub(crate) states: Vec<StateMeta>,
    /// Per state, in the same order: what had expired at the synchronous phase (TTL states,
    /// `docs/ttl.md`), left out of the savepoint.
    pub(crate) expiries: Vec<Option<RowExpiry>>,
}

impl CanonicalExport {
    pub(crate) async fn run(self, sync_duration: Duration) -> Result<SnapshotResult> {
        let started = Instant::now();
        let relative = format!(
            "{}/{}-{}-{:016x}.keyed",
            savepoint_dir(self.savepoint_id),
            self.identity.operator_id(),
            self.identity.subtask_index(),
            self.storage.next_id()
        );
        let (savepoint_id, backend_id, identity, storage) = (
            self.savepoint_id,
            self.backend_id.clone(),
            self.identity.clone(),
            self.storage.clone(),
        );
        // `self` (with the guard that removes the native checkpoint) moves into the encoder and is dropped
        // when it ends.
        // A savepoint has no local copy (local recovery keeps checkpoints).
        let ((summary, sizes), _) =
            upload_keyed_file(&storage, &relative, None, move |sink| self.encode(sink)).await?;
        Ok(keyed_file_result(
            backend_id,
            identity.operator_id().to_string(),
            savepoint_id,
            identity.max_parallelism(),
            identity.key_groups(),
            relative,
            summary,
            sizes,
            sync_duration,
            started.elapsed(),
        ))
    }

    /// Reads the native checkpoint key group by key group, state by state, and writes the records;
    /// returns the file's summary and each state's and key group's size in it (exact: the records written).
    fn encode(self, sink: &mut ChunkSink) -> Result<(FileSummary, StateSizes)> {
        let path = self.local_dir.display().to_string();
        let options = options_with(&self.config, &self.memory);
        let cf_options = ColumnFamilyOptions::new(&self.config, &self.memory, None);
        let cfs = DB::list_cf(&options, &self.local_dir).map_err(|e| db_error(&path, e))?;
        let db = DB::open_cf_descriptors_read_only(
            &options,
            &self.local_dir,
            cf_options.descriptors(&cfs),
            false,
        )
        .map_err(|e| db_error(&path, e))?;
        let max_parallelism = self.identity.max_parallelism();
        let header = FileHeader {
            max_parallelism,
            key_groups: self.identity.key_groups(),
            states: self.states.clone(),
            rewrite: None,
            appends: false,
            patches: false,
            whole: crate::key_group::KeyGroupRange::EMPTY,
        };
        let mut writer = KeyedFileWriter::new(
            &header,
            WriterOptions {
                zstd_level: Some(DEFAULT_ZSTD_LEVEL),
                frame_bytes: DEFAULT_FRAME_BYTES,
            },
        )?;
        let mut handles = Vec::with_capacity(self.states.len());
        for meta in &self.states {
            let cf = cf_name(&meta.name);
            handles.push(db.cf_handle(&cf).ok_or_else(|| {
                Error::IllegalState(format!("column family {cf} is missing from {path}"))
            })?);
        }
        let mut tally = SizeTally::new(self.states.iter().map(|s| s.name.as_str()));
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for key_group in self.identity.key_groups().iter() {
            writer.begin_key_group(key_group)?;
            let start = key_group_prefix(key_group, max_parallelism);
            let end = key_group_prefix(key_group + 1, max_parallelism);
            for (state, (meta, cf)) in self.states.iter().zip(&handles).enumerate() {
                let expiry = self.expiries.get(state).copied().flatten();
                let live = |value: &[u8]| expiry.is_none_or(|e| e.live(value));
                let state = state as u32;
                let mut it = db.raw_iterator_cf(cf);
                it.seek(&start);
                // A map's rows (same key and namespace, consecutive) gather here.
                let mut map_of: Option<(Vec<u8>, Vec<u8>)> = None;
                entries.clear();
                while let (Some(row), Some(value)) = (it.key(), it.value()) {
                    if row >= end.as_slice() {
                        break;
                    }
                    if meta.kind == StateKind::Timers {
                        let timer = split_timer_row(row, max_parallelism)
                            .map_err(|e| Error::corrupt(&path, e.to_string()))?;
                        writer.add_record(
                            state,
                            |o| o.extend_from_slice(timer.key),
                            |o| o.extend_from_slice(timer.namespace),
                            |o| o.extend_from_slice(&timer.timestamp.to_be_bytes()),
                        )?;
                        it.next();
                        continue;
                    }
                    if !live(value) {
                        it.next();
                        continue;
                    }
                    let parts = split_row_key(row, max_parallelism)
                        .map_err(|e| Error::corrupt(&path, e.to_string()))?;
                    match meta.kind {
                        StateKind::Timers => unreachable!("timer rows are written above"),
                        StateKind::Map => {
                            let same = map_of
                                .as_ref()
                                .is_some_and(|(k, n)| k == parts.key && n == parts.namespace);
                            if !same {
                                if let Some((k, n)) = map_of.take() {
                                    write_map(&mut writer, state, &k, &n, &entries)?;
                                }
                                entries.clear();
                                map_of = Some((parts.key.to_vec(), parts.namespace.to_vec()));
                            }
                            entries.push((parts.user_key.to_vec(), value.to_vec()));
                        }
                        StateKind::List => {
                            let mut elements = split_list(value)
                                .map_err(|e| Error::corrupt(&path, e.to_string()))?;
                            if let Some(expiry) = expiry {
                                elements.retain(|e| expiry.part_live(e));
                            }
                            if !elements.is_empty() {
                                writer.add_record(
                                    state,
                                    |o| o.extend_from_slice(parts.key),
                                    |o| o.extend_from_slice(parts.namespace),
                                    |o| {
                                        o.put_u32(elements.len() as u32);
                                        for e in &elements {
                                            o.put_bytes(e);
                                        }
                                    },
                                )?;
                            }
                        }
                        StateKind::Value | StateKind::Reducing | StateKind::Aggregating => {
                            writer.add_record(
                                state,
                                |o| o.extend_from_slice(parts.key),
                                |o| o.extend_from_slice(parts.namespace),
                                |o| o.extend_from_slice(value),
                            )?;
                        }
                    }
                    it.next();
                }
                it.status().map_err(|e| db_error(&path, e))?;
                if let Some((k, n)) = map_of.take() {
                    write_map(&mut writer, state, &k, &n, &entries)?;
                }
                tally.add(key_group, state as usize, writer.counts());
            }
            writer.end_key_group()?;
            sink.push(writer.take_output())?;
        }
        let (last, summary) = writer.finish()?;
        sink.push(last)?;
        Ok((summary, tally.finish()))
    }
}

/// One record of map state: `count u32`, then per entry the user key and the value as `bytes`.
fn write_map(
    writer: &mut KeyedFileWriter,
    state: u32,
    key: &[u8],
    namespace: &[u8],
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<()> {
    writer.add_record(
        state,
        |o| o.extend_from_slice(key),
        |o| o.extend_from_slice(namespace),
        |o| {
            o.put_u32(entries.len() as u32);
            for (user_key, value) in entries {
                o.put_bytes(user_key);
                o.put_bytes(value);
            }
        },
    )
}

//! Pinned formats: `tests/fixtures/` holds snapshots written by the formats this build reads
//! (`tests/fixtures/README.md` says which commit and command wrote each). Every fixture must restore to
//! its content, and today's writer must still write the newest fixtures byte for byte: a format change
//! adds a fixture (and a decoder for the old one), it never edits one.
//!
//! The job written here is deterministic: names come from `SeededIds`, time from a `ManualClock`, and the
//! snapshots are taken one after another. `FIXTURES_WRITE=<dir> cargo test --test pinned_formats
//! write_fixtures -- --ignored` writes it into `<dir>`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use statebackend::checkpoint::StatsFile;
use statebackend::heap::{HeapConfig, HeapKeyedStateBackend};
use statebackend::ids::SeededIds;
use statebackend::operator::OperatorStateBackend;
#[cfg(feature = "rocksdb")]
use statebackend::rocksdb::RocksDbConfig;
#[cfg(feature = "rocksdb")]
use statebackend::rocksdb::RocksDbKeyedStateBackend;
use statebackend::snapshot::layout::*;
use statebackend::*;

/// Max parallelism of the fixture job.
const MAX_PARALLELISM: u32 = 128;
/// Keys of the keyed operator `window`.
const KEYS: std::ops::RangeInclusive<u64> = 1..=40;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The states of operator `window`.
struct States {
    value: ValueState<u32, u64>,
    list: ListState<VoidNamespace, String>,
    map: MapState<u32, String, u64>,
    sum: ReducingState<VoidNamespace, u64>,
}

fn states<B: KeyedStateBackend<u64>>(b: &mut B) -> States {
    States {
        value: b.value_state(&ValueStateDescriptor::new("value")).unwrap(),
        list: b.list_state(&ListStateDescriptor::new("list")).unwrap(),
        map: b.map_state(&MapStateDescriptor::new("map")).unwrap(),
        sum: b
            .reducing_state(&ReducingStateDescriptor::new("sum", |a: &u64, b: &u64| {
                a + b
            }))
            .unwrap(),
    }
}

/// What key `k` holds in each state: value under namespaces 0 and 1 (odd keys only), a list, a map under
/// namespace 7, a sum.
fn value_of(k: u64, ns: u32) -> Option<u64> {
    (ns == 0 || k % 2 == 1).then(|| k * 1000 + u64::from(ns))
}
fn list_of(k: u64) -> Vec<String> {
    (0..k % 4).map(|i| format!("e{k}-{i}")).collect()
}
fn map_of(k: u64) -> BTreeMap<String, u64> {
    (0..k % 3).map(|i| (format!("m{i}"), k + i)).collect()
}
fn sum_of(k: u64) -> u64 {
    (1..=k).sum()
}

/// Writes the content into `b` for the keys it owns.
fn fill<B: KeyedStateBackend<u64>>(b: &mut B) {
    let s = states(b);
    for k in KEYS {
        if b.set_current_key(k).is_err() {
            continue;
        }
        for ns in [0, 1] {
            if let Some(v) = value_of(k, ns) {
                s.value.update(b, &ns, v).unwrap();
            }
        }
        for e in list_of(k) {
            s.list.add(b, &VoidNamespace, e).unwrap();
        }
        for (mk, mv) in map_of(k) {
            s.map.put(b, &7, mk, mv).unwrap();
        }
        for i in 1..=k {
            s.sum.add(b, &VoidNamespace, i).unwrap();
        }
    }
}

/// Checks that `b` holds the content for every key of `KEYS` it owns; returns how many keys it checked.
fn check<B: KeyedStateBackend<u64>>(b: &mut B, what: &str) -> usize {
    let s = states(b);
    let mut checked = 0;
    for k in KEYS {
        if b.set_current_key(k).is_err() {
            continue;
        }
        checked += 1;
        for ns in [0, 1] {
            assert_eq!(
                s.value.value(b, &ns).unwrap(),
                value_of(k, ns),
                "{what}: value {k}/{ns}"
            );
        }
        let list = s.list.get(b, &VoidNamespace).unwrap();
        assert_eq!(list, list_of(k), "{what}: list {k}");
        let map: BTreeMap<String, u64> = s.map.entries(b, &7).unwrap().into_iter().collect();
        assert_eq!(map, map_of(k), "{what}: map {k}");
        assert_eq!(
            s.sum.get(b, &VoidNamespace).unwrap(),
            Some(sum_of(k)),
            "{what}: sum {k}"
        );
    }
    checked
}

/// The operator state of `source`.
fn source_state() -> OperatorStateBackend {
    let mut ops = OperatorStateBackend::new();
    let offsets = ops.list_state::<u64>("offsets").unwrap();
    offsets.update(&mut ops, &[5, 9, 12]).unwrap();
    let partitions = ops.union_list_state::<String>("partitions").unwrap();
    partitions.add(&mut ops, &"p-0".to_string()).unwrap();
    let rules = ops.broadcast_state::<String, u32>("rules").unwrap();
    rules.put(&mut ops, &"limit".to_string(), &10).unwrap();
    ops
}

fn check_source(ops: &mut OperatorStateBackend) {
    let offsets = ops.list_state::<u64>("offsets").unwrap();
    assert_eq!(offsets.get(ops).unwrap(), [5, 9, 12]);
    let partitions = ops.union_list_state::<String>("partitions").unwrap();
    assert_eq!(partitions.get(ops).unwrap(), ["p-0"]);
    let rules = ops.broadcast_state::<String, u32>("rules").unwrap();
    assert_eq!(rules.get(ops, &"limit".to_string()).unwrap(), Some(10));
}

fn storage(root: &Path, job: &str, seed: u64) -> CheckpointStorage {
    CheckpointStorage::from_url(&root.display().to_string(), job, &StorageConfig::default())
        .unwrap()
        .with_id_source(Arc::new(SeededIds::new(seed)))
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000),
    ))
}

/// A backend of the heap job: every checkpoint one full private keyed file (the canonical format).
fn heap(subtask: u32, zstd_level: Option<i32>) -> HeapKeyedStateBackend<u64> {
    let config = HeapConfig {
        zstd_level,
        incremental: false,
        ..HeapConfig::default()
    };
    HeapKeyedStateBackend::new(window(2, subtask), config).unwrap()
}

/// Subtask `index` of `parallelism` of the operator the fixtures hold.
fn window(parallelism: u32, index: u32) -> SubtaskIdentity {
    SubtaskIdentity::new("window", MAX_PARALLELISM, parallelism, index).unwrap()
}

#[cfg(feature = "rocksdb")]
fn local_config(local_dir: &std::path::Path) -> RocksDbConfig {
    RocksDbConfig {
        local_dir: local_dir.into(),
        ..RocksDbConfig::default()
    }
}

/// Writes the heap job into `root/heap-job`: checkpoint 1 (`window` subtask 0 zstd-compressed, subtask 1
/// raw, `source`'s operator state) and canonical savepoint 2 of the same state.
async fn write_heap_job(root: &Path) {
    let storage = storage(root, "heap-job", 7);
    let config = CoordinatorConfig {
        operators: vec![
            OperatorTasks::keyed("window", 2),
            OperatorTasks::without_keyed_state("source", 1),
        ],
        ..CoordinatorConfig::default()
    };
    let mut coordinator = CheckpointCoordinator::open_with_clock(storage.clone(), config, clock())
        .await
        .unwrap();
    let mut backends = [heap(0, Some(3)), heap(1, None)];
    for b in &mut backends {
        fill(b);
    }
    let source = source_state().snapshot();
    let id = coordinator.trigger().await.unwrap();
    let mut answers = Vec::new();
    for (i, b) in backends.iter_mut().enumerate() {
        let result = b.snapshot(id, &storage).unwrap().run().await.unwrap();
        let ack = TaskStateSnapshot::keyed("window", i as u32, result.handle);
        let metrics = Some(result.metrics);
        answers.push(coordinator.acknowledge(id, ack, metrics).await.unwrap());
    }
    let ack = TaskStateSnapshot {
        operator_id: "source".into(),
        subtask_index: 0,
        keyed_state: None,
        operator_state: source.clone(),
    };
    answers.push(coordinator.acknowledge(id, ack, None).await.unwrap());
    assert!(
        matches!(answers.last(), Some(Acknowledgement::Completed(_))),
        "{answers:?}"
    );
    let sp = coordinator.trigger_savepoint(&storage).await.unwrap();
    let mut last = None;
    for (i, b) in backends.iter_mut().enumerate() {
        let result = b
            .savepoint(sp, &storage, SavepointFormat::Canonical)
            .unwrap()
            .run()
            .await
            .unwrap();
        let ack = TaskStateSnapshot::keyed("window", i as u32, result.handle);
        last = Some(coordinator.acknowledge(sp, ack, None).await.unwrap());
    }
    let ack = TaskStateSnapshot {
        operator_id: "source".into(),
        subtask_index: 0,
        keyed_state: None,
        operator_state: source,
    };
    last = Some(coordinator.acknowledge(sp, ack, None).await.unwrap()).or(last);
    assert!(
        matches!(last, Some(Acknowledgement::Completed(_))),
        "{last:?}"
    );
}

/// Writes the LSM job into `root/lsm-job`: native checkpoint 1 of `window` at parallelism 1.
#[cfg(feature = "rocksdb")]
async fn write_lsm_job(root: &Path) {
    let storage = storage(root, "lsm-job", 11);
    let mut coordinator = CheckpointCoordinator::open_with_clock(
        storage.clone(),
        CoordinatorConfig::single_operator("window", 1, 1),
        clock(),
    )
    .await
    .unwrap();
    let local = tempfile::tempdir().unwrap();
    let mut b =
        RocksDbKeyedStateBackend::<u64>::new(window(1, 0), local_config(local.path())).unwrap();
    fill(&mut b);
    let id = coordinator.trigger().await.unwrap();
    let result = b.snapshot(id, &storage).unwrap().run().await.unwrap();
    let ack = TaskStateSnapshot::keyed("window", 0, result.handle);
    let answer = coordinator
        .acknowledge(id, ack, Some(result.metrics))
        .await
        .unwrap();
    assert!(
        matches!(answer, Acknowledgement::Completed(_)),
        "{answer:?}"
    );
}

/// The heap chain job whose deltas are of format `version` (2 to 5).
fn chain_job(version: u16) -> &'static str {
    match version {
        2 => "heap-chain-job",
        3 => "heap-append-job",
        4 => "heap-patch-job",
        _ => "heap-rolling-job",
    }
}

/// The checkpoint of the chain job of `version` whose chain holds the job's content: 2, or 3 for the
/// rolling job.
fn chain_checkpoint(version: u16) -> u64 {
    if version >= 5 { 3 } else { 2 }
}

/// Keys the heap chain job writes in checkpoint 1 and removes in checkpoint 2 (tombstones).
const GONE: std::ops::RangeInclusive<u64> = 41..=50;

/// Writes the heap chain job into `root/heap-chain-job`: `window` at parallelism 2 (subtask 0
/// zstd-compressed, subtask 1 raw) with incremental checkpoints. Checkpoint 1 (full files, version 1)
/// holds the content plus keys `GONE`, a wrong value of key 1 and a state `junk`; checkpoint 2 (delta
/// files, version 2: upserts, tombstones, the dropped state absent) sets key 1 right, removes `GONE` and
/// drops `junk`, so that its chain holds exactly the content. Checkpoint 1 is subsumed: its files stay
/// as checkpoint 2's placeholders.
///
/// The delta files are of format `version`: 2 is `heap-chain-job`; 3 is `heap-append-job`, where
/// checkpoint 1 also lacks the last element of every list, which checkpoint 2 appends (append records
/// where the list had elements); 4 is `heap-patch-job`, as 3 and also without the last user key of
/// every map and with a user key `gone` in maps of two, which checkpoint 2 puts and removes (patch
/// records where the map had user keys). Those three jobs have chains of at most 2 files: checkpoint 1
/// is one full file, as every full checkpoint of a chain was before rolling materialization.
///
/// Version 5 is `heap-rolling-job`: as 4 with chains of the default limit (10 files, so slices of 8 key
/// groups): checkpoint 1 writes a file per slice (version 5, whole for its slice), checkpoint 2 a delta
/// without a slice (version 4), and checkpoint 3 rewrites key 1's value (unchanged) in a delta that
/// holds the first slice whole (version 5) and leaves out checkpoint 1's file of that slice.
async fn write_heap_chain_job(root: &Path, version: u16) {
    let job = chain_job(version);
    let (appends, patches) = (version >= 3, version >= 4);
    let max_chain_files = if version >= 5 { 10 } else { 2 };
    let storage = storage(root, job, 13);
    let mut coordinator = CheckpointCoordinator::open_with_clock(
        storage.clone(),
        CoordinatorConfig::single_operator("window", 2, 1),
        clock(),
    )
    .await
    .unwrap();
    let mut backends: Vec<HeapKeyedStateBackend<u64>> = [Some(3), None]
        .into_iter()
        .enumerate()
        .map(|(i, zstd_level)| {
            let config = HeapConfig {
                zstd_level,
                incremental: true,
                max_chain_files,
                ..HeapConfig::default()
            };
            HeapKeyedStateBackend::new(window(2, i as u32), config).unwrap()
        })
        .collect();
    for b in &mut backends {
        fill(b);
        let s = states(b);
        for k in KEYS.filter(|_| appends) {
            if b.set_current_key(k).is_ok() && !list_of(k).is_empty() {
                let mut list = list_of(k);
                list.pop();
                s.list.update(b, &VoidNamespace, list).unwrap();
            }
        }
        for k in KEYS.filter(|_| patches) {
            if b.set_current_key(k).is_ok()
                && let Some((last, _)) = map_of(k).pop_last()
            {
                s.map.remove(b, &7, &last).unwrap();
                if map_of(k).len() == 2 {
                    s.map.put(b, &7, "gone".into(), 0).unwrap();
                }
            }
        }
        let junk = b
            .list_state(&ListStateDescriptor::<VoidNamespace, u64>::new("junk"))
            .unwrap();
        for k in GONE.chain([1]) {
            if b.set_current_key(k).is_ok() {
                s.value.update(b, &0, 999).unwrap();
                junk.add(b, &VoidNamespace, k).unwrap();
            }
        }
    }
    for round in 0..chain_checkpoint(version) {
        if round == 2 {
            for b in &mut backends {
                let s = states(b);
                if b.set_current_key(1).is_ok() {
                    s.value.update(b, &0, value_of(1, 0).unwrap()).unwrap();
                }
            }
        }
        if round == 1 {
            for b in &mut backends {
                let s = states(b);
                for k in GONE.chain([1]) {
                    if b.set_current_key(k).is_ok() {
                        match value_of(k, 0) {
                            Some(v) if KEYS.contains(&k) => s.value.update(b, &0, v).unwrap(),
                            _ => s.value.clear(b, &0).unwrap(),
                        }
                    }
                }
                b.drop_state("junk").unwrap();
                for k in KEYS.filter(|_| appends) {
                    if b.set_current_key(k).is_ok()
                        && let Some(last) = list_of(k).pop()
                    {
                        s.list.add(b, &VoidNamespace, last).unwrap();
                    }
                }
                for k in KEYS.filter(|_| patches) {
                    if b.set_current_key(k).is_ok()
                        && let Some((last, v)) = map_of(k).pop_last()
                    {
                        s.map.put(b, &7, last, v).unwrap();
                        s.map.remove(b, &7, &"gone".to_string()).unwrap();
                    }
                }
            }
        }
        let id = coordinator.trigger().await.unwrap();
        let mut last = None;
        for (i, b) in backends.iter_mut().enumerate() {
            let result = b.snapshot(id, &storage).unwrap().run().await.unwrap();
            let new = result.handle.files.iter().filter(|f| f.created_by == id);
            let expected_new = match (round, max_chain_files) {
                (0, 10) => 8,
                _ => 1,
            };
            assert_eq!(new.count(), expected_new, "round {round}");
            let ack = TaskStateSnapshot::keyed("window", i as u32, result.handle);
            last = Some(
                coordinator
                    .acknowledge(id, ack, Some(result.metrics))
                    .await
                    .unwrap(),
            );
        }
        assert!(
            matches!(last, Some(Acknowledgement::Completed(_))),
            "{last:?}"
        );
        for b in &mut backends {
            b.notify_checkpoint_complete(id);
        }
    }
}

async fn write_all(root: &Path) {
    write_heap_job(root).await;
    for version in [2, 3, 4, 5] {
        write_heap_chain_job(root, version).await;
    }
    #[cfg(feature = "rocksdb")]
    write_lsm_job(root).await;
}

/// Writes the fixtures of the newest formats into `$FIXTURES_WRITE` (run by hand, see the module docs).
#[tokio::test]
#[ignore = "writes fixtures; run by hand when a format version is added"]
async fn write_fixtures() {
    let dir = std::env::var("FIXTURES_WRITE").expect("FIXTURES_WRITE=<directory>");
    write_all(Path::new(&dir)).await;
}

/// Every file under `dir`, relative, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The heap job's snapshot files (metadata, keyed files, statistics), without the protocol's markers.
fn snapshot_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files(dir)
        .into_iter()
        .filter(|(path, _)| path.starts_with("chk-") || path.starts_with(SAVEPOINT_DIR))
        .collect()
}

#[tokio::test]
async fn todays_writer_writes_the_pinned_heap_snapshots_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    write_heap_job(dir.path()).await;
    let pinned = snapshot_files(&fixtures().join("jobs/heap-job"));
    let written = snapshot_files(&dir.path().join("heap-job"));
    assert_eq!(
        pinned.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (path, bytes) in &pinned {
        if path.ends_with(STATS_FILE) {
            // Durations differ from run to run; the statistics are checked by parsing.
            continue;
        }
        assert!(
            written[path] == *bytes,
            "{path} differs from the pinned bytes"
        );
    }
}

/// The heap chain job's snapshot files (metadata, shared keyed files), without the protocol's markers
/// and statistics.
fn chain_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files(dir)
        .into_iter()
        .filter(|(path, _)| path.starts_with("chk-") || path.starts_with(SHARED_DIR))
        .filter(|(path, _)| !path.ends_with(STATS_FILE) && !path.ends_with(TRIGGER_MARKER))
        .collect()
}

#[tokio::test]
async fn todays_writer_writes_the_pinned_heap_chains_byte_for_byte() {
    for version in [2, 3, 4, 5] {
        let job = chain_job(version);
        let dir = tempfile::tempdir().unwrap();
        write_heap_chain_job(dir.path(), version).await;
        let pinned = chain_files(&fixtures().join("jobs").join(job));
        let written = chain_files(&dir.path().join(job));
        assert_eq!(
            pinned.keys().collect::<Vec<_>>(),
            written.keys().collect::<Vec<_>>(),
            "{job}: the same files"
        );
        for (path, bytes) in &pinned {
            assert!(
                written[path] == *bytes,
                "{job}: {path} differs from the pinned bytes"
            );
        }
    }
}

#[tokio::test]
async fn pinned_heap_chains_restore_to_their_content() {
    let root = copy_of(&fixtures().join("jobs"));
    for version in [2, 3, 4, 5] {
        let job = chain_job(version);
        let storage = storage(root.path(), job, 99);
        let meta = (storage
            .read_checkpoint_metadata(chain_checkpoint(version))
            .await)
            .unwrap();
        let handles = meta.keyed_handles("window");
        // Rolling: 7 of checkpoint 1's 8 slice files, checkpoint 2's delta, checkpoint 3's.
        let files = if version >= 5 { 9 } else { 2 };
        assert!(
            handles.iter().all(|h| h.files.len() == files),
            "{handles:?}"
        );
        for h in &handles {
            let version_of = |f: &statebackend::snapshot::StateFile| {
                let bytes = std::fs::read(root.path().join(job).join(&f.path)).unwrap();
                u16::from_le_bytes([bytes[8], bytes[9]])
            };
            let newest = h.files.last().unwrap();
            assert_eq!(
                version_of(newest),
                version,
                "{job}: the delta's format version"
            );
            let oldest = if version >= 5 { 5 } else { 1 };
            assert_eq!(
                version_of(&h.files[0]),
                oldest,
                "{job}: the oldest file's version"
            );
        }
        for parallelism in [1, 3] {
            let mut checked = 0;
            for i in 0..parallelism {
                let mut b = restored(&storage, &handles, parallelism, i).await;
                checked += check(&mut b, job);
                let s = states(&mut b);
                for k in GONE {
                    if b.set_current_key(k).is_ok() {
                        assert_eq!(s.value.value(&b, &0).unwrap(), None, "key {k} was removed");
                    }
                }
                assert!(
                    !b.state_names().contains(&"junk".to_string()),
                    "the dropped state stays dropped"
                );
            }
            assert_eq!(checked, KEYS.count(), "{job} at parallelism {parallelism}");
        }
    }
}

/// Subtask `i` of `parallelism` of `window`, restored from `handles` (NO_CLAIM, default settings).
async fn restored(
    storage: &CheckpointStorage,
    handles: &[KeyedStateHandle],
    parallelism: u32,
    i: u32,
) -> HeapKeyedStateBackend<u64> {
    HeapKeyedStateBackend::<u64>::restore(
        window(parallelism, i),
        HeapConfig::default(),
        storage,
        handles,
        RestoreMode::NoClaim,
    )
    .await
    .unwrap()
}

/// `dir` copied into a temporary directory (restores must not touch the fixtures).
fn copy_of(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for (path, bytes) in files(dir) {
        let to = copy.path().join(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
    copy
}

#[tokio::test]
async fn pinned_heap_checkpoint_and_savepoint_restore_to_their_content() {
    let root = copy_of(&fixtures().join("jobs"));
    let storage = storage(root.path(), "heap-job", 99);
    let checkpoint = storage.read_checkpoint_metadata(1).await.unwrap();
    let savepoint = storage.read_savepoint_metadata(2).await.unwrap();
    for (what, meta) in [("checkpoint 1", &checkpoint), ("savepoint 2", &savepoint)] {
        let handles = meta.keyed_handles("window");
        assert_eq!(handles.len(), 2, "{what}");
        // At parallelism 1 and 3: every key group, from both files.
        for parallelism in [1, 3] {
            let mut checked = 0;
            for i in 0..parallelism {
                let mut b = restored(&storage, &handles, parallelism, i).await;
                checked += check(&mut b, what);
            }
            assert_eq!(checked, KEYS.count(), "{what} at parallelism {parallelism}");
        }
        let mut ops = OperatorStateBackend::restore("source", 0, 1, &meta.tasks).unwrap();
        check_source(&mut ops);
    }
    let stats = std::fs::read(root.path().join("heap-job/chk-1").join(STATS_FILE)).unwrap();
    let parsed = StatsFile::parse(&stats, 1).unwrap();
    assert!(parsed.state_bytes > 0);
}

/// The canonical savepoint restores on the RocksDB backend too, and the native LSM checkpoint restores.
#[cfg(feature = "rocksdb")]
#[tokio::test]
async fn pinned_lsm_checkpoint_and_canonical_savepoint_restore_on_rocksdb() {
    let root = copy_of(&fixtures().join("jobs"));
    let heap_job = storage(root.path(), "heap-job", 99);
    let lsm_job = storage(root.path(), "lsm-job", 99);
    let savepoint = heap_job.read_savepoint_metadata(2).await.unwrap();
    let native = lsm_job.read_checkpoint_metadata(1).await.unwrap();
    for (what, storage, meta) in [
        ("canonical savepoint 2", &heap_job, &savepoint),
        ("native checkpoint 1", &lsm_job, &native),
    ] {
        let mut checked = 0;
        for i in 0..2 {
            let local = tempfile::tempdir().unwrap();
            let mut b = RocksDbKeyedStateBackend::<u64>::restore(
                window(2, i),
                local_config(local.path()),
                storage,
                &meta.keyed_handles("window"),
                RestoreMode::NoClaim,
            )
            .await
            .unwrap();
            checked += check(&mut b, what);
        }
        assert_eq!(checked, KEYS.count(), "{what}");
    }
}

/// `statectl dump` reads a chain as one full file: in the deltas of versions 3 and 4, each list's
/// append records and each map's patch records are merged into whole values (u64 keys big-endian,
/// strings as UTF-8, `docs/formats.md`).
#[tokio::test]
async fn dump_of_a_chain_with_append_and_patch_records_shows_whole_lists_and_maps() {
    fn counted(v: &[u8]) -> (usize, &[u8]) {
        (
            u32::from_le_bytes(v[..4].try_into().unwrap()) as usize,
            &v[4..],
        )
    }
    fn field(v: &[u8]) -> (&[u8], &[u8]) {
        let (n, rest) = counted(v);
        rest.split_at(n)
    }
    let root = copy_of(&fixtures().join("jobs"));
    let storage = storage(root.path(), chain_job(4), 99);
    let meta = storage.read_checkpoint_metadata(2).await.unwrap();
    let (mut lists, mut maps) = (0, 0);
    for handle in meta.keyed_handles("window") {
        let (states, records) = statebackend::inspect::keyed_file_records(&storage, &handle, None)
            .await
            .unwrap();
        for r in records {
            let k = u64::from_be_bytes(r.key[..8].try_into().unwrap());
            let (n, mut rest) = counted(&r.value);
            match states[r.state].name.as_str() {
                "list" => {
                    let mut list = Vec::new();
                    for _ in 0..n {
                        let (e, next) = field(rest);
                        list.push(String::from_utf8(e.to_vec()).unwrap());
                        rest = next;
                    }
                    assert_eq!(list, list_of(k), "list of {k}");
                    assert!(rest.is_empty(), "a whole list, nothing after it");
                    lists += 1;
                }
                "map" => {
                    let mut map = BTreeMap::new();
                    for _ in 0..n {
                        let (uk, next) = field(rest);
                        let (v, next) = field(next);
                        let v = u64::from_be_bytes(v.try_into().unwrap());
                        map.insert(String::from_utf8(uk.to_vec()).unwrap(), v);
                        rest = next;
                    }
                    assert_eq!(map, map_of(k), "map of {k}");
                    assert!(rest.is_empty(), "a whole map, nothing after it");
                    maps += 1;
                }
                _ => {}
            }
        }
    }
    let with = |f: fn(u64) -> usize| KEYS.filter(|&k| f(k) > 0).count();
    assert_eq!(lists, with(|k| list_of(k).len()));
    assert_eq!(maps, with(|k| map_of(k).len()));
}

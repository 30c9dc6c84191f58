//! Rescale of the RocksDB backend (`docs/lsm.md`, "Restore"): a job of 2 subtasks checkpoints
//! `SB_RESCALE_KEYS` keys (default 5M; 200-byte incompressible values, about 1 GB of SST files in all),
//! then, in one run, for two shapes of that checkpoint:
//!
//! - `rocksdb_rescale/<shape>/same_range`: subtask 0 of 2 restored at parallelism 2 (one handle, no clipping);
//! - `rocksdb_rescale/<shape>/2_to_3`: subtask 1 of 3 restored from the same checkpoint, the slowest subtask of a
//!   rescale to 3: it overlaps both handles, fetches the SST files of each that can hold its key groups,
//!   imports them as they are into a new database, one column family per state, and clips it with
//!   `delete_range` (`docs/lsm.md`, "Restore").
//!
//! The shapes: `loaded` checkpoints right after the keys are written, while the databases still
//! compact the load (level 0 holds a third or more of each database, and how much varies from run to
//! run with the compactions' timing; every level-0 file holds rows of every key group, so a rescale
//! fetches it); `settled` checkpoints once RocksDB reports no pending or running compaction, the shape
//! of a job that has run for a while.
//!
//! The databases live in memory (`/dev/shm` where there is one): on this machine's ext4, a restore's
//! time on disk depended on how long the file system had been idle, not on the restore (writing 600 MB
//! with `dd` took 1.2-2.0 s of kernel time after five idle seconds, 0.16-0.18 s right after another
//! write; the same on tmpfs 0.23-0.34 s either way), so the ratio ran from 1.2x to 3x between runs of
//! one build. Before each timed restore, untimed, `settle` writes back whatever earlier iterations
//! left dirty (`sync`; it matters where there is no `/dev/shm`).
//!
//! Checkpoint storage is in memory, so both read the same bytes through `object_store` without a network.
//! Target: `2_to_3` at most 1.3 times `same_range` of the same shape. Run: `cargo bench --bench rescale`
//! (each restore is timed ten times, one per sample: `settle` takes seconds). After criterion's two
//! benches of a shape the run prints the ratio of ten pairs of restores timed one after the other,
//! which a drift of the machine between the two benches leaves alone.

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(clippy::unwrap_used, reason = "a bench fails loudly")]

use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use statebackend::rocksdb::RocksDbConfig;
use statebackend::*;

const NS: VoidNamespace = VoidNamespace;
const MAX_PARALLELISM: u32 = 128;

/// `SB_RESCALE_KEYS`, else 5M under `cargo bench`; `cargo test --all-targets` runs this bench once
/// without `--bench` in a debug build, where 20,000 keys check that it works.
fn keys() -> u64 {
    let measuring = std::env::args().any(|a| a == "--bench");
    std::env::var("SB_RESCALE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 5_000_000 } else { 20_000 })
}

fn config(work: &Path) -> StateBackendConfig {
    StateBackendConfig {
        kind: BackendKind::RocksDb,
        rocksdb: RocksDbConfig {
            local_dir: work.to_path_buf(),
            direct_io: false,
            ..RocksDbConfig::default()
        },
        ..StateBackendConfig::default()
    }
}

/// Checkpoint 1 of a job of 2 subtasks holding `keys` keys, each in the subtask its key group routes to;
/// taken once RocksDB compacts nothing any more if `settled`, else right after the writes.
fn job(
    rt: &tokio::runtime::Runtime,
    keys: u64,
    work: &Path,
    settled: bool,
) -> (CheckpointStorage, CheckpointMetadata) {
    rt.block_on(async {
        let storage = CheckpointStorage::in_memory("rescale").unwrap();
        let mut coordinator = CheckpointCoordinator::open(
            storage.clone(),
            CoordinatorConfig::single_operator("op", 2, 1),
        )
        .await
        .unwrap();
        let router = KeyGroupRouter::new(MAX_PARALLELISM, 2).unwrap();
        let desc = ValueStateDescriptor::<VoidNamespace, Vec<u8>>::new("v");
        let id = coordinator.trigger().await.unwrap();
        for subtask in 0..2 {
            let identity = SubtaskIdentity::new("op", MAX_PARALLELISM, 2, subtask).unwrap();
            let mut b: StateBackend<u64> = StateBackend::new(&identity, &config(work)).unwrap();
            let s = b.value_state(&desc).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(subtask));
            for k in (0..keys).filter(|k| router.route(k).subtask() == subtask) {
                let mut v = vec![0u8; 200];
                rng.fill(v.as_mut_slice());
                b.set_current_key(k).unwrap();
                s.update(&mut b, &NS, v).unwrap();
            }
            if settled {
                wait_for_compactions(&b);
            }
            let result = b.snapshot(id, &storage).unwrap().run().await.unwrap();
            coordinator
                .acknowledge(
                    id,
                    TaskStateSnapshot::keyed("op", subtask, result.handle),
                    Some(result.metrics),
                )
                .await
                .unwrap();
        }
        let latest = coordinator.store().latest().unwrap().clone();
        (storage, latest)
    })
}

/// Waits until RocksDB reports no compaction pending or running in `backend` (checked every 100 ms).
fn wait_for_compactions(backend: &StateBackend<u64>) {
    let db = backend.as_rocksdb().unwrap();
    let busy = |property: &str| db.aggregated_int_property(property).unwrap().unwrap() > 0;
    while busy("rocksdb.compaction-pending") || busy("rocksdb.num-running-compactions") {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Before each timed restore (untimed, see the header): the earlier iterations' writes are written back.
fn settle() {
    let synced = std::process::Command::new("sync").status();
    assert!(matches!(&synced, Ok(s) if s.success()), "sync: {synced:?}");
}

/// A new working directory in memory (`/dev/shm`) where there is one, else in the default temporary
/// directory.
fn work_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    match shm.is_dir() {
        true => tempfile::tempdir_in(shm).unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// Restores subtask `subtask` of `parallelism` from `latest`.
fn restore_subtask(
    rt: &tokio::runtime::Runtime,
    work: &Path,
    storage: &CheckpointStorage,
    latest: &CheckpointMetadata,
    (parallelism, subtask): (u32, u32),
) -> StateBackend<u64> {
    let identity = SubtaskIdentity::new("op", MAX_PARALLELISM, parallelism, subtask).unwrap();
    rt.block_on(StateBackend::<u64>::restore_checkpoint(
        &identity,
        &config(work),
        storage,
        latest,
        RestoreMode::NoClaim,
    ))
    .unwrap()
}

/// The two restores of the target, `same_range` then `2_to_3`, timed one after the other `rounds`
/// times (each after `settle`): the median of each and of their ratios, so that a drift of the machine
/// between criterion's two benches does not enter the ratio.
fn paired(rounds: usize, mut restore: impl FnMut((u32, u32)) -> StateBackend<u64>) -> String {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut same, mut rescaled, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut timed = |which| {
            settle();
            let start = std::time::Instant::now();
            let backend = restore(which);
            let elapsed = start.elapsed().as_secs_f64() * 1e3;
            drop(backend);
            elapsed
        };
        let (a, b) = (timed(SAME_RANGE), timed(TWO_TO_THREE));
        same.push(a);
        rescaled.push(b);
        ratios.push(b / a);
    }
    format!(
        "{rounds} pairs: same range {:.0} ms, 2 -> 3 {:.0} ms (medians), ratio {:.2}x (median of the pairs' ratios)",
        median(same),
        median(rescaled),
        median(ratios)
    )
}

/// Subtask 0 of 2: one handle, its own key groups.
const SAME_RANGE: (u32, u32) = (2, 0);
/// Subtask 1 of 3: the slowest of a rescale from 2 to 3 (it overlaps both handles).
const TWO_TO_THREE: (u32, u32) = (3, 1);

fn bench_rescale(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("rocksdb_rescale");
    // One restore per sample: `settle` takes seconds, and criterion's linear sampling would run it
    // hundreds of times.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(2));
    let measuring = std::env::args().any(|a| a == "--bench");
    for (shape, settled) in [("loaded", false), ("settled", true)] {
        let work = work_dir();
        let (storage, latest) = job(&rt, keys(), work.path(), settled);
        let files: u64 = (latest.keyed_handles("op").iter())
            .flat_map(|h| &h.files)
            .map(|f| f.size_bytes)
            .sum();
        println!("{shape}: the checkpoint's files hold {files} bytes");
        let restore = |which| restore_subtask(&rt, work.path(), &storage, &latest, which);
        for (label, (parallelism, subtask)) in
            [("same_range", SAME_RANGE), ("2_to_3", TWO_TO_THREE)]
        {
            group.bench_function(format!("{shape}/{label}"), |b| {
                b.iter_batched(
                    settle,
                    |()| restore((parallelism, subtask)),
                    BatchSize::PerIteration,
                );
            });
            // Checked once after the timings: every owned key is there with its value.
            let mut restored = restore((parallelism, subtask));
            let fetched = restored.restore_sources().remote_bytes;
            let s = restored
                .value_state(&ValueStateDescriptor::<VoidNamespace, Vec<u8>>::new("v"))
                .unwrap();
            let router = KeyGroupRouter::new(MAX_PARALLELISM, parallelism).unwrap();
            let mut restored_keys = 0u64;
            for k in (0..keys()).filter(|k| router.route(k).subtask() == subtask) {
                restored.set_current_key(k).unwrap();
                assert_eq!(s.value(&restored, &NS).unwrap().map(|v| v.len()), Some(200));
                restored_keys += 1;
            }
            println!(
                "{shape}/{label}: subtask {subtask} of {parallelism} fetched {fetched} bytes and holds {restored_keys} keys"
            );
        }
        println!(
            "{shape}: {}",
            paired(if measuring { 10 } else { 1 }, &restore)
        );
    }
    group.finish();
}

criterion_group!(benches, bench_rescale);
criterion_main!(benches);

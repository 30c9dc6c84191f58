//! A small program to compare two builds of a hot path, under `valgrind --tool=callgrind` (instruction
//! counts, repeatable) or by wall clock over alternating runs (this machine's noise needs both; see
//! `docs/ttl.md` and `docs/timers.md`, where its figures are quoted).
//!
//! - `hot_path_probe value <plain|ttl|ttl-event> <write|get>`: a heap `ValueState<VoidNamespace, u64>`
//!   through the engine's `StateBackend`, 1M keys inserted in order, then 2M writes (or gets) of random
//!   keys, each after `set_current_key`; `ttl` is a day of processing-time TTL, `ttl-event` a day of event
//!   time. Prints the time of the 2M operations (ms) on stderr. With `--checkpoint-every N`, a checkpoint
//!   (confirmed, into memory, untimed) follows the inserts and every N operations; with `--incremental`
//!   as well, the backend has incremental checkpoints on, so every write between two checkpoints is
//!   logged (N = 10,000 is a job at 1% churn). Compare `--incremental` against the same
//!   `--checkpoint-every` without it (the copy-on-write copies after each checkpoint are then the same);
//!   under callgrind count the writes alone with `--toggle-collect='*ValueState*update*'`. With
//!   `--in-process`, each checkpoint's frozen version is kept for in-process recovery
//!   (`docs/local-recovery.md`): compare against the same `--checkpoint-every` without it.
//! - `hot_path_probe restore [--rounds N]`: 1M heap value-state keys checkpointed once into memory,
//!   then restored N times (each followed by the state's registration, which decodes the records);
//!   prints the median and minimum restore time (ms). Profile it with `perf record`.
//! - `hot_path_probe fire [--timers N] [--bench-order]` (RocksDB): N event-time timers (default 1M), one
//!   per key with pseudo-random timestamps, registered and then fired in calls of 10,000; with
//!   `--bench-order` a tenth is deleted first, as `benches/timers.rs` does, otherwise the column family is
//!   scanned once so that firing starts with nothing waiting to be written. Prints the firing's rate.
//!
//! Under callgrind, count only the part that matters with `--toggle-collect`, e.g.
//! `--toggle-collect='*TimerService*fire_until*'` for the firing.

use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use statebackend::keyed::{StateTtlConfig, TtlTime};
use statebackend::*;

#[derive(Parser)]
#[command(about = "Compare two builds of a hot path (see the file's documentation)")]
struct Args {
    #[command(subcommand)]
    probe: Probe,
}

#[derive(Subcommand)]
enum Probe {
    /// Heap value state: 1M inserts, then 2M writes or gets of random keys.
    Value {
        ttl: Expiry,
        op: Op,
        /// Incremental checkpoints on.
        #[arg(long)]
        incremental: bool,
        /// Operations between two checkpoints (0: no checkpoint).
        #[arg(long, default_value_t = 0)]
        checkpoint_every: u64,
        /// In-process recovery on: each checkpoint's frozen version stays in memory until the next
        /// one is confirmed, so every page is copied at its first write after a checkpoint.
        #[arg(long)]
        in_process: bool,
    },
    /// Heap restore: 1M value-state keys checkpointed once (full, into memory), then restored `rounds`
    /// times, each restore followed by the state's registration (which decodes the records).
    Restore {
        /// Restores timed.
        #[arg(long, default_value_t = 20)]
        rounds: u32,
    },
    /// RocksDB timers: register, then fire all.
    Fire {
        /// Timers registered and fired.
        #[arg(long, default_value_t = 1_000_000)]
        timers: u64,
        /// Delete a tenth before firing, as `benches/timers.rs` does.
        #[arg(long)]
        bench_order: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Expiry {
    Plain,
    Ttl,
    TtlEvent,
}

#[derive(Clone, Copy, ValueEnum)]
enum Op {
    Write,
    Get,
}

fn main() -> Result<()> {
    match Args::parse().probe {
        Probe::Value {
            ttl,
            op,
            incremental,
            checkpoint_every,
            in_process,
        } => value(ttl, op, (incremental, in_process), checkpoint_every),
        Probe::Restore { rounds } => restore(rounds),
        Probe::Fire {
            timers,
            bench_order,
        } => fire(timers, bench_order),
    }
}

/// `(incremental, in_process)`: incremental checkpoints and in-process recovery on or off.
fn value(
    ttl: Expiry,
    op: Op,
    (incremental, in_process): (bool, bool),
    checkpoint_every: u64,
) -> Result<()> {
    let checkpoint_every = (checkpoint_every > 0).then_some(checkpoint_every);
    let n: u64 = 1_000_000;
    let identity = SubtaskIdentity::new("probe", 128, 1, 0)?;
    let mut config = StateBackendConfig::default();
    config.heap.incremental = incremental;
    let mut b = StateBackend::<u64>::new(&identity, &config)?;
    let recovery = statebackend::heap::InProcessRecovery::new();
    if in_process {
        b.set_in_process_recovery(&recovery);
    }
    let storage = CheckpointStorage::in_memory("probe")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| Error::InvalidArgument(format!("no runtime: {e}")))?;
    let mut checkpoint_id = 0;
    let mut checkpoint = |b: &mut StateBackend<u64>| -> Result<()> {
        checkpoint_id += 1;
        rt.block_on(b.snapshot(checkpoint_id, &storage)?.run())?;
        b.notify_checkpoint_complete(checkpoint_id);
        Ok(())
    };
    let mut d = ValueStateDescriptor::<VoidNamespace, u64>::new("v");
    match ttl {
        Expiry::Plain => {}
        Expiry::Ttl => d = d.with_ttl(StateTtlConfig::new(86_400_000)),
        Expiry::TtlEvent => {
            let mut config = StateTtlConfig::new(86_400_000);
            config.time = TtlTime::EventTime;
            d = d.with_ttl(config);
        }
    }
    let v = b.value_state(&d)?;
    for k in 0..n {
        b.set_current_key(k)?;
        v.update(&mut b, &VoidNamespace, k)?;
    }
    if checkpoint_every.is_some() {
        checkpoint(&mut b)?;
    }
    let (mut sum, mut x) = (0u64, 12_345u64);
    let mut untimed = std::time::Duration::ZERO;
    let start = Instant::now();
    for i in 1..=2 * n {
        // A linear congruential generator (Knuth's MMIX constants): the same keys in every build.
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let key = (x >> 33) % n;
        b.set_current_key(key)?;
        match op {
            Op::Get => sum = sum.wrapping_add(v.value(&b, &VoidNamespace)?.unwrap_or(0)),
            Op::Write => v.update(&mut b, &VoidNamespace, key + 1)?,
        }
        if let Some(every) = checkpoint_every
            && i % every == 0
        {
            let t = Instant::now();
            checkpoint(&mut b)?;
            untimed += t.elapsed();
        }
    }
    eprintln!("{:.1} ms", (start.elapsed() - untimed).as_secs_f64() * 1e3);
    println!("{sum}");
    Ok(())
}

fn restore(rounds: u32) -> Result<()> {
    let identity = SubtaskIdentity::new("probe", 128, 1, 0)?;
    let config = StateBackendConfig::default();
    let mut b = StateBackend::<u64>::new(&identity, &config)?;
    let storage = CheckpointStorage::in_memory("probe")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidArgument(format!("no runtime: {e}")))?;
    let d = ValueStateDescriptor::<VoidNamespace, u64>::new("v");
    let v = b.value_state(&d)?;
    for k in 0..1_000_000u64 {
        b.set_current_key(k)?;
        v.update(&mut b, &VoidNamespace, k)?;
    }
    let handle = rt.block_on(b.snapshot(1, &storage)?.run())?.handle;
    let mut times = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let mut r = rt.block_on(StateBackend::<u64>::restore(
            &identity,
            &config,
            &storage,
            std::slice::from_ref(&handle),
            RestoreMode::Claim,
        ))?;
        r.value_state(&d)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "restore of 1M keys: median {:.1} ms, min {:.1} ms ({rounds} rounds)",
        times[times.len() / 2],
        times[0]
    );
    Ok(())
}

#[cfg(feature = "rocksdb")]
fn fire(n: u64, bench_order: bool) -> Result<()> {
    use statebackend::keyed::{Fired, TimeDomain, TimerServiceDescriptor};
    let ts = |k: u64| {
        let mut x = (k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 31;
        x ^= x << 17;
        x & ((1 << 40) - 1)
    };
    let dir = tempfile::tempdir()
        .map_err(|e| Error::InvalidArgument(format!("no temporary directory: {e}")))?;
    let config = StateBackendConfig {
        kind: BackendKind::RocksDb,
        rocksdb: rocksdb::RocksDbConfig {
            local_dir: dir.path().to_path_buf(),
            ..Default::default()
        },
        ..StateBackendConfig::default()
    };
    let identity = SubtaskIdentity::new("probe", 128, 1, 0)?;
    let mut b = StateBackend::<u64>::new(&identity, &config)?;
    let svc = b.timer_service(&TimerServiceDescriptor::<VoidNamespace>::new("probe"))?;
    for k in 0..n {
        b.set_current_key(k)?;
        svc.register_event_time(&mut b, &VoidNamespace, ts(k))?;
    }
    if bench_order {
        for k in (0..n).step_by(10) {
            b.set_current_key(k)?;
            svc.delete(&mut b, TimeDomain::EventTime, &VoidNamespace, ts(k))?;
        }
    } else {
        svc.len(&mut b, TimeDomain::EventTime)?;
    }
    let start = Instant::now();
    let mut fired = 0u64;
    while svc.fire_event_time(&mut b, u64::MAX, 10_000, |_, _| {
        fired += 1;
        Ok(())
    })? == Fired::More
    {}
    let took = start.elapsed().as_secs_f64();
    eprintln!(
        "fired {fired} in {:.1} ms: {:.2} M/s",
        took * 1e3,
        fired as f64 / took / 1e6
    );
    Ok(())
}

#[cfg(not(feature = "rocksdb"))]
fn fire(_n: u64, _bench_order: bool) -> Result<()> {
    Err(Error::InvalidArgument(
        "the fire probe needs the rocksdb feature".into(),
    ))
}

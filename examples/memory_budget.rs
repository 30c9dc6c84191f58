//! Peak memory of several RocksDB backends in one process, with one shared memory budget or without
//! (`docs/engines.md`, "Memory"): `--backends` subtasks of one operator, each with `--states` value
//! states, written with `--total-mib` of 1 KiB values (incompressible) in total, keys routed to their
//! subtask as an engine routes them; a checkpoint of every backend at the end (into a local directory),
//! then one value in 64 read back and checked. Prints the process's peak resident set (`VmHWM`) and the highest
//! resident set sampled during the writes, beside the budget.
//!
//! `cargo run --release --example memory_budget -- --budget-mib 512` against `-- --no-budget`.

use std::time::Instant;

use clap::Parser;
use statebackend::rocksdb::{MemoryBudget, MemoryBudgetConfig, RocksDbConfig};
use statebackend::*;

#[derive(Parser)]
#[command(about = "Peak memory of RocksDB backends with and without one shared budget")]
struct Args {
    /// The budget all backends share, MiB.
    #[arg(long, default_value_t = 512)]
    budget_mib: usize,
    /// No budget: each backend its own block cache and memtables (today's default).
    #[arg(long)]
    no_budget: bool,
    /// Backends (subtasks of one operator) in the process.
    #[arg(long, default_value_t = 8)]
    backends: u32,
    /// Value states per backend.
    #[arg(long, default_value_t = 4)]
    states: usize,
    /// Bytes of values written in total, MiB.
    #[arg(long, default_value_t = 2048)]
    total_mib: u64,
}

const VALUE_BYTES: usize = 1024;

/// The process's resident set now and its peak, KiB (`/proc/self/status`; 0 where there is none).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A value of key `key` and state `state`: 1 KiB of a xorshift stream, so LZ4 cannot shrink it.
fn value(key: u64, state: usize) -> Vec<u8> {
    let mut x = (key << 3 | state as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(VALUE_BYTES);
    while out.len() < VALUE_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()
        .map_err(|e| Error::InvalidArgument(format!("no temporary directory: {e}")))?;
    let config = StateBackendConfig {
        kind: BackendKind::RocksDb,
        rocksdb: RocksDbConfig {
            local_dir: dir.path().to_path_buf(),
            ..RocksDbConfig::default()
        },
        ..StateBackendConfig::default()
    };
    let budget = MemoryBudget::new(MemoryBudgetConfig {
        total_bytes: args.budget_mib << 20,
        ..MemoryBudgetConfig::default()
    })?;
    let mut backends = Vec::new();
    for i in 0..args.backends {
        let identity = SubtaskIdentity::new("budget", 128, args.backends, i)?;
        backends.push(if args.no_budget {
            StateBackend::<u64>::new(&identity, &config)?
        } else {
            StateBackend::<u64>::with_memory_budget(&identity, &config, &budget)?
        });
    }
    let descriptors: Vec<ValueStateDescriptor<VoidNamespace, Vec<u8>>> = (0..args.states)
        .map(|s| ValueStateDescriptor::new(format!("s{s}")))
        .collect();
    let mut states = Vec::new();
    for b in &mut backends {
        let mine: Vec<_> = descriptors
            .iter()
            .map(|d| b.value_state(d))
            .collect::<Result<_>>()?;
        states.push(mine);
    }
    let router = KeyGroupRouter::new(128, args.backends)?;
    let keys = (args.total_mib << 20) / (VALUE_BYTES * args.states) as u64;
    let started = Instant::now();
    let mut peak_sampled = 0;
    for key in 0..keys {
        let route = router.route(&key);
        let i = route.subtask() as usize;
        let b = &mut backends[i];
        b.set_current_key(key)?;
        for (s, state) in states[i].iter().enumerate() {
            state.update(b, &VoidNamespace, value(key, s))?;
        }
        if key % 4096 == 0 {
            peak_sampled = peak_sampled.max(rss_kib().0);
        }
    }
    let wrote = started.elapsed();
    // A local directory: storage in memory would hold the whole checkpoint in this process.
    let storage = CheckpointStorage::local(
        dir.path().join("checkpoints"),
        "budget",
        &StorageConfig::default(),
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidArgument(format!("no runtime: {e}")))?;
    for b in &mut backends {
        rt.block_on(b.snapshot(1, &storage)?.run())?;
    }
    let mut checked = 0u64;
    for key in (0..keys).step_by(64) {
        let i = router.route(&key).subtask() as usize;
        let b = &mut backends[i];
        b.set_current_key(key)?;
        for (s, state) in states[i].iter().enumerate() {
            if state.value(b, &VoidNamespace)? != Some(value(key, s)) {
                return Err(Error::IllegalState(format!(
                    "key {key} state {s} read back wrong"
                )));
            }
            checked += 1;
        }
    }
    let (_, hwm) = rss_kib();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{} backends x {} states, {} MiB of values ({keys} keys) in {:.1} s; {checked} values read back",
        args.backends,
        args.states,
        args.total_mib,
        wrote.as_secs_f64()
    );
    if args.no_budget {
        println!("no budget");
    } else {
        println!(
            "budget {} MiB: charged now {:.1} MiB (memtables {:.1} MiB)",
            args.budget_mib,
            budget.usage_bytes() as f64 / f64::from(1 << 20),
            budget.memtable_bytes() as f64 / f64::from(1 << 20)
        );
    }
    println!(
        "peak RSS {:.1} MiB (VmHWM), highest sampled while writing {:.1} MiB",
        mib(hwm),
        mib(peak_sampled)
    );
    Ok(())
}

//! Word count on timely dataflow with keyed state in statebackend, exactly once across failures.
//!
//! - Records are exchanged by key group to the worker that owns it (`KeyGroupRouter`, the backend's own
//!   hash, computed once at the source and carried with the record).
//! - Each worker's counting operator keeps its counts in a `StateBackend` (heap or LSM, `--backend`).
//! - Sources advance timely's epoch every `--epoch-ms`; worker 0's coordinator triggers one checkpoint per
//!   epoch, and a counting operator takes it when the epoch's frontier passes it (the frontier is the
//!   barrier, as in Flink's aligned checkpoints). Acknowledgements travel to worker 0 as timely records.
//! - Source offsets (one per split) are the source's operator list state (`OperatorStateBackend`); after a
//!   failure every worker restores its key groups and its share of the splits from the last completed
//!   checkpoint (`--resume`), at the same or another number of workers.
//!
//! One process, 4 workers:  `timely_wordcount -w 4 --checkpoint-dir /tmp/ck --output-dir /tmp/out`
//! Two processes of 2 workers on localhost: a host file with two `127.0.0.1:PORT` lines, then
//! `timely_wordcount -w 2 -n 2 -p 0 -h hosts ...` and `... -p 1 ...`. `--verify` checks the output
//! against a single-pass count. `scripts/timely-kill.sh` kills a process mid-run, restarts all, rescales.

mod args;
mod checkpointing;
mod count;
mod source;
mod windows;
mod worker;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use statebackend::rocksdb::{MemoryBudget, MemoryBudgetConfig};

fn main() -> ExitCode {
    let args = args::Args::parse();
    if args.verify {
        return verify(&args);
    }
    let config = match args.timely_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("timely configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = runtime.handle().clone();
    // One memory budget for the RocksDB backends of every worker of this process.
    let budget = match MemoryBudget::new(MemoryBudgetConfig {
        total_bytes: (args.memory_budget_mib << 20) as usize,
        ..MemoryBudgetConfig::default()
    }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("memory budget: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let job = args.clone();
    let guards = timely::execute(config, move |w| worker::run(w, &job, &handle, &budget));
    let results = match guards {
        Ok(guards) => guards.join(),
        Err(e) => {
            eprintln!("timely: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut words = 0u64;
    for result in results {
        match result {
            Ok(Ok(n)) => words += n,
            Ok(Err(e)) => {
                eprintln!("worker failed: {e}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("worker panicked: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "process {}: {words} words in {secs:.2} s, {:.0} words/s",
        args.process,
        words as f64 / secs
    );
    ExitCode::SUCCESS
}

/// Compares the output files of a finished run with a single-pass count of the generated words.
fn verify(args: &args::Args) -> ExitCode {
    let expected = source::single_pass(
        args.seed,
        args.splits,
        args.words_per_split,
        args.distinct,
        args.window_ms,
    );
    let peers = args.peers();
    let mut got = std::collections::HashMap::new();
    if args.firing_windows() {
        match windows::read_emitted(&args.output_dir) {
            Ok(emitted) => got = emitted,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    for worker in (0..peers).filter(|_| !args.firing_windows()) {
        let path = args
            .output_dir
            .join(format!("counts-{worker}-of-{peers}.tsv"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        };
        for line in text.lines() {
            let mut parts = line.split('\t');
            let (Some(word), Some(window), Some(count)) =
                (parts.next(), parts.next(), parts.next())
            else {
                eprintln!("{}: bad line `{line}`", path.display());
                return ExitCode::FAILURE;
            };
            let (Ok(window), Ok(count)) = (window.parse::<u64>(), count.parse::<u64>()) else {
                eprintln!("{}: bad line `{line}`", path.display());
                return ExitCode::FAILURE;
            };
            if got.insert((word.to_string(), window), count).is_some() {
                eprintln!("({word}, {window}) is counted by two workers");
                return ExitCode::FAILURE;
            }
        }
    }
    let wrong = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .count()
        + got.keys().filter(|k| !expected.contains_key(*k)).count();
    let total: u64 = expected.values().sum();
    if wrong == 0 {
        println!(
            "verified: {} counts of {total} words equal a single-pass count",
            expected.len()
        );
        ExitCode::SUCCESS
    } else {
        println!("WRONG: {wrong} of {} counts differ", expected.len());
        ExitCode::FAILURE
    }
}

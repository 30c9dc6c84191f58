//! Deterministic simulation of the checkpoint protocol (issue 11), in the manner of FoundationDB's and
//! SlateDB's simulation tests: a seed drives a coordinator (and sometimes an old leader beside it) and a job
//! of two operators on the heap and the LSM backend through random schedules of state updates,
//! checkpoints, acknowledgements (duplicate, late, reordered), notifications (lost, duplicate), aborts,
//! timeouts, restores (CLAIM and NO_CLAIM), rescales, orphan sweeps and restarts, over a store that fails,
//! delays, reports errors for writes that took effect, loses deletes, and crashes the coordinator or a task
//! at a store call (the future is dropped there). After every step `check.rs`'s invariants must hold.
//!
//! `SIM_SEEDS` (default 1000) seeds from `SIM_SEED_BASE` (default 0), `SIM_STEPS` (default 120) steps
//! each; `SIM_SEED=n` runs one seed and prints its log. A failing seed prints how to run it again.
//! It needs the LSM backend (the default `rocksdb` feature).

#![cfg(feature = "rocksdb")]
#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod check;
mod failover;
mod job;
mod sim;
mod steps;
mod store;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::sim::{Sim, Violation};
use crate::store::CRASH_POINTS;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A failed seed: where, why, and the end of its log.
struct Failure {
    seed: u64,
    step: usize,
    violation: Violation,
    log: Vec<String>,
}

/// What one seed did: crashes by point, events by kind.
type Counts = (BTreeMap<&'static str, u32>, BTreeMap<&'static str, u32>);

/// Runs one seed; returns how often each crash point fired and each event happened.
async fn run_seed(seed: u64, steps: usize) -> Result<Counts, Failure> {
    let mut sim = Sim::new(seed).await;
    let fail = |sim: &Sim, step, violation| Failure {
        seed,
        step,
        violation,
        log: sim.log.clone(),
    };
    for step in 0..steps {
        let tick = sim.rng.random_range(1..12);
        sim.clock.advance(Duration::from_secs(tick));
        let outcome = async {
            sim.timeouts().await?;
            // Nothing in flight: the engine's checkpoint interval is likely over.
            let idle = sim.inflight.is_empty() && sim.rng.random_bool(0.5);
            let roll = if idle {
                14
            } else {
                sim.rng.random_range(0..100)
            };
            sim.log.push(format!("-- step {step} (roll {roll})"));
            match roll {
                0..14 => sim.write()?,
                14..20 => {
                    let live: Vec<usize> = (0..sim.coordinators.len())
                        .filter(|n| sim.coordinators[*n].is_some())
                        .collect();
                    let leader = sim.leader();
                    let n = if sim.rng.random_bool(0.8) {
                        leader
                    } else {
                        live[sim.rng.random_range(0..live.len())]
                    };
                    sim.trigger(n).await?
                }
                20..60 => sim.progress().await?,
                60..62 => sim.run_all_async().await?,
                62..65 => sim.run_async().await?,
                65..68 => sim.acknowledge().await?,
                68..77 => sim.notify(),
                77..78 => {
                    if let Some(&id) = sim.inflight.keys().next() {
                        sim.abort(id).await?;
                    }
                }
                78..82 => sim.late_ack().await?,
                82..87 => sim.sweep().await?,
                87..88 => sim.restart_coordinator().await?,
                88..90 => sim.failover().await?,
                90..92 => sim.split_brain().await?,
                92..94 => sim.fence(),
                94..95 => sim.newer_release().await?,
                _ => sim.notify(),
            }
            check::check(&mut sim).await
        }
        .await;
        if let Err(v) = outcome {
            return Err(fail(&sim, step, v));
        }
    }
    if let Err(v) = check::quiet(&mut sim).await {
        return Err(fail(&sim, steps, v));
    }
    if std::env::var("SIM_SEED").is_ok() {
        for line in &sim.log {
            println!("{line}");
        }
    }
    Ok((sim.crash_points, sim.events))
}

fn add(total: &mut Counts, (crashes, events): Counts) {
    for (p, n) in crashes {
        *total.0.entry(p).or_default() += n;
    }
    for (e, n) in events {
        *total.1.entry(e).or_default() += n;
    }
}

#[test]
fn simulation() {
    let (seeds, base, steps) = match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => (1, seed, env("SIM_STEPS", 120)),
        None => (
            env("SIM_SEEDS", 1000),
            env("SIM_SEED_BASE", 0),
            env("SIM_STEPS", 120),
        ),
    };
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4) as u64;
    let started = Instant::now();
    let results: Vec<(Counts, Vec<Failure>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let mut counts = Counts::default();
                    let mut failures = Vec::new();
                    for seed in (base + t..base + seeds).step_by(threads as usize) {
                        match rt.block_on(run_seed(seed, steps as usize)) {
                            Ok(c) => add(&mut counts, c),
                            Err(f) => failures.push(f),
                        }
                    }
                    (counts, failures)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    for (c, f) in results {
        add(&mut counts, c);
        failures.extend(f);
    }
    let (crashes, events) = counts;
    println!(
        "simulation: {seeds} seeds from {base}, {steps} steps each, {:.1} s, {} failed\ncrashes by point: \
         {crashes:?}\nevents: {events:?}",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    if let Some(first) = failures.iter().min_by_key(|f| f.seed) {
        // The whole log when one seed is replayed, its end otherwise.
        let keep = if seeds == 1 { first.log.len() } else { 40 };
        let tail: Vec<&String> = first.log.iter().rev().take(keep).rev().collect();
        let seeds: Vec<u64> = failures.iter().map(|f| f.seed).collect();
        panic!(
            "simulation seed {} failed at step {}: {}\nfailing seeds: {seeds:?}\nrerun: SIM_SEED={} SIM_STEPS={steps} \
             cargo test --test simulation -- --nocapture\nlast log lines:\n{}",
            first.seed,
            first.step,
            first.violation.0,
            first.seed,
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if seeds >= 200 {
        for point in CRASH_POINTS {
            assert!(
                crashes.get(point).copied().unwrap_or(0) > 0,
                "no crash at the `{point}` step in {seeds} seeds: the harness does not exercise it"
            );
        }
    }
}

//! The main job: a checkpointed word count, as Flink's checkpointing demo.
//!
//! Reads lines from `--input FILE` (`-` for stdin), `--socket HOST:PORT` (as Flink's `socketTextStream`), or
//! generates a seeded Zipf-distributed word stream (`--records`, `--distinct`). Counts words in a
//! `ValueState<u64>` per word, checkpoints every `--checkpoint-every` records into `--checkpoint-dir`
//! (the source offset goes into the checkpoint), fails on purpose after `--fail-after` records, restarts under
//! `--restart`, restores from the latest checkpoint and replays the source from the stored offset. At the end
//! it writes `--output`, prints the checkpoint table and the restores, and verifies the counts against a plain
//! single-pass count: `verified: ... exactly-once`, or exits non-zero.
//!
//! `--stop-with-savepoint DIR` ends the run with a canonical savepoint (at the end of the input, or after
//! `--stop-after` records); `--from-savepoint` starts a run from one, with any backend and parallelism.
//!
//! `--ttl-ms N` gives the counts an event-time TTL (`docs/ttl.md`): a line's event time is its source
//! offset, the job passes it to every subtask as the TTL watermark, and a word's count expires once the
//! source is `N` past its last occurrence (its next occurrence counts from 1). The verification replays
//! that rule in its single pass, so exactly-once holds with expiry, through failures, rescales and
//! savepoints that switch the backend.
//!
//! Stdin and socket input are buffered in memory as they arrive so that they can be replayed after a failure
//! (a replayable source is what exactly-once state needs).

mod args;
mod savepoint;
mod source;
mod task;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Parser;
use statebackend::checkpoint::{CancellationPolicy, SweepReport};
use statebackend::heap::HeapConfig;
use statebackend::inspect::SnapshotLocation;
use statebackend::key_group::default_max_parallelism;
use statebackend::snapshot::RestoreSources;
use statebackend::{
    Acknowledgement, CheckpointCoordinator, CheckpointStats, CheckpointStorage, CoordinatorConfig,
    KeyGroupRouter, KeyedStateBackend, RestoreMode, StateBackend, StateBackendConfig,
    StorageConfig, SubtaskIdentity, TaskStateSnapshot, rocksdb::RocksDbConfig,
};

use crate::args::Args;
use crate::source::{Source, open_source, single_pass_count, words};
use crate::task::Task;

const OPERATOR: &str = "word-counter";
const OFFSET_STATE: &str = "source-offset";

struct InFlight {
    id: u64,
    offset: u64,
    tasks: Vec<tokio::task::JoinHandle<statebackend::Result<statebackend::SnapshotResult>>>,
}

struct Job {
    args: Args,
    rt: tokio::runtime::Runtime,
    storage: CheckpointStorage,
    coordinator: CheckpointCoordinator,
    completed: Vec<CheckpointStats>,
    restores: Vec<String>,
}

enum AttemptEnd {
    Finished(BTreeMap<String, u64>),
    Failed(String),
}

impl Job {
    /// Finishes the in-flight checkpoint: waits for its asynchronous phases, acknowledges, notifies.
    fn complete(&mut self, task: &mut Task, flight: InFlight) -> statebackend::Result<()> {
        let mut results = Vec::new();
        for handle in flight.tasks {
            let r = self
                .rt
                .block_on(handle)
                .map_err(|e| statebackend::Error::IllegalState(e.to_string()))?;
            results.push(r);
        }
        if let Some(Err(_)) = results.iter().find(|r| r.is_err()) {
            self.rt.block_on(self.coordinator.abort(flight.id))?;
            task.backends
                .iter_mut()
                .for_each(|b| b.notify_checkpoint_aborted(flight.id));
            return results
                .into_iter()
                .find_map(Result::err)
                .map_or(Ok(()), Err);
        }
        let mut completed = false;
        for (i, r) in results.into_iter().enumerate() {
            let r = r?;
            let mut state = TaskStateSnapshot {
                operator_id: OPERATOR.into(),
                subtask_index: i as u32,
                keyed_state: Some(r.handle),
                ..Default::default()
            };
            if i == 0 {
                state
                    .operator_state
                    .insert(OFFSET_STATE.into(), flight.offset.to_le_bytes().to_vec());
            }
            let answer = self.rt.block_on(self.coordinator.acknowledge(
                flight.id,
                state,
                Some(r.metrics),
            ))?;
            match answer {
                Acknowledgement::Completed(stats) => {
                    for old in &stats.aborted_pending {
                        task.backends
                            .iter_mut()
                            .for_each(|b| b.notify_checkpoint_aborted(*old));
                    }
                    self.completed.push(*stats);
                    completed = true;
                }
                Acknowledgement::Declined(why) => {
                    println!("checkpoint {} declined: {why:?}", flight.id);
                }
                Acknowledgement::Discarded(why) => {
                    println!(
                        "checkpoint {}: acknowledgement discarded: {why:?}",
                        flight.id
                    );
                }
                Acknowledgement::Pending { .. } | Acknowledgement::Duplicate => {}
            }
        }
        // A checkpoint that did not complete is aborted on every backend (the RocksDB backend then never
        // takes it as its diff base).
        task.backends.iter_mut().for_each(|b| {
            if completed {
                b.notify_checkpoint_complete(flight.id)
            } else {
                b.notify_checkpoint_aborted(flight.id)
            }
        });
        Ok(())
    }

    /// Restores the task from the latest checkpoint (or starts empty) and positions the source.
    fn start_task(
        &mut self,
        parallelism: u32,
        max_parallelism: u32,
        source: &mut Source,
        attempt: u32,
    ) -> statebackend::Result<Task> {
        let config = self.backend_config()?;
        let subtasks: Vec<SubtaskIdentity> = (0..parallelism)
            .map(|i| SubtaskIdentity::new(OPERATOR, max_parallelism, parallelism, i))
            .collect::<statebackend::Result<_>>()?;
        let router = KeyGroupRouter::new(max_parallelism, parallelism)?;
        if self.coordinator.store().latest().is_none()
            && let Some(dir) = self.args.from_savepoint.clone()
        {
            let (backends, offset) =
                self.restore_from_savepoint(&dir, &subtasks, &config, attempt)?;
            source.seek(offset).map_err(io_err)?;
            return Task::new(backends, router, self.args.ttl_ms);
        }
        if self.coordinator.store().latest().is_none() {
            source.seek(0).map_err(io_err)?;
            let backends = subtasks
                .iter()
                .map(|identity| StateBackend::new(identity, &config))
                .collect::<statebackend::Result<_>>()?;
            return Task::new(backends, router, self.args.ttl_ms);
        }
        let started = Instant::now();
        let storage = self.storage.clone();
        let store = self.coordinator.store();
        let outcome = self.rt.block_on(store.restore_latest(|meta| {
            let storage = storage.clone();
            let (subtasks, config) = (subtasks.clone(), config.clone());
            // A failover resumes the job's own checkpoints: CLAIM, so LSM checkpoints stay
            // incremental; a pinned (NO_CLAIM) checkpoint is restored NO_CLAIM again.
            let mode = store.restore_mode(meta.checkpoint_id, RestoreMode::Claim);
            async move {
                let handles: Vec<_> = meta
                    .tasks
                    .iter()
                    .filter_map(|t| t.keyed_state.clone())
                    .collect();
                let offset = savepoint::stored_offset(&meta)?;
                let mut backends = Vec::new();
                for identity in &subtasks {
                    backends.push(
                        StateBackend::restore(identity, &config, &storage, &handles, mode).await?,
                    );
                }
                Ok((backends, offset, meta, mode))
            }
        }))?;
        let (backends, offset, meta, mode) = outcome.value;
        // The job's line continues from this checkpoint (a newer one, if any, is abandoned).
        self.rt
            .block_on(self.coordinator.restored_from(&meta, mode))?;
        source.seek(offset).map_err(io_err)?;
        let skipped: Vec<String> = outcome
            .skipped
            .iter()
            .map(|s| format!("chk-{} ({})", s.checkpoint_id, s.reason))
            .collect();
        let mut sources = RestoreSources::default();
        for b in &backends {
            sources.merge(b.restore_sources());
        }
        let task = Task::new(backends, router, self.args.ttl_ms)?;
        let entries = task.entries();
        let local = if self.args.local_recovery_dir.is_some() {
            format!(
                ", files: {} local, {} from storage ({} local copies missing or damaged)",
                sources.local_files,
                sources.remote_files,
                sources.fallbacks.len()
            )
        } else {
            String::new()
        };
        self.restores.push(format!(
            "attempt {attempt}: restored checkpoint {} at parallelism {parallelism} in {:.1} ms, {entries} entries, source offset {offset}{local}{}",
            outcome.checkpoint_id,
            started.elapsed().as_secs_f64() * 1e3,
            if skipped.is_empty() { String::new() } else { format!(", skipped unreadable {}", skipped.join(", ")) }
        ));
        Ok(task)
    }

    /// The settings of the job's backends (every subtask's alike).
    fn backend_config(&self) -> statebackend::Result<StateBackendConfig> {
        let local_recovery_dir = self.args.local_recovery_dir.clone();
        Ok(StateBackendConfig {
            kind: self.args.backend.parse()?,
            rocksdb: RocksDbConfig {
                local_dir: self.args.local_dir.clone().unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("statebackend-{}", self.args.job_id))
                }),
                local_recovery_dir: local_recovery_dir.clone(),
                ..RocksDbConfig::default()
            },
            heap: HeapConfig {
                local_recovery_dir,
                incremental: self.args.heap_incremental,
                ..HeapConfig::default()
            },
        })
    }

    fn run_attempt(
        &mut self,
        attempt: u32,
        parallelism: u32,
        max_parallelism: u32,
        source: &mut Source,
    ) -> statebackend::Result<AttemptEnd> {
        let mut task = self.start_task(parallelism, max_parallelism, source, attempt)?;
        // Event time resumes where the restored checkpoint left it.
        task.set_event_time(source.offset());
        let fail_after = self.args.fail_after.get(attempt as usize - 1).copied();
        let mut line = String::new();
        let mut processed = 0u64;
        let mut since_checkpoint = 0u64;
        let mut in_flight: Option<InFlight> = None;
        while source.next_line(&mut line).map_err(io_err)? {
            // A line's event time is its source offset (only read with `--ttl-ms`).
            task.set_event_time(source.offset());
            for word in words(&line) {
                task.count(word)?;
            }
            processed += 1;
            since_checkpoint += 1;
            if self.args.stop_after == Some(processed) {
                break;
            }
            if fail_after == Some(processed) {
                if let Some(flight) = in_flight.take() {
                    // The failure interrupts the checkpoint: wait for its writers, then abort it.
                    for handle in flight.tasks {
                        let _ = self.rt.block_on(handle);
                    }
                    self.rt.block_on(self.coordinator.abort(flight.id))?;
                }
                return Ok(AttemptEnd::Failed(format!(
                    "attempt {attempt} failed on purpose after {processed} records"
                )));
            }
            // Complete a checkpoint as soon as its asynchronous phases are done (checked every 1024 records).
            if processed.is_multiple_of(1024)
                && in_flight
                    .as_ref()
                    .is_some_and(|f| f.tasks.iter().all(|t| t.is_finished()))
                && let Some(flight) = in_flight.take()
            {
                self.complete(&mut task, flight)?;
            }
            if since_checkpoint >= self.args.checkpoint_every {
                since_checkpoint = 0;
                if let Some(flight) = in_flight.take() {
                    self.complete(&mut task, flight)?;
                }
                let id = self.rt.block_on(self.coordinator.trigger())?;
                let mut tasks = Vec::new();
                for b in &mut task.backends {
                    let pending = b.snapshot(id, &self.storage)?;
                    tasks.push(self.rt.spawn(pending.run()));
                }
                in_flight = Some(InFlight {
                    id,
                    offset: source.offset(),
                    tasks,
                });
            }
        }
        if let Some(flight) = in_flight.take() {
            self.complete(&mut task, flight)?;
        }
        if let Some(dir) = self.args.stop_with_savepoint.clone() {
            let at = self.stop_with_savepoint(&mut task, source.offset(), &dir)?;
            println!(
                "stopped with savepoint at source offset {}: {at}",
                source.offset()
            );
        }
        Ok(AttemptEnd::Finished(task.results()?))
    }
}

/// Runs the orphan sweep and says what it deleted or why it could not. The sweep is safe to repeat: a
/// failed attempt (an S3 bulk delete that timed out, perhaps after it took effect) is tried again, up to
/// three attempts.
fn sweep(
    rt: &tokio::runtime::Runtime,
    coordinator: &mut CheckpointCoordinator,
    min_age: Duration,
    when: &str,
) -> Result<SweepReport, String> {
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    let report = loop {
        match rt.block_on(coordinator.sweep_orphans(min_age)) {
            Ok(report) => break report,
            Err(e) if attempt < ATTEMPTS => {
                println!("orphan sweep at {when}: attempt {attempt} failed ({e}); trying again");
                attempt += 1;
            }
            Err(e) => return Err(format!("orphan sweep at {when}: {e}")),
        }
    };
    if !report.deleted.is_empty() {
        println!(
            "orphan sweep at {when}: deleted {} file(s) no checkpoint references",
            report.deleted.len()
        );
    }
    if !report.blocked_by_unreadable.is_empty() {
        println!(
            "orphan sweep at {when}: deleted nothing while checkpoint(s) {:?} are unreadable",
            report.blocked_by_unreadable
        );
    }
    Ok(report)
}

fn io_err(e: std::io::Error) -> statebackend::Error {
    statebackend::Error::InvalidArgument(format!("source: {e}"))
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("wordcount failed: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    // Every flag is checked before storage is touched (clap checks each one's range).
    let restart = args.validate()?;
    let mut source = open_source(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let storage = CheckpointStorage::from_url(
        &args.checkpoint_dir,
        &args.job_id,
        &StorageConfig::default(),
    )
    .map_err(|e| e.to_string())?;
    if !args.resume {
        let old = rt
            .block_on(CheckpointCoordinator::open(
                storage.clone(),
                CoordinatorConfig::single_operator(OPERATOR, 1, args.retained.max(1)),
            ))
            .map_err(|e| e.to_string())?;
        let n = old.store().checkpoints().count();
        if n > 0 {
            println!(
                "starting from scratch: deleting {n} checkpoint(s) of an earlier run of job `{}` (use --resume to continue it)",
                args.job_id
            );
        }
        rt.block_on(old.shutdown(CancellationPolicy::DeleteOnCancellation))
            .map_err(|e| e.to_string())?;
    }
    let mut parallelism = args.parallelism;
    let max_parallelism = match (&args.from_savepoint, args.max_parallelism) {
        (_, Some(max)) => max,
        // Key groups are fixed for a job's life: a job continuing a savepoint keeps its max parallelism.
        (Some(dir), None) => {
            let at = SnapshotLocation::parse(dir, &StorageConfig::default())
                .map_err(|e| e.to_string())?;
            let meta = rt
                .block_on(at.read_metadata())
                .map_err(|e| format!("savepoint {dir}: {e}"))?;
            meta.keyed_handles(OPERATOR)
                .first()
                .map(|h| h.max_parallelism)
                .ok_or_else(|| format!("savepoint {dir} has no state of operator {OPERATOR}"))?
        }
        (None, None) => default_max_parallelism(parallelism.max(args.rescale_to.unwrap_or(0))),
    };
    let mut coordinator = rt
        .block_on(CheckpointCoordinator::open(
            storage.clone(),
            CoordinatorConfig::single_operator(OPERATOR, parallelism, args.retained),
        ))
        .map_err(|e| e.to_string())?;
    let root = format!(
        "{}/{}",
        args.checkpoint_dir.trim_end_matches('/'),
        args.job_id
    );
    let unreadable: Vec<String> = coordinator
        .store()
        .unreadable()
        .iter()
        .map(|s| format!("chk-{} ({})", s.checkpoint_id, s.reason))
        .collect();
    for u in &unreadable {
        println!("skipping unreadable checkpoint {u}");
    }
    if args.resume && coordinator.store().latest().is_none() {
        if !unreadable.is_empty() {
            return Err(format!(
                "nothing to resume from in {}: no checkpoint is readable ({}); refusing to start from scratch over checkpoints this build cannot read",
                root,
                unreadable.join(", ")
            ));
        }
        println!(
            "nothing to resume from: job `{}` has no completed checkpoint in {}; starting from the beginning",
            args.job_id, root
        );
    }
    let min_age = Duration::from_millis(args.sweep_min_age_ms);
    sweep(&rt, &mut coordinator, min_age, "start")?;
    let mut job = Job {
        args,
        rt,
        storage,
        coordinator,
        completed: Vec::new(),
        restores: Vec::new(),
    };
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut attempt = 1;
    let result = loop {
        match job
            .run_attempt(attempt, parallelism, max_parallelism, &mut source)
            .map_err(|e| e.to_string())?
        {
            AttemptEnd::Finished(result) => break result,
            AttemptEnd::Failed(why) => {
                println!("{why}");
                failures.push(Instant::now());
                let Some(delay) = restart.next(&failures) else {
                    return Err(format!("{why}; restart strategy {:?} gives up", restart));
                };
                std::thread::sleep(delay);
                attempt += 1;
                if let Some(p) = job.args.rescale_to.take() {
                    parallelism = p;
                    let retained = job.args.retained;
                    let storage = job.storage.clone();
                    job.coordinator = job
                        .rt
                        .block_on(CheckpointCoordinator::open(
                            storage,
                            CoordinatorConfig::single_operator(OPERATOR, p, retained),
                        ))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    };
    let elapsed = started.elapsed();

    if let Some(path) = &job.args.output {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        for (word, count) in &result {
            writeln!(out, "{word}\t{count}").map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
    }

    println!(
        "\ncheckpoints ({} backend, checkpoint dir {}/{}):",
        job.args.backend,
        job.args.checkpoint_dir.trim_end_matches('/'),
        job.args.job_id
    );
    println!(
        "{:>4} {:>9} {:>10} {:>14} {:>12} {:>12} {:>8} {:>7} {:>16}",
        "id",
        "sync ms",
        "async ms",
        "checkpointed B",
        "full B",
        "state B",
        "uploaded",
        "reused",
        "registry files/B"
    );
    for c in &job.completed {
        println!(
            "{:>4} {:>9.3} {:>10.1} {:>14} {:>12} {:>12} {:>8} {:>7} {:>16}",
            c.checkpoint_id,
            c.sync_duration.as_secs_f64() * 1e3,
            c.async_duration.as_secs_f64() * 1e3,
            c.checkpointed_bytes,
            c.full_bytes,
            c.state_bytes,
            c.files_uploaded,
            c.files_reused,
            format!("{}/{}", c.registry.files, c.registry.bytes)
        );
    }
    println!("restores:");
    if job.restores.is_empty() {
        println!("  none");
    }
    for r in &job.restores {
        println!("  {r}");
    }
    let policy = if job.args.delete_checkpoints {
        CancellationPolicy::DeleteOnCancellation
    } else {
        CancellationPolicy::RetainOnCancellation
    };
    let ttl_ms = job.args.ttl_ms;
    let Job {
        rt,
        mut coordinator,
        ..
    } = job;
    if policy == CancellationPolicy::RetainOnCancellation {
        sweep(&rt, &mut coordinator, min_age, "end")?;
        // What storage holds now, from a second sweep (which finds nothing more to delete).
        let after = sweep(&rt, &mut coordinator, min_age, "end, again")?;
        println!(
            "storage after the sweep: {} files, {} of retained checkpoints (state, metadata, markers), {} kept unreferenced (the id watermark, or younger than --sweep-min-age-ms), {} deleted",
            after.listed,
            after.referenced,
            after.too_young,
            after.deleted.len()
        );
    }
    rt.block_on(coordinator.shutdown(policy))
        .map_err(|e| e.to_string())?;

    // Where the job stopped: the end of the input, or the savepoint it stopped with.
    let end = source.offset();
    let (expected, total, expired) =
        single_pass_count(&mut source, end, ttl_ms).map_err(|e| e.to_string())?;
    let got_total: u64 = result.values().sum();
    let mismatches = expected
        .iter()
        .filter(|(w, c)| result.get(*w) != Some(c))
        .count()
        + result.keys().filter(|w| !expected.contains_key(*w)).count();
    println!(
        "processed in {:.2} s ({} attempts)",
        elapsed.as_secs_f64(),
        attempt
    );
    let counted: u64 = expected.values().sum();
    if mismatches > 0 || got_total != counted {
        return Err(format!(
            "counts differ from a single-pass count: {mismatches} words differ, {got_total} counted vs {counted} expected"
        ));
    }
    match ttl_ms {
        None => println!(
            "verified: {total} words, {} distinct, exactly-once",
            expected.len()
        ),
        Some(ttl) => println!(
            "verified: {total} words, {} distinct counts live, exactly-once with a TTL of {ttl} (event time: source offsets); {} counts expired on the way",
            expected.len(),
            expired
        ),
    }
    Ok(())
}

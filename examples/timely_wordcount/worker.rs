//! One timely worker: agree on the restore point, restore, run the dataflow, write the final counts.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use statebackend::keyed::TimerServiceDescriptor;
use statebackend::rocksdb::{MemoryBudget, RocksDbConfig};
use statebackend::*;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Concat, Input, Operator, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;

use crate::args::Args;
use crate::checkpointing::{self, AckRecord, COUNT};
use crate::count::{Counter, Counting, Counts, Env, Firing, Record};
use crate::source::{self, Split};
use crate::windows::{self, WatermarkRecord, Watermarks, WindowSink};

/// A timely input of `D` records at `u64` epochs.
type In<D> = InputHandle<u64, CapacityContainerBuilder<Vec<D>>>;

/// Words each split emits per round of the source loop.
const CHUNK: u64 = 256;
/// "No checkpoint to restore" in the restore decision.
const NONE: u64 = u64::MAX;

/// Runs worker `worker.index()`; returns the number of words its sources emitted.
pub(crate) fn run(
    worker: &mut Worker,
    args: &Args,
    rt: &tokio::runtime::Handle,
    budget: &MemoryBudget,
) -> Result<u64, String> {
    let index = worker.index() as u32;
    let peers = worker.peers() as u32;
    let storage = checkpointing::storage(args).map_err(|e| e.to_string())?;

    // Worker 0 opens the coordinator, picks the checkpoint to restore and the first epoch (= the id of
    // the first checkpoint it triggers), and tells every worker.
    let mut coordinator = None;
    let mut decision = (NONE, 1u64);
    if index == 0 && (args.checkpointing() || args.resume) {
        let mut c = rt
            .block_on(checkpointing::open_coordinator(&storage, peers))
            .map_err(|e| format!("coordinator: {e}"))?;
        if args.resume
            && let Some(latest) = c.store().latest().cloned()
        {
            decision.0 = latest.checkpoint_id;
            // The job's line continues from it: ids above it, a newer checkpoint (if any) abandoned.
            rt.block_on(c.restored_from(&latest, RestoreMode::Claim))
                .map_err(|e| format!("coordinator: {e}"))?;
        }
        if args.checkpointing() {
            decision.1 = rt.block_on(c.trigger()).map_err(|e| e.to_string())?;
            coordinator = Some(c);
        }
    }
    if index == 0 && args.firing_windows() {
        // Before any worker emits: the output agrees with the restore point.
        let restored = (decision.0 != NONE).then_some(decision.0);
        windows::prepare_output(&args.output_dir, restored)
            .map_err(|e| format!("{}: {e}", args.output_dir.display()))?;
    }
    let (restore_id, first_epoch) = agree(worker, index, peers, decision);
    let restored = match restore_id {
        NONE => None,
        id => Some(
            rt.block_on(storage.read_checkpoint_metadata(id))
                .map_err(|e| format!("checkpoint {id}: {e}"))?,
        ),
    };
    if index == 0 {
        eprintln!(
            "{peers} workers, restoring {}, first epoch {first_epoch}",
            restored.as_ref().map_or("nothing".into(), |m| format!(
                "checkpoint {}",
                m.checkpoint_id
            ))
        );
    }

    let identity = SubtaskIdentity::new(COUNT, args.max_parallelism, peers, index)
        .map_err(|e| e.to_string())?;
    let config = StateBackendConfig {
        kind: args.backend,
        rocksdb: RocksDbConfig {
            local_dir: args.local_dir.clone().unwrap_or_else(std::env::temp_dir),
            ..RocksDbConfig::default()
        },
        ..StateBackendConfig::default()
    };
    let backend = match &restored {
        Some(meta) => rt
            .block_on(StateBackend::restore_checkpoint_with_memory_budget(
                &identity,
                &config,
                budget,
                &storage,
                meta,
                RestoreMode::Claim,
            ))
            .map_err(|e| format!("restore: {e}"))?,
        None => StateBackend::with_memory_budget(&identity, &config, budget)
            .map_err(|e| e.to_string())?,
    };
    let splits = match &restored {
        Some(meta) => checkpointing::restored_splits(meta, index, peers)
            .map_err(|e| format!("source state: {e}"))?
            .into_iter()
            .map(|(index, next)| Split { index, next })
            .collect(),
        None => source::assign(args.splits, index, peers),
    };
    let router = KeyGroupRouter::new(args.max_parallelism, peers).map_err(|e| e.to_string())?;

    let mut backend = Some(backend);
    let results: Rc<RefCell<Option<Counts>>> = Rc::default();
    let coordinator = Rc::new(RefCell::new(coordinator));
    let mut words = In::<Record>::new();
    let mut marks = In::<WatermarkRecord>::new();
    let mut source_acks = In::<AckRecord>::new();
    let probe = ProbeHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let backend = backend.take().expect("built once");
        let counting = counting(args, backend, index, peers);
        let (backend, counting) = match counting {
            Ok(c) => c,
            Err(e) => panic!("registering the state: {e}"),
        };
        let out = results.clone();
        let (store, handle, checkpointing) = (storage.clone(), rt.clone(), args.checkpointing());
        let watermarks = scope.input_from(&mut marks);
        let count_acks = scope
            .input_from(&mut words)
            .binary_frontier(
                watermarks,
                Exchange::new(move |r: &Record| u64::from(router.route_hash(r.1).subtask())),
                Exchange::new(|m: &WatermarkRecord| u64::from(m.0)),
                "Count",
                |cap, info| {
                    let activator = scope.activator_for(info.address.clone());
                    let mut cap = Some(cap);
                    let env = Env {
                        storage: store,
                        runtime: handle,
                        worker: index,
                        checkpointing,
                    };
                    let mut counter = Counter::new(backend, counting, router, env, first_epoch);
                    let mut acks = Vec::new();
                    // Records of epochs after the earliest open one wait here: a checkpoint's state must
                    // hold exactly the epochs up to its id (the barrier alignment of Flink).
                    let mut stash: BTreeMap<u64, Vec<Record>> = BTreeMap::new();
                    let mut finished = false;
                    move |(input, frontier), (marks, marks_frontier), output| {
                        marks.for_each(|stamp, data| {
                            let time = stamp.least().copied().unwrap_or(0);
                            for (_, source, position) in data.drain(..) {
                                counter.add_watermark(time, source, position);
                            }
                        });
                        let lower = match (
                            frontier.frontier().first(),
                            marks_frontier.frontier().first(),
                        ) {
                            (Some(a), Some(b)) => Some(*a.min(b)),
                            (a, b) => a.or(b).copied(),
                        };
                        let open = lower.unwrap_or(u64::MAX);
                        // Epochs before the frontier are complete: count what waited, then snapshot.
                        while let Some(mut entry) = stash.first_entry() {
                            if *entry.key() >= open {
                                break;
                            }
                            if let Err(e) = counter.count(entry.get_mut()) {
                                panic!("worker {index}: counting: {e}");
                            }
                            entry.remove();
                        }
                        counter.advance_watermark(open);
                        if let Some(done) = lower.and_then(|t| t.checked_sub(1))
                            && counter.env.checkpointing
                            && done >= counter.next_checkpoint
                        {
                            counter.snapshot(done);
                        }
                        // Windows the watermark passed, a batch at a time: barriers wait at most a batch.
                        match counter.fire(false) {
                            Ok(true) => activator.activate(),
                            Ok(false) => {}
                            Err(e) => panic!("worker {index}: firing windows: {e}"),
                        }
                        input.for_each(|stamp, data| {
                            let time = stamp.least().copied().unwrap_or(open);
                            if time <= open {
                                if let Err(e) = counter.count(data) {
                                    panic!("worker {index}: counting: {e}");
                                }
                            } else {
                                stash.entry(time).or_default().append(data);
                            }
                        });
                        counter.poll(cap.as_ref(), &mut acks);
                        if let Some(c) = cap.as_mut() {
                            if !acks.is_empty() {
                                output.session(c).give_iterator(acks.drain(..));
                            }
                            if let Some(t) = lower
                                && *c.time() < t
                            {
                                c.downgrade(&t);
                            }
                        }
                        if lower.is_none() {
                            if !finished {
                                // The end of input: every window is emitted, however many are left.
                                loop {
                                    match counter.fire(true) {
                                        Ok(true) => {}
                                        Ok(false) => break,
                                        Err(e) => panic!("worker {index}: firing windows: {e}"),
                                    }
                                }
                                if let Err(e) = counter.finish_output() {
                                    panic!("worker {index}: writing the windows: {e}");
                                }
                                finished = true;
                            }
                            if out.borrow().is_none() {
                                match counter.results() {
                                    Ok(r) => *out.borrow_mut() = Some(r),
                                    Err(e) => panic!("worker {index}: reading the counts: {e}"),
                                }
                            }
                            if counter.running == 0 {
                                cap = None;
                            }
                        }
                        if counter.running > 0 || counter.waiting > 0 {
                            activator.activate();
                        }
                    }
                },
            )
            .probe_with(&probe);
        let coordinator = coordinator.clone();
        let handle = rt.clone();
        count_acks.concat(scope.input_from(&mut source_acks)).sink(
            Exchange::new(|_: &AckRecord| 0),
            "Coordinator",
            move |(input, _)| {
                input.for_each(|_, data| {
                    for record in data.drain(..) {
                        if let Some(c) = coordinator.borrow_mut().as_mut() {
                            handle.block_on(checkpointing::acknowledge(c, &record));
                        }
                    }
                });
            },
        );
    });

    let emitted = run_source(
        worker,
        args,
        rt,
        index,
        router,
        splits,
        first_epoch,
        &mut words,
        &mut marks,
        &mut source_acks,
        &probe,
        &coordinator,
    )?;
    words.close();
    marks.close();
    source_acks.close();
    while worker.step() {}
    write_results(
        args,
        index,
        peers,
        results.borrow_mut().take().unwrap_or_default(),
    )?;
    Ok(emitted)
}

/// Worker 0's decision `(restore checkpoint or NONE, first epoch)`, sent to every worker.
fn agree(worker: &mut Worker, index: u32, peers: u32, decision: (u64, u64)) -> (u64, u64) {
    let got: Rc<RefCell<Option<(u64, u64)>>> = Rc::default();
    let mut input = In::<(u64, u64, u64)>::new();
    let sink = got.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        scope.input_from(&mut input).sink(
            Exchange::new(|m: &(u64, u64, u64)| m.0),
            "Decision",
            move |(input, _)| {
                input.for_each(|_, data| {
                    for (_, restore, first) in data.drain(..) {
                        *sink.borrow_mut() = Some((restore, first));
                    }
                });
            },
        );
    });
    if index == 0 {
        for to in 0..peers {
            input.send((u64::from(to), decision.0, decision.1));
        }
    }
    input.close();
    while got.borrow().is_none() {
        worker.step();
    }
    got.borrow().expect("received")
}

/// Registers the counting state (and the windows' timers) on `backend` of worker `index` of `peers`.
fn counting(
    args: &Args,
    mut backend: StateBackend<String>,
    index: u32,
    peers: u32,
) -> Result<(StateBackend<String>, Counting)> {
    let counting = match args.window_ms {
        None => Counting::Total(backend.reducing_state(&ReducingStateDescriptor::new(
            "counts",
            |a: &u64, b: &u64| a + b,
        ))?),
        Some(window_ms) => Counting::Windows {
            state: backend.reducing_state(&ReducingStateDescriptor::new(
                "window-counts",
                |a: &u64, b: &u64| a + b,
            ))?,
            window_ms,
            firing: match args.windows_at_end {
                true => None,
                false => Some(Firing {
                    timers: backend.timer_service(&TimerServiceDescriptor::new("windows"))?,
                    watermarks: Watermarks::new(peers),
                    watermark: 0,
                    sink: WindowSink::new(&args.output_dir, index, peers),
                }),
            },
        },
    };
    Ok((backend, counting))
}

/// The source loop: emits the splits' words in chunks, ends an epoch every `--epoch-ms` (acknowledging
/// its offsets; worker 0 triggers the next checkpoint), and keeps at most two epochs ahead of counting.
#[allow(clippy::too_many_arguments, reason = "the worker's parts, passed once")]
fn run_source(
    worker: &mut Worker,
    args: &Args,
    rt: &tokio::runtime::Handle,
    index: u32,
    router: KeyGroupRouter,
    mut splits: Vec<Split>,
    first_epoch: u64,
    words: &mut In<Record>,
    marks: &mut In<WatermarkRecord>,
    acks: &mut In<AckRecord>,
    probe: &ProbeHandle<u64>,
    coordinator: &Rc<RefCell<Option<CheckpointCoordinator>>>,
) -> Result<u64, String> {
    let epoch_length = Duration::from_millis(args.epoch_ms);
    let mut epoch = first_epoch;
    words.advance_to(epoch);
    marks.advance_to(epoch);
    acks.advance_to(epoch);
    let peers = worker.peers() as u32;
    // The least position not yet emitted of this source's splits (`u64::MAX`: none left), to every
    // counting worker, at the end of each epoch: the watermark (`windows.rs`).
    let send_watermark = |marks: &mut In<WatermarkRecord>, splits: &[Split]| {
        if args.firing_windows() {
            let least = splits
                .iter()
                .filter(|s| s.next < args.words_per_split)
                .map(|s| s.next)
                .min()
                .unwrap_or(u64::MAX);
            for to in 0..peers {
                marks.send((to, index, least));
            }
        }
    };
    let mut epoch_start = Instant::now();
    let mut emitted = 0u64;
    loop {
        let mut more = false;
        for split in &mut splits {
            let end = (split.next + CHUNK).min(args.words_per_split);
            for position in split.next..end {
                let text = source::word_text(source::word_at(
                    args.seed,
                    split.index,
                    position,
                    args.distinct,
                ));
                let hash = router.route(&text).hash();
                words.send((text, hash, position));
            }
            emitted += end - split.next;
            split.next = end;
            more |= end < args.words_per_split;
        }
        let offsets = || -> Vec<(u32, u64)> { splits.iter().map(|s| (s.index, s.next)).collect() };
        if !more {
            send_watermark(marks, &splits);
            // The last epoch of this source is acknowledged with the final offsets, so its checkpoint can
            // complete. Checkpoints of later epochs (other sources still running) cannot: this source has
            // finished, as Flink before FLIP-147 (checkpoints after some tasks finished).
            if args.checkpointing() {
                acks.send(checkpointing::source_ack(epoch, index, &offsets()));
            }
            return Ok(emitted);
        }
        if epoch_start.elapsed() >= epoch_length {
            send_watermark(marks, &splits);
            if args.checkpointing() {
                acks.send(checkpointing::source_ack(epoch, index, &offsets()));
                if let Some(c) = coordinator.borrow_mut().as_mut() {
                    for id in rt.block_on(c.abort_expired()) {
                        eprintln!("checkpoint {id} expired");
                    }
                    let next = rt.block_on(c.trigger()).map_err(|e| e.to_string())?;
                    if next != epoch + 1 {
                        eprintln!(
                            "checkpoint ids and epochs diverged: triggered {next} for epoch {}",
                            epoch + 1
                        );
                    }
                }
            }
            epoch += 1;
            words.advance_to(epoch);
            marks.advance_to(epoch);
            acks.advance_to(epoch);
            epoch_start = Instant::now();
        }
        // Backpressure: counting may lag at most two epochs.
        while probe.less_than(&epoch.saturating_sub(2)) {
            worker.step();
        }
        worker.step();
    }
}

fn write_results(
    args: &Args,
    index: u32,
    peers: u32,
    counts: Vec<(String, u64, u64)>,
) -> Result<(), String> {
    std::fs::create_dir_all(&args.output_dir).map_err(|e| e.to_string())?;
    let path = args
        .output_dir
        .join(format!("counts-{index}-of-{peers}.tsv"));
    let tmp = path.with_extension("tmp");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| e.to_string())?);
    for (word, window, count) in counts {
        writeln!(file, "{word}\t{window}\t{count}").map_err(|e| e.to_string())?;
    }
    file.into_inner()
        .map_err(|e| e.to_string())?
        .sync_all()
        .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
}

//! The counting operator: keyed state in a `StateBackend`; the frontier passing an epoch is its
//! checkpoint barrier (synchronous phase in the operator, asynchronous phase on tokio, acknowledgement as
//! an output record, confirmation by polling storage for the checkpoint's `_metadata`).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use statebackend::keyed::{Fired, Timer, TimerService};
use statebackend::*;
use timely::dataflow::operators::Capability;

use crate::checkpointing::{AckRecord, COUNT, encode_ack};
use crate::windows::{Watermarks, WindowSink};

/// Timers fired per activation of the operator at most: barriers and records wait no longer than that.
const FIRE_BATCH: usize = 10_000;

/// A word record: the word, its stable hash (computed once at the source, used by the exchange and by
/// state access) and its event time (its position in its split, in ms).
pub(crate) type Record = (String, u64, u64);

/// Both ends of a channel from tokio tasks back to the operator.
type Channel<T> = (mpsc::Sender<T>, mpsc::Receiver<T>);

/// The final counts of a task: `(word, window, count)`, window 0 without windows.
pub(crate) type Counts = Vec<(String, u64, u64)>;

/// Where a counting task checkpoints to and runs its asynchronous phases.
pub(crate) struct Env {
    pub(crate) storage: CheckpointStorage,
    pub(crate) runtime: tokio::runtime::Handle,
    /// The task's index (= worker index).
    pub(crate) worker: u32,
    /// Whether the job checkpoints.
    pub(crate) checkpointing: bool,
}

/// How the operator counts.
pub(crate) enum Counting {
    /// One total per word.
    Total(ReducingState<VoidNamespace, u64>),
    /// One count per word and tumbling window (namespace: the window's index).
    Windows {
        state: ReducingState<u64, u64>,
        window_ms: u64,
        /// `None`: every window is emitted at the end of input; else windows are emitted as the
        /// watermark passes their end, by a timer per word and window.
        firing: Option<Firing>,
    },
}

/// Windows emitted by timers as the watermark passes them (`windows.rs`).
pub(crate) struct Firing {
    pub(crate) timers: TimerService<u64>,
    pub(crate) watermarks: Watermarks,
    /// The watermark of the epochs counted so far.
    pub(crate) watermark: u64,
    pub(crate) sink: WindowSink,
}

/// State of one counting task.
pub(crate) struct Counter {
    pub(crate) backend: StateBackend<String>,
    pub(crate) counting: Counting,
    pub(crate) router: KeyGroupRouter,
    pub(crate) env: Env,
    /// Epochs from this one on are checkpoints not yet snapshotted.
    pub(crate) next_checkpoint: u64,
    results: Channel<(u64, statebackend::Result<SnapshotResult>)>,
    confirmations: Channel<(u64, bool)>,
    /// Asynchronous phases running (their acknowledgements need the output capability).
    pub(crate) running: usize,
    /// Confirmations being waited for.
    pub(crate) waiting: usize,
    keys: Vec<String>,
    ones: Vec<u64>,
}

impl Counter {
    pub(crate) fn new(
        backend: StateBackend<String>,
        counting: Counting,
        router: KeyGroupRouter,
        env: Env,
        first_checkpoint: u64,
    ) -> Self {
        Counter {
            backend,
            counting,
            router,
            env,
            next_checkpoint: first_checkpoint,
            results: mpsc::channel(),
            confirmations: mpsc::channel(),
            running: 0,
            waiting: 0,
            keys: Vec::new(),
            ones: Vec::new(),
        }
    }

    /// Counts a batch of records.
    pub(crate) fn count(&mut self, records: &mut Vec<Record>) -> statebackend::Result<()> {
        match &self.counting {
            Counting::Total(state) => {
                // Batch access: one call per timely batch.
                self.keys.clear();
                self.keys.extend(records.drain(..).map(|(word, _, _)| word));
                self.ones.clear();
                self.ones.resize(self.keys.len(), 1);
                state.add_batch(&mut self.backend, &VoidNamespace, &self.keys, &self.ones)
            }
            Counting::Windows {
                state,
                window_ms,
                firing,
            } => {
                // Per record, located by the hash the source computed: no second hash of the word.
                for (word, hash, event_time) in records.drain(..) {
                    let route = self.router.route_hash(hash);
                    self.backend.set_current_key_routed(word, route)?;
                    let window = event_time / window_ms;
                    // One lookup says whether this is its window's first word.
                    let first = state.add_first(&mut self.backend, &window, 1)?;
                    if let Some(f) = firing
                        && first
                    {
                        // A timer at the window's last millisecond, so it fires once the watermark is
                        // past it (later words find it registered).
                        let end = (window + 1).saturating_mul(*window_ms) - 1;
                        f.timers
                            .register_event_time(&mut self.backend, &window, end)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// A watermark record of epoch `epoch` from source `source`.
    pub(crate) fn add_watermark(&mut self, epoch: u64, source: u32, position: u64) {
        if let Counting::Windows {
            firing: Some(f), ..
        } = &mut self.counting
        {
            f.watermarks.add(epoch, source, position);
        }
    }

    /// The watermark moved on with the epochs before `open`.
    pub(crate) fn advance_watermark(&mut self, open: u64) {
        if let Counting::Windows {
            firing: Some(f), ..
        } = &mut self.counting
        {
            f.watermark = f.watermarks.advance(open);
        }
    }

    /// Emits the windows the watermark passed (all of them at the end of input), at most
    /// [`FIRE_BATCH`]; whether due ones remain (the operator is activated again).
    pub(crate) fn fire(&mut self, end_of_input: bool) -> statebackend::Result<bool> {
        let Counter {
            backend, counting, ..
        } = self;
        let Counting::Windows {
            state,
            firing: Some(f),
            ..
        } = counting
        else {
            return Ok(false);
        };
        let Some(time) = (if end_of_input {
            Some(u64::MAX)
        } else {
            f.watermark.checked_sub(1)
        }) else {
            return Ok(false);
        };
        let sink = &mut f.sink;
        let fired =
            f.timers
                .fire_event_time(backend, time, FIRE_BATCH, |b, t: Timer<String, u64>| {
                    let count = state.get(b, &t.namespace)?.unwrap_or(0);
                    state.clear(b, &t.namespace)?;
                    sink.emit(t.key, t.namespace, count);
                    Ok(())
                })?;
        Ok(fired == Fired::More)
    }

    /// The end of input, all windows emitted: the emitted windows become output.
    pub(crate) fn finish_output(&mut self) -> std::io::Result<()> {
        match &mut self.counting {
            Counting::Windows {
                firing: Some(f), ..
            } => f.sink.finish(),
            _ => Ok(()),
        }
    }

    /// Synchronous phase of checkpoint `id` (every record of epochs up to `id` is counted); the
    /// asynchronous phase goes to tokio. Windows emitted since the last checkpoint are staged with it.
    pub(crate) fn snapshot(&mut self, id: u64) {
        self.next_checkpoint = id + 1;
        match self.backend.snapshot(id, &self.env.storage) {
            Ok(pending) => {
                if let Counting::Windows {
                    firing: Some(f), ..
                } = &mut self.counting
                    && let Err(e) = f.sink.stage(id)
                {
                    // Not acknowledged: the checkpoint never completes, the job restarts from an
                    // earlier one.
                    panic!(
                        "worker {}: staging the windows of checkpoint {id}: {e}",
                        self.env.worker
                    );
                }
                let tx = self.results.0.clone();
                self.running += 1;
                self.env.runtime.spawn(async move {
                    let _ = tx.send((id, pending.run().await));
                });
            }
            Err(e) => eprintln!("worker {}: checkpoint {id} declined: {e}", self.env.worker),
        }
    }

    /// Acknowledgements of finished asynchronous phases, and confirmations that arrived.
    pub(crate) fn poll(&mut self, cap: Option<&Capability<u64>>, out: &mut Vec<AckRecord>) {
        while let Ok((id, done)) = self.confirmations.1.try_recv() {
            self.waiting -= 1;
            if done {
                self.backend.notify_checkpoint_complete(id);
                if let Counting::Windows {
                    firing: Some(f), ..
                } = &mut self.counting
                    && let Err(e) = f.sink.commit_through(id)
                {
                    panic!(
                        "worker {}: committing the windows of checkpoint {id}: {e}",
                        self.env.worker
                    );
                }
            } else {
                self.backend.notify_checkpoint_aborted(id);
            }
        }
        if cap.is_none() {
            return;
        }
        while let Ok((id, result)) = self.results.1.try_recv() {
            self.running -= 1;
            match result {
                Ok(result) => {
                    out.push(encode_ack(
                        id,
                        TaskStateSnapshot {
                            operator_id: COUNT.into(),
                            subtask_index: self.env.worker,
                            keyed_state: Some(result.handle),
                            ..Default::default()
                        },
                        Some(&result.metrics),
                    ));
                    self.waiting += 1;
                    self.wait_for_completion(id);
                }
                Err(e) => {
                    eprintln!("worker {}: checkpoint {id} failed: {e}", self.env.worker);
                    self.backend.notify_checkpoint_aborted(id);
                }
            }
        }
    }

    /// Polls storage for the checkpoint's `_metadata` (the coordinator writes it on completion) for up to
    /// the coordinator's timeout.
    fn wait_for_completion(&self, id: u64) {
        let storage = self.env.storage.clone();
        let tx = self.confirmations.0.clone();
        self.env.runtime.spawn(async move {
            let start = Instant::now();
            let done = loop {
                if storage.checkpoint_completed(id).await.unwrap_or(false) {
                    break true;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let _ = tx.send((id, done));
        });
    }

    /// The final counts of this task: `(word, window, count)` (window 0 without windows).
    pub(crate) fn results(&mut self) -> statebackend::Result<Counts> {
        let mut out = Vec::new();
        match &self.counting {
            Counting::Total(state) => {
                let words = state.keys_with_state(&self.backend, &VoidNamespace)?;
                let mut counts = Vec::with_capacity(words.len());
                state.get_batch(&self.backend, &VoidNamespace, &words, &mut counts)?;
                for (word, count) in words.into_iter().zip(counts) {
                    out.push((word, 0, count.unwrap_or(0)));
                }
            }
            // Emitted as the watermark passed them.
            Counting::Windows {
                firing: Some(_), ..
            } => {}
            Counting::Windows { state, .. } => {
                for (word, window) in state.keys_and_namespaces(&self.backend)? {
                    self.backend.set_current_key(word.clone())?;
                    let count = state.get(&self.backend, &window)?.unwrap_or(0);
                    out.push((word, window, count));
                }
            }
        }
        Ok(out)
    }
}

//! Timers: the semantics every backend must have (set semantics, deletes, order, bounded firing with the
//! fired key current), and a property test of random register / delete / fire-until operations through
//! checkpoints, restores at 1, 2 or 3 subtasks and canonical savepoints that switch the backend, checked
//! against a `BTreeSet<(timestamp, key, namespace)>` model.

use std::collections::BTreeSet;

use crate::common::*;
use proptest::prelude::*;
use statebackend::keyed::{Fired, TimeDomain, Timer, TimerService, TimerServiceDescriptor};
use statebackend::*;

/// Fires every due timer of `domain` up to `time` in calls of at most `max`; the timers in firing order.
pub fn drain<B: KeyedStateBackend<u64>>(
    b: &mut B,
    service: &TimerService<u32>,
    domain: TimeDomain,
    time: u64,
    max: usize,
) -> Vec<(u64, u64, u32)> {
    let mut fired = Vec::new();
    loop {
        let more = service
            .fire_until(b, domain, time, max, |b, t: Timer<u64, u32>| {
                assert_eq!(b.current_key(), Some(&t.key), "the fired key is current");
                fired.push((t.timestamp, t.key, t.namespace));
                Ok(())
            })
            .unwrap();
        if more == Fired::Done {
            return fired;
        }
    }
}

pub fn timer_semantics<B: KeyedStateBackend<u64>>(b: &mut B) {
    let svc = b
        .timer_service(&TimerServiceDescriptor::<u32>::new("windows"))
        .unwrap();
    let other = b
        .timer_service(&TimerServiceDescriptor::<u32>::new("other"))
        .unwrap();
    let seen = b
        .value_state(&ValueStateDescriptor::<u32, u64>::new("seen"))
        .unwrap();
    let ev = TimeDomain::EventTime;
    assert_eq!(
        svc.register_event_time(b, &1, 10).unwrap_err().kind(),
        ErrorKind::IllegalState,
        "no current key yet"
    );
    b.set_current_key(1).unwrap();
    svc.register_event_time(b, &1, 10).unwrap();
    svc.register_event_time(b, &1, 10).unwrap();
    assert_eq!(svc.len(b, ev).unwrap(), 1, "registering twice is one timer");
    svc.register_event_time(b, &2, 10).unwrap();
    svc.register_event_time(b, &1, 5).unwrap();
    svc.register_processing_time(b, &1, 1).unwrap();
    other.register_event_time(b, &1, 2).unwrap();
    b.set_current_key(2).unwrap();
    svc.register_event_time(b, &1, 7).unwrap();
    svc.delete(b, ev, &1, 99).unwrap();
    assert_eq!(
        svc.len(b, ev).unwrap(),
        4,
        "deleting an absent timer does nothing"
    );
    assert_eq!(svc.next_timer(b, ev).unwrap(), Some(5));
    assert_eq!(
        svc.next_timer(b, TimeDomain::ProcessingTime).unwrap(),
        Some(1)
    );
    assert_eq!(
        other.next_timer(b, ev).unwrap(),
        Some(2),
        "services are apart"
    );
    b.set_current_key(1).unwrap();
    svc.delete(b, ev, &2, 10).unwrap();
    assert_eq!(svc.len(b, ev).unwrap(), 3);

    // Nothing is due before 5; two of three are due at 9, and the handler sees the fired key current.
    let none = svc.fire_event_time(b, 4, 10, |_, _| panic!("nothing is due"));
    assert_eq!(none.unwrap(), Fired::Done);
    let mut fired = Vec::new();
    let first = svc
        .fire_event_time(b, 9, 1, |b, t: Timer<u64, u32>| {
            seen.update(b, &t.namespace, t.timestamp)?;
            fired.push((t.timestamp, t.key));
            Ok(())
        })
        .unwrap();
    assert_eq!(first, Fired::More, "one fired, one more due");
    let rest = svc
        .fire_event_time(b, 9, 10, |b, t: Timer<u64, u32>| {
            seen.update(b, &t.namespace, t.timestamp)?;
            fired.push((t.timestamp, t.key));
            Ok(())
        })
        .unwrap();
    assert_eq!(rest, Fired::Done);
    assert_eq!(fired, [(5, 1), (7, 2)], "timestamp order");
    b.set_current_key(2).unwrap();
    assert_eq!(
        seen.value(b, &1).unwrap(),
        Some(7),
        "written under the fired key"
    );
    assert_eq!(svc.len(b, ev).unwrap(), 1);

    // A handler that registers its own timer again: still due, it fires again (in the same call or a
    // later one), once per registration.
    b.set_current_key(3).unwrap();
    svc.register_event_time(b, &4, 20).unwrap();
    let mut fires_at_20 = 0;
    loop {
        let r = svc
            .fire_event_time(b, 20, 1, |b, t: Timer<u64, u32>| {
                if t.timestamp == 20 {
                    fires_at_20 += 1;
                    if fires_at_20 == 1 {
                        return svc.register_event_time(b, &t.namespace, t.timestamp);
                    }
                }
                Ok(())
            })
            .unwrap();
        if r == Fired::Done {
            break;
        }
    }
    assert_eq!(fires_at_20, 2, "fired, registered again, fired again");
    assert_eq!(svc.len(b, ev).unwrap(), 0);
    assert_eq!(svc.next_timer(b, ev).unwrap(), None);
    assert_eq!(
        other.len(b, ev).unwrap(),
        1,
        "firing one service leaves another"
    );

    // Timers are state of their own: a keyed state may not take their names.
    let reserved = b.value_state(&ValueStateDescriptor::<u32, u64>::new(
        "_timer/windows/event",
    ));
    assert_eq!(
        reserved.err().map(|e| e.kind()),
        Some(ErrorKind::InvalidArgument)
    );
    let wrong = b.timer_service(&TimerServiceDescriptor::<u64>::new("windows"));
    assert!(
        wrong.is_err(),
        "another namespace type for the same service"
    );
}

pub fn many_timers_fire_in_order<B: KeyedStateBackend<u64>>(b: &mut B) {
    let svc = b
        .timer_service(&TimerServiceDescriptor::<u32>::new("many"))
        .unwrap();
    let mut model = BTreeSet::new();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    // About 300 timers per key group: more than a RocksDB key group cache holds, so firing refills it.
    for i in 0..40_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (key, ns, ts) = (x % 20_000, (x >> 20) as u32 % 3, (x >> 32) % 5000);
        if i % 7 == 3 {
            // Mostly a timer registered before: the earliest at or after a random one.
            let (ts, key, ns) = model
                .range((ts, key, ns)..)
                .next()
                .copied()
                .unwrap_or((ts, key, ns));
            b.set_current_key(key).unwrap();
            svc.delete(b, TimeDomain::EventTime, &ns, ts).unwrap();
            model.remove(&(ts, key, ns));
        } else {
            b.set_current_key(key).unwrap();
            svc.register_event_time(b, &ns, ts).unwrap();
            model.insert((ts, key, ns));
        }
    }
    assert_eq!(
        svc.len(b, TimeDomain::EventTime).unwrap(),
        model.len() as u64
    );
    let mut fired = Vec::new();
    for watermark in [100, 2500, 2500, 4999] {
        let batch = drain(b, &svc, TimeDomain::EventTime, watermark, 37);
        assert!(batch.iter().all(|t| t.0 <= watermark));
        fired.extend(batch);
    }
    assert!(
        fired.windows(2).all(|w| w[0].0 <= w[1].0),
        "timestamp order"
    );
    assert_eq!(fired.iter().copied().collect::<BTreeSet<_>>(), model);
    assert_eq!(fired.len(), model.len(), "each timer once");
}

const MAX_P: u32 = 32;

#[derive(Debug, Clone)]
enum Op {
    Register {
        key: u64,
        ns: u32,
        ts: u64,
    },
    /// Deletes a random timer (absent) or, with `existing`, the model's timer at that position.
    Delete {
        key: u64,
        ns: u32,
        ts: u64,
        existing: Option<usize>,
    },
    Fire {
        watermark: u64,
        max: usize,
    },
    CheckpointRestore {
        parallelism: u32,
    },
    SavepointSwitch {
        parallelism: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u64..40;
    prop_oneof![
        6 => (key.clone(), 0u32..3, 0u64..200).prop_map(|(key, ns, ts)| Op::Register { key, ns, ts }),
        3 => (key, 0u32..3, 0u64..200, proptest::option::weighted(0.8, any::<usize>()))
            .prop_map(|(key, ns, ts, existing)| Op::Delete { key, ns, ts, existing }),
        2 => (0u64..220, 1usize..6).prop_map(|(watermark, max)| Op::Fire { watermark, max }),
        1 => (1u32..=3).prop_map(|parallelism| Op::CheckpointRestore { parallelism }),
        1 => (1u32..=3).prop_map(|parallelism| Op::SavepointSwitch { parallelism }),
    ]
}

type Model = BTreeSet<(u64, u64, u32)>;

struct Job {
    kind: BackendKind,
    dir: tempfile::TempDir,
    backends: Vec<StateBackend<u64>>,
    storage: CheckpointStorage,
    next_id: u64,
}

impl Job {
    fn config(&self) -> StateBackendConfig {
        backend_config(self.kind, self.dir.path())
    }

    fn service(b: &mut StateBackend<u64>) -> TimerService<u32> {
        b.timer_service(&TimerServiceDescriptor::new("model"))
            .unwrap()
    }

    fn owner_of(&self, key: u64) -> usize {
        owner(&key, MAX_P, self.backends.len() as u32)
    }

    async fn snapshot_and_restore(&mut self, parallelism: u32, savepoint: bool) {
        self.next_id += 1;
        if savepoint {
            self.kind = switched(self.kind);
        }
        let (storage, config) = (self.storage.clone(), self.config());
        let (id, backends) = (self.next_id, &mut self.backends);
        snapshot_and_restore(
            backends,
            &storage,
            id,
            savepoint,
            &config,
            MAX_P,
            parallelism,
        )
        .await;
    }

    /// Each subtask's count and earliest timer equal the model's for its key groups.
    fn check(&mut self, model: &Model) {
        let p = self.backends.len() as u32;
        for (i, b) in self.backends.iter_mut().enumerate() {
            let svc = Job::service(b);
            let owned: Vec<_> = model
                .iter()
                .filter(|t| owner(&t.1, MAX_P, p) == i)
                .collect();
            let ev = TimeDomain::EventTime;
            assert_eq!(svc.len(b, ev).unwrap(), owned.len() as u64, "subtask {i}");
            assert_eq!(svc.next_timer(b, ev).unwrap(), owned.first().map(|t| t.0));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn timers_through_checkpoints_restores_and_switches_match_the_model(
        ops in proptest::collection::vec(op(), 1..120),
        start_on_rocksdb in any::<bool>(),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let kinds = backend_kinds();
            let kind = if start_on_rocksdb { *kinds.last().unwrap() } else { BackendKind::Heap };
            let dir = tempfile::tempdir().unwrap();
            let first = StateBackend::new(&identity(MAX_P, 1, 0), &backend_config(kind, dir.path())).unwrap();
            let mut job = Job {
                kind,
                dir,
                backends: vec![first],
                storage: CheckpointStorage::in_memory("timers-model").unwrap(),
                next_id: 0,
            };
            let mut model = Model::new();
            for op in &ops {
                match *op {
                    Op::Register { key, ns, ts } | Op::Delete { key, ns, ts, .. } => {
                        let (ts, key, ns) = match *op {
                            Op::Delete { existing: Some(i), .. } if !model.is_empty() => {
                                *model.iter().nth(i % model.len()).unwrap()
                            }
                            _ => (ts, key, ns),
                        };
                        let i = job.owner_of(key);
                        let b = &mut job.backends[i];
                        let svc = Job::service(b);
                        b.set_current_key(key).unwrap();
                        if matches!(op, Op::Register { .. }) {
                            svc.register_event_time(b, &ns, ts).unwrap();
                            model.insert((ts, key, ns));
                        } else {
                            svc.delete(b, TimeDomain::EventTime, &ns, ts).unwrap();
                            model.remove(&(ts, key, ns));
                        }
                    }
                    Op::Fire { watermark, max } => {
                        let p = job.backends.len() as u32;
                        for (i, b) in job.backends.iter_mut().enumerate() {
                            let svc = Job::service(b);
                            let due: Vec<_> = model
                                .iter()
                                .filter(|t| t.0 <= watermark && owner(&t.1, MAX_P, p) == i)
                                .copied()
                                .collect();
                            let mut fired = Vec::new();
                            let more = svc
                                .fire_event_time(b, watermark, max, |_, t: Timer<u64, u32>| {
                                    fired.push((t.timestamp, t.key, t.namespace));
                                    Ok(())
                                })
                                .unwrap();
                            prop_assert_eq!(fired.len(), due.len().min(max));
                            prop_assert_eq!(more == Fired::More, due.len() > max);
                            prop_assert!(fired.windows(2).all(|w| w[0].0 <= w[1].0));
                            for t in &fired {
                                prop_assert!(model.remove(t), "fired {:?} is not a due timer", t);
                                prop_assert!(t.0 <= watermark);
                            }
                            // The earliest due ones fired: none left earlier than the last fired.
                            if let Some(last) = fired.last() {
                                prop_assert!(due.iter().filter(|t| model.contains(t)).all(|t| t.0 >= last.0));
                            }
                        }
                    }
                    Op::CheckpointRestore { parallelism } => {
                        job.snapshot_and_restore(parallelism, false).await;
                        job.check(&model);
                    }
                    Op::SavepointSwitch { parallelism } => {
                        job.snapshot_and_restore(parallelism, true).await;
                        job.check(&model);
                    }
                }
            }
            // The end of input: everything fires, once, in calls of 3.
            let mut all = Vec::new();
            for b in job.backends.iter_mut() {
                let svc = Job::service(b);
                all.extend(drain(b, &svc, TimeDomain::EventTime, u64::MAX, 3));
            }
            prop_assert_eq!(all.len(), model.len());
            prop_assert_eq!(all.into_iter().collect::<Model>(), model);
            Ok(())
        })?;
    }
}

/// Timer column families are compacted as tiers or as levels (`RocksDbConfig::universal_timer_compaction`):
/// a checkpoint written with either, compacted into several levels and runs, restores and fires exactly
/// its timers with the other, at the same and at another parallelism.
#[cfg(feature = "rocksdb")]
#[test]
fn timers_restore_across_timer_compaction_styles() {
    let rt = runtime();
    rt.block_on(async {
        for written_universal in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let storage = CheckpointStorage::in_memory("timer-compaction").unwrap();
            let config = |universal: bool| {
                let mut c = backend_config(BackendKind::RocksDb, dir.path());
                c.rocksdb.universal_timer_compaction = universal;
                c.rocksdb.write_buffer_bytes = 64 << 10;
                c
            };
            let d = TimerServiceDescriptor::<u32>::new("t");
            let mut b =
                StateBackend::<u64>::new(&identity(32, 1, 0), &config(written_universal)).unwrap();
            let service = b.timer_service(&d).unwrap();
            let mut model = BTreeSet::new();
            // Several flushes (64 KiB memtables) and a manual compaction in between: files in several
            // runs and levels.
            for round in 0..4u64 {
                for key in 0..3_000u64 {
                    let ts = (key * 7_919 + round * 13) % 100_000;
                    b.set_current_key(key).unwrap();
                    service
                        .register_event_time(&mut b, &(round as u32), ts)
                        .unwrap();
                    model.insert((ts, key, round as u32));
                }
                if round == 1 {
                    b.as_rocksdb().unwrap().compact().unwrap();
                }
            }
            let handle = b.snapshot(1, &storage).unwrap().run().await.unwrap().handle;
            drop(b);
            for parallelism in [1u32, 2] {
                let mut fired = BTreeSet::new();
                for index in 0..parallelism {
                    let id = identity(32, parallelism, index);
                    let mut r = StateBackend::<u64>::restore(
                        &id,
                        &config(!written_universal),
                        &storage,
                        std::slice::from_ref(&handle),
                        RestoreMode::NoClaim,
                    )
                    .await
                    .unwrap();
                    let service = r.timer_service(&d).unwrap();
                    let all = drain(&mut r, &service, TimeDomain::EventTime, u64::MAX, 1_000);
                    assert!(all.windows(2).all(|w| w[0] <= w[1]), "in timestamp order");
                    fired.extend(all);
                }
                assert_eq!(
                    fired, model,
                    "written universal: {written_universal}, parallelism {parallelism}"
                );
            }
        }
    });
}

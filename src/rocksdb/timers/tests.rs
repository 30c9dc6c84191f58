//! Tests of the RocksDB timer queues: failed writes, range deletions of fired rows.

use std::cell::Cell;

use crate::keyed::{Fired, TimeDomain, TimerServiceDescriptor};
use crate::rocksdb::{RocksDbConfig, RocksDbKeyedStateBackend};
use crate::*;

thread_local! {
    /// The next batch of timer writes fails with an injected RocksDB write error.
    pub(super) static FAIL_FLUSH: Cell<bool> = const { Cell::new(false) };
}

/// A failed batch of timer writes dropped its registrations, but the queue went on answering and the
/// next checkpoint held the timers without them. Now every access and every snapshot is refused, and
/// a restore from the last checkpoint has every timer of that checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_timer_writes_refuse_the_queue_and_snapshots_until_a_restore() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::in_memory("timers-lost").unwrap();
    let identity = SubtaskIdentity::new("op", 128, 1, 0).unwrap();
    let config = RocksDbConfig {
        local_dir: dir.path().into(),
        ..RocksDbConfig::default()
    };
    let mut b = RocksDbKeyedStateBackend::<u64>::new(identity.clone(), config.clone()).unwrap();
    let svc = b.timer_service(&TimerServiceDescriptor::new("t")).unwrap();
    let register = |b: &mut RocksDbKeyedStateBackend<u64>, keys: std::ops::Range<u64>| {
        for k in keys {
            b.set_current_key(k).unwrap();
            svc.register_event_time(b, &VoidNamespace, 1_000 + k)?;
        }
        Ok::<_, Error>(())
    };
    register(&mut b, 0..100).unwrap();
    let handle = b.snapshot(1, &storage).unwrap().run().await.unwrap().handle;
    FAIL_FLUSH.with(|f| f.set(true));
    // The registrations wait in a batch, written before the first read past the caches.
    register(&mut b, 100..40_000).unwrap();
    let event = TimeDomain::EventTime;
    let err = svc
        .next_timer(&mut b, event)
        .expect_err("the injected write error");
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    for e in [
        svc.next_timer(&mut b, event).err(),
        svc.len(&mut b, event).err(),
        register(&mut b, 80_000..80_001).err(),
    ] {
        let e = e.expect("refused");
        assert!(e.to_string().contains("lost writes"), "{e}");
    }
    let refused = b.snapshot(2, &storage).err().expect("snapshot refused");
    assert!(refused.to_string().contains("lost writes"), "{refused}");
    drop(b);
    let mut r = RocksDbKeyedStateBackend::<u64>::restore(
        identity,
        config,
        &storage,
        &[handle],
        RestoreMode::NoClaim,
    )
    .await
    .unwrap();
    let svc = r
        .timer_service(&TimerServiceDescriptor::<VoidNamespace>::new("t"))
        .unwrap();
    assert_eq!(svc.len(&mut r, event).unwrap(), 100);
    assert_eq!(svc.next_timer(&mut r, event).unwrap(), Some(1_000));
}

/// Fired rows are deleted by range deletions from a key group's first fired row to its earliest live
/// row. A timer registered below a fired row not yet range-deleted (a late timer, or a fired one
/// registered again) would have ended that range short of the fired rows above it, and they would
/// have come back as timers in the next checkpoint; the registration writes the ranges first.
#[test]
fn a_timer_registered_below_fired_rows_leaves_none_of_them_in_the_column_family() {
    let dir = tempfile::tempdir().unwrap();
    // One key group: every timer's rows are in one range.
    let identity = SubtaskIdentity::new("op", 1, 1, 0).unwrap();
    let config = RocksDbConfig {
        local_dir: dir.path().into(),
        ..RocksDbConfig::default()
    };
    let mut b = RocksDbKeyedStateBackend::<u64>::new(identity, config).unwrap();
    let svc = b.timer_service(&TimerServiceDescriptor::new("t")).unwrap();
    let event = TimeDomain::EventTime;
    for k in 0..2_000u64 {
        b.set_current_key(k).unwrap();
        svc.register_event_time(&mut b, &VoidNamespace, 10_000 + k)
            .unwrap();
    }
    let mut fired = Vec::new();
    let mut fire = |b: &mut RocksDbKeyedStateBackend<u64>, until: u64| {
        let mut fire_some = || {
            svc.fire_event_time(b, until, 1_000, |_, t| {
                fired.push(t.timestamp);
                Ok(())
            })
        };
        while fire_some().unwrap() == Fired::More {}
    };
    // 10,000..=10,099 fire; then the first of them again, and a late timer far below.
    fire(&mut b, 10_099);
    b.set_current_key(0).unwrap();
    svc.register_event_time(&mut b, &VoidNamespace, 10_000)
        .unwrap();
    b.set_current_key(5_000).unwrap();
    svc.register_event_time(&mut b, &VoidNamespace, 7).unwrap();
    assert_eq!(
        svc.len(&mut b, event).unwrap(),
        1_900 + 2,
        "the column family's rows"
    );
    fire(&mut b, 10_199);
    assert_eq!(svc.len(&mut b, event).unwrap(), 1_800);
    fire(&mut b, u64::MAX);
    assert_eq!(svc.len(&mut b, event).unwrap(), 0);
    let mut want: Vec<u64> = (10_000..10_100).collect();
    want.extend([7, 10_000]);
    want.extend(10_100..12_000);
    assert_eq!(fired, want);
}

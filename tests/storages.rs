//! Checkpoint, restore and garbage-collection scenarios run against every kind of checkpoint storage: a
//! local directory, memory, and, with the cargo feature `aws`, an S3 server through `object_store`'s S3
//! client (`STATEBACKEND_TEST_S3_URL` and the `AWS_*` variables, which `scripts/s3-test-server.sh` starts
//! and sets; `.ci/run` does). Each scenario is one function over a [`CheckpointStorage`]; the tests at the
//! bottom run it per storage.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use statebackend::heap::HeapKeyedStateBackend;
use statebackend::*;

type Heap = HeapKeyedStateBackend<u64>;

/// A storage of each kind for the scenario `name`, with a job id no other run uses (S3 buckets outlive
/// test runs). The temporary directory lives as long as the returned guard.
fn storages(name: &str) -> (Vec<(&'static str, CheckpointStorage)>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let job = format!("{name}-{:016x}", rand::random::<u64>());
    let settings = StorageConfig::default();
    let mut out = vec![
        (
            "local",
            CheckpointStorage::from_url(dir.path().to_str().unwrap(), &job, &settings).unwrap(),
        ),
        (
            "memory",
            CheckpointStorage::from_url("memory:///tests", &job, &settings).unwrap(),
        ),
    ];
    if let Some(s3) = s3_url() {
        out.push((
            "s3",
            CheckpointStorage::from_url(&s3, &job, &settings).unwrap(),
        ));
    }
    (out, dir)
}

/// The S3 storage under test: required with the `aws` feature, so that a missing server fails the run
/// instead of skipping the S3 half of every scenario.
fn s3_url() -> Option<String> {
    if cfg!(feature = "aws") {
        Some(std::env::var("STATEBACKEND_TEST_S3_URL").expect(
            "feature `aws`: set STATEBACKEND_TEST_S3_URL and AWS_* (`. scripts/s3-test-server.sh` starts \
             an S3 test server and sets them)",
        ))
    } else {
        None
    }
}

/// Writes round `round` of the model into `backends` (keys spread over both subtasks' key groups).
fn write_round(backends: &mut [Heap], model: &mut BTreeMap<u64, u64>, round: u64) {
    let parallelism = backends.len() as u32;
    let desc = counts();
    for key in (round * 37..round * 37 + 400).step_by(3) {
        let b = &mut backends[owner(&key, 128, parallelism)];
        let s = b.value_state(&desc).unwrap();
        b.set_current_key(key).unwrap();
        s.update(b, &VoidNamespace, key * 10 + round).unwrap();
        model.insert(key, key * 10 + round);
    }
}

/// Every key of the model in `backends` (restored at any parallelism) has the model's value, and nothing
/// else is there.
fn assert_matches_model(backends: &mut [Heap], model: &BTreeMap<u64, u64>) {
    let mut got = BTreeMap::new();
    for b in backends.iter_mut() {
        got.extend(read_all(b, &counts()));
    }
    assert_eq!(&got, model);
}

async fn checkpoints_restore_exactly_and_subsumed_files_go(storage: CheckpointStorage) {
    let mut coord = coordinator(&storage, 1, 2).await;
    let mut backends = vec![
        Heap::new(identity(128, 2, 0), full_files()).unwrap(),
        Heap::new(identity(128, 2, 1), full_files()).unwrap(),
    ];
    let mut model = BTreeMap::new();
    let mut previous_files: Vec<String> = Vec::new();
    for round in 1..=3 {
        write_round(&mut backends, &mut model, round);
        let stats = checkpoint(&mut coord, &mut backends).await;
        assert_eq!(stats.checkpoint_id, round);
        let latest = coord.store().latest().unwrap().clone();
        // Retaining one: the previous checkpoint's files are gone from storage once this one completed.
        for f in &previous_files {
            assert!(!exists(&storage, f).await, "subsumed {f} stayed");
        }
        previous_files = latest.files().map(|f| f.path.clone()).collect();
        assert_retained_files_intact(&coord, true).await;
        // Restore at the same parallelism and rescaled to one subtask.
        for parallelism in [2, 1] {
            let mut restored = restore::<u64>(&storage, &latest, 128, parallelism)
                .await
                .unwrap();
            assert_matches_model(&mut restored, &model);
        }
    }
    // A restarted coordinator sees the retained checkpoint and restores it.
    drop(coord);
    let reopened = coordinator(&storage, 1, 2).await;
    let outcome = reopened
        .store()
        .restore_latest(|meta| {
            let storage = storage.clone();
            async move { restore::<u64>(&storage, &meta, 128, 2).await }
        })
        .await
        .unwrap();
    assert_eq!(outcome.checkpoint_id, 3);
    let mut restored = outcome.value;
    assert_matches_model(&mut restored, &model);
}

async fn orphans_are_swept_and_unreadable_metadata_blocks_the_sweep(storage: CheckpointStorage) {
    let (mut coord, _) = clocked(&storage, 1, 1).await;
    let mut b = vec![Heap::new(identity(128, 1, 0), full_files()).unwrap()];
    fill(&mut b[0], 0..200, 1);
    checkpoint(&mut coord, &mut b).await;
    // An upload nobody acknowledged (a task that died), and a checkpoint whose metadata this release cannot read.
    let (orphan_id, results) = snapshot_all(&mut coord, &mut b).await;
    let orphan = results[0].handle.files[0].path.clone();
    drop(coord);
    // A restarted coordinator: it never saw the orphan, whose age comes from the store.
    let (mut coord, _) = clocked(&storage, 1, 1).await;
    let unreadable = format!("chk-{}/_metadata", orphan_id + 5);
    put(&storage, &unreadable, b"metadata this release cannot read").await;
    // Ages are on the store's clock: no minimum age, so only the unreadable metadata holds it back.
    let blocked = coord.sweep_orphans(Duration::ZERO).await.unwrap();
    assert!(blocked.deleted.is_empty(), "{blocked:?}");
    assert_eq!(blocked.blocked_by_unreadable, vec![orphan_id + 5]);
    assert!(exists(&storage, &orphan).await);
    use object_store::ObjectStoreExt;
    // The unreadable checkpoint goes (by hand); then the orphan is swept, nothing referenced is.
    storage
        .object_store()
        .delete(&storage.path(&unreadable))
        .await
        .unwrap();
    let sweep = coord.sweep_orphans(Duration::ZERO).await.unwrap();
    assert!(sweep.deleted.contains(&orphan), "{sweep:?}");
    assert!(!exists(&storage, &orphan).await);
    assert_retained_files_intact(&coord, true).await;
    let again = coord.sweep_orphans(Duration::from_secs(60)).await.unwrap();
    assert!(again.deleted.is_empty(), "{again:?}");
}

async fn two_coordinators_never_share_an_id(storage: CheckpointStorage) {
    // Conditional create (If-None-Match on S3) is what keeps the ids of two coordinators apart.
    let mut first = coordinator(&storage, 1, 1).await;
    let mut ids = vec![first.trigger().await.unwrap()];
    let mut second = coordinator(&storage, 1, 1).await;
    for _ in 0..3 {
        ids.push(second.trigger().await.unwrap());
    }
    // The first one is fenced before it reserves anything (its generation is older).
    assert_eq!(first.trigger().await.unwrap_err().kind(), ErrorKind::Fenced);
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids handed out twice: {ids:?}");
}

async fn put(storage: &CheckpointStorage, path: &str, bytes: &[u8]) {
    use object_store::ObjectStoreExt;
    storage
        .object_store()
        .put(&storage.path(path), bytes.to_vec().into())
        .await
        .unwrap();
}

#[cfg(feature = "rocksdb")]
async fn lsm_incremental_checkpoints_reuse_files_and_restore(storage: CheckpointStorage) {
    let mut coord = coordinator(&storage, 2, 1).await;
    let mut b = vec![lsm::<u64>(128, 1, 0)];
    let mut model = BTreeMap::new();
    let desc = counts();
    let mut reused = 0;
    for round in 1..=3u64 {
        let s = b[0].value_state(&desc).unwrap();
        for key in round * 1000..round * 1000 + 500 {
            b[0].set_current_key(key).unwrap();
            s.update(&mut b[0], &VoidNamespace, key + round).unwrap();
            model.insert(key, key + round);
        }
        let stats = checkpoint(&mut coord, &mut b).await;
        reused += stats.files_reused;
        assert_retained_files_intact(&coord, true).await;
    }
    assert!(reused > 0, "no incremental checkpoint reused a file");
    let latest = coord.store().latest().unwrap().clone();
    for mode in [RestoreMode::NoClaim, RestoreMode::Claim] {
        let mut restored = restore_lsm(&storage, &latest, mode).await;
        assert_eq!(read_all(&mut restored, &desc), model, "{mode:?}");
    }
}

/// Runs `scenario` on every storage.
macro_rules! on_every_storage {
    ($($scenario:ident),* $(,)?) => {$(
        #[test]
        fn $scenario() {
            let (storages, _dir) = storages(stringify!($scenario));
            runtime().block_on(async {
                for (kind, storage) in storages {
                    eprintln!("{}: {kind}", stringify!($scenario));
                    super::$scenario(storage).await;
                }
            });
        }
    )*};
}

mod on {
    use super::*;
    on_every_storage!(
        checkpoints_restore_exactly_and_subsumed_files_go,
        orphans_are_swept_and_unreadable_metadata_blocks_the_sweep,
        two_coordinators_never_share_an_id,
    );
    #[cfg(feature = "rocksdb")]
    on_every_storage!(lsm_incremental_checkpoints_reuse_files_and_restore);
}

/// A hung S3 endpoint: a TCP proxy in front of the S3 test server that, while hung, forwards nothing in
/// either direction (a server that accepted and never answers).
#[cfg(feature = "aws")]
mod hung_endpoint {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Copies `from` to `to` while the endpoint answers; while hung, holds what it read.
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        hung: Arc<AtomicBool>,
    ) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            while hung.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// Starts the proxy; returns its URL and the switch.
    async fn proxy(target: String) -> (String, Arc<AtomicBool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hung = Arc::new(AtomicBool::new(false));
        let switch = hung.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let hung = hung.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, hung.clone()), pump(sr, cw, hung));
                });
            }
        });
        (url, switch)
    }

    #[test]
    fn hung_s3_endpoint_fails_a_checkpoint_within_the_timeout_and_the_next_completes() {
        let s3 = s3_url().unwrap();
        let endpoint = std::env::var("AWS_ENDPOINT").expect("AWS_ENDPOINT of the S3 test server");
        let target = endpoint.trim_start_matches("http://").to_string();
        runtime().block_on(async {
            let (url, hung) = proxy(target).await;
            // Default timeouts and retries: the target is "a hung store fails a checkpoint in seconds".
            let settings = StorageConfig {
                endpoint: Some(url),
                ..StorageConfig::default()
            };
            let job = format!("hung-{:016x}", rand::random::<u64>());
            let storage = CheckpointStorage::from_url(&s3, &job, &settings).unwrap();
            let mut coord = coordinator(&storage, 1, 1).await;
            let mut b = vec![
                Heap::new(
                    identity(128, 1, 0),
                    statebackend::heap::HeapConfig::default(),
                )
                .unwrap(),
            ];
            fill(&mut b[0], 0..1000, 1);
            checkpoint(&mut coord, &mut b).await;
            fill(&mut b[0], 0..1000, 2);
            let id = coord.trigger().await.unwrap();
            hung.store(true, Ordering::SeqCst);
            let started = Instant::now();
            let pending = b[0].snapshot(id, &storage).unwrap();
            let upload = tokio::time::timeout(Duration::from_secs(120), pending.run())
                .await
                .expect("the asynchronous phase hung past 120 s: no storage timeout");
            let took = started.elapsed();
            eprintln!("hung endpoint: the asynchronous phase failed after {took:?}: {upload:?}");
            assert!(upload.is_err(), "an upload to a hung store succeeded");
            let bound = settings.request_timeout + settings.retry_timeout + Duration::from_secs(5);
            assert!(
                took <= bound,
                "failed after {took:?}, settings allow {bound:?}"
            );
            // The store recovers: the engine aborts the failed checkpoint, the next one completes.
            hung.store(false, Ordering::SeqCst);
            coord.abort(id).await.unwrap();
            b[0].notify_checkpoint_aborted(id);
            let next = checkpoint(&mut coord, &mut b).await;
            assert!(next.checkpoint_id > id);
            assert_retained_files_intact(&coord, true).await;
            let latest = coord.store().latest().unwrap().clone();
            let mut restored = restore::<u64>(&storage, &latest, 128, 1).await.unwrap();
            let values = read_all(&mut restored[0], &counts());
            assert_eq!(values.len(), 1000);
            assert!(values.values().all(|v| *v == 2));
        });
    }
}

/// A process killed mid-upload leaves an incomplete multipart upload on S3: invisible to LIST and billed
/// until it is aborted. The sweep lists them (`ListMultipartUploads`) and aborts those older than its
/// minimum age on the store's clock.
#[cfg(feature = "aws")]
#[test]
fn incomplete_multipart_uploads_are_aborted_by_the_sweep_on_s3() {
    use object_store::ObjectStoreExt;
    let s3 = s3_url().unwrap();
    let job = format!("multipart-{:016x}", rand::random::<u64>());
    let storage = CheckpointStorage::from_url(&s3, &job, &StorageConfig::default()).unwrap();
    runtime().block_on(async {
        let mut coord = coordinator(&storage, 1, 1).await;
        let path = storage.path("chk-9/op-0-0000000000000009.keyed");
        let mut upload = storage.object_store().put_multipart(&path).await.unwrap();
        upload
            .put_part(bytes::Bytes::from(vec![7u8; 5 << 20]).into())
            .await
            .unwrap();
        // The process dies: nobody completes or aborts it.
        std::mem::forget(upload);
        let listed = storage
            .incomplete_uploads()
            .await
            .unwrap()
            .expect("S3 lists them");
        assert_eq!(listed.len(), 1, "{listed:?}");
        // moto answers a fixed `Initiated` (2010-11-10) for every upload; S3 and MinIO the real one. Where
        // the date is real, an upload younger than the minimum age stays.
        let real_date = std::time::SystemTime::now()
            .duration_since(listed[0].initiated)
            .is_ok_and(|age| age < Duration::from_secs(86_400));
        if real_date {
            let young = coord
                .sweep_orphans(Duration::from_secs(3600))
                .await
                .unwrap();
            assert_eq!(young.uploads_aborted, 0, "{young:?}");
        }
        let swept = coord.sweep_orphans(Duration::ZERO).await.unwrap();
        assert_eq!(swept.uploads_aborted, 1, "{swept:?}");
        assert!(
            storage
                .incomplete_uploads()
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
    });
}

#[cfg(feature = "aws")]
#[test]
fn a_store_without_conditional_create_is_refused_at_open_with_a_clear_error() {
    use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
    let s3 = s3_url().unwrap();
    let bucket = s3
        .trim_start_matches("s3://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    runtime().block_on(async {
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_conditional_put(S3ConditionalPut::Disabled)
            .build()
            .unwrap();
        let job = format!("no-create-{:016x}", rand::random::<u64>());
        let storage = CheckpointStorage::new(std::sync::Arc::new(store), &job).unwrap();
        let err = CheckpointCoordinator::open(
            storage.clone(),
            CoordinatorConfig::single_operator("op", 1, 1),
        )
        .await
        .err()
        .expect("a store without conditional create was accepted");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("conditional create"), "{err}");
        // Nothing was uploaded before the refusal.
        assert!(objects(&storage, None).await.is_empty());
    });
}

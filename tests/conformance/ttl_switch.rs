//! TTL switched on, off or changed across a restore (`docs/ttl.md`): a state written without TTL and
//! registered with it lives a full TTL from the restore; one written with TTL and registered without it
//! keeps every value; a value codec that migrates under TTL keeps the stamps. Through checkpoints (same
//! backend, one subtask to two) and canonical savepoints (the other backend), for value, list and map state.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::common::*;
use statebackend::keyed::StateTtlConfig;
use statebackend::*;

type Ns = VoidNamespace;
const NS: VoidNamespace = VoidNamespace;
const MAX_P: u32 = 128;
const KEYS: u64 = 24;

/// The three states of the test, with TTL `ttl` or none; `V` is the value type (`u32` before a codec
/// migration, `u64` after it).
struct States<V: StateValue> {
    value: ValueState<Ns, V>,
    list: ListState<Ns, V>,
    map: MapState<Ns, u8, V>,
}

fn states<V: StateValue>(b: &mut StateBackend<u64>, ttl: Option<StateTtlConfig>) -> States<V> {
    let value = ValueStateDescriptor::new("value");
    let list = ListStateDescriptor::new("list");
    let map = MapStateDescriptor::new("map");
    let (value, list, map) = match ttl {
        Some(ttl) => (value.with_ttl(ttl), list.with_ttl(ttl), map.with_ttl(ttl)),
        None => (value, list, map),
    };
    States {
        value: b.value_state(&value).unwrap(),
        list: b.list_state(&list).unwrap(),
        map: b.map_state(&map).unwrap(),
    }
}

/// Writes key `k`'s value `k`, list `[k, k + 1]` and map `{0: k}` for every key `0..KEYS` of `b`.
fn write(b: &mut StateBackend<u64>, s: &States<u32>) {
    for key in owned(b) {
        b.set_current_key(key).unwrap();
        let k = key as u32;
        s.value.update(b, &NS, k).unwrap();
        s.list.update(b, &NS, vec![k, k + 1]).unwrap();
        s.map.put(b, &NS, 0, k).unwrap();
    }
}

fn owned(b: &StateBackend<u64>) -> Vec<u64> {
    let range = b.key_group_range();
    (0..KEYS)
        .filter(|k| {
            let kg = key_group::assign_to_key_group(&k.to_be_bytes(), MAX_P).unwrap();
            range.contains(kg)
        })
        .collect()
}

/// Per key over all `backends` (in key order): (value, list, map entries) as `u64`s.
type Read = Vec<(u64, Option<u64>, Vec<u64>, Vec<(u8, u64)>)>;

fn read<V: StateValue + Into<u64>>(
    backends: &mut [StateBackend<u64>],
    ttl: Option<StateTtlConfig>,
) -> Read {
    let mut out = Vec::new();
    for b in backends.iter_mut() {
        let s = states::<V>(b, ttl);
        for key in owned(b) {
            b.set_current_key(key).unwrap();
            let value = s.value.value(b, &NS).unwrap().map(Into::into);
            let list = s.list.get(b, &NS).unwrap();
            let map = s.map.entries(b, &NS).unwrap();
            out.push((
                key,
                value,
                list.into_iter().map(Into::into).collect(),
                map.into_iter().map(|(k, v)| (k, v.into())).collect(),
            ));
        }
    }
    out.sort_unstable_by_key(|r| r.0);
    out
}

/// Every key's state as [`write`] wrote it, or nothing (all expired).
fn expected(present: bool) -> Read {
    (0..KEYS)
        .map(|k| match present {
            true => (k, Some(k), vec![k, k + 1], vec![(0, k)]),
            false => (k, None, vec![], vec![]),
        })
        .collect()
}

fn set_clock(backends: &mut [StateBackend<u64>], clock: &Arc<ManualClock>) {
    for b in backends.iter_mut() {
        b.set_clock(clock.clone());
    }
}

#[test]
fn ttl_switched_on_then_off_across_restores_on_every_backend() {
    let rt = runtime();
    rt.block_on(async {
        for kind in backend_kinds() {
            for savepoint in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let storage = CheckpointStorage::in_memory("ttl-switch").unwrap();
                let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
                let mut backends = vec![
                    StateBackend::<u64>::new(
                        &identity(MAX_P, 1, 0),
                        &backend_config(kind, dir.path()),
                    )
                    .unwrap(),
                ];
                set_clock(&mut backends, &clock);
                let s = states::<u32>(&mut backends[0], None);
                write(&mut backends[0], &s);
                let case = format!("{kind}, savepoint {savepoint}");

                // On: written without TTL, registered with 1 s of TTL 10 s later. The restore's time is
                // the stamp, so everything lives 1 s from the registration.
                clock.advance(Duration::from_secs(10));
                let other = if savepoint { switched(kind) } else { kind };
                let config = backend_config(other, dir.path());
                snapshot_and_restore(&mut backends, &storage, 1, savepoint, &config, MAX_P, 2)
                    .await;
                set_clock(&mut backends, &clock);
                let ttl = Some(StateTtlConfig::new(1_000));
                assert_eq!(read::<u32>(&mut backends, ttl), expected(true), "{case}");
                clock.advance(Duration::from_millis(999));
                assert_eq!(read::<u32>(&mut backends, ttl), expected(true), "{case}");
                clock.advance(Duration::from_millis(1));
                assert_eq!(read::<u32>(&mut backends, ttl), expected(false), "{case}");

                // Written again under TTL, the stamps go through a snapshot where the value codec
                // migrates (u32 -> u64, stamps kept).
                for b in backends.iter_mut() {
                    let s = states::<u32>(b, ttl);
                    write(b, &s);
                }
                clock.advance(Duration::from_millis(400));
                snapshot_and_restore(&mut backends, &storage, 2, savepoint, &config, MAX_P, 1)
                    .await;
                set_clock(&mut backends, &clock);
                assert_eq!(read::<u64>(&mut backends, ttl), expected(true), "{case}");
                let before = clock.now();
                clock.advance(Duration::from_millis(600));
                assert_eq!(read::<u64>(&mut backends, ttl), expected(false), "{case}");
                // Back to before the expiry, so that the next snapshot keeps the values.
                clock.set(before);

                // Off: registered without TTL, every stored value is read again, expired or not, and
                // stays whatever the clock says.
                let config = backend_config(kind, dir.path());
                snapshot_and_restore(&mut backends, &storage, 3, savepoint, &config, MAX_P, 3)
                    .await;
                set_clock(&mut backends, &clock);
                clock.advance(Duration::from_secs(3_600));
                assert_eq!(read::<u64>(&mut backends, None), expected(true), "{case}");
                // And once more through a snapshot, now stored without stamps.
                snapshot_and_restore(&mut backends, &storage, 4, savepoint, &config, MAX_P, 1)
                    .await;
                assert_eq!(read::<u64>(&mut backends, None), expected(true), "{case}");
            }
        }
    });
}

//! Conformance checks of the API engines asked for: streamed map state, keys and namespaces,
//! merging namespaces, dropping states, batch access and routed keys.

use super::*;

pub(crate) fn map_streaming_and_bulk_updates<B: KeyedStateBackend<u64>>(b: &mut B) {
    let s = b
        .map_state(&MapStateDescriptor::<u64, u32, String>::new("bulk"))
        .unwrap();
    b.set_current_key(11).unwrap();
    assert!(s.is_empty(b, &1).unwrap());
    assert_eq!(s.iter(b, &1).unwrap().count(), 0);
    s.put_all(b, &1, (0..100u32).map(|i| (i, format!("v{i}"))))
        .unwrap();
    s.put_all(b, &1, [(5, "five".to_string()), (5, "FIVE".to_string())])
        .unwrap();
    s.put(b, &2, 0, "other namespace".into()).unwrap();
    assert!(!s.is_empty(b, &1).unwrap());
    let mut seen: Vec<(u32, String)> = s.iter(b, &1).unwrap().map(Result::unwrap).collect();
    seen.sort();
    assert_eq!(seen.len(), 100, "one entry per user key, one namespace");
    assert_eq!(
        seen[5],
        (5, "FIVE".to_string()),
        "later entries of put_all win"
    );
    let mut keys: Vec<u32> = s.keys(b, &1).unwrap().map(Result::unwrap).collect();
    keys.sort();
    assert_eq!(keys, (0..100).collect::<Vec<_>>());
    let values: Vec<String> = s.values(b, &1).unwrap().map(Result::unwrap).collect();
    assert!(values.contains(&"v99".to_string()));
    // A partial walk stops early; the map is unchanged.
    assert_eq!(s.iter(b, &1).unwrap().take(3).count(), 3);
    s.retain(b, &1, |k, _| k % 3 == 0).unwrap();
    let mut left: Vec<u32> = s.keys(b, &1).unwrap().map(Result::unwrap).collect();
    left.sort();
    assert_eq!(left, (0..100).filter(|k| k % 3 == 0).collect::<Vec<_>>());
    s.retain(b, &1, |_, _| false).unwrap();
    assert!(s.is_empty(b, &1).unwrap());
    assert!(
        !s.keys_with_state(b, &1).unwrap().contains(&11),
        "an emptied map is no map"
    );
    assert_eq!(
        s.get(b, &2, &0).unwrap().as_deref(),
        Some("other namespace")
    );
    b.set_current_key(12).unwrap();
    assert!(s.is_empty(b, &2).unwrap(), "maps are per key");
}

pub(crate) fn keys_and_namespaces_and_apply_to_all_keys<B: KeyedStateBackend<u64>>(b: &mut B) {
    let s = b
        .value_state(&ValueStateDescriptor::<u32, u64>::new("windows"))
        .unwrap();
    let m = b
        .map_state(&MapStateDescriptor::<u32, u8, u8>::new("map"))
        .unwrap();
    let mut expected = Vec::new();
    for key in 0..40u64 {
        b.set_current_key(key).unwrap();
        for ns in 0..(key % 4) as u32 {
            s.update(b, &ns, key * 10 + u64::from(ns)).unwrap();
            m.put_all(b, &ns, [(1, 1), (2, 2)]).unwrap();
            expected.push((key, ns));
        }
    }
    let mut got = s.keys_and_namespaces(b).unwrap();
    got.sort();
    assert_eq!(got, expected);
    let mut got = m.keys_and_namespaces(b).unwrap();
    got.sort();
    assert_eq!(
        got, expected,
        "a map's entries count once per (key, namespace)"
    );
    assert_eq!(
        b.keys_and_namespaces::<String>(s.id()).unwrap_err().kind(),
        ErrorKind::InvalidArgument,
        "another namespace type"
    );

    // Clear namespace 1 of every even key; add 1 in namespace 0 to the others.
    b.set_current_key(39).unwrap();
    b.apply_to_all_keys(s.id(), &1u32, &mut |b, key| {
        assert_eq!(b.current_key(), Some(key));
        if key % 2 == 0 {
            s.clear(b, &1)
        } else {
            let v = s.value(b, &0)?.unwrap_or(0);
            s.update(b, &0, v + 1)
        }
    })
    .unwrap();
    assert_eq!(b.current_key(), Some(&39), "the current key is restored");
    for key in 0..40u64 {
        b.set_current_key(key).unwrap();
        let has_ns1 = key % 4 >= 2;
        let v1 = s.value(b, &1).unwrap();
        assert_eq!(v1.is_some(), has_ns1 && key % 2 == 1, "key {key}");
        let v0 = s.value(b, &0).unwrap();
        let bumped = has_ns1 && key % 2 == 1;
        assert_eq!(v0, (key % 4 >= 1).then(|| key * 10 + u64::from(bumped)));
    }
    let stop = b.apply_to_all_keys(s.id(), &0u32, &mut |_, key| {
        if *key == 5 {
            Err(Error::InvalidArgument("stop".into()))
        } else {
            Ok(())
        }
    });
    assert_eq!(stop.unwrap_err().kind(), ErrorKind::InvalidArgument);
}

pub(crate) fn merging_namespaces<B: KeyedStateBackend<u64>>(b: &mut B) {
    let r = b
        .reducing_state(&ReducingStateDescriptor::<u32, u64>::new("sum", |a, b| {
            a + b
        }))
        .unwrap();
    let a = b
        .aggregating_state(
            &AggregatingStateDescriptor::<u32, u64, (u64, u64), f64>::new("avg", Sum),
        )
        .unwrap();
    let l = b
        .list_state(&ListStateDescriptor::<u32, u64>::new("list"))
        .unwrap();
    b.set_current_key(21).unwrap();
    for (ns, v) in [(1u32, 10u64), (2, 20), (3, 30), (3, 31)] {
        r.add(b, &ns, v).unwrap();
        a.add(b, &ns, &v).unwrap();
        l.add(b, &ns, v).unwrap();
    }
    // Session windows 1 and 3 merge into 2; window 9 (absent) and the target itself are no-ops.
    r.merge_namespaces(b, &2, &[1, 3, 9, 2]).unwrap();
    a.merge_namespaces(b, &2, &[1, 3, 9, 2]).unwrap();
    l.merge_namespaces(b, &2, &[1, 3, 9, 2]).unwrap();
    assert_eq!(r.get(b, &2).unwrap(), Some(91));
    assert_eq!(a.get(b, &2).unwrap(), Some(91.0 / 4.0));
    assert_eq!(l.get(b, &2).unwrap(), vec![20, 10, 30, 31]);
    for ns in [1, 3] {
        assert_eq!(r.get(b, &ns).unwrap(), None);
        assert_eq!(a.get(b, &ns).unwrap(), None);
        assert!(l.get(b, &ns).unwrap().is_empty());
    }
    // Into an empty target.
    r.merge_namespaces(b, &7, &[2]).unwrap();
    a.merge_namespaces(b, &7, &[2]).unwrap();
    assert_eq!(r.get(b, &7).unwrap(), Some(91));
    assert_eq!(a.get(b, &7).unwrap(), Some(91.0 / 4.0));
    b.set_current_key(22).unwrap();
    assert_eq!(r.get(b, &7).unwrap(), None, "merging is per key");
}

pub(crate) fn dropping_a_state<B: KeyedStateBackend<u64>>(b: &mut B) {
    let v = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("old"))
        .unwrap();
    let kept = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("kept"))
        .unwrap();
    b.set_current_key(1).unwrap();
    v.update(b, &NS, 1).unwrap();
    kept.update(b, &NS, 2).unwrap();
    assert!(b.drop_state("old").unwrap());
    assert!(!b.drop_state("old").unwrap(), "dropping twice");
    assert!(!b.drop_state("never").unwrap());
    assert_eq!(
        v.value(b, &NS).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kept.value(b, &NS).unwrap(),
        Some(2),
        "other states are untouched"
    );
    // The name is free again, for any kind; the new state starts empty.
    let l = b
        .list_state(&ListStateDescriptor::<Ns, String>::new("old"))
        .unwrap();
    assert!(l.get(b, &NS).unwrap().is_empty());
    l.add(b, &NS, "x".into()).unwrap();
    assert_eq!(
        v.value(b, &NS).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(kept.value(b, &NS).unwrap(), Some(2));
}

/// Batch access against per-key access and a `BTreeMap` model: random batches with repeated keys.
pub(crate) fn batches_agree_with_single_key_access<B: KeyedStateBackend<u64>>(b: &mut B) {
    let v = b
        .value_state(&ValueStateDescriptor::<u32, u64>::new("batch"))
        .unwrap();
    let r = b
        .reducing_state(&ReducingStateDescriptor::<u32, u64>::new("rsum", |a, b| {
            a + b
        }))
        .unwrap();
    let a = b
        .aggregating_state(
            &AggregatingStateDescriptor::<u32, u64, (u64, u64), f64>::new("bavg", Sum),
        )
        .unwrap();
    let mut model = std::collections::BTreeMap::new();
    let mut sums = std::collections::BTreeMap::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    b.set_current_key(999).unwrap();
    for round in 0..60 {
        let keys: Vec<u64> = (0..(next() % 300) as usize).map(|_| next() % 500).collect();
        let values: Vec<u64> = keys.iter().map(|_| next() % 1000).collect();
        let ns = (round % 3) as u32;
        match round % 3 {
            0 => {
                v.update_batch(b, &ns, &keys, &values).unwrap();
                for (k, val) in keys.iter().zip(&values) {
                    model.insert((ns, *k), *val);
                }
            }
            1 => {
                // Remove odd values, double even ones: a repeated key sees its earlier result.
                v.modify_batch(b, &ns, &keys, |_, old| {
                    old.filter(|o| *o % 2 == 0).map(|o| o * 2)
                })
                .unwrap();
                for k in &keys {
                    match model.get(&(ns, *k)).copied() {
                        Some(o) if o % 2 == 0 => model.insert((ns, *k), o * 2),
                        _ => model.remove(&(ns, *k)),
                    };
                }
                v.update_batch(b, &ns, &keys[..keys.len() / 2], &values[..keys.len() / 2])
                    .unwrap();
                for (k, val) in keys.iter().zip(&values).take(keys.len() / 2) {
                    model.insert((ns, *k), *val);
                }
            }
            _ => {
                r.add_batch(b, &ns, &keys, &values).unwrap();
                a.add_batch(b, &ns, &keys, &values).unwrap();
                for (k, val) in keys.iter().zip(&values) {
                    let e = sums.entry((ns, *k)).or_insert((0u64, 0u64));
                    e.0 += val;
                    e.1 += 1;
                }
            }
        }
        assert_eq!(
            b.current_key(),
            Some(&999),
            "batches leave the current key alone"
        );
    }
    let all: Vec<u64> = (0..500).collect();
    for ns in 0..3u32 {
        let mut got = Vec::new();
        v.get_batch(b, &ns, &all, &mut got).unwrap();
        let mut sums_got = Vec::new();
        r.get_batch(b, &ns, &all, &mut sums_got).unwrap();
        let mut avgs = Vec::new();
        a.get_batch(b, &ns, &all, &mut avgs).unwrap();
        for k in all.iter().copied() {
            let i = k as usize;
            assert_eq!(got[i], model.get(&(ns, k)).copied(), "value of {k} in {ns}");
            assert_eq!(sums_got[i], sums.get(&(ns, k)).map(|s| s.0));
            assert_eq!(avgs[i], sums.get(&(ns, k)).map(|s| s.0 as f64 / s.1 as f64));
            b.set_current_key(k).unwrap();
            assert_eq!(
                v.value(b, &ns).unwrap(),
                got[i],
                "batch and per-key reads agree"
            );
            assert_eq!(r.get(b, &ns).unwrap(), sums_got[i]);
        }
        // Every short length: the heap backend's lookups run in stages 8 and 16 keys ahead.
        for len in 0..=40 {
            let mut short = Vec::new();
            v.get_batch(b, &ns, &all[100..100 + len], &mut short)
                .unwrap();
            assert_eq!(short, got[100..100 + len], "a batch of {len} keys");
        }
    }
    let mut out = vec![Some(7)];
    v.get_batch(b, &0, &[], &mut out).unwrap();
    assert_eq!(out, vec![Some(7)], "appends, does not clear");
    assert_eq!(
        v.update_batch(b, &0, &[1, 2], &[1]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

pub(crate) fn batches_with_an_unowned_key_change_nothing<B: KeyedStateBackend<u64>>(b: &mut B) {
    let v = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("owned"))
        .unwrap();
    let range = b.key_group_range();
    let owned_kg = |k: &u64| range.contains(assign_to_key_group(&k.to_be_bytes(), 128).unwrap());
    let inside: Vec<u64> = (0..1000).filter(owned_kg).take(20).collect();
    let outside = (0..1000).find(|k| !owned_kg(k)).unwrap();
    let mut keys = inside.clone();
    keys.push(outside);
    let values = vec![1u64; keys.len()];
    assert_eq!(
        v.update_batch(b, &NS, &keys, &values).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let mut out = Vec::new();
    assert!(v.get_batch(b, &NS, &keys, &mut out).is_err());
    assert!(out.is_empty(), "nothing appended on error");
    v.get_batch(b, &NS, &inside, &mut out).unwrap();
    assert!(
        out.iter().all(Option::is_none),
        "nothing of the failed batch was written"
    );
}

pub(crate) fn routed_keys_land_where_hashed_keys_do<B: KeyedStateBackend<u64>>(b: &mut B) {
    let v = b
        .value_state(&ValueStateDescriptor::<Ns, u64>::new("routed"))
        .unwrap();
    let router = KeyGroupRouter::new(b.max_parallelism(), 1).unwrap();
    for k in 0..2_000u64 {
        b.set_current_key_routed(k, router.route(&k)).unwrap();
        assert_eq!(b.current_key_group(), Some(router.route(&k).key_group()));
        v.update(b, &NS, k + 1).unwrap();
    }
    for k in (0..2_000u64).step_by(13) {
        b.set_current_key(k).unwrap();
        assert_eq!(v.value(b, &NS).unwrap(), Some(k + 1));
    }
    let other = KeyGroupRouter::new(256, 1).unwrap();
    assert_eq!(
        b.set_current_key_routed(5, other.route(&5))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument,
        "a route of another max parallelism"
    );
}

//! Tests of the copy-on-write map: a `BTreeMap` model, snapshots, growth and removal.

use super::*;
use std::collections::BTreeMap;

fn h(k: u64) -> u64 {
    // A well-mixed hash (murmur3 fmix64), as the heap backend uses.
    crate::ids::fmix64(k)
}

fn contents(map: &CowMap<u64, u32, u64>, groups: usize) -> Vec<((usize, u64, u32), u64)> {
    let mut all: Vec<_> = (0..groups)
        .flat_map(|g| map.iter_group(g).map(move |e| ((g, e.key, e.ns), e.value)))
        .collect();
    all.sort();
    all
}

/// Random inserts, updates and removes against a `BTreeMap`, with `hash` deciding how well spread the
/// entries are; snapshots taken on the way must keep showing the state of their moment.
fn model_check(steps: u64, keys: u64, hash: impl Fn(u64, u32) -> u64) {
    let mut map: CowMap<u64, u32, u64> = CowMap::new(3);
    let mut model: BTreeMap<(usize, u64, u32), u64> = BTreeMap::new();
    let mut snapshots = Vec::new();
    let mut x = 7u64;
    for step in 0..steps {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = (x >> 33) % keys;
        let ns = ((x >> 20) % 3) as u32;
        let kg = (key % 3) as usize;
        let hash = hash(key, ns);
        match (x >> 60) % 4 {
            0 => {
                assert_eq!(
                    map.remove(kg, hash, &key, &ns),
                    model.remove(&(kg, key, ns))
                );
            }
            1 => {
                if let Some(v) = map.get_mut(kg, hash, &key, &ns, Logged::Write) {
                    *v += 1;
                }
                if let Some(v) = model.get_mut(&(kg, key, ns)) {
                    *v += 1;
                }
            }
            _ => {
                assert_eq!(
                    map.insert(kg, hash, &key, &ns, step),
                    model.insert((kg, key, ns), step)
                );
            }
        }
        assert_eq!(map.get(kg, hash, &key, &ns), model.get(&(kg, key, ns)));
        if step % (steps / 8) == 0 {
            snapshots.push((map.snapshot(), model.clone()));
        }
    }
    assert_eq!(map.len(), model.len());
    assert_eq!(contents(&map, 3), model.into_iter().collect::<Vec<_>>());
    // Every snapshot still shows exactly the state at the moment it was taken.
    for (mut snap, frozen) in snapshots {
        let mut seen: Vec<_> = (0..3)
            .flat_map(|g| {
                let group = snap.take_group(g).unwrap();
                group
                    .iter()
                    .map(|e| ((g, e.key, e.ns), e.value))
                    .collect::<Vec<_>>()
            })
            .collect();
        seen.sort();
        assert_eq!(seen, frozen.into_iter().collect::<Vec<_>>());
    }
}

#[test]
fn model_check_with_splits_and_snapshots() {
    model_check(40_000, 3000, |key, ns| h(key ^ u64::from(ns) << 40));
}

#[test]
fn model_check_large_enough_for_many_page_splits() {
    model_check(200_000, 60_000, |key, ns| h(key ^ u64::from(ns) << 40));
}

#[test]
fn identical_hashes_share_one_probe_run_and_survive_removal() {
    // Every entry hashes alike: one page, one long probe run, backward shifts on every removal.
    model_check(20_000, 400, |_, _| 0x5555_0000_0000_0000);
}

#[test]
fn zero_hash_is_stored_and_found() {
    model_check(5_000, 50, |key, _| if key % 2 == 0 { 0 } else { u64::MAX });
}

#[test]
fn hashes_differing_only_in_high_bits_collide_in_the_directory() {
    // Same low bits (same page at every level), different slot homes.
    model_check(30_000, 2000, |key, ns| (h(key) << 32) ^ u64::from(ns));
}

#[test]
fn modify_inserts_updates_and_removes_like_the_model() {
    let mut map: CowMap<u64, (), u64> = CowMap::new(2);
    let mut model: BTreeMap<u64, u64> = BTreeMap::new();
    let mut snapshots = Vec::new();
    let mut x = 11u64;
    for step in 0..20_000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = (x >> 33) % 700;
        // Add 1 to the value; a value reaching 5 is removed instead.
        let f = |old: Option<&u64>| match old.copied().unwrap_or(0) + 1 {
            5 => None,
            v => Some(v),
        };
        map.modify((key % 2) as usize, h(key), &key, &(), f);
        match f(model.get(&key)) {
            Some(v) => model.insert(key, v),
            None => model.remove(&key),
        };
        if step % 4000 == 0 {
            snapshots.push((map.snapshot(), model.clone()));
        }
    }
    assert_eq!(map.len(), model.len());
    for (key, value) in &model {
        assert_eq!(map.get((key % 2) as usize, h(*key), key, &()), Some(value));
    }
    for (mut snap, frozen) in snapshots {
        let seen: BTreeMap<u64, u64> = (0..2)
            .flat_map(|g| {
                let group = snap.take_group(g).unwrap();
                group.iter().map(|e| (e.key, e.value)).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(seen, frozen);
    }
}

#[test]
fn model_check_small() {
    // Small enough for `cargo miri test` (see docs/design.md), which checks the unsafe write path.
    model_check(3_000, 300, |key, ns| h(key ^ u64::from(ns) << 40));
}

#[test]
fn a_snapshot_read_and_dropped_on_another_thread_while_the_map_is_written() {
    let mut map: CowMap<u64, (), u64> = CowMap::new(2);
    for k in 0..300u64 {
        map.insert((k % 2) as usize, h(k), &k, &(), k);
    }
    for round in 0..3u64 {
        let mut snap = map.snapshot();
        let expected: u64 = (0..300u64).map(|k| k + round).sum();
        let reader = std::thread::spawn(move || {
            let mut sum = 0;
            for g in 0..2 {
                sum += snap
                    .take_group(g)
                    .unwrap()
                    .iter()
                    .map(|e| e.value)
                    .sum::<u64>();
            }
            sum
        });
        for k in 0..300u64 {
            *map.get_mut((k % 2) as usize, h(k), &k, &(), Logged::Write)
                .unwrap() += 1;
        }
        assert_eq!(reader.join().unwrap(), expected);
    }
    assert_eq!(map.get(1, h(7), &7, &()), Some(&10));
}

#[test]
fn new_groups_share_one_empty_map_until_written() {
    let mut map: CowMap<u64, (), u64> = CowMap::new(4);
    assert!(map.get(2, h(1), &1, &()).is_none());
    assert!(map.get_mut(2, h(1), &1, &(), Logged::Write).is_none());
    assert!(map.remove(2, h(1), &1, &()).is_none());
    map.insert(2, h(1), &1, &(), 10);
    assert_eq!(map.get(2, h(1), &1, &()), Some(&10));
    for g in [0, 1, 3] {
        assert!(map.get(g, h(1), &1, &()).is_none());
        assert_eq!(map.iter_group(g).count(), 0);
    }
}

#[test]
fn a_write_after_a_snapshot_copies_one_page_and_the_directory_only() {
    let mut map: CowMap<u64, (), u64> = CowMap::new(1);
    for k in 0..10_000u64 {
        map.insert(0, h(k), &k, &(), k);
    }
    let mut snap = map.snapshot();
    *map.get_mut(0, h(5), &5, &(), Logged::Write).unwrap() = 99;
    let frozen = snap.take_group(0).unwrap();
    let live = &map.groups[0];
    assert_eq!(frozen.pages.len(), live.pages.len());
    let copied = frozen
        .pages
        .iter()
        .zip(&live.pages)
        .filter(|(a, b)| !Arc::ptr_eq(&a.slots, &b.slots))
        .count();
    assert_eq!(copied, 1, "exactly the written page is copied");
    assert_eq!(frozen.iter().find(|e| e.key == 5).unwrap().value, 5);
    assert_eq!(map.get(0, h(5), &5, &()), Some(&99));
}

#[test]
fn a_sweep_in_small_steps_removes_and_rewrites_like_the_model_and_spares_a_snapshot() {
    let groups = 3;
    let mut map: CowMap<u64, u32, u64> = CowMap::new(groups);
    for key in 0..5_000u64 {
        map.insert((key % 3) as usize, h(key), &key, &0, key);
    }
    let before = contents(&map, groups);
    let mut snap = map.snapshot();
    // Odd values are removed, values divisible by 4 become `+ 1`, the rest stay.
    let judge = |v: &u64| match v {
        v if v % 2 == 1 => sweep::Sweep::Remove,
        v if v % 4 == 0 => sweep::Sweep::Replace(v + 1),
        _ => sweep::Sweep::Keep,
    };
    let mut cursor = sweep::SweepCursor::default();
    // Steps of 7 slots until a round ended.
    let mut steps = 0;
    while !cursor.step(&mut map, 7, judge) {
        steps += 1;
    }
    assert!(
        steps > 5_000 / 7,
        "a round visits every entry: {steps} steps"
    );
    let expected: Vec<_> = before
        .iter()
        .filter(|(_, v)| v % 2 == 0)
        .map(|&(k, v)| (k, if v % 4 == 0 { v + 1 } else { v }))
        .collect();
    // A step ends with its round: rewritten values (4n + 1) are odd, and only a second round removes them.
    let first_round = contents(&map, groups);
    assert_eq!(first_round, expected);
    assert_eq!(map.len(), first_round.len());
    for (kg, key, ns) in first_round.iter().map(|(k, _)| *k) {
        assert!(map.get(kg, h(key), &key, &ns).is_some(), "{key} findable");
    }
    while !cursor.step(&mut map, 7, judge) {}
    let second: Vec<_> = expected
        .iter()
        .filter(|(_, v)| v % 2 == 0)
        .copied()
        .collect();
    assert_eq!(contents(&map, groups), second);
    // The snapshot still shows every entry as it was.
    let mut frozen = Vec::new();
    for g in 0..groups {
        let group = snap.take_group(g).unwrap();
        frozen.extend(group.iter().map(|e| ((g, e.key, e.ns), e.value)));
    }
    frozen.sort();
    assert_eq!(frozen, before);
}

/// A logged word names its entries by the low 48 bits of their hash: the probe-run walk must find every
/// entry with those bits, including ones that differ above them and ones pushed along the run by Robin
/// Hood insertion or left by backward-shift deletion, and nothing else.
#[test]
fn entries_are_found_by_the_low_48_bits_of_their_hash() {
    let mut map: CowMap<u64, u32, u64> = CowMap::new(1);
    // Hashes in 64 classes of equal low 48 bits; high bits tell the members apart.
    let hash = |k: u64| (h(k % 64) & changes::HASH_MASK) | ((k / 64) << 48);
    for k in 0..6_000u64 {
        map.insert(0, hash(k), &k, &0, k);
    }
    for k in (0..6_000u64).step_by(7) {
        map.remove(0, hash(k), &k, &0);
    }
    let group = map.snapshot().take_group(0).unwrap();
    for class in 0..64u64 {
        let bits = hash(class) & changes::HASH_MASK;
        let mut found = Vec::new();
        group
            .try_for_each_with_hash_bits(bits, |e| {
                found.push(e.key);
                Ok::<(), ()>(())
            })
            .unwrap();
        found.sort_unstable();
        let expected: Vec<u64> = (0..6_000u64)
            .filter(|k| k % 64 == class && k % 7 != 0)
            .collect();
        assert_eq!(found, expected, "class {class}");
    }
}

//! How close can a batch get with software prefetch come to `hashbrown`'s per-key `get` loop, by table
//! layout? The target for the heap backend's batch get of 1M shuffled `u64` keys is at most 1.0x that loop;
//! this bench measures the same workload on stripped-down tables of three shapes, without copy-on-write,
//! namespaces or error handling, to find which part of the heap map's shape costs what (docs/engines.md,
//! "Where the heap batch stands and why"):
//!
//! - `flat`: one open-addressing array of 16-byte slots `(key + 1, value)`, linear probing; one cache line
//!   per lookup.
//! - `paged/dir16`, `paged/dir32`: 2^14 pages of 128 slots of 24 bytes `(hash, key, value)`, each page its
//!   own allocation, found through one directory of 16- or 32-byte elements (the heap map's element is 32:
//!   page pointer and length, entry count, epoch).
//! - `grouped`: the heap map's shape: 128 key groups (low bits of the key hash), each an `Arc` of its own
//!   linear-hashing directory (level, split) of `Arc` pages, the map hash rotated as `mix_entry_hash`.
//!
//! Every table hashes the key as the backend does (`xxh3_64` of its big-endian bytes) and looks keys up in
//! batches of 1,024, prefetching 16 keys ahead (paged tables: directory element 32 keys ahead, then the home
//! slot's two lines 16 ahead, as `heap/bulk.rs`). Criterion's spread on a shared VM is wider than the
//! differences measured here, so this bench runs hashbrown's loop and each table alternately in one process
//! and reports each one's fastest of `BATCH_LAYOUTS_ROUNDS` rounds (default 10) and its ratio to
//! hashbrown's. Run: `cargo bench --bench batch_layouts`. The tables are sized for 1M keys; every lookup
//! is checked to find its key.

#![allow(missing_docs, reason = "a bench binary")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;

const KEYS: u64 = 1_000_000;
const BATCH: usize = 1_024;
/// Keys between a slot's prefetch and its lookup; the directory element is prefetched twice as far ahead.
const AHEAD: usize = 16;
/// Ring of in-flight lookups (a power of two above `2 * AHEAD`).
const RING: usize = 64;

fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut keys: Vec<u64> = (0..n).collect();
    keys.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    keys
}

/// The backend's stable key hash of a `u64` key.
#[inline(always)]
fn key_hash(key: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&key.to_be_bytes())
}

/// Hints the CPU to fetch the line at `ptr` (as the crate's `heap/prefetch.rs`).
#[inline(always)]
fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code, reason = "the bench measures software prefetch")]
    // SAFETY: `prefetcht0` is a hint: it never dereferences `ptr` architecturally and cannot fault for any
    // address; SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

/// A slot's line and the next (a 24-byte slot often straddles two; the heap map's `prefetch_slot`).
#[inline(always)]
fn prefetch_slot(slot: *const Slot) {
    prefetch(slot);
    prefetch(slot.cast::<u8>().wrapping_add(64));
}

trait Layout {
    fn get_batch(&self, keys: &[u64], out: &mut Vec<Option<u64>>);
}

/// `flat`: 2^21 slots of `(key + 1, value)`; 0 marks an empty slot.
struct Flat {
    slots: Vec<(u64, u64)>,
}

impl Flat {
    fn new(keys: &[u64]) -> Self {
        let mut slots = vec![(0, 0); 1 << 21];
        let mask = slots.len() - 1;
        for &k in keys {
            let mut i = (key_hash(k) >> 20) as usize & mask;
            while slots[i].0 != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = (k + 1, k);
        }
        Flat { slots }
    }

    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        (hash >> 20) as usize & (self.slots.len() - 1)
    }
}

impl Layout for Flat {
    fn get_batch(&self, keys: &[u64], out: &mut Vec<Option<u64>>) {
        let mask = self.slots.len() - 1;
        let mut homes = [0usize; RING];
        for (j, &k) in keys.iter().enumerate().take(AHEAD) {
            homes[j] = self.home(key_hash(k));
            prefetch(&self.slots[homes[j]]);
        }
        for (i, &k) in keys.iter().enumerate() {
            if let Some(&ahead) = keys.get(i + AHEAD) {
                let h = self.home(key_hash(ahead));
                homes[(i + AHEAD) % RING] = h;
                prefetch(&self.slots[h]);
            }
            let mut at = homes[i % RING];
            out.push(loop {
                match self.slots[at] {
                    (0, _) => break None,
                    (stored, v) if stored == k + 1 => break Some(v),
                    _ => at = (at + 1) & mask,
                }
            });
        }
    }
}

/// A 24-byte slot: `[hash, key, value]`; hash 0 marks an empty slot (stored hashes have a bit set).
type Slot = [u64; 3];

/// The value of `key` in `slots`, probing linearly from `hash`'s home slot.
#[inline(always)]
fn find(slots: &[Slot], hash: u64, key: u64) -> Option<u64> {
    let mask = slots.len() - 1;
    let mut i = (hash >> 32) as usize & mask;
    loop {
        let s = &slots[i];
        if s[0] == hash && s[1] == key {
            return Some(s[2]);
        }
        if s[0] == 0 {
            return None;
        }
        i = (i + 1) & mask;
    }
}

/// Inserts into `slots`, which has a free slot.
fn place(slots: &mut [Slot], hash: u64, key: u64) {
    let mask = slots.len() - 1;
    let mut i = (hash >> 32) as usize & mask;
    while slots[i][0] != 0 {
        i = (i + 1) & mask;
    }
    slots[i] = [hash, key, key];
}

/// `paged`: one directory of `2^14` elements of `16 + 8 * PAD` bytes.
struct Paged<const PAD: usize> {
    dir: Vec<(Box<[Slot]>, [u64; PAD])>,
}

impl<const PAD: usize> Paged<PAD> {
    fn new(keys: &[u64]) -> Self {
        let mut dir: Vec<(Box<[Slot]>, [u64; PAD])> = (0..1 << 14)
            .map(|_| (vec![[0; 3]; 128].into_boxed_slice(), [0; PAD]))
            .collect();
        for &k in keys {
            let h = key_hash(k) | 1 << 20;
            let p = h as usize & (dir.len() - 1);
            place(&mut dir[p].0, h, k);
        }
        Paged { dir }
    }
}

impl<const PAD: usize> Layout for Paged<PAD> {
    fn get_batch(&self, keys: &[u64], out: &mut Vec<Option<u64>>) {
        let hashed = |k: u64| key_hash(k) | 1 << 20;
        let page = |h: u64| h as usize & (self.dir.len() - 1);
        let slots = |h: u64| -> &[Slot] {
            let s = &self.dir[page(h)].0;
            prefetch_slot(s.as_ptr().wrapping_add((h >> 32) as usize & (s.len() - 1)));
            s
        };
        let mut located = [0u64; RING];
        let mut paged: [(u64, &[Slot]); RING] = [(0, &[]); RING];
        for (j, &k) in keys.iter().enumerate().take(2 * AHEAD) {
            located[j] = hashed(k);
            prefetch(&self.dir[page(located[j])]);
        }
        for j in 0..AHEAD.min(keys.len()) {
            paged[j] = (located[j], slots(located[j]));
        }
        for (i, &k) in keys.iter().enumerate() {
            if let Some(&ahead) = keys.get(i + 2 * AHEAD) {
                let h = hashed(ahead);
                located[(i + 2 * AHEAD) % RING] = h;
                prefetch(&self.dir[page(h)]);
            }
            if i + AHEAD < keys.len() {
                let h = located[(i + AHEAD) % RING];
                paged[(i + AHEAD) % RING] = (h, slots(h));
            }
            let (h, s) = paged[i % RING];
            out.push(find(s, h, k));
        }
    }
}

/// One key group of [`Grouped`]: a linear-hashing directory (`2^level + split` pages) with 32-byte
/// elements, as the heap map's `KeyGroupMap`.
struct Group {
    pages: Vec<(Arc<[Slot]>, u64, u64)>,
    level: u32,
    split: usize,
}

impl Group {
    #[inline(always)]
    fn page_no(&self, hash: u64) -> usize {
        let low = (1usize << self.level) - 1;
        let p = hash as usize & low;
        if p < self.split {
            hash as usize & (low << 1 | 1)
        } else {
            p
        }
    }
}

/// `grouped`: 128 key groups of 128 pages of 128 slots.
struct Grouped {
    groups: Vec<Arc<Group>>,
}

/// The map hash of a key hash (as `mix_entry_hash` in the void namespace), with a bit set that neither
/// the page number nor the home slot reads, so that it is never 0.
#[inline(always)]
fn map_hash(key_hash: u64) -> u64 {
    key_hash.rotate_right(16) | 1 << 20
}

impl Grouped {
    fn new(keys: &[u64]) -> Self {
        let mut groups: Vec<Group> = (0..128)
            .map(|_| Group {
                pages: (0..128)
                    .map(|_| ((0..128).map(|_| [0; 3]).collect(), 0, 0))
                    .collect(),
                level: 7,
                split: 0,
            })
            .collect();
        for &k in keys {
            let kh = key_hash(k);
            let group = &mut groups[(kh & 127) as usize];
            let h = map_hash(kh);
            let p = group.page_no(h);
            let slots = Arc::get_mut(&mut group.pages[p].0).expect("a new page is unique");
            place(slots, h, k);
        }
        Grouped {
            groups: groups.into_iter().map(Arc::new).collect(),
        }
    }
}

impl Layout for Grouped {
    fn get_batch(&self, keys: &[u64], out: &mut Vec<Option<u64>>) {
        let locate = |k: u64| {
            let kh = key_hash(k);
            let (kg, h) = ((kh & 127) as usize, map_hash(kh));
            let group = &self.groups[kg];
            let p = group.page_no(h);
            prefetch(&group.pages[p]);
            (h, kg, p)
        };
        let slots = |(h, kg, p): (u64, usize, usize)| -> &[Slot] {
            let s = &self.groups[kg].pages[p].0;
            prefetch_slot(s.as_ptr().wrapping_add((h >> 32) as usize & (s.len() - 1)));
            s
        };
        let mut located = [(0u64, 0usize, 0usize); RING];
        let mut paged: [(u64, &[Slot]); RING] = [(0, &[]); RING];
        for (j, &k) in keys.iter().enumerate().take(2 * AHEAD) {
            located[j] = locate(k);
        }
        for j in 0..AHEAD.min(keys.len()) {
            paged[j] = (located[j].0, slots(located[j]));
        }
        for (i, &k) in keys.iter().enumerate() {
            if let Some(&ahead) = keys.get(i + 2 * AHEAD) {
                located[(i + 2 * AHEAD) % RING] = locate(ahead);
            }
            if i + AHEAD < keys.len() {
                let at = located[(i + AHEAD) % RING];
                paged[(i + AHEAD) % RING] = (at.0, slots(at));
            }
            let (h, s) = paged[i % RING];
            out.push(find(s, h, k));
        }
    }
}

/// Seconds of one pass of `table`'s batch get over `probe`, checked against the values stored.
fn batch_pass(table: &dyn Layout, probe: &[u64], out: &mut Vec<Option<u64>>) -> f64 {
    let t = Instant::now();
    let mut sum = 0u64;
    for chunk in probe.chunks(BATCH) {
        out.clear();
        table.get_batch(chunk, out);
        sum = out
            .iter()
            .fold(sum, |a, v| a.wrapping_add(v.expect("every key is present")));
    }
    let secs = t.elapsed().as_secs_f64();
    let n = probe.len() as u64;
    assert_eq!(sum, n * (n - 1) / 2, "every value read once");
    secs
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter, which this bench ignores); `cargo test --all-targets`
    // runs it without, unoptimized: one round over a tenth of the keys checks that every table finds them.
    let measuring = std::env::args().any(|a| a == "--bench");
    let rounds: usize = match measuring {
        true => std::env::var("BATCH_LAYOUTS_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(10),
        false => 1,
    };
    let n = if measuring { KEYS } else { KEYS / 10 };
    let keys = shuffled(n, 7);
    let probe = shuffled(n, 8);
    let mut map: hashbrown::HashMap<u64, u64> = hashbrown::HashMap::new();
    for &k in &keys {
        map.insert(k, k);
    }
    let tables: Vec<(&str, Box<dyn Layout>)> = vec![
        ("flat", Box::new(Flat::new(&keys))),
        ("paged/dir16", Box::new(Paged::<0>::new(&keys))),
        ("paged/dir32", Box::new(Paged::<2>::new(&keys))),
        ("grouped", Box::new(Grouped::new(&keys))),
    ];
    let mut hashbrown_best = f64::MAX;
    let mut best = vec![f64::MAX; tables.len()];
    let mut out = Vec::with_capacity(BATCH);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut sum = 0u64;
        for k in &probe {
            sum = sum.wrapping_add(*map.get(k).expect("present"));
        }
        black_box(sum);
        hashbrown_best = hashbrown_best.min(t.elapsed().as_secs_f64());
        for ((_, table), best) in tables.iter().zip(&mut best) {
            *best = best.min(batch_pass(table.as_ref(), &probe, &mut out));
        }
    }
    if !measuring {
        println!("batch_layouts: every table found {n} keys (a check, not a measurement)");
        return;
    }
    println!(
        "hashbrown get loop: {:.2} ms (fastest of {rounds} rounds)",
        hashbrown_best * 1e3
    );
    for ((name, _), best) in tables.iter().zip(&best) {
        println!(
            "{name:<12} batch get: {:.2} ms, {:.3}x hashbrown",
            best * 1e3,
            best / hashbrown_best
        );
    }
}

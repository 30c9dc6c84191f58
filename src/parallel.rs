//! Running a few independent pieces of restore work at once (heap decode, LSM SST writing).

/// The default number of restore threads of both backends: the machine's available parallelism, at
/// most 4.
pub(crate) fn default_restore_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// `f(index, item)` for every item: the first on the calling thread, each other on a scoped thread of its
/// own; results in item order. A panic on a worker thread resumes on the caller, as it would have on one
/// thread. One item (or none) spawns nothing.
pub(crate) fn run_each<T: Send, R: Send>(
    items: Vec<T>,
    f: impl Fn(usize, T) -> R + Sync,
) -> Vec<R> {
    let mut items = items.into_iter().enumerate();
    let Some((_, first)) = items.next() else {
        return Vec::new();
    };
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .map(|(n, item)| scope.spawn(move || f(n, item)))
            .collect();
        let mut results = Vec::with_capacity(workers.len() + 1);
        results.push(f(0, first));
        for worker in workers {
            results.push(
                worker
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p)),
            );
        }
        results
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_in_item_order() {
        let out = super::run_each((0..5).collect(), |n, x: u32| (n, x * 2));
        assert_eq!(out, vec![(0, 0), (1, 2), (2, 4), (3, 6), (4, 8)]);
        assert!(super::run_each(Vec::<u32>::new(), |_, x| x).is_empty());
    }
}

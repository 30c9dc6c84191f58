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

/// `items` cut into at most `parts` contiguous runs of about equal total `weight` (bytes, say), in order,
/// none empty; `parts` of 0 counts as 1.
pub(crate) fn runs_by_weight<T>(
    items: Vec<T>,
    parts: usize,
    weight: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let parts = parts.max(1);
    let total: usize = items.iter().map(&weight).sum();
    let mut runs: Vec<Vec<T>> = Vec::with_capacity(parts);
    let mut run = Vec::new();
    let mut seen = 0usize;
    for item in items {
        seen += weight(&item);
        run.push(item);
        // Close run `runs.len()` once the runs so far hold their share of the weight.
        if runs.len() + 1 < parts && seen * parts >= total * (runs.len() + 1) {
            runs.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_cover_every_item_once_in_order() {
        let items: Vec<(usize, usize)> = (0..10).map(|g| (g, 1 + g * 3)).collect();
        for parts in 0..=12 {
            let runs = super::runs_by_weight(items.clone(), parts, |(_, w)| *w);
            assert!(!runs.is_empty() && runs.len() <= parts.max(1));
            let flat: Vec<usize> = runs
                .iter()
                .flat_map(|r| r.iter().map(|(g, _)| *g))
                .collect();
            assert_eq!(flat, (0..10).collect::<Vec<_>>(), "{parts} parts");
            assert!(runs.iter().all(|r| !r.is_empty()));
        }
        assert!(super::runs_by_weight(Vec::<usize>::new(), 3, |w| *w).is_empty());
        // A run closes once it holds its share: the heavy first item alone, then the rest.
        let runs = super::runs_by_weight(vec![100, 1, 1], 2, |w| *w);
        assert_eq!(runs, vec![vec![100], vec![1, 1]]);
    }

    #[test]
    fn results_come_in_item_order() {
        let out = super::run_each((0..5).collect(), |n, x: u32| (n, x * 2));
        assert_eq!(out, vec![(0, 0), (1, 2), (2, 4), (3, 6), (4, 8)]);
        assert!(super::run_each(Vec::<u32>::new(), |_, x| x).is_empty());
    }
}

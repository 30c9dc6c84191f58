//! Checks of keyed state handle sets: what a restore accepts, and what a checkpoint must hold to complete
//! (`docs/protocol.md`, "Backends: notifications are hints, restore validates", invariant P10).

use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::snapshot::handle::KeyedStateHandle;

/// Checks that `handles` can restore the key groups `owned` of operator `operator_id` with
/// `max_parallelism`, and returns those that overlap `owned`, the largest overlap first.
///
/// Accepted: at least one handle; all of one checkpoint; all of `operator_id`; all of `max_parallelism`;
/// no key group in two handles; every owned key group in some handle.
///
/// # Errors
/// [`Error::InvalidArgument`] naming what is wrong (handles of several checkpoints or operators, another
/// max parallelism, overlapping handles, owned key groups no handle covers).
pub(crate) fn restore_handles<'a>(
    operator_id: &str,
    max_parallelism: u32,
    owned: KeyGroupRange,
    handles: &'a [KeyedStateHandle],
) -> Result<Vec<&'a KeyedStateHandle>> {
    let Some(first) = handles.first() else {
        return Err(Error::InvalidArgument(format!(
            "no state handles to restore operator `{operator_id}` from (a backend without state is \
             created with `new`)"
        )));
    };
    for h in handles {
        if h.checkpoint_id != first.checkpoint_id {
            return Err(Error::InvalidArgument(format!(
                "state handles of checkpoints {} and {} mixed in one restore",
                first.checkpoint_id, h.checkpoint_id
            )));
        }
        if h.operator_id != operator_id {
            return Err(Error::InvalidArgument(format!(
                "a state handle of operator `{}` given to a restore of operator `{operator_id}`",
                h.operator_id
            )));
        }
        if h.max_parallelism != max_parallelism {
            return Err(Error::InvalidArgument(format!(
                "snapshot of backend {} has max parallelism {}, this backend {max_parallelism}: max \
                 parallelism is fixed for a job's life",
                h.backend_id, h.max_parallelism
            )));
        }
    }
    let mut sorted: Vec<&KeyedStateHandle> = handles
        .iter()
        .filter(|h| !h.key_groups.is_empty())
        .collect();
    sorted.sort_by_key(|h| h.key_groups.start());
    for pair in sorted.windows(2) {
        if !pair[0]
            .key_groups
            .intersection(&pair[1].key_groups)
            .is_empty()
        {
            return Err(Error::InvalidArgument(format!(
                "state handles of backends {} and {} both hold key groups {}: which one is the state is \
                 ambiguous",
                pair[0].backend_id,
                pair[1].backend_id,
                pair[0].key_groups.intersection(&pair[1].key_groups)
            )));
        }
    }
    if let Some(gap) = first_gap(&sorted, owned) {
        return Err(Error::InvalidArgument(format!(
            "key groups {gap} of the owned range {owned} are in none of the {} state handles of \
             checkpoint {}: their state would be lost",
            handles.len(),
            first.checkpoint_id
        )));
    }
    let mut overlapping: Vec<&KeyedStateHandle> = sorted
        .into_iter()
        .filter(|h| !h.key_groups.intersection(&owned).is_empty())
        .collect();
    overlapping.sort_by_key(|h| std::cmp::Reverse(h.key_groups.intersection(&owned).len()));
    Ok(overlapping)
}

/// Checks that the keyed handles of operator `operator_id` in one checkpoint hold every key group of
/// their max parallelism exactly once, which is what makes every later restore possible.
///
/// # Errors
/// [`Error::IllegalState`] naming what is wrong; the checkpoint must be declined.
pub(crate) fn check_partition(operator_id: &str, handles: &[&KeyedStateHandle]) -> Result<()> {
    let Some(first) = handles.first() else {
        return Ok(());
    };
    let all = KeyGroupRange::all(first.max_parallelism).map_err(|e| {
        Error::IllegalState(format!(
            "operator `{operator_id}` acknowledged an impossible max parallelism: {e}"
        ))
    })?;
    let owned: Vec<KeyedStateHandle> = handles.iter().map(|h| (*h).clone()).collect();
    restore_handles(operator_id, first.max_parallelism, all, &owned)
        .map(|_| ())
        .map_err(|e| match e {
            Error::InvalidArgument(why) => Error::IllegalState(format!(
                "the keyed state of operator `{operator_id}` is inconsistent: {why}"
            )),
            other => other,
        })
}

/// The first run of key groups of `owned` that no range of `sorted` (ascending, disjoint) covers.
fn first_gap(sorted: &[&KeyedStateHandle], owned: KeyGroupRange) -> Option<KeyGroupRange> {
    let end = owned.end()?;
    let mut next = owned.start();
    for h in sorted {
        let (Some(h_end), h_start) = (h.key_groups.end(), h.key_groups.start()) else {
            continue;
        };
        if h_end < next {
            continue;
        }
        if h_start > next {
            return KeyGroupRange::new(next, (h_start - 1).min(end)).ok();
        }
        if h_end >= end {
            return None;
        }
        next = h_end + 1;
    }
    KeyGroupRange::new(next, end).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::handle::HandleFormat;

    fn handle(op: &str, id: u64, start: u32, end: u32) -> KeyedStateHandle {
        KeyedStateHandle {
            backend_id: format!("b{start}"),
            operator_id: op.into(),
            checkpoint_id: id,
            max_parallelism: 16,
            key_groups: KeyGroupRange::new(start, end).unwrap(),
            format: HandleFormat::KeyedFile,
            files: Vec::new(),
        }
    }

    #[test]
    fn accepts_a_partition_and_picks_the_overlapping_handles() {
        let hs = [handle("op", 3, 0, 7), handle("op", 3, 8, 15)];
        let owned = KeyGroupRange::new(6, 9).unwrap();
        let picked = restore_handles("op", 16, owned, &hs).unwrap();
        assert_eq!(picked.len(), 2);
        assert!(check_partition("op", &[&hs[0], &hs[1]]).is_ok());
    }

    #[test]
    fn refuses_gaps_overlaps_mixed_checkpoints_and_operators() {
        let all = KeyGroupRange::all(16).unwrap();
        let cases: [(&str, Vec<KeyedStateHandle>, &str); 5] = [
            ("none", vec![], "no state handles"),
            ("gap", vec![handle("op", 3, 0, 7)], "key groups [8, 15]"),
            (
                "overlap",
                vec![handle("op", 3, 0, 9), handle("op", 3, 8, 15)],
                "both hold key groups [8, 9]",
            ),
            (
                "mixed checkpoints",
                vec![handle("op", 3, 0, 7), handle("op", 4, 8, 15)],
                "checkpoints 3 and 4",
            ),
            (
                "other operator",
                vec![handle("op", 3, 0, 7), handle("other", 3, 8, 15)],
                "operator `other`",
            ),
        ];
        for (name, hs, message) in cases {
            let err = restore_handles("op", 16, all, &hs).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{name}");
            assert!(err.to_string().contains(message), "{name}: {err}");
        }
        let gap = [handle("op", 3, 0, 3), handle("op", 3, 8, 15)];
        let err = check_partition("op", &[&gap[0], &gap[1]]).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::IllegalState);
        assert!(err.to_string().contains("key groups [4, 7]"), "{err}");
    }
}

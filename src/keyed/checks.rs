//! Checks and errors both keyed state backends share: subtask settings, snapshot ids, state access.

use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::keyed::backend::StateId;

/// Checks the settings every backend shares: an operator id usable in file names (ASCII letters, digits,
/// `-`, `_`), a valid max parallelism, and a key-group range inside it.
///
/// # Errors
/// [`Error::InvalidArgument`] naming what is wrong.
pub(crate) fn validate_subtask(
    operator_id: &str,
    max_parallelism: u32,
    key_groups: KeyGroupRange,
) -> Result<()> {
    let id_ok = !operator_id.is_empty()
        && operator_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !id_ok {
        return Err(Error::InvalidArgument(format!(
            "operator id `{operator_id}` must be non-empty ASCII letters, digits, `-` or `_`"
        )));
    }
    KeyGroupRange::all(max_parallelism)?;
    if key_groups.end().is_some_and(|e| e >= max_parallelism) {
        return Err(Error::InvalidArgument(format!(
            "key-group range {key_groups} exceeds max parallelism {max_parallelism}"
        )));
    }
    Ok(())
}

/// A snapshot id must exceed every id the backend snapshotted or was restored from (ids never repeat;
/// a repeated id would make two snapshots answer to one checkpoint).
///
/// # Errors
/// [`Error::IllegalState`] naming both ids.
pub(crate) fn check_snapshot_id(checkpoint_id: u64, last: Option<u64>) -> Result<()> {
    match last {
        Some(last) if checkpoint_id <= last => Err(Error::IllegalState(format!(
            "snapshot for checkpoint {checkpoint_id} refused: this backend already snapshotted or was              restored from checkpoint {last}, and ids never repeat"
        ))),
        _ => Ok(()),
    }
}

/// The error of a state access without a current key.
pub(crate) fn no_current_key() -> Error {
    Error::IllegalState("no current key: call set_current_key first".into())
}

/// The error of a state id this backend did not register (with these types).
pub(crate) fn wrong_state(id: StateId) -> Error {
    Error::InvalidArgument(format!(
        "state {} is not registered in this backend with these types",
        id.0
    ))
}

/// A route must be computed for the backend's max parallelism (its key group would be another otherwise).
///
/// # Errors
/// [`Error::InvalidArgument`] naming both max parallelisms.
#[inline]
pub(crate) fn check_route(
    route: &crate::keyed::router::KeyRoute,
    max_parallelism: u32,
) -> Result<()> {
    if route.max_parallelism() == max_parallelism {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "a route for max parallelism {} given to a backend of max parallelism {max_parallelism}",
        route.max_parallelism()
    )))
}

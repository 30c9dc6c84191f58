//! Checks and errors both keyed state backends share: snapshot ids, state access.

use crate::error::{Error, Result};
use crate::keyed::backend::StateId;

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
    route: &crate::key_group::router::KeyRoute,
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

//! Checks and errors both keyed state backends share: state access, routes.

use crate::error::{Error, Result};
use crate::keyed::backend::StateId;

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

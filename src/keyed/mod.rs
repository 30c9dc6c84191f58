//! The keyed state API: descriptors, the backend trait and the typed state objects.

pub(crate) mod backend;
pub(crate) mod checks;
pub(crate) mod descriptor;
pub(crate) mod map_iter;
pub(crate) mod router;
pub(crate) mod state;
pub(crate) mod state_ops;

//! The heap backend's current key, as a component that owns it: the key located once (stable hash, key
//! group, index in the owned range) so that every state access of the record reuses it, and the buffer
//! its encoding is hashed from.

use crate::error::{Error, Result};
use crate::heap::table::CurrentKey;
use crate::key_group::locate_hash;
use crate::key_group::router::KeyRoute;
use crate::keyed::backend::{StateId, StateKey};
use crate::keyed::checks::{check_route, no_current_key, wrong_state};
use crate::keyed::identity::SubtaskIdentity;

/// The current key of a heap backend, if one is set.
pub(crate) struct KeyCursor<K> {
    current: Option<CurrentKey<K>>,
    key_buf: Vec<u8>,
}

impl<K: StateKey> KeyCursor<K> {
    pub(crate) fn new() -> Self {
        KeyCursor {
            current: None,
            key_buf: Vec::with_capacity(64),
        }
    }

    /// The current key, located.
    #[inline]
    pub(crate) fn get(&self) -> Option<&CurrentKey<K>> {
        self.current.as_ref()
    }

    /// `table` with the current key; the access error if either is missing (no current key, or a state
    /// handle of other types).
    ///
    /// # Errors
    /// [`crate::Error::IllegalState`] without a current key, else [`crate::Error::InvalidArgument`].
    #[inline]
    pub(crate) fn with<T>(&self, table: Option<T>, id: StateId) -> Result<(T, &CurrentKey<K>)> {
        match (table, self.current.as_ref()) {
            (Some(table), Some(current)) => Ok((table, current)),
            _ => Err(access_error(self.current.is_some(), id)),
        }
    }

    /// Makes `key` current (hashed here).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] if its key group is not `identity`'s.
    #[inline]
    pub(crate) fn set(&mut self, key: K, identity: &SubtaskIdentity) -> Result<()> {
        let hash = key.stable_hash(&mut self.key_buf);
        self.set_hashed(key, hash, identity)
    }

    /// Makes `key` current with the route the exchange computed for it (hashed once, checked in debug
    /// builds).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a route of another max parallelism or a key group not
    /// `identity`'s.
    #[inline]
    pub(crate) fn set_routed(
        &mut self,
        key: K,
        route: KeyRoute,
        identity: &SubtaskIdentity,
    ) -> Result<()> {
        check_route(&route, identity.max_parallelism())?;
        debug_assert_eq!(
            route.hash(),
            key.stable_hash(&mut self.key_buf),
            "the route is not the key's"
        );
        self.set_hashed(key, route.hash(), identity)
    }

    /// Makes `key`, of stable hash `hash`, current.
    ///
    /// # Errors
    /// As [`KeyCursor::set`].
    #[inline]
    pub(crate) fn set_hashed(
        &mut self,
        key: K,
        hash: u64,
        identity: &SubtaskIdentity,
    ) -> Result<()> {
        let at = locate_hash(hash, identity.max_parallelism(), identity.key_groups())?;
        self.current = Some(CurrentKey {
            key,
            key_hash: at.hash,
            key_group: at.key_group,
            kg_index: at.index,
        });
        Ok(())
    }

    /// Makes a fired timer's key current: its hash and key-group index are known (the timer kept them).
    #[inline]
    pub(crate) fn set_known(
        &mut self,
        key: K,
        hash: u64,
        kg_index: usize,
        identity: &SubtaskIdentity,
    ) {
        self.current = Some(CurrentKey {
            key,
            key_hash: hash,
            key_group: identity.key_groups().start() + kg_index as u32,
            kg_index,
        });
    }
}

/// The error of a state access without a current key or with a state handle of other types; out of line,
/// so the per-record path stays short.
#[cold]
#[inline(never)]
pub(crate) fn access_error(has_current_key: bool, id: StateId) -> Error {
    if has_current_key {
        wrong_state(id)
    } else {
        no_current_key()
    }
}

//! The RocksDB backend's current key, as a component that owns it: the key, its key group, and its row
//! prefix `[key group][key length][key]` (every row key of the key starts with it, `docs/formats.md`),
//! with the buffers reused from key to key so that setting a key allocates nothing.

use crate::error::Result;
use crate::format::lsm_rows::{key_prefix, push_namespace, push_timer_row};
use crate::key_group::router::KeyRoute;
use crate::key_group::{locate_hash, locate_key, stable_key_hash};
use crate::keyed::backend::StateKey;
use crate::keyed::checks::{check_route, no_current_key};
use crate::keyed::identity::SubtaskIdentity;

/// The current key and its row prefix.
pub(crate) struct CurrentKeyPrefix<K> {
    key: Option<(K, u32)>,
    /// `[key group][key len][key]` of the current key.
    prefix: Vec<u8>,
    /// The key's encoding while a key is being set; a row buffer of the value paths in between.
    scratch: Vec<u8>,
}

impl<K: StateKey> CurrentKeyPrefix<K> {
    pub(crate) fn new() -> Self {
        CurrentKeyPrefix {
            key: None,
            prefix: Vec::with_capacity(64),
            scratch: Vec::with_capacity(64),
        }
    }

    /// Makes `key` current.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if the key's group is not `identity`'s.
    #[inline]
    pub(crate) fn set(&mut self, key: K, identity: &SubtaskIdentity) -> Result<()> {
        let at = locate_key(
            &key,
            &mut self.scratch,
            identity.max_parallelism(),
            identity.key_groups(),
        )?;
        self.located(key, at.key_group, identity.max_parallelism());
        Ok(())
    }

    /// Makes `key` current with the route the exchange computed for it (hashed once).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a route of another max parallelism
    /// or a key group not `identity`'s.
    #[inline]
    pub(crate) fn set_routed(
        &mut self,
        key: K,
        route: KeyRoute,
        identity: &SubtaskIdentity,
    ) -> Result<()> {
        check_route(&route, identity.max_parallelism())?;
        let at = locate_hash(
            route.hash(),
            identity.max_parallelism(),
            identity.key_groups(),
        )?;
        self.scratch.clear();
        key.encode(&mut self.scratch);
        debug_assert_eq!(
            stable_key_hash(&self.scratch),
            route.hash(),
            "the route is not the key's"
        );
        self.located(key, at.key_group, identity.max_parallelism());
        Ok(())
    }

    /// `scratch` holds the key's encoding.
    #[inline]
    fn located(&mut self, key: K, key_group: u32, max_parallelism: u32) {
        key_prefix(key_group, max_parallelism, &self.scratch, &mut self.prefix);
        self.key = Some((key, key_group));
    }

    pub(crate) fn key(&self) -> Option<&K> {
        self.key.as_ref().map(|(k, _)| k)
    }

    pub(crate) fn key_group(&self) -> Option<u32> {
        self.key.as_ref().map(|(_, g)| *g)
    }

    /// The row key of the current key in `ns` (map rows append the user key) in `out`.
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) without a current key.
    #[inline]
    pub(crate) fn row_key<N: StateKey>(&self, ns: &N, out: &mut Vec<u8>) -> Result<()> {
        if self.key.is_none() {
            return Err(no_current_key());
        }
        out.clear();
        out.extend_from_slice(&self.prefix);
        push_namespace(out, |o| ns.encode(o));
        Ok(())
    }

    /// The timer row key of the current key in `ns` at `timestamp` in `out` (`docs/formats.md`, timer
    /// rows).
    ///
    /// # Errors
    /// [`Error::IllegalState`](crate::Error::IllegalState) without a current key.
    #[inline]
    pub(crate) fn timer_row<N: StateKey>(
        &self,
        ns: &N,
        timestamp: u64,
        max_parallelism: u32,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if self.key.is_none() {
            return Err(no_current_key());
        }
        out.clear();
        push_timer_row(&self.prefix, max_parallelism, timestamp, out, |o| {
            ns.encode(o)
        });
        Ok(())
    }

    /// Makes `key`, whose encoding is `key_bytes` and key group `key_group` (a fired timer's row), the
    /// current key without hashing it again.
    pub(crate) fn set_encoded(
        &mut self,
        key: K,
        key_bytes: &[u8],
        key_group: u32,
        max_parallelism: u32,
    ) {
        key_prefix(key_group, max_parallelism, key_bytes, &mut self.prefix);
        self.key = Some((key, key_group));
    }

    /// A row buffer to build a row key and value in without allocating; give it back with
    /// [`CurrentKeyPrefix::give_back`].
    #[inline]
    pub(crate) fn take_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.scratch)
    }

    #[inline]
    pub(crate) fn give_back(&mut self, buffer: Vec<u8>) {
        self.scratch = buffer;
    }
}

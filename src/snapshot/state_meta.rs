//! What a snapshot records about each state: its kind and codec ids.

use crate::codec::Codec;
use crate::error::{Error, Result};

/// The name of a kind in messages.
fn kind_name(kind: StateKind) -> &'static str {
    match kind {
        StateKind::Value => "Value",
        StateKind::List => "List",
        StateKind::Map => "Map",
        StateKind::Reducing => "Reducing",
        StateKind::Aggregating => "Aggregating",
        StateKind::Timers => "Timers",
    }
}

/// The kind of a keyed state; its tag is stored in snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// One value per key and namespace.
    Value,
    /// A list of values per key and namespace.
    List,
    /// A map of user keys to values per key and namespace.
    Map,
    /// One value combined with each added value by a reduce function.
    Reducing,
    /// An accumulator folded by an aggregate function.
    Aggregating,
    /// The timers of one timer service in one time domain (`docs/timers.md`): a set of `(key, namespace,
    /// timestamp)`; a snapshot record per timer, its value the timestamp in ms as 8 bytes big-endian.
    Timers,
}

impl StateKind {
    /// The byte stored in snapshot headers.
    pub fn tag(self) -> u8 {
        match self {
            StateKind::Value => 0,
            StateKind::List => 1,
            StateKind::Map => 2,
            StateKind::Reducing => 3,
            StateKind::Aggregating => 4,
            StateKind::Timers => 5,
        }
    }

    /// The kind for a stored tag, if known.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            0 => StateKind::Value,
            1 => StateKind::List,
            2 => StateKind::Map,
            3 => StateKind::Reducing,
            4 => StateKind::Aggregating,
            5 => StateKind::Timers,
            _ => return None,
        })
    }
}

/// What a snapshot records about one state: enough to refuse restoring it with other codecs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMeta {
    /// Unique name of the state within the backend.
    pub name: String,
    /// Kind of the state.
    pub kind: StateKind,
    /// [`Codec::codec_id`] of the key type.
    pub key_codec: String,
    /// [`Codec::codec_id`] of the namespace type.
    pub namespace_codec: String,
    /// [`Codec::codec_id`] of the value (for aggregating state: the accumulator; for list: the element).
    pub value_codec: String,
    /// [`Codec::codec_id`] of the map's user key; empty for other kinds.
    pub user_key_codec: String,
}

impl StateMeta {
    pub(crate) fn new<K: Codec, N: Codec, V: Codec>(name: &str, kind: StateKind) -> Self {
        StateMeta {
            name: name.to_string(),
            kind,
            key_codec: K::codec_id(),
            namespace_codec: N::codec_id(),
            value_codec: V::codec_id(),
            user_key_codec: String::new(),
        }
    }

    /// Checks that a restored state has `self`'s kind and key, namespace and user key codecs (these never
    /// migrate); returns whether its value codec differs, so that the caller resolves a migration
    /// ([`Codec::migration_from`]).
    ///
    /// # Errors
    /// [`Error::IncompatibleSchema`] naming the state and the first field that differs.
    pub fn check_layout(&self, restored: &StateMeta) -> Result<bool> {
        let fields = [
            ("kind", kind_name(self.kind), kind_name(restored.kind)),
            ("key codec", &*self.key_codec, &*restored.key_codec),
            (
                "namespace codec",
                &self.namespace_codec,
                &restored.namespace_codec,
            ),
            (
                "user key codec",
                &self.user_key_codec,
                &restored.user_key_codec,
            ),
        ];
        for (what, ours, theirs) in fields {
            if ours != theirs {
                return Err(Error::IncompatibleSchema {
                    state: self.name.clone(),
                    reason: format!(
                        "{what} `{ours}` does not match the restored `{theirs}` (only value codecs \
                         migrate)"
                    ),
                });
            }
        }
        Ok(self.value_codec != restored.value_codec)
    }

    /// Checks that a restored state can be read as `self` describes without a migration.
    ///
    /// # Errors
    /// [`Error::IncompatibleSchema`] naming the state and the first field that differs.
    pub fn check_compatible(&self, restored: &StateMeta) -> Result<()> {
        if self.check_layout(restored)? {
            return Err(Error::IncompatibleSchema {
                state: self.name.clone(),
                reason: format!(
                    "value codec `{}` does not match `{}`",
                    self.value_codec, restored.value_codec
                ),
            });
        }
        Ok(())
    }
}

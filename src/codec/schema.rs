//! Schema evolution: codec versions, migrations from older encodings, and the compatibility of a restored
//! state with the codec that registers it (as Flink's `TypeSerializerSchemaCompatibility`).
//!
//! A snapshot stores each state's codec identities ([`Codec::codec_id`]). A codec at
//! [`Codec::VERSION`] `n > 1` stores `"<ID>@v<n>"`; version 1 stores the bare [`Codec::ID`], so every
//! snapshot written before versions existed reads as version 1. On restore, a state's value codec is
//! compared with the stored identity: equal is [`SchemaCompatibility::CompatibleAsIs`]; otherwise the
//! registering codec's [`Codec::migration_from`] decides between
//! [`SchemaCompatibility::CompatibleAfterMigration`] and [`SchemaCompatibility::Incompatible`].
//! Keys, namespaces and map user keys never migrate: their bytes decide key groups and row order.

use std::sync::Arc;

use crate::codec::Codec;
use crate::error::{Error, Result};

/// A codec identity as stored in a snapshot, split into the codec's [`Codec::ID`] and version.
///
/// `"event@v3"` is `{ id: "event", version: 3 }`; an identity without a `@v<n>` suffix (`"u64:be"`,
/// `"pair(utf8,event@v2)"`) is version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenCodec<'a> {
    /// The codec's [`Codec::ID`] when the snapshot was written (for composites, the whole identity).
    pub id: &'a str,
    /// The codec's [`Codec::VERSION`] when the snapshot was written (1 if none was stored).
    pub version: u32,
}

impl<'a> WrittenCodec<'a> {
    /// Splits a stored identity. A suffix `@v<n>` counts only with `n ≥ 2` written in decimal without a
    /// leading zero (what [`versioned_id`] writes); anything else is part of the id.
    pub fn parse(stored: &'a str) -> Self {
        if let Some((id, digits)) = stored.rsplit_once("@v") {
            let canonical = !digits.is_empty()
                && !digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit());
            let version = canonical.then(|| digits.parse::<u32>().ok()).flatten();
            if let Some(version) = version.filter(|v| *v >= 2) {
                return WrittenCodec { id, version };
            }
        }
        WrittenCodec {
            id: stored,
            version: 1,
        }
    }
}

/// The identity a codec with `id` at `version` stores: `id` for version 0 or 1, `"<id>@v<version>"` above.
pub fn versioned_id(id: &str, version: u32) -> String {
    if version <= 1 {
        id.to_string()
    } else {
        format!("{id}@v{version}")
    }
}

/// Decodes bytes written by an older codec into the current type (a [`Codec::migration_from`] result).
///
/// It must reject (never panic on) bytes the older codec did not produce, with [`Error::Corrupt`].
pub type Migration<T> = Arc<dyn Fn(&[u8]) -> Result<T> + Send + Sync>;

/// How a restored state's stored values can be read by the registering codec (Flink's
/// `TypeSerializerSchemaCompatibility` without its reconfiguration case).
pub enum SchemaCompatibility<T> {
    /// The stored identity is the codec's own: the bytes decode as they are.
    CompatibleAsIs,
    /// The stored bytes are read through the migration, and written in the current encoding from then on.
    CompatibleAfterMigration(Migration<T>),
    /// The codec cannot read the stored bytes: restoring the state is an error naming it.
    Incompatible,
}

impl<T> std::fmt::Debug for SchemaCompatibility<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SchemaCompatibility::CompatibleAsIs => "CompatibleAsIs",
            SchemaCompatibility::CompatibleAfterMigration(_) => "CompatibleAfterMigration",
            SchemaCompatibility::Incompatible => "Incompatible",
        })
    }
}

/// How `T` reads values stored under the identity `stored`.
pub fn schema_compatibility<T: Codec>(stored: &str) -> SchemaCompatibility<T> {
    if stored == T::codec_id() {
        return SchemaCompatibility::CompatibleAsIs;
    }
    match T::migration_from(&WrittenCodec::parse(stored)) {
        Some(m) => SchemaCompatibility::CompatibleAfterMigration(m),
        None => SchemaCompatibility::Incompatible,
    }
}

/// `None` if `stored` is `T`'s own identity, else the migration that reads it.
///
/// # Errors
/// [`Error::IncompatibleSchema`] naming `state` if `T` cannot read `stored`.
pub(crate) fn migration_for<T: Codec>(state: &str, stored: &str) -> Result<Option<Migration<T>>> {
    match schema_compatibility::<T>(stored) {
        SchemaCompatibility::CompatibleAsIs => Ok(None),
        SchemaCompatibility::CompatibleAfterMigration(m) => Ok(Some(m)),
        SchemaCompatibility::Incompatible => Err(no_migration(state, stored, &T::codec_id())),
    }
}

/// Rewrites one stored value from an older encoding into `T`'s (decode through the migration, encode).
pub(crate) type ByteMigration = Arc<dyn Fn(&[u8], &mut Vec<u8>) -> Result<()> + Send + Sync>;

/// For backends that keep values as bytes (LSM rows, operator state): `None` if `stored` is `T`'s own
/// identity, else the rewrite from the stored encoding to `T`'s.
///
/// # Errors
/// [`Error::IncompatibleSchema`] naming `state` if `T` cannot read `stored`.
pub(crate) fn byte_migration<T: Codec + 'static>(
    state: &str,
    stored: &str,
) -> Result<Option<ByteMigration>> {
    Ok(migration_for::<T>(state, stored)?.map(rewriting))
}

/// The byte rewrite of a migration into `T`: decode through `m`, encode as `T`.
pub(crate) fn rewriting<T: Codec + 'static>(m: Migration<T>) -> ByteMigration {
    Arc::new(move |bytes: &[u8], out: &mut Vec<u8>| {
        m(bytes)?.encode(out);
        Ok(())
    })
}

/// The error of a value codec that cannot read what a snapshot stored.
fn no_migration(state: &str, stored: &str, ours: &str) -> Error {
    Error::IncompatibleSchema {
        state: state.to_string(),
        reason: format!(
            "value codec `{ours}` cannot read values written by `{stored}` and declares no migration \
             from it (implement `Codec::migration_from`)"
        ),
    }
}

/// The error of a value that a migration could not read: the state it belongs to and the migration.
pub(crate) fn migration_failed(state: &str, stored: &str, ours: &str, e: Error) -> Error {
    Error::corrupt(
        format!("<state `{state}`>"),
        format!("migrating a value from `{stored}` to `{ours}` failed: {e}"),
    )
}

/// Splits `pair(<a>,<b>)` at its top-level comma.
pub(crate) fn split_pair(id: &str) -> Option<(&str, &str)> {
    let inner = id.strip_prefix("pair(")?.strip_suffix(')')?;
    let mut depth = 0usize;
    for (i, c) in inner.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => return Some((&inner[..i], &inner[i + 1..])),
            _ => {}
        }
    }
    None
}

/// How a part of a composite reads its stored part: as is, through a migration, or not at all.
pub(crate) fn part_reader<T: Codec + 'static>(stored: &str) -> Option<Migration<T>> {
    match schema_compatibility::<T>(stored) {
        SchemaCompatibility::CompatibleAsIs => Some(Arc::new(T::decode)),
        SchemaCompatibility::CompatibleAfterMigration(m) => Some(m),
        SchemaCompatibility::Incompatible => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_identities_split_into_id_and_version() {
        let p = WrittenCodec::parse;
        assert_eq!(
            p("event@v3"),
            WrittenCodec {
                id: "event",
                version: 3
            }
        );
        assert_eq!(
            p("u64:be"),
            WrittenCodec {
                id: "u64:be",
                version: 1
            }
        );
        assert_eq!(p("a@v1").version, 1);
        assert_eq!(p("a@v1").id, "a@v1");
        assert_eq!(p("a@v02").id, "a@v02");
        assert_eq!(p("a@v").id, "a@v");
        assert_eq!(p("a@v99999999999").version, 1);
        assert_eq!(p("pair(e@v2,u8)").id, "pair(e@v2,u8)");
        for v in [0, 1, 2, 17, u32::MAX] {
            let stored = versioned_id("x", v);
            assert_eq!(
                WrittenCodec::parse(&stored),
                WrittenCodec {
                    id: "x",
                    version: v.max(1)
                }
            );
        }
    }

    #[test]
    fn pairs_split_at_the_top_level_comma() {
        assert_eq!(split_pair("pair(u8,utf8)"), Some(("u8", "utf8")));
        assert_eq!(
            split_pair("pair(pair(u8,a@v2),bool)"),
            Some(("pair(u8,a@v2)", "bool"))
        );
        assert_eq!(split_pair("pair(u8)"), None);
        assert_eq!(split_pair("pair(u8,utf8"), None);
        assert_eq!(split_pair("pair())(,u8)"), None);
    }

    #[test]
    fn integers_widen_and_never_narrow() {
        let mut out = Vec::new();
        7u32.encode(&mut out);
        let SchemaCompatibility::CompatibleAfterMigration(m) =
            schema_compatibility::<u64>("u32:be")
        else {
            panic!("u64 reads u32");
        };
        assert_eq!(m(&out).unwrap(), 7);
        assert!(m(&[1, 2]).is_err());
        out.clear();
        (-5i16).encode(&mut out);
        let SchemaCompatibility::CompatibleAfterMigration(m) =
            schema_compatibility::<i64>("i16:be-ordered")
        else {
            panic!("i64 reads i16");
        };
        assert_eq!(m(&out).unwrap(), -5);
        for (stored, what) in [("u64:be", "narrowing"), ("i32:be-ordered", "sign change")] {
            assert!(
                matches!(
                    schema_compatibility::<u32>(stored),
                    SchemaCompatibility::Incompatible
                ),
                "{what}"
            );
        }
        assert!(matches!(
            schema_compatibility::<u64>("u64:be"),
            SchemaCompatibility::CompatibleAsIs
        ));
    }

    #[test]
    fn pairs_migrate_their_parts() {
        let mut out = Vec::new();
        (String::from("w"), 9u16).encode(&mut out);
        let SchemaCompatibility::CompatibleAfterMigration(m) =
            schema_compatibility::<(String, u64)>("pair(utf8,u16:be)")
        else {
            panic!("the second part widens");
        };
        assert_eq!(m(&out).unwrap(), ("w".to_string(), 9));
        assert!(matches!(
            schema_compatibility::<(String, u64)>("pair(bytes,u16:be)"),
            SchemaCompatibility::Incompatible
        ));
        assert!(matches!(
            schema_compatibility::<(String, u64)>("utf8"),
            SchemaCompatibility::Incompatible
        ));
    }

    #[test]
    fn an_incompatible_value_codec_is_an_error_naming_the_state() {
        let err = byte_migration::<u32>("counts", "utf8").err().unwrap();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        let text = err.to_string();
        assert!(text.contains("counts") && text.contains("utf8"), "{text}");
        assert!(byte_migration::<u32>("counts", "u32:be").unwrap().is_none());
        let rewrite = byte_migration::<u32>("counts", "u8").unwrap().unwrap();
        let mut out = Vec::new();
        rewrite(&[200], &mut out).unwrap();
        assert_eq!(out, 200u32.to_be_bytes());
    }
}

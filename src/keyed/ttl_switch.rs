//! Reading a restored state's values when its TTL was switched on or off, or its value codec changed under
//! TTL (`docs/ttl.md`, "Switching TTL across a restore"): the stored identity `ttl(<x>)` is a stamp in front
//! of `<x>`'s bytes, so the switch is a value migration in the schema-evolution machinery
//! (`docs/savepoints.md`) that adds or strips the 8-byte stamp.

use std::sync::Arc;

use crate::codec::{Codec, Migration, migration_for};
use crate::error::Result;
use crate::keyed::ttl::{Stamped, split_stamp, stamped_inner};

/// How values of a state registered now are read from the identity a snapshot stored: a value (a list
/// element, a map value) as its codec reads it, with TTL added or removed (the implementations: [`Plain`],
/// [`WithTtl`]).
pub(crate) trait ReadStored<V> {
    /// `None` if `stored` is `V`'s own identity, else the reader of values written under `stored`.
    /// `restored_at_ms` is the time (ms, in the state's TTL time) a value stored without a stamp is given
    /// when TTL is switched on.
    ///
    /// # Errors
    /// [`Error::IncompatibleSchema`] naming `state` if nothing reads `stored` as `V`.
    fn migration(state: &str, stored: &str, restored_at_ms: u64) -> Result<Option<Migration<V>>>;
}

/// A state registered without TTL: values stored with a stamp (`ttl(<x>)`, TTL switched off) lose it
/// (every stored value is kept, including one that had expired and was not cleaned up yet: without TTL
/// nothing expires); others are read by the value codec's own migration.
pub(crate) enum Plain {}

/// A state registered with TTL (values [`Stamped`]): values stored with a stamp keep it (their codec may
/// migrate: `ttl(u32:be)` is read as `ttl(u64:be)`); values stored without one (TTL switched on) are
/// stamped `restored_at_ms`, so they live a full TTL from the restore.
pub(crate) enum WithTtl {}

impl<V: Codec + 'static> ReadStored<V> for Plain {
    fn migration(state: &str, stored: &str, _restored_at_ms: u64) -> Result<Option<Migration<V>>> {
        let Some(inner) = stamped_inner(stored) else {
            return migration_for::<V>(state, stored);
        };
        let value = migration_for::<V>(state, inner)?;
        Ok(Some(Arc::new(move |bytes: &[u8]| {
            let bytes = unstamped(bytes)?;
            match &value {
                Some(m) => m(bytes),
                None => V::decode(bytes),
            }
        })))
    }
}

impl<V: Codec + 'static> ReadStored<Stamped<V>> for WithTtl {
    fn migration(
        state: &str,
        stored: &str,
        restored_at_ms: u64,
    ) -> Result<Option<Migration<Stamped<V>>>> {
        if stamped_inner(stored).is_some() {
            return migration_for::<Stamped<V>>(state, stored);
        }
        let value = migration_for::<V>(state, stored)?;
        Ok(Some(Arc::new(move |bytes: &[u8]| {
            let value = match &value {
                Some(m) => m(bytes)?,
                None => V::decode(bytes)?,
            };
            Ok(Stamped {
                value,
                last_update_ms: restored_at_ms,
            })
        })))
    }
}

/// The value bytes after a stamp.
fn unstamped(bytes: &[u8]) -> Result<&[u8]> {
    split_stamp(bytes).map(|(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn encode<V: Codec>(v: &V) -> Vec<u8> {
        let mut out = Vec::new();
        v.encode(&mut out);
        out
    }

    #[test]
    fn switching_ttl_off_strips_the_stamp_and_migrates_the_value() {
        let stored = encode(&Stamped {
            value: 7u32,
            last_update_ms: 99,
        });
        let m = <Plain as ReadStored<u64>>::migration("s", "ttl(u32:be)", 0)
            .unwrap()
            .unwrap();
        assert_eq!(m(&stored).unwrap(), 7u64);
        let same = <Plain as ReadStored<u32>>::migration("s", "ttl(u32:be)", 0)
            .unwrap()
            .unwrap();
        assert_eq!(same(&stored).unwrap(), 7u32);
        assert!(matches!(same(&stored[..5]), Err(Error::Corrupt { .. })));
        assert!(matches!(
            <Plain as ReadStored<u32>>::migration("s", "ttl(utf8)", 0),
            Err(Error::IncompatibleSchema { .. })
        ));
    }

    #[test]
    fn switching_ttl_on_stamps_the_restore_time() {
        let m = <WithTtl as ReadStored<Stamped<u64>>>::migration("s", "u32:be", 1_000)
            .unwrap()
            .unwrap();
        let s = m(&encode(&5u32)).unwrap();
        assert_eq!((s.value, s.last_update_ms), (5, 1_000));
        let as_is = <WithTtl as ReadStored<Stamped<u32>>>::migration("s", "u32:be", 1_000)
            .unwrap()
            .unwrap();
        assert_eq!(as_is(&encode(&5u32)).unwrap().last_update_ms, 1_000);
    }

    #[test]
    fn a_value_codec_migrates_under_ttl_and_keeps_its_stamp() {
        let stored = encode(&Stamped {
            value: 3u32,
            last_update_ms: 42,
        });
        let m = <WithTtl as ReadStored<Stamped<u64>>>::migration("s", "ttl(u32:be)", 1_000)
            .unwrap()
            .unwrap();
        let s = m(&stored).unwrap();
        assert_eq!((s.value, s.last_update_ms), (3, 42));
        assert!(
            <WithTtl as ReadStored<Stamped<u32>>>::migration("s", "ttl(u32:be)", 0)
                .unwrap()
                .is_none()
        );
    }
}

//! How keys, namespaces and values become bytes.
//!
//! A [`Codec`] is implemented by the data type itself. Its [`Codec::ID`] is written into every snapshot and
//! checked on restore, so a state written with one encoding is never read with another. Integer encodings are
//! big-endian with the sign bit flipped for signed types, so byte order equals numeric order (what a sorted
//! LSM key space needs). Codecs carry versions and migrations from older encodings ([`Migration`], [`SchemaCompatibility`]).

use std::sync::Arc;

use crate::error::{Error, Result};

mod schema;
#[cfg(feature = "rocksdb")]
pub(crate) use schema::rewriting;
pub(crate) use schema::{ByteMigration, byte_migration, migration_failed, migration_for};
pub use schema::{
    Migration, SchemaCompatibility, WrittenCodec, schema_compatibility, versioned_id,
};

/// The 64-bit stable hash of a key's encoded bytes: xxh3-64 with seed 0.
///
/// Stable across releases, platforms and processes (never `DefaultHasher` or a seeded hasher).
#[inline]
pub fn stable_key_hash(key_bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key_bytes)
}

/// Encoding of one type to bytes and back.
///
/// Implementations must be deterministic (the key's bytes decide its key group) and `decode` must reject
/// (never panic on) bytes it did not produce.
pub trait Codec: Sized {
    /// Identity of the encoding (e.g. `"i64:be"`); it must not end in `@v<digits>`. Snapshots store
    /// [`Codec::codec_id`], which adds the [`Codec::VERSION`].
    const ID: &'static str;

    /// Version of the encoding, at least 1. Bump it when the bytes change and declare how older versions
    /// are read in [`Codec::migration_from`]; a state written by an older version is then migrated on
    /// restore (`docs/savepoints.md`, "Schema evolution").
    const VERSION: u32 = 1;

    /// The identity stored in snapshots and checked on restore: [`Codec::ID`] at version 1, else
    /// `"<ID>@v<VERSION>"` ([`versioned_id`]). A composite codec names its parts, so that `(u64, u64)`
    /// and `(i64, i64)` differ (`"pair(u64:be,u64:be)"`); an override must keep the parts' versions in.
    fn codec_id() -> String {
        versioned_id(Self::ID, Self::VERSION)
    }

    /// How to read a value written by another codec or an older version of this one, as Flink's
    /// `TypeSerializerSnapshot::resolveSchemaCompatibility`: `None` (the default) if it cannot be read,
    /// which makes restoring a state written with `written` an [`Error::IncompatibleSchema`] naming the
    /// state. Called once per restored state whose stored value codec is not [`Codec::codec_id`]; only
    /// values migrate (keys, namespaces and map user keys decide key groups and row order).
    ///
    /// The built-in integers read the narrower integers of the same signedness; pairs migrate part by
    /// part.
    fn migration_from(written: &WrittenCodec<'_>) -> Option<Migration<Self>> {
        let _ = written;
        None
    }
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes a value from exactly `bytes`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if `bytes` is not an encoding of this type.
    fn decode(bytes: &[u8]) -> Result<Self>;

    /// [`stable_key_hash`] of the bytes [`Codec::encode`] appends: the hash that
    /// decides a key's key group. `scratch` is a buffer the default uses to encode into (its contents on
    /// return are unspecified).
    ///
    /// The built-in fixed-size types override it to hash their bytes on the stack, which keeps
    /// `set_current_key` short (`benches/heap_ops.rs`). An override must return exactly the default's
    /// value, or keys land in other key groups than their encoding says and a restore at another
    /// parallelism loses them.
    #[inline]
    fn stable_hash(&self, scratch: &mut Vec<u8>) -> u64 {
        scratch.clear();
        self.encode(scratch);
        stable_key_hash(scratch)
    }
}

fn wrong_len(id: &str, expected: usize, got: usize) -> Error {
    Error::corrupt(
        format!("<{id} value>"),
        format!("expected {expected} bytes, got {got}"),
    )
}

/// The migration of an integer type from a narrower one of the same signedness, if `written` is one (at
/// version 1): decode the narrow encoding and convert losslessly.
macro_rules! widen_from {
    ($written:expr, $t:ty, $($narrow:ty),*) => {{
        let written: &WrittenCodec<'_> = $written;
        $(
            if written.version == 1 && written.id == <$narrow as Codec>::ID {
                return Some(Arc::new(|b: &[u8]| <$narrow>::decode(b).map(<$t>::from)));
            }
        )*
        let _ = written;
        None
    }};
}

macro_rules! unsigned_codec {
    ($($t:ty => $id:literal [$($narrow:ty),*]),*) => {$(
        impl Codec for $t {
            const ID: &'static str = $id;
            fn migration_from(written: &WrittenCodec<'_>) -> Option<Migration<Self>> {
                widen_from!(written, $t, $($narrow),*)
            }
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            #[inline]
            fn stable_hash(&self, _scratch: &mut Vec<u8>) -> u64 {
                stable_key_hash(&self.to_be_bytes())
            }
            fn decode(bytes: &[u8]) -> Result<Self> {
                let arr = bytes
                    .try_into()
                    .map_err(|_| wrong_len($id, std::mem::size_of::<$t>(), bytes.len()))?;
                Ok(<$t>::from_be_bytes(arr))
            }
        }
    )*};
}
unsigned_codec!(u8 => "u8" [], u16 => "u16:be" [u8], u32 => "u32:be" [u8, u16],
    u64 => "u64:be" [u8, u16, u32], u128 => "u128:be" [u8, u16, u32, u64]);

macro_rules! signed_codec {
    ($($t:ty, $u:ty => $id:literal [$($narrow:ty),*]),*) => {$(
        impl Codec for $t {
            const ID: &'static str = $id;
            fn migration_from(written: &WrittenCodec<'_>) -> Option<Migration<Self>> {
                widen_from!(written, $t, $($narrow),*)
            }
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                // Flip the sign bit so that the byte order is the numeric order.
                let flipped = (*self as $u) ^ (1 << (<$u>::BITS - 1));
                out.extend_from_slice(&flipped.to_be_bytes());
            }
            #[inline]
            fn stable_hash(&self, _scratch: &mut Vec<u8>) -> u64 {
                let flipped = (*self as $u) ^ (1 << (<$u>::BITS - 1));
                stable_key_hash(&flipped.to_be_bytes())
            }
            fn decode(bytes: &[u8]) -> Result<Self> {
                let arr = bytes
                    .try_into()
                    .map_err(|_| wrong_len($id, std::mem::size_of::<$t>(), bytes.len()))?;
                Ok((<$u>::from_be_bytes(arr) ^ (1 << (<$u>::BITS - 1))) as $t)
            }
        }
    )*};
}
signed_codec!(i8, u8 => "i8:ordered" [], i16, u16 => "i16:be-ordered" [i8],
    i32, u32 => "i32:be-ordered" [i8, i16], i64, u64 => "i64:be-ordered" [i8, i16, i32],
    i128, u128 => "i128:be-ordered" [i8, i16, i32, i64]);

impl Codec for f64 {
    const ID: &'static str = "f64:be-bits";
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_be_bytes());
    }
    #[inline]
    fn stable_hash(&self, _scratch: &mut Vec<u8>) -> u64 {
        stable_key_hash(&self.to_bits().to_be_bytes())
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(f64::from_bits(u64::decode(bytes)?))
    }
}

impl Codec for bool {
    const ID: &'static str = "bool";
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(Error::corrupt("<bool value>", "expected one byte 0 or 1")),
        }
    }
}

impl Codec for String {
    const ID: &'static str = "utf8";
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        String::from_utf8(bytes.to_vec())
            .map_err(|e| Error::corrupt("<utf8 value>", format!("invalid UTF-8: {e}")))
    }
}

impl Codec for Vec<u8> {
    const ID: &'static str = "bytes";
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        Ok(bytes.to_vec())
    }
}

impl Codec for () {
    const ID: &'static str = "unit";
    #[inline]
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(wrong_len("unit", 0, bytes.len()))
        }
    }
}

/// The namespace of state that is not scoped by a window or another namespace (Flink's `VoidNamespace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VoidNamespace;

impl Codec for VoidNamespace {
    const ID: &'static str = "void-namespace";
    #[inline]
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            Ok(VoidNamespace)
        } else {
            Err(wrong_len("void-namespace", 0, bytes.len()))
        }
    }
}

/// A pair is encoded as `u32 big-endian length of A`, `A`, `B`; its stored identity is
/// `pair(<A's codec id>,<B's codec id>)`.
impl<A: Codec + 'static, B: Codec + 'static> Codec for (A, B) {
    const ID: &'static str = "pair";
    fn codec_id() -> String {
        format!("pair({},{})", A::codec_id(), B::codec_id())
    }
    /// A stored `pair(<a>,<b>)` whose parts `A` and `B` each read, as is or through their migrations.
    fn migration_from(written: &WrittenCodec<'_>) -> Option<Migration<Self>> {
        let (a, b) = schema::split_pair(written.id).filter(|_| written.version == 1)?;
        let (read_a, read_b) = (schema::part_reader::<A>(a)?, schema::part_reader::<B>(b)?);
        Some(Arc::new(move |bytes: &[u8]| {
            let (x, y) = split_pair_bytes(bytes)?;
            Ok((read_a(x)?, read_b(y)?))
        }))
    }
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        self.0.encode(out);
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.1.encode(out);
    }
    fn decode(bytes: &[u8]) -> Result<Self> {
        let (a, b) = split_pair_bytes(bytes)?;
        Ok((A::decode(a)?, B::decode(b)?))
    }
}

/// The two parts of a pair's encoding (`u32` big-endian length of the first, the first, the second).
fn split_pair_bytes(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let bad = || Error::corrupt("<pair value>", "length prefix exceeds the value");
    let len_bytes: [u8; 4] = bytes
        .get(..4)
        .ok_or_else(bad)?
        .try_into()
        .map_err(|_| bad())?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let end = 4usize.checked_add(len).ok_or_else(bad)?;
    let a = bytes.get(4..end).ok_or_else(bad)?;
    Ok((a, &bytes[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Codec + PartialEq + std::fmt::Debug>(v: T) -> Vec<u8> {
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(T::decode(&out).unwrap(), v);
        out
    }

    #[test]
    fn signed_integers_encode_in_numeric_order() {
        let values = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let encoded: Vec<Vec<u8>> = values.iter().map(|v| round_trip(*v)).collect();
        assert!(encoded.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn decode_rejects_wrong_lengths_without_panicking() {
        assert_eq!(
            u64::decode(&[1, 2]).unwrap_err().kind(),
            crate::ErrorKind::Corrupt
        );
        assert!(bool::decode(&[2]).is_err());
        assert!(String::decode(&[0xff, 0xfe]).is_err());
        assert!(<(u32, u32)>::decode(&[0, 0, 0, 9, 1]).is_err());
        assert!(<(u32, u32)>::decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    /// `stable_hash` of `v` must be the hash of its encoding (the overrides skip the buffer).
    fn assert_stable_hash<T: Codec>(v: T) {
        let mut out = Vec::new();
        v.encode(&mut out);
        let mut scratch = vec![9, 9, 9];
        assert_eq!(v.stable_hash(&mut scratch), stable_key_hash(&out));
    }

    #[test]
    fn stable_hash_overrides_hash_the_encoding() {
        for v in [0u64, 1, 42, u64::MAX] {
            assert_stable_hash(v);
            assert_stable_hash(v as u32);
            assert_stable_hash(v as u16);
            assert_stable_hash(v as u8);
            assert_stable_hash(u128::from(v) << 64 | u128::from(v));
        }
        for v in [i64::MIN, -7, 0, 7, i64::MAX] {
            assert_stable_hash(v);
            assert_stable_hash(v as i32);
            assert_stable_hash(v as i16);
            assert_stable_hash(v as i8);
            assert_stable_hash(i128::from(v) * 3);
        }
        assert_stable_hash(-0.25f64);
        assert_stable_hash(true);
        assert_stable_hash(String::from("word"));
        assert_stable_hash(("w".to_string(), 3u32));
    }

    /// Regression: every tuple codec had the id `"pair"`, so a state written as `(u64, u64)` restored as
    /// `(i64, i64)` without an error.
    #[test]
    fn tuple_codec_ids_name_their_parts() {
        assert_eq!(<(u64, u64)>::codec_id(), "pair(u64:be,u64:be)");
        assert_ne!(<(u64, u64)>::codec_id(), <(i64, i64)>::codec_id());
        assert_eq!(
            <((u8, String), bool)>::codec_id(),
            "pair(pair(u8,utf8),bool)"
        );
        assert_eq!(u64::codec_id(), u64::ID);
    }

    #[test]
    fn pairs_and_strings_round_trip() {
        round_trip(("window".to_string(), 42u64));
        round_trip(String::from("héllo"));
        round_trip(VoidNamespace);
        round_trip(-3.5f64);
    }
}

//! The streamed entries of one map state ([`MapState::iter`](crate::MapState::iter)).

use crate::error::Result;

/// The entries of one map state under the current key and a namespace, read as they are iterated: the
/// heap backend clones one entry at a time out of its map; the RocksDB backend walks a RocksDB iterator over
/// the map's rows and decodes each. Order is unspecified (heap: hash order; LSM: order of the user keys'
/// encodings). Borrows the backend, so the map cannot change underneath it; to remove entries while
/// walking, use [`MapState::retain`](crate::MapState::retain).
///
/// Items are `Err` for a row that does not decode or a RocksDB read error; iteration may go on after one.
pub struct MapEntries<'a, UK, V> {
    inner: Box<dyn Iterator<Item = Result<(UK, V)>> + 'a>,
}

impl<'a, UK, V> MapEntries<'a, UK, V> {
    pub(crate) fn new(inner: impl Iterator<Item = Result<(UK, V)>> + 'a) -> Self {
        MapEntries {
            inner: Box::new(inner),
        }
    }

    pub(crate) fn empty() -> Self
    where
        UK: 'a,
        V: 'a,
    {
        Self::new(std::iter::empty())
    }

    /// The user keys only.
    pub fn keys(self) -> impl Iterator<Item = Result<UK>> + 'a
    where
        UK: 'a,
        V: 'a,
    {
        self.map(|r| r.map(|(k, _)| k))
    }

    /// The values only.
    pub fn values(self) -> impl Iterator<Item = Result<V>> + 'a
    where
        UK: 'a,
        V: 'a,
    {
        self.map(|r| r.map(|(_, v)| v))
    }
}

impl<UK, V> Iterator for MapEntries<'_, UK, V> {
    type Item = Result<(UK, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

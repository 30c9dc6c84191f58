//! A shared, copy-on-write handle for state a snapshot may freeze (the heap backend's timer queues of a key
//! group), written through the map's [`unique`] rather than `Arc::make_mut`.

use std::ops::Deref;
use std::sync::Arc;

use super::unique;

/// An `Arc` that is never downgraded: cloning shares the value (a snapshot's frozen copy), and
/// [`CowArc::make_mut`] copies it on the first write while shared. The same result as `Arc::make_mut`
/// without its locked compare-and-swap on every write when the value is not shared (measured on the
/// timers bench, `docs/timers.md`).
pub(crate) struct CowArc<T>(Arc<T>);

impl<T> CowArc<T> {
    /// A new handle, not shared.
    pub(crate) fn new(value: T) -> Self {
        CowArc(Arc::new(value))
    }
}

impl<T: Clone> CowArc<T> {
    /// Mutable access, copying the value first if another handle shares it.
    #[inline]
    pub(crate) fn make_mut(&mut self) -> &mut T {
        // No `Weak` exists: the inner `Arc` is private to this type, which never downgrades it.
        unique(&mut self.0, |v| Arc::new(v.clone()))
    }
}

impl<T> Clone for CowArc<T> {
    fn clone(&self) -> Self {
        CowArc(Arc::clone(&self.0))
    }
}

impl<T> Deref for CowArc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::CowArc;

    #[test]
    fn a_write_while_shared_copies_and_leaves_the_frozen_value_alone() {
        let mut live = CowArc::new(vec![1, 2, 3]);
        let frozen = live.clone();
        live.make_mut().push(4);
        assert_eq!(*frozen, vec![1, 2, 3]);
        assert_eq!(*live, vec![1, 2, 3, 4]);
        drop(frozen);
        // Unique again: written in place.
        let before: *const Vec<i32> = &*live;
        live.make_mut().push(5);
        assert!(std::ptr::eq(&*live, before));
        assert_eq!(*live, vec![1, 2, 3, 4, 5]);
    }
}

//! Reads that restart a TTL ([`TtlUpdate::OnReadAndWrite`](crate::keyed::TtlUpdate), `docs/ttl.md`):
//! a read takes the backend by shared reference, so what it returned is stamped again later, when the
//! backend is next borrowed mutably at a record's edge: the next `set_current_key`, or a snapshot's
//! synchronous phase. Until then nothing can tell: time moves only between records (processing time is
//! sampled when the current key is set; the watermark is set between records), and a snapshot applies
//! what is queued first.
//!
//! A read queues a closure typed for the backend it went through (the engine's `StateBackend`, or a
//! backend used directly); that type applies it (`keyed/typed.rs`, `apply_refreshes`), with the read's
//! key made current again. The queue is behind a mutex (locked only by such reads) and a flag a record's
//! edge checks with one load.

use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::error::Result;

/// A queued refresh, applied to the backend type `B` it was queued through.
pub(crate) type Refresh<B> = Box<dyn FnOnce(&mut B) -> Result<()> + Send>;

/// The refreshes queued by reads of [`TtlUpdate::OnReadAndWrite`](crate::keyed::TtlUpdate) states, by
/// backend type.
#[derive(Default)]
pub(crate) struct Refreshes {
    pending: AtomicBool,
    queue: Mutex<Vec<(TypeId, Box<dyn Any + Send>)>>,
}

impl std::fmt::Debug for Refreshes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshes")
            .field("queued", &self.queue.lock().len())
            .finish()
    }
}

impl Refreshes {
    /// Queues `refresh` for the backend type `B`.
    pub(crate) fn push<B: 'static>(&self, refresh: Refresh<B>) {
        self.queue
            .lock()
            .push((TypeId::of::<B>(), Box::new(refresh)));
        self.pending.store(true, Ordering::Release);
    }

    /// Whether anything is queued (one load: checked at every record's edge).
    #[inline]
    pub(crate) fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Takes the refreshes queued for `B`, leaving those of other backend types.
    pub(crate) fn take<B: 'static>(&self) -> Vec<Refresh<B>> {
        let mut queue = self.queue.lock();
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut *queue)
            .into_iter()
            .partition(|(ty, _)| *ty == TypeId::of::<B>());
        *queue = others;
        self.pending.store(!queue.is_empty(), Ordering::Release);
        mine.into_iter()
            .filter_map(|(_, r)| r.downcast::<Refresh<B>>().ok().map(|r| *r))
            .collect()
    }
}

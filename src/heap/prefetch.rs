//! Software prefetch for batch access (the state primitives' `value_get_batch`).

/// Hints the CPU to bring the cache line at `ptr` into all cache levels. Has no effect on the program's
/// meaning: a prefetch never faults, whatever `ptr` is, and changes no memory. A no-op off x86-64.
#[inline(always)]
pub(crate) fn prefetch_read<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: `prefetcht0` is a hint: it does not dereference `ptr` architecturally, cannot fault for any
    // address, and SSE (which `_mm_prefetch` is gated on) is part of the x86-64 baseline. Measured
    // necessary: `benches/batch.rs` with and without it (docs/engines.md, "Batch access").
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

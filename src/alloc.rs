//! Allocator thresholds for the processes that move bulk data: `busrig
//! target` and `busrig bench`.
//!
//! glibc serves an allocation of 128 KiB or more with a fresh mmap, raises
//! that threshold only as such blocks are freed, and gives the top of the
//! heap back to the kernel once 2x the threshold is free there. A process
//! that allocates and frees 1 MiB I/O buffers at a high rate therefore
//! keeps receiving pages it has never touched, and the kernel zero-fills
//! each of them on first touch: 256 page faults per 1 MiB read.
//!
//! Profiled at 1 MiB reads, queue depth 4, that was 40% of the client's
//! time (README "Performance"). The target serving the run halved its
//! throughput after earlier 4 KiB runs in the same process had left the
//! thresholds low. With buffers up to [`MMAP_THRESHOLD`] taken from the
//! heap, and up to [`TRIM_THRESHOLD`] of freed heap kept, freed buffers
//! are reused instead.

/// Allocations below this come from the heap (glibc's default: 128 KiB,
/// rising on its own up to 32 MiB).
pub const MMAP_THRESHOLD: i32 = 4 << 20;

/// Free memory at the top of the heap kept for reuse before it is given
/// back to the kernel.
pub const TRIM_THRESHOLD: i32 = 64 << 20;

/// Sets both thresholds; call before the first I/O buffer is allocated.
/// A no-op where the C library is not glibc.
pub fn keep_freed_io_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters and may be called
    // at any time, from any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

//! Allocator tuning for processes that move packets.
//!
//! glibc hands the free top of a thread's heap back to the kernel
//! (`madvise(MADV_DONTNEED)`) as soon as more than `M_TRIM_THRESHOLD`
//! (128 KiB by default) lies free there, and the next allocation in that
//! range faults its pages in again, zeroed. The relay and the engine's
//! relay threads allocate and free 64 KiB read buffers at line rate; with
//! the default, one TCP stream through the TLS relay spent 3 to 12 % of
//! those threads' CPU in `madvise`, page faults and page clearing (perf, four
//! runs in the throughput lab). Fixed thresholds of a few MiB keep that memory
//! mapped; they bound what a process keeps, and the idle-memory figures are
//! unaffected (they measure live memory).

/// Free heap top kept mapped per arena.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 4 << 20;
/// Allocations at least this large get their own mapping. Setting the trim
/// threshold turns off glibc's dynamic adjustment of this one, so it is set
/// to where that adjustment would take a process with our buffer sizes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 4 << 20;

/// Applies the tuning (a no-op off glibc). Call first thing in `main`.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters (under its
    // own lock); the values are in the ranges glibc documents.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

//! Futexes (kqrs.EventQueue's waiters).

use super::{cvt_long, Result};
use std::sync::atomic::AtomicU32;

const FUTEX_BITSET_MATCH_ANY: u32 = u32::MAX;

/// Sleeps while `word` holds `expected`: until a `futex_wake` on it, until `deadline_ns` (CLOCK_MONOTONIC,
/// absolute; None = no deadline) passes (ETIMEDOUT), or until a signal handler runs (EINTR). Returns at
/// once with EAGAIN when `word` no longer holds `expected`. Wake-ups may be spurious: callers look again.
pub fn futex_wait(word: &AtomicU32, expected: u32, deadline_ns: Option<u64>) -> Result<()> {
    let ts = deadline_ns.map(|d| libc::timespec {
        tv_sec: (d / 1_000_000_000) as libc::time_t,
        tv_nsec: (d % 1_000_000_000) as libc::c_long,
    });
    let tsp: *const libc::timespec = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 (AtomicU32 has u32's layout) for the whole call, which only
    // reads it; `tsp` is null or points to `ts`, which outlives the call; the other arguments are integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
            std::ptr::null::<u32>(),
            FUTEX_BITSET_MATCH_ANY,
        )
    };
    cvt_long(r).map(|_| ())
}

/// Wakes up to `n` threads sleeping in `futex_wait` on `word`; returns how many woke.
pub fn futex_wake(word: &AtomicU32, n: i32) -> usize {
    // SAFETY: `word` is a live, aligned u32 for the call; FUTEX_WAKE only uses its address as a key.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, n) };
    r.max(0) as usize
}

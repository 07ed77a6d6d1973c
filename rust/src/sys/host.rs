//! The process and the kernel it runs on: clocks, the pid, the fork handler, the kernel's release.

use super::{Errno, Result};

/// Nanoseconds since the epoch (CLOCK_REALTIME) or since boot (CLOCK_MONOTONIC).
pub fn clock_ns(realtime: bool) -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let clock = if realtime { libc::CLOCK_REALTIME } else { libc::CLOCK_MONOTONIC };
    // SAFETY: t is a valid timespec to write.
    unsafe {
        libc::clock_gettime(clock, &mut t);
    }
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// This process's pid.
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Registers `child` to run in the child process after fork(). It must be async-signal-safe.
pub fn atfork_child(child: extern "C" fn()) -> Result<()> {
    // SAFETY: the handler is a plain extern "C" fn with 'static lifetime.
    let r = unsafe { libc::pthread_atfork(None, None, Some(child)) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno(r))
    }
}

/// Kernel release as (major, minor).
pub fn kernel_release() -> (u32, u32) {
    // SAFETY: utsname is plain old data; all-zero is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (0, 0);
    }
    let rel: Vec<u8> = u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    let s = String::from_utf8_lossy(&rel);
    let mut it = s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let major = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

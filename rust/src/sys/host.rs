//! The process and the kernel it runs on: clocks, the pid, the fork handler, the kernel's release.

use super::{Errno, Result};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

/// What the fork child handler reads and writes, on one cache line of one page. Every page a fork child
/// writes costs it a copy-on-write fault, and every page the parent never touched costs it a fault even to
/// read: keeping the handler's state here keeps it to this page's one fault.
#[repr(C, align(64))]
pub struct ForkPage {
    /// The fork generation: bumped in every fork child (`fork_gen`).
    gen: AtomicU64,
    /// The generation whose fds the owned-fd bitmap lists (owned.rs); older bits are stale, those fds were
    /// closed by the fork child handler. u64::MAX while the bitmap is being cleared.
    pub(super) owned_gen: AtomicU64,
    /// The process's dead fd (dead.rs), -1 for none.
    pub(super) dead: AtomicI32,
    /// kqrs has watched signals in this process: signal.rs has state to reset in a fork child.
    pub(super) signals: AtomicBool,
}

pub(super) static FORK: ForkPage = ForkPage {
    gen: AtomicU64::new(0),
    owned_gen: AtomicU64::new(0),
    dead: AtomicI32::new(-1),
    signals: AtomicBool::new(false),
};

/// The fork generation of this process: bumped in every child after fork().
#[inline]
pub fn fork_gen() -> u64 {
    FORK.gen.load(Ordering::Relaxed)
}

/// The fork child handler's work (async-signal-safe: atomics, close(2), close_range(2), sigaction(2)).
/// Closes every fd kqrs owns, forgets the dead fd, puts back the dispositions of watched signals, then
/// bumps the generation, so every kqueue of the parent reads as closed from now on.
pub fn fork_child_reset() {
    super::close_owned_in_child();
    if FORK.dead.load(Ordering::Relaxed) != -1 {
        FORK.dead.store(-1, Ordering::SeqCst); // closed with kqrs's other fds
    }
    if FORK.signals.load(Ordering::Relaxed) {
        super::signals_reset_in_child();
    }
    FORK.gen.fetch_add(1, Ordering::SeqCst);
}

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
    // (c_char is i8 on x86_64 and u8 on aarch64: to_ne_bytes reads the byte either way, with no cast.)
    let rel: Vec<u8> = u.release.iter().take_while(|&&c| c != 0).map(|&c| c.to_ne_bytes()[0]).collect();
    let s = String::from_utf8_lossy(&rel);
    let mut it = s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let major = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

//! timerfds: the timer sources, armed relative or absolute, on CLOCK_MONOTONIC or CLOCK_REALTIME.

use super::{cvt, track, RawFd, Result};

/// A new non-blocking, close-on-exec timerfd on CLOCK_REALTIME (`realtime`) or CLOCK_MONOTONIC (tracked).
pub fn timerfd_create(realtime: bool) -> Result<RawFd> {
    let clock = if realtime { libc::CLOCK_REALTIME } else { libc::CLOCK_MONOTONIC };
    // SAFETY: plain syscall with flag arguments.
    cvt(unsafe { libc::timerfd_create(clock, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) }).map(track)
}

fn ts(ns: u64) -> libc::timespec {
    libc::timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 }
}

/// Arms a timerfd to expire once at the absolute time `deadline_ns` of its clock (0 disarms it).
pub fn timerfd_arm_at(fd: RawFd, deadline_ns: u64) -> Result<()> {
    let spec = libc::itimerspec { it_interval: ts(0), it_value: ts(deadline_ns) };
    // SAFETY: spec is valid for the call; old value pointer is null (allowed).
    cvt(unsafe { libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) }).map(|_| ())
}

/// Makes a timerfd readable at once, synchronously (TFD_IOC_SET_TICKS with 1 expiration): its readers and
/// every epoll watching it are woken before this returns. ENOTTY on kernels built without
/// CONFIG_CHECKPOINT_RESTORE.
pub fn timerfd_set_ticks(fd: RawFd) -> Result<()> {
    // _IOW('T', 0, u64)
    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
    let one: u64 = 1;
    // SAFETY: the ioctl reads one u64 through the pointer, which is valid for the call.
    cvt(unsafe { libc::ioctl(fd, TFD_IOC_SET_TICKS, &one as *const u64) }).map(|_| ())
}

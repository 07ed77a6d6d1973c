//! eventfds: counters the kernel makes pollable (the kicks, the retired epolls' wake-ups).

use super::{cvt, track, Errno, RawFd, Result};

/// A new non-blocking, close-on-exec eventfd at 0 (tracked: closed in a fork child).
pub fn eventfd() -> Result<RawFd> {
    // SAFETY: plain syscall with flag arguments.
    cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) }).map(track)
}

/// Adds `n` to an eventfd counter.
pub fn eventfd_write(fd: RawFd, n: u64) -> Result<()> {
    let buf = n.to_ne_bytes();
    // SAFETY: buf is 8 valid bytes.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), 8) };
    if r == 8 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Reads (and so resets) an eventfd or timerfd counter; Ok(0) when it was zero (EAGAIN).
pub fn read_u64(fd: RawFd) -> Result<u64> {
    let mut buf = [0u8; 8];
    // SAFETY: buf is 8 writable bytes.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 8) };
    if r == 8 {
        Ok(u64::from_ne_bytes(buf))
    } else if r < 0 {
        let e = Errno::last();
        if e.0 == libc::EAGAIN {
            Ok(0)
        } else {
            Err(e)
        }
    } else {
        Err(Errno(libc::EIO))
    }
}

//! The dead fd: readable forever, to wake threads blocked on a kqueue that is being closed.

use super::{close, eventfd, eventfd_write, RawFd, Result};
use std::sync::atomic::Ordering;

// The fd lives in the fork page (host.rs): the fork child handler forgets it there.
use super::host::FORK;

/// The process's always-readable eventfd (created once; closed and forgotten in a fork child).
pub fn dead_fd() -> Result<RawFd> {
    let fd = FORK.dead.load(Ordering::Acquire);
    if fd >= 0 {
        return Ok(fd);
    }
    let new = eventfd()?;
    eventfd_write(new, 1)?;
    match FORK.dead.compare_exchange(-1, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(new),
        Err(existing) => {
            close(new);
            Ok(existing)
        }
    }
}

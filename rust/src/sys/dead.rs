//! The dead fd: readable forever, to wake threads blocked on a kqueue that is being closed.

use super::{close, eventfd, eventfd_write, RawFd, Result};
use std::sync::atomic::Ordering;

// The fd lives in the epoch page (host.rs), which a fork child gets zero-filled: it forgets it there at no
// cost (the fork handler closes it with kqrs's other fds).
use super::host::epoch_page;

/// The process's always-readable eventfd (created once; closed and forgotten in a fork child).
pub fn dead_fd() -> Result<RawFd> {
    let slot = &epoch_page().dead; // the fd + 1; 0 for none
    let fd = slot.load(Ordering::Acquire);
    if fd > 0 {
        return Ok(fd - 1);
    }
    let new = eventfd()?;
    eventfd_write(new, 1)?;
    match slot.compare_exchange(0, new + 1, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(new),
        Err(existing) => {
            close(new);
            Ok(existing - 1)
        }
    }
}

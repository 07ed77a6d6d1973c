//! The dead fd: readable forever, to wake threads blocked on a kqueue that is being closed.

use super::{close, eventfd, eventfd_write, RawFd, Result};
use std::sync::atomic::{AtomicI32, Ordering};

static DEAD: AtomicI32 = AtomicI32::new(-1);

/// The process's always-readable eventfd (created once; closed and forgotten in a fork child).
pub fn dead_fd() -> Result<RawFd> {
    let fd = DEAD.load(Ordering::Acquire);
    if fd >= 0 {
        return Ok(fd);
    }
    let new = eventfd()?;
    eventfd_write(new, 1)?;
    match DEAD.compare_exchange(-1, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(new),
        Err(existing) => {
            close(new);
            Ok(existing)
        }
    }
}

/// In a fork child (async-signal-safe): the dead fd was closed with every other kqrs fd.
pub fn dead_reset_in_child() {
    if DEAD.load(Ordering::Relaxed) != -1 {
        DEAD.store(-1, Ordering::SeqCst);
    }
}

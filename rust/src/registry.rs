//! Every kqueue alive in this process, held weakly: for CPython's `kqueue.fromfd(fd)`, which must find the
//! same queue, and for a kqueue watching another, whose EVFILT_READ `data` is the watched kqueue's count of
//! pending events (FreeBSD's filt_kqueue). A fork child starts with an empty registry: the parent's
//! kqueues are closed there.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crate::forklock::ForkLock;

use crate::kqueue::{fork_generation, Kqueue};
use crate::sys::{self, RawFd};

/// The kqueues, with the fork generation they belong to.
static REGISTRY: ForkLock<(u64, Vec<Weak<Kqueue>>)> = ForkLock::new((0, Vec::new()));
/// How many kqueues were registered (a hint: 0 means no fd can be a registered kqueue).
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` on this generation's list; None in a fork child whose parent held the lock at fork time (the
/// caller does without the registry).
fn with<R>(f: impl FnOnce(&mut Vec<Weak<Kqueue>>) -> R) -> Option<R> {
    REGISTRY.with(|g| {
        let gen = fork_generation();
        if g.0 != gen {
            // First use in this fork child: forget the parent's kqueues (leaked, not dropped: dropping would
            // run their destructors on state copied mid-flight).
            std::mem::forget(std::mem::take(&mut g.1));
            g.0 = gen;
        }
        f(&mut g.1)
    })
}

/// Adds `kq` (forgetting kqueues closed or dropped since).
pub fn register(kq: &Arc<Kqueue>) {
    with(|r| {
        r.retain(|w| w.upgrade().is_some_and(|k| !k.is_closed()));
        r.push(Arc::downgrade(kq));
        COUNT.store(r.len(), Ordering::Relaxed);
    });
}

/// The open kqueue whose fd number is `fd`.
pub fn find_fd(fd: RawFd) -> Option<Arc<Kqueue>> {
    with(|r| r.iter().filter_map(|w| w.upgrade()).find(|k| !k.is_closed() && k.fd() == fd)).flatten()
}

/// The open kqueue `fd` is a descriptor of (its own fd or a dup of it); only called for epoll fds.
pub fn find_file(fd: RawFd) -> Option<Arc<Kqueue>> {
    if COUNT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let all: Vec<Arc<Kqueue>> = with(|r| r.iter().filter_map(|w| w.upgrade()).collect()).unwrap_or_default();
    all.into_iter().find(|k| !k.is_closed() && (k.fd() == fd || matches!(sys::same_file(k.fd(), fd), Ok(true))))
}

/// The open kqueue with this id (`Kqueue::id`).
pub fn by_id(id: u64) -> Option<Arc<Kqueue>> {
    with(|r| r.iter().filter_map(|w| w.upgrade()).find(|k| k.id() == id && !k.is_closed())).flatten()
}

//! Every kqueue alive in this process, held weakly: for CPython's `kqueue.fromfd(fd)`, which must find the
//! same queue, and for a kqueue watching another, whose EVFILT_READ `data` is the watched kqueue's count of
//! pending events (FreeBSD's filt_kqueue). A fork child starts with an empty registry: the parent's
//! kqueues are closed there.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::kqueue::{fork_generation, Kqueue};
use crate::sys::{self, RawFd};

static REGISTRY: Mutex<(u64, Vec<Weak<Kqueue>>)> = Mutex::new((0, Vec::new()));
/// The fork generation of the thread holding REGISTRY's lock (u64::MAX when free).
static HOLDER: AtomicU64 = AtomicU64::new(u64::MAX);
/// How many kqueues were registered (a hint: 0 means no fd can be a registered kqueue).
static COUNT: AtomicUsize = AtomicUsize::new(0);

fn with<R>(f: impl FnOnce(&mut Vec<Weak<Kqueue>>) -> R) -> Option<R> {
    let gen = fork_generation();
    let mut g = loop {
        match REGISTRY.try_lock() {
            Ok(g) => break g,
            Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                if HOLDER.load(Ordering::SeqCst) != gen {
                    // Held by a thread of the parent that does not exist in this fork child: it will never
                    // be released. Do without the registry.
                    return None;
                }
                std::thread::yield_now();
            }
        }
    };
    HOLDER.store(gen, Ordering::SeqCst);
    if g.0 != gen {
        // First use in this fork child: forget the parent's kqueues (leaked, not dropped: dropping would
        // run their destructors on state copied mid-flight).
        std::mem::forget(std::mem::take(&mut g.1));
        g.0 = gen;
    }
    let r = f(&mut g.1);
    HOLDER.store(u64::MAX, Ordering::SeqCst);
    Some(r)
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

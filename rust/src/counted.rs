//! Counted fds: fds made in this process whose "readable" is a count the engine cannot ask the kernel
//! for, registered with that count so that an EVFILT_READ knote on them reports it in `data` (as
//! FIONREAD gives a socket's bytes). `kqrs.EventQueue` registers its fd (an eventfd, readable while the
//! queue holds items) with its item count.
//!
//! The engine only looks here for fds it classed as "other" (eventfd, epoll, timerfd...: no FIONREAD), and
//! only once something was registered: sockets, pipes and processes without a queue pay nothing.
//!
//! Keyed by fd number: the owner unregisters before it closes the fd, so a number reused later never finds
//! an old entry. A dup() of a registered fd is not registered (it reports `data` 0). One table per fork
//! generation: a fork child ignores the parent's entries (whose fds kqrs closed in the child) and never
//! waits for a lock a thread of the parent held at fork time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Weak;

use crate::forklock::ForkLock;

use crate::sys::RawFd;

/// Something whose count an fd's EVFILT_READ reports.
pub(crate) trait Counted: Send + Sync {
    fn count(&self) -> usize;
}

type Table = HashMap<RawFd, Weak<dyn Counted>>;

/// Entries registered (in any generation): 0 keeps the lookup off the report path.
static ENTRIES: AtomicUsize = AtomicUsize::new(0);
/// The table, with the fork generation it belongs to.
static TABLE: ForkLock<Option<(u64, Table)>> = ForkLock::new(None);

fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> Option<R> {
    TABLE
        .with(|slot| {
            let gen = crate::fork_generation();
            if !matches!(slot, Some((g_gen, _)) if *g_gen == gen) {
                // First use in this process (or this fork child): the parent's entries name fds closed here.
                if let Some((_, old)) = slot.take() {
                    std::mem::forget(old);
                }
                *slot = Some((gen, HashMap::new()));
            }
            slot.as_mut().map(|(_, t)| f(t))
        })
        .flatten()
}

#[cfg_attr(not(feature = "python"), allow(dead_code))]
/// Registers `fd` (open, owned by the caller) with what it counts.
pub(crate) fn register(fd: RawFd, counted: Weak<dyn Counted>) {
    with_table(|t| {
        if t.insert(fd, counted).is_none() {
            ENTRIES.fetch_add(1, Ordering::Relaxed);
        }
    });
}

#[cfg_attr(not(feature = "python"), allow(dead_code))]
/// Forgets `fd` (before its owner closes it).
pub(crate) fn unregister(fd: RawFd) {
    with_table(|t| {
        if t.remove(&fd).is_some() {
            ENTRIES.fetch_sub(1, Ordering::Relaxed);
        }
    });
}

/// The count registered for `fd`, if any.
#[inline]
pub(crate) fn data(fd: RawFd) -> Option<isize> {
    if ENTRIES.load(Ordering::Relaxed) == 0 {
        return None;
    }
    lookup(fd)
}

#[cold]
fn lookup(fd: RawFd) -> Option<isize> {
    with_table(|t| t.get(&fd).and_then(Weak::upgrade).map(|c| c.count() as isize)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::*;
    use crate::{sys, Kevent, Kqueue};
    use std::sync::Arc;
    use std::time::Duration;

    struct Count(AtomicUsize);

    impl Counted for Count {
        fn count(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
    }

    fn read_data(kq: &Kqueue) -> Vec<isize> {
        let mut out = [Kevent::default(); 4];
        let n = kq.kevent(&[], &mut out, Some(Duration::ZERO)).unwrap_or(0);
        out[..n].iter().map(|e| e.data).collect()
    }

    #[test]
    fn a_read_knote_on_a_registered_fd_reports_its_count() {
        let made = (Kqueue::new(), sys::eventfd(), sys::eventfd());
        assert!(made.0.is_ok() && made.1.is_ok() && made.2.is_ok());
        let (Ok(kq), Ok(efd), Ok(plain)) = made else { return };
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let weak: Weak<dyn Counted> = Arc::downgrade(&count) as _;
        register(efd, weak);
        let adds = [
            Kevent::new(efd as usize, EVFILT_READ, EV_ADD, 0, 0, 0),
            Kevent::new(plain as usize, EVFILT_READ, EV_ADD, 0, 0, 0),
        ];
        assert_eq!(kq.kevent(&adds, &mut [], None), Ok(0));
        assert_eq!(read_data(&kq), Vec::<isize>::new());
        count.0.store(5, Ordering::Relaxed);
        assert_eq!(sys::eventfd_write(efd, 1), Ok(()));
        assert_eq!(sys::eventfd_write(plain, 1), Ok(()));
        let mut got = read_data(&kq);
        got.sort();
        assert_eq!(got, vec![0, 5]); // the plain eventfd: data 0, as before
        count.0.store(7, Ordering::Relaxed);
        let mut got = read_data(&kq);
        got.sort();
        assert_eq!(got, vec![0, 7]); // level-triggered: the count of the moment
        unregister(efd);
        let mut got = read_data(&kq);
        got.sort();
        assert_eq!(got, vec![0, 0]);
        sys::close(efd);
        sys::close(plain);
    }
}

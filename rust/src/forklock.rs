//! `ForkLock`: a mutex that a fork child never waits for in vain.
//!
//! A thread of the parent may hold a process-wide lock at the moment another thread forks; in the child
//! that holder does not exist and the lock is never released. Each holder stamps the lock with its fork
//! generation once it has it, so a waiter that finds the lock taken and stamped by an earlier generation
//! knows the holder is gone and does without (`with` returns None). A lock taken but not stamped yet (or
//! released this instant) reads as unstamped: that is a live holder in all but a fork child caught in that
//! very window, so a waiter keeps trying, and gives up on it only in a fork child, after a long while.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};

const UNSTAMPED: u64 = u64::MAX;
/// Yields on an unstamped lock after which a fork child takes it for a holder of its parent's.
const PATIENCE: u32 = 100_000;

pub(crate) struct ForkLock<T> {
    lock: Mutex<T>,
    /// The fork generation of the thread holding `lock`, UNSTAMPED when none (or not yet stamped).
    holder: AtomicU64,
}

impl<T> ForkLock<T> {
    pub const fn new(v: T) -> Self {
        ForkLock { lock: Mutex::new(v), holder: AtomicU64::new(UNSTAMPED) }
    }

    /// Runs `f` with the lock held; None when the lock is held by a thread that no longer exists (in a
    /// fork child). A poisoned lock is taken over (its users keep it consistent at every step).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let gen = crate::fork_generation();
        // (An unstamped holder may be a thread of a parent, gone here, only in a process forked from one
        // that used kqrs.)
        let forked = crate::sys::forked_from_kqrs();
        let mut waited = 0u32;
        let mut g = loop {
            match self.lock.try_lock() {
                Ok(g) => break g,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) => {
                    let h = self.holder.load(Ordering::SeqCst);
                    let gone = if h == UNSTAMPED { forked && waited >= PATIENCE } else { h != gen };
                    if gone {
                        return None;
                    }
                    waited += 1;
                    std::thread::yield_now();
                }
            }
        };
        self.holder.store(gen, Ordering::SeqCst);
        let r = f(&mut g);
        self.holder.store(UNSTAMPED, Ordering::SeqCst);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn contending_threads_of_one_process_always_get_the_lock() {
        // A waiter that read the stamp in the instant between another thread's lock and its stamp used to
        // take the holder for a dead one and do without the lock.
        let lock = Arc::new(ForkLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || (0..50_000).filter(|_| lock.with(|n| *n += 1).is_none()).count())
            })
            .collect();
        let refused: usize = threads.into_iter().map(|t| t.join().unwrap_or(1)).sum();
        assert_eq!(refused, 0);
        assert_eq!(lock.with(|n| *n), Some(200_000));
    }
}

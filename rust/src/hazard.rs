//! Hazard slots: how `close()` knows that no thread is about to call `epoll_wait` on a kqueue's fd.
//!
//! A thread entering a kqueue's wait path publishes the kqueue's id in a slot of its own (a plain store),
//! then checks the kqueue's `closed` flag. `close()` sets the flag, runs a process-wide memory barrier
//! (`membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every running thread execute a full
//! barrier) and then waits until no slot holds the id. Either the entering thread saw the flag, or its slot
//! store is visible to the closer: no fd number is closed (and maybe reused) under a thread about to use it,
//! and the hot path pays no atomic read-modify-write at all. Where membarrier is missing, the slot store is
//! a sequentially consistent store instead (a full fence on the hot path, still no shared cache line).
//!
//! Slots live in a fixed static array claimed lock-free, so a fork child (where another thread may have
//! held any lock at fork time) never blocks here; a thread returns its slot when it exits. A thread that
//! finds every slot taken counts itself in the kqueue's own counter instead (an atomic add).

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

const SLOTS: usize = 1024;

/// One slot per thread (a cache line each, so publishing never touches another thread's line).
#[repr(align(64))]
struct Slot {
    /// The id of the kqueue this thread is inside, 0 for none.
    id: AtomicU64,
    claimed: AtomicBool,
}

static TABLE: [Slot; SLOTS] = [const { Slot { id: AtomicU64::new(0), claimed: AtomicBool::new(false) } }; SLOTS];
/// One past the highest slot ever claimed (scans stop there).
static HIGH: AtomicUsize = AtomicUsize::new(0);

/// 0 = not probed, 1 = membarrier registered (plain stores suffice), 2 = unavailable (SeqCst stores).
static MODE: AtomicU8 = AtomicU8::new(0);
/// The fork generation MODE was set in (membarrier registration is per process).
static MODE_GEN: AtomicU64 = AtomicU64::new(u64::MAX);

/// Probes and registers membarrier for this process (once per fork generation).
pub(crate) fn init(gen: u64) {
    if MODE_GEN.load(Ordering::Acquire) == gen {
        return;
    }
    let ok = crate::sys::membarrier_register();
    MODE.store(if ok { 1 } else { 2 }, Ordering::SeqCst);
    MODE_GEN.store(gen, Ordering::Release);
}

/// Gives the thread's slot back when the thread exits.
struct Release(usize);

impl Drop for Release {
    fn drop(&mut self) {
        let i = self.0;
        // A kqueue call made by a later thread-local destructor of this thread finds no slot and counts
        // itself in the kqueue's counter.
        let _ = MINE.try_with(|m| m.set(SLOTS + 1));
        if i < SLOTS {
            TABLE[i].id.store(0, Ordering::SeqCst);
            TABLE[i].claimed.store(false, Ordering::Release);
        }
    }
}

thread_local! {
    /// This thread's slot index; SLOTS = none yet, SLOTS + 1 = none available. No destructor, so reading
    /// it is a plain thread-local load (the hot path); `RELEASE` returns the slot at thread exit.
    static MINE: Cell<usize> = const { Cell::new(SLOTS) };
    static RELEASE: std::cell::RefCell<Option<Release>> = const { std::cell::RefCell::new(None) };
}

/// This thread's slot, claimed on first use (SLOTS + 1: none available).
#[inline]
fn my_slot() -> usize {
    let i = MINE.with(Cell::get);
    if i != SLOTS {
        return i;
    }
    claim_mine()
}

#[cold]
#[inline(never)]
fn claim_mine() -> usize {
    let i = claim();
    // Registered before it is published: a thread whose destructors already ran cannot register one,
    // and then does without a slot (it never gets one it could not give back).
    let registered = RELEASE.try_with(|r| *r.borrow_mut() = Some(Release(i))).is_ok();
    let i = if registered {
        i
    } else {
        if i < SLOTS {
            TABLE[i].claimed.store(false, Ordering::Release);
        }
        SLOTS + 1
    };
    MINE.with(|m| m.set(i));
    i
}

fn claim() -> usize {
    for (i, s) in TABLE.iter().enumerate() {
        if !s.claimed.load(Ordering::Relaxed)
            && s.claimed.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            HIGH.fetch_max(i + 1, Ordering::AcqRel);
            return i;
        }
    }
    SLOTS + 1
}

/// A thread's presence inside kqueue `id`, from `enter` until dropped.
pub(crate) struct Guard<'a> {
    slot: usize,
    prev: u64,
    overflow: &'a AtomicUsize,
}

/// Publishes that this thread is inside kqueue `id` (`overflow` is that kqueue's counter of threads
/// without a slot). The caller must check the kqueue's closed flag *after* this returns.
#[inline]
pub(crate) fn enter(id: u64, overflow: &AtomicUsize) -> Guard<'_> {
    let slot = my_slot();
    if slot >= SLOTS {
        overflow.fetch_add(1, Ordering::SeqCst);
        return Guard { slot, prev: 0, overflow };
    }
    let s = &TABLE[slot].id;
    // A signal handler may run a kqueue call in the middle of another: the slot is restored on exit.
    let prev = s.load(Ordering::Relaxed);
    if MODE.load(Ordering::Relaxed) == 1 {
        s.store(id, Ordering::Relaxed);
        // Only the compiler must not move the closed-flag load above the store: membarrier() in the closer
        // supplies the CPU barrier.
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        s.store(id, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }
    Guard { slot, prev, overflow }
}

impl Drop for Guard<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.slot >= SLOTS {
            self.overflow.fetch_sub(1, Ordering::SeqCst);
        } else {
            TABLE[self.slot].id.store(self.prev, Ordering::Release);
        }
    }
}

/// A presence published without a guard (`publish` / `unpublish`), for a caller that must hold no value
/// with a destructor while it waits (the C face's wait, which thread cancellation may unwind through).
/// A thread that dies holding one gives its slot back with its other thread-locals.
#[cfg(feature = "capi")]
#[derive(Clone, Copy)]
pub(crate) struct Token {
    slot: usize,
    prev: u64,
}

/// `enter` without a guard; None when every slot is taken.
#[cfg(feature = "capi")]
pub(crate) fn publish(id: u64) -> Option<Token> {
    let slot = my_slot();
    if slot >= SLOTS {
        return None;
    }
    let s = &TABLE[slot].id;
    let prev = s.load(Ordering::Relaxed);
    s.store(id, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    Some(Token { slot, prev })
}

/// Ends a presence begun by `publish`.
#[cfg(feature = "capi")]
pub(crate) fn unpublish(t: Token) {
    TABLE[t.slot].id.store(t.prev, Ordering::Release);
}

/// After setting a kqueue's closed flag: makes every thread's slot store visible (and the flag to every
/// thread), so that `busy(id)` afterwards sees every thread that did not see the flag.
pub(crate) fn barrier() {
    if MODE.load(Ordering::Relaxed) == 1 {
        crate::sys::membarrier();
    }
    fence(Ordering::SeqCst);
}

/// `busy` for every thread but the caller (close() called from inside a kevent() call on the same kqueue,
/// by a signal handler, must not wait for itself).
pub(crate) fn busy_others(id: u64, overflow: &AtomicUsize) -> bool {
    let mine = MINE.with(Cell::get);
    let high = HIGH.load(Ordering::Acquire);
    TABLE[..high].iter().enumerate().any(|(i, s)| i != mine && s.id.load(Ordering::Acquire) == id)
        || overflow.load(Ordering::Acquire) != 0
}

/// Whether a thread may still be inside kqueue `id` (its slot holds it, or its counter of slotless
/// threads is not zero).
pub(crate) fn busy(id: u64, overflow: &AtomicUsize) -> bool {
    let high = HIGH.load(Ordering::Acquire);
    TABLE[..high].iter().any(|s| s.id.load(Ordering::Acquire) == id) || overflow.load(Ordering::Acquire) != 0
}

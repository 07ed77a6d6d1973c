//! The process and the kernel it runs on: clocks, the pid, the fork handler, the kernel's release.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, Ordering};
use std::sync::Once;

/// What the fork handlers read, on one cache line of one page. Every page a fork child writes costs it a
/// copy-on-write fault (about 4 µs here), and every page the parent never touched costs it a fault even to
/// read: the child handler only reads this page, and only this one among kqrs's statics.
#[repr(C, align(64))]
pub struct ForkPage {
    /// The epoch whose fds the owned-fd bitmap lists (owned.rs); older ones are stale, those fds were
    /// closed by a fork child handler. u64::MAX while the bitmap is being cleared.
    pub(super) owned_gen: AtomicU64,
    /// kqrs has watched signals in this process: signal.rs has state to reset in a fork child.
    pub(super) signals: AtomicBool,
}

pub(super) static FORK: ForkPage = ForkPage { owned_gen: AtomicU64::new(0), signals: AtomicBool::new(false) };

/// What a fork child must find reset, at the start of a page of its own marked MADV_WIPEONFORK: the kernel
/// hands the child that page zero-filled, so resetting it costs the child handler no write (and no fault).
#[repr(C)]
pub(super) struct Epoch {
    /// This process's fork epoch (`fork_gen`): 0 until first asked for, then a number that no ancestor of
    /// this process had.
    epoch: AtomicU64,
    /// The process's dead fd (dead.rs) plus one; 0 for none.
    pub(super) dead: AtomicI32,
}

/// Where a kernel without MADV_WIPEONFORK (before 4.14) keeps the epoch: in plain memory, which the child
/// handler zeroes itself.
static FALLBACK: Epoch = Epoch { epoch: AtomicU64::new(0), dead: AtomicI32::new(0) };
/// The epoch page: FALLBACK's address or a page mapped once and never unmapped; null until first used.
static PAGE: AtomicPtr<Epoch> = AtomicPtr::new(std::ptr::null_mut());
/// One past the highest epoch handed out in this process or an ancestor (a fork child inherits it): a new
/// epoch is always above every epoch a kqrs object this process inherited can carry.
static NEXT: AtomicU64 = AtomicU64::new(1);
static HANDLERS: Once = Once::new();
/// The first epoch of the oldest process in this line that used kqrs (a fork child inherits it): a process
/// whose epoch differs was forked from one that used kqrs, and may hold its copied state.
static ORIGIN: AtomicU64 = AtomicU64::new(0);

/// The fork epoch of this process: it names the process kqrs objects were made in, so that one used in a
/// fork child reads as closed. Different in a fork child from its parent's (and every ancestor's).
#[inline]
pub fn fork_gen() -> u64 {
    let p = PAGE.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: PAGE only ever holds FALLBACK's address or that of a page mapped once, never unmapped.
        let e = unsafe { &*p }.epoch.load(Ordering::Acquire);
        if e != 0 {
            return e;
        }
    }
    new_epoch()
}

/// The first call in this process: hands out an epoch (one of the racing threads' wins).
#[cold]
#[inline(never)]
fn new_epoch() -> u64 {
    let page = epoch_page();
    let mine = NEXT.fetch_add(1, Ordering::SeqCst);
    let epoch = match page.epoch.compare_exchange(0, mine, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => mine,
        Err(theirs) => theirs,
    };
    let _ = ORIGIN.compare_exchange(0, epoch, Ordering::AcqRel, Ordering::Acquire);
    epoch
}

/// The process an object was made in, for objects that are checked on every call (a kqueue, an
/// EventQueue): the epoch then, and where this process's epoch lives, so that the check is one load from
/// the object and one from the epoch page (0 there, or a newer epoch, in a fork child).
#[derive(Clone, Copy)]
pub struct ForkStamp {
    epoch: u64,
    cell: &'static AtomicU64,
}

impl ForkStamp {
    /// This process, now.
    pub fn now() -> ForkStamp {
        let epoch = fork_gen();
        ForkStamp { epoch, cell: &epoch_page().epoch }
    }

    /// The object was made in another process (an ancestor of this fork child).
    #[inline]
    pub fn forked(&self) -> bool {
        self.cell.load(Ordering::Acquire) != self.epoch
    }
}

/// A process-wide value of which each fork epoch has its own: a fork child's first `get` makes a fresh
/// one, and never touches (locks, drops) the one it inherited, which a thread of its parent may have been
/// using at fork time. Inherited values are leaked, as the state they describe belongs to the parent.
/// (The C face's table of kqueues.)
#[cfg(feature = "capi")]
pub struct EpochCell<T: Send + Sync + 'static> {
    cur: AtomicPtr<(u64, T)>,
}

#[cfg(feature = "capi")]
impl<T: Send + Sync + 'static> EpochCell<T> {
    pub const fn new() -> Self {
        EpochCell { cur: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// This epoch's value (made by `make` on the epoch's first call) and whether this call made it.
    pub fn get(&self, make: impl Fn() -> T) -> (&T, bool) {
        let epoch = fork_gen();
        let mut made = false;
        loop {
            let p = self.cur.load(Ordering::Acquire);
            // SAFETY: a non-null pointer in `cur` came from Box::leak below and is never freed, so it is
            // valid for the life of the process; it is only read through shared references.
            if let Some(v) = unsafe { p.as_ref() } {
                if v.0 == epoch {
                    return (&v.1, made);
                }
            }
            let fresh: &'static mut (u64, T) = Box::leak(Box::new((epoch, make())));
            let fresh: *mut (u64, T) = fresh;
            match self.cur.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => made = true,
                // SAFETY: `fresh` was never published (the exchange failed), so this is its only owner.
                Err(_) => drop(unsafe { Box::from_raw(fresh) }),
            }
        }
    }
}

/// This process was forked from one that used kqrs: kqrs state (locks, tables) may have been inherited
/// from a parent, with threads holding it that do not exist here.
pub fn forked_from_kqrs() -> bool {
    let epoch = fork_gen();
    ORIGIN.load(Ordering::Acquire) != epoch
}

/// The epoch page, made on first use (one page, MADV_WIPEONFORK; FALLBACK where the kernel refuses), after
/// the fork handlers are registered. (The prepare handler reads the epoch only once kqrs owns an fd, which
/// takes an epoch: it never gets here with the page missing, which would register handlers from inside a
/// fork, under glibc's atfork lock.)
pub(super) fn epoch_page() -> &'static Epoch {
    let p = PAGE.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: as in fork_gen.
        return unsafe { &*p };
    }
    // The fork handlers first, the page after: everything that makes an fd or a kqueue asks for the epoch
    // first, so none can exist, nor be forked, before the handlers that close it in the child.
    HANDLERS.call_once(|| {
        // SAFETY: the handlers are plain extern "C" fns with 'static lifetime. (A failure, ENOMEM, leaves
        // fork children holding kqrs's fds, as with no handler at all; nothing else depends on them.)
        let _ = unsafe { libc::pthread_atfork(Some(on_fork_prepare), None, Some(on_fork_child)) };
    });
    let fallback = std::ptr::from_ref(&FALLBACK).cast_mut();
    let fresh = super::map_wiped_page().map_or(fallback, |q| q.as_ptr().cast());
    let page = match PAGE.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh,
        Err(theirs) => {
            if let Some(mine) = std::ptr::NonNull::new(fresh.cast::<u8>()).filter(|_| fresh != fallback) {
                super::unmap_wiped_page(mine);
            }
            theirs
        }
    };
    // SAFETY: as in fork_gen.
    unsafe { &*page }
}

/// Before fork(), in the forking thread: the owned-fd bitmap lists only this process's fds afterwards.
extern "C" fn on_fork_prepare() {
    super::owned_prepare_fork();
}

/// In the fork child.
extern "C" fn on_fork_child() {
    fork_child_reset();
}

/// The fork child handler's work (async-signal-safe: atomic loads, close(2), close_range(2), sigaction(2)).
/// Closes every fd kqrs owns (the dead fd among them) and puts back the dispositions of watched signals.
/// The epoch page comes zero-filled: this process has no epoch yet, so every kqueue of the parent reads as
/// closed, and no dead fd. Nothing is written but where the kernel could not mark that page.
pub fn fork_child_reset() {
    super::close_owned_in_child();
    if FORK.signals.load(Ordering::Relaxed) {
        super::signals_reset_in_child();
    }
    if PAGE.load(Ordering::Relaxed) == std::ptr::from_ref(&FALLBACK).cast_mut() {
        FALLBACK.epoch.store(0, Ordering::SeqCst);
        FALLBACK.dead.store(0, Ordering::SeqCst);
    }
}

/// Nanoseconds since the epoch (CLOCK_REALTIME) or since boot (CLOCK_MONOTONIC).
pub fn clock_ns(realtime: bool) -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let clock = if realtime { libc::CLOCK_REALTIME } else { libc::CLOCK_MONOTONIC };
    // SAFETY: t is a valid timespec to write.
    unsafe {
        libc::clock_gettime(clock, &mut t);
    }
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// This process's pid.
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Kernel release as (major, minor).
pub fn kernel_release() -> (u32, u32) {
    // SAFETY: utsname is plain old data; all-zero is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (0, 0);
    }
    // (c_char is i8 on x86_64 and u8 on aarch64: to_ne_bytes reads the byte either way, with no cast.)
    let rel: Vec<u8> = u.release.iter().take_while(|&&c| c != 0).map(|&c| c.to_ne_bytes()[0]).collect();
    let s = String::from_utf8_lossy(&rel);
    let mut it = s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let major = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a fork child the epoch page reads as fresh (no epoch, no dead fd) though the child handler wrote
    /// nothing to it, and the child's new epoch is above the parent's.
    #[test]
    fn a_fork_child_gets_a_fresh_epoch_above_its_parents() {
        let parent = fork_gen();
        assert_eq!(fork_gen(), parent, "an epoch is handed out once");
        assert!(!forked_from_kqrs(), "the test process was not forked from one that used kqrs");
        let dead = super::super::dead_fd();
        assert!(matches!(dead, Ok(fd) if epoch_page().dead.load(Ordering::SeqCst) == fd + 1), "{dead:?}");
        // SAFETY: the child only reads and writes atomics, then leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let fresh = epoch_page().dead.load(Ordering::SeqCst) == 0;
            let mine = fork_gen();
            let code = if fresh && mine > parent && fork_gen() == mine && forked_from_kqrs() { 0 } else { 1 };
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child saw a stale epoch page");
        assert_eq!(fork_gen(), parent, "the parent keeps its epoch");
    }

    /// An EpochCell gives one value per epoch: the same one on every call in a process, a fresh one in a
    /// fork child (made there, so the child never touches the one it inherited), and the parent keeps its own.
    #[cfg(feature = "capi")]
    #[test]
    fn an_epoch_cell_is_fresh_in_a_fork_child() {
        static CELL: EpochCell<std::sync::Mutex<u32>> = EpochCell::new();
        let (v, made) = CELL.get(|| std::sync::Mutex::new(7));
        assert!(made);
        *v.lock().unwrap_or_else(|p| p.into_inner()) = 8;
        let (again, made) = CELL.get(|| std::sync::Mutex::new(0));
        assert!(!made && std::ptr::eq(v, again));
        // The parent's value stays locked across the fork, as if another of its threads held it then.
        let held = v.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the child only takes its own epoch's value (made after the fork), then leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let (mine, made) = CELL.get(|| std::sync::Mutex::new(1));
            let ok = made && !std::ptr::eq(mine, v) && mine.try_lock().is_ok_and(|g| *g == 1);
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        drop(held);
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child reused its parent's value");
        assert_eq!(*v.lock().unwrap_or_else(|p| p.into_inner()), 8, "the parent's value changed");
    }
}

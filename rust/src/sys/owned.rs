//! Every fd kqrs owns, for the fork child.
//!
//! A lock-free bitmap of the fds kqrs created (1M bits, 128 KiB of zeroed static memory that is only
//! touched where fds are). The pthread_atfork child handler closes them all with nothing but atomic loads
//! and close(2), both async-signal-safe, so a fork while other threads are inside kqrs cannot deadlock the
//! child, and the child holds none of the parent's kqueue fds.
//!
//! The child handler only reads the bitmap (a write, or a read of a page the parent never touched, would
//! cost the child a page fault). The bitmap says which fork epoch it describes (`FORK.owned_gen`): a fork
//! child's stale bits (fds of its parent, closed by its fork handler) are cleared the first time it tracks
//! an fd of its own, or by the prepare handler before it forks itself, so that what the child handler
//! finds is always the forking process's own fds.

use super::host::{fork_gen, FORK};
use super::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// `FORK.owned_gen` while one thread clears a stale bitmap.
const CLEARING: u64 = u64::MAX;

const FD_WORDS: usize = 1 << 14;
static OWNED: [AtomicU64; FD_WORDS] = [const { AtomicU64::new(0) }; FD_WORDS];
static OWNED_MAX: AtomicI32 = AtomicI32::new(-1);

/// Whether the bitmap describes this generation (else its bits are fds an ancestor owned, closed since).
#[inline]
fn current() -> bool {
    FORK.owned_gen.load(Ordering::Acquire) == fork_gen()
}

/// Makes the bitmap describe this generation: clears what a fork ancestor left (once per generation, by
/// the first thread to get here; others wait for it).
fn freshen() {
    let gen = fork_gen();
    loop {
        let cur = FORK.owned_gen.load(Ordering::Acquire);
        if cur == gen {
            return;
        }
        if cur != CLEARING
            && FORK.owned_gen.compare_exchange(cur, CLEARING, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            // The bits go before `OWNED_MAX` does (no thread tracks meanwhile: `track` waits here), so a
            // child forked halfway through still has a `OWNED_MAX` that covers every bit left behind.
            let max = OWNED_MAX.load(Ordering::SeqCst);
            if max >= 0 {
                for w in &OWNED[..=(max as usize / 64)] {
                    if w.load(Ordering::Relaxed) != 0 {
                        w.store(0, Ordering::SeqCst);
                    }
                }
            }
            OWNED_MAX.store(-1, Ordering::SeqCst);
            FORK.owned_gen.store(gen, Ordering::Release);
            return;
        }
        std::thread::yield_now();
    }
}

/// Records `fd` as kqrs's own (closed in a fork child). Returns it.
pub fn track(fd: RawFd) -> RawFd {
    if !current() {
        freshen();
    }
    if fd >= 0 && (fd as usize) < FD_WORDS * 64 {
        OWNED[fd as usize / 64].fetch_or(1 << (fd % 64), Ordering::SeqCst);
        OWNED_MAX.fetch_max(fd, Ordering::SeqCst);
    }
    fd
}

/// Forgets that kqrs owns `fd` (its owner closed it already: it may name someone else's file by now).
pub fn untrack(fd: RawFd) {
    if fd >= 0 && (fd as usize) < FD_WORDS * 64 && current() {
        OWNED[fd as usize / 64].fetch_and(!(1 << (fd % 64)), Ordering::SeqCst);
    }
}

#[cfg(feature = "python")] // the Python layer's (doctor, tests)
/// How many fds kqrs owns now (for tests and `doctor`).
pub fn owned_fd_count() -> usize {
    let max = OWNED_MAX.load(Ordering::SeqCst);
    if max < 0 || !current() {
        return 0;
    }
    OWNED[..=(max as usize / 64)].iter().map(|w| w.load(Ordering::SeqCst).count_ones() as usize).sum()
}

/// Before fork(), in the forking process (the pthread_atfork prepare handler): makes the bitmap list this
/// process's fds only, so that the child handler can close what it lists without asking whose they are
/// (asking would read the epoch page, which a fork child gets fresh: a page fault). Stale bits (a fork
/// child that forks before it tracked an fd of its own) are cleared here, once. A bitmap another thread is
/// clearing lists none of this process's fds yet (`track` waits for the clearing): the child skips it,
/// and starts the clearing over itself (`close_owned_in_child`).
pub fn owned_prepare_fork() {
    if OWNED_MAX.load(Ordering::SeqCst) < 0 {
        return;
    }
    let cur = FORK.owned_gen.load(Ordering::Acquire);
    if cur != CLEARING && cur != fork_gen() {
        freshen();
    }
}

/// In a fork child: closes every fd kqrs owns. Async-signal-safe (atomics, close and close_range
/// only). kqrs's fds mostly come in runs of consecutive numbers (a kqueue and its timer source, kqueues
/// made one after another), and a run goes in one close_range(2) instead of a close(2) each.
pub fn close_owned_in_child() {
    // The prepare handler made the bitmap the parent's own, unless another thread was clearing it then
    // (and so had none of the parent's fds in it yet). That thread does not exist here: the bitmap is
    // marked stale again (a rare write), so that this process's own clearing starts over instead of waiting
    // for it forever; `OWNED_MAX` still covers what is left to clear.
    if FORK.owned_gen.load(Ordering::SeqCst) == CLEARING {
        FORK.owned_gen.store(0, Ordering::SeqCst);
        return;
    }
    let max = OWNED_MAX.load(Ordering::SeqCst);
    if max < 0 {
        return;
    }
    // The run being gathered: [start, end) (start == end: none).
    let (mut start, mut end) = (0i32, 0i32);
    for (i, w) in OWNED[..=(max as usize / 64)].iter().enumerate() {
        // Read only: the bits stay, stale, until the child tracks an fd of its own (`freshen`).
        let mut bits = w.load(Ordering::SeqCst);
        while bits != 0 {
            let fd = (i * 64) as i32 + bits.trailing_zeros() as i32;
            bits &= bits - 1;
            if fd != end {
                close_run(start, end);
                start = fd;
            }
            end = fd + 1;
        }
    }
    close_run(start, end);
}

/// Closes fds `start..end` (all kqrs's own), with one close_range(2) where the kernel has it (5.9+; an
/// older one says ENOSYS and they are closed one by one). Direct syscalls (direct.rs): a libc function the
/// parent never called is code the child would have to fault in. Nothing is remembered between calls: a
/// write to a static would cost the child a copy-on-write fault.
#[inline(always)]
fn close_run(start: RawFd, end: RawFd) {
    if end - start >= 2 {
        // SAFETY: fds kqrs created and nobody else owns in this child.
        if unsafe { super::direct::close_range(start, end - 1) }.is_ok() {
            return;
        }
    }
    for fd in start..end {
        // SAFETY: as above.
        let _ = unsafe { super::direct::close(fd) };
    }
}

/// Closes an fd kqrs owns, forgetting it first (unchecked).
pub fn close(fd: RawFd) {
    // Forget it first: a fork in between leaves the child one fd too many, never one closed that is not
    // ours.
    untrack(fd);
    // SAFETY: closing an fd number has no memory-safety effect; callers only close fds they own.
    unsafe {
        libc::close(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(fd: RawFd) -> bool {
        OWNED[fd as usize / 64].load(Ordering::SeqCst) & (1 << (fd % 64)) != 0
    }

    /// A process forked while one of its parent's threads was clearing the bitmap (here: a child that
    /// pretends so, with a stale bit for an fd number it has open) closes nothing of it, and its own first
    /// `track` clears the leftovers instead of waiting forever for a thread that does not exist there.
    /// Everything runs in forked children (atomics and syscalls only), so the test process's own bitmap is
    /// never touched.
    #[test]
    fn a_child_forked_mid_clearing_closes_nothing_and_clears_it_itself() {
        // the fork handlers are registered with the first epoch
        let _ = fork_gen();
        // SAFETY: the child makes only syscalls and atomic operations, then leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut p = [-1; 2];
            // SAFETY: p has room for the two fds.
            let ok = unsafe { libc::pipe(p.as_mut_ptr()) } == 0;
            let stale = p[0];
            OWNED[stale as usize / 64].fetch_or(1 << (stale % 64), Ordering::SeqCst);
            OWNED_MAX.fetch_max(stale, Ordering::SeqCst);
            FORK.owned_gen.store(CLEARING, Ordering::SeqCst);
            // SAFETY: as above.
            let g = unsafe { libc::fork() };
            if g == 0 {
                // SAFETY: a hang below ends the grandchild with SIGALRM instead of the test run.
                unsafe { libc::alarm(10) };
                // SAFETY: fstat on an fd number, into a zeroed stat.
                let open = unsafe { libc::fstat(stale, &mut std::mem::zeroed()) } == 0;
                let mine = track(p[1]);
                let code = if open && !listed(stale) && listed(mine) { 0 } else { 1 };
                // SAFETY: ends the grandchild at once.
                unsafe { libc::_exit(code) };
            }
            let mut status = 0;
            // SAFETY: waits for the grandchild forked above.
            let waited = g > 0 && unsafe { libc::waitpid(g, &mut status, 0) } == g;
            let code = if ok && waited && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 { 0 } else { 1 };
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    }
}

//! The kqueue: one epoll instance whose fd is the kqueue's fd and which holds every registration, the
//! knote table behind a mutex that is never held while blocking, and the lock-free entry into the wait.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::consts::*;
use crate::hazard;
use crate::kevent::Kevent;
use crate::knote::{ActiveQueue, FdEntry, FdReg, Index, Knote, Slab};
use crate::source::{self, Source, TOKEN_KICK, TOKEN_RT, TOKEN_SOURCE};
use crate::sys::{self, Errno, RawFd, Result};

// Tokens u64::MAX - 1, - 3, - 4 and - 5 are the filters' (filter/mod.rs), - 6 and - 7 and u64::MAX the timer
// source's (source.rs).
/// epoll token of the eventfd that wakes threads still waiting on a retired inner epoll.
pub(crate) const TOKEN_RETIRED: u64 = u64::MAX - 2;
/// epoll token of the process's dead fd, registered by close() to wake every waiter.
pub(crate) const TOKEN_DEAD: u64 = u64::MAX - 8;
/// epoll token of the inner epoll in the kqueue fd (once degraded, see `State::rebuild`).
pub(crate) const TOKEN_INNER: u64 = u64::MAX - 9;
/// Tokens with this bit name a knote slot (pidfds); without it, an fd.
pub(crate) const TAG_KNOTE: u64 = 1 << 63;

pub(crate) fn token(index: u32, gen: u32) -> u64 {
    index as u64 | ((gen as u64 & 0x7fff_ffff) << 32)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The fork epoch of this process: a fork child has a new one (sys/host.rs), so every kqueue of its parent
/// reads as closed there. (The fork handlers, registered with the first epoch, close the parent's fds in the
/// child, so their numbers are free there.)
#[inline]
pub fn fork_generation() -> u64 {
    sys::fork_gen()
}

/// Counters that tell what the engine had to absorb (for tests and `doctor`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Wake-ups from epoll that produced no event and were absorbed.
    pub absorbed_wakeups: u64,
    /// Events seen for a registration that no longer exists.
    pub stale_events: u64,
    /// Registrations parked edge-triggered because no knote could report them.
    pub parks: u64,
    /// Times the registrations were moved to a fresh epoll to shed ones of closed fds.
    pub rebuilds: u64,
    /// Process-connector messages ignored: not from the kernel, or malformed.
    pub forged_messages: u64,
}

/// Mutable state of one kqueue; only touched with the mutex held.
pub(crate) struct State {
    /// The kqueue's fd (an epoll instance).
    pub kq: RawFd,
    /// `kq` is closed with the rest (false once its owner closed it itself: `close_detached`).
    pub own_kq: bool,
    /// libkqueue's flags in what comes back (the C face): events carry EV_ADD, and an EV_ERROR / EV_RECEIPT
    /// entry keeps the flags of its change. FreeBSD (and the Python face) clears them. A socket error is read
    /// (and so cleared) into `fflags`, as libkqueue and FreeBSD report it.
    pub libkqueue_flags: bool,
    /// Nobody reads `data` from this kqueue's socket, pipe and tty events (a selector's kqueue): a level-
    /// triggered READ/WRITE knote without NOTE_LOWAT reports epoll's readiness as it is, and the syscalls
    /// that count bytes (FIONREAD, SIOCOUTQ, ...) are not made; `data` is 0. EpollSelector's readiness,
    /// at its cost.
    pub levels_only: bool,
    /// The epoll every registration lives in: `kq` itself, or, once a registration that cannot be removed
    /// has shown up, an inner epoll registered in `kq` (see `rebuild`).
    pub ep: RawFd,
    /// Inner epolls replaced by `rebuild`, each with the eventfd that keeps it readable, kept open until
    /// no thread can still be waiting on them.
    pub retired: Vec<(RawFd, RawFd)>,
    /// An event came from a registration that can no longer be removed (its fd was closed or reused
    /// while a dup() kept the file open): rebuild before the next wait.
    pub needs_rebuild: bool,
    /// The last stale token seen (a stuck registration shows up twice in a row).
    pub last_stale: u64,
    /// The timer source and kick.
    pub src: Source,
    pub timers: crate::filter::timer::Heap,
    pub rt_timers: crate::filter::timer::Heap,
    pub knotes: Slab,
    pub fdtab: sys::WipeVec<FdEntry>,
    pub index: Index,
    pub active: ActiveQueue,
    /// Knotes on the active queue that are still live (`queued`); at 0 the kick is reset at once, so the
    /// kqueue fd stops polling readable as soon as nothing is pending.
    pub queued_live: usize,
    /// Mirrors `queued_live > 0` for readers without the lock (collect's fast check before it waits).
    pub active_hint: Arc<AtomicBool>,
    /// Set while applying changes whose caller collects right after: a trigger then need not kick for
    /// itself (the collect drains the active queue anyway); leftovers get the kick after the drain.
    pub defer_kick: bool,
    /// What the filters keep beside their knotes (their kernel objects: inotify, the process connector,
    /// ...), theirs to open, report, re-register and close (filter/mod.rs).
    pub filters: crate::filter::FilterState,
    pub stats: Stats,
    /// Number of the current collect call; a knote whose `seen` equals it was reported in this call.
    pub seq: u32,
}

/// A kqueue.
///
/// Its fd is an epoll instance that holds every registration, so external pollers (poll, select, epoll,
/// another kqueue) see it readable exactly when something is pending, and it nests. A kqueue that only
/// watches fds owns no other fd; timers, USER knotes and files share one timer source (`source.rs`).
pub struct Kqueue {
    fd: RawFd,
    /// A process-unique id, published in hazard slots by threads inside the wait path.
    id: u64,
    /// The epoll kevent() waits on: `fd`, or the inner epoll once degraded.
    wait_ep: AtomicI32,
    /// Retired inner epolls are waiting to be closed (see `rebuild`).
    has_retired: AtomicBool,
    /// The number of knotes, as of the last change (read without the lock to size output buffers).
    knotes_hint: AtomicUsize,
    /// Something is on the active queue (shared with the state; see `State::active_hint`).
    active_hint: Arc<AtomicBool>,
    /// The process the kqueue was made in (a fork child's copy reads as closed).
    born: sys::ForkStamp,
    closed: AtomicBool,
    /// Threads inside the wait path that found no hazard slot of their own.
    slotless: AtomicUsize,
    /// A private duplicate of `fd`, made by the first wait long enough to be cut in slices (`watch_own_fd`),
    /// to tell whether `fd` was closed behind the kqueue's back (`closed_behind`); -1 until then.
    own_dup: AtomicI32,
    state: Mutex<State>,
}

fn errno(e: i32) -> Errno {
    Errno(e)
}

impl Kqueue {
    /// Creates a kqueue: one close-on-exec epoll instance.
    pub fn new() -> Result<Kqueue> {
        let fd = sys::epoll_create()?;
        Self::adopt(fd).inspect_err(|_| sys::close(fd))
    }

    /// Makes a kqueue whose fd is the existing epoll instance `fd`, which it then owns (fails with EINVAL
    /// when `fd` is not an epoll fd; the fd is left open then).
    pub fn adopt(fd: RawFd) -> Result<Kqueue> {
        hazard::init(fork_generation()); // (the first epoch registers the fork handlers)
        if !sys::fd_is_open(fd) {
            return Err(errno(libc::EBADF));
        }
        // The dead fd close() needs is made now, so close() can never fail for want of an fd.
        let dead = sys::dead_fd()?;
        if !sys::is_epoll(fd, dead) {
            return Err(errno(libc::EINVAL));
        }
        sys::track(fd);
        let state = State { kq: fd, ep: fd, ..State::empty() };
        let active_hint = state.active_hint.clone();
        Ok(Kqueue {
            fd,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            wait_ep: AtomicI32::new(fd),
            has_retired: AtomicBool::new(false),
            knotes_hint: AtomicUsize::new(0),
            active_hint,
            born: sys::ForkStamp::now(),
            closed: AtomicBool::new(false),
            slotless: AtomicUsize::new(0),
            own_dup: AtomicI32::new(-1),
            state: Mutex::new(state),
        })
    }

    /// The kqueue's fd (its epoll fd): pollable, readable exactly when an event is pending.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Closed by close(), or inherited across fork() (a kqueue is not inherited).
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.forked()
    }

    /// This is a fork child's copy of the kqueue (made in another process, an ancestor).
    #[inline]
    fn forked(&self) -> bool {
        self.born.forked()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves the table consistent enough to go on (every mutation is
        // completed before anything that may fail), so a poisoned lock is taken over, not propagated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, locked, or EBADF once the kqueue is closed. The caller's hazard slot holds the kqueue
    /// until the guard is dropped, so a kick asked for under the lock is made after the unlock (the thread
    /// it wakes then does not find the lock taken) on an fd close() has not closed yet.
    fn lock_open(&self) -> Result<Locked<'_>> {
        let hz = hazard::enter(self.id, &self.slotless);
        let mut locked = self.lock_inside()?;
        locked.post._hz = Some(hz);
        Ok(locked)
    }

    /// `lock_open` for a caller that holds a hazard slot for this kqueue already (the collect path, and
    /// `apply_deferring_kick` under its pending kick's slot).
    #[inline]
    fn lock_inside(&self) -> Result<Locked<'_>> {
        // Closed, or a fork child's copy (whose lock a thread of the parent may have held at fork time):
        // told before the lock. A close() racing with this call is told after it.
        if self.is_closed() {
            return Err(errno(libc::EBADF));
        }
        let st = self.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(errno(libc::EBADF));
        }
        Ok(Locked { st, post: PostUnlock { kick: None, _hz: None } })
    }

    /// Closes the kqueue: wakes every thread blocked in it (they return EBADF), waits until none is inside
    /// its wait path any more, then closes its fds. Closing twice is fine. In a forked child it only marks
    /// the kqueue closed.
    pub fn close(&self) {
        if self.forked() {
            self.closed.store(true, Ordering::Release);
            return;
        }
        if self.closed_behind() {
            return; // its number was closed already, and may name another file now: left alone
        }
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        hazard::barrier();
        {
            let st = self.lock();
            // Every waiter wakes: the dead fd is readable forever.
            if let Ok(d) = sys::dead_fd() {
                let _ = sys::epoll_add(st.ep, d, sys::EPOLLIN, TOKEN_DEAD);
            }
        }
        let mut spins = 0u32;
        while hazard::busy_others(self.id, &self.slotless) {
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        self.lock().close_all();
        let d = self.own_dup.swap(-1, Ordering::AcqRel);
        if d >= 0 {
            sys::close(d);
        }
    }

    /// Closes a kqueue whose fd number its owner already closed (C code closes a kqueue with close(2)):
    /// everything the kqueue holds is released except that number, which may name another file by now.
    /// `alias` is another fd of the same epoll instance (the C face keeps one), through which threads still
    /// blocked on it are woken.
    pub fn close_detached(&self, alias: RawFd) {
        if self.forked() {
            self.closed.store(true, Ordering::Release);
            return;
        }
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        hazard::barrier();
        {
            let mut st = self.lock();
            st.own_kq = false;
            let ep = if st.ep == st.kq { alias } else { st.ep };
            if let Ok(d) = sys::dead_fd() {
                let _ = sys::epoll_add(ep, d, sys::EPOLLIN, TOKEN_DEAD);
            }
        }
        while hazard::busy_others(self.id, &self.slotless) {
            std::thread::sleep(Duration::from_micros(50));
        }
        self.lock().close_all();
        let d = self.own_dup.swap(-1, Ordering::AcqRel);
        if d >= 0 {
            sys::close(d);
        }
    }

    /// Makes (once) the private duplicate of the kqueue's fd that `fd_is_ours` compares it with, and returns
    /// it. The Python face makes it before a wait long enough to be cut in slices (close(2) / os.close() of
    /// the fd by another thread wakes nobody: the waiter's epoll_wait holds the file); the C face at
    /// creation, where it is also the fd a blocked kevent() waits on.
    pub fn watch_own_fd(&self) -> Result<RawFd> {
        let d = self.own_dup.load(Ordering::Acquire);
        if d >= 0 {
            return Ok(d);
        }
        if self.is_closed() {
            return Err(errno(libc::EBADF));
        }
        let d = sys::dup_cloexec(self.fd)?;
        match self.own_dup.compare_exchange(-1, d, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(d),
            Err(other) => {
                sys::close(d);
                Ok(other)
            }
        }
    }

    /// Whether the kqueue's fd number still names it, as far as `watch_own_fd`'s duplicate can tell (true
    /// when there is no duplicate; without kcmp only a closed number can be told).
    pub fn fd_is_ours(&self) -> bool {
        let d = self.own_dup.load(Ordering::Acquire);
        if d < 0 {
            return true;
        }
        match sys::same_file(self.fd, d) {
            Ok(same) => same,
            Err(_) => sys::fd_is_open(self.fd),
        }
    }

    /// Closes a kqueue whose fd number is known to be gone (closed, or reused), through its duplicate and
    /// without touching that number (`close_detached`): threads waiting in it wake and fail with EBADF.
    pub fn detach_closed(&self) {
        // One thread detaches it; the duplicate stays open until then (it wakes the other waiters).
        let d = self.own_dup.swap(-1, Ordering::AcqRel);
        if d >= 0 {
            self.close_detached(d);
            sys::close(d);
        }
    }

    /// Whether the kqueue's fd was closed behind its back (`fd_is_ours`); if so, the kqueue is closed here
    /// (`detach_closed`).
    pub fn closed_behind(&self) -> bool {
        if self.own_dup.load(Ordering::Acquire) < 0 || self.is_closed() || self.fd_is_ours() {
            return false;
        }
        self.detach_closed();
        true
    }

    /// kevent(2): applies `changes` in order, then (unless a change produced an entry) collects pending
    /// events into `events`, waiting up to `timeout` (None = forever). EINTR is retried with the time left.
    #[inline]
    pub fn kevent(&self, changes: &[Kevent], events: &mut [Kevent], timeout: Option<Duration>) -> Result<usize> {
        if changes.is_empty() && timeout == Some(Duration::ZERO) && !events.is_empty() {
            // A poll: its epoll_wait in the caller's frame (see `poll`).
            match self.poll(events) {
                Err(Errno(libc::EINTR)) => {}
                r => return r,
            }
        }
        self.kevent_general(changes, events, timeout)
    }

    #[inline(never)]
    fn kevent_general(&self, changes: &[Kevent], events: &mut [Kevent], timeout: Option<Duration>) -> Result<usize> {
        let wait = Wait::after(timeout);
        match self.kevent_once(changes, events, wait) {
            // the changes are applied: only the wait is retried, with the time left
            Err(Errno(libc::EINTR)) => loop {
                match self.collect(events, wait) {
                    Err(Errno(libc::EINTR)) => continue,
                    r => return r,
                }
            },
            r => r,
        }
    }

    /// One kevent(2) call, the core every face uses (Rust, Python, C): applies `changes`, then collects as
    /// `wait` says. EINTR while waiting goes back to the caller, with the changes applied: Python runs its
    /// signal handlers and retries `collect` with the time left, C returns it (as BSD does).
    pub fn kevent_once(&self, changes: &[Kevent], events: &mut [Kevent], wait: Wait) -> Result<usize> {
        if !changes.is_empty() {
            match self.apply_then_collect(changes, events)? {
                Some(n) => return Ok(n),
                None if events.is_empty() => return Ok(0),
                None => {}
            }
        } else if events.is_empty() {
            if self.is_closed() {
                return Err(errno(libc::EBADF));
            }
            return Ok(0);
        }
        loop {
            match self.collect_shared(events, wait) {
                Err(Errno(libc::EINTR)) if wait != Wait::Poll => return Err(errno(libc::EINTR)),
                Err(Errno(libc::EINTR)) => continue,
                r => return r,
            }
        }
    }

    /// The C face's kevent(), in steps, so that its blocking wait can happen in a frame that holds nothing
    /// with a destructor (thread cancellation may unwind through that wait): applies `changes` and polls.
    /// `Ok(Step::Done(n))` when the call is over; `Ok(Step::Wait(..))` when it must wait: the caller waits
    /// on that epoll fd (publishing `id()` in a hazard slot meanwhile) and hands what it got to
    /// `resume_step`. `alias` is another fd of this kqueue's epoll, used when its own number may be gone.
    #[inline(always)]
    pub fn begin_step(&self, changes: &[Kevent], events: &mut [Kevent], wait: Wait, alias: RawFd) -> Result<Step> {
        if !changes.is_empty() {
            match self.apply_then_collect(changes, events)? {
                Some(n) => return Ok(Step::Done(n)),
                None if events.is_empty() => return Ok(Step::Done(0)),
                None => {}
            }
        } else if events.is_empty() {
            if self.is_closed() {
                return Err(errno(libc::EBADF));
            }
            return Ok(Step::Done(0));
        }
        self.resume_step(events, wait, &[], alias)
    }

    /// Harvests what the caller's wait got (`prefetched`), then polls; see `begin_step`. (Inlined, with
    /// `begin_step`, into the C face's frame: see `poll_ready`.)
    #[inline(always)]
    pub fn resume_step(
        &self,
        events: &mut [Kevent],
        wait: Wait,
        prefetched: &[sys::EpollEvent],
        alias: RawFd,
    ) -> Result<Step> {
        // A poll (the common C call) takes `collect`'s fast path; what a wait got, the general one.
        let n = if prefetched.is_empty() {
            self.collect(events, Wait::Poll)?
        } else {
            self.collect_with(events, Wait::Poll, prefetched)?
        };
        if n > 0 || wait == Wait::Poll {
            return Ok(Step::Done(n));
        }
        let timeout_ms = match wait {
            Wait::Until(d) => {
                let now = sys::clock_ns(false);
                if now >= d {
                    return Ok(Step::Done(0));
                }
                (d - now).div_ceil(1_000_000).min(i32::MAX as u64) as i32
            }
            _ => -1,
        };
        let ep = self.wait_ep.load(Ordering::Acquire);
        let ep = if ep == self.fd { alias } else { ep };
        Ok(Step::Wait(ep, timeout_ms))
    }

    /// Makes this kqueue answer with libkqueue's flags (see `State::libkqueue_flags`): the C face.
    pub fn use_libkqueue_flags(&self) {
        self.lock().libkqueue_flags = true;
    }

    /// Makes this kqueue report readiness without `data` (see `State::levels_only`): a selector's.
    pub fn use_levels_only(&self) {
        self.lock().levels_only = true;
    }

    /// How many events a kevent() call would return now (FreeBSD's kq_count), taking none of them: what a
    /// kqueue watching this one reports as EVFILT_READ `data`. Reports epoll holds are moved to the active
    /// queue (edge-triggered ones would be lost otherwise); level-triggered fds are counted where they are.
    pub fn pending_count(&self) -> usize {
        let Ok(mut st) = self.lock_open() else { return 0 };
        st.pending_count()
    }

    /// The id a waiter publishes in its hazard slot (see `begin_step`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Applies `changes`; returns how many EV_ERROR / EV_RECEIPT entries were written to `events`. A
    /// failing change with no room left makes the call fail with its errno (later changes are not applied).
    pub fn apply(&self, changes: &[Kevent], events: &mut [Kevent]) -> Result<usize> {
        let mut st = self.lock_open()?;
        if changes.is_empty() {
            return Ok(0);
        }
        let r = Self::apply_locked(&mut st, changes, events);
        self.after_changes(&mut st);
        r.map(|n| n.unwrap_or(0))
    }

    /// `apply` for a caller that collects right after (with the same `events`) when this returns None: a
    /// knote a change makes ready is left for that collect instead of waking other threads through the
    /// kick (which would cost a syscall now and another in the collect). `Some(n)`: the call is over, with
    /// `n` entries to return (0 too: see `apply_locked`).
    pub fn apply_then_collect(&self, changes: &[Kevent], events: &mut [Kevent]) -> Result<Option<usize>> {
        let mut st = self.lock_open()?;
        if changes.is_empty() {
            return Ok(None);
        }
        st.defer_kick = !events.is_empty();
        let r = Self::apply_locked(&mut st, changes, events);
        st.defer_kick = false;
        if !matches!(r, Ok(None)) || events.is_empty() {
            // No collect follows: whatever is queued must be visible to others now.
            st.flush_kick();
        }
        self.after_changes(&mut st);
        r
    }

    /// `apply_then_collect` whose kick (if a change asked for one) is handed back instead of made, for a
    /// caller that makes it with other threads free to run (the Python layer: with the GIL released, so
    /// the thread it wakes does not find the GIL taken). The fd stays open until the kick is fired or
    /// dropped.
    pub fn apply_deferring_kick(
        &self,
        changes: &[Kevent],
        events: &mut [Kevent],
    ) -> (Result<Option<usize>>, PendingKick<'_>) {
        // The pending kick's hazard slot covers the locked state too (its fd stays open until the kick).
        let mut pending = PendingKick { kick: None, _hz: hazard::enter(self.id, &self.slotless) };
        let mut st = match self.lock_inside() {
            Ok(st) => st,
            Err(e) => return (Err(e), pending),
        };
        if changes.is_empty() {
            return (Ok(None), pending);
        }
        st.defer_kick = !events.is_empty();
        let r = Self::apply_locked(&mut st, changes, events);
        st.defer_kick = false;
        if !matches!(r, Ok(None)) || events.is_empty() {
            st.flush_kick();
        }
        self.after_changes(&mut st);
        pending.kick = st.src.take_kick();
        (r, pending)
    }

    fn after_changes(&self, st: &mut State) {
        self.knotes_hint.store(st.knotes.len(), Ordering::Relaxed);
        if st.needs_rebuild {
            self.rebuild_now(st);
        }
    }

    /// Applies `changes`, writing an entry for each failure and each EV_RECEIPT. `Some(n)`: the call ends
    /// with `n` entries (n > 0, or 0 when a receipt found no room); None: no entry, the call collects.
    fn apply_locked(st: &mut State, changes: &[Kevent], events: &mut [Kevent]) -> Result<Option<usize>> {
        if changes.len() > 64 {
            st.reserve_for(changes);
        }
        let mut n = 0;
        for ch in changes {
            if ch.filter == EVFILT_LIBKQUEUE {
                // A question, not a knote: the answer is an entry (or, with no room for it, lost, as a
                // receipt is).
                let answer = crate::filter::libkqueue::answer(ch);
                if n >= events.len() {
                    return answer.map(|_| Some(n));
                }
                events[n] = answer.unwrap_or_else(|Errno(e)| Kevent { flags: EV_ERROR, data: e as isize, ..*ch });
                n += 1;
                continue;
            }
            let r = st.apply_one(ch);
            let receipt = ch.flags & EV_RECEIPT != 0;
            if r.is_ok() && !receipt {
                continue;
            }
            if n >= events.len() {
                // No room for the entry: FreeBSD's kqueue_kevent() stops here with `return (error)`, the
                // remaining changes not applied. For a failure the call fails with its errno; for a
                // receipt of a success error is 0 and the syscall returns 0, its preset return value: the
                // entries already written are not counted.
                return r.map(|()| Some(0));
            }
            let mut e = *ch;
            // FreeBSD answers with EV_ERROR alone; libkqueue keeps the change's flags (the C face).
            e.flags = if st.libkqueue_flags { ch.flags | EV_ERROR } else { EV_ERROR };
            e.data = match r {
                Ok(()) => 0,
                Err(Errno(x)) => x as isize,
            };
            events[n] = e;
            n += 1;
        }
        Ok(if n > 0 { Some(n) } else { None })
    }

    /// Waits for and collects pending events into `events` as `wait` says. Returns 0 only once the
    /// deadline has passed (at once for `Wait::Poll`). Returns EINTR to the caller.
    #[inline(always)]
    pub fn collect(&self, events: &mut [Kevent], wait: Wait) -> Result<usize> {
        if wait == Wait::Poll && !events.is_empty() {
            self.poll(events)
        } else {
            self.collect_with(events, wait, &[])
        }
    }

    /// `collect` for callers whose polls are off the hot path: a wait goes as `collect` makes it, a poll
    /// through one shared copy of the poll path instead of one inlined into each caller.
    #[inline]
    pub fn collect_shared(&self, events: &mut [Kevent], wait: Wait) -> Result<usize> {
        if wait == Wait::Poll {
            self.poll_outlined(events)
        } else {
            self.collect(events, wait)
        }
    }

    #[inline(never)]
    fn poll_outlined(&self, events: &mut [Kevent]) -> Result<usize> {
        self.collect(events, Wait::Poll)
    }

    /// The hot path of a poll: one epoll_wait into a small buffer, and nothing else when it is empty.
    /// Everything else is out of line, so that this path saves and restores little.
    #[inline(always)]
    fn poll(&self, events: &mut [Kevent]) -> Result<usize> {
        let guard = hazard::enter(self.id, &self.slotless);
        if self.is_closed() || self.active_hint.load(Ordering::Acquire) {
            drop(guard);
            return self.collect_with(events, Wait::Poll, &[]);
        }
        let mut first = sys::EventBuf::<16>::new();
        match first.wait(self.wait_ep.load(Ordering::Acquire), events.len(), Some(0)) {
            Ok(0) => {
                self.leave(guard);
                Ok(0)
            }
            Ok(_) => self.poll_ready(events, first.events(), guard),
            Err(e) => {
                drop(guard);
                Err(e)
            }
        }
    }

    /// Ends a presence in the wait path: gives the hazard slot back, then closes inner epolls a rebuild
    /// retired if no thread can be waiting on them any more.
    #[inline]
    fn leave(&self, guard: hazard::Guard<'_>) {
        drop(guard);
        if self.has_retired.load(Ordering::Acquire) {
            self.close_retired();
        }
    }

    /// A poll whose epoll_wait found something: harvests it, inside the caller's hazard slot. (Inlined: on
    /// this kind of machine each frame live across the syscalls a harvest makes (a socket's FIONREAD) costs
    /// a mispredicted return, measured at 3% of a one-socket poll per frame.)
    #[inline(always)]
    fn poll_ready(&self, events: &mut [Kevent], got: &[sys::EpollEvent], guard: hazard::Guard<'_>) -> Result<usize> {
        let r = self.collect_in(events, Wait::Poll, got);
        self.leave(guard);
        r
    }

    /// `collect`'s general path (`prefetched`: a first batch of epoll events already taken).
    #[inline(never)]
    fn collect_with(&self, events: &mut [Kevent], wait: Wait, prefetched: &[sys::EpollEvent]) -> Result<usize> {
        let guard = hazard::enter(self.id, &self.slotless);
        if self.is_closed() {
            return Err(errno(libc::EBADF));
        }
        let r = self.collect_in(events, wait, prefetched);
        self.leave(guard);
        r
    }

    /// Closes inner epolls replaced by a rebuild once no thread can be waiting on them.
    #[cold]
    fn close_retired(&self) {
        hazard::barrier();
        if hazard::busy(self.id, &self.slotless) {
            return;
        }
        let Ok(mut st) = self.lock_open() else { return };
        for (ep, w) in st.retired.drain(..) {
            sys::close(w);
            sys::close(ep);
        }
        self.has_retired.store(false, Ordering::Release);
    }

    #[cold]
    fn rebuild_now(&self, st: &mut State) {
        st.rebuild();
        self.wait_ep.store(st.ep, Ordering::Release);
        if !st.retired.is_empty() {
            self.has_retired.store(true, Ordering::Release);
        }
    }

    /// The general collect: waits, harvests, and looks again while that can find more. `prefetched` is a
    /// first batch of epoll events the caller already took (the poll fast path). The caller holds a hazard
    /// slot for this kqueue.
    #[inline(always)]
    fn collect_in(&self, events: &mut [Kevent], wait: Wait, prefetched: &[sys::EpollEvent]) -> Result<usize> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut buf = sys::EventBuf::<256>::new();
        let want = events.len().min(sys::EventBuf::<256>::LEN);
        let mut got = 0;
        let mut first = true;
        let mut reparked = false;
        let mut once_more = false;
        let mut extra_passes = 0;
        let mut pre = prefetched;
        // A signal handled on this thread during a blocking wait ends the call with EINTR when nothing was
        // reported yet, as epoll_wait alone would have (the pending-signal signalfd makes it return an event
        // instead): the Python face then runs its handlers, and a KeyboardInterrupt leaves the knote's
        // report queued for the next call. (The C face waits itself and polls here: it gets the event.)
        let sig_runs = if wait != Wait::Poll { sys::signal_runs_here() } else { None };
        loop {
            // Knotes already on the active queue (e.g. triggered by this very call's changes): look now.
            let pending = self.active_hint.load(Ordering::Acquire);
            let timeout = match wait {
                _ if got > 0 || once_more || pending => Some(0),
                Wait::Poll => Some(0),
                Wait::Forever => None,
                Wait::Until(d) => Some(d.saturating_sub(sys::clock_ns(false))),
            };
            let ep = self.wait_ep.load(Ordering::Acquire);
            let (r, batch_max) =
                if pre.is_empty() { (buf.wait(ep, want, timeout), want) } else { (Ok(pre.len()), want.min(16)) };
            let repoll = std::mem::take(&mut once_more);
            let n = match r {
                Ok(n) => n,
                Err(_) if got > 0 => return Ok(got),
                Err(e) => return Err(e),
            };
            if n == 0 && !pending {
                // Nothing ready at all.
                match wait {
                    _ if got > 0 => return Ok(got),
                    Wait::Poll => return Ok(0),
                    _ if repoll => continue,
                    Wait::Until(d) if sys::clock_ns(false) >= d => return Ok(0),
                    _ => continue,
                }
            }
            let before = got;
            let parked;
            {
                let mut st = self.lock_inside()?;
                let parks_before = st.stats.parks;
                if first {
                    // A new call: knotes reported from here on are reported once in it.
                    st.next_seq();
                    first = false;
                }
                let evs = if pre.is_empty() { buf.events() } else { std::mem::take(&mut pre) };
                let interrupted = sig_runs.is_some() && sys::signal_runs_here() != sig_runs;
                got = st.harvest(evs, events, got, !interrupted);
                if interrupted && got == 0 {
                    return Err(errno(libc::EINTR));
                }
                self.knotes_hint.store(st.knotes.len(), Ordering::Relaxed);
                parked = st.stats.parks != parks_before;
                if got == before && n > 0 {
                    st.stats.absorbed_wakeups += 1;
                }
                if st.needs_rebuild {
                    self.rebuild_now(&mut st);
                }
            }
            if got == 0 && parked && !reparked {
                // Parking re-queued the fd in epoll (EPOLL_CTL_MOD re-polls it): take that edge now, so
                // the kqueue fd does not poll readable for an event nobody may report.
                reparked = true;
                once_more = true;
                continue;
            }
            if got > 0 {
                // A full epoll batch may leave more ready registrations behind: take them too while
                // there is room and each pass still finds something new.
                if got == events.len() || n < batch_max || got == before {
                    return Ok(got);
                }
                continue;
            }
            if n == batch_max && extra_passes < 4 {
                // A full batch that yielded nothing (stale or filtered reports) says nothing about what
                // else is ready: look again before giving up.
                extra_passes += 1;
                once_more = true;
                continue;
            }
            match wait {
                Wait::Poll => return Ok(0),
                Wait::Until(d) if sys::clock_ns(false) >= d => return Ok(0),
                _ => {}
            }
        }
    }

    /// Number of knotes registered as of the last change, read without taking the lock (a hint: another
    /// thread may be changing it).
    pub fn knote_count_hint(&self) -> usize {
        self.knotes_hint.load(Ordering::Relaxed)
    }

    /// Number of knotes registered.
    pub fn knote_count(&self) -> usize {
        match self.lock_open() {
            Ok(st) => st.knotes.len(),
            Err(_) => 0,
        }
    }

    /// Counters of absorbed wake-ups and stale events.
    pub fn stats(&self) -> Stats {
        match self.lock_open() {
            Ok(st) => st.stats,
            Err(_) => Stats::default(),
        }
    }
}

impl Drop for Kqueue {
    fn drop(&mut self) {
        if self.forked() {
            // A kqueue inherited across fork(): its fds were closed by the fork handler (their numbers
            // may name the child's own files by now), and its state may have been copied in the middle
            // of another thread's change. Leak it untouched.
            std::mem::forget(std::mem::replace(
                self.state.get_mut().unwrap_or_else(|p| p.into_inner()),
                State::empty(),
            ));
            return;
        }
        if self.closed.load(Ordering::Acquire) {
            return; // close() already closed everything
        }
        // &mut self: no other thread can be inside.
        let d = *self.own_dup.get_mut();
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if d >= 0 {
            if matches!(sys::same_file(self.fd, d), Ok(false)) || !sys::fd_is_open(self.fd) {
                st.own_kq = false; // closed behind its back: the number may name another file now
            }
            sys::close(d);
        }
        st.close_all();
    }
}

/// The locked state of an open kqueue (see `Kqueue::lock_open`). Dropping it takes the kick a lock holder
/// asked for, releases the lock, fires the kick, then leaves the hazard slot (fields drop in order).
pub(crate) struct Locked<'a> {
    st: MutexGuard<'a, State>,
    post: PostUnlock<'a>,
}

struct PostUnlock<'a> {
    kick: Option<source::Kick>,
    /// None when the caller holds the slot itself (`lock_inside`).
    _hz: Option<hazard::Guard<'a>>,
}

impl Drop for PostUnlock<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.kick.take() {
            k.fire();
        }
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.st
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.st
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.post.kick = self.st.src.take_kick();
    }
}

/// A kick handed back by `Kqueue::apply_deferring_kick`: `fire()` makes it (dropping it does too).
pub struct PendingKick<'a> {
    kick: Option<source::Kick>,
    _hz: hazard::Guard<'a>,
}

impl PendingKick<'_> {
    /// Whether there is a kick to make.
    pub fn is_some(&self) -> bool {
        self.kick.is_some()
    }

    /// Makes the kick.
    pub fn fire(mut self) {
        if let Some(k) = self.kick.take() {
            k.fire();
        }
    }
}

impl Drop for PendingKick<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.kick.take() {
            k.fire();
        }
    }
}

/// What `Kqueue::begin_step` / `resume_step` leave to their caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The call is over, with this many entries.
    Done(usize),
    /// Wait on this epoll fd for up to this many ms (-1: forever), then `resume_step`.
    Wait(RawFd, i32),
}

/// How long `collect` may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Do not block: look once.
    Poll,
    /// Until an event arrives.
    Forever,
    /// Until this CLOCK_MONOTONIC time (ns).
    Until(u64),
}

impl Wait {
    /// The wait for a relative timeout (None = forever), fixed now.
    pub fn after(timeout: Option<Duration>) -> Wait {
        match timeout {
            None => Wait::Forever,
            Some(t) if t.is_zero() => Wait::Poll,
            Some(t) => {
                let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
                Wait::Until(sys::clock_ns(false).saturating_add(ns))
            }
        }
    }

    /// The wait for a relative timeout in ns (None = forever), fixed now.
    pub fn after_ns(ns: Option<u64>) -> Wait {
        match ns {
            None => Wait::Forever,
            Some(0) => Wait::Poll,
            Some(ns) => Wait::Until(sys::clock_ns(false).saturating_add(ns)),
        }
    }
}

impl State {
    /// A state that owns nothing (all fds -1).
    fn empty() -> State {
        State {
            kq: -1,
            own_kq: true,
            libkqueue_flags: false,
            levels_only: false,
            ep: -1,
            retired: Vec::new(),
            needs_rebuild: false,
            last_stale: 0,
            src: Source::NONE,
            timers: Default::default(),
            rt_timers: Default::default(),
            knotes: Slab::default(),
            fdtab: sys::WipeVec::new(),
            index: Index::default(),
            active: ActiveQueue::new(),
            queued_live: 0,
            active_hint: Arc::new(AtomicBool::new(false)),
            defer_kick: false,
            filters: crate::filter::FilterState::new(),
            stats: Stats::default(),
            seq: 1,
        }
    }

    /// Grows the tables once for a big changelist, instead of step by step as its knotes arrive.
    #[cold]
    fn reserve_for(&mut self, changes: &[Kevent]) {
        let adds = changes.iter().filter(|c| c.flags & EV_ADD != 0).count();
        self.knotes.reserve(adds);
        let top = changes
            .iter()
            .filter(|c| Self::is_fd_filter(c.filter) && c.flags & EV_ADD != 0 && c.ident < i32::MAX as usize)
            .map(|c| c.ident)
            .max();
        // Only as far as fds that are really open (a bogus huge ident must not grow the table).
        if let Some(top) = top {
            if top >= self.fdtab.len() && top < 1 << 24 && sys::fd_is_open(top as RawFd) {
                self.fdtab.resize(top + 1, FdEntry::EMPTY);
            }
        }
    }

    /// Starts a new collect call (see `seq`). When the counter wraps, every knote forgets the call it was
    /// last reported in, so an old `seen` can never look like the current call.
    fn next_seq(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        if self.seq == 0 {
            self.seq = 1;
            for (_, k) in self.knotes.iter_slots_mut() {
                k.seen = 0;
            }
        }
    }

    fn close_all(&mut self) {
        crate::filter::close_all(self);
        self.knotes = Slab::default();
        self.fdtab = sys::WipeVec::new();
        self.index.clear();
        self.active.clear();
        self.timers.clear();
        self.rt_timers.clear();
        self.queued_live = 0;
        self.active_hint.store(false, Ordering::Release);
        self.src.close();
        for (ep, w) in self.retired.drain(..) {
            sys::close(w);
            sys::close(ep);
        }
        if self.ep >= 0 && self.ep != self.kq {
            sys::close(self.ep);
        }
        self.ep = -1;
        if self.kq >= 0 {
            if self.own_kq {
                sys::close(self.kq);
            }
            self.kq = -1;
        }
    }

    pub(crate) fn is_fd_filter(filter: i16) -> bool {
        filter == EVFILT_READ || filter == EVFILT_WRITE
    }

    /// Finds the knote for (ident, filter).
    #[inline]
    pub(crate) fn lookup(&self, ident: usize, filter: i16) -> Option<u32> {
        if Self::is_fd_filter(filter) {
            let e = self.fdtab.get(ident)?;
            let s = if filter == EVFILT_READ { e.read } else { e.write };
            s.checked_sub(1)
        } else {
            self.index.get(ident, filter, &self.knotes)
        }
    }

    fn apply_one(&mut self, ch: &Kevent) -> Result<()> {
        if ch.flags & !(EV_INPUT_MASK | EV_EOF | EV_ERROR | EV_FLAG1) != 0 {
            return Err(errno(libc::EINVAL));
        }
        if ch.flags & (EV_ENABLE | EV_DISABLE) == EV_ENABLE | EV_DISABLE {
            return Err(errno(libc::EINVAL));
        }
        crate::filter::check_filter(ch.filter)?;
        if Self::is_fd_filter(ch.filter) {
            // READ/WRITE: the fd filter checks, with the syscall the change needs anyway, that an existing
            // knote's fd still names the file it was made for.
            return crate::filter::fd::change(self, ch);
        }
        let slot = match self.lookup(ch.ident, ch.filter) {
            Some(s) => {
                if ch.flags & EV_DELETE == 0 {
                    // BSD: udata is replaced by every change; fflags/data by EV_ADD (EVFILT_USER: always).
                    if ch.flags & EV_ADD != 0 || ch.filter == EVFILT_USER {
                        crate::filter::modify(self, s, ch)?;
                    } else if let Some(k) = self.knotes.get_mut(s) {
                        k.udata = ch.udata;
                    }
                }
                s
            }
            None => {
                if ch.flags & EV_ADD == 0 {
                    return Err(errno(libc::ENOENT));
                }
                crate::filter::attach(self, ch)?
            }
        };
        self.finish_change(slot, ch)
    }

    /// What every change does after its filter's part: EV_DELETE, EV_DISABLE, EV_ENABLE, then effects that
    /// come after them (EVFILT_USER's NOTE_TRIGGER takes effect after an EV_ENABLE in the same change).
    pub(crate) fn finish_change(&mut self, slot: u32, ch: &Kevent) -> Result<()> {
        if ch.flags & EV_DELETE != 0 {
            return self.delete(slot);
        }
        if ch.flags & EV_DISABLE != 0 {
            self.set_enabled(slot, false)?;
        }
        if ch.flags & EV_ENABLE != 0 {
            self.set_enabled(slot, true)?;
        }
        crate::filter::after_change(self, slot, ch);
        Ok(())
    }

    /// Inserts a new knote and indexes it.
    pub(crate) fn insert(&mut self, k: Knote) -> u32 {
        let (ident, filter) = (k.ident, k.filter);
        let s = self.knotes.insert(k);
        if Self::is_fd_filter(filter) {
            let e = crate::filter::fd::entry_mut(self, ident as RawFd);
            if filter == EVFILT_READ {
                e.read = s + 1;
            } else {
                e.write = s + 1;
            }
        } else {
            self.index.insert(ident, filter, s, &self.knotes);
        }
        s
    }

    /// Removes a knote (EV_DELETE, EV_ONESHOT after its report, or a closed fd).
    pub(crate) fn delete(&mut self, slot: u32) -> Result<()> {
        let Some(k) = self.knotes.remove(slot) else { return Err(errno(libc::ENOENT)) };
        if k.queued {
            self.queued_live -= 1;
            self.settle_kick();
        }
        if Self::is_fd_filter(k.filter) {
            if let Some(e) = self.fdtab.get_mut(k.ident) {
                if k.filter == EVFILT_READ {
                    e.read = 0;
                } else {
                    e.write = 0;
                }
            }
        } else {
            self.index.remove(k.ident, k.filter, slot, &self.knotes);
        }
        crate::filter::detach(self, &k)
    }

    /// Removes the only knote of `fd`, whose registration the caller already removed (the fast EV_DELETE).
    pub(crate) fn unlink_fd_knote(&mut self, slot: u32, fd: RawFd) {
        let Some(k) = self.knotes.remove(slot) else { return };
        if k.queued {
            self.queued_live -= 1;
            self.settle_kick();
        }
        if let Some(e) = self.fdtab.get_mut(fd as usize) {
            *e = FdEntry { gen: e.gen, ..FdEntry::EMPTY };
        }
    }

    pub(crate) fn set_enabled(&mut self, slot: u32, on: bool) -> Result<()> {
        let Some(k) = self.knotes.get_mut(slot) else { return Ok(()) };
        if k.enabled == on {
            return Ok(());
        }
        k.enabled = on;
        if !on {
            self.unqueue(slot);
        }
        crate::filter::enabled_changed(self, slot, on)
    }

    /// Takes a knote off the active queue (lazily: its entry is skipped later).
    pub(crate) fn unqueue(&mut self, slot: u32) {
        if let Some(k) = self.knotes.get_mut(slot) {
            if k.queued {
                k.queued = false;
                self.queued_live -= 1;
                self.settle_kick();
            }
        }
    }

    /// Nothing live on the active queue: forget its stale entries and reset the kick.
    fn settle_kick(&mut self) {
        if self.queued_live == 0 {
            self.active.clear();
            self.active_hint.store(false, Ordering::Release);
            // (Resetting a timer-source kick also looks at the timers, which may queue some again.)
            source::kick_off(self);
        }
    }

    /// The kick reflects the active queue (after a deferred apply, or a drain that left knotes queued).
    fn flush_kick(&mut self) {
        if self.queued_live > 0 {
            source::kick_on(self);
        }
    }

    /// Puts a knote on the active queue (once) and makes sure the kick is readable.
    pub(crate) fn enqueue(&mut self, slot: u32) {
        let gen = self.knotes.gen(slot);
        let Some(k) = self.knotes.get_mut(slot) else { return };
        if k.queued || !k.enabled {
            return;
        }
        k.queued = true;
        self.queued_live += 1;
        self.active.push_back((slot, gen));
        self.active_hint.store(true, Ordering::Release);
        if !self.defer_kick {
            source::kick_on(self);
        }
    }

    /// Turns epoll reports into events written to `out` from index `n`; returns the new count.
    #[inline(always)]
    fn harvest(&mut self, evs: &[sys::EpollEvent], out: &mut [Kevent], mut n: usize, drain: bool) -> usize {
        for ev in evs {
            let (tok, revents) = (ev.u64, ev.events);
            if tok & TAG_KNOTE == 0 {
                let fd = tok as u32 as RawFd;
                let gen = (tok >> 32) as u32;
                crate::filter::fd::fd_ready(self, fd, gen, revents, out, &mut n);
                continue;
            }
            match tok {
                TOKEN_KICK | TOKEN_RETIRED | TOKEN_DEAD | TOKEN_INNER => {}
                TOKEN_SOURCE | TOKEN_RT => source::ready(self, tok),
                t if crate::filter::owns_token(t) => crate::filter::token_ready(self, t),
                t => {
                    let slot = t as u32;
                    let gen = ((t >> 32) & 0x7fff_ffff) as u32;
                    if self.knotes.gen(slot) != gen {
                        self.stats.stale_events += 1;
                        continue;
                    }
                    crate::filter::knote_ready(self, slot, revents, out, &mut n);
                }
            }
        }
        if drain {
            self.drain_active(out, &mut n);
        } else {
            self.flush_kick(); // the kick's edge may have been taken: the kqueue fd must stay readable
        }
        n
    }

    /// See `Kqueue::pending_count`.
    fn pending_count(&mut self) -> usize {
        let mut buf = sys::EventBuf::<256>::new();
        let Ok(_) = buf.wait(self.ep, sys::EventBuf::<256>::LEN, Some(0)) else { return self.queued_live };
        let mut level = 0;
        for ev in buf.events() {
            if ev.u64 & TAG_KNOTE == 0 {
                level += crate::filter::fd::level_ready(self, ev.u64 as u32 as RawFd, (ev.u64 >> 32) as u32, ev.events);
            }
        }
        self.next_seq();
        self.harvest(buf.events(), &mut [], 0, false);
        level + self.queued_live
    }

    /// Reports what the active queue holds, at most once per knote per call.
    #[inline(always)]
    fn drain_active(&mut self, out: &mut [Kevent], n: &mut usize) {
        if self.queued_live == 0 && self.active.is_empty() && !self.src.kicked {
            return; // nothing queued and no kick to reset: what settle_kick would find (the common poll)
        }
        self.drain_queued(out, n);
    }

    #[inline(never)]
    fn drain_queued(&mut self, out: &mut [Kevent], n: &mut usize) {
        let mut todo = self.active.len();
        while todo > 0 && *n < out.len() {
            todo -= 1;
            let Some((slot, gen)) = self.active.pop_front() else { break };
            if self.knotes.gen(slot) != gen {
                continue;
            }
            let seq = self.seq;
            match self.knotes.get_mut(slot) {
                Some(k) if k.queued && k.enabled && k.seen == seq => {
                    // already reported in this call: look again in the next one
                    self.active.push_back((slot, gen));
                    continue;
                }
                Some(k) if k.queued && k.enabled => {
                    k.queued = false;
                    self.queued_live -= 1;
                }
                _ => continue,
            }
            crate::filter::active_ready(self, slot, out, n);
        }
        self.settle_kick();
        self.flush_kick();
    }

    /// Writes an event for `slot` and applies EV_ONESHOT / EV_DISPATCH. With no room, the knote is kept on
    /// the active queue for the next call. Returns whether it was written.
    #[inline]
    pub(crate) fn emit(&mut self, slot: u32, kev: Kevent, out: &mut [Kevent], n: &mut usize) -> bool {
        if *n >= out.len() {
            self.enqueue(slot);
            return false;
        }
        out[*n] = if self.libkqueue_flags { Kevent { flags: kev.flags | EV_ADD, ..kev } } else { kev };
        *n += 1;
        let seq = self.seq;
        if let Some(k) = self.knotes.get_mut(slot) {
            k.seen = seq;
        }
        if kev.flags & EV_ONESHOT != 0 {
            let _ = self.delete(slot);
        } else if kev.flags & EV_DISPATCH != 0 {
            let _ = self.set_enabled(slot, false);
        }
        true
    }

    /// The event a knote reports, with its sticky flags.
    #[inline]
    pub(crate) fn event_of(k: &Knote, extra_flags: u16, fflags: u32, data: isize) -> Kevent {
        Kevent { ident: k.ident, filter: k.filter, flags: k.flags | extra_flags, fflags, data, udata: k.udata }
    }

    /// Every registration this kqueue has in its epoll, as (fd, events, token): its own fds, then the
    /// filters' (fd knotes' registrations are moved separately, each checked to still name its file).
    fn own_registrations(&self) -> Vec<(RawFd, u32, u64)> {
        let mut v: Vec<(RawFd, u32, u64)> = self.src.registrations().collect();
        v.extend(crate::filter::registrations(self));
        v
    }

    /// Moves every live registration to a fresh inner epoll, so one that can no longer be removed (its fd
    /// was closed or reused while a dup() keeps the file open) stays behind. The first time, the kqueue fd
    /// itself held them: the stuck one stays in it (so the kqueue fd may poll readable for it, a known
    /// gap) but kevent() now waits on the inner epoll and never spins on it. Later, the old inner epoll is
    /// retired whole. Threads still waiting on a retired epoll are woken by an eventfd left readable in it.
    /// Fds found closed or reused lose their knotes, as on BSD.
    pub(crate) fn rebuild(&mut self) {
        self.needs_rebuild = false;
        let Ok(new) = sys::epoll_create() else { return };
        let own = self.own_registrations();
        let mut ok = own.iter().all(|&(fd, ev, tok)| sys::epoll_add(new, fd, ev, tok).is_ok());
        let old = self.ep;
        let mut gone = Vec::new();
        let mut moved = Vec::new();
        if ok {
            for (fd, e) in self.fdtab.iter().enumerate() {
                if e.reg != FdReg::Epoll || e.mask == 0 {
                    continue;
                }
                let (fd, tok) = (fd as RawFd, token(fd as u32, e.gen));
                // Only if the fd still names the file registered in the old epoll (a MOD there fails
                // otherwise): its number may have been closed and reused by a file this kqueue never saw.
                if sys::epoll_mod(old, fd, e.mask, tok).is_err() {
                    gone.push(fd);
                } else if sys::epoll_add(new, fd, e.mask, tok).is_ok() {
                    moved.push(fd);
                } else {
                    gone.push(fd);
                }
            }
        }
        ok = ok && sys::epoll_add(self.kq, new, sys::EPOLLIN, TOKEN_INNER).is_ok();
        if !ok {
            sys::close(new);
            return;
        }
        if old == self.kq {
            // Out of the kqueue fd with everything that can still be removed.
            for &(fd, _, _) in &own {
                let _ = sys::epoll_del(old, fd);
            }
            for &fd in &moved {
                let _ = sys::epoll_del(old, fd);
            }
            for &fd in &gone {
                let _ = sys::epoll_del(old, fd);
            }
        } else {
            let _ = sys::epoll_del(self.kq, old);
            if let Ok(w) = sys::eventfd() {
                let _ = sys::eventfd_write(w, 1);
                let _ = sys::epoll_add(old, w, sys::EPOLLIN, TOKEN_RETIRED);
                self.retired.push((old, w));
            } else {
                self.retired.push((old, -1));
            }
        }
        self.ep = new;
        self.stats.rebuilds += 1;
        for fd in gone {
            // closed, or now another file (EPERM: one epoll refuses): its knotes went with the old file
            self.purge_fd(fd);
        }
    }

    /// Drops every knote of `fd` without touching the fd (it was closed or now names another file).
    pub(crate) fn purge_fd(&mut self, fd: RawFd) {
        let Some(e) = self.fdtab.get_mut(fd as usize) else { return };
        // Never DEL through an fd number that names another file now.
        e.mask = 0;
        let (r, w) = (e.read, e.write);
        for s in [r, w] {
            if s != 0 {
                let _ = self.delete(s - 1);
            }
        }
        if let Some(e) = self.fdtab.get_mut(fd as usize) {
            let gen = e.gen.wrapping_add(1);
            *e = FdEntry { gen, ..FdEntry::EMPTY };
        }
    }
}

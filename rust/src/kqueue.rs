//! The kqueue: one epoll instance whose fd is the kqueue's fd, a kick eventfd for the active queue and
//! for close(), and the knote table behind a mutex that is never held while blocking.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, RwLock};
use std::time::Duration;

use crate::consts::*;
use crate::kevent::Kevent;
use crate::knote::{ActiveQueue, FdEntry, FdReg, IdMap, Kind, Knote, Slab};
use crate::sys::{self, Errno, RawFd, Result};

/// epoll token of the kick eventfd.
pub(crate) const TOKEN_KICK: u64 = u64::MAX;
/// epoll token of the kqueue's inotify instance.
pub(crate) const TOKEN_INOTIFY: u64 = u64::MAX - 1;
/// epoll token of the eventfd that wakes threads still waiting on a retired inner epoll.
pub(crate) const TOKEN_RETIRED: u64 = u64::MAX - 2;
/// epoll token of the kqueue's process-connector socket.
pub(crate) const TOKEN_CONNECTOR: u64 = u64::MAX - 3;
/// epoll token of the process-wide signal eventfd.
pub(crate) const TOKEN_SIGNAL: u64 = u64::MAX - 4;
/// epoll token of /proc/self/mountinfo (NOTE_REVOKE: a watched file's filesystem was unmounted).
pub(crate) const TOKEN_MOUNTS: u64 = u64::MAX - 5;
/// Tokens with this bit name a knote slot (timers); without it, an fd.
pub(crate) const TAG_KNOTE: u64 = 1 << 63;

pub(crate) fn token(index: u32, gen: u32) -> u64 {
    index as u64 | ((gen as u64 & 0x7fff_ffff) << 32)
}

static FORK_GEN: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn on_fork_child() {
    // Async-signal-safe: atomics and close(2) only. Every kqueue of the parent reads as closed from now
    // on, and its fds (and every other fd kqrs made) are closed, so their numbers are free in the child.
    FORK_GEN.fetch_add(1, Ordering::SeqCst);
    sys::close_owned_in_child();
    sys::signals_reset_in_child();
}

/// The fork generation of this process: bumped in every child after fork().
pub fn fork_generation() -> u64 {
    FORK_GEN.load(Ordering::Relaxed)
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
    /// Times the inner epoll was rebuilt to shed registrations of closed fds.
    pub rebuilds: u64,
    /// Process-connector messages ignored: not from the kernel, or malformed.
    pub forged_messages: u64,
}

/// Mutable state of one kqueue; only touched with the mutex held.
pub(crate) struct State {
    /// The inner epoll, where every registration lives.
    pub epfd: RawFd,
    /// The outer epoll (the kqueue's fd), which holds only the inner one.
    pub outer: RawFd,
    /// Inner epolls replaced by `rebuild`, each with the eventfd that keeps it readable, kept open until
    /// no thread can still be waiting on them.
    pub retired: Vec<(RawFd, RawFd)>,
    /// An event came from a registration that can no longer be removed (its fd was closed or reused
    /// while a dup() kept the file open): rebuild the inner epoll before the next wait.
    pub needs_rebuild: bool,
    /// The last stale token seen (a stuck registration shows up twice in a row).
    pub last_stale: u64,
    pub kick: RawFd,
    pub kicked: bool,
    pub knotes: Slab,
    pub fdtab: Vec<FdEntry>,
    pub index: IdMap<(usize, i16), u32>,
    pub active: ActiveQueue,
    /// Knotes on the active queue that are still live (`queued`); at 0 the kick is reset at once, so the
    /// kqueue fd stops polling readable as soon as nothing is pending.
    pub queued_live: usize,
    /// Mirrors `queued_live > 0` for readers without the lock (collect's fast check before it waits).
    pub active_hint: Arc<AtomicBool>,
    /// Set while applying changes whose caller collects right after: a trigger then need not write the
    /// kick for itself (the collect drains the active queue anyway); leftovers get it after the drain.
    pub defer_kick: bool,
    pub inotify: RawFd,
    /// The process-connector socket, opened by the first knote that needs NOTE_FORK/EXEC/TRACK.
    pub connector: RawFd,
    /// Its receive buffer, kept between wake-ups.
    pub connector_buf: Vec<u8>,
    /// The process-wide signal eventfd is registered in this kqueue's epoll.
    pub sig_wake_registered: bool,
    /// /proc/self/mountinfo, opened by the first vnode knote that asks for NOTE_REVOKE.
    pub mounts: RawFd,
    pub wds: IdMap<i32, Vec<u32>>,
    pub stats: Stats,
    /// Number of the current collect call; a knote whose `seen` equals it was reported in this call.
    pub seq: u64,
}

/// A kqueue.
///
/// Its fd is an epoll instance (the *outer* one) that holds exactly one thing: the *inner* epoll, where the
/// registrations live and where kevent() waits. External pollers see the outer fd readable exactly when
/// the inner one has something ready. The split lets kqrs replace the inner epoll wholesale (`rebuild`)
/// when a registration can no longer be removed, without changing the kqueue's fd or breaking anyone
/// who polls it.
pub struct Kqueue {
    outer: RawFd,
    inner: AtomicI32,
    /// Retired inner epolls are waiting to be closed (see `rebuild`).
    has_retired: AtomicBool,
    /// The number of knotes, as of the last change (read without the lock to size output buffers).
    knotes_hint: AtomicUsize,
    /// Something is on the active queue (shared with the state; see `State::active_hint`).
    active_hint: Arc<AtomicBool>,
    kick: RawFd,
    fork_gen: u64,
    closed: AtomicBool,
    /// Read-held by every call for its whole length (including the blocking wait); close() takes it for
    /// writing before the fds are closed, so no thread can be waiting on a closed (or reused) fd number.
    users: RwLock<()>,
    state: Mutex<State>,
}

fn errno(e: i32) -> Errno {
    Errno(e)
}

impl Kqueue {
    /// Creates a kqueue: its epoll instances and its kick eventfd, all close-on-exec.
    pub fn new() -> Result<Kqueue> {
        let outer = sys::epoll_create()?;
        Self::adopt(outer).inspect_err(|_| sys::close(outer))
    }

    /// Makes a kqueue whose fd is the existing epoll instance `outer`, which it then owns (fails with
    /// EINVAL when `outer` is not an epoll fd; the fd is left open then).
    pub fn adopt(outer: RawFd) -> Result<Kqueue> {
        ATFORK.call_once(|| {
            let _ = sys::atfork_child(on_fork_child);
        });
        if !sys::fd_is_open(outer) {
            return Err(errno(libc::EBADF));
        }
        let inner = sys::epoll_create()?;
        let kick = match sys::eventfd() {
            Ok(k) => k,
            Err(e) => {
                sys::close(inner);
                return Err(e);
            }
        };
        let r = sys::epoll_add(inner, kick, sys::EPOLLIN, TOKEN_KICK)
            .and_then(|_| sys::epoll_add(outer, inner, sys::EPOLLIN, 0));
        if let Err(e) = r {
            sys::close(kick);
            sys::close(inner);
            return Err(e);
        }
        sys::track(outer);
        let state = State { epfd: inner, outer, kick, ..State::empty() };
        let active_hint = state.active_hint.clone();
        Ok(Kqueue {
            outer,
            inner: AtomicI32::new(inner),
            has_retired: AtomicBool::new(false),
            knotes_hint: AtomicUsize::new(0),
            active_hint,
            kick,
            fork_gen: fork_generation(),
            closed: AtomicBool::new(false),
            users: RwLock::new(()),
            state: Mutex::new(state),
        })
    }

    /// The kqueue's fd (its epoll fd): pollable, readable exactly when an event is pending.
    pub fn fd(&self) -> RawFd {
        self.outer
    }

    /// Closed by close(), or inherited across fork() (a kqueue is not inherited).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.fork_gen != fork_generation()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves the table consistent enough to go on (every mutation is
        // completed before anything that may fail), so a poisoned lock is taken over, not propagated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the kqueue: wakes every thread blocked in it (they return EBADF), then closes its fds.
    /// Closing twice is fine. In a forked child it only marks the kqueue closed.
    pub fn close(&self) {
        if self.fork_gen != fork_generation() {
            self.closed.store(true, Ordering::Release);
            return;
        }
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake every waiter; the kick is never drained once closed.
        let _ = sys::eventfd_write(self.kick, 1);
        let _w = self.users.write().unwrap_or_else(|p| p.into_inner());
        let mut st = self.lock();
        st.close_all();
    }

    /// kevent(2): applies `changes` in order, then (unless a change produced an entry) collects pending
    /// events into `events`, waiting up to `timeout` (None = forever). EINTR is retried with the time left.
    pub fn kevent(&self, changes: &[Kevent], events: &mut [Kevent], timeout: Option<Duration>) -> Result<usize> {
        let wait = Wait::after(timeout);
        let n = if changes.is_empty() { 0 } else { self.apply_then_collect(changes, events)? };
        if n > 0 || events.is_empty() {
            return Ok(n);
        }
        loop {
            match self.collect(events, wait) {
                Err(Errno(libc::EINTR)) => continue,
                r => return r,
            }
        }
    }

    /// Applies `changes`; returns how many EV_ERROR / EV_RECEIPT entries were written to `events`. A
    /// failing change with no room left makes the call fail with its errno (later changes are not applied).
    pub fn apply(&self, changes: &[Kevent], events: &mut [Kevent]) -> Result<usize> {
        let _u = self.enter()?;
        if changes.is_empty() {
            return Ok(0);
        }
        let mut st = self.lock();
        let r = Self::apply_locked(&mut st, changes, events);
        self.knotes_hint.store(st.knotes.len(), Ordering::Relaxed);
        r
    }

    /// `apply` for a caller that collects right after (with the same `events`) when this returns 0: a
    /// knote a change makes ready is left for that collect instead of waking other threads through the
    /// kick (which would cost a write now and a read in the collect).
    pub fn apply_then_collect(&self, changes: &[Kevent], events: &mut [Kevent]) -> Result<usize> {
        let _u = self.enter()?;
        if changes.is_empty() {
            return Ok(0);
        }
        let mut st = self.lock();
        st.defer_kick = !events.is_empty();
        let r = Self::apply_locked(&mut st, changes, events);
        st.defer_kick = false;
        if !matches!(r, Ok(0)) || events.is_empty() {
            // No collect follows: whatever is queued must be visible to others now.
            st.flush_kick();
        }
        self.knotes_hint.store(st.knotes.len(), Ordering::Relaxed);
        r
    }

    fn apply_locked(st: &mut State, changes: &[Kevent], events: &mut [Kevent]) -> Result<usize> {
        let mut n = 0;
        for ch in changes {
            let r = st.apply_one(ch);
            let receipt = ch.flags & EV_RECEIPT != 0;
            if r.is_ok() && !receipt {
                continue;
            }
            if n >= events.len() {
                // No room for the entry: FreeBSD stops here, failing with the errno (or returning what
                // it has, for a receipt); the remaining changes are not applied.
                return r.map(|()| n);
            }
            let mut e = *ch;
            e.flags = EV_ERROR;
            e.data = match r {
                Ok(()) => 0,
                Err(Errno(x)) => x as isize,
            };
            events[n] = e;
            n += 1;
        }
        Ok(n)
    }

    /// Waits for and collects pending events into `events` as `wait` says. Returns 0 only once the
    /// deadline has passed (at once for `Wait::Poll`). Returns EINTR to the caller.
    pub fn collect(&self, events: &mut [Kevent], wait: Wait) -> Result<usize> {
        let r = self.collect_in(events, wait);
        if self.has_retired.load(Ordering::Acquire) {
            self.close_retired();
        }
        r
    }

    /// Closes inner epolls replaced by a rebuild once no thread can be waiting on them: every waiter
    /// read-holds `users`, so getting it for writing proves there is none.
    #[cold]
    fn close_retired(&self) {
        let Ok(_w) = self.users.try_write() else { return };
        if self.is_closed() {
            return;
        }
        let mut st = self.lock();
        for (ep, w) in st.retired.drain(..) {
            sys::close(w);
            sys::close(ep);
        }
        self.has_retired.store(false, Ordering::Release);
    }

    fn collect_in(&self, events: &mut [Kevent], wait: Wait) -> Result<usize> {
        let _u = self.enter()?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut buf = sys::EventBuf::new();
        let want = events.len().min(sys::EventBuf::LEN);
        let mut got = 0;
        let mut first = true;
        let mut reparked = false;
        let mut once_more = false;
        let mut extra_passes = 0;
        loop {
            // Knotes already on the active queue (e.g. triggered by this very call's changes): look now.
            let pending = self.active_hint.load(Ordering::Acquire);
            let timeout = match wait {
                _ if got > 0 || once_more || pending => Some(0),
                Wait::Poll => Some(0),
                Wait::Forever => None,
                Wait::Until(d) => Some(d.saturating_sub(sys::clock_ns(false))),
            };
            let ep = self.inner.load(Ordering::Acquire);
            let r = buf.wait(ep, want, timeout).map(|evs| evs.len());
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
            if self.is_closed() {
                return Err(errno(libc::EBADF));
            }
            let before = got;
            let parked;
            {
                let mut st = self.lock();
                let parks_before = st.stats.parks;
                if first {
                    // A new call: knotes reported from here on are reported once in it.
                    st.seq = st.seq.wrapping_add(1);
                    first = false;
                }
                got = st.harvest(buf.events(n), events, got);
                self.knotes_hint.store(st.knotes.len(), Ordering::Relaxed);
                parked = st.stats.parks != parks_before;
                if got == before && n > 0 {
                    st.stats.absorbed_wakeups += 1;
                }
                if st.needs_rebuild {
                    st.rebuild();
                    self.inner.store(st.epfd, Ordering::Release);
                    self.has_retired.store(true, Ordering::Release);
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
                if got == events.len() || n < want || got == before {
                    return Ok(got);
                }
                continue;
            }
            if n == want && extra_passes < 4 {
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

    fn enter(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>> {
        if self.is_closed() {
            return Err(errno(libc::EBADF));
        }
        let g = self.users.read().unwrap_or_else(|p| p.into_inner());
        if self.is_closed() {
            return Err(errno(libc::EBADF));
        }
        Ok(g)
    }

    /// Number of knotes registered as of the last change, read without taking the lock (a hint: another
    /// thread may be changing it).
    pub fn knote_count_hint(&self) -> usize {
        self.knotes_hint.load(Ordering::Relaxed)
    }

    /// Number of knotes registered.
    pub fn knote_count(&self) -> usize {
        if self.is_closed() {
            return 0;
        }
        self.lock().knotes.len()
    }

    /// Counters of absorbed wake-ups and stale events.
    pub fn stats(&self) -> Stats {
        if self.is_closed() {
            return Stats::default();
        }
        self.lock().stats
    }
}

impl Drop for Kqueue {
    fn drop(&mut self) {
        if self.fork_gen != fork_generation() {
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
        // &mut self: no other thread can hold the lock.
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        st.close_all();
    }
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
}

impl State {
    /// A state that owns nothing (all fds -1).
    fn empty() -> State {
        State {
            epfd: -1,
            outer: -1,
            retired: Vec::new(),
            needs_rebuild: false,
            last_stale: 0,
            kick: -1,
            kicked: false,
            knotes: Slab::default(),
            fdtab: Vec::new(),
            index: IdMap::default(),
            active: ActiveQueue::new(),
            queued_live: 0,
            active_hint: Arc::new(AtomicBool::new(false)),
            defer_kick: false,
            inotify: -1,
            connector: -1,
            connector_buf: Vec::new(),
            sig_wake_registered: false,
            mounts: -1,
            wds: IdMap::default(),
            stats: Stats::default(),
            seq: 1,
        }
    }

    fn close_all(&mut self) {
        for (_, k) in self.knotes.iter_slots() {
            match k.kind {
                Kind::Timer { tfd, .. } => sys::close(tfd),
                Kind::Proc { pidfd, .. } if pidfd >= 0 => sys::close(pidfd),
                Kind::Signal { sig, .. } => sys::signal_unref(sig),
                _ => {}
            }
        }
        self.knotes = Slab::default();
        self.fdtab = Vec::new();
        self.index.clear();
        self.active.clear();
        self.queued_live = 0;
        self.active_hint.store(false, Ordering::Release);
        self.wds.clear();
        if self.inotify >= 0 {
            sys::close(self.inotify);
            self.inotify = -1;
        }
        if self.connector >= 0 {
            sys::close(self.connector);
            self.connector = -1;
        }
        if self.mounts >= 0 {
            sys::close(self.mounts);
            self.mounts = -1;
        }
        if self.kick >= 0 {
            sys::close(self.kick);
            self.kick = -1;
        }
        for (ep, w) in self.retired.drain(..) {
            sys::close(w);
            sys::close(ep);
        }
        if self.epfd >= 0 {
            sys::close(self.epfd);
            self.epfd = -1;
        }
        if self.outer >= 0 {
            sys::close(self.outer);
            self.outer = -1;
        }
    }

    fn is_fd_filter(filter: i16) -> bool {
        filter == EVFILT_READ || filter == EVFILT_WRITE
    }

    /// Finds the knote for (ident, filter).
    pub(crate) fn lookup(&self, ident: usize, filter: i16) -> Option<u32> {
        if Self::is_fd_filter(filter) {
            let e = self.fdtab.get(ident)?;
            let s = if filter == EVFILT_READ { e.read } else { e.write };
            s.checked_sub(1)
        } else {
            self.index.get(&(ident, filter)).copied()
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
        if Self::is_fd_filter(ch.filter) && ch.ident > i32::MAX as usize {
            return Err(errno(libc::EBADF));
        }
        let mut slot = self.lookup(ch.ident, ch.filter);
        if slot.is_some() && Self::is_fd_filter(ch.filter) {
            // An existing knote on an fd: is it still the file it was made for? (BSD removes knotes at
            // close; we find out here.)
            let fd = ch.ident as RawFd;
            if !sys::fd_is_open(fd) {
                self.purge_fd(fd);
                return Err(errno(libc::EBADF));
            }
            if !self.fd_still_same(fd)? {
                // The number names another file now: the old knotes went with the old file. EV_ADD
                // starts clean; any other change finds no knote.
                self.purge_fd(fd);
                if ch.flags & EV_ADD == 0 {
                    return Err(errno(libc::ENOENT));
                }
                slot = None;
            }
        }
        let slot = match slot {
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
                    if Self::is_fd_filter(ch.filter) && !sys::fd_is_open(ch.ident as RawFd) {
                        return Err(errno(libc::EBADF));
                    }
                    return Err(errno(libc::ENOENT));
                }
                crate::filter::attach(self, ch)?
            }
        };
        if ch.flags & EV_DELETE != 0 {
            return self.delete(slot);
        }
        if ch.flags & EV_DISABLE != 0 {
            self.set_enabled(slot, false)?;
        }
        if ch.flags & EV_ENABLE != 0 {
            self.set_enabled(slot, true)?;
        }
        // EVFILT_USER's NOTE_TRIGGER takes effect after an EV_ENABLE in the same change.
        crate::filter::after_change(self, slot, ch);
        Ok(())
    }

    /// Inserts a new knote and indexes it.
    pub(crate) fn insert(&mut self, k: Knote) -> u32 {
        let (ident, filter) = (k.ident, k.filter);
        let s = self.knotes.insert(k);
        if Self::is_fd_filter(filter) {
            if self.fdtab.len() <= ident {
                self.fdtab.resize(ident + 1, FdEntry::EMPTY);
            }
            let e = &mut self.fdtab[ident];
            if filter == EVFILT_READ {
                e.read = s + 1;
            } else {
                e.write = s + 1;
            }
        } else {
            self.index.insert((ident, filter), s);
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
            self.index.remove(&(k.ident, k.filter));
        }
        crate::filter::detach(self, &k)
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
            self.kick_off();
            self.active_hint.store(false, Ordering::Release);
        }
    }

    /// The kick reflects the active queue (after a deferred apply, or a drain that left knotes queued).
    fn flush_kick(&mut self) {
        if self.queued_live > 0 {
            self.kick_on();
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
            self.kick_on();
        }
    }

    fn kick_on(&mut self) {
        if !self.kicked && self.kick >= 0 {
            self.kicked = sys::eventfd_write(self.kick, 1).is_ok();
        }
    }

    fn kick_off(&mut self) {
        if self.kicked {
            let _ = sys::read_u64(self.kick);
            self.kicked = false;
        }
    }

    /// Turns epoll reports into events written to `out` from index `n`; returns the new count.
    fn harvest(&mut self, evs: &[sys::EpollEvent], out: &mut [Kevent], mut n: usize) -> usize {
        for ev in evs {
            let (tok, revents) = (ev.u64, ev.events);
            match tok {
                TOKEN_KICK | TOKEN_RETIRED => {}
                TOKEN_INOTIFY => crate::filter::fd::inotify_ready(self),
                TOKEN_CONNECTOR => crate::filter::proc::connector_ready(self),
                TOKEN_SIGNAL => crate::filter::signal::wake(self),
                TOKEN_MOUNTS => crate::filter::vnode::mounts_changed(self),
                t if t & TAG_KNOTE != 0 => {
                    let slot = t as u32;
                    let gen = ((t >> 32) & 0x7fff_ffff) as u32;
                    if self.knotes.gen(slot) != gen {
                        self.stats.stale_events += 1;
                        continue;
                    }
                    crate::filter::knote_ready(self, slot, revents, out, &mut n);
                }
                t => {
                    let fd = t as u32 as RawFd;
                    let gen = (t >> 32) as u32;
                    crate::filter::fd::fd_ready(self, fd, gen, revents, out, &mut n);
                }
            }
        }
        self.drain_active(out, &mut n);
        n
    }

    /// Reports what the active queue holds, at most once per knote per call.
    fn drain_active(&mut self, out: &mut [Kevent], n: &mut usize) {
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
    pub(crate) fn emit(&mut self, slot: u32, kev: Kevent, out: &mut [Kevent], n: &mut usize) -> bool {
        if *n >= out.len() {
            self.enqueue(slot);
            return false;
        }
        out[*n] = kev;
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
    pub(crate) fn event_of(k: &Knote, extra_flags: u16, fflags: u32, data: isize) -> Kevent {
        Kevent { ident: k.ident, filter: k.filter, flags: k.flags | extra_flags, fflags, data, udata: k.udata }
    }

    /// Whether `fd` still names the file its knotes were registered for (only knowable for epoll ones).
    fn fd_still_same(&mut self, fd: RawFd) -> Result<bool> {
        crate::filter::fd::still_same(self, fd)
    }

    /// Replaces the inner epoll with a fresh one holding every live registration, so a registration
    /// that can no longer be removed (its fd closed or reused while a dup() keeps the file open) is gone
    /// with the old one. Fds that turn out closed or reused lose their knotes, as on BSD. Threads still
    /// waiting on the old epoll are woken by an eventfd left readable in it.
    pub(crate) fn rebuild(&mut self) {
        self.needs_rebuild = false;
        let Ok(new) = sys::epoll_create() else { return };
        let mut ok = sys::epoll_add(new, self.kick, sys::EPOLLIN, TOKEN_KICK).is_ok();
        if ok && self.inotify >= 0 {
            ok = sys::epoll_add(new, self.inotify, sys::EPOLLIN, TOKEN_INOTIFY).is_ok();
        }
        if ok && self.connector >= 0 {
            ok = sys::epoll_add(new, self.connector, sys::EPOLLIN, TOKEN_CONNECTOR).is_ok();
        }
        if ok && self.mounts >= 0 {
            ok = sys::epoll_add(new, self.mounts, sys::EPOLLPRI | sys::EPOLLERR, TOKEN_MOUNTS).is_ok();
        }
        if ok && self.sig_wake_registered {
            ok = sys::signal_wake_fd()
                .and_then(|fd| sys::epoll_add(new, fd, sys::EPOLLIN | sys::EPOLLET, TOKEN_SIGNAL))
                .is_ok();
        }
        if ok {
            for (pidfd, tok) in crate::filter::proc::registrations(self) {
                ok &= sys::epoll_add(new, pidfd, sys::EPOLLIN, tok).is_ok();
            }
        }
        if ok {
            for (slot, k) in self.knotes.iter_slots() {
                if let Kind::Timer { tfd, .. } = k.kind {
                    let ev = if k.enabled { sys::EPOLLIN } else { 0 };
                    ok &= sys::epoll_add(new, tfd, ev, TAG_KNOTE | token(slot, self.knotes.gen(slot))).is_ok();
                }
            }
        }
        if !ok || sys::epoll_add(self.outer, new, sys::EPOLLIN, 0).is_err() {
            sys::close(new);
            return;
        }
        let old = self.epfd;
        let mut gone = Vec::new();
        for (fd, e) in self.fdtab.iter().enumerate() {
            if e.reg != FdReg::Epoll || e.mask == 0 {
                continue;
            }
            let (fd, tok) = (fd as RawFd, token(fd as u32, e.gen));
            // Only if the fd still names the file registered in the old epoll (a MOD there fails
            // otherwise): its number may have been closed and reused by a file this kqueue never saw.
            if sys::epoll_mod(old, fd, e.mask, tok).is_err() || sys::epoll_add(new, fd, e.mask, tok).is_err() {
                gone.push(fd);
            }
        }
        let _ = sys::epoll_del(self.outer, old);
        self.epfd = new;
        if let Ok(w) = sys::eventfd() {
            let _ = sys::eventfd_write(w, 1);
            let _ = sys::epoll_add(old, w, sys::EPOLLIN, TOKEN_RETIRED);
            self.retired.push((old, w));
        } else {
            self.retired.push((old, -1));
        }
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

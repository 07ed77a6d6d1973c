//! The C face: libkqueue's ABI (`kqueue()`, `kevent()`, `libkqueue_drain_pending_close()`) on the same engine
//! the Python face uses, through the same `Kqueue::kevent_once`. Built with the `capi` feature into
//! `libkqueue.so.0` / `libkqueue.a` (scripts/build-capi.sh); the header is capi/include/sys/event.h.
//!
//! C code closes a kqueue with close(2), which kqrs does not see. Each kqueue made here keeps a private
//! duplicate of its fd; the next `kqueue()` or `libkqueue_drain_pending_close()` call (and a `kevent()` whose
//! wait or change fails with EBADF) compares every kqueue's fd with its duplicate (kcmp), and frees those
//! whose fd was closed or now names another file: no thread, and a reused number is never mistaken for the
//! old kqueue. The kqueue fd itself is not closed in a fork child (it may be the caller's by then); the
//! kqueue reads closed there, and every call on it fails with EBADF.
//!
//! Bad input never crashes: a negative count is EINVAL, a pointer the kernel cannot read or write EFAULT
//! (checked the first time a thread hands a region over: `sys::user_kevents_in`).

use std::cell::Cell;
use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::kqueue::{Kqueue, Step, Wait};
use crate::sys::{self, Errno, RawFd};
use crate::Kevent;

/// A kqueue handed out to C (the table's index is the fd number C holds; the engine keeps its own duplicate
/// of it: `Kqueue::watch_own_fd`).
struct Entry {
    kq: Arc<Kqueue>,
}

type Table = Vec<Option<Entry>>;

/// Every kqueue handed out, by fd number (one process-wide table, like the kernel's). A fork child starts
/// a table of its own: the parent's kqueues are closed there (their duplicates were closed by the fork
/// handler), and the parent's table is left untouched, its lock too, which another of the parent's threads
/// may have held at fork time.
static TABLE: sys::EpochCell<Mutex<Table>> = sys::EpochCell::new();

/// Bumped, with the table locked, each time an entry of it is added, removed or replaced (and when a fork
/// child starts its table): a thread's last lookup (`CallState::last`) stands while this has not moved.
static TABLE_GEN: AtomicU64 = AtomicU64::new(1);

fn table_changed() {
    TABLE_GEN.fetch_add(1, Ordering::AcqRel);
}

fn table() -> MutexGuard<'static, Table> {
    let (t, made) = TABLE.get(|| Mutex::new(Vec::new()));
    let t = t.lock().unwrap_or_else(|p| p.into_inner());
    if made {
        table_changed();
    }
    t
}

/// Whether `e`'s fd still names its kqueue.
fn alive(e: &Entry) -> bool {
    e.kq.fd_is_ours()
}

/// Frees a kqueue whose fd was closed by its owner.
fn free(e: Entry) {
    e.kq.detach_closed();
}

/// Frees every kqueue whose fd was closed (or reused) behind kqrs's back.
fn reclaim(t: &mut Table) {
    for slot in t.iter_mut() {
        if slot.as_ref().is_some_and(|e| !alive(e)) {
            if let Some(e) = slot.take() {
                table_changed();
                free(e);
            }
        }
    }
}

fn fail(e: Errno) -> i32 {
    sys::set_errno(e.0);
    -1
}

fn make() -> Result<RawFd, Errno> {
    let kq = Kqueue::new()?;
    // As libkqueue does, events carry EV_ADD and error entries keep their change's flags (FreeBSD clears
    // them; code written for both masks them: docs/design.md, "The C face").
    kq.use_libkqueue_flags();
    let fd = kq.fd();
    kq.watch_own_fd()?;
    // The number is the caller's to close: not kqrs's to close in a fork child (see the module doc).
    sys::untrack(fd);
    let mut t = table();
    if t.len() <= fd as usize {
        t.resize_with(fd as usize + 1, || None);
    }
    if let Some(old) = t[fd as usize].take() {
        free(old); // its fd was closed: this kqueue has its number now
    }
    let kq = Arc::new(kq);
    crate::registry::register(&kq);
    t[fd as usize] = Some(Entry { kq });
    table_changed();
    Ok(fd)
}

/// Whether `fd` still names the kqueue kqrs handed out as `fd` (false once it was closed or reused).
fn fd_still_kqueue(fd: i32) -> bool {
    let t = table();
    t.get(fd as usize).and_then(|e| e.as_ref()).is_some_and(alive)
}

/// After a call on `fd` failed with EBADF or EINVAL: if its fd was closed or reused, free the kqueue.
fn check_fd(fd: i32) {
    let mut t = table();
    if let Some(slot) = t.get_mut(fd as usize) {
        if slot.as_ref().is_some_and(|e| !alive(e)) {
            if let Some(e) = slot.take() {
                table_changed();
                free(e);
            }
        }
    }
}

/// What a thread keeps from one kevent() call to the next: the changelist copied in and the events before
/// they are copied out (a call allocates nothing once they have grown to the sizes it needs), and the
/// kqueue its last call used.
#[derive(Default)]
struct CallState {
    changes: Vec<Kevent>,
    out: Vec<Kevent>,
    last: Option<Last>,
}

/// A thread's last table lookup: valid while `TABLE_GEN` still reads `gen`. (A kqueue freed since is kept
/// in memory, its fds closed, until the thread's next call replaces it. In a fork child it is a copy that
/// reads closed, so the call fails with EBADF before any lock, and the child's first table bumps the
/// generation.)
struct Last {
    fd: i32,
    gen: u64,
    kq: Arc<Kqueue>,
}

/// Buffers above this many events are not kept for the next call.
const KEEP_EVENTS: usize = 4096;

thread_local! {
    /// Taken for the length of a call and put back after it. No closure holds it, so the call stays in one
    /// frame.
    static STATE: Cell<CallState> =
        const { Cell::new(CallState { changes: Vec::new(), out: Vec::new(), last: None }) };
    /// A call has `STATE` out: a signal handler calling kevent() meanwhile (or during the move itself)
    /// makes do with a state of its own. (No destructor: readable until the thread is gone.)
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// This thread's state for one call, or a fresh one when a call is using it (re-entered from a signal
/// handler) or the thread-locals are gone (a call from a thread-exit destructor): (state, whether to put it
/// back).
#[inline(always)]
fn take_state() -> (CallState, bool) {
    if BUSY.try_with(|b| b.replace(true)).unwrap_or(true) {
        return (CallState::default(), false);
    }
    compiler_fence(Ordering::SeqCst); // (a signal handler runs on this thread: the order is enough)
    (STATE.try_with(|s| s.take()).unwrap_or_default(), true)
}

#[inline(always)]
fn put_state(mut state: CallState, keep: bool) {
    if !keep {
        return;
    }
    if state.out.capacity() > KEEP_EVENTS {
        state.out = Vec::new();
    }
    if state.changes.capacity() > KEEP_EVENTS {
        state.changes = Vec::new();
    }
    let _ = STATE.try_with(|s| s.set(state));
    compiler_fence(Ordering::SeqCst);
    let _ = BUSY.try_with(|b| b.set(false));
}

/// `out` resized to `n` events (contents unspecified: the engine writes what it returns before it is read).
fn room_in(out: &mut Vec<Kevent>, n: usize) -> &mut [Kevent] {
    if out.len() < n {
        out.resize(n, Kevent::default());
    }
    &mut out[..n]
}

/// What a kevent() call does next (see `sys::c_entry::kevent`): plain values only, so the frame that waits
/// holds nothing with a destructor.
#[derive(Clone, Copy)]
pub(crate) enum CStep {
    /// Return this (a count, or -1 with errno set).
    Done(i32),
    /// Wait on `ep` for up to `ms` (-1: forever), publishing `id`, then `resume`.
    Wait { ep: RawFd, ms: i32, id: u64, wait: Wait },
}

fn done(r: Result<usize, Errno>) -> CStep {
    CStep::Done(match r {
        Ok(n) => n as i32,
        Err(e) => fail(e),
    })
}

/// The room for events a call on `kq` needs (no more than it has knotes, whatever nevents says).
fn room(kq: &Kqueue, nevents: usize, nchanges: usize) -> usize {
    nevents.min((kq.knote_count_hint() + nchanges + 64).max(4096))
}

/// Turns an engine step into a C step, writing the events when the call is over.
fn finish(
    fd: i32,
    kq: &Kqueue,
    r: sys::Result<Step>,
    out: &mut [Kevent],
    eventlist: usize,
    nevents: usize,
    wait: Wait,
) -> CStep {
    match r {
        Ok(Step::Done(n)) => done(sys::user_kevents_out(eventlist, nevents, &out[..n]).map(|()| n)),
        // A wait longer than CLOSE_CHECK_MS goes in slices, each ending with a check that `fd` is still this
        // kqueue: close(2) of it by another thread tells nobody, and a waiter must not sleep on forever.
        Ok(Step::Wait(ep, ms)) => {
            let ms = if (0..=CLOSE_CHECK_MS).contains(&ms) { ms } else { CLOSE_CHECK_MS };
            CStep::Wait { ep, ms, id: kq.id(), wait }
        }
        Err(e) => {
            if e.0 == libc::EBADF || e.0 == libc::EINVAL {
                check_fd(fd);
            }
            done(Err(e))
        }
    }
}

/// How long a blocked kevent() sleeps before it checks that its kqueue was not closed (see `finish`).
const CLOSE_CHECK_MS: i32 = 1000;

/// The kqueue C calls `fd` and the alias its waits use: `last` when the table has not changed since this
/// thread looked it up (no lock, no reference count), else from the table, remembered in `last`.
#[inline(always)]
fn entry_of(fd: i32, last: &mut Option<Last>) -> Option<(&Kqueue, RawFd)> {
    let gen = TABLE_GEN.load(Ordering::Acquire);
    if !matches!(last, Some(l) if l.fd == fd && l.gen == gen) {
        *last = None;
        *last = lookup(fd);
    }
    let kq: &Kqueue = &last.as_ref()?.kq;
    let alias = kq.watch_own_fd().ok()?;
    Some((kq, alias))
}

#[inline(never)]
fn lookup(fd: i32) -> Option<Last> {
    let t = table();
    let gen = TABLE_GEN.load(Ordering::Acquire); // (bumped only with the table locked)
    let kq = t.get(usize::try_from(fd).ok()?)?.as_ref()?.kq.clone();
    Some(Last { fd, gen, kq })
}

/// The first step of kevent(): checks the arguments, applies the changes, polls.
#[inline(always)]
pub(crate) fn begin(
    fd: i32,
    changelist: usize,
    nchanges: i32,
    eventlist: usize,
    nevents: i32,
    timeout: usize,
) -> CStep {
    if nchanges < 0 || nevents < 0 {
        return done(Err(Errno(libc::EINVAL)));
    }
    let wait = if timeout == 0 {
        Wait::Forever
    } else {
        match sys::user_timespec(timeout) {
            Ok((s, ns)) if s >= 0 && (0..1_000_000_000).contains(&ns) => {
                Wait::after_ns(Some((s as u64).saturating_mul(1_000_000_000).saturating_add(ns as u64)))
            }
            Ok(_) => return done(Err(Errno(libc::EINVAL))),
            Err(e) => return done(Err(e)),
        }
    };
    let (mut state, keep) = take_state();
    let step = begin_in(&mut state, fd, changelist, nchanges, eventlist, nevents, wait);
    put_state(state, keep);
    step
}

#[inline(always)]
fn begin_in(
    state: &mut CallState,
    fd: i32,
    changelist: usize,
    nchanges: i32,
    eventlist: usize,
    nevents: i32,
    wait: Wait,
) -> CStep {
    let CallState { changes, out, last } = state;
    let Some((kq, alias)) = entry_of(fd, last) else { return done(Err(Errno(libc::EBADF))) };
    let out = room_in(out, room(kq, nevents as usize, nchanges as usize));
    let r = match sys::user_kevents_in(changelist, nchanges as usize, changes) {
        Ok(()) => kq.begin_step(changes, out, wait, alias),
        Err(e) => Err(e),
    };
    finish(fd, kq, r, out, eventlist, nevents as usize, wait)
}

/// The step after a wait on the kqueue `id`: harvests what the wait got (`got`, or `err` from epoll_wait).
pub(crate) fn resume(
    fd: i32,
    id: u64,
    got: &[sys::EpollEvent],
    err: i32,
    eventlist: usize,
    nevents: i32,
    wait: Wait,
) -> CStep {
    if err != 0 {
        // EINTR: a signal, as FreeBSD's kevent() reports it; anything else the wait said.
        return done(Err(Errno(err)));
    }
    if got.is_empty() && !fd_still_kqueue(fd) {
        check_fd(fd); // closed by another thread during the wait: freed now, and this call fails
        return done(Err(Errno(libc::EBADF)));
    }
    let (mut state, keep) = take_state();
    let CallState { out, last, .. } = &mut state;
    let step = match entry_of(fd, last) {
        // (Another kqueue under that number: the one waited on was closed during the wait.)
        Some((kq, _)) if kq.id() != id => {
            check_fd(fd);
            done(Err(Errno(libc::EBADF)))
        }
        Some((kq, alias)) => {
            let out = room_in(out, room(kq, nevents.max(0) as usize, 0));
            let r = kq.resume_step(out, wait, got, alias);
            finish(fd, kq, r, out, eventlist, nevents.max(0) as usize, wait)
        }
        None => done(Err(Errno(libc::EBADF))),
    };
    put_state(state, keep);
    step
}

/// `kqueue()` for the entry point in sys.rs.
pub(crate) fn c_kqueue() -> i32 {
    reclaim(&mut table());
    match make() {
        Ok(fd) => fd,
        Err(Errno(libc::EMFILE)) | Err(Errno(libc::ENFILE)) => {
            // Kqueues closed with close(2) may still hold fds: retry once after another reclaim (another
            // thread may have closed one meanwhile).
            reclaim(&mut table());
            make().unwrap_or_else(fail)
        }
        Err(e) => fail(e),
    }
}

/// `libkqueue_drain_pending_close()` for the entry point in sys.rs.
pub(crate) fn c_drain() {
    reclaim(&mut table());
}

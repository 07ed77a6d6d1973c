//! One module per filter; this file dispatches the knote life cycle to them, and the kernel objects the
//! filters keep per kqueue (inotify, the process connector, the signal fds, the mount table) to their
//! owners: an epoll report for one (`owns_token` / `token_ready`), its registration when the epoll is
//! rebuilt (`registrations`), its closing when the kqueue closes (`close_all`). kqueue.rs names none of
//! them: it holds them as one `FilterState`.

pub(crate) mod fd;
pub(crate) mod inotify;
pub(crate) mod libkqueue;
pub(crate) mod proc;
pub(crate) mod signal;
pub(crate) mod timer;
pub(crate) mod user;
pub(crate) mod vnode;

use crate::consts::*;
use crate::kevent::Kevent;
use crate::knote::{Kind, Knote};
use crate::kqueue::State;
use crate::sys::{Errno, RawFd, Result};

/// epoll token of the kqueue's inotify instance (inotify.rs).
pub(crate) const TOKEN_INOTIFY: u64 = u64::MAX - 1;
/// epoll token of the kqueue's process-connector socket (proc.rs).
pub(crate) const TOKEN_CONNECTOR: u64 = u64::MAX - 3;
/// epoll token of the process-wide signal eventfd and pending-signal signalfd (signal.rs).
pub(crate) const TOKEN_SIGNAL: u64 = u64::MAX - 4;
/// epoll token of /proc/self/mountinfo (vnode.rs, NOTE_REVOKE: a watched file's filesystem was unmounted).
pub(crate) const TOKEN_MOUNTS: u64 = u64::MAX - 5;

/// What the filters keep per kqueue beside their knotes; each field belongs to one filter module, which
/// opens it for the first knote that needs it. kqueue.rs only holds it and hands it back through the hooks
/// below.
pub(crate) struct FilterState {
    /// The inotify instance and its watches (inotify.rs, shared by fd.rs and vnode.rs).
    pub inotify: inotify::Inotify,
    /// The process-connector socket (proc.rs: NOTE_FORK, NOTE_EXEC, NOTE_TRACK).
    pub connector: proc::Connector,
    /// /proc/self/mountinfo (vnode.rs: NOTE_REVOKE), -1 until a knote asks for it.
    pub mounts: RawFd,
    /// The process-wide signal fds are registered in this kqueue's epoll (signal.rs).
    pub signal_wake: bool,
    /// Fds known to be other kqrs kqueues, with their ids (fd.rs, `FdKind::Kqueue`): a READ knote's data is
    /// theirs.
    pub nested: Vec<(RawFd, u64)>,
}

impl FilterState {
    /// Nothing opened yet.
    pub(crate) fn new() -> FilterState {
        FilterState {
            inotify: inotify::Inotify::new(),
            connector: proc::Connector::new(),
            mounts: -1,
            signal_wake: false,
            nested: Vec::new(),
        }
    }
}

/// Filters this build implements. Known BSD filters that are not built yet fail with EOPNOTSUPP; unknown
/// filter ids with EINVAL (as BSD). Nothing is accepted and ignored.
pub fn check_filter(filter: i16) -> Result<()> {
    match filter {
        EVFILT_READ | EVFILT_WRITE | EVFILT_TIMER | EVFILT_USER | EVFILT_PROC | EVFILT_PROCDESC | EVFILT_VNODE
        | EVFILT_SIGNAL => Ok(()),
        EVFILT_AIO | EVFILT_NETDEV | EVFILT_FS | EVFILT_LIO => Err(Errno(libc::EOPNOTSUPP)),
        EVFILT_LIBKQUEUE => Ok(()), // questions about the library, answered by filter/libkqueue.rs
        _ => Err(Errno(libc::EINVAL)),
    }
}

/// Whether this build implements `filter`.
pub fn is_supported(filter: i16) -> bool {
    check_filter(filter).is_ok()
}

/// A new knote for a change with EV_ADD (not READ/WRITE: see `fd::change`).
pub(crate) fn attach(st: &mut State, ch: &Kevent) -> Result<u32> {
    match ch.filter {
        EVFILT_TIMER => timer::attach(st, ch),
        EVFILT_USER => user::attach(st, ch),
        EVFILT_PROC | EVFILT_PROCDESC => proc::attach(st, ch),
        EVFILT_VNODE => vnode::attach(st, ch),
        EVFILT_SIGNAL => signal::attach(st, ch),
        _ => Err(Errno(libc::EINVAL)),
    }
}

/// A change (with EV_ADD, or any change for EVFILT_USER) on an existing knote.
pub(crate) fn modify(st: &mut State, slot: u32, ch: &Kevent) -> Result<()> {
    match ch.filter {
        EVFILT_TIMER => timer::modify(st, slot, ch),
        EVFILT_USER => user::modify(st, slot, ch),
        EVFILT_PROC | EVFILT_PROCDESC => proc::modify(st, slot, ch),
        EVFILT_VNODE => vnode::modify(st, slot, ch),
        EVFILT_SIGNAL => signal::modify(st, slot, ch),
        _ => Err(Errno(libc::EINVAL)),
    }
}

/// Releases what a removed knote held.
pub(crate) fn detach(st: &mut State, k: &Knote) -> Result<()> {
    match &k.kind {
        Kind::Fd { .. } | Kind::File(_) => fd::detach(st, k),
        Kind::Timer(_) => {
            timer::detach(st, k);
            Ok(())
        }
        Kind::User { .. } => Ok(()),
        Kind::Proc(_) => {
            proc::detach(st, k);
            Ok(())
        }
        Kind::Vnode(_) => {
            vnode::detach(st, k);
            Ok(())
        }
        Kind::Signal { .. } => {
            signal::detach(k);
            Ok(())
        }
    }
}

pub(crate) fn enabled_changed(st: &mut State, slot: u32, on: bool) -> Result<()> {
    let Some(k) = st.knotes.get(slot) else { return Ok(()) };
    match k.kind {
        Kind::Fd { .. } | Kind::File(_) => fd::enabled_changed(st, slot, on),
        Kind::Timer(_) => {
            timer::enabled_changed(st, slot, on);
            Ok(())
        }
        Kind::User { triggered } => {
            if on && triggered {
                st.enqueue(slot);
            }
            Ok(())
        }
        Kind::Proc(_) => {
            proc::enabled_changed(st, slot, on);
            Ok(())
        }
        Kind::Vnode(_) => {
            vnode::enabled_changed(st, slot, on);
            Ok(())
        }
        Kind::Signal { .. } => {
            signal::enabled_changed(st, slot, on);
            Ok(())
        }
    }
}

/// Effects that come after EV_ENABLE/EV_DISABLE of the same change (NOTE_TRIGGER).
pub(crate) fn after_change(st: &mut State, slot: u32, ch: &Kevent) {
    if ch.filter == EVFILT_USER {
        user::after_change(st, slot, ch);
    }
}

/// An epoll report for a knote's own fd (pidfds).
pub(crate) fn knote_ready(st: &mut State, slot: u32, revents: u32, _out: &mut [Kevent], _n: &mut usize) {
    if let Some(Knote { kind: Kind::Proc(_), .. }) = st.knotes.get(slot) {
        proc::pidfd_ready(st, slot, revents);
    }
}

/// Whether an epoll token names one of the filters' kernel objects (see `token_ready`).
#[inline]
pub(crate) fn owns_token(token: u64) -> bool {
    matches!(token, TOKEN_INOTIFY | TOKEN_CONNECTOR | TOKEN_SIGNAL | TOKEN_MOUNTS)
}

/// One of the filters' kernel objects is ready: its owner looks at what it says.
pub(crate) fn token_ready(st: &mut State, token: u64) {
    match token {
        TOKEN_INOTIFY => inotify::ready(st),
        TOKEN_CONNECTOR => proc::connector_ready(st),
        TOKEN_SIGNAL => signal::wake(st),
        TOKEN_MOUNTS => vnode::mounts_changed(st),
        _ => {}
    }
}

/// The filters' registrations in the kqueue's epoll other than READ/WRITE fds, as (fd, events, token):
/// their kernel objects, then pidfds (to re-register after a rebuild of the epoll).
pub(crate) fn registrations(st: &State) -> Vec<(RawFd, u32, u64)> {
    let mut v = Vec::new();
    v.extend(inotify::registration(st));
    v.extend(proc::connector_registration(st));
    v.extend(vnode::registration(st));
    signal::registrations(st, &mut v);
    v.extend(proc::registrations(st));
    v
}

/// Teardown (the kqueue is closing, its knotes are about to be dropped): each filter releases what its
/// knotes hold (pidfds, signal handlers) and closes its kernel objects.
pub(crate) fn close_all(st: &mut State) {
    for (_, k) in st.knotes.iter_slots() {
        match &k.kind {
            Kind::Proc(_) => proc::close_knote(k),
            Kind::Signal { .. } => signal::detach(k),
            _ => {}
        }
    }
    inotify::close(st);
    proc::close(st);
    vnode::close(st);
}

/// A knote taken off the active queue.
pub(crate) fn active_ready(st: &mut State, slot: u32, out: &mut [Kevent], n: &mut usize) {
    let Some(k) = st.knotes.get(slot) else { return };
    match k.kind {
        Kind::User { .. } => user::ready(st, slot, out, n),
        Kind::File(_) => fd::file_ready(st, slot, out, n),
        Kind::Fd { revents, .. } => fd::deferred_ready(st, slot, revents, out, n),
        Kind::Timer(_) => timer::ready(st, slot, out, n),
        Kind::Proc(_) => proc::ready(st, slot, out, n),
        Kind::Vnode(_) => vnode::ready(st, slot, out, n),
        Kind::Signal { .. } => signal::ready(st, slot, out, n),
    }
}

//! One module per filter; this file dispatches the knote life cycle to them, and the kqueue's shared kernel
//! objects (inotify, the process connector, the signal eventfd, the mount table) to their owners.

pub(crate) mod fd;
pub(crate) mod libkqueue;
pub(crate) mod proc;
pub(crate) mod signal;
pub(crate) mod timer;
pub(crate) mod user;
pub(crate) mod vnode;

use crate::consts::*;
use crate::kevent::Kevent;
use crate::knote::{Kind, Knote};
use crate::kqueue::{State, TOKEN_CONNECTOR, TOKEN_INOTIFY, TOKEN_MOUNTS, TOKEN_SIGNAL};
use crate::sys::{self, Errno, RawFd, Result};

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

/// One of the kqueue's shared kernel objects is ready: its owner looks at what it says.
pub(crate) fn shared_ready(st: &mut State, token: u64) {
    match token {
        TOKEN_INOTIFY => fd::inotify_ready(st),
        TOKEN_CONNECTOR => proc::connector_ready(st),
        TOKEN_SIGNAL => signal::wake(st),
        TOKEN_MOUNTS => vnode::mounts_changed(st),
        _ => {}
    }
}

/// The filters' registrations in the kqueue's epoll other than READ/WRITE fds, as (fd, events, token):
/// shared objects, then pidfds (for a rebuild of the epoll).
pub(crate) fn registrations(st: &State) -> Vec<(RawFd, u32, u64)> {
    let mut v = Vec::new();
    if st.inotify >= 0 {
        v.push((st.inotify, sys::EPOLLIN, TOKEN_INOTIFY));
    }
    if st.connector >= 0 {
        v.push((st.connector, sys::EPOLLIN, TOKEN_CONNECTOR));
    }
    if st.mounts >= 0 {
        v.push((st.mounts, sys::EPOLLPRI | sys::EPOLLERR, TOKEN_MOUNTS));
    }
    if st.sig_wake_registered {
        if let Ok(fd) = sys::signal_wake_fd() {
            v.push((fd, sys::EPOLLIN | sys::EPOLLET, TOKEN_SIGNAL));
        }
        if let Some(fd) = sys::signal_pending_fd() {
            v.push((fd, sys::EPOLLIN | sys::EPOLLET, TOKEN_SIGNAL));
        }
    }
    v.extend(proc::registrations(st));
    v
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

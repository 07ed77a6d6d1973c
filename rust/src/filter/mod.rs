//! One module per filter; this file dispatches the knote life cycle to them.

pub(crate) mod fd;
pub(crate) mod proc;
pub(crate) mod signal;
pub(crate) mod timer;
pub(crate) mod user;
pub(crate) mod vnode;

use crate::consts::*;
use crate::kevent::Kevent;
use crate::knote::{Kind, Knote};
use crate::kqueue::State;
use crate::sys::{Errno, Result};

/// Filters this build implements. Known BSD filters that are not built yet fail with EOPNOTSUPP; unknown
/// filter ids with EINVAL (as BSD). Nothing is accepted and ignored.
pub fn check_filter(filter: i16) -> Result<()> {
    match filter {
        EVFILT_READ | EVFILT_WRITE | EVFILT_TIMER | EVFILT_USER | EVFILT_PROC | EVFILT_PROCDESC | EVFILT_VNODE
        | EVFILT_SIGNAL => Ok(()),
        EVFILT_AIO | EVFILT_NETDEV | EVFILT_FS | EVFILT_LIO => {
            Err(Errno(libc::EOPNOTSUPP))
        }
        _ => Err(Errno(libc::EINVAL)),
    }
}

/// Whether this build implements `filter`.
pub fn is_supported(filter: i16) -> bool {
    check_filter(filter).is_ok()
}

pub(crate) fn attach(st: &mut State, ch: &Kevent) -> Result<u32> {
    match ch.filter {
        EVFILT_READ | EVFILT_WRITE => fd::attach(st, ch),
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
        EVFILT_READ | EVFILT_WRITE => fd::modify(st, slot, ch),
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
    match k.kind {
        Kind::Fd { .. } | Kind::File { .. } => fd::detach(st, k),
        Kind::Timer { tfd, .. } => {
            timer::detach(st, tfd);
            Ok(())
        }
        Kind::User { .. } => Ok(()),
        Kind::Proc { .. } => {
            proc::detach(st, k);
            Ok(())
        }
        Kind::Vnode { .. } => {
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
        Kind::Fd { .. } | Kind::File { .. } => fd::enabled_changed(st, slot, on),
        Kind::Timer { tfd, .. } => timer::enabled_changed(st, slot, tfd, on),
        Kind::User { triggered } => {
            if on && triggered {
                st.enqueue(slot);
            }
            Ok(())
        }
        Kind::Proc { .. } => {
            proc::enabled_changed(st, slot, on);
            Ok(())
        }
        Kind::Vnode { .. } => {
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

/// An epoll report for a knote's own fd (timers).
pub(crate) fn knote_ready(st: &mut State, slot: u32, revents: u32, out: &mut [Kevent], n: &mut usize) {
    match st.knotes.get(slot).map(|k| &k.kind) {
        Some(Kind::Timer { tfd, .. }) => {
            let tfd = *tfd;
            timer::ready(st, slot, tfd, out, n);
        }
        Some(Kind::Proc { .. }) => proc::pidfd_ready(st, slot, revents),
        _ => {}
    }
}

/// A knote taken off the active queue.
pub(crate) fn active_ready(st: &mut State, slot: u32, out: &mut [Kevent], n: &mut usize) {
    let Some(k) = st.knotes.get(slot) else { return };
    match k.kind {
        Kind::User { .. } => user::ready(st, slot, out, n),
        Kind::File { .. } => fd::file_ready(st, slot, out, n),
        Kind::Fd { revents, .. } => fd::deferred_ready(st, slot, revents, out, n),
        Kind::Timer { tfd, .. } => timer::ready(st, slot, tfd, out, n),
        Kind::Proc { .. } => proc::ready(st, slot, out, n),
        Kind::Vnode { .. } => vnode::ready(st, slot, out, n),
        Kind::Signal { .. } => signal::ready(st, slot, out, n),
    }
}

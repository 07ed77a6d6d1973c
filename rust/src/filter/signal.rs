//! EVFILT_SIGNAL: deliveries counted by kqrs's own handler, which then hands the signal to whatever the
//! application had (see `sys::on_signal`); no signal mask, no signalfd, no thread. Every kqueue keeps its
//! own count per knote, so every kqueue watching a signal sees each delivery.

use crate::consts::*;
use crate::filter::TOKEN_SIGNAL;
use crate::kevent::Kevent;
use crate::knote::{Kind, Knote};
use crate::kqueue::State;
use crate::sys::{self, Errno, RawFd, Result};

fn signum(ch: &Kevent) -> Result<i32> {
    i32::try_from(ch.ident).ok().filter(|s| (1..=64).contains(s)).ok_or(Errno(libc::EINVAL))
}

/// Registers the process-wide signal eventfd in this kqueue's epoll, edge-triggered: it is never drained,
/// and every write (one per delivery) is an edge for every kqueue watching.
pub(crate) fn ensure_wake(st: &mut State) -> Result<()> {
    if st.filters.signal_wake {
        return Ok(());
    }
    let fd = sys::signal_wake_fd()?;
    sys::epoll_add(st.ep, fd, sys::EPOLLIN | sys::EPOLLET, TOKEN_SIGNAL)?;
    // A watched signal that is blocked never reaches the handler: the pending-signal signalfd reports it.
    if let Some(pfd) = sys::signal_pending_fd() {
        if let Err(e) = sys::epoll_add(st.ep, pfd, sys::EPOLLIN | sys::EPOLLET, TOKEN_SIGNAL) {
            let _ = sys::epoll_del(st.ep, fd);
            return Err(e);
        }
    }
    st.filters.signal_wake = true;
    Ok(())
}

pub(crate) fn attach(st: &mut State, ch: &Kevent) -> Result<u32> {
    if ch.fflags != 0 {
        return Err(Errno(libc::EINVAL));
    }
    let sig = signum(ch)?;
    crate::source::ensure(st, false)?;
    sys::signal_ref(sig)?;
    if let Err(e) = ensure_wake(st) {
        sys::signal_unref(sig);
        return Err(e);
    }
    Ok(st.insert(Knote::from_change(
        ch,
        (ch.flags & EV_STICKY) | EV_CLEAR,
        0,
        Kind::Signal { sig, last: sys::signal_count(sig) },
    )))
}

pub(crate) fn modify(st: &mut State, slot: u32, ch: &Kevent) -> Result<()> {
    if ch.fflags != 0 {
        return Err(Errno(libc::EINVAL));
    }
    let Some(k) = st.knotes.get_mut(slot) else { return Err(Errno(libc::ENOENT)) };
    k.sdata = ch.data;
    k.udata = ch.udata;
    Ok(())
}

pub(crate) fn detach(k: &Knote) {
    if let Kind::Signal { sig, .. } = k.kind {
        sys::signal_unref(sig);
    }
}

pub(crate) fn enabled_changed(st: &mut State, slot: u32, on: bool) {
    let Some(Knote { kind: Kind::Signal { sig, last }, .. }) = st.knotes.get_mut(slot) else { return };
    let now = sys::signal_count(*sig);
    if !on {
        *last = now; // EV_DISABLE drops the deliveries not yet reported
    } else if now > *last {
        st.enqueue(slot); // deliveries while disabled are reported once enabled
    }
}

/// The signal eventfd or the pending-signal signalfd fired: count the watched signals pending now, then
/// queue every knote whose signal was sent since its last report.
pub(crate) fn wake(st: &mut State) {
    sys::signal_scan_pending();
    let ready: Vec<u32> = st
        .knotes
        .iter_slots()
        .filter_map(|(slot, k)| match k.kind {
            Kind::Signal { sig, last } if sys::signal_count(sig) > last => Some(slot),
            _ => None,
        })
        .collect();
    for slot in ready {
        st.enqueue(slot);
    }
}

pub(crate) fn ready(st: &mut State, slot: u32, out: &mut [Kevent], n: &mut usize) {
    let Some(k) = st.knotes.get(slot) else { return };
    let Kind::Signal { sig, last } = k.kind else { return };
    let now = sys::signal_count(sig);
    if now <= last {
        return;
    }
    let kev = State::event_of(k, 0, 0, (now - last).min(isize::MAX as u64) as isize);
    if st.emit(slot, kev, out, n) {
        if let Some(Knote { kind: Kind::Signal { last, .. }, .. }) = st.knotes.get_mut(slot) {
            *last = now;
        }
    }
}

/// The process-wide signal fds' registrations in the kqueue's epoll, for a rebuild.
pub(crate) fn registrations(st: &State, v: &mut Vec<(RawFd, u32, u64)>) {
    if st.filters.signal_wake {
        if let Ok(fd) = sys::signal_wake_fd() {
            v.push((fd, sys::EPOLLIN | sys::EPOLLET, TOKEN_SIGNAL));
        }
        if let Some(fd) = sys::signal_pending_fd() {
            v.push((fd, sys::EPOLLIN | sys::EPOLLET, TOKEN_SIGNAL));
        }
    }
}

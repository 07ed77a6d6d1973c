//! EVFILT_TIMER: one timerfd per knote, so the kernel counts expirations (and overruns) for us.

use crate::consts::*;
use crate::kevent::Kevent;
use crate::knote::{Kind, Knote};
use crate::kqueue::{token, State, TAG_KNOTE};
use crate::sys::{self, Errno, RawFd, Result};

/// Longest period or deadline we arm: about 146 years. Larger values saturate here instead of overflowing.
const MAX_NS: u128 = 1 << 62;

fn validate(ch: &Kevent) -> Result<()> {
    if ch.fflags & !(NOTE_TIMER_UNITS | NOTE_ABSOLUTE) != 0 {
        return Err(Errno(libc::EINVAL));
    }
    if (ch.fflags & NOTE_TIMER_UNITS).count_ones() > 1 {
        return Err(Errno(libc::EINVAL));
    }
    if ch.data < 0 {
        return Err(Errno(libc::EINVAL));
    }
    Ok(())
}

/// `data` in the knote's unit, as nanoseconds (saturating).
fn to_ns(data: isize, fflags: u32) -> u64 {
    let mult: u128 = match fflags & NOTE_TIMER_UNITS {
        NOTE_SECONDS => 1_000_000_000,
        NOTE_USECONDS => 1_000,
        NOTE_NSECONDS => 1,
        _ => 1_000_000,
    };
    ((data.max(0) as u128) * mult).min(MAX_NS) as u64
}

/// Arms `tfd` for the knote's period or deadline (FreeBSD's rules: a zero period means one unit, a zero
/// one-shot fires at once, a deadline in the past fires at once, and an absolute timer fires once).
fn arm(tfd: RawFd, data: isize, fflags: u32, oneshot: bool) -> Result<()> {
    let ns = to_ns(data, fflags);
    if fflags & NOTE_ABSOLUTE != 0 {
        sys::timerfd_settime(tfd, true, ns.max(1), 0)
    } else if oneshot {
        sys::timerfd_settime(tfd, false, ns.max(1), 0)
    } else {
        let period = if data == 0 { to_ns(1, fflags) } else { ns.max(1) };
        sys::timerfd_settime(tfd, false, period, period)
    }
}

fn epoll_events(enabled: bool) -> u32 {
    if enabled {
        sys::EPOLLIN
    } else {
        0
    }
}

pub(crate) fn attach(st: &mut State, ch: &Kevent) -> Result<u32> {
    validate(ch)?;
    let tfd = sys::timerfd_create(ch.fflags & NOTE_ABSOLUTE != 0)?;
    if let Err(e) = arm(tfd, ch.data, ch.fflags, ch.flags & EV_ONESHOT != 0) {
        sys::close(tfd);
        return Err(e);
    }
    let enabled = ch.flags & EV_DISABLE == 0;
    // A relative timer is edge-triggered (EV_CLEAR is set for it, and shows in its events).
    let flags = (ch.flags & EV_STICKY) | if ch.fflags & NOTE_ABSOLUTE == 0 { EV_CLEAR } else { 0 };
    let slot = st.insert(Knote::from_change(ch, flags, ch.fflags, Kind::Timer { tfd, fired: 0 }));
    let tok = TAG_KNOTE | token(slot, st.knotes.gen(slot));
    if let Err(e) = sys::epoll_add(st.epfd, tfd, epoll_events(enabled), tok) {
        st.knotes.remove(slot);
        st.index.remove(&(ch.ident, ch.filter));
        sys::close(tfd);
        return Err(e);
    }
    Ok(slot)
}

/// Re-EV_ADD: the new period/deadline and unit replace the old ones; pending expirations are dropped.
pub(crate) fn modify(st: &mut State, slot: u32, ch: &Kevent) -> Result<()> {
    validate(ch)?;
    let gen = st.knotes.gen(slot);
    let epfd = st.epfd;
    let Some(k) = st.knotes.get_mut(slot) else { return Err(Errno(libc::ENOENT)) };
    let Kind::Timer { tfd, .. } = k.kind else { return Err(Errno(libc::EINVAL)) };
    let oneshot = k.flags & EV_ONESHOT != 0;
    let mut fd = tfd;
    if (k.sfflags ^ ch.fflags) & NOTE_ABSOLUTE != 0 {
        // Another clock: a new timerfd replaces the old one.
        let nfd = sys::timerfd_create(ch.fflags & NOTE_ABSOLUTE != 0)?;
        if let Err(e) = sys::epoll_add(epfd, nfd, epoll_events(k.enabled), TAG_KNOTE | token(slot, gen)) {
            sys::close(nfd);
            return Err(e);
        }
        let _ = sys::epoll_del(epfd, tfd);
        sys::close(tfd);
        fd = nfd;
        k.kind = Kind::Timer { tfd: nfd, fired: 0 };
    }
    // timerfd_settime resets the expiration count: pending expirations are dropped, and a deadline that
    // is already due still fires.
    arm(fd, ch.data, ch.fflags, oneshot)?;
    if let Kind::Timer { fired, .. } = &mut k.kind {
        *fired = 0;
    }
    k.sfflags = ch.fflags;
    k.sdata = ch.data;
    k.udata = ch.udata;
    st.unqueue(slot);
    Ok(())
}

pub(crate) fn detach(st: &mut State, tfd: RawFd) {
    let _ = sys::epoll_del(st.epfd, tfd);
    sys::close(tfd);
}

pub(crate) fn enabled_changed(st: &mut State, slot: u32, tfd: RawFd, on: bool) -> Result<()> {
    if !on {
        // EV_DISABLE drops what was pending; the timer itself keeps running.
        let _ = sys::read_u64(tfd);
    }
    sys::epoll_mod(st.epfd, tfd, epoll_events(on), TAG_KNOTE | token(slot, st.knotes.gen(slot)))
}

pub(crate) fn ready(st: &mut State, slot: u32, tfd: RawFd, out: &mut [Kevent], n: &mut usize) {
    if *n >= out.len() {
        st.enqueue(slot); // the timerfd stays readable too: reported next time
        return;
    }
    let seq = st.seq;
    let Some(k) = st.knotes.get_mut(slot) else { return };
    if !k.enabled || k.seen == seq {
        return;
    }
    let Kind::Timer { fired, .. } = &mut k.kind else { return };
    let count = sys::read_u64(tfd).unwrap_or(0);
    let total = fired.saturating_add(count);
    if total == 0 {
        return;
    }
    let clear = k.flags & EV_CLEAR != 0;
    // Without EV_CLEAR (an absolute timer), an expired timer stays active: reported on every call.
    *fired = if clear { 0 } else { total };
    let kev = State::event_of(k, 0, 0, total.min(isize::MAX as u64) as isize);
    if st.emit(slot, kev, out, n) && !clear {
        st.enqueue(slot);
    }
}

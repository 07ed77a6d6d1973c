//! The kqueue's timer source and kick: one CLOCK_MONOTONIC timerfd, created the first time a knote needs
//! it (a timer, a USER knote, a regular file, or a report kept for the next call), registered in the
//! kqueue's epoll edge-triggered. It is armed for the earliest timer deadline (`filter/timer.rs`), and it is
//! also the *kick*: `TFD_IOC_SET_TICKS` makes it readable at once, which is how a triggered USER knote (or
//! anything else on the active queue) makes the kqueue fd poll readable and wakes threads blocked in
//! kevent(). Each expiry and each kick is an edge; the epoll_wait that reports it takes it, so a wake-up
//! by the kick costs no read(2).
//! Kernels without that ioctl (no CONFIG_CHECKPOINT_RESTORE) get a separate eventfd for the kick.
//! NOTE_ABSOLUTE timers have a CLOCK_REALTIME timerfd of their own, so clock steps are the kernel's job.
//!
//! A kqueue that only watches fds has none of these: its epoll is its only fd.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::kqueue::State;
use crate::sys::{self, RawFd, Result};

/// epoll token of the CLOCK_MONOTONIC timer source (which is also the kick).
pub(crate) const TOKEN_SOURCE: u64 = u64::MAX - 6;
/// epoll token of the CLOCK_REALTIME timer source (NOTE_ABSOLUTE).
pub(crate) const TOKEN_RT: u64 = u64::MAX - 7;
/// epoll token of the kick eventfd (only where timerfd ticks cannot be set).
pub(crate) const TOKEN_KICK: u64 = u64::MAX;

/// The fds of a kqueue's timer source and kick (-1 until needed).
pub(crate) struct Source {
    pub mono: RawFd,
    /// The deadline `mono` is armed for (u64::MAX: none).
    pub mono_armed: u64,
    pub rt: RawFd,
    pub rt_armed: u64,
    /// The kick eventfd, where the timerfd cannot be ticked.
    pub kick_efd: RawFd,
    /// The kick is readable now (or will be as soon as the lock holder that set it lets go: `take_kick`).
    pub kicked: bool,
    /// The kick's syscall is still to be made, after the state's lock is released.
    pub kick_soon: bool,
}

/// A kick to make once the state's lock is released, so the thread it wakes does not find the lock taken.
#[derive(Clone, Copy)]
pub(crate) struct Kick(RawFd, bool);

impl Kick {
    /// Makes the kick readable (the fd is kept open meanwhile by the caller's hazard slot).
    pub fn fire(self) {
        let _ = if self.1 { sys::timerfd_set_ticks(self.0) } else { sys::eventfd_write(self.0, 1) };
    }
}

impl Source {
    pub const NONE: Source = Source {
        mono: -1,
        mono_armed: u64::MAX,
        rt: -1,
        rt_armed: u64::MAX,
        kick_efd: -1,
        kicked: false,
        kick_soon: false,
    };

    /// The kick a lock holder asked for, to fire after unlocking.
    pub fn take_kick(&mut self) -> Option<Kick> {
        if !std::mem::take(&mut self.kick_soon) {
            return None;
        }
        if self.kick_efd >= 0 {
            Some(Kick(self.kick_efd, false))
        } else if self.mono >= 0 {
            Some(Kick(self.mono, true))
        } else {
            None
        }
    }

    /// Every fd with its epoll interest and token (for a rebuild of the epoll).
    pub fn registrations(&self) -> impl Iterator<Item = (RawFd, u32, u64)> {
        [(self.mono, TOKEN_SOURCE), (self.rt, TOKEN_RT), (self.kick_efd, TOKEN_KICK)]
            .into_iter()
            .filter(|&(fd, _)| fd >= 0)
            .map(|(fd, tok)| (fd, sys::EPOLLIN | sys::EPOLLET, tok))
    }

    /// Closes every fd (the kqueue is closing).
    pub fn close(&mut self) {
        for fd in [self.mono, self.rt, self.kick_efd] {
            if fd >= 0 {
                sys::close(fd);
            }
        }
        *self = Source::NONE;
    }
}

/// 0 = not probed, 1 = TFD_IOC_SET_TICKS works, 2 = it does not (an eventfd kicks instead).
static TICKS: AtomicU8 = AtomicU8::new(0);

fn new_timerfd(st: &mut State, realtime: bool, token: u64) -> Result<RawFd> {
    let fd = sys::timerfd_create(realtime)?;
    if let Err(e) = sys::epoll_add(st.ep, fd, sys::EPOLLIN | sys::EPOLLET, token) {
        sys::close(fd);
        return Err(e);
    }
    Ok(fd)
}

/// Makes sure the monotonic source and the kick exist (and the realtime source, for `absolute`): the
/// knotes that need them call this when they are added, so a kqueue at its fd limit fails that EV_ADD
/// with EMFILE instead of keeping a knote that could never wake anyone.
pub(crate) fn ensure(st: &mut State, absolute: bool) -> Result<()> {
    if st.src.mono < 0 {
        st.src.mono = new_timerfd(st, false, TOKEN_SOURCE)?;
    }
    if TICKS.load(Ordering::Relaxed) == 0 {
        let ok = match sys::timerfd_set_ticks(st.src.mono) {
            Ok(()) => {
                let _ = sys::read_u64(st.src.mono);
                true
            }
            Err(_) => false,
        };
        TICKS.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
    }
    if TICKS.load(Ordering::Relaxed) == 2 && st.src.kick_efd < 0 {
        let fd = sys::eventfd()?;
        if let Err(e) = sys::epoll_add(st.ep, fd, sys::EPOLLIN | sys::EPOLLET, TOKEN_KICK) {
            sys::close(fd);
            return Err(e);
        }
        st.src.kick_efd = fd;
    }
    if absolute && st.src.rt < 0 {
        st.src.rt = new_timerfd(st, true, TOKEN_RT)?;
    }
    Ok(())
}

/// Arms the source of one clock for `deadline` (None: disarms it). A source that already fired for a
/// deadline it is no longer armed for is read first, so the kqueue fd does not poll readable for it.
pub(crate) fn set(st: &mut State, absolute: bool, deadline: Option<u64>) -> Result<()> {
    let want = deadline.unwrap_or(u64::MAX);
    let (fd, armed) = if absolute { (st.src.rt, st.src.rt_armed) } else { (st.src.mono, st.src.mono_armed) };
    if fd < 0 || want == armed {
        return Ok(());
    }
    // timerfd_settime also resets the count of expirations, and with it a kick (ticks) on `mono`.
    sys::timerfd_arm_at(fd, if want == u64::MAX { 0 } else { want.max(1) })?;
    if absolute {
        st.src.rt_armed = want;
    } else {
        st.src.mono_armed = want;
        if st.src.kicked && st.src.kick_efd < 0 {
            // Arming a timerfd resets its ticks, the kick among them: tick it again (after the unlock).
            st.src.kick_soon = true;
        }
    }
    Ok(())
}

/// Makes the kick readable (once): the kqueue fd polls readable and blocked threads wake. The syscall is
/// made by whoever holds the state's lock, right after releasing it (`Source::take_kick`).
pub(crate) fn kick_on(st: &mut State) {
    if st.src.kicked {
        return;
    }
    if st.src.mono < 0 && ensure(st, false).is_err() {
        // Out of fds: the next kevent() call of any thread still sees the active queue; a thread already
        // blocked is not woken for it.
        return;
    }
    st.src.kicked = true;
    st.src.kick_soon = true;
}

/// Resets the kick (the active queue is empty) when its edge was not taken by an epoll_wait yet: reading
/// the counter makes the kqueue fd stop polling readable for it (the kick stays on epoll's ready list,
/// but a poller re-checks it and finds nothing).
pub(crate) fn kick_off(st: &mut State) {
    if !st.src.kicked {
        return;
    }
    st.src.kicked = false;
    if std::mem::take(&mut st.src.kick_soon) {
        return; // never made readable
    }
    if st.src.kick_efd >= 0 {
        let _ = sys::read_u64(st.src.kick_efd);
    } else {
        // Reading the timerfd also takes an expiry that may have come with the kick: look at the timers.
        let _ = sys::read_u64(st.src.mono);
        after_read(st, false);
    }
}

/// A source fired: due timers are queued and it is re-armed. Sources are registered edge-triggered, so
/// nothing is read: the edge epoll_wait just reported was the kick (if one was made) or an expiry.
pub(crate) fn ready(st: &mut State, token: u64) {
    match token {
        TOKEN_SOURCE => {
            if st.src.kick_efd < 0 && !st.src.kick_soon {
                st.src.kicked = false; // the kick's edge is taken
            }
            after_read(st, false);
        }
        TOKEN_RT => after_read(st, true),
        _ => {
            // the kick eventfd: what it stands for is on the active queue, which the caller drains
            if !st.src.kick_soon {
                st.src.kicked = false;
            }
        }
    }
}

fn after_read(st: &mut State, absolute: bool) {
    let armed = if absolute { st.src.rt_armed } else { st.src.mono_armed };
    if armed == u64::MAX && crate::filter::timer::none_pending(st, absolute) {
        // No timer: the edge was the kick alone, and there is nothing to expire or re-arm (this is the
        // wake-up of a thread blocked for a USER trigger: no clock is read for it).
        return;
    }
    let now = sys::clock_ns(absolute);
    let armed = if absolute { &mut st.src.rt_armed } else { &mut st.src.mono_armed };
    if *armed <= now {
        *armed = u64::MAX; // it expired (an absolute one-shot arm, now disarmed): re-armed for the next one
    }
    crate::filter::timer::expire(st, absolute, now);
}

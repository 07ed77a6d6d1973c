//! EVFILT_USER: no kernel object; a trigger puts the knote on the kqueue's active queue.

use crate::consts::*;
use crate::kevent::Kevent;
use crate::knote::{Kind, Knote};
use crate::kqueue::State;
use crate::sys::{Errno, Result};

/// fflags: the control bits, NOTE_TRIGGER and the 24 value bits; bits 25-29 are ignored, never an error
/// (FreeBSD's filt_usertouch masks the value with NOTE_FFLAGSMASK).
pub(crate) fn attach(st: &mut State, ch: &Kevent) -> Result<u32> {
    // A trigger from another thread wakes waiters through the kick: it must exist before the knote does.
    crate::source::ensure(st, false)?;
    Ok(st.insert(Knote::from_change(
        ch,
        ch.flags & EV_STICKY,
        ch.fflags & NOTE_FFLAGSMASK,
        Kind::User { triggered: false },
    )))
}

/// BSD's filt_usertouch(EVENT_REGISTER): combine fflags, replace data and udata; EV_CLEAR in the change
/// resets the trigger.
pub(crate) fn modify(st: &mut State, slot: u32, ch: &Kevent) -> Result<()> {
    let Some(k) = st.knotes.get_mut(slot) else { return Err(Errno(libc::ENOENT)) };
    let v = ch.fflags & NOTE_FFLAGSMASK;
    match ch.fflags & NOTE_FFCTRLMASK {
        NOTE_FFAND => k.sfflags &= v,
        NOTE_FFOR => k.sfflags |= v,
        NOTE_FFCOPY => k.sfflags = v,
        _ => {} // NOTE_FFNOP
    }
    k.sdata = ch.data;
    k.udata = ch.udata;
    if ch.flags & EV_CLEAR != 0 {
        if let Kind::User { triggered } = &mut k.kind {
            *triggered = false;
        }
        st.unqueue(slot);
    }
    Ok(())
}

/// NOTE_TRIGGER fires the knote, also in the change that adds it (as macOS and libkqueue do; FreeBSD
/// drops a trigger given with the initial EV_ADD, which code written for macOS does not expect).
pub(crate) fn after_change(st: &mut State, slot: u32, ch: &Kevent) {
    if ch.fflags & NOTE_TRIGGER == 0 || ch.flags & EV_DELETE != 0 {
        return;
    }
    let Some(k) = st.knotes.get_mut(slot) else { return };
    if let Kind::User { triggered } = &mut k.kind {
        *triggered = true;
    }
    st.enqueue(slot);
}

pub(crate) fn ready(st: &mut State, slot: u32, out: &mut [Kevent], n: &mut usize) {
    let Some(k) = st.knotes.get(slot) else { return };
    let Kind::User { triggered } = k.kind else { return };
    if !triggered {
        return;
    }
    let kev = State::event_of(k, 0, k.sfflags & NOTE_FFLAGSMASK, k.sdata);
    let clear = k.flags & EV_CLEAR != 0;
    if !st.emit(slot, kev, out, n) {
        return;
    }
    if let Some(k) = st.knotes.get_mut(slot) {
        if clear {
            if let Kind::User { triggered } = &mut k.kind {
                *triggered = false;
            }
        } else if k.enabled {
            // Level-triggered: a triggered user event stays pending until EV_CLEAR or deletion.
            st.enqueue(slot);
        }
    }
}

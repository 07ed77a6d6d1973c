//! EVFILT_TIMER: no fd per timer. Every timer is a deadline in a heap of the kqueue's; the kqueue's one
//! CLOCK_MONOTONIC timerfd (its *timer source*, see `source.rs`) is armed for the earliest deadline, and a
//! CLOCK_REALTIME one for NOTE_ABSOLUTE deadlines, so the kernel still honours clock steps for those.
//! Expirations (and overruns) are counted from the clock when the source fires: a periodic timer that
//! fired `k` times since it was last looked at reports `k`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::consts::*;
use crate::kevent::Kevent;
use crate::knote::{Kind, Knote};
use crate::kqueue::State;
use crate::sys::{self, Errno, Result};

/// Longest period or deadline we keep: about 146 years. Larger values saturate here instead of overflowing.
const MAX_NS: u128 = 1 << 62;

/// A timer knote's state.
#[derive(Debug)]
pub(crate) struct TimerState {
    /// The next expiry (ns on CLOCK_MONOTONIC, or CLOCK_REALTIME for an absolute timer); u64::MAX once an
    /// expiry that does not repeat has happened.
    pub next: u64,
    /// 0 for a timer that fires once.
    pub period: u64,
    /// Expirations not yet reported.
    pub fired: u64,
    pub absolute: bool,
    /// Bumped whenever the timer is re-armed: heap entries of an older epoch are stale.
    pub epoch: u32,
}

/// Deadlines of one clock: (deadline, slot, knote generation, epoch), earliest first. Entries of deleted or
/// re-armed timers are dropped when they reach the top.
#[derive(Default)]
pub(crate) struct Heap {
    heap: BinaryHeap<Reverse<(u64, u32, u32, u32)>>,
}

impl Heap {
    pub fn clear(&mut self) {
        self.heap = BinaryHeap::new();
    }
}

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

/// `data` in the change's unit, as nanoseconds (saturating).
fn to_ns(data: isize, fflags: u32) -> u64 {
    let mult: u128 = match fflags & NOTE_TIMER_UNITS {
        NOTE_SECONDS => 1_000_000_000,
        NOTE_USECONDS => 1_000,
        NOTE_NSECONDS => 1,
        _ => 1_000_000,
    };
    ((data.max(0) as u128) * mult).min(MAX_NS) as u64
}

/// The timer a change asks for (FreeBSD's rules: a zero period means one unit, a zero one-shot fires at
/// once, a deadline in the past fires at once, and an absolute timer fires once).
fn timer_of(ch: &Kevent, oneshot: bool, epoch: u32) -> TimerState {
    let ns = to_ns(ch.data, ch.fflags);
    let absolute = ch.fflags & NOTE_ABSOLUTE != 0;
    let (next, period) = if absolute {
        (ns.max(1), 0)
    } else if oneshot {
        (sys::clock_ns(false).saturating_add(ns.max(1)), 0)
    } else {
        let period = if ch.data == 0 { to_ns(1, ch.fflags) } else { ns.max(1) };
        (sys::clock_ns(false).saturating_add(period), period)
    };
    TimerState { next, period, fired: 0, absolute, epoch }
}

/// Whether a heap entry still stands for its timer's next expiry (the timer exists, is enabled, and was
/// not re-armed since).
fn valid(st: &State, (deadline, slot, gen, epoch): (u64, u32, u32, u32)) -> bool {
    st.knotes.gen(slot) == gen
        && matches!(st.knotes.get(slot), Some(Knote { enabled: true, kind: Kind::Timer(t), .. })
            if t.epoch == epoch && t.next == deadline)
}

fn heap_mut(st: &mut State, absolute: bool) -> &mut Heap {
    if absolute {
        &mut st.rt_timers
    } else {
        &mut st.timers
    }
}

/// Puts the timer of `slot` into its heap (if it is enabled and will expire) and re-arms its source.
fn schedule(st: &mut State, slot: u32) -> Result<()> {
    let gen = st.knotes.gen(slot);
    let Some(Knote { enabled, kind: Kind::Timer(t), .. }) = st.knotes.get(slot) else { return Ok(()) };
    let absolute = t.absolute;
    if *enabled && t.next != u64::MAX {
        let entry = Reverse((t.next, slot, gen, t.epoch));
        heap_mut(st, absolute).heap.push(entry);
    }
    rearm(st, absolute)
}

/// Arms the source of one clock for the earliest deadline that will report something, dropping entries
/// that no longer do from the top: the kqueue fd never polls readable for a timer that is gone or disabled.
pub(crate) fn rearm(st: &mut State, absolute: bool) -> Result<()> {
    loop {
        let top = heap_mut(st, absolute).heap.peek().map(|Reverse(e)| *e);
        match top {
            Some(e) if !valid(st, e) => {
                heap_mut(st, absolute).heap.pop();
            }
            Some((deadline, ..)) => return crate::source::set(st, absolute, Some(deadline)),
            None => return crate::source::set(st, absolute, None),
        }
    }
}

pub(crate) fn attach(st: &mut State, ch: &Kevent) -> Result<u32> {
    validate(ch)?;
    let absolute = ch.fflags & NOTE_ABSOLUTE != 0;
    // The timer source (and the kick) must exist before the knote does: a kqueue at its fd limit fails
    // this EV_ADD with EMFILE rather than keep a timer that can never fire.
    crate::source::ensure(st, absolute)?;
    // A relative timer is edge-triggered (EV_CLEAR is set for it, and shows in its events).
    let flags = (ch.flags & EV_STICKY) | if absolute { 0 } else { EV_CLEAR };
    let t = timer_of(ch, ch.flags & EV_ONESHOT != 0, 0);
    let slot = st.insert(Knote::from_change(ch, flags, ch.fflags, Kind::Timer(Box::new(t))));
    if let Err(e) = schedule(st, slot) {
        let _ = st.delete(slot);
        return Err(e);
    }
    Ok(slot)
}

/// Re-EV_ADD: the new period/deadline and unit replace the old ones; pending expirations are dropped.
pub(crate) fn modify(st: &mut State, slot: u32, ch: &Kevent) -> Result<()> {
    validate(ch)?;
    let absolute = ch.fflags & NOTE_ABSOLUTE != 0;
    crate::source::ensure(st, absolute)?;
    let Some(k) = st.knotes.get_mut(slot) else { return Err(Errno(libc::ENOENT)) };
    let Kind::Timer(t) = &mut k.kind else { return Err(Errno(libc::EINVAL)) };
    let was_absolute = t.absolute;
    **t = timer_of(ch, k.flags & EV_ONESHOT != 0, t.epoch.wrapping_add(1));
    k.sfflags = ch.fflags;
    k.sdata = ch.data;
    k.udata = ch.udata;
    st.unqueue(slot);
    if was_absolute != absolute {
        rearm(st, was_absolute)?;
    }
    schedule(st, slot)
}

/// A timer knote is gone: its source may be armed for it.
pub(crate) fn detach(st: &mut State, k: &Knote) {
    if let Kind::Timer(t) = &k.kind {
        let _ = rearm(st, t.absolute);
    }
}

/// EV_DISABLE drops what was pending and takes the timer out of its heap (the kqueue fd must not poll
/// readable for it); the timer itself keeps running: EV_ENABLE counts, from the clock, the expirations
/// that fell while it was disabled and reports them.
pub(crate) fn enabled_changed(st: &mut State, slot: u32, on: bool) {
    let Some(Knote { kind: Kind::Timer(t), .. }) = st.knotes.get_mut(slot) else { return };
    let absolute = t.absolute;
    t.epoch = t.epoch.wrapping_add(1);
    if !on {
        // EV_DISABLE drops what is pending, also expirations that are due but were not counted yet (the
        // timer source has not been read since): otherwise whether a timer fires again after EV_ENABLE
        // would depend on when the kqueue last looked.
        let now = sys::clock_ns(absolute);
        if t.next != u64::MAX && t.next <= now {
            t.next = match (now - t.next).checked_div(t.period) {
                Some(q) => t.next.saturating_add((q + 1).saturating_mul(t.period)),
                None => u64::MAX,
            };
        }
        t.fired = 0;
        let _ = rearm(st, absolute);
        return;
    }
    let now = sys::clock_ns(absolute);
    if st.libkqueue_flags && !absolute && t.period != 0 {
        // The C face, as libkqueue: a periodic timer enabled again starts a new period now, and what expired
        // while it was disabled is dropped (FreeBSD reports it: docs/design.md, "The C face").
        t.fired = 0;
        t.next = now.saturating_add(t.period);
        let _ = schedule(st, slot);
        return;
    }
    if t.next != u64::MAX && t.next <= now {
        let count = (now - t.next).checked_div(t.period).map_or(1, |q| q + 1);
        t.fired = t.fired.saturating_add(count);
        t.next = if t.period == 0 { u64::MAX } else { t.next.saturating_add(count.saturating_mul(t.period)) };
    }
    let fired = t.fired;
    let _ = schedule(st, slot);
    if fired > 0 {
        st.enqueue(slot);
    }
}

/// Whether no timer of that clock is waiting to expire (its heap is empty).
#[inline]
pub(crate) fn none_pending(st: &State, absolute: bool) -> bool {
    if absolute {
        st.rt_timers.heap.is_empty()
    } else {
        st.timers.heap.is_empty()
    }
}

/// The source fired (or was read) at `now` (on that clock): every timer of that clock that is due counts
/// its expirations and is queued; the source is re-armed for the next deadline.
pub(crate) fn expire(st: &mut State, absolute: bool, now: u64) {
    while let Some(&Reverse(e)) = heap_mut(st, absolute).heap.peek() {
        let (deadline, slot, gen, epoch) = e;
        if deadline > now {
            break;
        }
        heap_mut(st, absolute).heap.pop();
        if !valid(st, e) {
            continue;
        }
        let Some(Knote { kind: Kind::Timer(t), .. }) = st.knotes.get_mut(slot) else { continue };
        let count = (now - deadline).checked_div(t.period).map_or(1, |q| q + 1);
        t.fired = t.fired.saturating_add(count);
        t.next = if t.period == 0 { u64::MAX } else { deadline.saturating_add(count.saturating_mul(t.period)) };
        if t.next != u64::MAX {
            let next = Reverse((t.next, slot, gen, epoch));
            heap_mut(st, absolute).heap.push(next);
        }
        st.enqueue(slot);
    }
    // Heaps of long-running programs that re-arm timers often fill with stale entries: compact them.
    let live = st.knotes.len();
    if heap_mut(st, absolute).heap.len() > 64 + 4 * live {
        let old = std::mem::take(&mut heap_mut(st, absolute).heap);
        let kept: BinaryHeap<_> = old.into_iter().filter(|Reverse(e)| valid(st, *e)).collect();
        heap_mut(st, absolute).heap = kept;
    }
    let _ = rearm(st, absolute);
}

/// A timer knote taken off the active queue: report the expirations counted since the last report.
pub(crate) fn ready(st: &mut State, slot: u32, out: &mut [Kevent], n: &mut usize) {
    if *n >= out.len() {
        st.enqueue(slot);
        return;
    }
    let Some(k) = st.knotes.get_mut(slot) else { return };
    let Kind::Timer(t) = &mut k.kind else { return };
    if t.fired == 0 {
        return;
    }
    let total = t.fired;
    let clear = k.flags & EV_CLEAR != 0;
    // Without EV_CLEAR (an absolute timer), an expired timer stays active: reported on every call.
    if clear {
        t.fired = 0;
    }
    let kev = State::event_of(k, 0, 0, total.min(isize::MAX as u64) as isize);
    if st.emit(slot, kev, out, n) && !clear {
        st.enqueue(slot);
    }
}

//! Integration tests of the kqrs engine alone (no Python): `cargo test --test engine`.
//!
//! Every assertion checks exact flags / fflags / data / udata / errno. Timing checks are lower bounds
//! ("did not return before the timeout") or generous upper bounds (5 s).

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use kqrs::consts::*;
use kqrs::{Errno, Kevent, Kqueue};

mod util;
use util::*;

// ---------------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------------

fn kq() -> Kqueue {
    Kqueue::new().expect("Kqueue::new")
}

fn kev(ident: usize, filter: i16, flags: u16, fflags: u32, data: isize, udata: usize) -> Kevent {
    Kevent::new(ident, filter, flags, fflags, data, udata)
}

/// Applies changes with no room for entries; panics on error.
fn change(q: &Kqueue, changes: &[Kevent]) {
    let n = q.kevent(changes, &mut [], Some(Duration::ZERO)).expect("kevent(changes)");
    assert_eq!(n, 0);
}

/// Collects up to `max` events, waiting up to `timeout`.
fn wait(q: &Kqueue, max: usize, timeout: Duration) -> Vec<Kevent> {
    let mut out = vec![Kevent::default(); max];
    let n = q.kevent(&[], &mut out, Some(timeout)).expect("kevent(collect)");
    out.truncate(n);
    out
}

/// Pending events right now (timeout 0).
fn pending(q: &Kqueue) -> Vec<Kevent> {
    wait(q, 16, Duration::ZERO)
}

const SHORT: Duration = Duration::from_millis(1000);

fn user_add(ident: usize, flags: u16, udata: usize) -> Kevent {
    kev(ident, EVFILT_USER, EV_ADD | flags, 0, 0, udata)
}

fn user_trigger(ident: usize, fflags: u32, data: isize, udata: usize) -> Kevent {
    kev(ident, EVFILT_USER, 0, NOTE_TRIGGER | fflags, data, udata)
}

// ---------------------------------------------------------------------------------------------------
// EVFILT_USER
// ---------------------------------------------------------------------------------------------------

#[test]
fn user_trigger_reports_fflags_data_udata() {
    let q = kq();
    change(&q, &[user_add(1, EV_CLEAR, 77)]);
    assert_eq!(q.knote_count(), 1);
    assert!(pending(&q).is_empty(), "an untriggered USER knote must not fire");
    change(&q, &[user_trigger(1, NOTE_FFCOPY | 0x123, 9, 78)]);
    let evs = wait(&q, 8, SHORT);
    assert_eq!(evs, vec![kev(1, EVFILT_USER, EV_CLEAR, 0x123, 9, 78)]);
    // EV_CLEAR: reported once per trigger.
    assert!(pending(&q).is_empty());
}

#[test]
fn user_triggers_coalesce() {
    let q = kq();
    change(&q, &[user_add(5, EV_CLEAR, 0)]);
    for _ in 0..3 {
        change(&q, &[user_trigger(5, 0, 0, 0)]);
    }
    // Three triggers in one changelist, too.
    change(&q, &[user_trigger(5, 0, 0, 0), user_trigger(5, 0, 0, 0), user_trigger(5, 0, 0, 0)]);
    let evs = wait(&q, 8, SHORT);
    assert_eq!(evs, vec![kev(5, EVFILT_USER, EV_CLEAR, 0, 0, 0)]);
    assert!(pending(&q).is_empty());
}

#[test]
fn user_fflags_operations() {
    let q = kq();
    // The initial fflags (low 24 bits) are stored as given.
    change(&q, &[kev(1, EVFILT_USER, EV_ADD | EV_CLEAR, 0x0f, 0, 0)]);
    let steps: &[(u32, u32)] = &[
        (NOTE_FFNOP, 0x0f),
        (NOTE_FFOR | 0xf0, 0xff),
        (NOTE_FFAND | 0x3c, 0x3c),
        (NOTE_FFNOP | 0xffff, 0x3c),
        (NOTE_FFCOPY | 0x5, 0x5),
        (NOTE_FFCOPY | NOTE_FFLAGSMASK, NOTE_FFLAGSMASK),
        (NOTE_FFAND, 0),
        (NOTE_FFOR | 0x80_0001, 0x80_0001),
    ];
    for &(op, want) in steps {
        change(&q, &[user_trigger(1, op, 0, 0)]);
        let evs = wait(&q, 4, SHORT);
        assert_eq!(evs.len(), 1, "op {op:#x}");
        assert_eq!(evs[0].fflags, want, "op {op:#x}: control bits and NOTE_TRIGGER never show");
        assert_eq!(evs[0].flags, EV_CLEAR);
    }
    // Without a trigger the fflags still change (and nothing fires).
    change(&q, &[kev(1, EVFILT_USER, 0, NOTE_FFCOPY | 0x42, 3, 0)]);
    assert!(pending(&q).is_empty());
    change(&q, &[user_trigger(1, NOTE_FFNOP, 3, 0)]);
    assert_eq!(wait(&q, 4, SHORT), vec![kev(1, EVFILT_USER, EV_CLEAR, 0x42, 3, 0)]);
}

#[test]
fn user_without_clear_stays_triggered_until_cleared() {
    let q = kq();
    change(&q, &[user_add(2, 0, 0), user_trigger(2, 0, 0, 0)]);
    for _ in 0..3 {
        assert_eq!(pending(&q), vec![kev(2, EVFILT_USER, 0, 0, 0, 0)]);
    }
    // A change with EV_CLEAR resets the trigger.
    change(&q, &[kev(2, EVFILT_USER, EV_CLEAR, 0, 0, 0)]);
    assert!(pending(&q).is_empty());
}

#[test]
fn user_trigger_from_another_thread_wakes_kevent() {
    let q = Arc::new(kq());
    change(&q, &[user_add(9, EV_CLEAR, 0)]);
    let q2 = q.clone();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        change(&q2, &[user_trigger(9, 0, 0, 0)]);
    });
    let evs = wait(&q, 4, Duration::from_secs(5));
    t.join().unwrap();
    assert_eq!(evs, vec![kev(9, EVFILT_USER, EV_CLEAR, 0, 0, 0)]);
}

#[test]
fn user_same_ident_in_two_kqueues_is_independent() {
    let (a, b) = (kq(), kq());
    change(&a, &[user_add(1, EV_CLEAR, 10)]);
    change(&b, &[user_add(1, EV_CLEAR, 20)]);
    change(&a, &[user_trigger(1, 0, 0, 10)]);
    assert_eq!(pending(&a), vec![kev(1, EVFILT_USER, EV_CLEAR, 0, 0, 10)]);
    assert!(pending(&b).is_empty());
}

// ---------------------------------------------------------------------------------------------------
// EVFILT_TIMER
// ---------------------------------------------------------------------------------------------------

#[test]
fn timer_periodic() {
    let q = kq();
    let start = Instant::now();
    change(&q, &[kev(1, EVFILT_TIMER, EV_ADD, 0, 20, 5)]);
    let evs = wait(&q, 4, Duration::from_secs(5));
    assert!(start.elapsed() >= Duration::from_millis(20), "fired early: {:?}", start.elapsed());
    assert_eq!(evs.len(), 1);
    let e = evs[0];
    // A relative timer has EV_CLEAR set for it; fflags 0; data = expirations (>= 1).
    assert_eq!((e.ident, e.filter, e.flags, e.fflags, e.udata), (1, EVFILT_TIMER, EV_CLEAR, 0, 5));
    assert!(e.data >= 1);
    // Periodic: fires again, no earlier than one more period.
    let evs = wait(&q, 4, Duration::from_secs(5));
    assert_eq!(evs.len(), 1);
    assert!(evs[0].data >= 1);
    assert_eq!(q.knote_count(), 1);
}

#[test]
fn timer_units() {
    let q = kq();
    let start = Instant::now();
    change(&q, &[kev(1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, NOTE_USECONDS, 30_000, 0)]);
    let evs = wait(&q, 4, Duration::from_secs(5));
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(evs, vec![kev(1, EVFILT_TIMER, EV_ONESHOT | EV_CLEAR, 0, 1, 0)]);

    let start = Instant::now();
    change(&q, &[kev(2, EVFILT_TIMER, EV_ADD | EV_ONESHOT, NOTE_NSECONDS, 25_000_000, 0)]);
    let evs = wait(&q, 4, Duration::from_secs(5));
    assert!(start.elapsed() >= Duration::from_millis(25));
    assert_eq!(evs, vec![kev(2, EVFILT_TIMER, EV_ONESHOT | EV_CLEAR, 0, 1, 0)]);

    // Two units at once: EINVAL.
    let mut out = [Kevent::default(); 2];
    let n = q.kevent(&[kev(3, EVFILT_TIMER, EV_ADD, NOTE_SECONDS | NOTE_USECONDS, 1, 0)], &mut out, None).unwrap();
    assert_eq!(n, 1);
    assert_eq!((out[0].flags, out[0].data), (EV_ERROR, libc::EINVAL as isize));
}

#[test]
fn timer_oneshot() {
    let q = kq();
    let start = Instant::now();
    change(&q, &[kev(7, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 10, 3)]);
    let evs = wait(&q, 4, Duration::from_secs(5));
    assert!(start.elapsed() >= Duration::from_millis(10));
    assert_eq!(evs, vec![kev(7, EVFILT_TIMER, EV_ONESHOT | EV_CLEAR, 0, 1, 3)]);
    assert_eq!(q.knote_count(), 0, "a oneshot timer is deleted once reported");
    assert!(wait(&q, 4, Duration::from_millis(40)).is_empty());
    // It is gone: EV_DELETE fails with ENOENT.
    assert_eq!(q.kevent(&[kev(7, EVFILT_TIMER, EV_DELETE, 0, 0, 0)], &mut [], None), Err(Errno(libc::ENOENT)));
}

#[test]
fn timer_zero_oneshot_fires_at_once() {
    let q = kq();
    change(&q, &[kev(1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 0, 0)]);
    assert_eq!(wait(&q, 4, Duration::from_secs(5)), vec![kev(1, EVFILT_TIMER, EV_ONESHOT | EV_CLEAR, 0, 1, 0)]);
}

#[test]
fn timer_overrun_counts_expirations() {
    let q = kq();
    change(&q, &[kev(1, EVFILT_TIMER, EV_ADD, 0, 5, 0)]);
    thread::sleep(Duration::from_millis(62));
    let evs = pending(&q);
    assert_eq!(evs.len(), 1, "overruns coalesce into one event");
    assert!(evs[0].data >= 12, "62 ms of a 5 ms timer: >= 12 expirations, got {}", evs[0].data);
    assert_eq!(evs[0].flags, EV_CLEAR);
    // The count restarts after a report.
    let evs = wait(&q, 4, Duration::from_secs(5));
    assert_eq!(evs.len(), 1);
    assert!(evs[0].data >= 1);
}

#[test]
fn timer_negative_is_einval() {
    let q = kq();
    let mut out = [Kevent::default(); 4];
    let n = q.kevent(&[kev(1, EVFILT_TIMER, EV_ADD, 0, -1, 11)], &mut out, None).unwrap();
    assert_eq!(n, 1);
    assert_eq!(out[0], kev(1, EVFILT_TIMER, EV_ERROR, 0, libc::EINVAL as isize, 11));
    assert_eq!(q.kevent(&[kev(1, EVFILT_TIMER, EV_ADD, 0, -5, 0)], &mut [], None), Err(Errno(libc::EINVAL)));
    assert_eq!(q.knote_count(), 0);
}

#[test]
fn timer_huge_does_not_overflow() {
    let q = kq();
    change(&q, &[kev(1, EVFILT_TIMER, EV_ADD, NOTE_SECONDS, isize::MAX, 0)]);
    assert_eq!(q.knote_count(), 1);
    assert!(wait(&q, 4, Duration::from_millis(30)).is_empty());
}

#[test]
fn timer_readd_replaces_period() {
    let q = kq();
    change(&q, &[kev(1, EVFILT_TIMER, EV_ADD, 0, 60_000, 1)]);
    assert!(wait(&q, 4, Duration::from_millis(20)).is_empty());
    let start = Instant::now();
    change(&q, &[kev(1, EVFILT_TIMER, EV_ADD, 0, 10, 2)]);
    let evs = wait(&q, 4, Duration::from_secs(5));
    assert!(start.elapsed() >= Duration::from_millis(10));
    assert_eq!(evs.len(), 1);
    assert_eq!((evs[0].ident, evs[0].flags, evs[0].udata), (1, EV_CLEAR, 2));
    assert_eq!(q.knote_count(), 1);
}

// ---------------------------------------------------------------------------------------------------
// EVFILT_READ / EVFILT_WRITE on a pipe and a socketpair
// ---------------------------------------------------------------------------------------------------

#[test]
fn pipe_read_exact_counts_and_eof() {
    let q = kq();
    let (r, mut w) = pipe();
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD, 0, 0, 42)]);
    assert!(pending(&q).is_empty());
    write_all(&w, b"hello");
    assert_eq!(wait(&q, 4, SHORT), vec![kev(r.id(), EVFILT_READ, 0, 0, 5, 42)]);
    // Level-triggered: still reported, with the new total.
    write_all(&w, b"abc");
    assert_eq!(pending(&q), vec![kev(r.id(), EVFILT_READ, 0, 0, 8, 42)]);
    assert_eq!(read_n(&r, 6), b"helloa");
    assert_eq!(pending(&q), vec![kev(r.id(), EVFILT_READ, 0, 0, 2, 42)]);
    assert_eq!(read_n(&r, 16), b"bc");
    assert!(pending(&q).is_empty());
    // Writer gone: EV_EOF, data 0. With bytes left: EV_EOF and the count together.
    write_all(&w, b"xy");
    w.close();
    assert_eq!(wait(&q, 4, SHORT), vec![kev(r.id(), EVFILT_READ, EV_EOF, 0, 2, 42)]);
    read_n(&r, 16);
    assert_eq!(pending(&q), vec![kev(r.id(), EVFILT_READ, EV_EOF, 0, 0, 42)]);
}

#[test]
fn pipe_write_space_and_eof() {
    let q = kq();
    let (mut r, w) = pipe();
    let cap = pipe_capacity(&w);
    change(&q, &[kev(w.id(), EVFILT_WRITE, EV_ADD, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(w.id(), EVFILT_WRITE, 0, 0, cap, 0)]);
    write_all(&w, &[0u8; 100]);
    assert_eq!(pending(&q), vec![kev(w.id(), EVFILT_WRITE, 0, 0, cap - 100, 0)]);
    r.close();
    let evs = pending(&q);
    assert_eq!(evs.len(), 1);
    assert_eq!((evs[0].ident, evs[0].filter), (w.id(), EVFILT_WRITE));
    assert_eq!(evs[0].flags & EV_EOF, EV_EOF, "reader gone: EV_EOF");
}

#[test]
fn socketpair_read_write_exact_counts() {
    let q = kq();
    let (a, b) = socketpair();
    change(&q, &[kev(b.id(), EVFILT_READ, EV_ADD, 0, 0, 1)]);
    assert!(pending(&q).is_empty());
    write_all(&a, b"foo");
    assert_eq!(wait(&q, 4, SHORT), vec![kev(b.id(), EVFILT_READ, 0, 0, 3, 1)]);
    assert_eq!(read_n(&b, 3), b"foo");
    assert!(pending(&q).is_empty());
    write_all(&a, b"0123456789");
    assert_eq!(read_n(&b, 4), b"0123");
    assert_eq!(pending(&q), vec![kev(b.id(), EVFILT_READ, 0, 0, 6, 1)]);
    read_n(&b, 16);

    // WRITE: data = send-buffer space (SO_SNDBUF minus what is queued).
    change(&q, &[kev(a.id(), EVFILT_WRITE, EV_ADD, 0, 0, 2)]);
    let evs = pending(&q);
    assert_eq!(evs, vec![kev(a.id(), EVFILT_WRITE, 0, 0, sndbuf(&a) - outq(&a), 2)]);
    assert!(evs[0].data > 0);
}

#[test]
fn socketpair_read_and_write_in_one_call() {
    let q = kq();
    let (a, b) = socketpair();
    write_all(&b, b"12345");
    change(&q, &[kev(a.id(), EVFILT_READ, EV_ADD, 0, 0, 0), kev(a.id(), EVFILT_WRITE, EV_ADD, 0, 0, 0)]);
    let mut evs = pending(&q);
    evs.sort_by_key(|e| e.filter);
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].filter, EVFILT_WRITE);
    assert_eq!(evs[1], kev(a.id(), EVFILT_READ, 0, 0, 5, 0));
}

#[test]
fn socketpair_shutdown_eof_with_data() {
    let q = kq();
    let (a, b) = socketpair();
    change(&q, &[kev(a.id(), EVFILT_READ, EV_ADD, 0, 0, 0)]);
    write_all(&b, b"zz");
    assert_eq!(shutdown_write(&b), 0);
    assert_eq!(wait(&q, 4, SHORT), vec![kev(a.id(), EVFILT_READ, EV_EOF, 0, 2, 0)]);
}

#[test]
fn read_on_closed_fd_is_ebadf() {
    let q = kq();
    let id = closed_fd();
    assert_eq!(q.kevent(&[kev(id, EVFILT_READ, EV_ADD, 0, 0, 0)], &mut [], None), Err(Errno(libc::EBADF)));
    assert_eq!(q.kevent(&[kev(id, EVFILT_WRITE, EV_ADD, 0, 0, 0)], &mut [], None), Err(Errno(libc::EBADF)));
    // BSD checks the fd before looking the knote up: EV_DELETE of a closed fd is EBADF, not ENOENT.
    assert_eq!(q.kevent(&[kev(id, EVFILT_READ, EV_DELETE, 0, 0, 0)], &mut [], None), Err(Errno(libc::EBADF)));
    assert_eq!(q.kevent(&[kev(1 << 40, EVFILT_READ, EV_ADD, 0, 0, 0)], &mut [], None), Err(Errno(libc::EBADF)));
    assert_eq!(q.knote_count(), 0);
}

// ---------------------------------------------------------------------------------------------------
// EV_ERROR entries, EV_RECEIPT
// ---------------------------------------------------------------------------------------------------

#[test]
fn ev_error_entries_with_room() {
    let q = kq();
    // A pending event that must NOT be collected by a call that writes error entries.
    change(&q, &[user_add(100, 0, 0), user_trigger(100, 0, 0, 0)]);
    let bad = closed_fd();
    let changes = [
        kev(5, EVFILT_USER, EV_DELETE, 0, 0, 55),                      // ENOENT
        user_add(6, EV_CLEAR, 66),                                     // fine
        kev(bad, EVFILT_READ, EV_ADD, 0, 0, 77),                       // EBADF
        kev(7, EVFILT_USER, EV_ENABLE, 0, 0, 0),                       // ENOENT
        kev(8, EVFILT_USER, EV_ADD | EV_ENABLE | EV_DISABLE, 0, 0, 0), // EINVAL
    ];
    let mut out = [Kevent::default(); 8];
    let n = q.kevent(&changes, &mut out, Some(SHORT)).unwrap();
    assert_eq!(n, 4);
    assert_eq!(out[0], kev(5, EVFILT_USER, EV_ERROR, 0, libc::ENOENT as isize, 55));
    assert_eq!(out[1], kev(bad, EVFILT_READ, EV_ERROR, 0, libc::EBADF as isize, 77));
    assert_eq!(out[2], kev(7, EVFILT_USER, EV_ERROR, 0, libc::ENOENT as isize, 0));
    assert_eq!(out[3], kev(8, EVFILT_USER, EV_ERROR, 0, libc::EINVAL as isize, 0));
    // The good change was applied; the failing ones were not.
    assert_eq!(q.knote_count(), 2);
    // The pending event is still there for the next call.
    assert_eq!(pending(&q), vec![kev(100, EVFILT_USER, 0, 0, 0, 0)]);
}

#[test]
fn ev_error_without_room_fails_the_call() {
    let q = kq();
    assert_eq!(q.kevent(&[kev(5, EVFILT_USER, EV_DELETE, 0, 0, 0)], &mut [], None), Err(Errno(libc::ENOENT)));
    // The first failure takes the only slot; the second has no room: the call fails with its errno.
    let mut out = [Kevent::default(); 1];
    let r =
        q.kevent(&[kev(1, EVFILT_USER, EV_DELETE, 0, 0, 0), kev(2, EVFILT_TIMER, EV_ADD, 0, -1, 0)], &mut out, None);
    assert_eq!(r, Err(Errno(libc::EINVAL)));
    // Changes after the failing one are not applied; those before are.
    let r = q.kevent(&[user_add(1, 0, 0), kev(9, EVFILT_USER, EV_DELETE, 0, 0, 0), user_add(2, 0, 0)], &mut [], None);
    assert_eq!(r, Err(Errno(libc::ENOENT)));
    assert_eq!(q.knote_count(), 1);
    assert_eq!(q.kevent(&[kev(1, EVFILT_USER, EV_DELETE, 0, 0, 0)], &mut [], None), Ok(0));
    assert_eq!(q.kevent(&[kev(2, EVFILT_USER, EV_DELETE, 0, 0, 0)], &mut [], None), Err(Errno(libc::ENOENT)));
}

#[test]
fn unknown_flags_and_fflags_are_einval() {
    let q = kq();
    let (r, _w) = pipe();
    let mut out = [Kevent::default(); 4];
    let changes = [
        kev(1, EVFILT_USER, EV_ADD | 0x0800, 0, 0, 0),
        kev(r.id(), EVFILT_READ, EV_ADD, 0x2, 0, 0),
        kev(r.id(), EVFILT_WRITE, EV_ADD, 0x2, 0, 0),
        kev(3, EVFILT_TIMER, EV_ADD, 0x100, 10, 0),
    ];
    assert_eq!(q.kevent(&changes, &mut out, None), Ok(4));
    for e in &out {
        assert_eq!((e.flags, e.data), (EV_ERROR, libc::EINVAL as isize), "{e:?}");
    }
    assert_eq!(q.knote_count(), 0);
    // EVFILT_USER ignores fflags bits above NOTE_FFLAGSMASK (FreeBSD's filt_usertouch masks them).
    let all = kev(2, EVFILT_USER, EV_ADD | EV_CLEAR, !(NOTE_FFCTRLMASK | NOTE_TRIGGER), 0, 0);
    assert_eq!(q.kevent(&[all, kev(2, EVFILT_USER, 0, NOTE_TRIGGER, 0, 0)], &mut out, None), Ok(1));
    assert_eq!((out[0].flags & EV_ERROR, out[0].fflags), (0, 0x00ff_ffff));
}

#[test]
fn output_flags_on_input_are_ignored() {
    let q = kq();
    // EV_EOF / EV_ERROR / EV_FLAG1 in a change are output flags: ignored, not stored.
    change(&q, &[kev(1, EVFILT_USER, EV_ADD | EV_EOF | EV_ERROR | EV_FLAG1, 0, 0, 0), user_trigger(1, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(1, EVFILT_USER, 0, 0, 0, 0)]);
}

#[test]
fn receipt_echoes_every_change_and_collects_nothing() {
    let q = kq();
    change(&q, &[user_add(50, 0, 0), user_trigger(50, 0, 0, 0)]);
    let mut out = [Kevent::default(); 8];
    let changes = [
        kev(1, EVFILT_USER, EV_ADD | EV_RECEIPT, 0x7, 3, 10),
        kev(2, EVFILT_USER, EV_ADD | EV_RECEIPT, 0, 0, 20),
        kev(3, EVFILT_USER, EV_DELETE | EV_RECEIPT, 0, 0, 30),
    ];
    let n = q.kevent(&changes, &mut out, Some(SHORT)).unwrap();
    assert_eq!(n, 3, "every change echoed, no pending event collected");
    assert_eq!(
        (out[0].ident, out[0].filter, out[0].flags, out[0].data, out[0].udata),
        (1, EVFILT_USER, EV_ERROR, 0, 10)
    );
    assert_eq!(
        (out[1].ident, out[1].filter, out[1].flags, out[1].data, out[1].udata),
        (2, EVFILT_USER, EV_ERROR, 0, 20)
    );
    assert_eq!(out[2], kev(3, EVFILT_USER, EV_ERROR, 0, libc::ENOENT as isize, 30));
    assert_eq!(q.knote_count(), 3);
    // Without room: the receipt of a success is dropped, the change is applied, Ok(0).
    assert_eq!(q.kevent(&[kev(4, EVFILT_USER, EV_ADD | EV_RECEIPT, 0, 0, 0)], &mut [], None), Ok(0));
    assert_eq!(q.knote_count(), 4);
    // The pending event is still there.
    assert_eq!(pending(&q), vec![kev(50, EVFILT_USER, 0, 0, 0, 0)]);
}

#[test]
fn receipt_without_room_after_entries_returns_zero_and_stops() {
    // FreeBSD kqueue_kevent(): a receipt with no room left ends the call with `return (error)`, error
    // being 0 for a success: kevent() returns 0 although entries were written, and the changes after it
    // are not applied (the one with the receipt is).
    let q = kq();
    let mut out = [Kevent::default(); 2];
    let changes = [
        kev(1, EVFILT_USER, EV_ADD | EV_RECEIPT, 0, 0, 10),
        kev(9, EVFILT_USER, EV_DELETE, 0, 0, 90), // ENOENT: the second entry
        kev(2, EVFILT_USER, EV_ADD | EV_RECEIPT, 0, 0, 20), // applied, no room for its receipt
        user_add(3, 0, 30),                       // not applied
    ];
    assert_eq!(q.kevent(&changes, &mut out, Some(SHORT)), Ok(0));
    assert_eq!(out[0], kev(1, EVFILT_USER, EV_ERROR, 0, 0, 10));
    assert_eq!(out[1], kev(9, EVFILT_USER, EV_ERROR, 0, libc::ENOENT as isize, 90));
    assert_eq!(q.knote_count(), 2);
    assert_eq!(q.kevent(&[kev(3, EVFILT_USER, EV_DELETE, 0, 0, 0)], &mut [], None), Err(Errno(libc::ENOENT)));
}

#[test]
fn receipt_is_sticky() {
    let q = kq();
    change(&q, &[kev(1, EVFILT_USER, EV_ADD | EV_CLEAR | EV_RECEIPT, 0, 0, 0)]);
    change(&q, &[user_trigger(1, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(1, EVFILT_USER, EV_CLEAR | EV_RECEIPT, 0, 0, 0)]);
}

// ---------------------------------------------------------------------------------------------------
// EV_ONESHOT, EV_DISPATCH, EV_CLEAR, EV_DISABLE, EV_ENABLE, EV_DELETE
// ---------------------------------------------------------------------------------------------------

#[test]
fn oneshot_user_reported_once_then_deleted() {
    let q = kq();
    change(&q, &[user_add(1, EV_ONESHOT, 4), user_trigger(1, 0, 0, 4)]);
    assert_eq!(pending(&q), vec![kev(1, EVFILT_USER, EV_ONESHOT, 0, 0, 4)]);
    assert_eq!(q.knote_count(), 0);
    assert!(pending(&q).is_empty());
    assert_eq!(q.kevent(&[user_trigger(1, 0, 0, 0)], &mut [], None), Err(Errno(libc::ENOENT)));
}

#[test]
fn oneshot_pipe() {
    let q = kq();
    let (r, w) = pipe();
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD | EV_ONESHOT, 0, 0, 0)]);
    write_all(&w, b"abcd");
    assert_eq!(wait(&q, 4, SHORT), vec![kev(r.id(), EVFILT_READ, EV_ONESHOT, 0, 4, 0)]);
    assert_eq!(q.knote_count(), 0);
    assert!(pending(&q).is_empty());
}

#[test]
fn dispatch_user_disabled_after_each_report() {
    let q = kq();
    change(&q, &[user_add(1, EV_DISPATCH, 0), user_trigger(1, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(1, EVFILT_USER, EV_DISPATCH, 0, 0, 0)]);
    assert!(pending(&q).is_empty(), "disabled after the report");
    change(&q, &[user_trigger(1, 0, 0, 0)]);
    assert!(pending(&q).is_empty(), "a trigger does not re-enable");
    change(&q, &[kev(1, EVFILT_USER, EV_ENABLE, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(1, EVFILT_USER, EV_DISPATCH, 0, 0, 0)]);
    assert_eq!(q.knote_count(), 1);
    // EV_ENABLE|NOTE_TRIGGER in one change re-arms and fires.
    change(&q, &[kev(1, EVFILT_USER, EV_CLEAR, 0, 0, 0)]);
    change(&q, &[kev(1, EVFILT_USER, EV_ENABLE, NOTE_TRIGGER, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(1, EVFILT_USER, EV_DISPATCH, 0, 0, 0)]);
}

#[test]
fn dispatch_pipe() {
    let q = kq();
    let (r, w) = pipe();
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD | EV_DISPATCH, 0, 0, 0)]);
    write_all(&w, b"ab");
    assert_eq!(wait(&q, 4, SHORT), vec![kev(r.id(), EVFILT_READ, EV_DISPATCH, 0, 2, 0)]);
    write_all(&w, b"cde");
    assert!(pending(&q).is_empty());
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ENABLE, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(r.id(), EVFILT_READ, EV_DISPATCH, 0, 5, 0)]);
}

#[test]
fn clear_pipe_edge_triggered() {
    let q = kq();
    let (r, w) = pipe();
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, 0)]);
    write_all(&w, b"abc");
    assert_eq!(wait(&q, 4, SHORT), vec![kev(r.id(), EVFILT_READ, EV_CLEAR, 0, 3, 0)]);
    assert!(pending(&q).is_empty(), "EV_CLEAR: no new event without new data");
    write_all(&w, b"de");
    assert_eq!(wait(&q, 4, SHORT), vec![kev(r.id(), EVFILT_READ, EV_CLEAR, 0, 5, 0)]);
    assert!(pending(&q).is_empty());
}

#[test]
fn disable_drops_pending_enable_rearms() {
    let q = kq();
    let (r, w) = pipe();
    write_all(&w, b"1234");
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD, 0, 0, 0)]);
    change(&q, &[kev(r.id(), EVFILT_READ, EV_DISABLE, 0, 0, 0)]);
    assert!(pending(&q).is_empty());
    write_all(&w, b"5");
    assert!(pending(&q).is_empty());
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ENABLE, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(r.id(), EVFILT_READ, 0, 0, 5, 0)]);

    // USER: a pending trigger is dropped from the queue by EV_DISABLE and comes back with EV_ENABLE.
    change(&q, &[kev(r.id(), EVFILT_READ, EV_DELETE, 0, 0, 0)]);
    change(&q, &[user_add(1, 0, 0), user_trigger(1, 0, 0, 0), kev(1, EVFILT_USER, EV_DISABLE, 0, 0, 0)]);
    assert!(pending(&q).is_empty());
    change(&q, &[kev(1, EVFILT_USER, EV_ENABLE, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(1, EVFILT_USER, 0, 0, 0, 0)]);
}

#[test]
fn add_disabled_never_fires_until_enabled() {
    let q = kq();
    let (r, w) = pipe();
    write_all(&w, b"xyz");
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD | EV_DISABLE, 0, 0, 0), user_add(1, EV_DISABLE, 0)]);
    change(&q, &[user_trigger(1, 0, 0, 0)]);
    assert!(wait(&q, 4, Duration::from_millis(20)).is_empty());
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ENABLE, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(r.id(), EVFILT_READ, 0, 0, 3, 0)]);
    change(&q, &[kev(1, EVFILT_USER, EV_ENABLE, 0, 0, 0)]);
    let mut evs = pending(&q);
    evs.sort_by_key(|e| e.filter);
    assert_eq!(evs, vec![kev(1, EVFILT_USER, 0, 0, 0, 0), kev(r.id(), EVFILT_READ, 0, 0, 3, 0)]);
}

#[test]
fn delete_drops_pending() {
    let q = kq();
    let (r, w) = pipe();
    write_all(&w, b"x");
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD, 0, 0, 0), user_add(1, 0, 0), user_trigger(1, 0, 0, 0)]);
    change(&q, &[kev(r.id(), EVFILT_READ, EV_DELETE, 0, 0, 0), kev(1, EVFILT_USER, EV_DELETE, 0, 0, 0)]);
    assert!(pending(&q).is_empty());
    assert_eq!(q.knote_count(), 0);
    assert_eq!(q.kevent(&[kev(r.id(), EVFILT_READ, EV_DELETE, 0, 0, 0)], &mut [], None), Err(Errno(libc::ENOENT)));
}

#[test]
fn readd_replaces_udata() {
    let q = kq();
    let (r, w) = pipe();
    write_all(&w, b"x");
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD, 0, 0, 1)]);
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD, 0, 0, 2)]);
    assert_eq!(q.knote_count(), 1);
    assert_eq!(pending(&q), vec![kev(r.id(), EVFILT_READ, 0, 0, 1, 2)]);
}

// ---------------------------------------------------------------------------------------------------
// Timeouts, close, threads, pollability
// ---------------------------------------------------------------------------------------------------

#[test]
fn no_early_return_before_timeout() {
    let q = kq();
    for &us in &[300u64, 1_500, 20_000, 60_000] {
        let t = Duration::from_micros(us);
        let start = Instant::now();
        assert_eq!(q.kevent(&[], &mut [Kevent::default(); 4], Some(t)), Ok(0));
        assert!(start.elapsed() >= t, "returned 0 after {:?} < {:?}", start.elapsed(), t);
    }
    // A wake-up that yields nothing (NOTE_LOWAT not met) is absorbed, not returned as 0 early.
    let (r, w) = pipe();
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD, NOTE_LOWAT, 10, 0)]);
    write_all(&w, b"abc");
    let t = Duration::from_millis(80);
    let start = Instant::now();
    assert_eq!(q.kevent(&[], &mut [Kevent::default(); 4], Some(t)), Ok(0));
    assert!(start.elapsed() >= t);
    write_all(&w, b"defghij");
    assert_eq!(wait(&q, 4, SHORT), vec![kev(r.id(), EVFILT_READ, 0, 0, 10, 0)]);
}

#[test]
fn zero_timeout_and_zero_room_return_at_once() {
    let q = kq();
    let start = Instant::now();
    // No room: returns at once whatever the timeout.
    assert_eq!(q.kevent(&[], &mut [], Some(Duration::from_secs(30))), Ok(0));
    assert_eq!(q.kevent(&[], &mut [], None), Ok(0));
    assert_eq!(q.kevent(&[], &mut [Kevent::default(); 4], Some(Duration::ZERO)), Ok(0));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn close_wakes_blocked_thread_with_ebadf() {
    let q = Arc::new(kq());
    let (tx, rx) = mpsc::channel();
    let q2 = q.clone();
    let t = thread::spawn(move || {
        let mut out = [Kevent::default(); 4];
        let _ = tx.send(q2.kevent(&[], &mut out, None));
    });
    thread::sleep(Duration::from_millis(50));
    q.close();
    let r = rx.recv_timeout(Duration::from_secs(5)).expect("blocked thread not woken by close() within 5 s");
    t.join().unwrap();
    assert_eq!(r, Err(Errno(libc::EBADF)));
    assert!(q.is_closed());
    assert_eq!(q.kevent(&[user_add(1, 0, 0)], &mut [], None), Err(Errno(libc::EBADF)));
    q.close(); // twice is fine
    assert!(q.is_closed());
}

#[test]
fn close_closes_the_fd() {
    let q = kq();
    let fd = q.fd();
    assert!(fd >= 0);
    assert!(!q.is_closed());
    let flags = fd_flags(fd);
    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC, "kqueue fd is close-on-exec");
    q.close();
    // The fd number may be reused by another thread at once; only check it is no longer an epoll fd of
    // ours by asking the engine.
    assert!(q.is_closed());
    assert_eq!(q.kevent(&[], &mut [Kevent::default(); 1], Some(Duration::ZERO)), Err(Errno(libc::EBADF)));
}

#[test]
fn oneshot_user_delivered_to_exactly_one_of_many_threads() {
    const THREADS: usize = 4;
    for rep in 0..200 {
        let q = Arc::new(kq());
        change(&q, &[user_add(1, EV_ONESHOT, rep)]);
        let barrier = Arc::new(Barrier::new(THREADS + 1));
        let (tx, rx) = mpsc::channel();
        let mut handles = Vec::new();
        for _ in 0..THREADS {
            let (q, b, tx) = (q.clone(), barrier.clone(), tx.clone());
            handles.push(thread::spawn(move || {
                b.wait();
                let mut out = [Kevent::default(); 4];
                let r = q.kevent(&[], &mut out, Some(Duration::from_secs(5)));
                let _ = tx.send(r.map(|n| out[..n].to_vec()));
            }));
        }
        drop(tx);
        barrier.wait();
        change(&q, &[user_trigger(1, 0, 0, rep)]);
        // The first result is the delivery.
        let first = rx.recv_timeout(Duration::from_secs(5)).expect("no thread got the event within 5 s");
        assert_eq!(first, Ok(vec![kev(1, EVFILT_USER, EV_ONESHOT, 0, 0, rep)]), "rep {rep}");
        // Wake the others: they must return EBADF, not a second copy of the event.
        q.close();
        let mut delivered = 1;
        for _ in 1..THREADS {
            let r = rx.recv_timeout(Duration::from_secs(5)).expect("thread not woken by close()");
            match r {
                Ok(v) if !v.is_empty() => delivered += v.len(),
                Ok(_) => panic!("rep {rep}: kevent without timeout expiry returned 0"),
                Err(e) => assert_eq!(e, Errno(libc::EBADF)),
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(delivered, 1, "rep {rep}: EV_ONESHOT delivered {delivered} times");
    }
}

#[test]
fn thread_that_loses_the_race_waits_out_its_timeout() {
    // Both threads are woken by one trigger; the loser's wake-up yields nothing and must be absorbed:
    // it returns 0 only once its own timeout has passed.
    const THREADS: usize = 3;
    let q = Arc::new(kq());
    change(&q, &[user_add(1, EV_ONESHOT, 0)]);
    let barrier = Arc::new(Barrier::new(THREADS + 1));
    let timeout = Duration::from_millis(150);
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (q, b) = (q.clone(), barrier.clone());
            thread::spawn(move || {
                b.wait();
                let start = Instant::now();
                let mut out = [Kevent::default(); 4];
                let r = q.kevent(&[], &mut out, Some(timeout));
                (r, start.elapsed())
            })
        })
        .collect();
    barrier.wait();
    thread::sleep(Duration::from_millis(20));
    change(&q, &[user_trigger(1, 0, 0, 0)]);
    let mut winners = 0;
    for h in handles {
        let (r, elapsed) = h.join().unwrap();
        match r {
            Ok(1) => winners += 1,
            Ok(0) => assert!(elapsed >= timeout, "a loser returned 0 after {elapsed:?}, before its timeout"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners, 1);
}

#[test]
fn kqueue_fd_pollable_exactly_when_pending() {
    let q = kq();
    assert!(!poll_readable(q.fd()));
    change(&q, &[user_add(1, EV_CLEAR, 0)]);
    assert!(!poll_readable(q.fd()));
    change(&q, &[user_trigger(1, 0, 0, 0)]);
    assert!(poll_readable(q.fd()), "a triggered USER event makes the kqueue readable");
    assert_eq!(pending(&q).len(), 1);
    assert!(!poll_readable(q.fd()), "nothing pending after the EV_CLEAR report");

    let (r, w) = pipe();
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD, 0, 0, 0)]);
    assert!(!poll_readable(q.fd()));
    write_all(&w, b"ab");
    assert!(poll_readable(q.fd()));
    // Level-triggered: still pending after a report, until the data is read.
    assert_eq!(pending(&q).len(), 1);
    assert!(poll_readable(q.fd()));
    read_n(&r, 2);
    assert!(!poll_readable(q.fd()));
    // Disabled: not pending, not readable.
    write_all(&w, b"c");
    change(&q, &[kev(r.id(), EVFILT_READ, EV_DISABLE, 0, 0, 0)]);
    assert!(!poll_readable(q.fd()));
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ENABLE, 0, 0, 0)]);
    assert!(poll_readable(q.fd()));

    // A timer that expired makes it readable too.
    change(&q, &[kev(r.id(), EVFILT_READ, EV_DELETE, 0, 0, 0)]);
    assert!(!poll_readable(q.fd()));
    change(&q, &[kev(1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 5, 0)]);
    assert_eq!(poll_in(q.fd(), 5000).0, 1);
    assert_eq!(pending(&q), vec![kev(1, EVFILT_TIMER, EV_ONESHOT | EV_CLEAR, 0, 1, 0)]);
    assert!(!poll_readable(q.fd()));
}

// ---------------------------------------------------------------------------------------------------
// Filters: unsupported / unknown
// ---------------------------------------------------------------------------------------------------

#[test]
fn unsupported_filters_eopnotsupp_unknown_einval() {
    let q = kq();
    let (r, _w) = pipe();
    let known = [EVFILT_AIO, EVFILT_VNODE, EVFILT_PROC, EVFILT_SIGNAL, EVFILT_NETDEV, EVFILT_FS, EVFILT_LIO];
    let mut unsupported = 0;
    for f in known {
        if kqrs::is_supported(f) {
            continue; // built since this test was written; its own tests cover it
        }
        unsupported += 1;
        let mut out = [Kevent::default(); 2];
        let n = q.kevent(&[kev(r.id(), f, EV_ADD, 0, 0, 9)], &mut out, None).unwrap();
        assert_eq!(n, 1, "filter {f}");
        assert_eq!(out[0], kev(r.id(), f, EV_ERROR, 0, libc::EOPNOTSUPP as isize, 9), "filter {f}");
        assert_eq!(q.kevent(&[kev(r.id(), f, EV_ADD, 0, 0, 0)], &mut [], None), Err(Errno(libc::EOPNOTSUPP)));
    }
    // AIO and LIO have no Linux counterpart planned; they must stay refused.
    assert!(unsupported >= 2);
    for f in [EVFILT_READ, EVFILT_WRITE, EVFILT_TIMER, EVFILT_USER] {
        assert!(kqrs::is_supported(f));
    }
    for f in [1i16, 5, 100, i16::MAX, -14, -100, i16::MIN] {
        assert!(!kqrs::is_supported(f));
        let mut out = [Kevent::default(); 2];
        let n = q.kevent(&[kev(1, f, EV_ADD, 0, 0, 0)], &mut out, None).unwrap();
        assert_eq!(n, 1, "filter {f}");
        assert_eq!(out[0], kev(1, f, EV_ERROR, 0, libc::EINVAL as isize, 0), "filter {f}");
        assert_eq!(q.kevent(&[kev(1, f, EV_ADD, 0, 0, 0)], &mut [], None), Err(Errno(libc::EINVAL)));
    }
    assert_eq!(q.knote_count(), 0);
}

// ---------------------------------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------------------------------

#[test]
fn ten_thousand_user_knotes_round_trip() {
    const N: usize = 10_000;
    let q = kq();
    let adds: Vec<Kevent> = (0..N).map(|i| user_add(i, EV_CLEAR, i + 1_000_000)).collect();
    change(&q, &adds);
    assert_eq!(q.knote_count(), N);
    assert!(pending(&q).is_empty());
    let triggers: Vec<Kevent> =
        (0..N).map(|i| user_trigger(i, NOTE_FFCOPY | (i as u32 & 0xff), i as isize, i + 1_000_000)).collect();
    change(&q, &triggers);
    let mut seen = vec![false; N];
    let mut total = 0;
    while total < N {
        let evs = wait(&q, 1000, SHORT);
        assert!(!evs.is_empty(), "only {total} of {N} events collected");
        for e in evs {
            assert_eq!(e.filter, EVFILT_USER);
            assert_eq!(e.flags, EV_CLEAR);
            assert!(e.ident < N);
            assert_eq!((e.fflags, e.data, e.udata), (e.ident as u32 & 0xff, e.ident as isize, e.ident + 1_000_000));
            assert!(!seen[e.ident], "ident {} reported twice", e.ident);
            seen[e.ident] = true;
            total += 1;
        }
    }
    assert!(pending(&q).is_empty());
    let dels: Vec<Kevent> = (0..N).map(|i| kev(i, EVFILT_USER, EV_DELETE, 0, 0, 0)).collect();
    change(&q, &dels);
    assert_eq!(q.knote_count(), 0);
}

// ---------------------------------------------------------------------------------------------------
// EVFILT_VNODE
// ---------------------------------------------------------------------------------------------------

/// rmdir of an open directory is told by Linux only to its parent, which nobody watches here: the knote's
/// NOTE_DELETE comes from kqrs's own watch on the parent, and only for that directory (a sibling of another
/// name removed first says nothing).
#[test]
fn vnode_rmdir_of_an_open_directory_with_the_parent_not_watched() {
    use std::os::fd::AsRawFd;
    let top = std::env::temp_dir().join(format!("kqrs-engine-rmdir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&top);
    std::fs::create_dir_all(top.join("d")).unwrap();
    std::fs::create_dir(top.join("sibling")).unwrap();
    let dir = std::fs::File::open(top.join("d")).unwrap();
    let fd = dir.as_raw_fd() as usize;
    let q = kq();
    change(&q, &[kev(fd, EVFILT_VNODE, EV_ADD | EV_CLEAR, NOTE_DELETE | NOTE_WRITE, 0, 5)]);
    std::fs::remove_dir(top.join("sibling")).unwrap();
    assert!(pending(&q).is_empty());
    std::fs::remove_dir(top.join("d")).unwrap();
    assert_eq!(wait(&q, 4, SHORT), vec![kev(fd, EVFILT_VNODE, EV_CLEAR, NOTE_DELETE, 0, 5)]);
    drop(dir);
    std::fs::remove_dir(&top).unwrap();
}

// ---------------------------------------------------------------------------------------------------
// EVFILT_PROC and EVFILT_PROCDESC (children are made with std::process::Command: the test harness runs
// threads, so nothing forks by hand)
// ---------------------------------------------------------------------------------------------------

use std::io::Write as _;
use std::process::{Child, Command, Stdio};

const LONG: Duration = Duration::from_secs(5);
const EXITED: u16 = EV_CLEAR | EV_EOF | EV_ONESHOT;

/// `sh` that waits for a line on stdin, then runs `script`.
fn child(script: &str) -> Child {
    Command::new("sh").arg("-c").arg(format!("read x; {script}")).stdin(Stdio::piped()).spawn().expect("spawn sh")
}

fn release(c: &mut Child) {
    let mut stdin = c.stdin.take().expect("stdin");
    stdin.write_all(b"\n").expect("write to the child");
}

/// Events until `done` says so, or `LONG` passed.
fn collect_until(q: &Kqueue, done: impl Fn(&[Kevent]) -> bool) -> Vec<Kevent> {
    let deadline = Instant::now() + LONG;
    let mut evs = Vec::new();
    while !done(&evs) && Instant::now() < deadline {
        evs.extend(wait(q, 16, Duration::from_millis(200)));
    }
    evs
}

fn effective_cap(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("CapEff:")).expect("CapEff");
    let caps = u64::from_str_radix(line.split_whitespace().nth(1).expect("CapEff value"), 16).expect("hex");
    caps >> bit & 1 == 1
}

/// What EVFILT_PROC and EVFILT_PROCDESC rest on (scripts/valgrind.sh asks it of the valgrind it runs).
#[test]
fn pidfd_open_is_available() {
    // SAFETY: pidfd_open takes integers only.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid() as libc::c_long, 0) } as i32;
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    drop(Fd(fd));
}

/// A process descriptor (pidfd_open) for one of this test's children.
fn pidfd_open(pid: u32) -> Fd {
    // SAFETY: pidfd_open takes integers only.
    let pidfd = Fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0) } as i32);
    assert!(pidfd.raw() >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    pidfd
}

#[test]
fn proc_exit_reports_the_wait_status_and_leaves_the_child_unreaped() {
    let q = kq();
    let mut c = child("exit 3");
    let pid = c.id() as usize;
    change(&q, &[kev(pid, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, 7)]);
    assert_eq!(q.knote_count(), 1);
    assert!(pending(&q).is_empty(), "a running child must not fire");
    release(&mut c);
    assert_eq!(wait(&q, 4, LONG), vec![kev(pid, EVFILT_PROC, EXITED, NOTE_EXIT, 3 << 8, 7)]);
    assert_eq!(q.knote_count(), 0, "the knote goes with the exit");
    assert_eq!(c.wait().expect("wait").code(), Some(3), "kqrs reaped the child");
}

#[test]
fn proc_death_by_signal_and_delete_before_exit() {
    let q = kq();
    let mut a = child("exit 0");
    let mut b = child("exit 0");
    let (pa, pb) = (a.id() as usize, b.id() as usize);
    change(&q, &[kev(pa, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, 1), kev(pb, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, 2)]);
    change(&q, &[kev(pb, EVFILT_PROC, EV_DELETE, 0, 0, 0)]);
    // SAFETY: kill(2) takes integers only; pa and pb are children this test made.
    unsafe {
        libc::kill(pa as i32, libc::SIGKILL);
        libc::kill(pb as i32, libc::SIGKILL);
    }
    assert_eq!(wait(&q, 4, LONG), vec![kev(pa, EVFILT_PROC, EXITED, NOTE_EXIT, libc::SIGKILL as isize, 1)]);
    assert!(wait(&q, 4, Duration::from_millis(100)).is_empty(), "a deleted knote reported");
    a.wait().expect("wait");
    b.wait().expect("wait");
    assert_eq!(q.knote_count(), 0);
}

#[test]
fn proc_of_no_process_is_esrch_and_bad_fflags_einval() {
    let q = kq();
    let mut out = [Kevent::default(); 4];
    let n = q
        .kevent(
            &[
                kev(0x3fff_fff0, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, 0),
                kev(std::process::id() as usize, EVFILT_PROC, EV_ADD, NOTE_EXIT | 0x10, 0, 0),
            ],
            &mut out,
            None,
        )
        .expect("kevent");
    assert_eq!(n, 2);
    assert_eq!((out[0].flags, out[0].data), (EV_ERROR, libc::ESRCH as isize));
    assert_eq!((out[1].flags, out[1].data), (EV_ERROR, libc::EINVAL as isize));
    assert_eq!(q.knote_count(), 0);
}

#[test]
fn procdesc_reports_the_exit_through_a_pidfd() {
    let q = kq();
    let mut c = child("exit 4");
    let pidfd = pidfd_open(c.id());
    change(&q, &[kev(pidfd.id(), EVFILT_PROCDESC, EV_ADD, NOTE_EXIT, 0, 9)]);
    // NOTE_FORK is not for process descriptors
    let mut out = [Kevent::default(); 1];
    assert_eq!(q.kevent(&[kev(pidfd.id(), EVFILT_PROCDESC, EV_ADD, NOTE_FORK, 0, 0)], &mut out, None), Ok(1));
    assert_eq!((out[0].flags, out[0].data), (EV_ERROR, libc::EINVAL as isize));
    release(&mut c);
    let evs = wait(&q, 4, LONG);
    assert_eq!(evs.len(), 1, "{evs:?}");
    let e = evs[0];
    assert_eq!((e.ident, e.filter, e.fflags, e.data, e.udata), (pidfd.id(), EVFILT_PROCDESC, NOTE_EXIT, 4 << 8, 9));
    assert_eq!(e.flags & (EV_EOF | EV_ONESHOT), EV_EOF | EV_ONESHOT, "{e:?}");
    assert_eq!(q.knote_count(), 0);
    assert_eq!(c.wait().expect("wait").code(), Some(4));
}

/// The fd of this process whose /proc fdinfo says it is a pidfd of `pid` (kqrs's own, in these tests).
fn pidfd_of(pid: usize) -> Option<i32> {
    let want = format!("Pid:\t{pid}");
    std::fs::read_dir("/proc/self/fd").ok()?.flatten().find_map(|e| {
        let fd: i32 = e.file_name().to_str()?.parse().ok()?;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        info.lines().any(|l| l == want).then_some(fd)
    })
}

/// A pidfd's file outlives kqrs's fd when something else holds it (a process forked from ours, or here a
/// dup() of it). After the exit is reported and the knote is gone, nothing of it may report again, and
/// the next knote (whose pidfd may get the same number) works.
#[test]
fn proc_exit_while_another_fd_still_holds_the_pidfd() {
    let q = kq();
    let mut a = child("exit 6");
    let pa = a.id() as usize;
    change(&q, &[kev(pa, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, 1)]);
    let ours = pidfd_of(pa).expect("kqrs's pidfd for the child");
    // SAFETY: dup of an open fd; the duplicate is owned (and closed) by `holder`.
    let holder = Fd(unsafe { libc::fcntl(ours, libc::F_DUPFD_CLOEXEC, 0) });
    assert!(holder.raw() >= 0, "dup: {}", std::io::Error::last_os_error());
    release(&mut a);
    assert_eq!(wait(&q, 4, LONG), vec![kev(pa, EVFILT_PROC, EXITED, NOTE_EXIT, 6 << 8, 1)]);
    assert_eq!(q.knote_count(), 0);
    assert!(wait(&q, 4, Duration::from_millis(100)).is_empty(), "the gone knote's pidfd reported again");
    let mut b = child("exit 7");
    let pb = b.id() as usize;
    change(&q, &[kev(pb, EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, 2)]);
    release(&mut b);
    assert_eq!(wait(&q, 4, LONG), vec![kev(pb, EVFILT_PROC, EXITED, NOTE_EXIT, 7 << 8, 2)]);
    let st = q.stats();
    assert_eq!((st.stale_events, st.rebuilds), (0, 0), "{st:?}");
    drop(holder);
    a.wait().expect("wait");
    b.wait().expect("wait");
}

/// EVFILT_PROCDESC watches through its own duplicate of the caller's pidfd, so its file stays open after
/// the knote goes: the same descriptor can be watched again, and reports the (unreaped) exit at once.
#[test]
fn procdesc_can_watch_the_same_descriptor_again_after_the_exit() {
    let q = kq();
    let mut c = child("exit 5");
    let pidfd = pidfd_open(c.id());
    change(&q, &[kev(pidfd.id(), EVFILT_PROCDESC, EV_ADD, NOTE_EXIT, 0, 1)]);
    release(&mut c);
    let first = wait(&q, 4, LONG);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0].fflags, first[0].data, first[0].udata), (NOTE_EXIT, 5 << 8, 1));
    for round in 2..5 {
        change(&q, &[kev(pidfd.id(), EVFILT_PROCDESC, EV_ADD, NOTE_EXIT, 0, round)]);
        let again = wait(&q, 4, LONG);
        assert_eq!(again.len(), 1, "round {round}: {again:?}");
        assert_eq!((again[0].fflags, again[0].data, again[0].udata), (NOTE_EXIT, 5 << 8, round), "round {round}");
        assert_eq!(q.knote_count(), 0);
    }
    assert_eq!(c.wait().expect("wait").code(), Some(5));
}

#[test]
fn proc_fork_and_track_through_the_process_connector() {
    let q = kq();
    let mut c = child("(exit 5); exit 1"); // the subshell is a fork of the shell
    let pid = c.id() as usize;
    let mut out = [Kevent::default(); 1];
    let n = q
        .kevent(
            &[kev(pid, EVFILT_PROC, EV_ADD, NOTE_EXIT | NOTE_FORK | NOTE_TRACK, 0, 11)],
            &mut out,
            Some(Duration::ZERO),
        )
        .expect("kevent");
    if !effective_cap(12) {
        // Without CAP_NET_ADMIN the connector may refuse (before Linux 6.6): then the change says so.
        if n == 1 {
            assert!(matches!(out[0].data as i32, libc::EPERM | libc::EOPNOTSUPP), "{:?}", out[0]);
            release(&mut c);
            c.wait().expect("wait");
            return;
        }
    }
    assert_eq!(n, 0, "with CAP_NET_ADMIN the connector must work: {:?}", out[0]);
    release(&mut c);
    let evs = collect_until(&q, |e| e.iter().filter(|x| x.fflags & NOTE_EXIT != 0).count() >= 2);
    assert!(evs.iter().all(|e| e.udata == 11 && e.fflags & NOTE_TRACKERR == 0), "{evs:?}");
    let parent: Vec<_> = evs.iter().filter(|e| e.ident == pid).collect();
    let kid: Vec<_> = evs.iter().filter(|e| e.ident != pid).collect();
    let forks = parent.iter().fold(0, |a, e| a | e.fflags);
    assert_eq!(forks, NOTE_FORK | NOTE_EXIT, "{parent:?}");
    assert_eq!(parent.last().map(|e| (e.flags, e.data)), Some((EXITED, 1 << 8)));
    assert!(!kid.is_empty(), "no event for the tracked child: {evs:?}");
    assert_eq!((kid[0].fflags & NOTE_CHILD, kid[0].data), (NOTE_CHILD, pid as isize), "{kid:?}");
    let last = kid.last().expect("child events");
    assert_eq!((last.fflags & NOTE_EXIT, last.flags, last.data), (NOTE_EXIT, EXITED, 5 << 8), "{kid:?}");
    assert_eq!(q.knote_count(), 0);
    c.wait().expect("wait");
}

// ---------------------------------------------------------------------------------------------------
// The process connector's parser, fed hostile datagrams directly (the kernel is its only sender, so this
// is the only way to reach it with malformed input)
// ---------------------------------------------------------------------------------------------------

use kqrs::testing::{connector_datagram, ConnectorRead, ProcEvent, PROC_EVENT_EXEC, PROC_EVENT_EXIT, PROC_EVENT_FORK};

/// One netlink message: nlmsghdr + cn_msg (id `idx`/1) + proc_event (`what`, then `fields`).
fn cn_msg(idx: u32, what: u32, fields: &[i32]) -> Vec<u8> {
    let mut ev = Vec::new();
    ev.extend_from_slice(&what.to_ne_bytes());
    ev.extend_from_slice(&0u32.to_ne_bytes()); // cpu
    ev.extend_from_slice(&0u64.to_ne_bytes()); // timestamp
    for f in fields {
        ev.extend_from_slice(&f.to_ne_bytes());
    }
    let mut cn = Vec::new();
    for v in [idx, 1, 0, 0] {
        cn.extend_from_slice(&v.to_ne_bytes());
    }
    cn.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
    cn.extend_from_slice(&0u16.to_ne_bytes());
    cn.extend_from_slice(&ev);
    let mut m = Vec::new();
    m.extend_from_slice(&((16 + cn.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&cn);
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m
}

fn fork_msg(parent: i32, child: i32) -> Vec<u8> {
    cn_msg(1, PROC_EVENT_FORK, &[parent, parent, child, child])
}

fn parse(buf: &[u8], from: u32) -> ConnectorRead {
    let mut out = ConnectorRead::default();
    connector_datagram(buf, from, &mut out);
    out
}

#[test]
fn connector_parser_reads_fork_exec_exit_from_the_kernel_only() {
    let mut d = fork_msg(10, 11);
    d.extend(cn_msg(1, PROC_EVENT_EXEC, &[11, 11]));
    d.extend(cn_msg(1, PROC_EVENT_EXIT, &[11, 11, 5 << 8, 17, 10, 10]));
    d.extend(cn_msg(1, 0x4, &[11, 11, 0, 0])); // PROC_EVENT_UID: a kind not asked for, skipped quietly
    let r = parse(&d, 0);
    assert_eq!(
        r.events,
        vec![
            ProcEvent::Fork { parent_tgid: 10, child_pid: 11, child_tgid: 11 },
            ProcEvent::Exec { tgid: 11 },
            ProcEvent::Exit { pid: 11, tgid: 11, status: 5 << 8 },
        ]
    );
    assert_eq!((r.ignored, r.overflowed), (0, false));
    // the same bytes from any other port id: forged, ignored whole
    let r = parse(&d, 4242);
    assert!(r.events.is_empty());
    assert_eq!(r.ignored, 1);
}

#[test]
fn connector_parser_rejects_every_truncation() {
    let full = fork_msg(20, 21);
    assert_eq!(parse(&full, 0).events.len(), 1);
    for cut in 1..full.len() {
        let r = parse(&full[..cut], 0);
        assert!(r.events.is_empty(), "cut at {cut}: {:?}", r.events);
        assert_eq!(r.ignored, 1, "cut at {cut} not counted as malformed");
    }
    assert_eq!(parse(&[], 0).ignored, 0, "an empty datagram holds nothing, wrong or right");
}

#[test]
fn connector_parser_rejects_lengths_that_lie() {
    let good = fork_msg(30, 31);
    let with_len = |len: u32| {
        let mut m = good.clone();
        m[..4].copy_from_slice(&len.to_ne_bytes());
        m
    };
    for len in [0, 1, 15, good.len() as u32 + 1, 1 << 20, u32::MAX] {
        let r = parse(&with_len(len), 0);
        assert!(r.events.is_empty(), "nlmsg_len {len}");
        assert_eq!(r.ignored, 1, "nlmsg_len {len}");
    }
    // a good message, then one whose length runs past the datagram: the first is kept, the fault counted
    let mut d = fork_msg(1, 2);
    d.extend(with_len(1000));
    let r = parse(&d, 0);
    assert_eq!(r.events, vec![ProcEvent::Fork { parent_tgid: 1, child_pid: 2, child_tgid: 2 }]);
    assert_eq!(r.ignored, 1);
    // bytes left over after a message that cannot hold a header
    let mut d = fork_msg(1, 2);
    d.extend([0u8; 8]);
    assert_eq!(parse(&d, 0).ignored, 1);
}

#[test]
fn connector_parser_rejects_forged_ids_and_short_events() {
    // another connector's id (idx 2): not the process connector
    let r = parse(&cn_msg(2, PROC_EVENT_FORK, &[1, 1, 2, 2]), 0);
    assert!(r.events.is_empty());
    assert_eq!(r.ignored, 1);
    // a fork with only two of its four fields, an exec with none, an exit without its status
    for m in [cn_msg(1, PROC_EVENT_FORK, &[1, 1]), cn_msg(1, PROC_EVENT_EXEC, &[]), cn_msg(1, PROC_EVENT_EXIT, &[7, 7])]
    {
        let r = parse(&m, 0);
        assert!(r.events.is_empty(), "{:?}", r.events);
        assert_eq!(r.ignored, 1);
    }
    // a cn_msg too short to hold a proc_event header
    let mut m = cn_msg(1, PROC_EVENT_FORK, &[]);
    m.truncate(16 + 20 + 8);
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_ne_bytes());
    assert_eq!(parse(&m, 0).ignored, 1);
}

#[test]
fn connector_parser_survives_random_and_mutated_datagrams() {
    // A fixed-seed generator: the same hostile inputs every run (and under valgrind).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut seed = fork_msg(40, 41);
    seed.extend(cn_msg(1, PROC_EVENT_EXIT, &[41, 41, 0, 17, 40, 40]));
    for i in 0..20_000 {
        let buf: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 200) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut m = seed.clone();
            for _ in 0..=next() % 4 {
                let at = (next() as usize) % m.len();
                m[at] = next() as u8;
            }
            m.truncate(1 + (next() as usize) % m.len());
            m
        };
        let r = parse(&buf, 0);
        assert!(r.events.len() <= buf.len() / 52, "more events than messages fit: {i}");
    }
}

// ---------------------------------------------------------------------------------------------------
// EVFILT_SIGNAL (SIGURG: its default action is to ignore, so a stray one is harmless to the harness)
// ---------------------------------------------------------------------------------------------------

static URG_SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn on_urg(_: libc::c_int) {
    URG_SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

fn sigaction_of(sig: i32) -> libc::sigaction {
    // SAFETY: sigaction is plain old data; all-zero is a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action and a valid, writable old one.
    assert_eq!(unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) }, 0);
    old
}

#[test]
fn signal_deliveries_are_counted_and_the_application_handler_still_runs() {
    use std::sync::atomic::Ordering::SeqCst;
    // SAFETY: sigaction is plain old data; all-zero is a valid value.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = on_urg as *const () as usize;
    // SAFETY: act is a valid sigaction whose handler is an extern "C" fn that only touches atomics.
    assert_eq!(unsafe { libc::sigaction(libc::SIGURG, &act, std::ptr::null_mut()) }, 0);
    let before = sigaction_of(libc::SIGURG).sa_sigaction;
    let q = kq();
    change(&q, &[kev(libc::SIGURG as usize, EVFILT_SIGNAL, EV_ADD, 0, 0, 5)]);
    assert_ne!(sigaction_of(libc::SIGURG).sa_sigaction, before, "kqrs's counting handler is not in front");
    let seen0 = URG_SEEN.load(SeqCst);
    for i in 1..=2 {
        // SAFETY: kill(2) to our own pid takes integers only; SIGURG is caught by the handler installed above.
        assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGURG) }, 0);
        // one at a time: two standard signals pending at once would merge into one delivery
        let deadline = Instant::now() + LONG;
        while URG_SEEN.load(SeqCst) < seen0 + i && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let evs = collect_until(&q, |e| e.iter().map(|x| x.data).sum::<isize>() >= 2);
    assert!(
        evs.iter()
            .all(|e| (e.ident, e.filter, e.flags, e.udata) == (libc::SIGURG as usize, EVFILT_SIGNAL, EV_CLEAR, 5)),
        "{evs:?}"
    );
    assert_eq!(evs.iter().map(|e| e.data).sum::<isize>(), 2, "{evs:?}");
    assert_eq!(URG_SEEN.load(SeqCst) - seen0, 2, "the application's handler did not run for each");
    change(&q, &[kev(libc::SIGURG as usize, EVFILT_SIGNAL, EV_DELETE, 0, 0, 0)]);
    assert_eq!(sigaction_of(libc::SIGURG).sa_sigaction, before, "the disposition was not restored");
    let mut out = [Kevent::default(); 2];
    let n = q
        .kevent(
            &[kev(libc::SIGKILL as usize, EVFILT_SIGNAL, EV_ADD, 0, 0, 0), kev(65, EVFILT_SIGNAL, EV_ADD, 0, 0, 0)],
            &mut out,
            None,
        )
        .expect("kevent");
    assert_eq!(n, 2);
    assert!(out.iter().all(|e| (e.flags, e.data) == (EV_ERROR, libc::EINVAL as isize)), "{out:?}");
}

// ---------------------------------------------------------------------------------------------------
// EVFILT_VNODE
// ---------------------------------------------------------------------------------------------------

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("kqrs-engine-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open_rw(path: &std::path::Path) -> Fd {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: c is a NUL-terminated path that outlives the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC, 0o644) };
    assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
    Fd(fd)
}

#[test]
fn vnode_reports_write_attrib_rename_delete() {
    let dir = TempDir::new("vnode");
    let path = dir.0.join("f");
    let f = open_rw(&path);
    let notes = NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB | NOTE_RENAME | NOTE_DELETE | NOTE_LINK;
    let q = kq();
    change(&q, &[kev(f.id(), EVFILT_VNODE, EV_ADD | EV_CLEAR, notes, 0, 3)]);
    assert!(pending(&q).is_empty());
    write_all(&f, b"hello");
    assert_eq!(wait(&q, 4, SHORT), vec![kev(f.id(), EVFILT_VNODE, EV_CLEAR, NOTE_WRITE | NOTE_EXTEND, 0, 3)]);
    // SAFETY: fchmod takes an fd this test owns and a mode.
    assert_eq!(unsafe { libc::fchmod(f.raw(), 0o600) }, 0);
    assert_eq!(wait(&q, 4, SHORT), vec![kev(f.id(), EVFILT_VNODE, EV_CLEAR, NOTE_ATTRIB, 0, 3)]);
    std::fs::rename(&path, dir.0.join("g")).expect("rename");
    assert_eq!(wait(&q, 4, SHORT), vec![kev(f.id(), EVFILT_VNODE, EV_CLEAR, NOTE_RENAME, 0, 3)]);
    std::fs::remove_file(dir.0.join("g")).expect("unlink");
    assert_eq!(wait(&q, 4, SHORT), vec![kev(f.id(), EVFILT_VNODE, EV_CLEAR, NOTE_DELETE, 0, 3)]);
    assert!(wait(&q, 4, Duration::from_millis(50)).is_empty(), "reported twice");
    change(&q, &[kev(f.id(), EVFILT_VNODE, EV_DELETE, 0, 0, 0)]);
    assert_eq!(q.knote_count(), 0);
}

#[test]
fn vnode_on_a_directory_and_bad_fflags() {
    let dir = TempDir::new("vdir");
    let d = {
        let c = std::ffi::CString::new(dir.0.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: c is a NUL-terminated path that outlives the call.
        Fd(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })
    };
    assert!(d.raw() >= 0);
    let q = kq();
    let mut out = [Kevent::default(); 1];
    assert_eq!(q.kevent(&[kev(d.id(), EVFILT_VNODE, EV_ADD, 0x0100_0000, 0, 0)], &mut out, None), Ok(1));
    assert_eq!((out[0].flags, out[0].data), (EV_ERROR, libc::EINVAL as isize));
    change(&q, &[kev(d.id(), EVFILT_VNODE, EV_ADD | EV_CLEAR, NOTE_WRITE | NOTE_LINK, 0, 4)]);
    drop(open_rw(&dir.0.join("new"))); // an entry created: the directory is written
    let evs = wait(&q, 4, SHORT);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!((evs[0].ident, evs[0].fflags & NOTE_WRITE, evs[0].udata), (d.id(), NOTE_WRITE, 4));
    std::fs::create_dir(dir.0.join("sub")).expect("mkdir"); // a subdirectory: one more link too
    let evs = wait(&q, 4, SHORT);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].fflags, NOTE_WRITE | NOTE_LINK, "{evs:?}");
}

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

// ---------------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------------

/// An owned fd, closed on drop.
struct Fd(i32);

impl Fd {
    fn raw(&self) -> i32 {
        self.0
    }
    fn id(&self) -> usize {
        self.0 as usize
    }
    /// Closes it now (idempotent with drop).
    fn close(&mut self) {
        if self.0 >= 0 {
            unsafe { libc::close(self.0) };
            self.0 = -1;
        }
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        self.close();
    }
}

fn pipe() -> (Fd, Fd) {
    let mut fds = [0i32; 2];
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    (Fd(fds[0]), Fd(fds[1]))
}

fn socketpair() -> (Fd, Fd) {
    let mut fds = [0i32; 2];
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    (Fd(fds[0]), Fd(fds[1]))
}

fn write_all(fd: &Fd, buf: &[u8]) {
    let r = unsafe { libc::write(fd.raw(), buf.as_ptr().cast(), buf.len()) };
    assert_eq!(
        r,
        buf.len() as isize,
        "write: {}",
        std::io::Error::last_os_error()
    );
}

fn read_n(fd: &Fd, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let r = unsafe { libc::read(fd.raw(), buf.as_mut_ptr().cast(), n) };
    assert!(r >= 0, "read: {}", std::io::Error::last_os_error());
    buf.truncate(r as usize);
    buf
}

fn pipe_capacity(fd: &Fd) -> isize {
    let r = unsafe { libc::fcntl(fd.raw(), libc::F_GETPIPE_SZ) };
    assert!(r > 0);
    r as isize
}

fn sndbuf(fd: &Fd) -> isize {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            fd.raw(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0);
    v as isize
}

fn outq(fd: &Fd) -> isize {
    let mut v: libc::c_int = 0;
    let r = unsafe { libc::ioctl(fd.raw(), libc::TIOCOUTQ, &mut v as *mut libc::c_int) };
    assert_eq!(r, 0);
    v as isize
}

/// Whether poll(2) says `fd` is readable right now.
fn poll_readable(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    assert!(r >= 0, "poll: {}", std::io::Error::last_os_error());
    r == 1 && p.revents & libc::POLLIN != 0
}

/// An fd number that is certainly not open, even while other tests open and close fds concurrently: the
/// soft RLIMIT_NOFILE (valid fds are below it).
fn closed_fd() -> usize {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    let fd = rl.rlim_cur.min(i32::MAX as u64) as i32;
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
    fd as usize
}

fn kq() -> Kqueue {
    Kqueue::new().expect("Kqueue::new")
}

fn kev(ident: usize, filter: i16, flags: u16, fflags: u32, data: isize, udata: usize) -> Kevent {
    Kevent::new(ident, filter, flags, fflags, data, udata)
}

/// Applies changes with no room for entries; panics on error.
fn change(q: &Kqueue, changes: &[Kevent]) {
    let n = q
        .kevent(changes, &mut [], Some(Duration::ZERO))
        .expect("kevent(changes)");
    assert_eq!(n, 0);
}

/// Collects up to `max` events, waiting up to `timeout`.
fn wait(q: &Kqueue, max: usize, timeout: Duration) -> Vec<Kevent> {
    let mut out = vec![Kevent::default(); max];
    let n = q
        .kevent(&[], &mut out, Some(timeout))
        .expect("kevent(collect)");
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
    assert!(
        pending(&q).is_empty(),
        "an untriggered USER knote must not fire"
    );
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
    change(
        &q,
        &[
            user_trigger(5, 0, 0, 0),
            user_trigger(5, 0, 0, 0),
            user_trigger(5, 0, 0, 0),
        ],
    );
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
        assert_eq!(
            evs[0].fflags, want,
            "op {op:#x}: control bits and NOTE_TRIGGER never show"
        );
        assert_eq!(evs[0].flags, EV_CLEAR);
    }
    // Without a trigger the fflags still change (and nothing fires).
    change(&q, &[kev(1, EVFILT_USER, 0, NOTE_FFCOPY | 0x42, 3, 0)]);
    assert!(pending(&q).is_empty());
    change(&q, &[user_trigger(1, NOTE_FFNOP, 3, 0)]);
    assert_eq!(
        wait(&q, 4, SHORT),
        vec![kev(1, EVFILT_USER, EV_CLEAR, 0x42, 3, 0)]
    );
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
    assert!(
        start.elapsed() >= Duration::from_millis(20),
        "fired early: {:?}",
        start.elapsed()
    );
    assert_eq!(evs.len(), 1);
    let e = evs[0];
    // A relative timer has EV_CLEAR set for it; fflags 0; data = expirations (>= 1).
    assert_eq!(
        (e.ident, e.filter, e.flags, e.fflags, e.udata),
        (1, EVFILT_TIMER, EV_CLEAR, 0, 5)
    );
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
    change(
        &q,
        &[kev(
            1,
            EVFILT_TIMER,
            EV_ADD | EV_ONESHOT,
            NOTE_USECONDS,
            30_000,
            0,
        )],
    );
    let evs = wait(&q, 4, Duration::from_secs(5));
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(
        evs,
        vec![kev(1, EVFILT_TIMER, EV_ONESHOT | EV_CLEAR, 0, 1, 0)]
    );

    let start = Instant::now();
    change(
        &q,
        &[kev(
            2,
            EVFILT_TIMER,
            EV_ADD | EV_ONESHOT,
            NOTE_NSECONDS,
            25_000_000,
            0,
        )],
    );
    let evs = wait(&q, 4, Duration::from_secs(5));
    assert!(start.elapsed() >= Duration::from_millis(25));
    assert_eq!(
        evs,
        vec![kev(2, EVFILT_TIMER, EV_ONESHOT | EV_CLEAR, 0, 1, 0)]
    );

    // Two units at once: EINVAL.
    let mut out = [Kevent::default(); 2];
    let n = q
        .kevent(
            &[kev(
                3,
                EVFILT_TIMER,
                EV_ADD,
                NOTE_SECONDS | NOTE_USECONDS,
                1,
                0,
            )],
            &mut out,
            None,
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        (out[0].flags, out[0].data),
        (EV_ERROR, libc::EINVAL as isize)
    );
}

#[test]
fn timer_oneshot() {
    let q = kq();
    let start = Instant::now();
    change(&q, &[kev(7, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 10, 3)]);
    let evs = wait(&q, 4, Duration::from_secs(5));
    assert!(start.elapsed() >= Duration::from_millis(10));
    assert_eq!(
        evs,
        vec![kev(7, EVFILT_TIMER, EV_ONESHOT | EV_CLEAR, 0, 1, 3)]
    );
    assert_eq!(
        q.knote_count(),
        0,
        "a oneshot timer is deleted once reported"
    );
    assert!(wait(&q, 4, Duration::from_millis(40)).is_empty());
    // It is gone: EV_DELETE fails with ENOENT.
    assert_eq!(
        q.kevent(&[kev(7, EVFILT_TIMER, EV_DELETE, 0, 0, 0)], &mut [], None),
        Err(Errno(libc::ENOENT))
    );
}

#[test]
fn timer_zero_oneshot_fires_at_once() {
    let q = kq();
    change(&q, &[kev(1, EVFILT_TIMER, EV_ADD | EV_ONESHOT, 0, 0, 0)]);
    assert_eq!(
        wait(&q, 4, Duration::from_secs(5)),
        vec![kev(1, EVFILT_TIMER, EV_ONESHOT | EV_CLEAR, 0, 1, 0)]
    );
}

#[test]
fn timer_overrun_counts_expirations() {
    let q = kq();
    change(&q, &[kev(1, EVFILT_TIMER, EV_ADD, 0, 5, 0)]);
    thread::sleep(Duration::from_millis(62));
    let evs = pending(&q);
    assert_eq!(evs.len(), 1, "overruns coalesce into one event");
    assert!(
        evs[0].data >= 12,
        "62 ms of a 5 ms timer: >= 12 expirations, got {}",
        evs[0].data
    );
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
    let n = q
        .kevent(&[kev(1, EVFILT_TIMER, EV_ADD, 0, -1, 11)], &mut out, None)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        out[0],
        kev(1, EVFILT_TIMER, EV_ERROR, 0, libc::EINVAL as isize, 11)
    );
    assert_eq!(
        q.kevent(&[kev(1, EVFILT_TIMER, EV_ADD, 0, -5, 0)], &mut [], None),
        Err(Errno(libc::EINVAL))
    );
    assert_eq!(q.knote_count(), 0);
}

#[test]
fn timer_huge_does_not_overflow() {
    let q = kq();
    change(
        &q,
        &[kev(1, EVFILT_TIMER, EV_ADD, NOTE_SECONDS, isize::MAX, 0)],
    );
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
    assert_eq!(
        wait(&q, 4, SHORT),
        vec![kev(r.id(), EVFILT_READ, 0, 0, 5, 42)]
    );
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
    assert_eq!(
        wait(&q, 4, SHORT),
        vec![kev(r.id(), EVFILT_READ, EV_EOF, 0, 2, 42)]
    );
    read_n(&r, 16);
    assert_eq!(
        pending(&q),
        vec![kev(r.id(), EVFILT_READ, EV_EOF, 0, 0, 42)]
    );
}

#[test]
fn pipe_write_space_and_eof() {
    let q = kq();
    let (mut r, w) = pipe();
    let cap = pipe_capacity(&w);
    change(&q, &[kev(w.id(), EVFILT_WRITE, EV_ADD, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(w.id(), EVFILT_WRITE, 0, 0, cap, 0)]);
    write_all(&w, &[0u8; 100]);
    assert_eq!(
        pending(&q),
        vec![kev(w.id(), EVFILT_WRITE, 0, 0, cap - 100, 0)]
    );
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
    assert_eq!(
        wait(&q, 4, SHORT),
        vec![kev(b.id(), EVFILT_READ, 0, 0, 3, 1)]
    );
    assert_eq!(read_n(&b, 3), b"foo");
    assert!(pending(&q).is_empty());
    write_all(&a, b"0123456789");
    assert_eq!(read_n(&b, 4), b"0123");
    assert_eq!(pending(&q), vec![kev(b.id(), EVFILT_READ, 0, 0, 6, 1)]);
    read_n(&b, 16);

    // WRITE: data = send-buffer space (SO_SNDBUF minus what is queued).
    change(&q, &[kev(a.id(), EVFILT_WRITE, EV_ADD, 0, 0, 2)]);
    let evs = pending(&q);
    assert_eq!(
        evs,
        vec![kev(a.id(), EVFILT_WRITE, 0, 0, sndbuf(&a) - outq(&a), 2)]
    );
    assert!(evs[0].data > 0);
}

#[test]
fn socketpair_read_and_write_in_one_call() {
    let q = kq();
    let (a, b) = socketpair();
    write_all(&b, b"12345");
    change(
        &q,
        &[
            kev(a.id(), EVFILT_READ, EV_ADD, 0, 0, 0),
            kev(a.id(), EVFILT_WRITE, EV_ADD, 0, 0, 0),
        ],
    );
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
    assert_eq!(unsafe { libc::shutdown(b.raw(), libc::SHUT_WR) }, 0);
    assert_eq!(
        wait(&q, 4, SHORT),
        vec![kev(a.id(), EVFILT_READ, EV_EOF, 0, 2, 0)]
    );
}

#[test]
fn read_on_closed_fd_is_ebadf() {
    let q = kq();
    let id = closed_fd();
    assert_eq!(
        q.kevent(&[kev(id, EVFILT_READ, EV_ADD, 0, 0, 0)], &mut [], None),
        Err(Errno(libc::EBADF))
    );
    assert_eq!(
        q.kevent(&[kev(id, EVFILT_WRITE, EV_ADD, 0, 0, 0)], &mut [], None),
        Err(Errno(libc::EBADF))
    );
    // BSD checks the fd before looking the knote up: EV_DELETE of a closed fd is EBADF, not ENOENT.
    assert_eq!(
        q.kevent(&[kev(id, EVFILT_READ, EV_DELETE, 0, 0, 0)], &mut [], None),
        Err(Errno(libc::EBADF))
    );
    assert_eq!(
        q.kevent(&[kev(1 << 40, EVFILT_READ, EV_ADD, 0, 0, 0)], &mut [], None),
        Err(Errno(libc::EBADF))
    );
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
        kev(5, EVFILT_USER, EV_DELETE, 0, 0, 55), // ENOENT
        user_add(6, EV_CLEAR, 66),                // fine
        kev(bad, EVFILT_READ, EV_ADD, 0, 0, 77),  // EBADF
        kev(7, EVFILT_USER, EV_ENABLE, 0, 0, 0),  // ENOENT
        kev(8, EVFILT_USER, EV_ADD | EV_ENABLE | EV_DISABLE, 0, 0, 0), // EINVAL
    ];
    let mut out = [Kevent::default(); 8];
    let n = q.kevent(&changes, &mut out, Some(SHORT)).unwrap();
    assert_eq!(n, 4);
    assert_eq!(
        out[0],
        kev(5, EVFILT_USER, EV_ERROR, 0, libc::ENOENT as isize, 55)
    );
    assert_eq!(
        out[1],
        kev(bad, EVFILT_READ, EV_ERROR, 0, libc::EBADF as isize, 77)
    );
    assert_eq!(
        out[2],
        kev(7, EVFILT_USER, EV_ERROR, 0, libc::ENOENT as isize, 0)
    );
    assert_eq!(
        out[3],
        kev(8, EVFILT_USER, EV_ERROR, 0, libc::EINVAL as isize, 0)
    );
    // The good change was applied; the failing ones were not.
    assert_eq!(q.knote_count(), 2);
    // The pending event is still there for the next call.
    assert_eq!(pending(&q), vec![kev(100, EVFILT_USER, 0, 0, 0, 0)]);
}

#[test]
fn ev_error_without_room_fails_the_call() {
    let q = kq();
    assert_eq!(
        q.kevent(&[kev(5, EVFILT_USER, EV_DELETE, 0, 0, 0)], &mut [], None),
        Err(Errno(libc::ENOENT))
    );
    // The first failure takes the only slot; the second has no room: the call fails with its errno.
    let mut out = [Kevent::default(); 1];
    let r = q.kevent(
        &[
            kev(1, EVFILT_USER, EV_DELETE, 0, 0, 0),
            kev(2, EVFILT_TIMER, EV_ADD, 0, -1, 0),
        ],
        &mut out,
        None,
    );
    assert_eq!(r, Err(Errno(libc::EINVAL)));
    // Changes after the failing one are not applied; those before are.
    let r = q.kevent(
        &[
            user_add(1, 0, 0),
            kev(9, EVFILT_USER, EV_DELETE, 0, 0, 0),
            user_add(2, 0, 0),
        ],
        &mut [],
        None,
    );
    assert_eq!(r, Err(Errno(libc::ENOENT)));
    assert_eq!(q.knote_count(), 1);
    assert_eq!(
        q.kevent(&[kev(1, EVFILT_USER, EV_DELETE, 0, 0, 0)], &mut [], None),
        Ok(0)
    );
    assert_eq!(
        q.kevent(&[kev(2, EVFILT_USER, EV_DELETE, 0, 0, 0)], &mut [], None),
        Err(Errno(libc::ENOENT))
    );
}

#[test]
fn unknown_flags_and_fflags_are_einval() {
    let q = kq();
    let (r, _w) = pipe();
    let mut out = [Kevent::default(); 4];
    let changes = [
        kev(1, EVFILT_USER, EV_ADD | 0x0800, 0, 0, 0),
        kev(2, EVFILT_USER, EV_ADD, 0x2000_0000, 0, 0),
        kev(r.id(), EVFILT_READ, EV_ADD, 0x2, 0, 0),
        kev(3, EVFILT_TIMER, EV_ADD, 0x100, 10, 0),
    ];
    assert_eq!(q.kevent(&changes, &mut out, None), Ok(4));
    for e in &out {
        assert_eq!(
            (e.flags, e.data),
            (EV_ERROR, libc::EINVAL as isize),
            "{e:?}"
        );
    }
    assert_eq!(q.knote_count(), 0);
}

#[test]
fn output_flags_on_input_are_ignored() {
    let q = kq();
    // EV_EOF / EV_ERROR / EV_FLAG1 in a change are output flags: ignored, not stored.
    change(
        &q,
        &[
            kev(
                1,
                EVFILT_USER,
                EV_ADD | EV_EOF | EV_ERROR | EV_FLAG1,
                0,
                0,
                0,
            ),
            user_trigger(1, 0, 0, 0),
        ],
    );
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
        (
            out[0].ident,
            out[0].filter,
            out[0].flags,
            out[0].data,
            out[0].udata
        ),
        (1, EVFILT_USER, EV_ERROR, 0, 10)
    );
    assert_eq!(
        (
            out[1].ident,
            out[1].filter,
            out[1].flags,
            out[1].data,
            out[1].udata
        ),
        (2, EVFILT_USER, EV_ERROR, 0, 20)
    );
    assert_eq!(
        out[2],
        kev(3, EVFILT_USER, EV_ERROR, 0, libc::ENOENT as isize, 30)
    );
    assert_eq!(q.knote_count(), 3);
    // Without room: the receipt of a success is dropped, the change is applied, Ok(0).
    assert_eq!(
        q.kevent(
            &[kev(4, EVFILT_USER, EV_ADD | EV_RECEIPT, 0, 0, 0)],
            &mut [],
            None
        ),
        Ok(0)
    );
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
        user_add(3, 0, 30),                                 // not applied
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
    change(
        &q,
        &[kev(1, EVFILT_USER, EV_ADD | EV_CLEAR | EV_RECEIPT, 0, 0, 0)],
    );
    change(&q, &[user_trigger(1, 0, 0, 0)]);
    assert_eq!(
        pending(&q),
        vec![kev(1, EVFILT_USER, EV_CLEAR | EV_RECEIPT, 0, 0, 0)]
    );
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
    assert_eq!(
        q.kevent(&[user_trigger(1, 0, 0, 0)], &mut [], None),
        Err(Errno(libc::ENOENT))
    );
}

#[test]
fn oneshot_pipe() {
    let q = kq();
    let (r, w) = pipe();
    change(
        &q,
        &[kev(r.id(), EVFILT_READ, EV_ADD | EV_ONESHOT, 0, 0, 0)],
    );
    write_all(&w, b"abcd");
    assert_eq!(
        wait(&q, 4, SHORT),
        vec![kev(r.id(), EVFILT_READ, EV_ONESHOT, 0, 4, 0)]
    );
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
    change(
        &q,
        &[kev(r.id(), EVFILT_READ, EV_ADD | EV_DISPATCH, 0, 0, 0)],
    );
    write_all(&w, b"ab");
    assert_eq!(
        wait(&q, 4, SHORT),
        vec![kev(r.id(), EVFILT_READ, EV_DISPATCH, 0, 2, 0)]
    );
    write_all(&w, b"cde");
    assert!(pending(&q).is_empty());
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ENABLE, 0, 0, 0)]);
    assert_eq!(
        pending(&q),
        vec![kev(r.id(), EVFILT_READ, EV_DISPATCH, 0, 5, 0)]
    );
}

#[test]
fn clear_pipe_edge_triggered() {
    let q = kq();
    let (r, w) = pipe();
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, 0)]);
    write_all(&w, b"abc");
    assert_eq!(
        wait(&q, 4, SHORT),
        vec![kev(r.id(), EVFILT_READ, EV_CLEAR, 0, 3, 0)]
    );
    assert!(
        pending(&q).is_empty(),
        "EV_CLEAR: no new event without new data"
    );
    write_all(&w, b"de");
    assert_eq!(
        wait(&q, 4, SHORT),
        vec![kev(r.id(), EVFILT_READ, EV_CLEAR, 0, 5, 0)]
    );
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
    change(
        &q,
        &[
            user_add(1, 0, 0),
            user_trigger(1, 0, 0, 0),
            kev(1, EVFILT_USER, EV_DISABLE, 0, 0, 0),
        ],
    );
    assert!(pending(&q).is_empty());
    change(&q, &[kev(1, EVFILT_USER, EV_ENABLE, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(1, EVFILT_USER, 0, 0, 0, 0)]);
}

#[test]
fn add_disabled_never_fires_until_enabled() {
    let q = kq();
    let (r, w) = pipe();
    write_all(&w, b"xyz");
    change(
        &q,
        &[
            kev(r.id(), EVFILT_READ, EV_ADD | EV_DISABLE, 0, 0, 0),
            user_add(1, EV_DISABLE, 0),
        ],
    );
    change(&q, &[user_trigger(1, 0, 0, 0)]);
    assert!(wait(&q, 4, Duration::from_millis(20)).is_empty());
    change(&q, &[kev(r.id(), EVFILT_READ, EV_ENABLE, 0, 0, 0)]);
    assert_eq!(pending(&q), vec![kev(r.id(), EVFILT_READ, 0, 0, 3, 0)]);
    change(&q, &[kev(1, EVFILT_USER, EV_ENABLE, 0, 0, 0)]);
    let mut evs = pending(&q);
    evs.sort_by_key(|e| e.filter);
    assert_eq!(
        evs,
        vec![
            kev(1, EVFILT_USER, 0, 0, 0, 0),
            kev(r.id(), EVFILT_READ, 0, 0, 3, 0)
        ]
    );
}

#[test]
fn delete_drops_pending() {
    let q = kq();
    let (r, w) = pipe();
    write_all(&w, b"x");
    change(
        &q,
        &[
            kev(r.id(), EVFILT_READ, EV_ADD, 0, 0, 0),
            user_add(1, 0, 0),
            user_trigger(1, 0, 0, 0),
        ],
    );
    change(
        &q,
        &[
            kev(r.id(), EVFILT_READ, EV_DELETE, 0, 0, 0),
            kev(1, EVFILT_USER, EV_DELETE, 0, 0, 0),
        ],
    );
    assert!(pending(&q).is_empty());
    assert_eq!(q.knote_count(), 0);
    assert_eq!(
        q.kevent(
            &[kev(r.id(), EVFILT_READ, EV_DELETE, 0, 0, 0)],
            &mut [],
            None
        ),
        Err(Errno(libc::ENOENT))
    );
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
        assert!(
            start.elapsed() >= t,
            "returned 0 after {:?} < {:?}",
            start.elapsed(),
            t
        );
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
    assert_eq!(
        wait(&q, 4, SHORT),
        vec![kev(r.id(), EVFILT_READ, 0, 0, 10, 0)]
    );
}

#[test]
fn zero_timeout_and_zero_room_return_at_once() {
    let q = kq();
    let start = Instant::now();
    // No room: returns at once whatever the timeout.
    assert_eq!(q.kevent(&[], &mut [], Some(Duration::from_secs(30))), Ok(0));
    assert_eq!(q.kevent(&[], &mut [], None), Ok(0));
    assert_eq!(
        q.kevent(&[], &mut [Kevent::default(); 4], Some(Duration::ZERO)),
        Ok(0)
    );
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
    let r = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("blocked thread not woken by close() within 5 s");
    t.join().unwrap();
    assert_eq!(r, Err(Errno(libc::EBADF)));
    assert!(q.is_closed());
    assert_eq!(
        q.kevent(&[user_add(1, 0, 0)], &mut [], None),
        Err(Errno(libc::EBADF))
    );
    q.close(); // twice is fine
    assert!(q.is_closed());
}

#[test]
fn close_closes_the_fd() {
    let q = kq();
    let fd = q.fd();
    assert!(fd >= 0);
    assert!(!q.is_closed());
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert_eq!(
        flags & libc::FD_CLOEXEC,
        libc::FD_CLOEXEC,
        "kqueue fd is close-on-exec"
    );
    q.close();
    // The fd number may be reused by another thread at once; only check it is no longer an epoll fd of
    // ours by asking the engine.
    assert!(q.is_closed());
    assert_eq!(
        q.kevent(&[], &mut [Kevent::default(); 1], Some(Duration::ZERO)),
        Err(Errno(libc::EBADF))
    );
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
        let first = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("no thread got the event within 5 s");
        assert_eq!(
            first,
            Ok(vec![kev(1, EVFILT_USER, EV_ONESHOT, 0, 0, rep)]),
            "rep {rep}"
        );
        // Wake the others: they must return EBADF, not a second copy of the event.
        q.close();
        let mut delivered = 1;
        for _ in 1..THREADS {
            let r = rx
                .recv_timeout(Duration::from_secs(5))
                .expect("thread not woken by close()");
            match r {
                Ok(v) if !v.is_empty() => delivered += v.len(),
                Ok(_) => panic!("rep {rep}: kevent without timeout expiry returned 0"),
                Err(e) => assert_eq!(e, Errno(libc::EBADF)),
            }
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(
            delivered, 1,
            "rep {rep}: EV_ONESHOT delivered {delivered} times"
        );
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
            Ok(0) => assert!(
                elapsed >= timeout,
                "a loser returned 0 after {elapsed:?}, before its timeout"
            ),
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
    assert!(
        poll_readable(q.fd()),
        "a triggered USER event makes the kqueue readable"
    );
    assert_eq!(pending(&q).len(), 1);
    assert!(
        !poll_readable(q.fd()),
        "nothing pending after the EV_CLEAR report"
    );

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
    let mut p = libc::pollfd {
        fd: q.fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    assert_eq!(unsafe { libc::poll(&mut p, 1, 5000) }, 1);
    assert_eq!(
        pending(&q),
        vec![kev(1, EVFILT_TIMER, EV_ONESHOT | EV_CLEAR, 0, 1, 0)]
    );
    assert!(!poll_readable(q.fd()));
}

// ---------------------------------------------------------------------------------------------------
// Filters: unsupported / unknown
// ---------------------------------------------------------------------------------------------------

#[test]
fn unsupported_filters_eopnotsupp_unknown_einval() {
    let q = kq();
    let (r, _w) = pipe();
    let known = [
        EVFILT_AIO,
        EVFILT_VNODE,
        EVFILT_PROC,
        EVFILT_SIGNAL,
        EVFILT_NETDEV,
        EVFILT_FS,
        EVFILT_LIO,
    ];
    let mut unsupported = 0;
    for f in known {
        if kqrs::is_supported(f) {
            continue; // built since this test was written; its own tests cover it
        }
        unsupported += 1;
        let mut out = [Kevent::default(); 2];
        let n = q
            .kevent(&[kev(r.id(), f, EV_ADD, 0, 0, 9)], &mut out, None)
            .unwrap();
        assert_eq!(n, 1, "filter {f}");
        assert_eq!(
            out[0],
            kev(r.id(), f, EV_ERROR, 0, libc::EOPNOTSUPP as isize, 9),
            "filter {f}"
        );
        assert_eq!(
            q.kevent(&[kev(r.id(), f, EV_ADD, 0, 0, 0)], &mut [], None),
            Err(Errno(libc::EOPNOTSUPP))
        );
    }
    // AIO and LIO have no Linux counterpart planned; they must stay refused.
    assert!(unsupported >= 2);
    for f in [EVFILT_READ, EVFILT_WRITE, EVFILT_TIMER, EVFILT_USER] {
        assert!(kqrs::is_supported(f));
    }
    for f in [1i16, 5, 100, i16::MAX, -14, -100, i16::MIN] {
        assert!(!kqrs::is_supported(f));
        let mut out = [Kevent::default(); 2];
        let n = q
            .kevent(&[kev(1, f, EV_ADD, 0, 0, 0)], &mut out, None)
            .unwrap();
        assert_eq!(n, 1, "filter {f}");
        assert_eq!(
            out[0],
            kev(1, f, EV_ERROR, 0, libc::EINVAL as isize, 0),
            "filter {f}"
        );
        assert_eq!(
            q.kevent(&[kev(1, f, EV_ADD, 0, 0, 0)], &mut [], None),
            Err(Errno(libc::EINVAL))
        );
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
    let adds: Vec<Kevent> = (0..N)
        .map(|i| user_add(i, EV_CLEAR, i + 1_000_000))
        .collect();
    change(&q, &adds);
    assert_eq!(q.knote_count(), N);
    assert!(pending(&q).is_empty());
    let triggers: Vec<Kevent> = (0..N)
        .map(|i| {
            user_trigger(
                i,
                NOTE_FFCOPY | (i as u32 & 0xff),
                i as isize,
                i + 1_000_000,
            )
        })
        .collect();
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
            assert_eq!(
                (e.fflags, e.data, e.udata),
                (e.ident as u32 & 0xff, e.ident as isize, e.ident + 1_000_000)
            );
            assert!(!seen[e.ident], "ident {} reported twice", e.ident);
            seen[e.ident] = true;
            total += 1;
        }
    }
    assert!(pending(&q).is_empty());
    let dels: Vec<Kevent> = (0..N)
        .map(|i| kev(i, EVFILT_USER, EV_DELETE, 0, 0, 0))
        .collect();
    change(&q, &dels);
    assert_eq!(q.knote_count(), 0);
}

//! The engine alone against the raw syscalls it wraps: `cargo bench --bench engine [-- --smoke]`.
//!
//! Plain `std::time` timing, no harness. Each pair is measured interleaved (a round of kqrs, a round of
//! the raw syscall, again and again), so both sides see the same machine; every figure is the median
//! over rounds of the time per operation, and the ratio is kqrs / raw.
//!
//! Environment: `KQRS_BENCH_SMOKE=1` (or `--smoke`) runs a tiny version; `KQRS_BENCH_ENGINE_JSON=path`
//! also writes the results as JSON (`benches/report.py` reads it). Other arguments name the groups to
//! run (`empty`, `one_ready`, `changes`, `user`, `xthread`; default all), e.g. for `perf record`; `--rounds N`
//! overrides the number of rounds.

use std::time::{Duration, Instant};

use kqrs::consts::*;
use kqrs::{Kevent, Kqueue};

#[path = "../rust/tests/util/mod.rs"]
mod util;
use util::{check, close, fionread, raise_nofile, raw_socketpair, read, write};

// --------------------------------------------------------------------------------------------------
// Raw syscalls for the baselines (the benchmark is not part of the crate, so its unsafe lives here; the
// fd helpers it shares with the tests are in rust/tests/util).
// --------------------------------------------------------------------------------------------------

fn epoll_create() -> i32 {
    // SAFETY: epoll_create1 takes no pointers; the fd it returns is ours to close.
    check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }, "epoll_create1")
}

fn epoll_ctl(ep: i32, op: i32, fd: i32, events: u32) -> i32 {
    let mut ev = libc::epoll_event { events, u64: fd as u64 };
    // SAFETY: `ev` is a valid epoll_event that lives across the call; the kernel only reads it.
    unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) }
}

fn epoll_wait(ep: i32, buf: &mut [libc::epoll_event], timeout_ms: i32) -> i32 {
    // SAFETY: the kernel writes at most `buf.len()` events into `buf`, which is valid and exclusively
    // borrowed for the call.
    unsafe { libc::epoll_wait(ep, buf.as_mut_ptr(), buf.len() as i32, timeout_ms) }
}

fn eventfd() -> i32 {
    // SAFETY: eventfd takes no pointers; the fd it returns is ours to close.
    check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) }, "eventfd")
}

fn eventfd_write(fd: i32) {
    write(&fd, &1u64.to_ne_bytes());
}

fn eventfd_read(fd: i32) -> u64 {
    let mut b = [0u8; 8];
    read(&fd, &mut b);
    u64::from_ne_bytes(b)
}

fn socketpair() -> (i32, i32) {
    raw_socketpair(0)
}

// --------------------------------------------------------------------------------------------------
// Timing
// --------------------------------------------------------------------------------------------------

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Row {
    key: &'static str,
    what: &'static str,
    kqrs_ns: f64,
    base_ns: f64,
    base: &'static str,
    target: Option<f64>,
}

/// Interleaves rounds of `a` and `b`; each call of a closure performs `ops` operations and returns the
/// time they took (so a closure can keep its own untimed setup out). Returns (median a, median b) in ns
/// per operation.
fn pair(rounds: usize, ops: usize, mut a: impl FnMut() -> Duration, mut b: impl FnMut() -> Duration) -> (f64, f64) {
    // warm-up
    for _ in 0..(rounds / 10).max(1) {
        a();
        b();
    }
    let (mut ta, mut tb) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for r in 0..rounds {
        // alternate which side goes first, so neither always runs right after the other
        if r % 2 == 0 {
            ta.push(a().as_nanos() as f64 / ops as f64);
            tb.push(b().as_nanos() as f64 / ops as f64);
        } else {
            tb.push(b().as_nanos() as f64 / ops as f64);
            ta.push(a().as_nanos() as f64 / ops as f64);
        }
    }
    (median(&mut ta), median(&mut tb))
}

fn timed(iters: usize, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed()
}

// --------------------------------------------------------------------------------------------------
// The pairs
// --------------------------------------------------------------------------------------------------

struct Cfg {
    rounds: usize,
    iters: usize,
    batch: usize,
}

/// kevent(no changes, 1 slot, timeout 0) with nothing ready vs epoll_wait(maxevents 1, timeout 0) on an
/// epoll holding one idle eventfd (as the kqueue's inner epoll holds its kick).
fn empty(c: &Cfg, rows: &mut Vec<Row>) {
    let kq = Kqueue::new().unwrap();
    let mut out = [Kevent::default(); 1];
    let ep = epoll_create();
    let idle = eventfd();
    check(epoll_ctl(ep, libc::EPOLL_CTL_ADD, idle, libc::EPOLLIN as u32), "epoll_ctl");
    let mut buf = [libc::epoll_event { events: 0, u64: 0 }; 1];
    let (k, b) = pair(
        c.rounds,
        c.iters,
        || {
            timed(c.iters, || {
                let n = kq.kevent(&[], &mut out, Some(Duration::ZERO)).unwrap();
                assert_eq!(n, 0);
            })
        },
        || {
            timed(c.iters, || {
                let n = epoll_wait(ep, &mut buf, 0);
                assert_eq!(n, 0);
            })
        },
    );
    rows.push(Row {
        key: "engine.empty",
        what: "kevent(timeout 0), nothing ready",
        kqrs_ns: k,
        base_ns: b,
        base: "epoll_wait(0), nothing ready",
        target: Some(1.10),
    });
    close(idle);
    close(ep);
}

/// One ready socket (level-triggered, 1 byte pending): kevent returns it (with `data` = FIONREAD) vs
/// epoll_wait returning it; and vs epoll_wait + the FIONREAD a caller needs to learn what kevent tells.
fn one_ready(c: &Cfg, rows: &mut Vec<Row>) {
    let (a, b) = socketpair();
    let (a2, b2) = socketpair();
    assert_eq!(write(&b, b"x"), 1);
    assert_eq!(write(&b2, b"x"), 1);
    let kq = Kqueue::new().unwrap();
    kq.kevent(&[Kevent::new(a as usize, EVFILT_READ, EV_ADD, 0, 0, 0)], &mut [], None).unwrap();
    let mut out = [Kevent::default(); 1];
    let ep = epoll_create();
    check(epoll_ctl(ep, libc::EPOLL_CTL_ADD, a2, libc::EPOLLIN as u32), "epoll_ctl");
    let mut buf = [libc::epoll_event { events: 0, u64: 0 }; 1];
    let mut kqf = || {
        timed(c.iters, || {
            let n = kq.kevent(&[], &mut out, Some(Duration::ZERO)).unwrap();
            assert!(n == 1 && out[0].data == 1);
        })
    };
    let (k, r) = pair(c.rounds, c.iters, &mut kqf, || {
        timed(c.iters, || {
            let n = epoll_wait(ep, &mut buf, 0);
            assert_eq!(n, 1);
        })
    });
    rows.push(Row {
        key: "engine.one_ready",
        what: "kevent(timeout 0), one socket ready",
        kqrs_ns: k,
        base_ns: r,
        base: "epoll_wait(0)",
        target: None,
    });
    let (k, r) = pair(c.rounds, c.iters, &mut kqf, || {
        timed(c.iters, || {
            let n = epoll_wait(ep, &mut buf, 0);
            assert_eq!(n, 1);
            assert_eq!(fionread(&(buf[0].u64 as i32)), 1);
        })
    });
    rows.push(Row {
        key: "engine.one_ready_data",
        what: "kevent(timeout 0), one socket ready, data",
        kqrs_ns: k,
        base_ns: r,
        base: "epoll_wait(0) + FIONREAD",
        target: Some(1.00),
    });
    drop(kq);
    for fd in [a, b, a2, b2, ep] {
        close(fd);
    }
}

/// Registering `batch` sockets: one kevent() with `batch` EV_ADD changes vs `batch` epoll_ctl(ADD) calls;
/// then removing them (EV_DELETE vs epoll_ctl(DEL)), each timed alone. Also one change per kevent() call.
fn changes(c: &Cfg, rows: &mut Vec<Row>) {
    let n = c.batch;
    let pairs: Vec<(i32, i32)> = (0..n.div_ceil(2)).map(|_| socketpair()).collect();
    let fds: Vec<i32> = pairs.iter().flat_map(|&(a, b)| [a, b]).take(n).collect();
    let adds: Vec<Kevent> = fds.iter().map(|&fd| Kevent::new(fd as usize, EVFILT_READ, EV_ADD, 0, 0, 0)).collect();
    let dels: Vec<Kevent> = fds.iter().map(|&fd| Kevent::new(fd as usize, EVFILT_READ, EV_DELETE, 0, 0, 0)).collect();
    let kq = Kqueue::new().unwrap();
    let ep = epoll_create();
    let rounds = c.rounds.max(4) / 2;

    let mut del_k = Vec::new();
    let mut del_r = Vec::new();
    let (k, r) = pair(
        rounds,
        n,
        || {
            let t = Instant::now();
            assert_eq!(kq.kevent(&adds, &mut [], None).unwrap(), 0);
            let add = t.elapsed();
            let t = Instant::now();
            assert_eq!(kq.kevent(&dels, &mut [], None).unwrap(), 0);
            del_k.push(t.elapsed().as_nanos() as f64 / n as f64);
            add
        },
        || {
            let t = Instant::now();
            for &fd in &fds {
                check(epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32), "epoll_ctl ADD");
            }
            let add = t.elapsed();
            let t = Instant::now();
            for &fd in &fds {
                check(epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, 0), "epoll_ctl DEL");
            }
            del_r.push(t.elapsed().as_nanos() as f64 / n as f64);
            add
        },
    );
    rows.push(Row {
        key: "engine.ev_add",
        what: "EV_ADD (READ, socket) per change, one changelist",
        kqrs_ns: k,
        base_ns: r,
        base: "epoll_ctl(ADD)",
        target: None,
    });
    rows.push(Row {
        key: "engine.ev_delete",
        what: "EV_DELETE per change, one changelist",
        kqrs_ns: median(&mut del_k),
        base_ns: median(&mut del_r),
        base: "epoll_ctl(DEL)",
        target: None,
    });

    // one change per kevent() call: the per-call overhead on top of epoll_ctl
    let (k, r) = pair(
        rounds,
        n,
        || {
            let t = Instant::now();
            for a in &adds {
                kq.kevent(std::slice::from_ref(a), &mut [], None).unwrap();
            }
            let add = t.elapsed();
            kq.kevent(&dels, &mut [], None).unwrap();
            add
        },
        || {
            let t = Instant::now();
            for &fd in &fds {
                check(epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32), "epoll_ctl ADD");
            }
            let add = t.elapsed();
            for &fd in &fds {
                epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, 0);
            }
            add
        },
    );
    rows.push(Row {
        key: "engine.ev_add_single",
        what: "EV_ADD, one change per kevent() call",
        kqrs_ns: k,
        base_ns: r,
        base: "epoll_ctl(ADD)",
        target: None,
    });
    drop(kq);
    close(ep);
    for (a, b) in pairs {
        close(a);
        close(b);
    }
}

/// EVFILT_USER trigger + retrieve in one kevent() vs eventfd write + epoll_wait + eventfd read.
fn user(c: &Cfg, rows: &mut Vec<Row>) {
    let kq = Kqueue::new().unwrap();
    kq.kevent(&[Kevent::new(1, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, 0)], &mut [], None).unwrap();
    let trig = [Kevent::new(1, EVFILT_USER, 0, NOTE_TRIGGER, 0, 0)];
    let mut out = [Kevent::default(); 1];
    let ep = epoll_create();
    let efd = eventfd();
    check(epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, libc::EPOLLIN as u32), "epoll_ctl");
    let mut buf = [libc::epoll_event { events: 0, u64: 0 }; 1];
    let (k, r) = pair(
        c.rounds,
        c.iters,
        || {
            timed(c.iters, || {
                let n = kq.kevent(&trig, &mut out, Some(Duration::ZERO)).unwrap();
                assert!(n == 1 && out[0].filter == EVFILT_USER);
            })
        },
        || {
            timed(c.iters, || {
                eventfd_write(efd);
                assert_eq!(epoll_wait(ep, &mut buf, 0), 1);
                assert_eq!(eventfd_read(efd), 1);
            })
        },
    );
    rows.push(Row {
        key: "engine.user",
        what: "EVFILT_USER trigger + retrieve, one kevent()",
        kqrs_ns: k,
        base_ns: r,
        base: "eventfd write + epoll_wait + read",
        target: None,
    });
    drop(kq);
    close(efd);
    close(ep);
}

/// Cross-thread wake-up latency: a thread blocked in kevent() (no changes, 1 slot, no timeout) woken by
/// a USER trigger from another thread vs a thread blocked in epoll_wait(-1) woken by an eventfd write
/// (and reading it back). The firing thread spins until the waiter has stamped its wake-up. Samples
/// alternate between the sides in chunks; p50 of each.
fn xthread(c: &Cfg, rows: &mut Vec<Row>) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;
    let kq = Arc::new(Kqueue::new().unwrap());
    kq.kevent(&[Kevent::new(1, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, 0)], &mut [], None).unwrap();
    let trig = [Kevent::new(1, EVFILT_USER, 0, NOTE_TRIGGER, 0, 0)];
    let ep = epoll_create();
    let efd = eventfd();
    check(epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, libc::EPOLLIN as u32), "epoll_ctl");
    let base = Instant::now();

    struct Side {
        armed: AtomicBool,
        woke: AtomicBool,
        t1: AtomicU64,
        stop: AtomicBool,
    }
    // A thread that blocks in `wait` again and again, stamping each wake-up (until told to stop).
    let waiter = |mut wait: Box<dyn FnMut() + Send>| {
        let s = Arc::new(Side {
            armed: AtomicBool::new(false),
            woke: AtomicBool::new(false),
            t1: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let t = s.clone();
        let h = std::thread::spawn(move || loop {
            t.armed.store(true, SeqCst);
            wait();
            t.t1.store(base.elapsed().as_nanos() as u64, SeqCst);
            if t.stop.load(SeqCst) {
                return;
            }
            t.woke.store(true, SeqCst);
        });
        (s, h)
    };
    let (sk, hk) = {
        let kq = kq.clone();
        let mut out = [Kevent::default(); 1];
        waiter(Box::new(move || assert_eq!(kq.kevent(&[], &mut out, None).unwrap(), 1)))
    };
    let (se, he) = {
        let mut buf = [libc::epoll_event { events: 0, u64: 0 }; 1];
        waiter(Box::new(move || {
            assert_eq!(epoll_wait(ep, &mut buf, -1), 1);
            eventfd_read(efd);
        }))
    };
    let sample = |s: &Side, fire: &dyn Fn()| -> f64 {
        while !s.armed.swap(false, SeqCst) {
            std::hint::spin_loop();
        }
        std::thread::sleep(Duration::from_micros(200));
        let t0 = base.elapsed().as_nanos() as u64;
        fire();
        while !s.woke.swap(false, SeqCst) {
            std::hint::spin_loop();
        }
        (s.t1.load(SeqCst) - t0) as f64
    };
    let fk = || {
        kq.kevent(&trig, &mut [], Some(Duration::ZERO)).unwrap();
    };
    let fe = || eventfd_write(efd);
    let (mut lk, mut le) = (Vec::new(), Vec::new());
    let chunks = (c.rounds / 10).max(2);
    for ch in 0..chunks {
        for side in if ch % 2 == 0 { [0, 1] } else { [1, 0] } {
            for _ in 0..50 {
                if side == 0 {
                    lk.push(sample(&sk, &fk));
                } else {
                    le.push(sample(&se, &fe));
                }
            }
        }
    }
    for (s, fire) in [(&sk, &fk as &dyn Fn()), (&se, &fe)] {
        while !s.armed.load(SeqCst) {
            std::hint::spin_loop();
        }
        s.stop.store(true, SeqCst);
        fire();
    }
    hk.join().unwrap();
    he.join().unwrap();
    rows.push(Row {
        key: "engine.xthread.p50",
        what: "cross-thread wake-up p50: USER trigger",
        kqrs_ns: median(&mut lk),
        base_ns: median(&mut le),
        base: "eventfd write -> epoll_wait(-1) + read",
        target: None,
    });
    close(efd);
    close(ep);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--smoke") || std::env::var("KQRS_BENCH_SMOKE").is_ok_and(|v| v == "1");
    raise_nofile();
    let mut c = if smoke {
        Cfg { rounds: 4, iters: 10, batch: 100 }
    } else {
        Cfg {
            rounds: 400,
            iters: 500,
            batch: std::env::var("KQRS_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(1000),
        }
    };
    let mut groups = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => c.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            // cargo passes --bench; the rest of the flags are ours
            s if s.starts_with("--") => {}
            s => groups.push(s.to_string()),
        }
    }
    let want = |g: &str| groups.is_empty() || groups.iter().any(|x| x == g);
    let mut rows = Vec::new();
    if want("empty") {
        empty(&c, &mut rows);
    }
    if want("one_ready") {
        one_ready(&c, &mut rows);
    }
    if want("changes") {
        changes(&c, &mut rows);
    }
    if want("user") {
        user(&c, &mut rows);
    }
    if want("xthread") {
        xthread(&c, &mut rows);
    }

    println!(
        "engine bench ({}; medians of {} rounds, ns per operation; ratio = kqrs / raw)",
        if smoke { "smoke" } else { "full" },
        c.rounds
    );
    println!("{:<48} {:>9} {:>9} {:>7} {:>7}  vs", "measure", "kqrs ns", "raw ns", "ratio", "target");
    for r in &rows {
        let ratio = r.kqrs_ns / r.base_ns;
        let target = r.target.map(|t| format!("{t:.2}")).unwrap_or_else(|| "-".into());
        println!("{:<48} {:>9.1} {:>9.1} {:>7.3} {:>7}  {}", r.what, r.kqrs_ns, r.base_ns, ratio, target, r.base);
    }
    if let Ok(path) = std::env::var("KQRS_BENCH_ENGINE_JSON") {
        let mut s = String::from("{\n");
        for (i, r) in rows.iter().enumerate() {
            s += &format!(
                "  \"{}\": {{\"kqrs_ns\": {:.3}, \"base_ns\": {:.3}, \"base\": \"{}\", \"what\": \"{}\"}}{}\n",
                r.key,
                r.kqrs_ns,
                r.base_ns,
                r.base,
                r.what,
                if i + 1 < rows.len() { "," } else { "" }
            );
        }
        s += "}\n";
        std::fs::write(&path, s).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}

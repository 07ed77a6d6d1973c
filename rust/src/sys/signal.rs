//! Signals: counting deliveries without taking them from the application.
//!
//! kqrs catches a watched signal with its own handler, counts the delivery, wakes every kqueue (one global
//! eventfd, registered edge-triggered in each kqueue that watches signals), then hands the signal to the
//! disposition that was there before: the application's handler (C, or Python's, which then runs its
//! Python handler), SIG_IGN (nothing more), or SIG_DFL (see `on_signal`). Everything the handler touches is
//! an atomic or an async-signal-safe call.

use super::{cvt, track, Errno, RawFd, Result};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

const NSIG: usize = 65;
static SIG_COUNT: [AtomicU64; NSIG] = [const { AtomicU64::new(0) }; NSIG];
static SIG_PREV_HANDLER: [std::sync::atomic::AtomicUsize; NSIG] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; NSIG];
static SIG_PREV_FLAGS: [AtomicI32; NSIG] = [const { AtomicI32::new(0) }; NSIG];
static SIG_REFS: [std::sync::atomic::AtomicU32; NSIG] = [const { std::sync::atomic::AtomicU32::new(0) }; NSIG];
static SIG_WAKE: AtomicI32 = AtomicI32::new(-1);
/// Runs of kqrs's handler per thread (by tid mod 64): a blocking wait tells whether a signal was handled on
/// its own thread meanwhile (`signal_runs_here`).
static SIG_RUNS: [AtomicU32; 64] = [const { AtomicU32::new(0) }; 64];
/// How many signals knotes watch (non-zero: waits check SIG_RUNS).
static SIG_WATCHED: AtomicU32 = AtomicU32::new(0);
/// Deliveries that reached kqrs's handler (bumped on entry), to tell a pending-signal scan that one ran.
static SIG_SEQ: [AtomicU64; NSIG] = [const { AtomicU64::new(0) }; NSIG];
/// 1 while a pending (blocked) instance of the signal was counted by a scan: its delivery, once unblocked,
/// must not count again (the handler takes the mark instead).
static SIG_MARK: [AtomicU32; NSIG] = [const { AtomicU32::new(0) }; NSIG];
/// A signalfd whose mask is every watched signal. Never read: registered (edge-triggered) in each kqueue
/// that watches signals, it reports that a watched signal is pending, which a blocked signal stays.
static SIG_PENDING_FD: AtomicI32 = AtomicI32::new(-1);
/// The full previous sigaction of each watched signal, to restore it exactly; and the lock that orders
/// installs and restores (never taken by the handler).
static SIG_SAVED: std::sync::Mutex<[Option<SavedAction>; NSIG]> = std::sync::Mutex::new([const { None }; NSIG]);

#[derive(Clone, Copy)]
struct SavedAction(libc::sigaction);
// SAFETY: a sigaction is plain data (a handler address, flags and a mask).
unsafe impl Send for SavedAction {}

/// Deliveries of `sig` counted so far (process-wide, since the first knote for it).
pub fn signal_count(sig: i32) -> u64 {
    SIG_COUNT.get(sig as usize).map_or(0, |c| c.load(Ordering::SeqCst))
}

/// The eventfd the signal handler writes to (created once, never closed, deliberately not in the
/// fork-child close list: a handler inherited by a child must never write to a reused fd number).
pub fn signal_wake_fd() -> Result<RawFd> {
    let fd = SIG_WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        return Ok(fd);
    }
    // SAFETY: plain syscall with flag arguments.
    let new = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    match SIG_WAKE.compare_exchange(-1, new, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => Ok(new),
        Err(existing) => {
            // SAFETY: `new` is ours and unused.
            unsafe { libc::close(new) };
            Ok(existing)
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: __errno_location returns this thread's errno; saved and restored around our write.
    let errno_ptr = unsafe { libc::__errno_location() };
    // SAFETY: errno_ptr is valid for this thread.
    let saved_errno = unsafe { *errno_ptr };
    let i = sig as usize;
    // SAFETY: gettid(2) takes no arguments and is async-signal-safe.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    SIG_RUNS[(tid & 63) as usize].fetch_add(1, Ordering::SeqCst);
    if i < NSIG {
        SIG_SEQ[i].fetch_add(1, Ordering::SeqCst);
        // Counted already if a scan saw it pending while it was blocked (`signal_scan_pending`).
        if SIG_MARK[i].swap(0, Ordering::SeqCst) == 0 {
            SIG_COUNT[i].fetch_add(1, Ordering::SeqCst);
        }
        let fd = SIG_WAKE.load(Ordering::SeqCst);
        if fd >= 0 {
            let one = 1u64.to_ne_bytes();
            // SAFETY: write(2) is async-signal-safe; `one` is 8 valid bytes.
            unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
        }
        let mut h = SIG_PREV_HANDLER[i].load(Ordering::SeqCst);
        let flags = SIG_PREV_FLAGS[i].load(Ordering::SeqCst);
        if flags & libc::SA_RESETHAND != 0 && h != libc::SIG_DFL && h != libc::SIG_IGN {
            // A one-shot handler: this delivery is its last; later ones meet the default disposition.
            h = SIG_PREV_HANDLER[i].swap(libc::SIG_DFL, Ordering::SeqCst);
        }
        if h == libc::SIG_IGN {
            // ignored: counted, nothing else
        } else if h == libc::SIG_DFL {
            if matches!(sig, libc::SIGSEGV | libc::SIGBUS | libc::SIGFPE | libc::SIGILL | libc::SIGTRAP | libc::SIGSYS)
            {
                // A fault nobody handles must still kill the process: back to the default action, and
                // the signal again (blocked until this handler returns).
                // SAFETY: signal(2) and raise(3) are async-signal-safe.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                    libc::raise(sig);
                }
            }
            // Any other default action is not taken while a knote watches the signal (docs/design.md).
        } else if flags & libc::SA_SIGINFO != 0 {
            // SAFETY: h is the sa_sigaction the application installed, with SA_SIGINFO.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(h) };
            f(sig, info, ctx);
        } else {
            // SAFETY: h is the sa_handler the application installed.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
            f(sig);
        }
    }
    // SAFETY: errno_ptr is valid for this thread.
    unsafe { *errno_ptr = saved_errno };
}

fn current_action(sig: i32) -> Result<libc::sigaction> {
    // SAFETY: sigaction is plain old data; all-zero is valid.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    cvt(unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) })?;
    Ok(old)
}

/// Puts kqrs's handler in front of `prev` (remembered as the disposition to hand signals to).
fn install_over(sig: i32, prev: libc::sigaction, saved: &mut [Option<SavedAction>; NSIG]) -> Result<()> {
    let i = sig as usize;
    SIG_PREV_HANDLER[i].store(prev.sa_sigaction, Ordering::SeqCst);
    SIG_PREV_FLAGS[i].store(prev.sa_flags, Ordering::SeqCst);
    // SAFETY: sigaction is plain old data; all-zero is valid.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = on_signal as *const () as usize;
    // Keep the application's restart, alternate-stack and SIGCHLD flags, so system calls and child
    // handling behave as before.
    act.sa_flags = libc::SA_SIGINFO
        | (prev.sa_flags
            & (libc::SA_RESTART | libc::SA_ONSTACK | libc::SA_NOCLDSTOP | libc::SA_NOCLDWAIT | libc::SA_NODEFER));
    if sig == libc::SIGCHLD && prev.sa_sigaction == libc::SIG_IGN {
        // SIGCHLD at SIG_IGN means "reap my children automatically": keep that with a handler in place.
        act.sa_flags |= libc::SA_NOCLDWAIT;
    }
    act.sa_mask = prev.sa_mask;
    // SAFETY: act is a valid sigaction; the old one is not needed.
    cvt(unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) })?;
    saved[i] = Some(SavedAction(prev));
    // A copy the fork-child handler can reach without a lock (leaked: one per install, small).
    // The previous copy is never freed: a concurrent fork may still be reading it.
    SIG_SAVED_RAW[i].swap(Box::into_raw(Box::new(prev)), Ordering::SeqCst);
    Ok(())
}

/// Saved dispositions for the fork child (see `signals_reset_in_child`).
static SIG_SAVED_RAW: [std::sync::atomic::AtomicPtr<libc::sigaction>; NSIG] =
    [const { std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()) }; NSIG];

/// In a fork child (async-signal-safe): every watched signal gets its saved disposition back (the
/// child has no knotes), and the shared wake eventfd is forgotten so the child's signals never wake the
/// parent's kqueues.
pub fn signals_reset_in_child() {
    // Loads before stores, as in close_owned_in_child: no copy-on-write fault where nothing changes.
    if SIG_WAKE.load(Ordering::Relaxed) != -1 {
        SIG_WAKE.store(-1, Ordering::SeqCst);
    }
    if SIG_PENDING_FD.load(Ordering::Relaxed) != -1 {
        SIG_PENDING_FD.store(-1, Ordering::SeqCst); // closed with kqrs's other fds
    }
    if SIG_WATCHED.load(Ordering::Relaxed) != 0 {
        SIG_WATCHED.store(0, Ordering::SeqCst);
    }
    for i in 1..NSIG {
        if SIG_REFS[i].load(Ordering::Relaxed) == 0 || SIG_REFS[i].swap(0, Ordering::SeqCst) == 0 {
            continue;
        }
        let p = SIG_SAVED_RAW[i].load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: p points to a leaked, never-freed sigaction written before it was published;
            // sigaction(2) is async-signal-safe.
            unsafe { libc::sigaction(i as i32, p, std::ptr::null_mut()) };
        }
        SIG_PREV_HANDLER[i].store(libc::SIG_DFL, Ordering::SeqCst);
    }
}

fn is_ours(a: &libc::sigaction) -> bool {
    a.sa_sigaction == on_signal as *const () as usize
}

/// One more knote watches `sig`: the first one installs kqrs's handler. EINVAL for signals that cannot
/// be caught (SIGKILL, SIGSTOP, glibc's reserved ones).
pub fn signal_ref(sig: i32) -> Result<()> {
    if !(1..NSIG as i32).contains(&sig) || sig == libc::SIGKILL || sig == libc::SIGSTOP {
        return Err(Errno(libc::EINVAL));
    }
    let mut saved = SIG_SAVED.lock().unwrap_or_else(|p| p.into_inner());
    let i = sig as usize;
    if SIG_REFS[i].load(Ordering::SeqCst) == 0 {
        let prev = current_action(sig)?;
        if !is_ours(&prev) {
            install_over(sig, prev, &mut saved)?;
        }
        // An instance pending from before (blocked) is still to be delivered: counted like one sent now, which
        // lets a program block a signal, add its knote, then unblock it without losing one sent meanwhile.
        SIG_MARK[i].store(0, Ordering::SeqCst);
        SIG_REFS[i].fetch_add(1, Ordering::SeqCst);
        if let Err(e) = update_pending_fd() {
            SIG_REFS[i].fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        SIG_WATCHED.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }
    SIG_REFS[i].fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// A token that changes when kqrs's signal handler runs on the calling thread (or, rarely, on another
/// thread whose tid is the same mod 64); None while no signal is watched.
pub fn signal_runs_here() -> Option<u32> {
    if SIG_WATCHED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    thread_local! {
        static TID: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
    }
    let tid = TID.with(|t| {
        if t.get() == 0 {
            // SAFETY: gettid(2) takes no arguments.
            t.set(unsafe { libc::syscall(libc::SYS_gettid) });
        }
        t.get()
    });
    Some(SIG_RUNS[(tid & 63) as usize].load(Ordering::SeqCst))
}

/// The signals pending for the calling thread (its own and the process's).
fn pending_signals() -> Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain old data; sigpending fills it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t to write.
    cvt(unsafe { libc::sigpending(&mut set) })?;
    Ok(set)
}

fn sigismember(set: &libc::sigset_t, sig: i32) -> bool {
    // SAFETY: `set` is a valid sigset_t; sig is checked by the caller to be in 1..NSIG.
    unsafe { libc::sigismember(set, sig) == 1 }
}

/// Sets the pending-signal signalfd's mask to the watched signals (creating it the first time). Called with
/// SIG_SAVED held.
fn update_pending_fd() -> Result<()> {
    // SAFETY: sigset_t is plain old data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for (i, refs) in SIG_REFS.iter().enumerate().skip(1) {
        if refs.load(Ordering::SeqCst) > 0 {
            // SAFETY: `set` is initialised and i is a signal number in 1..NSIG.
            unsafe { libc::sigaddset(&mut set, i as i32) };
        }
    }
    let cur = SIG_PENDING_FD.load(Ordering::SeqCst);
    // SAFETY: `set` is a valid sigset_t; `cur` is -1 (new signalfd) or kqrs's signalfd (new mask).
    let fd = cvt(unsafe { libc::signalfd(cur, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    if cur < 0 {
        SIG_PENDING_FD.store(track(fd), Ordering::SeqCst);
    }
    Ok(())
}

/// The signalfd that reports a watched signal pending (see SIG_PENDING_FD), once a signal was watched.
pub fn signal_pending_fd() -> Option<RawFd> {
    Some(SIG_PENDING_FD.load(Ordering::SeqCst)).filter(|&fd| fd >= 0)
}

/// Counts the watched signals pending now (blocked, or not yet taken by a thread), once per pending
/// instance: FreeBSD counts a signal when it is sent, blocked or not. Its delivery, once unblocked, is not
/// counted again. Only what the calling thread can see is found: signals pending for another thread alone
/// are counted when delivered.
pub fn signal_scan_pending() {
    let Ok(set) = pending_signals() else { return };
    for sig in 1..NSIG as i32 {
        let i = sig as usize;
        if !sigismember(&set, sig) || SIG_REFS[i].load(Ordering::SeqCst) == 0 || SIG_MARK[i].load(Ordering::SeqCst) != 0
        {
            continue;
        }
        // A delivery can run at any point in here (on any thread): SIG_SEQ tells whether one did between
        // seeing the signal pending and marking it, and the mark tells whether that delivery took it.
        loop {
            let seq = SIG_SEQ[i].load(Ordering::SeqCst);
            if !pending_signals().is_ok_and(|set| sigismember(&set, sig)) {
                break;
            }
            if SIG_MARK[i].compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst).is_err() {
                break; // another scan counted it
            }
            if SIG_SEQ[i].load(Ordering::SeqCst) == seq {
                SIG_COUNT[i].fetch_add(1, Ordering::SeqCst); // its delivery, if any, takes the mark
                break;
            }
            if SIG_MARK[i].swap(0, Ordering::SeqCst) == 0 {
                SIG_COUNT[i].fetch_add(1, Ordering::SeqCst); // a delivery took the mark: not counted there
                break;
            }
            // A delivery ran before the mark was set, and counted itself: look again.
        }
    }
}

/// One knote less watches `sig`: the last one restores the disposition exactly as it was (as the
/// application last set it, if it changed it meanwhile through Python's signal.signal()).
pub fn signal_unref(sig: i32) {
    let i = sig as usize;
    if !(1..NSIG).contains(&i) {
        return;
    }
    let mut saved = SIG_SAVED.lock().unwrap_or_else(|p| p.into_inner());
    if SIG_REFS[i].load(Ordering::SeqCst) == 0 || SIG_REFS[i].fetch_sub(1, Ordering::SeqCst) != 1 {
        return;
    }
    SIG_WATCHED.fetch_sub(1, Ordering::SeqCst);
    let _ = update_pending_fd(); // a narrower mask; failing, the fd only reports a signal nobody watches
    if let Some(SavedAction(prev)) = saved[i].take() {
        if current_action(sig).is_ok_and(|cur| is_ours(&cur)) {
            // SAFETY: prev is the sigaction read from the kernel earlier.
            unsafe { libc::sigaction(sig, &prev, std::ptr::null_mut()) };
        }
    }
}

#[cfg(feature = "python")] // the Python layer's (doctor, tests)
/// After the application changed the disposition of `sig` (Python's signal.signal() calls this): if
/// knotes watch it, the new disposition becomes the one signals are handed to, and kqrs's handler goes
/// back in front of it.
pub fn signal_reassert(sig: i32) -> Result<()> {
    let i = sig as usize;
    if !(1..NSIG).contains(&i) {
        return Ok(());
    }
    let mut saved = SIG_SAVED.lock().unwrap_or_else(|p| p.into_inner());
    if SIG_REFS[i].load(Ordering::SeqCst) == 0 {
        return Ok(());
    }
    let cur = current_action(sig)?;
    if is_ours(&cur) {
        return Ok(());
    }
    install_over(sig, cur, &mut saved)
}

#[cfg(feature = "python")] // the Python layer's (doctor, tests)
/// Whether kqrs's handler is installed for `sig` now (for tests and doctor).
pub fn signal_hooked(sig: i32) -> bool {
    current_action(sig).is_ok_and(|a| is_ours(&a))
}

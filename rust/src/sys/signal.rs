//! Signals: counting deliveries without taking them from the application.
//!
//! kqrs catches a watched signal with its own handler, counts the delivery, wakes every kqueue (one global
//! eventfd, registered edge-triggered in each kqueue that watches signals), then hands the signal to the
//! disposition that was there before: the application's handler (C, or Python's, which then runs its
//! Python handler), SIG_IGN (nothing more), or SIG_DFL (see `on_signal`). Everything the handler touches is
//! an atomic or an async-signal-safe call.

use super::{cvt, track, Errno, RawFd, Result};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

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
/// Pending (blocked) instances of the signal a scan counted already: their deliveries, once unblocked, must
/// not count again (each takes a mark instead). 0 or 1 for a standard signal, which Linux keeps pending
/// once; up to the queue's length for a real-time one (delivered in the order sent, so the counted ones
/// come first).
static SIG_MARK: [AtomicU32; NSIG] = [const { AtomicU32::new(0) }; NSIG];
/// The first real-time signal number (the kernel's SIGRTMIN): from here on every send queues an instance.
const SIGRT_FIRST: usize = 32;
/// Set while a thread counts queued real-time signals (a flag, not a lock: a fork child may inherit it set,
/// and clears it).
static RT_SCAN_BUSY: AtomicBool = AtomicBool::new(false);
/// A thread wanted to count while another one was counting: the counting one looks again before it stops.
static RT_SCAN_MISSED: AtomicBool = AtomicBool::new(false);
/// Bumped when what was counted must be looked at afresh (a signal newly watched, a fork child).
static RT_EPOCH: AtomicU64 = AtomicU64::new(1);
/// Counts in a row that found nothing new although the user's queued-signal total had changed: other
/// processes of the same user change it too (SigQ is per user), and each count's put-back wakes the kqueue
/// again. From RT_FRUITLESS_MAX on, such a change alone no longer starts a count (no spin); a delivery, a
/// newly watched signal or a change in what is pending does.
static RT_FRUITLESS: AtomicU32 = AtomicU32::new(0);
const RT_FRUITLESS_MAX: u32 = 8;

thread_local! {
    /// What this thread's last real-time count explained: (RT_EPOCH, the user's queued-signal total read
    /// before taking the queues, the watched real-time signals pending for this thread then). Taking and
    /// putting back the queues makes the pending-signal signalfd readable again; an unchanged triple tells
    /// that wake-up from a new send without taking the queues again (which would wake every kqueue again,
    /// for ever). Per thread: each thread sees its own pending signals besides the process's.
    static RT_SEEN: std::cell::Cell<(u64, u64, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
}

/// The sender's part of a siginfo, to tell queued instances apart.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Sender {
    code: i32,
    pid: u32,
    uid: u32,
    tid: u32,
    overrun: u32,
    fd: i32,
    band: u32,
    ptr: u64,
}

impl Sender {
    fn of(si: &libc::signalfd_siginfo) -> Sender {
        Sender {
            code: si.ssi_code,
            pid: si.ssi_pid,
            uid: si.ssi_uid,
            tid: si.ssi_tid,
            overrun: si.ssi_overrun,
            fd: si.ssi_fd,
            band: si.ssi_band,
            ptr: si.ssi_ptr,
        }
    }
}

/// Per real-time signal: the instances the last count put back (all counted), in queue order. Only the
/// counting thread (RT_SCAN_BUSY) touches it; a fork child that finds it locked does without.
static RT_COUNTED: std::sync::Mutex<[Vec<Sender>; NSIG]> = std::sync::Mutex::new([const { Vec::new() }; NSIG]);
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
    // A fork child has this fd to forget (`fork_child_reset`).
    super::host::FORK.signals.store(true, Ordering::SeqCst);
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
        if RT_FRUITLESS.load(Ordering::Relaxed) != 0 {
            RT_FRUITLESS.store(0, Ordering::Relaxed); // a delivery: what is queued changed
        }
        // Counted already if a scan saw it pending while it was blocked (`signal_scan_pending`).
        if SIG_MARK[i].fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| m.checked_sub(1)).is_err() {
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
    if RT_SCAN_BUSY.load(Ordering::Relaxed) {
        RT_SCAN_BUSY.store(false, Ordering::SeqCst);
    }
    if RT_SCAN_MISSED.load(Ordering::Relaxed) {
        RT_SCAN_MISSED.store(false, Ordering::SeqCst);
    }
    // (RT_EPOCH and RT_FRUITLESS need nothing: the child's first knote for a signal bumps and clears them.)
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
        super::host::FORK.signals.store(true, Ordering::SeqCst); // a fork child has this to reset
        let prev = current_action(sig)?;
        if !is_ours(&prev) {
            install_over(sig, prev, &mut saved)?;
        }
        // An instance pending from before (blocked) is still to be delivered: counted like one sent now, which
        // lets a program block a signal, add its knote, then unblock it without losing one sent meanwhile.
        SIG_MARK[i].store(0, Ordering::SeqCst);
        RT_EPOCH.fetch_add(1, Ordering::SeqCst); // its queued instances are to be counted
        RT_FRUITLESS.store(0, Ordering::SeqCst);
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
    let mut rt = 0u64;
    for (sig, refs) in SIG_REFS.iter().enumerate().skip(SIGRT_FIRST) {
        if sigismember(&set, sig as i32) && refs.load(Ordering::SeqCst) > 0 {
            rt |= 1 << (sig - 1);
        }
    }
    if rt != 0 {
        scan_realtime(rt);
    }
    for sig in 1..SIGRT_FIRST as i32 {
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

/// What /proc/thread-self/status says of signals: the user's queued-signal total (SigQ), and the
/// signals pending for this thread alone (SigPnd) and for the whole process (ShdPnd), as bit sig-1.
struct SigStatus {
    queued: u64,
    thread: u64,
    shared: u64,
}

fn sig_status() -> Option<SigStatus> {
    let mut buf = [0u8; 4096];
    // SAFETY: a NUL-terminated path and flags.
    let fd = unsafe { libc::open(c"/proc/thread-self/status".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: `buf[len..]` is writable memory of the length passed; fd is ours.
        let r = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if r <= 0 {
            break;
        }
        len += r as usize;
    }
    // SAFETY: fd is ours and used no more.
    unsafe { libc::close(fd) };
    let text = std::str::from_utf8(&buf[..len]).ok()?;
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let queued = field("SigQ:")?.split('/').next()?.parse().ok()?;
    let thread = u64::from_str_radix(field("SigPnd:")?, 16).ok()?;
    let shared = u64::from_str_radix(field("ShdPnd:")?, 16).ok()?;
    Some(SigStatus { queued, thread, shared })
}

/// Counts the queued instances of the watched real-time signals in `pending` (bit sig-1): Linux says only
/// whether one is pending, so the instances this thread can see are taken (a signalfd read, in the order
/// they were sent), counted, and put back as they were (rt_tgsigqueueinfo: same siginfo, same order, to
/// this thread if it was sent to this thread, else to the process). Instances counted by an earlier scan
/// and still queued are the first ones (SIG_MARK says how many).
#[cold]
fn scan_realtime(pending: u64) {
    loop {
        // (Marked first: a thread that finds the flag taken leaves its mark where the holder looks after it
        // lets go, so a send that came during another thread's count is not left uncounted.)
        RT_SCAN_MISSED.store(true, Ordering::SeqCst);
        if RT_SCAN_BUSY.swap(true, Ordering::SeqCst) {
            return;
        }
        RT_SCAN_MISSED.store(false, Ordering::SeqCst);
        scan_realtime_once(pending);
        RT_SCAN_BUSY.store(false, Ordering::SeqCst);
        if !RT_SCAN_MISSED.load(Ordering::SeqCst) {
            return;
        }
    }
}

fn scan_realtime_once(pending: u64) {
    let Some(status) = sig_status() else { return };
    let epoch = RT_EPOCH.load(Ordering::SeqCst);
    let (seen_epoch, seen_sigq, seen_bits) = RT_SEEN.with(|c| c.get());
    let unchanged = seen_epoch == epoch && seen_bits == pending;
    if unchanged && (seen_sigq == status.queued || RT_FRUITLESS.load(Ordering::SeqCst) >= RT_FRUITLESS_MAX) {
        return; // nothing new: the wake-up was a put-back's (or others' churn, see RT_FRUITLESS)
    }
    let mut new = 0;
    for sig in SIGRT_FIRST..NSIG {
        if pending & (1 << (sig - 1)) != 0 {
            new += recount_queue(sig as i32, &status);
        }
    }
    if new > 0 || seen_epoch != epoch || seen_bits != pending {
        RT_FRUITLESS.store(0, Ordering::SeqCst);
    } else {
        RT_FRUITLESS.fetch_add(1, Ordering::SeqCst);
    }
    RT_SEEN.with(|c| c.set((epoch, status.queued, pending)));
}

/// Takes, counts and puts back the queued instances of `sig` this thread can see; returns how many were new.
fn recount_queue(sig: i32, status: &SigStatus) -> u64 {
    let bit = 1u64 << (sig - 1);
    // SAFETY: sigset_t is plain old data; sigemptyset initialises it and sig is in 1..NSIG.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
    }
    // SAFETY: `set` is a valid sigset_t; -1 asks for a new signalfd.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return 0; // (no fd to spare: these instances are counted when delivered)
    }
    // A signalfd read takes this thread's own instances first, then the process's. Pending in both places,
    // which one an instance came from is asked again after each one.
    let mut private = status.thread & bit != 0;
    let both = private && status.shared & bit != 0;
    let mut taken: Vec<(libc::signalfd_siginfo, bool)> = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is plain old data; the read fills it whole or fails.
        let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `si` is `size` writable bytes; fd is ours.
        let r = unsafe { libc::read(fd, (&raw mut si).cast(), size) };
        if r != size as isize {
            break;
        }
        taken.push((si, private));
        if both && private {
            private = sig_status().is_some_and(|s| s.thread & bit != 0);
        }
    }
    // SAFETY: fd is ours and used no more.
    unsafe { libc::close(fd) };
    let i = sig as usize;
    let queued = u32::try_from(taken.len()).unwrap_or(u32::MAX);
    let marked = SIG_MARK[i].swap(queued, Ordering::SeqCst);
    // The instances counted before and still queued are the first ones; which of the counted ones are left
    // is told by their senders: one taken meanwhile without a delivery (sigwaitinfo, a signalfd of the
    // application) leaves a mark no instance answers to. Without a record, every mark stands.
    let senders: Vec<Sender> = taken.iter().map(|(si, _)| Sender::of(si)).collect();
    let still = match RT_COUNTED.try_lock() {
        Ok(mut c) => {
            let before = std::mem::replace(&mut c[i], senders);
            counted_still_queued(&before, marked as usize, &c[i])
        }
        Err(_) => marked.min(queued) as usize,
    };
    // (A delivery that had left the queue but not yet reached the handler takes one of the new marks: that
    // instance is then counted at its delivery instead of now.)
    let new = u64::from(queued) - still.min(queued as usize) as u64;
    SIG_COUNT[i].fetch_add(new, Ordering::SeqCst);
    for (si, private) in &taken {
        requeue(sig, si, *private);
    }
    new
}

/// How many of the instances queued now (`now`, in queue order) were counted before: the last `marked` of
/// `before` (what the last count put back; the first ones were delivered since, each taking a mark) that
/// still lead the queue. Counted ones taken without a delivery are missing from its front.
fn counted_still_queued(before: &[Sender], marked: usize, now: &[Sender]) -> usize {
    if marked > before.len() {
        return marked.min(now.len()); // no record of them: every mark stands
    }
    let expected = &before[before.len() - marked..];
    (0..=marked.min(now.len())).rev().find(|&k| expected[marked - k..] == now[..k]).unwrap_or(0)
}

// The siginfo offsets `requeue` writes are those of 64-bit Linux (x86_64, aarch64: the targets kqrs builds).
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("sys/signal.rs writes siginfo_t with 64-bit Linux offsets");
const _: () = assert!(std::mem::size_of::<libc::siginfo_t>() == 128);

/// Puts back an instance taken from the queue, with the siginfo it was sent with.
fn requeue(sig: i32, si: &libc::signalfd_siginfo, private: bool) {
    // SAFETY: siginfo_t is plain old data; all-zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let code = si.ssi_code;
    let base = (&raw mut info).cast::<u8>();
    // SAFETY: the offsets are those of the kernel's siginfo on Linux (si_signo 0, si_errno 4, si_code 8, the
    // union from 16: _rt {pid, uid, sigval}, _timer {tid, overrun, sigval}, _sigpoll {band: long, fd}),
    // all inside the 128-byte siginfo_t; unaligned writes need no alignment.
    unsafe {
        base.cast::<i32>().write_unaligned(sig);
        base.add(4).cast::<i32>().write_unaligned(si.ssi_errno);
        base.add(8).cast::<i32>().write_unaligned(code);
        if code == libc::SI_TIMER {
            base.add(16).cast::<u32>().write_unaligned(si.ssi_tid);
            base.add(20).cast::<u32>().write_unaligned(si.ssi_overrun);
            base.add(24).cast::<u64>().write_unaligned(si.ssi_ptr);
        } else if (1..=6).contains(&code) || code == libc::SI_SIGIO {
            // POLL_IN .. POLL_HUP (an F_SETSIG signal) and SI_SIGIO: the _sigpoll layout
            base.add(16).cast::<i64>().write_unaligned(i64::from(si.ssi_band));
            base.add(24).cast::<i32>().write_unaligned(si.ssi_fd);
        } else {
            base.add(16).cast::<u32>().write_unaligned(si.ssi_pid);
            base.add(20).cast::<u32>().write_unaligned(si.ssi_uid);
            base.add(24).cast::<u64>().write_unaligned(si.ssi_ptr);
        }
    }
    // SAFETY: getpid/gettid take no arguments.
    let (pid, tid) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid) as libc::pid_t) };
    let info_ptr = &raw const info;
    // SAFETY: `info` is a valid siginfo_t; the targets are this process and thread. The kernel lets a thread
    // send itself any si_code (a kill() or tgkill() siginfo included).
    let r = unsafe {
        if private {
            libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, sig, info_ptr)
        } else {
            libc::syscall(libc::SYS_rt_sigqueueinfo, pid, sig, info_ptr)
        }
    };
    if r != 0 {
        // Only the main thread may put back a kill()'s siginfo for the whole process: from another one it goes
        // back as a kill() of this process's own (the sender's pid and uid are lost, the instance is not); one
        // that was this thread's own goes back to it with tgkill.
        // SAFETY: kill(2) / tgkill(2) of this process (and thread) with a valid signal number.
        unsafe {
            if private {
                libc::syscall(libc::SYS_tgkill, pid, tid, sig);
            } else {
                libc::kill(pid, sig);
            }
        }
    }
}

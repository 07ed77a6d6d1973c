//! The syscall layer: every raw syscall and every `unsafe` block of kqrs lives here, behind safe
//! functions that return `Result<_, Errno>`. Each unsafe block says why it is sound.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// A positive errno value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

pub type Result<T> = std::result::Result<T, Errno>;

fn cvt(r: libc::c_int) -> Result<libc::c_int> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

fn cvt_long(r: libc::c_long) -> Result<libc::c_long> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

pub type RawFd = i32;

pub use libc::epoll_event as EpollEvent;
pub const EPOLLIN: u32 = libc::EPOLLIN as u32;
pub const EPOLLOUT: u32 = libc::EPOLLOUT as u32;
pub const EPOLLERR: u32 = libc::EPOLLERR as u32;
pub const EPOLLHUP: u32 = libc::EPOLLHUP as u32;
pub const EPOLLRDHUP: u32 = libc::EPOLLRDHUP as u32;
pub const EPOLLET: u32 = libc::EPOLLET as u32;
pub const EPOLLPRI: u32 = libc::EPOLLPRI as u32;

pub fn empty_event() -> EpollEvent {
    EpollEvent { events: 0, u64: 0 }
}

// ---- every fd kqrs owns, for the fork child ----
//
// A lock-free bitmap of the fds kqrs created (1M bits, 128 KiB of zeroed static memory that is only
// touched where fds are). The pthread_atfork child handler closes them all with nothing but atomic loads
// and close(2), both async-signal-safe, so a fork while other threads are inside kqrs cannot deadlock the
// child, and the child holds none of the parent's kqueue fds.

const FD_WORDS: usize = 1 << 14;
static OWNED: [AtomicU64; FD_WORDS] = [const { AtomicU64::new(0) }; FD_WORDS];
static OWNED_MAX: AtomicI32 = AtomicI32::new(-1);

/// Records `fd` as kqrs's own (closed in a fork child). Returns it.
pub fn track(fd: RawFd) -> RawFd {
    if fd >= 0 && (fd as usize) < FD_WORDS * 64 {
        OWNED[fd as usize / 64].fetch_or(1 << (fd % 64), Ordering::SeqCst);
        OWNED_MAX.fetch_max(fd, Ordering::SeqCst);
    }
    fd
}

/// Forgets that kqrs owns `fd` (its owner closed it already: it may name someone else's file by now).
pub fn untrack(fd: RawFd) {
    if fd >= 0 && (fd as usize) < FD_WORDS * 64 {
        OWNED[fd as usize / 64].fetch_and(!(1 << (fd % 64)), Ordering::SeqCst);
    }
}

/// How many fds kqrs owns now (for tests and `doctor`).
pub fn owned_fd_count() -> usize {
    let max = OWNED_MAX.load(Ordering::SeqCst);
    if max < 0 {
        return 0;
    }
    OWNED[..=(max as usize / 64)].iter().map(|w| w.load(Ordering::SeqCst).count_ones() as usize).sum()
}

/// In a fork child: closes every fd kqrs owns. Async-signal-safe (atomics and close only).
pub fn close_owned_in_child() {
    let max = OWNED_MAX.load(Ordering::SeqCst);
    if max < 0 {
        return;
    }
    for (i, w) in OWNED[..=(max as usize / 64)].iter().enumerate() {
        // Read first: writing only words that have bits keeps the child from copying pages it never needed
        // (every write to a page shared with the parent costs a copy-on-write fault).
        if w.load(Ordering::Relaxed) == 0 {
            continue;
        }
        let mut bits = w.swap(0, Ordering::SeqCst);
        while bits != 0 {
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            // SAFETY: the fd was created by kqrs and is owned by no one else in this child.
            unsafe {
                libc::close((i * 64) as i32 + b as i32);
            }
        }
    }
}

pub fn close(fd: RawFd) {
    // Forget it first: a fork in between leaves the child one fd too many, never one closed that is not
    // ours.
    untrack(fd);
    // SAFETY: closing an fd number has no memory-safety effect; callers only close fds they own.
    unsafe {
        libc::close(fd);
    }
}

pub fn epoll_create() -> Result<RawFd> {
    // SAFETY: plain syscall with a flag argument.
    cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map(track)
}

pub fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, events: u32, token: u64) -> Result<()> {
    let mut ev = EpollEvent { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event that outlives the call; the kernel copies it.
    cvt(unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) }).map(|_| ())
}

pub fn epoll_add(epfd: RawFd, fd: RawFd, events: u32, token: u64) -> Result<()> {
    epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, events, token)
}

pub fn epoll_mod(epfd: RawFd, fd: RawFd, events: u32, token: u64) -> Result<()> {
    epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd, events, token)
}

pub fn epoll_del(epfd: RawFd, fd: RawFd) -> Result<()> {
    epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, 0, 0)
}

// 0 = unknown, 1 = epoll_pwait2 works, 2 = ENOSYS (kernel < 5.11 or seccomp).
static PWAIT2: AtomicU8 = AtomicU8::new(0);

/// Whether this kernel has epoll_pwait2 (nanosecond timeouts); probes once.
pub fn has_epoll_pwait2() -> bool {
    match PWAIT2.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            // Probe with an invalid epoll fd: ENOSYS tells it is missing, EBADF that it exists.
            let ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            let mut ev = empty_event();
            // SAFETY: ev and ts are valid for the call; fd -1 makes the kernel fail before touching them.
            let r = unsafe {
                libc::syscall(libc::SYS_epoll_pwait2, -1, &mut ev as *mut EpollEvent, 1, &ts as *const _, 0usize, 8usize)
            };
            let ok = !(r < 0 && Errno::last().0 == libc::ENOSYS);
            PWAIT2.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
    }
}

/// A stack buffer of `N` epoll events that is never zero-filled: only the entries the kernel wrote are read.
pub struct EventBuf<const N: usize> {
    buf: [std::mem::MaybeUninit<EpollEvent>; N],
    len: usize,
}

impl<const N: usize> EventBuf<N> {
    pub const LEN: usize = N;

    #[inline]
    pub fn new() -> Self {
        EventBuf { buf: [std::mem::MaybeUninit::uninit(); N], len: 0 }
    }

    /// epoll_wait into the first `max` entries (at most N); returns how many were written.
    #[inline]
    pub fn wait(&mut self, epfd: RawFd, max: usize, timeout_ns: Option<u64>) -> Result<usize> {
        let max = max.clamp(1, N);
        let ptr = self.buf.as_mut_ptr().cast::<EpollEvent>();
        self.len = 0;
        let n = epoll_wait_raw(epfd, ptr, max, timeout_ns)?;
        self.len = n.min(N);
        Ok(self.len)
    }

    /// The entries written by the last `wait`.
    #[inline]
    pub fn events(&self) -> &[EpollEvent] {
        // SAFETY: the kernel initialised the first `len` entries in the last successful wait (`len` is
        // reset before each wait and set only from its result), and EpollEvent is plain old data.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<EpollEvent>(), self.len) }
    }
}

impl<const N: usize> Default for EventBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// epoll_wait (epoll_pwait2 for ns timeouts where the kernel has it) into `len` entries at `events`,
/// which must be valid for writes of that many; timeout in ns, None = forever.
fn epoll_wait_raw(epfd: RawFd, events: *mut EpollEvent, len: usize, timeout_ns: Option<u64>) -> Result<usize> {
    let max = len.min(i32::MAX as usize) as i32;
    if let Some(ns) = timeout_ns {
        if ns > 0 && has_epoll_pwait2() {
            let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 };
            // SAFETY: `events` is valid for writes of `max` entries (caller's contract); `ts` outlives the call;
            // no sigmask.
            let r = unsafe { libc::syscall(libc::SYS_epoll_pwait2, epfd, events, max, &ts as *const _, 0usize, 8usize) };
            return cvt_long(r).map(|n| n as usize);
        }
    }
    let ms: i32 = match timeout_ns {
        None => -1,
        Some(ns) => ns.div_ceil(1_000_000).min(i32::MAX as u64) as i32,
    };
    // SAFETY: `events` is valid for writes of `max` entries (caller's contract).
    cvt(unsafe { libc::epoll_wait(epfd, events, max, ms) }).map(|n| n as usize)
}

pub fn eventfd() -> Result<RawFd> {
    // SAFETY: plain syscall with flag arguments.
    cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) }).map(track)
}

/// Adds `n` to an eventfd counter.
pub fn eventfd_write(fd: RawFd, n: u64) -> Result<()> {
    let buf = n.to_ne_bytes();
    // SAFETY: buf is 8 valid bytes.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), 8) };
    if r == 8 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Reads (and so resets) an eventfd or timerfd counter; Ok(0) when it was zero (EAGAIN).
pub fn read_u64(fd: RawFd) -> Result<u64> {
    let mut buf = [0u8; 8];
    // SAFETY: buf is 8 writable bytes.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 8) };
    if r == 8 {
        Ok(u64::from_ne_bytes(buf))
    } else if r < 0 {
        let e = Errno::last();
        if e.0 == libc::EAGAIN {
            Ok(0)
        } else {
            Err(e)
        }
    } else {
        Err(Errno(libc::EIO))
    }
}

pub fn timerfd_create(realtime: bool) -> Result<RawFd> {
    let clock = if realtime { libc::CLOCK_REALTIME } else { libc::CLOCK_MONOTONIC };
    // SAFETY: plain syscall with flag arguments.
    cvt(unsafe { libc::timerfd_create(clock, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) }).map(track)
}

fn ts(ns: u64) -> libc::timespec {
    libc::timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 }
}

/// Arms a timerfd: first expiry after (or, `absolute`, at) `value_ns`, then every `interval_ns` (0 = once).
/// `value_ns` must be non-zero (zero disarms).
pub fn timerfd_settime(fd: RawFd, absolute: bool, value_ns: u64, interval_ns: u64) -> Result<()> {
    let spec = libc::itimerspec { it_interval: ts(interval_ns), it_value: ts(value_ns) };
    let flags = if absolute { libc::TFD_TIMER_ABSTIME } else { 0 };
    // SAFETY: spec is valid for the call; old value pointer is null (allowed).
    cvt(unsafe { libc::timerfd_settime(fd, flags, &spec, std::ptr::null_mut()) }).map(|_| ())
}

/// Arms a timerfd to expire once at the absolute time `deadline_ns` of its clock (0 disarms it).
pub fn timerfd_arm_at(fd: RawFd, deadline_ns: u64) -> Result<()> {
    let spec = libc::itimerspec { it_interval: ts(0), it_value: ts(deadline_ns) };
    // SAFETY: spec is valid for the call; old value pointer is null (allowed).
    cvt(unsafe { libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) }).map(|_| ())
}

/// Makes a timerfd readable at once, synchronously (TFD_IOC_SET_TICKS with 1 expiration): its readers and
/// every epoll watching it are woken before this returns. ENOTTY on kernels built without
/// CONFIG_CHECKPOINT_RESTORE.
pub fn timerfd_set_ticks(fd: RawFd) -> Result<()> {
    // _IOW('T', 0, u64)
    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
    let one: u64 = 1;
    // SAFETY: the ioctl reads one u64 through the pointer, which is valid for the call.
    cvt(unsafe { libc::ioctl(fd, TFD_IOC_SET_TICKS, &one as *const u64) }).map(|_| ())
}

// ---- the process-wide memory barrier (see hazard.rs) ----

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// Registers this process for `membarrier()`; false where the kernel has no such barrier (before 4.14,
/// or filtered by seccomp).
pub fn membarrier_register() -> bool {
    // SAFETY: plain syscall with integer arguments.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 }
}

/// Makes every thread of this process that is running now execute a full memory barrier.
pub fn membarrier() {
    // SAFETY: plain syscall with integer arguments (registered by `membarrier_register`).
    unsafe {
        libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    }
}

// ---- the dead fd: readable forever, to wake threads blocked on a kqueue that is being closed ----

static DEAD: AtomicI32 = AtomicI32::new(-1);

/// The process's always-readable eventfd (created once; closed and forgotten in a fork child).
pub fn dead_fd() -> Result<RawFd> {
    let fd = DEAD.load(Ordering::Acquire);
    if fd >= 0 {
        return Ok(fd);
    }
    let new = eventfd()?;
    eventfd_write(new, 1)?;
    match DEAD.compare_exchange(-1, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(new),
        Err(existing) => {
            close(new);
            Ok(existing)
        }
    }
}

/// Whether `fd` is an epoll instance (asked with a DEL of `probe`, an fd never registered in it: an epoll
/// answers ENOENT, anything else EINVAL).
pub fn is_epoll(fd: RawFd, probe: RawFd) -> bool {
    matches!(epoll_del(fd, probe), Err(Errno(libc::ENOENT)))
}

/// In a fork child (async-signal-safe): the dead fd was closed with every other kqrs fd.
pub fn dead_reset_in_child() {
    if DEAD.load(Ordering::Relaxed) != -1 {
        DEAD.store(-1, Ordering::SeqCst);
    }
}

/// Bytes waiting to be read (FIONREAD / SIOCINQ).
pub fn fionread(fd: RawFd) -> Result<i64> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid.
    cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) })?;
    Ok(n as i64)
}

/// Bytes queued in a socket's send queue (SIOCOUTQ).
pub fn siocoutq(fd: RawFd) -> Result<i64> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (== SIOCOUTQ) writes one int through the pointer, which is valid.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) })?;
    Ok(n as i64)
}

pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid; the kernel writes at most `len` bytes.
    cvt(unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut libc::c_int).cast(), &mut len) })?;
    Ok(v)
}

pub fn so_error(fd: RawFd) -> Result<i32> {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
}

/// Connections waiting in a listening TCP socket's accept queue (TCP_INFO's tcpi_unacked in LISTEN state).
pub fn tcp_accept_queue(fd: RawFd) -> Result<i64> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info and len are valid; the kernel writes at most `len` bytes.
    cvt(unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len) })?;
    Ok(info.tcpi_unacked as i64)
}

pub fn pipe_size(fd: RawFd) -> Result<i64> {
    // SAFETY: F_GETPIPE_SZ takes no pointer argument.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) }).map(|n| n as i64)
}

/// What kqrs needs of fstat(2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// The type bits (S_IFMT part of st_mode).
    pub kind: u32,
    pub size: i64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    /// st_mode, st_uid, st_gid and st_mtime (ns): what NOTE_ATTRIB compares.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

pub fn fstat(fd: RawFd) -> Result<FileStat> {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable stat buffer.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(FileStat {
        kind: st.st_mode & libc::S_IFMT,
        size: st.st_size,
        dev: st.st_dev,
        ino: st.st_ino,
        nlink: st.st_nlink,
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime_ns: st.st_mtime.saturating_mul(1_000_000_000).saturating_add(st.st_mtime_nsec),
        ctime_ns: st.st_ctime.saturating_mul(1_000_000_000).saturating_add(st.st_ctime_nsec),
    })
}

pub fn current_offset(fd: RawFd) -> Result<i64> {
    // SAFETY: lseek takes no pointers.
    let r = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// A close-on-exec duplicate of `fd`.
pub fn dup_cloexec(fd: RawFd) -> Result<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer argument.
    cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) }).map(track)
}

/// Whether `a` and `b` are the same open file description (kcmp KCMP_FILE). Err(ENOSYS) on kernels built
/// without kcmp.
pub fn same_file(a: RawFd, b: RawFd) -> Result<bool> {
    const KCMP_FILE: i32 = 0;
    let pid = getpid();
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a as libc::c_ulong, b as libc::c_ulong) };
    cvt_long(r).map(|v| v == 0)
}

/// Whether `fd` is an open file descriptor of this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no pointer argument.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

pub fn inotify_init() -> Result<RawFd> {
    // SAFETY: plain syscall with flag arguments.
    cvt(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) }).map(track)
}

/// Watches the open file behind `fd` (through its /proc/self/fd magic link, which names the file itself,
/// even after it was renamed or unlinked). Returns the watch descriptor.
pub fn inotify_watch_fd(ifd: RawFd, fd: RawFd, mask: u32) -> Result<i32> {
    let mut path = *b"/proc/self/fd/\0\0\0\0\0\0\0\0\0\0\0\0";
    let mut digits = [0u8; 11];
    let mut n = fd as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        path[14 + i] = digits[len - 1 - i];
    }
    // SAFETY: path is NUL-terminated (at most 10 digits after the 14-byte prefix in a 26-byte buffer).
    cvt(unsafe { libc::inotify_add_watch(ifd, path.as_ptr().cast(), mask) })
}

pub fn inotify_rm_watch(ifd: RawFd, wd: i32) {
    // SAFETY: no pointers; a stale wd only yields EINVAL.
    unsafe {
        libc::inotify_rm_watch(ifd, wd);
    }
}

/// Reads inotify events into `buf`, calling `f(wd, mask, cookie, name)` for each (`cookie` pairs the two
/// halves of a rename; `name` is the entry of a watched directory the event is about, empty when it is
/// about the watched file itself). Returns when the queue is empty.
pub fn inotify_drain(ifd: RawFd, buf: &mut [u8], mut f: impl FnMut(i32, u32, u32, &[u8])) {
    loop {
        // SAFETY: buf is a valid writable buffer of buf.len() bytes.
        let r = unsafe { libc::read(ifd, buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            return;
        }
        let mut off = 0usize;
        let hdr = std::mem::size_of::<libc::inotify_event>();
        while off + hdr <= r as usize {
            let b = &buf[off..off + hdr];
            let wd = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            let mask = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
            let cookie = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
            let len = u32::from_ne_bytes([b[12], b[13], b[14], b[15]]) as usize;
            let name = buf.get(off + hdr..off + hdr + len).unwrap_or(&[]);
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            f(wd, mask, cookie, name);
            off += hdr + len;
        }
    }
}

/// Nanoseconds since the epoch (CLOCK_REALTIME) or since boot (CLOCK_MONOTONIC).
pub fn clock_ns(realtime: bool) -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let clock = if realtime { libc::CLOCK_REALTIME } else { libc::CLOCK_MONOTONIC };
    // SAFETY: t is a valid timespec to write.
    unsafe {
        libc::clock_gettime(clock, &mut t);
    }
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Registers `child` to run in the child process after fork(). It must be async-signal-safe.
pub fn atfork_child(child: extern "C" fn()) -> Result<()> {
    // SAFETY: the handler is a plain extern "C" fn with 'static lifetime.
    let r = unsafe { libc::pthread_atfork(None, None, Some(child)) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno(r))
    }
}

/// Kernel release as (major, minor).
pub fn kernel_release() -> (u32, u32) {
    // SAFETY: utsname is plain old data; all-zero is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (0, 0);
    }
    let rel: Vec<u8> = u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    let s = String::from_utf8_lossy(&rel);
    let mut it = s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let major = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

pub fn set_cloexec_check(fd: RawFd) -> Result<bool> {
    // SAFETY: F_GETFD takes no pointer argument.
    let r = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    Ok(r & libc::FD_CLOEXEC != 0)
}

/// Connections waiting in a listening unix socket's accept queue, asked of the kernel's sock_diag
/// (UNIX_DIAG_RQLEN): unix sockets refuse FIONREAD and TCP_INFO while listening.
pub fn unix_accept_queue(fd: RawFd) -> Result<i64> {
    let ino = fstat(fd)?.ino as u32;
    // SAFETY: plain syscall with integer arguments.
    let nl = track(cvt(unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG)
    })?);
    let r = unix_diag_rqlen(nl, ino);
    close(nl);
    r
}

fn unix_diag_rqlen(nl: RawFd, ino: u32) -> Result<i64> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_RQLEN: u32 = 0x10;
    const UNIX_DIAG_RQLEN: u16 = 4;
    const TCP_LISTEN: u32 = 10;
    // nlmsghdr (16) + unix_diag_req (24)
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    req[24..28].copy_from_slice(&ino.to_ne_bytes());
    req[28..32].copy_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
    req[32..40].copy_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    // SAFETY: req is a valid buffer of req.len() bytes; a null address sends to the kernel (connected).
    let r = unsafe { libc::send(nl, req.as_ptr().cast(), req.len(), 0) };
    if r < 0 {
        return Err(Errno::last());
    }
    let mut buf = [0u8; 512];
    // SAFETY: buf is a valid writable buffer of buf.len() bytes.
    let r = unsafe { libc::recv(nl, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if r < 16 {
        return Err(if r < 0 { Errno::last() } else { Errno(libc::EIO) });
    }
    let len = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(r as usize);
    let typ = u16::from_ne_bytes([buf[4], buf[5]]);
    if typ != SOCK_DIAG_BY_FAMILY {
        return Err(Errno(libc::ENOENT));
    }
    // nlmsghdr (16) + unix_diag_msg (16), then attributes.
    let mut off = 32;
    while off + 4 <= len {
        let alen = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
        let atype = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]);
        if alen < 4 {
            break;
        }
        if atype == UNIX_DIAG_RQLEN && alen >= 12 && off + 8 <= len {
            let q = u32::from_ne_bytes([buf[off + 4], buf[off + 5], buf[off + 6], buf[off + 7]]);
            return Ok(q as i64);
        }
        off += (alen + 3) & !3;
    }
    Err(Errno(libc::ENOENT))
}

// ---- processes: pidfd, waitid, PIDFD_GET_INFO, /proc ----

/// pidfd_open(2): a pidfd for `pid` (always close-on-exec).
pub fn pidfd_open(pid: i32) -> Result<RawFd> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    cvt_long(r).map(|fd| track(fd as RawFd))
}

/// pidfd_send_signal(pidfd, 0): Ok while the process exists (also as a zombie), ESRCH once reaped.
pub fn pidfd_alive(pidfd: RawFd) -> Result<()> {
    // SAFETY: plain syscall; a null siginfo is allowed.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, 0, std::ptr::null::<libc::siginfo_t>(), 0) };
    cvt_long(r).map(|_| ())
}

/// The wait(2) status of the process behind `pidfd` if it has exited, without reaping it
/// (waitid(P_PIDFD, WEXITED|WNOHANG|WNOWAIT)). ECHILD when it is not our child or was already reaped.
pub fn pidfd_wait_status(pidfd: RawFd) -> Result<Option<i32>> {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: info is a valid, writable siginfo_t.
    cvt(unsafe {
        libc::waitid(libc::P_PIDFD, pidfd as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
    })?;
    // SAFETY: after a successful waitid the SIGCHLD fields of the union are the ones filled in.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f,
    }))
}

/// PIDFD_GET_INFO with PIDFD_INFO_EXIT (Linux 6.15+): the wait status of a process that has been reaped.
/// Ok(None) when the kernel has no exit information (yet); ENOTTY/EINVAL on kernels without the ioctl.
pub fn pidfd_exit_info(pidfd: RawFd) -> Result<Option<i32>> {
    const PIDFD_INFO_EXIT: u64 = 1 << 3;
    // _IOWR(0xFF, 11, 64 bytes): the version-0 struct pidfd_info.
    const PIDFD_GET_INFO: libc::c_ulong = 0xC000_0000 | (64 << 16) | (0xFF << 8) | 11;
    let mut buf = [0u64; 8];
    buf[0] = PIDFD_INFO_EXIT;
    // SAFETY: buf is 64 writable bytes, the size encoded in the request.
    cvt(unsafe { libc::ioctl(pidfd, PIDFD_GET_INFO, buf.as_mut_ptr()) })?;
    if buf[0] & PIDFD_INFO_EXIT == 0 {
        return Ok(None);
    }
    // exit_code is the s32 at byte offset 60 (mask 8, cgroupid 8, eleven u32 ids 44).
    Ok(Some((buf[7] >> 32) as u32 as i32))
}

/// Whether this kernel answers PIDFD_GET_INFO (Linux 6.13+; exit status from 6.15).
pub fn has_pidfd_get_info() -> bool {
    match pidfd_open(getpid()) {
        Ok(fd) => {
            let r = pidfd_exit_info(fd);
            close(fd);
            r.is_ok()
        }
        Err(_) => false,
    }
}

/// The exit_code field (52) of /proc/PID/stat, when PID is a zombie: its wait status.
pub fn proc_zombie_status(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 52 is fields[49].
    if fields.first() != Some(&"Z") {
        return None;
    }
    fields.get(49)?.parse().ok()
}

/// The pid a pidfd refers to (the "Pid:" line of /proc/self/fdinfo/FD); EINVAL when `fd` is no pidfd.
pub fn pidfd_pid(fd: RawFd) -> Result<i32> {
    if !fd_is_open(fd) {
        return Err(Errno(libc::EBADF));
    }
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).map_err(|_| Errno(libc::EBADF))?;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix("Pid:") {
            return v.trim().parse().map_err(|_| Errno(libc::EINVAL));
        }
    }
    Err(Errno(libc::EINVAL))
}

// ---- the kernel's process connector (netlink) ----

const NETLINK_CONNECTOR: i32 = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
pub const PROC_EVENT_FORK: u32 = 0x1;
pub const PROC_EVENT_EXEC: u32 = 0x2;
pub const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// One event from the process connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcEvent {
    Fork { parent_tgid: i32, child_pid: i32, child_tgid: i32 },
    Exec { tgid: i32 },
    Exit { pid: i32, tgid: i32, status: i32 },
}

/// What a read of the connector socket saw.
#[derive(Debug, Default)]
pub struct ConnectorRead {
    pub events: Vec<ProcEvent>,
    /// Messages not sent by the kernel (port id != 0), or malformed: ignored.
    pub ignored: u64,
    /// The socket's receive buffer overflowed (ENOBUFS): events were lost.
    pub overflowed: bool,
}

fn cn_message(seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = 16 + 20 + payload.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes()); // nlmsg_type
    m.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
    m.extend_from_slice(&seq.to_ne_bytes()); // nlmsg_seq
    m.extend_from_slice(&getpid().to_ne_bytes()); // nlmsg_pid
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes()); // cn_msg.id.idx
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes()); // cn_msg.id.val
    m.extend_from_slice(&seq.to_ne_bytes()); // cn_msg.seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // cn_msg.ack
    m.extend_from_slice(&(payload.len() as u16).to_ne_bytes()); // cn_msg.len
    m.extend_from_slice(&0u16.to_ne_bytes()); // cn_msg.flags
    m.extend_from_slice(payload);
    m
}

/// Opens a process-connector socket subscribed to fork, exec and exit events (filtered by the kernel on
/// Linux 6.6+), and waits for the kernel's acknowledgement. EPERM without CAP_NET_ADMIN;
/// EPROTONOSUPPORT (or ENOENT) on kernels without CONFIG_PROC_EVENTS.
pub fn connector_open() -> Result<RawFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = track(cvt(unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, NETLINK_CONNECTOR)
    })?);
    match connector_subscribe(fd) {
        Ok(()) => Ok(fd),
        Err(e) => {
            close(fd);
            Err(e)
        }
    }
}

fn connector_subscribe(fd: RawFd) -> Result<()> {
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = CN_IDX_PROC;
    // SAFETY: sa is a valid sockaddr_nl of the given length.
    cvt(unsafe {
        libc::bind(fd, (&sa as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as u32)
    })?;
    // 1 = PROC_CN_MCAST_LISTEN, for every event type first: the kernel's acknowledgement is itself an
    // event (PROC_EVENT_NONE) that an event-type filter would drop.
    // A bigger receive buffer than the default (about 256 messages) before the flood starts: forced
    // past rmem_max where we may (CAP_NET_ADMIN), else as large as rmem_max allows.
    let size: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: size is a valid c_int for the call.
        let r = unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&size as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as u32)
        };
        if r == 0 {
            break;
        }
    }
    connector_send(fd, &1u32.to_ne_bytes())?;
    connector_wait_ack(fd)?;
    if kernel_release() >= (6, 6) {
        // Linux 6.6+ filters per socket: ask for fork, exec and exit only (no acknowledgement then).
        let mut payload = 1u32.to_ne_bytes().to_vec();
        payload.extend_from_slice(&(PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_EXIT).to_ne_bytes());
        connector_send(fd, &payload)?;
    }
    Ok(())
}

fn connector_send(fd: RawFd, payload: &[u8]) -> Result<()> {
    let msg = cn_message(1, payload);
    // SAFETY: sockaddr_nl is plain old data; all-zero (port 0, no groups: the kernel) is the address.
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: msg and `to` are valid for the given lengths.
    let r = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&to as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Waits (up to 2 s) for the kernel's PROC_EVENT_NONE acknowledgement; ETIMEDOUT when none comes (the
/// kernel ignores requests from outside the initial pid/user namespace).
fn connector_wait_ack(fd: RawFd) -> Result<()> {
    // The kernel acknowledges with a PROC_EVENT_NONE whose ack.err says whether it subscribed us.
    let deadline = clock_ns(false) + 2_000_000_000;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_sub(clock_ns(false));
        if left == 0 {
            return Err(Errno(libc::ETIMEDOUT));
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: pfd is one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, (left / 1_000_000).max(1) as i32) };
        let (n, from) = match recv_from(fd, &mut buf) {
            Ok(x) => x,
            Err(Errno(libc::EAGAIN)) => continue,
            Err(e) => return Err(e),
        };
        if from != 0 {
            continue;
        }
        let mut ack = None;
        parse_cn(&buf[..n], |what, data| {
            if what == 0 && data.len() >= 4 {
                ack = Some(u32::from_ne_bytes([data[0], data[1], data[2], data[3]]));
            }
        });
        match ack {
            Some(0) => return Ok(()),
            Some(err) => return Err(Errno(err as i32)),
            None => continue, // an event that raced the ack
        }
    }
}

/// recvfrom on a netlink socket: bytes read and the sender's port id.
fn recv_from(fd: RawFd, buf: &mut [u8]) -> Result<(usize, u32)> {
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
    let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
    // SAFETY: buf, from and len are valid for the call.
    let r = unsafe {
        libc::recvfrom(fd, buf.as_mut_ptr().cast(), buf.len(), 0, (&mut from as *mut libc::sockaddr_nl).cast(), &mut len)
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok((r as usize, from.nl_pid))
}

/// Walks the netlink messages in `buf`, calling `f(what, event_data)` for each process-connector event.
/// Returns false if anything was malformed.
fn parse_cn(buf: &[u8], mut f: impl FnMut(u32, &[u8])) -> bool {
    let rd = |b: &[u8], o: usize| -> Option<u32> { b.get(o..o + 4).map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]])) };
    let mut off = 0;
    let mut ok = true;
    while off + 16 <= buf.len() {
        let Some(len) = rd(buf, off).map(|l| l as usize) else { return false };
        if len < 16 || off + len > buf.len() {
            return false;
        }
        let msg = &buf[off + 16..off + len];
        // cn_msg: id.idx, id.val, seq, ack, len(u16), flags(u16), then proc_event.
        match (rd(msg, 0), rd(msg, 4)) {
            (Some(CN_IDX_PROC), Some(CN_VAL_PROC)) if msg.len() >= 20 + 16 => {
                let ev = &msg[20..];
                if let Some(what) = rd(ev, 0) {
                    f(what, &ev[16..]);
                }
            }
            _ => ok = false,
        }
        off += (len + 3) & !3;
    }
    // Bytes left that cannot hold a header: a truncated message.
    ok && off >= buf.len()
}

/// Reads everything waiting on a connector socket; only messages from the kernel (port id 0) count.
pub fn connector_read(fd: RawFd, buf: &mut [u8]) -> ConnectorRead {
    let mut out = ConnectorRead::default();
    loop {
        let (n, from) = match recv_from(fd, buf) {
            Ok(x) => x,
            Err(Errno(libc::ENOBUFS)) => {
                out.overflowed = true;
                continue;
            }
            Err(_) => return out,
        };
        connector_datagram(&buf[..n], from, &mut out);
    }
}

/// One datagram read from a connector socket, sent by port id `from`: its fork, exec and exit events are
/// added to `out`; a datagram not from the kernel, or malformed in any way (truncated, a length that runs
/// past its end, bytes left over, another connector's id), counts in `out.ignored` (what was well formed
/// before the fault is kept). Public for the engine's tests, which feed it hostile input.
#[doc(hidden)]
pub fn connector_datagram(buf: &[u8], from: u32, out: &mut ConnectorRead) {
    let rd = |b: &[u8], o: usize| -> Option<i32> { b.get(o..o + 4).map(|s| i32::from_ne_bytes([s[0], s[1], s[2], s[3]])) };
    if from != 0 {
        out.ignored += 1;
        return;
    }
    let mut short = false; // an event too short for the fields its kind has
    let ok = parse_cn(buf, |what, d| match what {
        PROC_EVENT_FORK => match (rd(d, 4), rd(d, 8), rd(d, 12)) {
            (Some(pt), Some(cp), Some(ct)) => out.events.push(ProcEvent::Fork { parent_tgid: pt, child_pid: cp, child_tgid: ct }),
            _ => short = true,
        },
        PROC_EVENT_EXEC => match rd(d, 4) {
            Some(t) => out.events.push(ProcEvent::Exec { tgid: t }),
            None => short = true,
        },
        PROC_EVENT_EXIT => match (rd(d, 0), rd(d, 4), rd(d, 8)) {
            (Some(p), Some(t), Some(c)) => out.events.push(ProcEvent::Exit { pid: p, tgid: t, status: c }),
            _ => short = true,
        },
        _ => {} // an event kind not asked for (kernels before 6.6 send every kind)
    });
    let ok = ok && !short;
    if !ok {
        out.ignored += 1;
    }
}

// ---- signals: counting deliveries without taking them from the application ----
//
// kqrs catches a watched signal with its own handler, counts the delivery, wakes every kqueue (one global
// eventfd, registered edge-triggered in each kqueue that watches signals), then hands the signal to the
// disposition that was there before: the application's handler (C, or Python's, which then runs its
// Python handler), SIG_IGN (nothing more), or SIG_DFL (see `on_signal`). Everything the handler touches is
// an atomic or an async-signal-safe call.

const NSIG: usize = 65;
static SIG_COUNT: [AtomicU64; NSIG] = [const { AtomicU64::new(0) }; NSIG];
static SIG_PREV_HANDLER: [std::sync::atomic::AtomicUsize; NSIG] = [const { std::sync::atomic::AtomicUsize::new(0) }; NSIG];
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
            if matches!(sig, libc::SIGSEGV | libc::SIGBUS | libc::SIGFPE | libc::SIGILL | libc::SIGTRAP | libc::SIGSYS) {
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
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = unsafe { std::mem::transmute(h) };
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
        | (prev.sa_flags & (libc::SA_RESTART | libc::SA_ONSTACK | libc::SA_NOCLDSTOP | libc::SA_NOCLDWAIT | libc::SA_NODEFER));
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
        if !sigismember(&set, sig) || SIG_REFS[i].load(Ordering::SeqCst) == 0 || SIG_MARK[i].load(Ordering::SeqCst) != 0 {
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

/// Whether kqrs's handler is installed for `sig` now (for tests and doctor).
pub fn signal_hooked(sig: i32) -> bool {
    current_action(sig).is_ok_and(|a| is_ours(&a))
}

// ---- mounts (NOTE_REVOKE) ----

/// Opens /proc/self/mountinfo: pollable, it reports EPOLLPRI|EPOLLERR when the mount table changes.
pub fn mountinfo_open() -> Result<RawFd> {
    let path = b"/proc/self/mountinfo\0";
    // SAFETY: path is NUL-terminated.
    cvt(unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) }).map(track)
}

/// Reads the whole mount table from `fd` (from the start, which also re-arms its poll notification) and
/// returns the mount ids in it.
pub fn mountinfo_ids(fd: RawFd) -> Result<Vec<u64>> {
    // SAFETY: lseek takes no pointers.
    if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
        return Err(Errno::last());
    }
    let mut text = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: buf is a valid writable buffer.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            return Err(Errno::last());
        }
        if r == 0 {
            break;
        }
        text.extend_from_slice(&buf[..r as usize]);
    }
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line.split(|&b| b == b' ').next()?).ok()?.parse().ok())
        .collect())
}

/// The mount id of the file behind `fd` (the "mnt_id:" line of /proc/self/fdinfo/FD).
/// The path of the file open as `fd`, as /proc/self/fd/N names it (with " (deleted)" after it once that
/// name was removed).
pub fn fd_path(fd: RawFd) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok().map(|p| p.into_os_string().into_vec())
}

pub fn fd_mount_id(fd: RawFd) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).map_err(|_| Errno(libc::EBADF))?;
    s.lines()
        .find_map(|l| l.strip_prefix("mnt_id:").and_then(|v| v.trim().parse().ok()))
        .ok_or(Errno(libc::ENOENT))
}

// ---- memory handed over by C callers (the C face, `capi.rs`) ----
//
// A bad pointer from C must come back as EFAULT, never crash kqrs. The kernel checks a region the first time
// a thread hands it over (process_vm_readv/process_vm_writev on ourselves: they fail with EFAULT where a
// plain copy would fault); regions a thread used before (an event loop passes the same buffers every call)
// are copied directly. A region freed and unmapped after it was checked is the caller's use-after-free.

thread_local! {
    /// The last regions this thread handed over that proved readable / writable: (address, length).
    static CHECKED: std::cell::Cell<[(usize, usize); 2]> = const { std::cell::Cell::new([(0, 0); 2]) };
}

fn checked(ptr: usize, len: usize, write: bool) -> bool {
    CHECKED.with(|c| {
        let (p, l) = c.get()[usize::from(write)];
        p != 0 && ptr >= p && ptr.saturating_add(len) <= p + l
    })
}

fn remember(ptr: usize, len: usize, write: bool) {
    CHECKED.with(|c| {
        let mut v = c.get();
        v[usize::from(write)] = (ptr, len);
        c.set(v);
    });
}

/// Whether `len` bytes at `ptr` can be read (`write` false) or written, asked of the kernel.
fn probe_user(ptr: usize, len: usize, write: bool) -> Result<()> {
    if ptr == 0 {
        return Err(Errno(libc::EFAULT));
    }
    let mut scratch = [0u8; 256];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(scratch.len());
        let local = libc::iovec { iov_base: scratch.as_mut_ptr().cast(), iov_len: n };
        let remote = libc::iovec { iov_base: (ptr + off) as *mut libc::c_void, iov_len: n };
        // SAFETY: the local iovec names `scratch`, valid for n bytes; the remote one is only ever accessed
        // by the kernel, which checks it and fails with EFAULT instead of faulting.
        let r = unsafe {
            if write {
                // Reading a region does not prove it writable: write back what it holds.
                let got = libc::process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
                if got != n as isize {
                    got
                } else {
                    libc::process_vm_writev(getpid(), &local, 1, &remote, 1, 0)
                }
            } else {
                libc::process_vm_readv(getpid(), &local, 1, &remote, 1, 0)
            }
        };
        if r != n as isize {
            return Err(if r < 0 { Errno::last() } else { Errno(libc::EFAULT) });
        }
        off += n;
    }
    Ok(())
}

/// Copies `n` kevents from a C caller's array at `ptr` into `out` (EFAULT for memory it cannot read).
pub fn user_kevents_in(ptr: usize, n: usize, out: &mut Vec<crate::Kevent>) -> Result<()> {
    out.clear();
    if n == 0 {
        return Ok(());
    }
    let len = n.checked_mul(std::mem::size_of::<crate::Kevent>()).ok_or(Errno(libc::EINVAL))?;
    if !checked(ptr, len, false) {
        probe_user(ptr, len, false)?;
        remember(ptr, len, false);
    }
    out.reserve(n);
    // SAFETY: the kernel proved `len` bytes at `ptr` readable (now or in an earlier call on this thread);
    // Kevent is plain old data with no invalid bit patterns, copied byte-wise so alignment does not matter.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr as *const u8, out.as_mut_ptr().cast::<u8>(), len);
        out.set_len(n);
    }
    Ok(())
}

/// Copies `events` into a C caller's array at `ptr` of room for `cap` kevents (EFAULT for memory it
/// cannot write).
pub fn user_kevents_out(ptr: usize, cap: usize, events: &[crate::Kevent]) -> Result<()> {
    if cap == 0 {
        return Ok(());
    }
    // Only what is written is checked (a caller may announce more room than its array has, as FreeBSD
    // copies out only the events it returns).
    let n = events.len().min(cap);
    if n == 0 {
        return Ok(());
    }
    let room = n * std::mem::size_of::<crate::Kevent>();
    if !checked(ptr, room, true) {
        probe_user(ptr, room, true)?;
        remember(ptr, room, true);
    }
    // SAFETY: the kernel proved `room` bytes at `ptr` writable; we write at most n <= cap kevents, byte-wise.
    unsafe {
        std::ptr::copy_nonoverlapping(events.as_ptr().cast::<u8>(), ptr as *mut u8, n * std::mem::size_of::<crate::Kevent>());
    }
    Ok(())
}

/// A C caller's `struct timespec` at `ptr` as (seconds, nanoseconds) (EFAULT for memory it cannot read).
pub fn user_timespec(ptr: usize) -> Result<(i64, i64)> {
    let len = std::mem::size_of::<libc::timespec>();
    if !checked(ptr, len, false) {
        probe_user(ptr, len, false)?;
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `len` bytes at `ptr` are readable (just checked); copied byte-wise into a local timespec.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr as *const u8, (&mut ts as *mut libc::timespec).cast::<u8>(), len);
    }
    Ok((ts.tv_sec, ts.tv_nsec))
}

/// Sets errno (the C face's way of reporting an error).
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location returns this thread's errno, valid for writes.
    unsafe { *libc::__errno_location() = e };
}

extern "C" {
    // glibc's (the libc crate does not declare it).
    fn pthread_setcancelstate(state: libc::c_int, oldstate: *mut libc::c_int) -> libc::c_int;
}
const PTHREAD_CANCEL_DISABLE: libc::c_int = 1;

/// The C face turns off thread cancellation while it works (a cancel must never unwind through the middle
/// of a change) and gives the caller's state back only around blocking waits (`c_entry::kevent`).
/// Returns the state before.
pub fn cancel_disable() -> i32 {
    let mut old = 0;
    // SAFETY: plain libc call with a valid out pointer.
    unsafe { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut old) };
    old
}

/// Restores a cancellation state saved by `cancel_disable`.
pub fn cancel_restore(old: i32) {
    let mut prev = 0;
    // SAFETY: plain libc call with a valid out pointer.
    unsafe { pthread_setcancelstate(old, &mut prev) };
}

/// The C entry points (feature `capi`): `kqueue`, `kevent` and `libkqueue_drain_pending_close`, exported
/// unmangled for C. They hold the only code of the C face that is not plain safe Rust: exported symbols,
/// and the blocking wait of kevent(), which runs in this frame with nothing live that has a destructor:
/// thread cancellation (pthread_cancel) acts there, in libc's epoll_wait, and unwinds this frame and the
/// caller's C frames only (a forced unwind through Rust frames with destructors is undefined behaviour).
#[cfg(feature = "capi")]
pub mod c_entry {
    use super::{cancel_disable, cancel_restore, EpollEvent};
    use crate::capi::{self, CStep};
    use crate::hazard;
    use crate::Kevent;

    /// `int kqueue(void)`.
    // SAFETY: `no_mangle` exports the symbol C code links against (libkqueue's name and signature); no other
    // item of kqrs has this name.
    #[no_mangle]
    pub extern "C" fn kqueue() -> libc::c_int {
        let old = cancel_disable();
        let r = capi::c_kqueue();
        cancel_restore(old);
        r
    }

    /// `int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist,
    /// int nevents, const struct timespec *timeout)`: kevent(2), -1 with errno on failure.
    // SAFETY: `no_mangle` exports libkqueue's kevent symbol (see `kqueue`). The pointers are only passed on
    // as addresses, checked by the kernel before they are read or written (`user_kevents_in`).
    #[no_mangle]
    pub extern "C-unwind" fn kevent(
        kq: libc::c_int,
        changelist: *const Kevent,
        nchanges: libc::c_int,
        eventlist: *mut Kevent,
        nevents: libc::c_int,
        timeout: *const libc::timespec,
    ) -> libc::c_int {
        let state = cancel_disable();
        let mut step = capi::begin(kq, changelist as usize, nchanges, eventlist as usize, nevents, timeout as usize);
        let mut buf = [EpollEvent { events: 0, u64: 0 }; 64];
        loop {
            match step {
                CStep::Done(r) => {
                    cancel_restore(state);
                    return r;
                }
                CStep::Wait { ep, ms, id, wait } => {
                    // Everything live in this frame is plain data: a cancel here unwinds cleanly.
                    let token = hazard::publish(id);
                    cancel_restore(state);
                    // SAFETY: `buf` is valid for writes of 64 events; epoll_wait is libc's (a cancellation
                    // point).
                    let n = unsafe { libc::epoll_wait(ep, buf.as_mut_ptr(), buf.len() as libc::c_int, ms) };
                    let err = if n < 0 { super::Errno::last().0 } else { 0 };
                    cancel_disable();
                    if let Some(t) = token {
                        hazard::unpublish(t);
                    }
                    let got = &buf[..n.max(0) as usize];
                    step = capi::resume(kq, got, err, eventlist as usize, nevents, wait);
                }
            }
        }
    }

    /// `void libkqueue_drain_pending_close(void)`: frees now every kqueue closed with close(2).
    // SAFETY: `no_mangle` exports libkqueue's symbol of that name (see `kqueue`).
    #[no_mangle]
    pub extern "C" fn libkqueue_drain_pending_close() {
        let old = cancel_disable();
        capi::c_drain();
        cancel_restore(old);
    }
}

//! The syscall layer: every raw syscall and every `unsafe` block of kqrs lives here, behind safe
//! functions that return `Result<_, Errno>`. Each unsafe block says why it is sound.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU8, Ordering};

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

pub fn empty_event() -> EpollEvent {
    EpollEvent { events: 0, u64: 0 }
}

pub fn close(fd: RawFd) {
    // SAFETY: closing an fd number has no memory-safety effect; callers only close fds they own.
    unsafe {
        libc::close(fd);
    }
}

pub fn epoll_create() -> Result<RawFd> {
    // SAFETY: plain syscall with a flag argument.
    cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
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

/// epoll_wait with an optional timeout in nanoseconds (None = forever). Returns the number of events.
pub fn epoll_wait(epfd: RawFd, events: &mut [EpollEvent], timeout_ns: Option<u64>) -> Result<usize> {
    let max = events.len().min(i32::MAX as usize) as i32;
    if let Some(ns) = timeout_ns {
        if ns > 0 && has_epoll_pwait2() {
            let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 };
            // SAFETY: `events` is a valid writable buffer of `max` entries; `ts` outlives the call; no sigmask.
            let r = unsafe {
                libc::syscall(libc::SYS_epoll_pwait2, epfd, events.as_mut_ptr(), max, &ts as *const _, 0usize, 8usize)
            };
            return cvt_long(r).map(|n| n as usize);
        }
    }
    let ms: i32 = match timeout_ns {
        None => -1,
        Some(ns) => ns.div_ceil(1_000_000).min(i32::MAX as u64) as i32,
    };
    // SAFETY: `events` is a valid writable buffer of `max` entries.
    cvt(unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), max, ms) }).map(|n| n as usize)
}

pub fn eventfd() -> Result<RawFd> {
    // SAFETY: plain syscall with flag arguments.
    cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })
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
    cvt(unsafe { libc::timerfd_create(clock, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) })
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
}

pub fn fstat(fd: RawFd) -> Result<FileStat> {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable stat buffer.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(FileStat { kind: st.st_mode & libc::S_IFMT, size: st.st_size, dev: st.st_dev, ino: st.st_ino })
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

/// Whether `fd` is an open file descriptor of this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no pointer argument.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

pub fn inotify_init() -> Result<RawFd> {
    // SAFETY: plain syscall with flag arguments.
    cvt(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) })
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

/// Reads inotify events into `buf`, calling `f(wd, mask)` for each. Returns when the queue is empty.
pub fn inotify_drain(ifd: RawFd, buf: &mut [u8], mut f: impl FnMut(i32, u32)) {
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
            let len = u32::from_ne_bytes([b[12], b[13], b[14], b[15]]) as usize;
            f(wd, mask);
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
    let nl = cvt(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) })?;
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

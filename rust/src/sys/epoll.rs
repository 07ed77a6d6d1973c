//! epoll: the instance every kqueue is, its registrations, and the waits on it (epoll_pwait2 where the
//! kernel has it, for nanosecond timeouts).

use super::{cvt, cvt_long, track, Errno, RawFd, Result};
use std::sync::atomic::{AtomicU8, Ordering};

pub use libc::epoll_event as EpollEvent;
/// epoll_event.events bit (u32): Readable.
pub const EPOLLIN: u32 = libc::EPOLLIN as u32;
/// epoll_event.events bit (u32): Writable.
pub const EPOLLOUT: u32 = libc::EPOLLOUT as u32;
/// epoll_event.events bit (u32): An error condition.
pub const EPOLLERR: u32 = libc::EPOLLERR as u32;
/// epoll_event.events bit (u32): Hang-up.
pub const EPOLLHUP: u32 = libc::EPOLLHUP as u32;
/// epoll_event.events bit (u32): The peer shut down its writing side.
pub const EPOLLRDHUP: u32 = libc::EPOLLRDHUP as u32;
/// epoll_event.events bit (u32): Edge-triggered registration.
pub const EPOLLET: u32 = libc::EPOLLET as u32;
/// epoll_event.events bit (u32): Report once, then stay registered but disarmed until a MOD.
pub const EPOLLONESHOT: u32 = libc::EPOLLONESHOT as u32;
/// epoll_event.events bit (u32): Priority data (for /proc/self/mountinfo: the mount table changed).
pub const EPOLLPRI: u32 = libc::EPOLLPRI as u32;

/// An all-zero epoll_event.
pub fn empty_event() -> EpollEvent {
    EpollEvent { events: 0, u64: 0 }
}

/// A new close-on-exec epoll instance (tracked: closed in a fork child).
pub fn epoll_create() -> Result<RawFd> {
    // SAFETY: plain syscall with a flag argument.
    cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map(track)
}

/// epoll_ctl(2): `op` on `fd` in `epfd`, with `events` and `token` (the epoll_event's u64).
pub fn epoll_ctl(epfd: RawFd, op: i32, fd: RawFd, events: u32, token: u64) -> Result<()> {
    let mut ev = EpollEvent { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event that outlives the call; the kernel copies it.
    cvt(unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) }).map(|_| ())
}

/// Registers `fd` in `epfd` (EPOLL_CTL_ADD).
pub fn epoll_add(epfd: RawFd, fd: RawFd, events: u32, token: u64) -> Result<()> {
    epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, events, token)
}

/// Changes `fd`'s registration in `epfd` (EPOLL_CTL_MOD); fails when `fd` no longer names the file registered.
pub fn epoll_mod(epfd: RawFd, fd: RawFd, events: u32, token: u64) -> Result<()> {
    epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd, events, token)
}

/// Removes `fd`'s registration from `epfd` (EPOLL_CTL_DEL).
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
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    -1,
                    &mut ev as *mut EpollEvent,
                    1,
                    &ts as *const _,
                    0usize,
                    8usize,
                )
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
    /// How many events the buffer holds.
    pub const LEN: usize = N;

    #[inline]
    /// An empty buffer (nothing written, nothing zeroed).
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
#[inline(always)]
fn epoll_wait_raw(epfd: RawFd, events: *mut EpollEvent, len: usize, timeout_ns: Option<u64>) -> Result<usize> {
    let max = len.min(i32::MAX as usize) as i32;
    if let Some(ns) = timeout_ns {
        if ns > 0 && has_epoll_pwait2() {
            let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 };
            // SAFETY: `events` is valid for writes of `max` entries (caller's contract); `ts` outlives the call;
            // no sigmask.
            let r =
                unsafe { libc::syscall(libc::SYS_epoll_pwait2, epfd, events, max, &ts as *const _, 0usize, 8usize) };
            return cvt_long(r).map(|n| n as usize);
        }
    }
    if timeout_ns == Some(0) {
        // SAFETY: `events` is valid for writes of `max` entries (caller's contract).
        return unsafe { super::direct::epoll_poll(epfd, events, max) };
    }
    let ms: i32 = match timeout_ns {
        None => -1,
        Some(ns) => ns.div_ceil(1_000_000).min(i32::MAX as u64) as i32,
    };
    // SAFETY: `events` is valid for writes of `max` entries (caller's contract).
    cvt(unsafe { libc::epoll_wait(epfd, events, max, ms) }).map(|n| n as usize)
}

/// Whether `fd` is an epoll instance (asked with a DEL of `probe`, an fd never registered in it: an epoll
/// answers ENOENT, anything else EINVAL).
pub fn is_epoll(fd: RawFd, probe: RawFd) -> bool {
    matches!(epoll_del(fd, probe), Err(Errno(libc::ENOENT)))
}

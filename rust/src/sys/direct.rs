//! Direct syscalls for the two calls on the hot path: the non-blocking `epoll_wait` of a poll and the
//! `FIONREAD` ioctl that gives a ready socket its `data`; and the fork child handler's close_range(2), so
//! that it calls into no libc code the child would have to fault in.
//!
//! Why not libc's wrappers: on this kind of machine (a VM whose kernel fills the return stack buffer on
//! every kernel exit), each call frame that is live across a syscall costs a mispredicted return, ~4 ns
//! each; libc's wrapper is one such frame, and its cancellation and errno bookkeeping add a few more ns.
//! Here the `syscall` instruction sits in the caller's frame. The kernel's answer is returned as it is:
//! a negative value is -errno, and libc's `errno` is left untouched.
//!
//! Only calls that never block go through here: a blocking wait stays with libc, where it is a
//! cancellation point for C callers. Architectures without an `asm!` path here use libc, with the same
//! answers (-errno, errno left alone).

use super::{Errno, RawFd, Result};

/// The raw result of a syscall: >= 0, or -errno.
#[inline(always)]
fn result(r: isize) -> Result<usize> {
    if r < 0 {
        Err(Errno((-r) as i32))
    } else {
        Ok(r as usize)
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64", target_pointer_width = "64"))]
mod arch {
    /// syscall(2) with four arguments.
    ///
    /// # Safety
    /// The arguments must be what syscall `nr` expects (any pointer valid for what the kernel does with it).
    #[inline(always)]
    pub unsafe fn syscall4(nr: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
        let r: isize;
        // SAFETY: the caller passes valid arguments for `nr`; the x86_64 syscall ABI: number in rax,
        // arguments in rdi, rsi, rdx, r10; the kernel clobbers rcx and r11 and returns in rax; no stack use.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") nr as isize => r,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                in("r10") d,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack, preserves_flags)
            );
        }
        r
    }

    /// epoll_wait(epfd, events, max, 0).
    ///
    /// # Safety
    /// `events` must be valid for writes of `max` entries.
    #[inline(always)]
    pub unsafe fn epoll_poll(epfd: usize, events: usize, max: usize) -> isize {
        // SAFETY: caller's contract for `events`; the timeout (0) is a plain value.
        unsafe { syscall4(libc::SYS_epoll_wait as usize, epfd, events, max, 0) }
    }

    /// ioctl(fd, req, arg).
    ///
    /// # Safety
    /// `arg` must be what `req` expects.
    #[inline(always)]
    pub unsafe fn ioctl(fd: usize, req: usize, arg: usize) -> isize {
        // SAFETY: caller's contract.
        unsafe { syscall4(libc::SYS_ioctl as usize, fd, req, arg, 0) }
    }

    /// close_range(first, last, 0).
    ///
    /// # Safety
    /// None beyond close's: the caller owns every fd in the range.
    #[inline(always)]
    pub unsafe fn close_range(first: usize, last: usize) -> isize {
        // SAFETY: plain values.
        unsafe { syscall4(libc::SYS_close_range as usize, first, last, 0, 0) }
    }

    /// close(fd).
    ///
    /// # Safety
    /// The caller owns the fd.
    #[inline(always)]
    pub unsafe fn close(fd: usize) -> isize {
        // SAFETY: a plain value.
        unsafe { syscall4(libc::SYS_close as usize, fd, 0, 0, 0) }
    }
}

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
mod arch {
    /// svc #0 with five arguments.
    ///
    /// # Safety
    /// The arguments must be what syscall `nr` expects (any pointer valid for what the kernel does with it).
    #[inline(always)]
    pub unsafe fn syscall5(nr: usize, a: usize, b: usize, c: usize, d: usize, e: usize) -> isize {
        let r: isize;
        // SAFETY: the caller passes valid arguments for `nr`; the aarch64 syscall ABI: number in x8,
        // arguments in x0..x4, result in x0; the kernel preserves every other register.
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") nr,
                inlateout("x0") a as isize => r,
                in("x1") b,
                in("x2") c,
                in("x3") d,
                in("x4") e,
                options(nostack, preserves_flags)
            );
        }
        r
    }

    /// epoll_wait(epfd, events, max, 0). aarch64 has no epoll_wait: epoll_pwait with a null signal mask
    /// is the same call.
    ///
    /// # Safety
    /// `events` must be valid for writes of `max` entries.
    #[inline(always)]
    pub unsafe fn epoll_poll(epfd: usize, events: usize, max: usize) -> isize {
        // SAFETY: caller's contract for `events`; the timeout (0) and the null mask are plain values.
        unsafe { syscall5(libc::SYS_epoll_pwait as usize, epfd, events, max, 0, 0) }
    }

    /// ioctl(fd, req, arg).
    ///
    /// # Safety
    /// `arg` must be what `req` expects.
    #[inline(always)]
    pub unsafe fn ioctl(fd: usize, req: usize, arg: usize) -> isize {
        // SAFETY: caller's contract.
        unsafe { syscall5(libc::SYS_ioctl as usize, fd, req, arg, 0, 0) }
    }

    /// close_range(first, last, 0).
    ///
    /// # Safety
    /// None beyond close's: the caller owns every fd in the range.
    #[inline(always)]
    pub unsafe fn close_range(first: usize, last: usize) -> isize {
        // SAFETY: plain values.
        unsafe { syscall5(libc::SYS_close_range as usize, first, last, 0, 0, 0) }
    }

    /// close(fd).
    ///
    /// # Safety
    /// The caller owns the fd.
    #[inline(always)]
    pub unsafe fn close(fd: usize) -> isize {
        // SAFETY: a plain value.
        unsafe { syscall5(libc::SYS_close as usize, fd, 0, 0, 0, 0) }
    }
}

/// Elsewhere: libc's wrappers, answering as the kernel does (-errno) and leaving errno as it was.
#[cfg(not(any(
    all(target_os = "linux", target_arch = "x86_64", target_pointer_width = "64"),
    all(target_os = "linux", target_arch = "aarch64")
)))]
mod arch {
    /// Runs a libc call that answers -1 and sets errno on failure; returns its result or -errno, with
    /// this thread's errno put back as it was.
    fn raw(call: impl FnOnce() -> libc::c_int) -> isize {
        // SAFETY: __errno_location returns this thread's errno, valid for reads and writes.
        let errno = unsafe { libc::__errno_location() };
        // SAFETY: as above.
        let saved = unsafe { *errno };
        let r = call();
        // SAFETY: as above.
        let r = if r < 0 { -(unsafe { *errno } as isize) } else { r as isize };
        // SAFETY: as above.
        unsafe { *errno = saved };
        r
    }

    /// epoll_wait(epfd, events, max, 0).
    ///
    /// # Safety
    /// `events` must be valid for writes of `max` entries.
    pub unsafe fn epoll_poll(epfd: usize, events: usize, max: usize) -> isize {
        // SAFETY: caller's contract for `events`.
        raw(|| unsafe { libc::epoll_wait(epfd as i32, events as *mut libc::epoll_event, max as i32, 0) })
    }

    /// ioctl(fd, req, arg).
    ///
    /// # Safety
    /// `arg` must be what `req` expects.
    pub unsafe fn ioctl(fd: usize, req: usize, arg: usize) -> isize {
        // SAFETY: caller's contract.
        raw(|| unsafe { libc::ioctl(fd as i32, req as _, arg) })
    }

    /// close_range(first, last, 0) (ENOSYS where libc has no number for it).
    ///
    /// # Safety
    /// None beyond close's: the caller owns every fd in the range.
    pub unsafe fn close_range(first: usize, last: usize) -> isize {
        // SAFETY: plain values.
        raw(|| unsafe {
            libc::syscall(libc::SYS_close_range, first as libc::c_uint, last as libc::c_uint, 0) as libc::c_int
        })
    }

    /// close(fd).
    ///
    /// # Safety
    /// The caller owns the fd.
    pub unsafe fn close(fd: usize) -> isize {
        // SAFETY: a plain value.
        raw(|| unsafe { libc::close(fd as i32) })
    }
}

/// epoll_wait(epfd, events, max, 0): what is ready now, without blocking.
///
/// # Safety
/// `events` must be valid for writes of `max` (> 0) entries.
#[inline(always)]
pub(crate) unsafe fn epoll_poll(epfd: RawFd, events: *mut libc::epoll_event, max: i32) -> Result<usize> {
    // SAFETY: `events` is valid for writes of `max` entries (caller's contract).
    result(unsafe { arch::epoll_poll(epfd as usize, events as usize, max as usize) })
}

/// close_range(first, last, 0): closes fds `first..=last` (ENOSYS before Linux 5.9).
///
/// # Safety
/// The caller owns every fd in the range.
#[inline(always)]
pub(crate) unsafe fn close_range(first: RawFd, last: RawFd) -> Result<()> {
    // SAFETY: the caller's contract.
    result(unsafe { arch::close_range(first as usize, last as usize) }).map(|_| ())
}

/// close(fd).
///
/// # Safety
/// The caller owns the fd.
#[inline(always)]
pub(crate) unsafe fn close(fd: RawFd) -> Result<()> {
    // SAFETY: the caller's contract.
    result(unsafe { arch::close(fd as usize) }).map(|_| ())
}

/// ioctl(fd, FIONREAD): bytes waiting to be read.
#[inline(always)]
pub(crate) fn fionread(fd: RawFd) -> Result<i64> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid and outlives the call.
    result(unsafe { arch::ioctl(fd as usize, libc::FIONREAD as usize, &mut n as *mut libc::c_int as usize) })?;
    Ok(n as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno_now() -> i32 {
        Errno::last().0
    }

    fn set_errno(v: i32) {
        // SAFETY: __errno_location returns this thread's errno, valid for writes.
        unsafe { *libc::__errno_location() = v };
    }

    /// The same answer as libc's wrapper gives, errors included, and libc's errno left alone.
    #[test]
    fn epoll_poll_answers_as_libc_does() {
        let (ep, efd) = (crate::sys::epoll_create().unwrap_or(-1), crate::sys::eventfd().unwrap_or(-1));
        assert!(ep >= 0 && efd >= 0);
        let mut buf = [crate::sys::empty_event(); 4];
        let poll = |fd: RawFd, buf: &mut [libc::epoll_event; 4]| {
            // SAFETY: `buf` holds 4 entries.
            unsafe { epoll_poll(fd, buf.as_mut_ptr(), 4) }
        };
        assert_eq!(poll(ep, &mut buf), Ok(0));
        assert_eq!(crate::sys::epoll_add(ep, efd, libc::EPOLLIN as u32, 77), Ok(()));
        assert_eq!(crate::sys::eventfd_write(efd, 1), Ok(()));
        assert_eq!(poll(ep, &mut buf), Ok(1));
        let (events, token) = (buf[0].events, buf[0].u64);
        assert_eq!((events, token), (libc::EPOLLIN as u32, 77));
        set_errno(1234);
        assert_eq!(poll(efd, &mut buf), Err(Errno(libc::EINVAL)));
        assert_eq!(poll(-1, &mut buf), Err(Errno(libc::EBADF)));
        assert_eq!(errno_now(), 1234);
        crate::sys::close(efd);
        crate::sys::close(ep);
    }

    #[test]
    fn fionread_answers_as_libc_does() {
        let mut sv = [0; 2];
        // SAFETY: `sv` has room for the two fds socketpair writes.
        assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) }, 0);
        assert_eq!(fionread(sv[0]), Ok(0));
        // SAFETY: the buffer is valid for 3 bytes.
        assert_eq!(unsafe { libc::write(sv[1], b"abc".as_ptr().cast(), 3) }, 3);
        assert_eq!(fionread(sv[0]), Ok(3));
        let ep = crate::sys::epoll_create().unwrap_or(-1);
        assert!(ep >= 0);
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through a valid pointer.
        let libc_says = unsafe { libc::ioctl(ep, libc::FIONREAD, &mut n) };
        assert_eq!(libc_says, -1);
        let libc_errno = errno_now();
        set_errno(1234);
        assert_eq!(fionread(ep), Err(Errno(libc_errno)));
        assert_eq!(fionread(-1), Err(Errno(libc::EBADF)));
        assert_eq!(errno_now(), 1234);
        for fd in [sv[0], sv[1], ep] {
            crate::sys::close(fd);
        }
    }

    /// close_range(2) closes the run and nothing else, close(2) one fd; errno is left alone.
    #[test]
    fn close_range_and_close_close_those_fds_and_nothing_else() {
        let efd = crate::sys::eventfd().unwrap_or(-1);
        assert!(efd >= 0);
        // Four fds at fresh numbers of their own (other tests make fds concurrently).
        // SAFETY: F_DUPFD_CLOEXEC duplicates an fd this test owns.
        let first = unsafe { libc::fcntl(efd, libc::F_DUPFD_CLOEXEC, 4000) };
        assert!(first >= 4000);
        let mut run = vec![first];
        for i in 1..4 {
            // SAFETY: as above; dup3 onto a number of this test's choosing (first + i is free or ours).
            let fd = unsafe { libc::dup3(efd, first + i, libc::O_CLOEXEC) };
            assert_eq!(fd, first + i);
            run.push(fd);
        }
        let open = |fd: RawFd| crate::sys::fd_is_open(fd);
        set_errno(4321);
        // SAFETY: the test owns these fds.
        assert_eq!(unsafe { close_range(first, first + 2) }, Ok(()));
        assert_eq!(errno_now(), 4321);
        assert_eq!(run.iter().map(|&fd| open(fd)).collect::<Vec<_>>(), [false, false, false, true]);
        set_errno(4321);
        // SAFETY: as above.
        assert_eq!(unsafe { close(first + 3) }, Ok(()));
        assert_eq!(errno_now(), 4321);
        assert!(!open(first + 3) && open(efd));
        crate::sys::close(efd);
    }
}

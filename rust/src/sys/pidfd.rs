//! Processes: pidfd, waitid, PIDFD_GET_INFO, /proc.

use super::{cvt, cvt_long, fd_is_open, track, Errno, RawFd, Result};

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

#[cfg(feature = "python")] // the Python layer's (doctor, tests)
/// Whether this kernel answers PIDFD_GET_INFO (Linux 6.13+; exit status from 6.15).
pub fn has_pidfd_get_info() -> bool {
    match pidfd_open(super::getpid()) {
        Ok(fd) => {
            let r = pidfd_exit_info(fd);
            super::close(fd);
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

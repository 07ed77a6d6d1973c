//! Mounts (NOTE_REVOKE): the mount table, and the mount an fd's file is on.

use super::{cvt, track, Errno, RawFd, Result};

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
pub fn fd_mount_id(fd: RawFd) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).map_err(|_| Errno(libc::EBADF))?;
    s.lines().find_map(|l| l.strip_prefix("mnt_id:").and_then(|v| v.trim().parse().ok())).ok_or(Errno(libc::ENOENT))
}

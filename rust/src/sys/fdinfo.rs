//! What an fd is and holds: queued bytes, socket options, fstat, its offset, its identity, its path.

use super::{cvt, cvt_long, getpid, track, Errno, RawFd, Result};

/// Bytes waiting to be read (FIONREAD / SIOCINQ), asked with a direct syscall (`direct.rs`: it is on the
/// hot path of every ready socket's report).
#[inline(always)]
pub fn fionread(fd: RawFd) -> Result<i64> {
    super::direct::fionread(fd)
}

/// Bytes queued in a socket's send queue (SIOCOUTQ).
pub fn siocoutq(fd: RawFd) -> Result<i64> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (== SIOCOUTQ) writes one int through the pointer, which is valid.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) })?;
    Ok(n as i64)
}

/// An int socket option (getsockopt(2)).
pub fn getsockopt_int(fd: RawFd, level: i32, name: i32) -> Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid; the kernel writes at most `len` bytes.
    cvt(unsafe { libc::getsockopt(fd, level, name, (&mut v as *mut libc::c_int).cast(), &mut len) })?;
    Ok(v)
}

/// The socket's pending error (SO_ERROR; reading it clears it).
pub fn so_error(fd: RawFd) -> Result<i32> {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
}

/// Connections waiting in a listening TCP socket's accept queue (TCP_INFO's tcpi_unacked in LISTEN state).
pub fn tcp_accept_queue(fd: RawFd) -> Result<i64> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info and len are valid; the kernel writes at most `len` bytes.
    cvt(unsafe {
        libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len)
    })?;
    Ok(info.tcpi_unacked as i64)
}

/// A pipe's capacity (F_GETPIPE_SZ).
pub fn pipe_size(fd: RawFd) -> Result<i64> {
    // SAFETY: F_GETPIPE_SZ takes no pointer argument.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) }).map(|n| n as i64)
}

/// What kqrs needs of fstat(2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// The type bits (S_IFMT part of st_mode).
    pub kind: u32,
    /// st_size.
    pub size: i64,
    /// st_dev: with `ino`, the file's identity.
    pub dev: u64,
    /// st_ino.
    pub ino: u64,
    /// st_nlink: the link count.
    pub nlink: u64,
    /// st_mode (with the owner and times below: what NOTE_ATTRIB compares).
    pub mode: u32,
    /// st_uid.
    pub uid: u32,
    /// st_gid.
    pub gid: u32,
    /// st_mtime, in ns.
    pub mtime_ns: i64,
    /// st_ctime, in ns.
    pub ctime_ns: i64,
}

/// fstat(2), as much of it as kqrs needs.
pub fn fstat(fd: RawFd) -> Result<FileStat> {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable stat buffer.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(stat_of(&st))
}

/// What kqrs keeps of a `struct stat`.
// st_nlink is a u64 on x86_64 but a u32 on aarch64: the widening is a no-op on one and needed on the other.
#[allow(clippy::useless_conversion)]
fn stat_of(st: &libc::stat) -> FileStat {
    FileStat {
        kind: st.st_mode & libc::S_IFMT,
        size: st.st_size,
        dev: st.st_dev,
        ino: st.st_ino,
        nlink: u64::from(st.st_nlink),
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime_ns: st.st_mtime.saturating_mul(1_000_000_000).saturating_add(st.st_mtime_nsec),
        ctime_ns: st.st_ctime.saturating_mul(1_000_000_000).saturating_add(st.st_ctime_nsec),
    }
}

/// fstat(2) of the parent of the directory open as `fd` (fstatat(fd, "..")): the directory it is an entry
/// of now.
pub fn fstat_parent(fd: RawFd) -> Result<FileStat> {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a NUL-terminated literal; st is a valid, writable stat buffer.
    cvt(unsafe { libc::fstatat(fd, c"..".as_ptr(), &mut st, 0) })?;
    Ok(stat_of(&st))
}

/// The fd's file offset (lseek(fd, 0, SEEK_CUR)).
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

/// The path of the file open as `fd`, as /proc/self/fd/N names it (with " (deleted)" after it once that
/// name was removed).
pub fn fd_path(fd: RawFd) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok().map(|p| p.into_os_string().into_vec())
}

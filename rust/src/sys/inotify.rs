//! inotify: the kqueue's one instance, watches made through /proc/self/fd so they follow the open file.

use super::{cvt, track, RawFd, Result};

/// A new non-blocking, close-on-exec inotify instance (tracked: closed in a fork child).
pub fn inotify_init() -> Result<RawFd> {
    // SAFETY: plain syscall with flag arguments.
    cvt(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) }).map(track)
}

/// Watches the open file behind `fd` (through its /proc/self/fd magic link, which names the file itself,
/// even after it was renamed or unlinked). Returns the watch descriptor.
pub fn inotify_watch_fd(ifd: RawFd, fd: RawFd, mask: u32) -> Result<i32> {
    watch_proc_path(ifd, fd, b"", mask)
}

/// Watches the parent of the directory open as `fd` (`/proc/self/fd/N/..`: the directory it is an entry of
/// now, whatever path it was opened by; nothing is opened). Returns the watch descriptor.
pub fn inotify_watch_fd_parent(ifd: RawFd, fd: RawFd, mask: u32) -> Result<i32> {
    watch_proc_path(ifd, fd, b"/..", mask)
}

/// inotify_add_watch on `/proc/self/fd/N` followed by `tail` (at most 3 bytes).
fn watch_proc_path(ifd: RawFd, fd: RawFd, tail: &[u8], mask: u32) -> Result<i32> {
    let mut path = [0u8; 32];
    path[..14].copy_from_slice(b"/proc/self/fd/");
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
    let tail = &tail[..tail.len().min(3)];
    path[14 + len..14 + len + tail.len()].copy_from_slice(tail);
    // SAFETY: path is NUL-terminated: at most 14 + 10 + 3 bytes are written into 32 zeroed bytes.
    cvt(unsafe { libc::inotify_add_watch(ifd, path.as_ptr().cast(), mask) })
}

/// Removes watch `wd` (unchecked: a watch already gone only yields EINVAL).
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

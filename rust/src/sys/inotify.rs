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
/// about the watched file itself), until the queue is empty. Returns how many reads that took: one for a
/// batch that left room for the largest event in `buf` (a read stops only at an empty queue or at an event
/// that does not fit), instead of one more that finds nothing (the inotify fd is level-triggered in the
/// kqueue's epoll: an event queued after the last read is reported again).
pub fn inotify_drain(ifd: RawFd, buf: &mut [u8], mut f: impl FnMut(i32, u32, u32, &[u8])) -> usize {
    let hdr = std::mem::size_of::<libc::inotify_event>();
    // The kernel pads a name (with its NUL) to a multiple of the header's size.
    let largest = hdr + (libc::NAME_MAX as usize + 1).next_multiple_of(hdr);
    let mut reads = 0;
    loop {
        // SAFETY: buf is a valid writable buffer of buf.len() bytes.
        let r = unsafe { libc::read(ifd, buf.as_mut_ptr().cast(), buf.len()) };
        reads += 1;
        if r <= 0 {
            return reads;
        }
        let r = r as usize;
        let mut off = 0usize;
        while off + hdr <= r {
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
        if buf.len() - r >= largest {
            return reads;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A fresh directory under the temporary directory, removed with everything in it on drop.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh directory (removed on drop) and an inotify instance watching it for IN_CREATE (closed on
    /// drop).
    struct Watched {
        dir: TempDir,
        ifd: RawFd,
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            crate::sys::close(self.ifd);
        }
    }

    fn watched_dir(tag: &str) -> Watched {
        let p = std::env::temp_dir().join(format!("kqrs-inotify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        assert!(std::fs::create_dir(&p).is_ok());
        let w = Watched { dir: TempDir(p), ifd: inotify_init().unwrap_or(-1) };
        let d = std::fs::File::open(&w.dir.0).ok();
        let dfd = d.as_ref().map_or(-1, |f| f.as_raw_fd());
        assert!(w.ifd >= 0 && dfd >= 0);
        // (The watch is on the directory's inode: it outlives the fd it was made through.)
        assert!(inotify_watch_fd(w.ifd, dfd, libc::IN_CREATE).is_ok());
        w
    }

    /// (events seen, reads made) of one drain.
    fn drain(ifd: RawFd) -> (Vec<Vec<u8>>, usize) {
        let mut buf = [0u8; 4096];
        let mut names = Vec::new();
        let reads = inotify_drain(ifd, &mut buf, |_, _, _, name| names.push(name.to_vec()));
        (names, reads)
    }

    #[test]
    fn a_batch_that_fits_with_room_to_spare_is_drained_in_one_read() {
        let w = watched_dir("small");
        let ifd = w.ifd;
        for i in 0..3 {
            assert!(std::fs::write(w.dir.0.join(format!("f{i}")), b"").is_ok());
        }
        let (names, reads) = drain(ifd);
        assert_eq!(names, vec![b"f0".to_vec(), b"f1".to_vec(), b"f2".to_vec()]);
        // The read returned far less than the buffer holds: the queue was empty, no second read to say so.
        assert_eq!(reads, 1);
        assert_eq!(drain(ifd), (Vec::new(), 1)); // (one read that finds nothing)
    }

    #[test]
    fn a_queue_longer_than_the_buffer_is_drained_to_the_end() {
        let w = watched_dir("large");
        let ifd = w.ifd;
        // 200 events of 16 + 112 bytes (a 100-byte name, padded): about six buffers' worth.
        let want: Vec<Vec<u8>> = (0..200).map(|i| format!("{i:0>100}").into_bytes()).collect();
        for n in &want {
            assert!(std::fs::write(w.dir.0.join(String::from_utf8_lossy(n).as_ref()), b"").is_ok());
        }
        let (names, reads) = drain(ifd);
        assert_eq!(names, want);
        assert!(reads >= 7, "{reads} reads for 25,600 bytes of events in a 4,096-byte buffer");
        let mut buf = [0u8; 4096];
        // SAFETY: buf is a valid writable buffer of buf.len() bytes.
        let r = unsafe { libc::read(ifd, buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!((r, crate::sys::Errno::last().0), (-1, libc::EAGAIN)); // nothing left behind
    }
}

//! EVFILT_VNODE on the kqueue's one inotify instance.
//!
//! The watch is made through `/proc/self/fd/N`, so it follows the open file, not its path. Only events
//! that change the file are subscribed (never IN_OPEN, IN_ACCESS or IN_CLOSE_*): someone opening, reading
//! or closing the file does not even make the inotify fd readable. inotify says *that* something changed;
//! a snapshot of the file's fstat (size, link count, mode, owner, mtime) says *what*: NOTE_EXTEND or
//! NOTE_TRUNCATE from the size, NOTE_LINK and NOTE_DELETE from the link count (an unlink of an open file
//! only shows up as a link-count change), NOTE_ATTRIB from the rest.

use crate::consts::*;
use crate::kevent::Kevent;
use crate::knote::{Kind, Knote, VnodeState};
use crate::kqueue::{State, TOKEN_MOUNTS};
use crate::sys::{self, Errno, FileStat, RawFd, Result};

const VNODE_NOTES: u32 =
    NOTE_DELETE | NOTE_WRITE | NOTE_EXTEND | NOTE_ATTRIB | NOTE_LINK | NOTE_RENAME | NOTE_REVOKE | NOTE_TRUNCATE;

/// Everything that changes a file or a directory's entries; nothing that merely uses it.
const WATCH: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_MOVE_SELF
    | libc::IN_DELETE_SELF
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_MASK_ADD;

/// The part of fstat a vnode knote compares between events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    size: i64,
    nlink: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl From<FileStat> for Snapshot {
    fn from(f: FileStat) -> Snapshot {
        Snapshot {
            size: f.size,
            nlink: f.nlink,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            mtime_ns: f.mtime_ns,
            ctime_ns: f.ctime_ns,
        }
    }
}

/// Files that have a vnode: regular files, directories, symlinks (O_PATH) and device nodes. Pipes,
/// FIFOs, sockets and anonymous inodes (eventfd, epoll, ...) do not.
fn is_vnode(kind: u32) -> bool {
    matches!(kind, libc::S_IFREG | libc::S_IFDIR | libc::S_IFLNK | libc::S_IFCHR | libc::S_IFBLK)
}

fn validate(ch: &Kevent) -> Result<()> {
    if ch.fflags & !VNODE_NOTES != 0 {
        return Err(Errno(libc::EINVAL));
    }
    Ok(())
}

pub(crate) fn attach(st: &mut State, ch: &Kevent) -> Result<u32> {
    validate(ch)?;
    let fd = i32::try_from(ch.ident).map_err(|_| Errno(libc::EBADF))?;
    let f = sys::fstat(fd)?;
    if !is_vnode(f.kind) {
        return Err(Errno(libc::EINVAL)); // pipes, sockets and anonymous inodes are not vnodes
    }
    crate::source::ensure(st, false)?;
    let ifd = crate::filter::fd::ensure_inotify(st)?;
    let wd = sys::inotify_watch_fd(ifd, fd, WATCH)?;
    let slot = st.insert(Knote::from_change(ch, ch.flags & EV_STICKY, ch.fflags, Kind::Vnode(Box::new(VnodeState {
            wd,
            dev: f.dev,
            ino: f.ino,
            mnt: sys::fd_mount_id(fd).unwrap_or(0),
            dir: f.kind == libc::S_IFDIR,
            snap: f.into(),
            pending: 0,
        }))));
    st.wds.entry(wd).or_default().push(slot);
    if ch.fflags & NOTE_REVOKE != 0 {
        if let Err(e) = watch_mounts(st) {
            let _ = st.delete(slot);
            return Err(e);
        }
    }
    Ok(slot)
}

pub(crate) fn modify(st: &mut State, slot: u32, ch: &Kevent) -> Result<()> {
    validate(ch)?;
    let fd = i32::try_from(ch.ident).map_err(|_| Errno(libc::EBADF))?;
    let f = match sys::fstat(fd) {
        Ok(f) => f,
        Err(e) => {
            let _ = st.delete(slot); // closed: its knote went with the close
            return Err(e);
        }
    };
    if let Some(Knote { kind: Kind::Vnode(v), .. }) = st.knotes.get(slot) {
        if (f.dev, f.ino) != (v.dev, v.ino) {
            // The fd number was closed and now names another file: the old knote went with the close;
            // this change watches the new file from scratch.
            if !is_vnode(f.kind) {
                return Err(Errno(libc::EINVAL));
            }
            let old_wd = v.wd;
            let ifd = crate::filter::fd::ensure_inotify(st)?;
            let new_wd = sys::inotify_watch_fd(ifd, fd, WATCH)?;
            if let Some(v) = st.wds.get_mut(&old_wd) {
                v.retain(|&s| s != slot);
            }
            crate::filter::fd::unwatch(st, old_wd);
            st.wds.entry(new_wd).or_default().push(slot);
            st.unqueue(slot);
            if let Some(k) = st.knotes.get_mut(slot) {
                k.kind = Kind::Vnode(Box::new(VnodeState {
                    wd: new_wd,
                    dev: f.dev,
                    ino: f.ino,
                    mnt: sys::fd_mount_id(fd).unwrap_or(0),
                    dir: f.kind == libc::S_IFDIR,
                    snap: f.into(),
                    pending: 0,
                }));
            }
        }
    }
    if ch.fflags & NOTE_REVOKE != 0 {
        watch_mounts(st)?;
    }
    let Some(k) = st.knotes.get_mut(slot) else { return Err(Errno(libc::ENOENT)) };
    k.sfflags = ch.fflags;
    k.sdata = ch.data;
    k.udata = ch.udata;
    Ok(())
}

/// NOTE_REVOKE: inotify only says IN_UNMOUNT once the filesystem itself goes away, which the knote's own
/// open fd prevents (a lazy unmount leaves it alive). The mount table says it at once: the kqueue polls
/// /proc/self/mountinfo (EPOLLPRI on every change) and revokes knotes whose mount has left it.
fn watch_mounts(st: &mut State) -> Result<()> {
    if st.mounts >= 0 {
        return Ok(());
    }
    let fd = sys::mountinfo_open()?;
    let _ = sys::mountinfo_ids(fd); // read once: poll reports changes after the last full read
    if let Err(e) = sys::epoll_add(st.ep, fd, sys::EPOLLPRI | sys::EPOLLERR, TOKEN_MOUNTS) {
        sys::close(fd);
        return Err(e);
    }
    st.mounts = fd;
    Ok(())
}

/// The mount table changed: a knote asking for NOTE_REVOKE whose mount is gone gets it.
pub(crate) fn mounts_changed(st: &mut State) {
    if st.mounts < 0 {
        return;
    }
    let Ok(ids) = sys::mountinfo_ids(st.mounts) else { return };
    let gone: Vec<u32> = st
        .knotes
        .iter_slots()
        .filter_map(|(slot, k)| match &k.kind {
            Kind::Vnode(v) if k.sfflags & NOTE_REVOKE != 0 && v.mnt != 0 && !ids.contains(&v.mnt) => Some(slot),
            _ => None,
        })
        .collect();
    for slot in gone {
        if let Some(Knote { kind: Kind::Vnode(v), .. }) = st.knotes.get_mut(slot) {
            v.pending |= NOTE_REVOKE;
            v.mnt = 0; // revoked once
        }
        st.enqueue(slot);
    }
}

pub(crate) fn detach(st: &mut State, k: &Knote) {
    if let Kind::Vnode(v) = &k.kind {
        crate::filter::fd::unwatch(st, v.wd);
    }
}

pub(crate) fn enabled_changed(st: &mut State, slot: u32, on: bool) {
    if !on {
        // Take in what inotify already knows, so the drop covers every change made before the disable.
        crate::filter::fd::inotify_ready(st);
    }
    if let Some(Knote { kind: Kind::Vnode(v), .. }) = st.knotes.get_mut(slot) {
        if !on {
            v.pending = 0; // EV_DISABLE drops what was pending
        } else if v.pending != 0 {
            st.enqueue(slot);
        }
    }
}

/// inotify reported `mask` for the file of knote `slot` (IN_Q_OVERFLOW: something, unknown).
pub(crate) fn inotify_event(st: &mut State, slot: u32, mask: u32) {
    let Some(k) = st.knotes.get(slot) else { return };
    let Kind::Vnode(v) = &k.kind else { return };
    let (dev, ino, dir, snap, pending) = (v.dev, v.ino, v.dir, v.snap, v.pending);
    let fd = k.ident as RawFd;
    let now = match sys::fstat(fd) {
        Ok(f) if (f.dev, f.ino) == (dev, ino) => f,
        // Closed, or the number names another file now: the knote went with the close, as on BSD.
        _ => {
            let _ = st.delete(slot);
            return;
        }
    };
    let new: Snapshot = now.into();
    let overflow = mask & libc::IN_Q_OVERFLOW != 0;
    let mut notes = 0;
    // Sizes are compared on every event: a write may already be visible when an earlier chmod's event
    // is read.
    if new.size > snap.size {
        notes |= NOTE_WRITE | NOTE_EXTEND;
    } else if new.size < snap.size {
        notes |= NOTE_TRUNCATE;
    } else if (mask & libc::IN_MODIFY != 0 && pending & (NOTE_EXTEND | NOTE_TRUNCATE) == 0)
        || (overflow && new.mtime_ns != snap.mtime_ns)
    {
        // (A size change already gathered was seen early, through another event's fstat: this IN_MODIFY
        // is that same change, not a further write.)
        notes |= NOTE_WRITE;
    }
    if dir && mask & (libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO) != 0 {
        notes |= NOTE_WRITE; // an entry added, removed or renamed
    }
    if new.nlink != snap.nlink {
        notes |= NOTE_LINK;
    }
    if (new.nlink == 0 && snap.nlink != 0) || mask & libc::IN_DELETE_SELF != 0 {
        notes |= NOTE_DELETE;
    }
    let owner_or_mode = (new.mode, new.uid, new.gid) != (snap.mode, snap.uid, snap.gid);
    // A new mode or owner is an attribute change whichever event brought it to light.
    if owner_or_mode || (mask & libc::IN_ATTRIB != 0 && new.nlink == snap.nlink) {
        notes |= NOTE_ATTRIB;
    }
    let ctime_only = new.ctime_ns != snap.ctime_ns && new.nlink == snap.nlink && new.size == snap.size;
    if overflow && (owner_or_mode || ctime_only) {
        notes |= NOTE_ATTRIB; // after lost events: an attribute change is what a new ctime alone means
    }
    if mask & libc::IN_MOVE_SELF != 0 {
        notes |= NOTE_RENAME;
    }
    if mask & libc::IN_UNMOUNT != 0 {
        notes |= NOTE_REVOKE;
    }
    let Some(Knote { sfflags, kind: Kind::Vnode(v), .. }) = st.knotes.get_mut(slot) else {
        return;
    };
    v.snap = new;
    let wanted = notes & *sfflags;
    if wanted != 0 {
        v.pending |= wanted;
        st.enqueue(slot);
    }
}

/// A vnode knote taken off the active queue: report the notes gathered since the last report.
pub(crate) fn ready(st: &mut State, slot: u32, out: &mut [Kevent], n: &mut usize) {
    let Some(k) = st.knotes.get(slot) else { return };
    let Kind::Vnode(v) = &k.kind else { return };
    let pending = v.pending;
    if pending == 0 {
        return;
    }
    let revoked = pending & NOTE_REVOKE != 0;
    let kev = State::event_of(k, if revoked { EV_EOF } else { 0 }, pending, 0);
    let clear = k.flags & EV_CLEAR != 0;
    if !st.emit(slot, kev, out, n) {
        return;
    }
    if clear {
        if let Some(Knote { kind: Kind::Vnode(v), .. }) = st.knotes.get_mut(slot) {
            v.pending = 0;
        }
    } else {
        // Without EV_CLEAR the notes stay and are reported on every call (FreeBSD).
        st.enqueue(slot);
    }
}

//! EVFILT_VNODE on the kqueue's one inotify instance.
//!
//! The watch is made through `/proc/self/fd/N`, so it follows the open file, not its path. Only events
//! that change the file are subscribed, unless a knote on the inode asks for the opt-in notes (NOTE_OPEN,
//! NOTE_CLOSE, NOTE_CLOSE_WRITE, NOTE_READ): then, and only while one does, IN_OPEN, IN_CLOSE_* or
//! IN_ACCESS too. Someone opening, reading or closing the file does not otherwise make the inotify fd
//! readable. inotify says *that* something changed; a snapshot of the file's fstat (size, link count, mode,
//! owner, mtime) says *what*.
//!
//! The notes are FreeBSD's (its `vop_*_post` hooks in vfs_subr.c and VOP_WRITE_POST in vnode.h), per
//! operation: a write NOTE_WRITE, plus NOTE_EXTEND when the file grew; a truncation (setattr) NOTE_ATTRIB,
//! plus libkqueue's NOTE_TRUNCATE when it shrank; chmod/chown/utimes/xattrs NOTE_ATTRIB; a new link
//! NOTE_LINK; losing a name (unlink, renamed over) NOTE_DELETE, whatever links remain; being renamed
//! NOTE_RENAME. A directory: NOTE_WRITE when an entry is added, removed or renamed, plus NOTE_LINK for a
//! subdirectory made or removed (its link count), plus NOTE_EXTEND when the rename crossed directories.
//! Across knotes, FreeBSD's order comes from the order of the batch (`inotify::ready`, `deleted_before`).
//!
//! rmdir of a directory that is still open is told only to its parent (IN_DELETE|IN_ISDIR, with the
//! entry's name), never to the directory: a directory knote asking for NOTE_DELETE shares an internal
//! watch on its parent and remembers its name there (`sync_parent`), and `subdirectory_removed` matches
//! the two (wds are per inode, so the parent's wd tells apart directories of the same name).

use crate::consts::*;
use crate::filter::inotify::{self, OPT_IN_EVENTS};
use crate::filter::TOKEN_MOUNTS;
use crate::kevent::Kevent;
use crate::knote::{Kind, Knote, VnodeState};
use crate::kqueue::State;
use crate::sys::{self, Errno, FileStat, RawFd, Result};

/// FreeBSD 11's notes about using the file, each reported only to a knote asking for it.
const OPT_IN_NOTES: u32 = NOTE_OPEN | NOTE_CLOSE | NOTE_CLOSE_WRITE | NOTE_READ;

const VNODE_NOTES: u32 = NOTE_DELETE
    | NOTE_WRITE
    | NOTE_EXTEND
    | NOTE_ATTRIB
    | NOTE_LINK
    | NOTE_RENAME
    | NOTE_REVOKE
    | NOTE_TRUNCATE
    | OPT_IN_NOTES;

/// Everything that changes a file or a directory's entries; nothing that merely uses it.
const WATCH: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_MOVE_SELF
    | libc::IN_DELETE_SELF
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO;

/// kqrs's own bits in a gathered inotify mask (inotify never reports these values). MOVED_ACROSS: this
/// half of a rename has no other half on the same watch in the batch, so the rename crossed directories.
pub(crate) const MOVED_ACROSS: u32 = 0x0010_0000;
/// RECHECK: no event about this file, but something elsewhere says it may have changed (a subdirectory
/// was removed): compare its fstat with the snapshot.
const RECHECK: u32 = 0x0020_0000;

/// `VnodeState::early`: the snapshot showed a size change before its IN_MODIFY was read, or a link-count
/// change before its IN_ATTRIB was read; that event, when it comes, is not a further write or attribute
/// change.
const EARLY_SIZE: u8 = 1;
const EARLY_LINK: u8 = 2;

/// Each opt-in note and the inotify event behind it.
const OPT_IN: [(u32, u32); 4] = [
    (NOTE_OPEN, libc::IN_OPEN),
    (NOTE_CLOSE, libc::IN_CLOSE_NOWRITE),
    (NOTE_CLOSE_WRITE, libc::IN_CLOSE_WRITE),
    (NOTE_READ, libc::IN_ACCESS),
];

/// The opt-in inotify events a knote asking for `notes` needs.
fn opt_in_events(notes: u32) -> u32 {
    OPT_IN.iter().filter(|&&(note, _)| notes & note != 0).fold(0, |m, &(_, event)| m | event)
}

/// The inotify mask a vnode knote asking for `notes` needs.
pub(crate) fn events_for(notes: u32) -> u32 {
    WATCH | opt_in_events(notes)
}

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

/// A fresh knote state for the file `fd` (whose fstat is `f`) on watch `wd`: nothing pending.
fn new_state(wd: i32, fd: RawFd, f: FileStat) -> Box<VnodeState> {
    Box::new(VnodeState {
        wd,
        parent_wd: -1,
        name: Box::default(),
        dev: f.dev,
        ino: f.ino,
        mnt: sys::fd_mount_id(fd).unwrap_or(0),
        dir: f.kind == libc::S_IFDIR,
        snap: f.into(),
        pending: 0,
        early: 0,
    })
}

pub(crate) fn attach(st: &mut State, ch: &Kevent) -> Result<u32> {
    validate(ch)?;
    let fd = i32::try_from(ch.ident).map_err(|_| Errno(libc::EBADF))?;
    let f = sys::fstat(fd)?;
    if !is_vnode(f.kind) {
        return Err(Errno(libc::EINVAL)); // pipes, sockets and anonymous inodes are not vnodes
    }
    crate::source::ensure(st, false)?;
    let wd = inotify::watch(st, fd, events_for(ch.fflags) | libc::IN_MASK_ADD)?;
    let slot = st.insert(Knote::from_change(ch, ch.flags & EV_STICKY, ch.fflags, Kind::Vnode(new_state(wd, fd, f))));
    inotify::share(st, wd, slot);
    sync_parent(st, slot, false);
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
    let Some(Knote { sfflags, kind: Kind::Vnode(v), .. }) = st.knotes.get(slot) else {
        return Err(Errno(libc::ENOENT));
    };
    let (old_notes, old_wd, old_parent) = (*sfflags, v.wd, v.parent_wd);
    let same_file = (f.dev, f.ino) == (v.dev, v.ino);
    if !same_file {
        // The fd number was closed and now names another file: the old knote went with the close;
        // this change watches the new file from scratch.
        if !is_vnode(f.kind) {
            return Err(Errno(libc::EINVAL));
        }
        let new_wd = inotify::watch(st, fd, events_for(ch.fflags) | libc::IN_MASK_ADD)?;
        if let Some(v) = st.filters.inotify.wds.get_mut(&old_wd) {
            v.retain(|&s| s != slot);
        }
        inotify::unwatch(st, old_wd, events_for(old_notes), None);
        inotify::share(st, new_wd, slot);
        st.unqueue(slot);
        if let Some(k) = st.knotes.get_mut(slot) {
            k.kind = Kind::Vnode(new_state(new_wd, fd, f));
        }
        inotify::unwatch_parent(st, old_parent);
    } else if old_wd >= 0 && opt_in_events(ch.fflags) & !opt_in_events(old_notes) != 0 {
        // It asks for opens, reads or closes it did not: the watch subscribes to them from now on (the fd
        // names the watched file: just checked).
        inotify::rewatch(st, fd, old_wd, events_for(ch.fflags) | libc::IN_MASK_ADD)?;
    }
    if ch.fflags & NOTE_REVOKE != 0 {
        watch_mounts(st)?;
    }
    let Some(k) = st.knotes.get_mut(slot) else { return Err(Errno(libc::ENOENT)) };
    k.sfflags = ch.fflags;
    k.sdata = ch.data;
    k.udata = ch.udata;
    if same_file {
        // It no longer asks for some: the watch stops subscribing to them unless another knote asks.
        inotify::narrow(st, old_wd, opt_in_events(old_notes) & !opt_in_events(ch.fflags), None);
    }
    sync_parent(st, slot, false); // it may ask for NOTE_DELETE now, or no longer
    Ok(())
}

/// Keeps directory knote `slot`'s share of the kqueue's internal watch on its parent, and its name there:
/// rmdir of an open directory is told only to the parent (`subdirectory_removed`). Only a knote asking for
/// NOTE_DELETE has one (a directory watched for its entries alone, the common case, is not woken by its
/// siblings' removal); it is made at attach, or when a change asks for NOTE_DELETE, and dropped when a
/// change no longer asks or the directory has no links left. `look_again`: the directory may be another
/// entry of another parent now (it was renamed, or events were lost), or removed: the share moves to the
/// parent it has now, or goes. Best effort: a directory the process cannot search (`..` is looked up
/// through it), the process's root, or a full watch table leave the knote without one (no NOTE_DELETE for
/// its rmdir, as before).
fn sync_parent(st: &mut State, slot: u32, look_again: bool) {
    let Some(Knote { ident, sfflags, kind: Kind::Vnode(v), .. }) = st.knotes.get(slot) else { return };
    let want = v.dir && sfflags & NOTE_DELETE != 0;
    let old = v.parent_wd;
    if want == (old >= 0) && !(want && look_again) {
        return;
    }
    let (fd, dev, ino) = (*ident as RawFd, v.dev, v.ino);
    let found = if want { parent_of(st, fd, dev, ino) } else { None };
    let new = found.as_ref().map_or(-1, |p| p.0);
    if let Some((wd, pdev, pino, _)) = found {
        if wd != old {
            inotify::share_parent(st, wd, pdev, pino, slot);
        }
    }
    if let Some(Knote { kind: Kind::Vnode(v), .. }) = st.knotes.get_mut(slot) {
        v.parent_wd = new;
        v.name = found.map(|p| p.3).unwrap_or_default();
    }
    if old >= 0 && old != new {
        inotify::unwatch_parent(st, old);
    }
}

/// The watch on the parent of the directory open as `fd` (named `dev`/`ino`), made or widened now, with the
/// parent's identity and the directory's name in it; None when the directory has no links left or no
/// parent can be watched.
fn parent_of(st: &mut State, fd: RawFd, dev: u64, ino: u64) -> Option<(i32, u64, u64, Box<[u8]>)> {
    match sys::fstat(fd) {
        Ok(f) if (f.dev, f.ino) == (dev, ino) && f.nlink > 0 => {}
        _ => return None,
    }
    // Its name, as /proc/self/fd/N names it (a race with a rename is caught by that rename's IN_MOVE_SELF
    // on its own watch, made before this, which looks again).
    let path = sys::fd_path(fd)?;
    let name = &path[path.iter().rposition(|&c| c == b'/')? + 1..];
    if name.is_empty() {
        return None; // "/": its own parent, never removed
    }
    let name: Box<[u8]> = name.into();
    let (wd, pdev, pino) = inotify::watch_parent(st, fd).ok()?;
    Some((wd, pdev, pino, name))
}

/// NOTE_REVOKE: inotify only says IN_UNMOUNT once the filesystem itself goes away, which the knote's own
/// open fd prevents (a lazy unmount leaves it alive). The mount table says it at once: the kqueue polls
/// /proc/self/mountinfo (EPOLLPRI on every change) and revokes knotes whose mount has left it.
fn watch_mounts(st: &mut State) -> Result<()> {
    if st.filters.mounts >= 0 {
        return Ok(());
    }
    let fd = sys::mountinfo_open()?;
    let _ = sys::mountinfo_ids(fd); // read once: poll reports changes after the last full read
    if let Err(e) = sys::epoll_add(st.ep, fd, sys::EPOLLPRI | sys::EPOLLERR, TOKEN_MOUNTS) {
        sys::close(fd);
        return Err(e);
    }
    st.filters.mounts = fd;
    Ok(())
}

/// The mount table changed: a knote asking for NOTE_REVOKE whose mount is gone gets it.
pub(crate) fn mounts_changed(st: &mut State) {
    if st.filters.mounts < 0 {
        return;
    }
    let Ok(ids) = sys::mountinfo_ids(st.filters.mounts) else { return };
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

/// The mount table's registration in the kqueue's epoll, for a rebuild.
pub(crate) fn registration(st: &State) -> Option<(RawFd, u32, u64)> {
    (st.filters.mounts >= 0).then_some((st.filters.mounts, sys::EPOLLPRI | sys::EPOLLERR, TOKEN_MOUNTS))
}

/// Teardown: closes the mount table.
pub(crate) fn close(st: &mut State) {
    if st.filters.mounts >= 0 {
        sys::close(st.filters.mounts);
        st.filters.mounts = -1;
    }
}

pub(crate) fn detach(st: &mut State, k: &Knote) {
    if let Kind::Vnode(v) = &k.kind {
        let departed = RawFd::try_from(k.ident).ok().map(|fd| (fd, v.dev, v.ino));
        inotify::unwatch(st, v.wd, events_for(k.sfflags), departed);
        if v.parent_wd >= 0 {
            inotify::unwatch_parent(st, v.parent_wd);
        }
    }
}

pub(crate) fn enabled_changed(st: &mut State, slot: u32, on: bool) {
    if !on {
        // Take in what inotify already knows, so the drop covers every change made before the disable.
        inotify::ready(st);
    }
    if let Some(Knote { kind: Kind::Vnode(v), .. }) = st.knotes.get_mut(slot) {
        if !on {
            v.pending = 0; // EV_DISABLE drops what was pending
        } else if v.pending != 0 {
            st.enqueue(slot);
        }
    }
}

/// inotify reported `mask` for the file of knote `slot` (IN_Q_OVERFLOW: something, unknown; RECHECK: no
/// event, look anyway; MOVED_ACROSS: see there).
pub(crate) fn inotify_event(st: &mut State, slot: u32, mask: u32) {
    let Some(k) = st.knotes.get(slot) else { return };
    let Kind::Vnode(v) = &k.kind else { return };
    // Opens, reads and closes are subscribed for another knote on the inode: not this one's business.
    let mask = mask & !(OPT_IN_EVENTS & !opt_in_events(k.sfflags));
    if mask & !libc::IN_ISDIR == 0 {
        return;
    }
    let (dev, ino, dir, snap, early, parent_wd) = (v.dev, v.ino, v.dir, v.snap, v.early, v.parent_wd);
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
    let (mut notes, early) = if dir { (dir_notes(mask, &snap, &new), 0) } else { file_notes(mask, &snap, &new, early) };
    if mask & libc::IN_MOVE_SELF != 0 {
        notes |= NOTE_RENAME;
    }
    if mask & libc::IN_UNMOUNT != 0 {
        notes |= NOTE_REVOKE;
    }
    for (note, event) in OPT_IN {
        if mask & event != 0 {
            notes |= note;
        }
    }
    let Some(Knote { sfflags, kind: Kind::Vnode(v), .. }) = st.knotes.get_mut(slot) else {
        return;
    };
    v.snap = new;
    v.early = early;
    // FreeBSD's filt_vnode reports the whole hint an operation posts once the knote asked for any note of
    // it: a write past the end is NOTE_WRITE|NOTE_EXTEND even to a knote that asked for NOTE_WRITE only, and
    // an entry change of a directory NOTE_WRITE with its NOTE_LINK / NOTE_EXTEND. (libkqueue's
    // NOTE_TRUNCATE is kqrs's addition to the truncation's NOTE_ATTRIB, reported only when asked for.)
    let hint = if dir { NOTE_WRITE | NOTE_LINK | NOTE_EXTEND } else { NOTE_WRITE | NOTE_EXTEND };
    let mut wanted = notes & *sfflags;
    if wanted & hint != 0 {
        wanted |= notes & hint;
    }
    if wanted != 0 {
        v.pending |= wanted;
        st.enqueue(slot);
    }
    // Renamed (or events lost): its parent watch follows it to the parent it has now; removed: it goes.
    let moved = mask & (libc::IN_MOVE_SELF | libc::IN_Q_OVERFLOW) != 0;
    if dir && (moved || (now.nlink == 0 && parent_wd >= 0)) {
        sync_parent(st, slot, true);
    }
}

/// What happened to a file that is not a directory, from the events and the snapshots before and after;
/// with the new `early` marks.
fn file_notes(mask: u32, snap: &Snapshot, new: &Snapshot, mut early: u8) -> (u32, u8) {
    let overflow = mask & libc::IN_Q_OVERFLOW != 0;
    if overflow {
        early = 0; // the events those marks waited for may be among the lost ones
    }
    let mut notes = 0;
    // Sizes are compared on every event: a write may already be visible when an earlier chmod's event is
    // read. Growth is a write past the end (FreeBSD's VOP_WRITE_POST: NOTE_WRITE|NOTE_EXTEND); shrinking
    // is a truncation, a setattr (NOTE_ATTRIB), with libkqueue's NOTE_TRUNCATE in addition.
    let resized = new.size != snap.size;
    if new.size > snap.size {
        notes |= NOTE_WRITE | NOTE_EXTEND;
    } else if new.size < snap.size {
        notes |= NOTE_ATTRIB | NOTE_TRUNCATE;
    }
    if mask & libc::IN_MODIFY != 0 {
        if !resized {
            if early & EARLY_SIZE != 0 {
                early &= !EARLY_SIZE; // the event of a size change already gathered, not a further write
            } else {
                notes |= NOTE_WRITE; // a write that did not grow the file
            }
        }
    } else if resized && !overflow {
        early |= EARLY_SIZE;
    }
    if overflow && !resized && new.mtime_ns != snap.mtime_ns {
        notes |= NOTE_WRITE;
    }
    // Link count: FreeBSD posts NOTE_LINK for a new link (vop_link_post) and NOTE_DELETE for every name
    // removed (vop_remove_post, and vop_rename_post for a file renamed over), whatever links remain.
    let relinked = new.nlink != snap.nlink;
    if new.nlink > snap.nlink {
        notes |= NOTE_LINK;
    } else if new.nlink < snap.nlink || mask & libc::IN_DELETE_SELF != 0 {
        notes |= NOTE_DELETE;
    }
    let owner_or_mode = (new.mode, new.uid, new.gid) != (snap.mode, snap.uid, snap.gid);
    let mut attrib = owner_or_mode;
    if mask & libc::IN_ATTRIB != 0 {
        if !relinked {
            if early & EARLY_LINK != 0 {
                early &= !EARLY_LINK; // the event of a link count change already gathered
            } else {
                attrib = true; // chmod or chown to the same value, utimes, an extended attribute
            }
        }
    } else if relinked && !overflow {
        early |= EARLY_LINK;
    }
    let ctime_only = new.ctime_ns != snap.ctime_ns && !relinked && !resized;
    if overflow && ctime_only {
        attrib = true; // after lost events: an attribute change is what a new ctime alone means
    }
    if attrib {
        notes |= NOTE_ATTRIB;
    }
    (notes, early)
}

/// What happened to a directory. Its entries (FreeBSD's vop_*_post on the parent): one added or removed
/// is NOTE_WRITE, plus NOTE_LINK for a subdirectory (mkdir, rmdir); a rename within it NOTE_WRITE (plus
/// NOTE_LINK when a directory was renamed over, which its link count shows); a rename from or to another
/// directory NOTE_WRITE|NOTE_EXTEND, plus NOTE_LINK when a directory moved and changed its link count. Its
/// size says nothing (FreeBSD never derives a directory's notes from it).
fn dir_notes(mask: u32, snap: &Snapshot, new: &Snapshot) -> u32 {
    let mut notes = 0;
    let isdir = mask & libc::IN_ISDIR != 0;
    if mask & (libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO) != 0 {
        notes |= NOTE_WRITE;
        if isdir && mask & (libc::IN_CREATE | libc::IN_DELETE) != 0 {
            notes |= NOTE_LINK;
        }
        if mask & MOVED_ACROSS != 0 {
            notes |= NOTE_EXTEND;
            // A directory moved out, or in (where directories do not count in their parent's link count;
            // elsewhere the count itself tells whether it replaced one, which leaves the count as it was).
            if isdir && (mask & libc::IN_MOVED_FROM != 0 || new.nlink < 2) {
                notes |= NOTE_LINK;
            }
        }
    }
    if (new.nlink == 0 && snap.nlink != 0) || mask & libc::IN_DELETE_SELF != 0 {
        notes |= NOTE_DELETE; // removed, or a directory renamed over it
    } else if new.nlink != snap.nlink {
        notes |= NOTE_LINK; // subdirectories came or went
    }
    let owner_or_mode = (new.mode, new.uid, new.gid) != (snap.mode, snap.uid, snap.gid);
    let overflow = mask & libc::IN_Q_OVERFLOW != 0;
    if owner_or_mode || (mask & libc::IN_ATTRIB != 0 && new.nlink == snap.nlink) {
        notes |= NOTE_ATTRIB;
    }
    if overflow {
        // After lost events: a new mtime is an entry change; a new ctime alone an attribute change.
        if new.mtime_ns != snap.mtime_ns {
            notes |= NOTE_WRITE;
        } else if new.ctime_ns != snap.ctime_ns && new.nlink == snap.nlink {
            notes |= NOTE_ATTRIB;
        }
    }
    notes
}

/// Whether batch entry `a` should be applied after the entry `b` that follows it, for FreeBSD's order:
/// Linux reports the link count of a file losing a name (IN_ATTRIB) just before the directory's IN_DELETE
/// (unlink) or the renamed file's IN_MOVE_SELF (renamed over), where FreeBSD posts the directory's
/// NOTE_WRITE, or the NOTE_RENAME, before that file's NOTE_DELETE. Only when a vnode knote of `a`'s file
/// shows a lost link (a chmod followed by someone else's unlink keeps its order), and, when its own name is
/// the one removed, that name is the entry `b` removed, or the name the file of `b` was renamed to (an
/// unlink followed by an unrelated rename keeps its order). `b` carries the name of a removed entry.
pub(crate) fn deleted_before(st: &State, a: (i32, u32), b: (i32, u32, &[u8])) -> bool {
    let ((awd, amask), (bwd, bmask, bname)) = (a, b);
    if awd < 0 || awd == bwd || amask & libc::IN_ATTRIB == 0 {
        return false;
    }
    let unlinked = bmask & libc::IN_DELETE != 0;
    if !unlinked && bmask & libc::IN_MOVE_SELF == 0 {
        return false;
    }
    // The path of a vnode knote's fd on `a`'s file, if that file lost a link.
    let path_of = |wd: i32, lost: bool| -> Option<Option<Vec<u8>>> {
        st.filters.inotify.wds.get(&wd)?.iter().find_map(|&s| match st.knotes.get(s) {
            Some(Knote { ident, kind: Kind::Vnode(v), .. }) => match sys::fstat(*ident as RawFd) {
                Ok(f) if (f.dev, f.ino) == (v.dev, v.ino) && (!lost || f.nlink < v.snap.nlink) => {
                    Some(sys::fd_path(*ident as RawFd))
                }
                _ => None,
            },
            _ => None,
        })
    };
    let Some(apath) = path_of(awd, true) else { return false };
    // Its own name still there: another of its names went, which the events cannot name; the lost link
    // is the evidence.
    let Some(gone) = apath.as_deref().and_then(|p| p.strip_suffix(b" (deleted)")) else { return true };
    if unlinked {
        gone.len() > bname.len() && gone.ends_with(bname) && gone[gone.len() - bname.len() - 1] == b'/'
    } else {
        matches!(path_of(bwd, false), Some(Some(p)) if p == gone)
    }
}

/// A directory lost its subdirectory `name` (IN_DELETE|IN_ISDIR on watch `wd`): Linux tells nothing to
/// the removed directory itself while it is open, so the directory knotes whose parent watch is `wd` (wds
/// are per inode: that parent, and no other directory of the same name elsewhere) and whose name in it is
/// `name` get their NOTE_DELETE here, when their own fstat shows that directory with no links left: after
/// the parent's NOTE_WRITE|NOTE_LINK, as FreeBSD's vop_rmdir_post posts them. Only the knotes of that one
/// parent are looked at.
pub(crate) fn subdirectory_removed(st: &mut State, wd: i32, name: &[u8]) {
    let Some(p) = st.filters.inotify.parents.get(&wd) else { return };
    let found: Vec<u32> = p
        .slots
        .iter()
        .copied()
        .filter(|&s| match st.knotes.get(s) {
            Some(Knote { ident, kind: Kind::Vnode(v), .. }) if *v.name == *name => {
                matches!(sys::fstat(*ident as RawFd), Ok(f) if (f.dev, f.ino) == (v.dev, v.ino) && f.nlink == 0)
            }
            _ => false,
        })
        .collect();
    for slot in found {
        inotify_event(st, slot, RECHECK);
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

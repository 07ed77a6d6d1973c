//! The kqueue's one inotify instance, a room of its own because two filters share it: READ/WRITE knotes on
//! regular files and directories (fd.rs, which epoll refuses: IN_MODIFY re-checks them) and EVFILT_VNODE
//! knotes (vnode.rs). A watch is per inode, so knotes of both kinds on one file share one watch, its mask
//! the union of what they need (widened with IN_MASK_ADD, narrowed by `narrow`). This module opens the
//! instance (on first use), keeps which knotes use each watch, and hands every event to the knotes on its
//! watch: vnode knotes get `vnode::inotify_event`, READ/WRITE knotes `fd::file_changed`.
//!
//! It also keeps the internal *parent watches*: rmdir of a directory that is still open is told only to its
//! parent (IN_DELETE|IN_ISDIR with the entry's name), so a directory knote asking for NOTE_DELETE shares a
//! watch on its parent (`watch_parent`; IN_DELETE only, made with IN_MASK_ADD so a user knote's watch on the
//! same inode is never narrowed), refcounted per wd like the knotes' own. Such a watch is nobody's knote: its
//! other events go nowhere, and `narrow` keeps IN_DELETE in the mask of a wd while a parent watch uses it.

use crate::filter::{fd, vnode, TOKEN_INOTIFY};
use crate::knote::{IdMap, Kind, Knote};
use crate::kqueue::State;
use crate::sys::{self, RawFd, Result};

/// The inotify events behind vnode.rs's opt-in notes (NOTE_OPEN, NOTE_CLOSE, NOTE_CLOSE_WRITE, NOTE_READ),
/// subscribed only while some knote on the inode asks; they are nothing to the other knotes on the watch.
pub(crate) const OPT_IN_EVENTS: u32 = libc::IN_OPEN | libc::IN_CLOSE_NOWRITE | libc::IN_CLOSE_WRITE | libc::IN_ACCESS;

/// What an internal parent watch needs: its entries removed (a subdirectory's rmdir among them).
pub(crate) const PARENT_EVENTS: u32 = libc::IN_DELETE;

/// An internal watch on the parent of watched directories (see the module doc).
pub(crate) struct ParentWatch {
    /// The parent's identity: a path to it through one of its subdirectories (`/proc/self/fd/N/..`) is used
    /// to set its mask only while it still reaches this inode.
    pub dev: u64,
    pub ino: u64,
    /// The directory knotes sharing it (each once; their `VnodeState::parent_wd` names it).
    pub slots: Vec<u32>,
}

/// A kqueue's inotify instance (fd -1 until a knote needs it) and the knotes using each watch.
pub(crate) struct Inotify {
    pub fd: RawFd,
    /// Watch descriptor -> the slots of the knotes sharing that watch.
    pub wds: IdMap<i32, Vec<u32>>,
    /// Watch descriptor -> the internal parent watch using it (a wd may be in both maps: the same inode
    /// watched by a user knote and as some watched directory's parent).
    pub parents: IdMap<i32, ParentWatch>,
}

impl Inotify {
    pub(crate) fn new() -> Inotify {
        Inotify { fd: -1, wds: IdMap::default(), parents: IdMap::default() }
    }

    /// Whether watch `wd` is used by a knote or a parent watch.
    fn in_use(&self, wd: i32) -> bool {
        self.wds.contains_key(&wd) || self.parents.contains_key(&wd)
    }
}

/// The kqueue's inotify instance, opened and registered in its epoll the first time.
pub(crate) fn ensure(st: &mut State) -> Result<RawFd> {
    if st.filters.inotify.fd >= 0 {
        return Ok(st.filters.inotify.fd);
    }
    let ifd = sys::inotify_init()?;
    if let Err(e) = sys::epoll_add(st.ep, ifd, sys::EPOLLIN, TOKEN_INOTIFY) {
        sys::close(ifd);
        return Err(e);
    }
    st.filters.inotify.fd = ifd;
    Ok(ifd)
}

/// Watches the file behind `fd` with `mask` (IN_MASK_ADD to widen a watch other knotes share); returns the
/// watch descriptor. The caller records its knote with `share`.
pub(crate) fn watch(st: &mut State, fd: RawFd, mask: u32) -> Result<i32> {
    let ifd = ensure(st)?;
    sys::inotify_watch_fd(ifd, fd, mask)
}

/// Knote `slot` uses watch `wd`.
pub(crate) fn share(st: &mut State, wd: i32, slot: u32) {
    st.filters.inotify.wds.entry(wd).or_default().push(slot);
}

/// Sets the mask of watch `wd`, through `fd`, which names its file; should `fd` name an inode no knote
/// watches (it was closed and reused), the watch just made on it is removed again.
pub(crate) fn rewatch(st: &mut State, fd: RawFd, wd: i32, mask: u32) -> Result<()> {
    rewatch_via(st, Via::File(fd), wd, mask)
}

/// How to reach the inode of a watch: the file open as a fd, or the parent of the directory open as a fd.
#[derive(Clone, Copy)]
enum Via {
    File(RawFd),
    Parent(RawFd),
}

/// Sets the mask of watch `wd` through `via`, which was just found to reach its inode. Should it reach
/// another inode by then (the fd was closed and reused, the directory renamed away), the watch just made
/// there is removed again, or, if that inode is watched too, its mask is widened back to what its own
/// users need.
fn rewatch_via(st: &mut State, via: Via, wd: i32, mask: u32) -> Result<()> {
    let ifd = ensure(st)?;
    let add = |mask| match via {
        Via::File(fd) => sys::inotify_watch_fd(ifd, fd, mask),
        Via::Parent(fd) => sys::inotify_watch_fd_parent(ifd, fd, mask),
    };
    let w = add(mask)?;
    if w != wd {
        if st.filters.inotify.in_use(w) {
            let _ = add(need_of(st, w) | libc::IN_MASK_ADD);
        } else {
            sys::inotify_rm_watch(ifd, w);
        }
    }
    Ok(())
}

/// The inotify events the users of watch `wd` need: vnode knotes `vnode::events_for` their notes, READ
/// knotes on a regular file or directory IN_MODIFY, a parent watch `PARENT_EVENTS`.
fn need_of(st: &State, wd: i32) -> u32 {
    let table = &st.filters.inotify;
    let mut need = if table.parents.contains_key(&wd) { PARENT_EVENTS } else { 0 };
    for &s in table.wds.get(&wd).map(Vec::as_slice).unwrap_or(&[]) {
        match st.knotes.get(s) {
            Some(Knote { sfflags, kind: Kind::Vnode(_), .. }) => need |= vnode::events_for(*sfflags),
            Some(Knote { kind: Kind::File(_), .. }) => need |= libc::IN_MODIFY,
            _ => {}
        }
    }
    need
}

/// A user of watch `wd` went, or stopped asking for the inotify events `gone`: if no user left on the watch
/// needs some of them, the kernel's mask is set to exactly what they need (inotify_add_watch without
/// IN_MASK_ADD replaces the mask of the inode's watch), through the fd of a knote that still names the
/// inode, else `departed` (the fd of the knote that went and the file it named), else the path to it
/// through a directory watched under it.
pub(crate) fn narrow(st: &mut State, wd: i32, gone: u32, departed: Option<(RawFd, u64, u64)>) {
    if wd < 0 || st.filters.inotify.fd < 0 || gone == 0 {
        return;
    }
    let need = need_of(st, wd);
    if need == 0 || gone & !need == 0 {
        return; // nothing left (the watch goes with its last user), or still needed
    }
    let names = |fd: RawFd, dev: u64, ino: u64| matches!(sys::fstat(fd), Ok(f) if (f.dev, f.ino) == (dev, ino));
    let table = &st.filters.inotify;
    let knote_fd = table.wds.get(&wd).into_iter().flatten().find_map(|&s| {
        let k = st.knotes.get(s)?;
        let (dev, ino) = match &k.kind {
            Kind::Vnode(v) => (v.dev, v.ino),
            Kind::File(fs) => (fs.dev, fs.ino),
            _ => return None,
        };
        let fd = RawFd::try_from(k.ident).ok()?;
        names(fd, dev, ino).then_some(Via::File(fd))
    });
    let via = knote_fd
        .or_else(|| departed.and_then(|(fd, dev, ino)| names(fd, dev, ino).then_some(Via::File(fd))))
        .or_else(|| {
            let p = table.parents.get(&wd)?;
            p.slots.iter().find_map(|&s| {
                let fd = RawFd::try_from(st.knotes.get(s)?.ident).ok()?;
                matches!(sys::fstat_parent(fd), Ok(f) if (f.dev, f.ino) == (p.dev, p.ino)).then_some(Via::Parent(fd))
            })
        });
    // (Nothing reaches the inode any more: its knotes go when that is noticed, and the watch with them.)
    let Some(via) = via else { return };
    let _ = rewatch_via(st, via, wd, need);
}

/// Drops a knote's share of inotify watch `wd`: the watch goes with its last user; while others remain, its
/// mask is narrowed to what they need (`narrow`: the knote asked for `gone`, and its fd, if still open,
/// names `departed`).
pub(crate) fn unwatch(st: &mut State, wd: i32, gone: u32, departed: Option<(RawFd, u64, u64)>) {
    if wd < 0 {
        return;
    }
    if let Some(v) = st.filters.inotify.wds.get_mut(&wd) {
        v.retain(|&s| st.knotes.get(s).is_some());
        if v.is_empty() {
            st.filters.inotify.wds.remove(&wd);
        }
    }
    if st.filters.inotify.in_use(wd) {
        narrow(st, wd, gone, departed);
    } else if st.filters.inotify.fd >= 0 {
        sys::inotify_rm_watch(st.filters.inotify.fd, wd);
    }
}

/// Watches the parent of the directory open as `fd` for removed entries (only IN_DELETE, added to whatever
/// mask a watch on that inode already has): its wd and identity. The caller shares it with `share_parent`.
pub(crate) fn watch_parent(st: &mut State, fd: RawFd) -> Result<(i32, u64, u64)> {
    let p = sys::fstat_parent(fd)?;
    let ifd = ensure(st)?;
    let wd = sys::inotify_watch_fd_parent(ifd, fd, PARENT_EVENTS | libc::IN_ONLYDIR | libc::IN_MASK_ADD)?;
    Ok((wd, p.dev, p.ino))
}

/// Directory knote `slot` uses parent watch `wd` (on the inode `dev`/`ino`), from `watch_parent`.
pub(crate) fn share_parent(st: &mut State, wd: i32, dev: u64, ino: u64, slot: u32) {
    let p = st.filters.inotify.parents.entry(wd).or_insert_with(|| ParentWatch { dev, ino, slots: Vec::new() });
    (p.dev, p.ino) = (dev, ino);
    p.slots.push(slot);
}

/// Drops the shares of parent watch `wd` of the knotes that are gone or no longer use it (their
/// `parent_wd` names another): the watch goes with the last (the inode's watch too, unless a knote
/// watches that inode itself, whose mask is then narrowed back to what it needs).
pub(crate) fn unwatch_parent(st: &mut State, wd: i32) {
    let Some(p) = st.filters.inotify.parents.get_mut(&wd) else { return };
    p.slots.retain(|&s| matches!(st.knotes.get(s), Some(Knote { kind: Kind::Vnode(v), .. }) if v.parent_wd == wd));
    if !p.slots.is_empty() {
        return;
    }
    st.filters.inotify.parents.remove(&wd);
    if st.filters.inotify.wds.contains_key(&wd) {
        narrow(st, wd, PARENT_EVENTS, None);
    } else if st.filters.inotify.fd >= 0 {
        sys::inotify_rm_watch(st.filters.inotify.fd, wd);
    }
}

/// The kqueue's inotify instance is readable: re-check the files it names.
///
/// Events are applied in the order inotify reports them, which is FreeBSD's order of notes across knotes
/// (each knote is queued when its first note comes), except where one operation reports its files in
/// another order than FreeBSD posts them: see `vnode::deleted_before`. The two halves of a rename are
/// paired by their cookie: a half with no partner on the same watch crossed directories
/// (`vnode::MOVED_ACROSS`).
pub(crate) fn ready(st: &mut State) {
    if st.filters.inotify.fd < 0 {
        return;
    }
    const ENTRY: u32 = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO;
    const REPORTED: u32 =
        libc::IN_ALL_EVENTS | libc::IN_ISDIR | libc::IN_UNMOUNT | libc::IN_Q_OVERFLOW | libc::IN_IGNORED;
    let mut buf = [0u8; 4096];
    // (wd, mask, cookie, the entry's name for a removed entry)
    let mut hits: Vec<(i32, u32, u32, Vec<u8>)> = Vec::new();
    let wds = &st.filters.inotify.wds;
    sys::inotify_drain(st.filters.inotify.fd, &mut buf, |wd, mask, cookie, name| {
        // About an entry of a watched directory: only adding, removing or renaming entries concerns the
        // directory itself (a file in it being written, chmod-ed, opened or read does not).
        let mask = if name.is_empty() { mask & REPORTED } else { mask & (ENTRY | libc::IN_ISDIR) };
        // On a watch only a parent watch uses, only a subdirectory removed concerns anyone.
        let parent_only = !name.is_empty() && mask & libc::IN_ISDIR == 0 && !wds.contains_key(&wd);
        if mask & !libc::IN_ISDIR != 0 && !parent_only {
            let name = if mask & libc::IN_DELETE != 0 { name.to_vec() } else { Vec::new() };
            hits.push((wd, mask, cookie, name));
        }
    });
    const MOVED: u32 = libc::IN_MOVED_FROM | libc::IN_MOVED_TO;
    if hits.iter().any(|h| h.1 & MOVED != 0) {
        // Which halves each (watch, cookie) has: a rename within a directory has both on its watch.
        let mut halves: std::collections::HashMap<(i32, u32), u32> = std::collections::HashMap::new();
        for h in hits.iter().filter(|h| h.1 & MOVED != 0) {
            *halves.entry((h.0, h.2)).or_default() |= h.1 & MOVED;
        }
        for h in hits.iter_mut().filter(|h| h.1 & MOVED != 0) {
            if halves.get(&(h.0, h.2)).copied().unwrap_or(0) != MOVED {
                h.1 |= vnode::MOVED_ACROSS;
            }
        }
    }
    let mut i = 0;
    while i < hits.len() {
        let swap = match hits.get(i + 1) {
            Some(next) => vnode::deleted_before(st, (hits[i].0, hits[i].1), (next.0, next.1, &next.3)),
            None => false,
        };
        if swap {
            hits.swap(i, i + 1);
            apply(st, &hits[i]);
            i += 1; // the moved entry is applied next, never moved again
        }
        apply(st, &hits[i]);
        i += 1;
    }
}

/// One gathered inotify event, (wd, mask, cookie, name) (wd -1: the queue overflowed).
fn apply(st: &mut State, hit: &(i32, u32, u32, Vec<u8>)) {
    let (wd, mask) = (hit.0, hit.1);
    if wd == -1 {
        // Queue overflow: look at every file and vnode knote.
        let all: Vec<u32> = st.filters.inotify.wds.values().flatten().copied().collect();
        for s in all {
            if let Some(Knote { kind: Kind::Vnode(_), .. }) = st.knotes.get(s) {
                vnode::inotify_event(st, s, libc::IN_Q_OVERFLOW);
            } else {
                fd::file_changed(st, s);
            }
        }
        return;
    }
    let slots = st.filters.inotify.wds.get(&wd).cloned().unwrap_or_default();
    if !slots.is_empty() {
        // What READ knotes are not woken by: an open, read or close some vnode knote asked for, and an entry
        // removed when only a parent watch asked for that.
        let mut not_read = OPT_IN_EVENTS | libc::IN_ISDIR;
        if st.filters.inotify.parents.contains_key(&wd)
            && !slots.iter().any(|&s| matches!(st.knotes.get(s), Some(Knote { kind: Kind::Vnode(_), .. })))
        {
            not_read |= PARENT_EVENTS;
        }
        for &s in &slots {
            if let Some(Knote { kind: Kind::Vnode(_), .. }) = st.knotes.get(s) {
                vnode::inotify_event(st, s, mask);
            } else if mask & !not_read != 0 {
                fd::file_changed(st, s);
            }
        }
    }
    if mask & libc::IN_DELETE != 0 && mask & libc::IN_ISDIR != 0 {
        // After the parent's own note (FreeBSD's vop_rmdir_post posts the parent's first).
        vnode::subdirectory_removed(st, wd, &hit.3);
    }
    if mask & libc::IN_IGNORED != 0 {
        st.filters.inotify.wds.remove(&wd);
        for &s in &slots {
            match st.knotes.get_mut(s).map(|k| &mut k.kind) {
                Some(Kind::File(fs)) => fs.wd = -1,
                Some(Kind::Vnode(v)) => v.wd = -1,
                _ => {}
            }
        }
        if let Some(p) = st.filters.inotify.parents.remove(&wd) {
            for s in p.slots {
                if let Some(Knote { kind: Kind::Vnode(v), .. }) = st.knotes.get_mut(s) {
                    if v.parent_wd == wd {
                        v.parent_wd = -1;
                    }
                }
            }
        }
    }
}

/// Its registration in the kqueue's epoll, for a rebuild.
pub(crate) fn registration(st: &State) -> Option<(RawFd, u32, u64)> {
    (st.filters.inotify.fd >= 0).then_some((st.filters.inotify.fd, sys::EPOLLIN, TOKEN_INOTIFY))
}

/// Teardown: closes the instance (its watches go with it).
pub(crate) fn close(st: &mut State) {
    st.filters.inotify.wds.clear();
    st.filters.inotify.parents.clear();
    if st.filters.inotify.fd >= 0 {
        sys::close(st.filters.inotify.fd);
        st.filters.inotify.fd = -1;
    }
}

//! The kqueue's one inotify instance, a room of its own because two filters share it: READ/WRITE knotes on
//! regular files and directories (fd.rs, which epoll refuses: IN_MODIFY re-checks them) and EVFILT_VNODE
//! knotes (vnode.rs). A watch is per inode, so knotes of both kinds on one file share one watch, its mask
//! the union of what they need (widened with IN_MASK_ADD, narrowed by vnode.rs's `resubscribe`). This
//! module opens the instance (on first use), keeps which knotes use each watch, and hands every event to
//! the knotes on its watch: vnode knotes get `vnode::inotify_event`, READ/WRITE knotes `fd::file_changed`.

use crate::filter::{fd, vnode, TOKEN_INOTIFY};
use crate::knote::{IdMap, Kind, Knote};
use crate::kqueue::State;
use crate::sys::{self, RawFd, Result};

/// The inotify events behind vnode.rs's opt-in notes (NOTE_OPEN, NOTE_CLOSE, NOTE_CLOSE_WRITE, NOTE_READ),
/// subscribed only while some knote on the inode asks; they are nothing to the other knotes on the watch.
pub(crate) const OPT_IN_EVENTS: u32 = libc::IN_OPEN | libc::IN_CLOSE_NOWRITE | libc::IN_CLOSE_WRITE | libc::IN_ACCESS;

/// A kqueue's inotify instance (fd -1 until a knote needs it) and the knotes using each watch.
pub(crate) struct Inotify {
    pub fd: RawFd,
    /// Watch descriptor -> the slots of the knotes sharing that watch.
    pub wds: IdMap<i32, Vec<u32>>,
}

impl Inotify {
    pub(crate) fn new() -> Inotify {
        Inotify { fd: -1, wds: IdMap::default() }
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
    let ifd = ensure(st)?;
    let w = sys::inotify_watch_fd(ifd, fd, mask)?;
    if w != wd && !st.filters.inotify.wds.contains_key(&w) {
        sys::inotify_rm_watch(ifd, w);
    }
    Ok(())
}

/// Drops a knote's share of inotify watch `wd`; the watch goes with the last knote using it.
pub(crate) fn unwatch(st: &mut State, wd: i32) {
    if wd < 0 {
        return;
    }
    if let Some(v) = st.filters.inotify.wds.get_mut(&wd) {
        v.retain(|&s| st.knotes.get(s).is_some());
        if v.is_empty() {
            st.filters.inotify.wds.remove(&wd);
            if st.filters.inotify.fd >= 0 {
                sys::inotify_rm_watch(st.filters.inotify.fd, wd);
            }
        }
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
    sys::inotify_drain(st.filters.inotify.fd, &mut buf, |wd, mask, cookie, name| {
        // About an entry of a watched directory: only adding, removing or renaming entries concerns the
        // directory itself (a file in it being written, chmod-ed, opened or read does not).
        let mask = if name.is_empty() { mask & REPORTED } else { mask & (ENTRY | libc::IN_ISDIR) };
        if mask & !libc::IN_ISDIR != 0 {
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
    let mut removed = vnode::RemovedDirs::default();
    let mut i = 0;
    while i < hits.len() {
        let swap = match hits.get(i + 1) {
            Some(next) => vnode::deleted_before(st, (hits[i].0, hits[i].1), (next.0, next.1, &next.3)),
            None => false,
        };
        if swap {
            hits.swap(i, i + 1);
            apply(st, &hits[i], &mut removed);
            i += 1; // the moved entry is applied next, never moved again
        }
        apply(st, &hits[i], &mut removed);
        i += 1;
    }
}

/// One gathered inotify event, (wd, mask, cookie, name) (wd -1: the queue overflowed).
fn apply(st: &mut State, hit: &(i32, u32, u32, Vec<u8>), removed: &mut vnode::RemovedDirs) {
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
    for &s in &slots {
        if let Some(Knote { kind: Kind::Vnode(_), .. }) = st.knotes.get(s) {
            vnode::inotify_event(st, s, mask);
        } else if mask & !(OPT_IN_EVENTS | libc::IN_ISDIR) != 0 {
            fd::file_changed(st, s); // (an open, read or close some vnode knote asked for is nothing to READ)
        }
    }
    if mask & libc::IN_DELETE != 0 && mask & libc::IN_ISDIR != 0 {
        vnode::subdirectory_removed(st, wd, &hit.3, removed);
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
    }
}

/// Its registration in the kqueue's epoll, for a rebuild.
pub(crate) fn registration(st: &State) -> Option<(RawFd, u32, u64)> {
    (st.filters.inotify.fd >= 0).then_some((st.filters.inotify.fd, sys::EPOLLIN, TOKEN_INOTIFY))
}

/// Teardown: closes the instance (its watches go with it).
pub(crate) fn close(st: &mut State) {
    st.filters.inotify.wds.clear();
    if st.filters.inotify.fd >= 0 {
        sys::close(st.filters.inotify.fd);
        st.filters.inotify.fd = -1;
    }
}

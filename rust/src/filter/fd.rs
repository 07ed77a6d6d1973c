//! EVFILT_READ and EVFILT_WRITE: one epoll registration per fd carries both filters' interest; regular
//! files and directories (which epoll refuses) are watched through the kqueue's inotify instance.

use crate::consts::*;
use crate::filter::inotify;
use crate::kevent::Kevent;
use crate::knote::{FdEntry, FdKind, FdReg, FileState, Kind, Knote};
use crate::kqueue::{token, State};
use crate::sys::{self, Errno, RawFd, Result, EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP};

const READ_BITS: u32 = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR;
const WRITE_BITS: u32 = EPOLLOUT | EPOLLHUP | EPOLLERR;

fn validate(ch: &Kevent) -> Result<()> {
    if ch.fflags & !NOTE_LOWAT != 0 {
        return Err(Errno(libc::EINVAL));
    }
    Ok(())
}

fn entry(st: &State, fd: RawFd) -> FdEntry {
    st.fdtab.get(fd as usize).copied().unwrap_or(FdEntry::EMPTY)
}

/// The table entry of `fd`, growing the table (geometrically: fds come in ascending runs) if needed.
pub(crate) fn entry_mut(st: &mut State, fd: RawFd) -> &mut FdEntry {
    let i = fd as usize;
    if st.fdtab.len() <= i {
        let len = (i + 1).max(st.fdtab.len() * 2).max(64);
        st.fdtab.resize(len, FdEntry::EMPTY);
    }
    &mut st.fdtab[i]
}

/// The epoll mask the fd's enabled knotes want: level-triggered unless every one has EV_CLEAR, or the
/// registration is parked.
fn wanted_mask(st: &State, e: &FdEntry) -> u32 {
    let mut m = 0;
    let mut all_clear = true;
    for (s, bits) in [(e.read, EPOLLIN | EPOLLRDHUP), (e.write, EPOLLOUT)] {
        if s == 0 {
            continue;
        }
        if let Some(k) = st.knotes.get(s - 1) {
            if k.enabled {
                m |= bits;
                all_clear &= k.flags & EV_CLEAR != 0;
            }
        }
    }
    if m != 0 && (all_clear || e.parked) {
        m |= EPOLLET;
    }
    m
}

/// Brings the fd's epoll registration in line with its knotes.
fn sync(st: &mut State, fd: RawFd) -> Result<()> {
    let e = entry(st, fd);
    if e.reg != FdReg::Epoll {
        return Ok(());
    }
    let want = wanted_mask(st, &e);
    if want == e.mask {
        return Ok(());
    }
    let tok = token(fd as u32, e.gen);
    let r = if e.mask == 0 {
        sys::epoll_add(st.ep, fd, want, tok)
    } else if want == 0 {
        sys::epoll_del(st.ep, fd)
    } else {
        sys::epoll_mod(st.ep, fd, want, tok)
    };
    match r {
        Ok(()) => {
            if want == 0 && !e.is_empty() && e.fp == 0 {
                // Every knote disabled: the registration that told this file from a new one under its
                // number is gone, so keep the file's identity instead (learnt on its first report, else now).
                entry_mut(st, fd).fp = sys::fstat(fd).map(|f| fingerprint(&f)).unwrap_or(STALE);
            }
            let e = entry_mut(st, fd);
            e.mask = want;
            e.synced = want != 0;
            Ok(())
        }
        Err(err) => {
            if want == 0 {
                // The DEL failed: the number is closed or names another file, so the knotes are stale.
                let e = entry_mut(st, fd);
                e.mask = 0;
                e.fp = STALE;
            }
            Err(err)
        }
    }
}

/// `FdEntry::fp` of a file that is known to be gone from its number.
const STALE: u64 = u64::MAX;

/// A file's identity, for `FdEntry::fp`: never 0 (not learnt) or `STALE`.
fn fingerprint(f: &sys::FileStat) -> u64 {
    (f.ino ^ f.dev.rotate_left(32)).clamp(1, STALE - 1)
}

/// Whether `fd` still names the file its knotes were made for: Ok(false) when the number names another
/// file now, EBADF when it is closed (the caller drops the knotes then). One syscall: a MOD of the epoll
/// registration to what it is (the registration is keyed by the file, so it fails for another one); a
/// regular file's identity from fstat; with no registration (every knote disabled) only whether the fd
/// is open can be known.
fn verify(st: &State, fd: RawFd) -> Result<bool> {
    let e = entry(st, fd);
    match e.reg {
        FdReg::Epoll if e.mask != 0 => match sys::epoll_mod(st.ep, fd, e.mask, token(fd as u32, e.gen)) {
            Ok(()) => Ok(true),
            // ENOENT: the fd names another file; EPERM: it names a file epoll refuses (so another file too).
            Err(Errno(libc::ENOENT)) | Err(Errno(libc::EPERM)) => Ok(false),
            Err(e) => Err(e),
        },
        FdReg::File => {
            let f = sys::fstat(fd)?;
            let same = [e.read, e.write].iter().filter(|&&s| s != 0).all(|&s| match st.knotes.get(s - 1) {
                Some(Knote { kind: Kind::File(fs), .. }) => !fs.regular || (fs.dev, fs.ino) == (f.dev, f.ino),
                _ => true,
            });
            Ok(same)
        }
        _ if e.fp == 0 => {
            if sys::fd_is_open(fd) {
                Ok(true)
            } else {
                Err(Errno(libc::EBADF))
            }
        }
        _ => {
            // No registration, but the file's identity is known: compare it (one fstat).
            let f = sys::fstat(fd)?;
            Ok(e.fp != STALE && fingerprint(&f) == e.fp)
        }
    }
}

/// The result of an EV_DELETE whose epoll DEL (or MOD) was the check that `fd` still names its file: when
/// it failed, the fd was closed or names another file now, and its knotes went with the old file.
fn checked_delete(st: &mut State, fd: RawFd, r: Result<()>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(Errno(libc::ENOENT)) | Err(Errno(libc::EPERM)) => {
            st.purge_fd(fd);
            Err(Errno(libc::ENOENT))
        }
        Err(err) => {
            st.purge_fd(fd);
            Err(err)
        }
    }
}

/// A READ or WRITE change. Changes to an existing knote first learn whether its fd still names the file it
/// was made for, with the syscall the change makes anyway where there is one (BSD removes knotes at
/// close(); kqrs finds out here): a closed fd gives EBADF, a reused number finds no knote (EV_ADD starts
/// clean).
pub(crate) fn change(st: &mut State, ch: &Kevent) -> Result<()> {
    if ch.ident > i32::MAX as usize {
        return Err(Errno(libc::EBADF));
    }
    let fd = ch.ident as RawFd;
    let Some(slot) = st.lookup(ch.ident, ch.filter) else {
        if ch.flags & EV_ADD == 0 {
            return Err(Errno(if sys::fd_is_open(fd) { libc::ENOENT } else { libc::EBADF }));
        }
        if ch.flags & !(EV_ADD | EV_CLEAR | EV_ONESHOT | EV_DISPATCH) == 0 && ch.fflags == 0 {
            if let Some(r) = add_fresh(st, ch) {
                return r;
            }
        }
        let slot = attach(st, ch)?;
        return st.finish_change(slot, ch);
    };
    let e = entry(st, fd);
    if ch.flags & EV_DELETE != 0 && e.reg == FdReg::Epoll && e.mask != 0 && (e.read == 0 || e.write == 0) {
        // The fd's only knote: one DEL, which is also the check that the fd still names its file.
        let r = sys::epoll_del(st.ep, fd);
        st.unlink_fd_knote(slot, fd);
        return checked_delete(st, fd, r);
    }
    if ch.flags & EV_DELETE != 0 && e.reg == FdReg::Epoll && e.mask != 0 {
        // The DEL (or the MOD to what the other filter wants) is the check.
        let r = st.delete(slot);
        return checked_delete(st, fd, r);
    }
    match verify(st, fd) {
        Ok(true) => {}
        Ok(false) => {
            // The number names another file now: the old knotes went with the old file.
            st.purge_fd(fd);
            if ch.flags & EV_ADD == 0 {
                return Err(Errno(libc::ENOENT));
            }
            let slot = attach(st, ch)?;
            return st.finish_change(slot, ch);
        }
        Err(err) => {
            st.purge_fd(fd);
            return Err(err);
        }
    }
    if ch.flags & EV_DELETE == 0 {
        // BSD: udata is replaced by every change; fflags/data by EV_ADD.
        if ch.flags & EV_ADD != 0 {
            modify(st, slot, ch)?;
        } else if let Some(k) = st.knotes.get_mut(slot) {
            k.udata = ch.udata;
        }
    }
    st.finish_change(slot, ch)
}

/// The common EV_ADD (enabled, no fflags) on an fd with no knote yet: one epoll_ctl ADD with the mask
/// known up front, then the knote. None when the fd needs the general path (a file epoll refuses, an fd
/// far past the table, the kqueue's own fd, or an fd the table has knotes for under the other filter).
#[inline]
fn add_fresh(st: &mut State, ch: &Kevent) -> Option<Result<()>> {
    let fd = ch.ident as RawFd;
    let i = ch.ident;
    let e = match st.fdtab.get(i) {
        Some(e) if !e.is_empty() => return None,
        Some(e) => *e,
        None if i < st.fdtab.len().max(1024) * 2 => FdEntry::EMPTY,
        None => return None,
    };
    if fd == st.kq {
        return None;
    }
    let bits = if ch.filter == EVFILT_READ { EPOLLIN | EPOLLRDHUP } else { EPOLLOUT };
    let mask = if ch.flags & EV_CLEAR != 0 { bits | EPOLLET } else { bits };
    let gen = e.gen.wrapping_add(1);
    match sys::epoll_add(st.ep, fd, mask, token(fd as u32, gen)) {
        Ok(()) => {}
        Err(Errno(libc::EPERM)) => return None, // a regular file, a directory: the general path
        Err(err) => return Some(Err(err)),
    }
    *entry_mut(st, fd) = FdEntry { gen, mask, synced: true, ..FdEntry::EMPTY };
    let kind = Kind::Fd { revents: 0, last_eof: false, last_data: -1 };
    st.insert(Knote::from_change(ch, ch.flags & EV_STICKY, 0, kind));
    Some(Ok(()))
}

fn attach(st: &mut State, ch: &Kevent) -> Result<u32> {
    validate(ch)?;
    let fd = ch.ident as RawFd;
    if fd == st.kq {
        return Err(Errno(libc::EINVAL)); // a kqueue cannot watch itself (FreeBSD: EINVAL)
    }
    // epoll_ctl validates the fd, but only after the table has grown to it, and not at all for a knote
    // added disabled: check first when either could bite (rarely: fd numbers are dense and reused).
    let far = fd as usize >= st.fdtab.len().max(1024) * 2;
    // Added disabled: no registration will tell this file from a later one under the number, its identity
    // will (the fstat is also the check that the fd is open).
    let fp = if ch.flags & EV_DISABLE != 0 {
        fingerprint(&sys::fstat(fd).map_err(|_| Errno(libc::EBADF))?)
    } else {
        if far && !sys::fd_is_open(fd) {
            return Err(Errno(libc::EBADF));
        }
        0
    };
    let e = entry(st, fd);
    let fresh = e.is_empty();
    if !fresh && e.reg == FdReg::Epoll && (fp != 0 || e.mask == 0) {
        // No MOD below will check that the other filter's knote still belongs to the file this number
        // names: a knote added disabled changes no epoll interest, and when the other knote is disabled
        // there is no registration to MOD (the ADD that follows succeeds for any file, which would leave the
        // old file's knote, and its cached kind and identity, on the new one). Check here.
        match verify(st, fd) {
            Ok(true) => {}
            Ok(false) => {
                st.purge_fd(fd);
                return attach(st, ch);
            }
            Err(err) => {
                st.purge_fd(fd);
                return Err(err);
            }
        }
    }
    let kind = match e.reg {
        FdReg::File if !fresh => Kind::File(Box::new(FileState { wd: -1, regular: false, dev: 0, ino: 0 })),
        _ => Kind::Fd { revents: 0, last_eof: false, last_data: -1 },
    };
    if fresh {
        // A new registration: a new generation, so events of an older one are recognised as stale.
        let gen = e.gen.wrapping_add(1);
        *entry_mut(st, fd) = FdEntry { gen, fp, ..FdEntry::EMPTY };
    }
    let slot = st.insert(Knote::from_change(ch, ch.flags & EV_STICKY, ch.fflags, kind));
    if !fresh && e.reg == FdReg::File {
        let r = match verify(st, fd) {
            Ok(true) => file_attach(st, slot, fd),
            Ok(false) => Err(Errno(libc::ESTALE)),
            Err(err) => Err(err),
        };
        return match r {
            Ok(()) => Ok(slot),
            Err(Errno(libc::ESTALE)) => {
                // The other filter's knote belonged to a file this number no longer names.
                unlink(st, slot);
                st.purge_fd(fd);
                attach(st, ch)
            }
            Err(err) => {
                unlink(st, slot);
                Err(err)
            }
        };
    }
    match sync(st, fd) {
        Ok(()) => Ok(slot),
        Err(Errno(libc::EPERM)) if fresh => {
            // epoll refuses regular files, directories and files without poll: watch them another way.
            match to_file_path(st, fd) {
                Ok(()) => Ok(slot),
                Err(err) => {
                    unlink(st, slot);
                    Err(err)
                }
            }
        }
        Err(Errno(libc::ENOENT)) | Err(Errno(libc::EPERM)) if !fresh => {
            // The MOD that adds this filter's interest found that the other filter's knote belonged to a
            // file this number no longer names: those knotes go, and this one starts a new registration.
            unlink(st, slot);
            st.purge_fd(fd);
            attach(st, ch)
        }
        Err(err) => {
            unlink(st, slot);
            Err(err)
        }
    }
}

/// Forgets a knote that never got attached.
fn unlink(st: &mut State, slot: u32) {
    if let Some(k) = st.knotes.remove(slot) {
        let e = entry_mut(st, k.ident as RawFd);
        if k.filter == EVFILT_READ {
            e.read = 0;
        } else {
            e.write = 0;
        }
        if e.is_empty() {
            e.reg = FdReg::Epoll;
            e.mask = 0;
            e.kind = FdKind::Unknown;
        }
    }
}

/// Moves every knote of `fd` to the file path (epoll refused the fd with EPERM).
fn to_file_path(st: &mut State, fd: RawFd) -> Result<()> {
    let e = entry_mut(st, fd);
    e.reg = FdReg::File;
    e.mask = 0;
    let (r, w) = (e.read, e.write);
    for s in [r, w] {
        if s != 0 {
            if let Some(k) = st.knotes.get_mut(s - 1) {
                k.kind = Kind::File(Box::new(FileState { wd: -1, regular: false, dev: 0, ino: 0 }));
            }
            file_attach(st, s - 1, fd)?;
        }
    }
    Ok(())
}

/// Regular files and directories get an inotify watch (IN_MODIFY re-checks them); other files epoll
/// refuses are always ready, as poll(2) reports them.
fn file_attach(st: &mut State, slot: u32, fd: RawFd) -> Result<()> {
    crate::source::ensure(st, false)?;
    let f = sys::fstat(fd)?;
    let regular = f.kind == libc::S_IFREG || f.kind == libc::S_IFDIR;
    let mut wd = -1;
    if regular {
        // IN_MASK_ADD: the watch is per inode and shared with EVFILT_VNODE knotes on the same file.
        wd = inotify::watch(st, fd, libc::IN_MODIFY | libc::IN_MASK_ADD)?;
        inotify::share(st, wd, slot);
    }
    if let Some(k) = st.knotes.get_mut(slot) {
        k.kind = Kind::File(Box::new(FileState { wd, regular, dev: f.dev, ino: f.ino }));
    }
    if let Ok(Some(_)) = file_check(st, slot) {
        st.enqueue(slot);
    }
    Ok(())
}

/// Whether a file knote may report now, with its data; Err when its fd is closed or names another file.
fn file_check(st: &State, slot: u32) -> std::result::Result<Option<isize>, ()> {
    let Some(k) = st.knotes.get(slot) else { return Ok(None) };
    let Kind::File(fs) = &k.kind else { return Ok(None) };
    let (regular, dev, ino) = (fs.regular, fs.dev, fs.ino);
    let fd = k.ident as RawFd;
    let f = sys::fstat(fd).map_err(|_| ())?;
    if regular && (f.dev, f.ino) != (dev, ino) {
        return Err(());
    }
    if k.filter == EVFILT_READ && regular {
        let off = sys::current_offset(fd).unwrap_or(0);
        let data = (f.size - off) as isize;
        let lowat = if k.sfflags & NOTE_LOWAT != 0 { k.sdata.max(1) } else { 1 };
        Ok(if data >= lowat { Some(data) } else { None })
    } else {
        Ok(Some(0))
    }
}

/// Re-EV_ADD: new fflags/data/udata. Pending state is kept (BSD does not reset a triggered filter).
pub(crate) fn modify(st: &mut State, slot: u32, ch: &Kevent) -> Result<()> {
    validate(ch)?;
    let Some(k) = st.knotes.get_mut(slot) else { return Err(Errno(libc::ENOENT)) };
    k.sfflags = ch.fflags;
    k.sdata = ch.data;
    k.udata = ch.udata;
    if let Kind::File(_) = k.kind {
        if let Ok(Some(_)) = file_check(st, slot) {
            st.enqueue(slot);
        }
    }
    Ok(())
}

pub(crate) fn detach(st: &mut State, k: &Knote) -> Result<()> {
    let fd = k.ident as RawFd;
    match &k.kind {
        Kind::File(fs) => {
            inotify::unwatch(st, fs.wd, libc::IN_MODIFY, Some((fd, fs.dev, fs.ino)));
            let e = entry_mut(st, fd);
            if e.is_empty() {
                let gen = e.gen;
                *e = FdEntry { gen, ..FdEntry::EMPTY };
            }
            Ok(())
        }
        _ => {
            let r = sync(st, fd);
            let e = entry_mut(st, fd);
            if e.is_empty() {
                let gen = e.gen;
                *e = FdEntry { gen, ..FdEntry::EMPTY };
            }
            r
        }
    }
}

pub(crate) fn enabled_changed(st: &mut State, slot: u32, on: bool) -> Result<()> {
    let Some(k) = st.knotes.get(slot) else { return Ok(()) };
    let fd = k.ident as RawFd;
    match k.kind {
        Kind::File(_) => {
            if on {
                if let Ok(Some(_)) = file_check(st, slot) {
                    st.enqueue(slot);
                }
            }
            Ok(())
        }
        _ => {
            let was_registered = entry(st, fd).mask != 0;
            entry_mut(st, fd).parked = false;
            match sync(st, fd) {
                Err(Errno(libc::EBADF)) | Err(Errno(libc::ENOENT)) if !on => Ok(()),
                // Added disabled, so epoll never had the chance to refuse it before: a regular file.
                Err(Errno(libc::EPERM)) if on && !was_registered => to_file_path(st, fd),
                r => r,
            }
        }
    }
}

/// What `fd` is, learnt on its first report and kept with its registration (one fstat per registration).
#[inline]
fn fd_kind(st: &mut State, fd: RawFd) -> Result<FdKind> {
    let kind = entry(st, fd).kind;
    if kind != FdKind::Unknown {
        return Ok(kind);
    }
    learn_fd_kind(st, fd)
}

/// `fd_kind` on an fd's first report.
#[cold]
#[inline(never)]
fn learn_fd_kind(st: &mut State, fd: RawFd) -> Result<FdKind> {
    let e = entry(st, fd);
    let f = sys::fstat(fd)?;
    if e.fp == 0 {
        entry_mut(st, fd).fp = fingerprint(&f);
    }
    let mut kind = match f.kind {
        libc::S_IFSOCK => FdKind::Socket,
        libc::S_IFIFO => FdKind::Pipe,
        libc::S_IFCHR => FdKind::Char,
        _ => FdKind::Other,
    };
    if kind == FdKind::Other {
        // Another kqueue of this process? (Its epoll refuses removing an fd it does not hold: ENOENT.)
        let nested = sys::dead_fd().ok().filter(|&d| sys::is_epoll(fd, d)).and_then(|_| crate::registry::find_file(fd));
        if let Some(k) = nested {
            st.filters.nested.retain(|&(f, _)| f != fd);
            st.filters.nested.push((fd, k.id()));
            kind = FdKind::Kqueue;
        }
    }
    entry_mut(st, fd).kind = kind;
    Ok(kind)
}

/// Bytes readable (or, for a listening socket, connections waiting); None where the fd has no such count
/// (eventfd, timerfd, epoll, ...: no syscall is spent on them), unless the process registered one for it
/// (a `kqrs.EventQueue`'s fd: its item count; see `counted.rs`).
/// Inlined: a socket's, pipe's or tty's FIONREAD is made in the caller's frame.
#[inline(always)]
fn read_data(st: &mut State, fd: RawFd, kind: FdKind) -> Result<Option<isize>> {
    match kind {
        FdKind::Listener | FdKind::Kqueue | FdKind::Other => read_data_other(st, fd, kind),
        _ => match sys::fionread(fd) {
            Ok(n) => Ok(Some(n as isize)),
            Err(e) => fionread_failed(st, fd, kind, e),
        },
    }
}

/// `read_data` for the kinds FIONREAD does not answer.
#[inline(never)]
fn read_data_other(st: &mut State, fd: RawFd, kind: FdKind) -> Result<Option<isize>> {
    match kind {
        FdKind::Kqueue => {
            // FreeBSD's filt_kqueue: the events the watched kqueue holds. Its lock is taken inside this
            // one's: nesting has no cycles (epoll refuses them), so neither does the lock order.
            let id = st.filters.nested.iter().find(|&&(f, _)| f == fd).map(|&(_, id)| id);
            Ok(id.and_then(crate::registry::by_id).map(|k| k.pending_count() as isize))
        }
        FdKind::Listener => Ok(listen_queue(fd)),
        _ => Ok(crate::counted::data(fd)),
    }
}

#[cold]
fn fionread_failed(st: &mut State, fd: RawFd, kind: FdKind, e: Errno) -> Result<Option<isize>> {
    match e {
        Errno(libc::EBADF) => Err(e),
        Errno(libc::EINVAL) if kind == FdKind::Socket => {
            // A listening socket: the accept queue's length, from now on without trying FIONREAD.
            entry_mut(st, fd).kind = FdKind::Listener;
            Ok(listen_queue(fd))
        }
        _ => Ok(None),
    }
}

fn listen_queue(fd: RawFd) -> Option<isize> {
    match sys::tcp_accept_queue(fd) {
        Ok(n) => Some(n as isize),
        Err(_) => sys::unix_accept_queue(fd).ok().map(|n| n as isize),
    }
}

/// Free space for writing; None where the fd has no such count.
fn write_data(fd: RawFd, kind: FdKind) -> Result<Option<isize>> {
    match kind {
        FdKind::Socket | FdKind::Listener => {
            let sndbuf = match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF) {
                Ok(v) => v as i64,
                Err(Errno(libc::EBADF)) => return Err(Errno(libc::EBADF)),
                Err(_) => return Ok(None),
            };
            let queued = sys::siocoutq(fd).unwrap_or(0);
            Ok(Some((sndbuf - queued).max(0) as isize))
        }
        FdKind::Pipe => {
            let size = sys::pipe_size(fd)?;
            let queued = sys::fionread(fd).unwrap_or(0);
            Ok(Some((size - queued).max(0) as isize))
        }
        _ => Ok(None),
    }
}

/// What knote `slot` on `fd` reports for epoll events `revents`; None when it may not report now.
/// (Inlined: its FIONREAD is the syscall of a ready socket's report, and each frame live across a
/// syscall costs a mispredicted return on kernel exit.)
#[inline(always)]
fn evaluate(st: &mut State, slot: u32, fd: RawFd, revents: u32) -> Result<Option<Kevent>> {
    let kind = fd_kind(st, fd)?;
    let Some(k) = st.knotes.get(slot) else { return Ok(None) };
    let is_read = k.filter == EVFILT_READ;
    let err = revents & EPOLLERR != 0;
    // A selector's kqueue: epoll's readiness as it is, no byte count (nor its syscalls).
    let counted = !(st.levels_only
        && k.flags & EV_CLEAR == 0
        && k.sfflags & NOTE_LOWAT == 0
        && matches!(kind, FdKind::Socket | FdKind::Listener | FdKind::Pipe | FdKind::Char));
    let (eof, data) = if is_read {
        (revents & (EPOLLRDHUP | EPOLLHUP) != 0, if counted { read_data(st, fd, kind)? } else { None })
    } else {
        let eof = match kind {
            FdKind::Pipe => revents & (EPOLLERR | EPOLLHUP) != 0,
            _ => revents & EPOLLHUP != 0,
        };
        (eof, if counted { write_data(fd, kind)? } else { None })
    };
    let kind = entry(st, fd).kind;
    let Some(k) = st.knotes.get(slot) else { return Ok(None) };
    let level_bit = if is_read { EPOLLIN } else { EPOLLOUT };
    let lowat = if k.sfflags & NOTE_LOWAT != 0 { k.sdata.max(1) } else { 1 };
    let ready = eof
        || err
        || match data {
            Some(d) if k.sfflags & NOTE_LOWAT != 0 => d >= lowat,
            Some(d) if is_read && kind != FdKind::Other => d >= 1,
            _ => revents & level_bit != 0,
        };
    if !ready {
        return Ok(None);
    }
    let d = data.unwrap_or(0);
    // FreeBSD reports the socket's error in `fflags` with EV_EOF. Linux's only way to read it,
    // getsockopt(SO_ERROR), also clears it, so only the C face (libkqueue does the same) reads it; the Python
    // face leaves it to the application (asyncio reads it itself). docs/design.md, "The C face".
    let mut fflags = 0;
    if st.libkqueue_flags && matches!(kind, FdKind::Socket | FdKind::Listener) && (eof || err) {
        if err {
            if let Ok(e) = sys::so_error(fd) {
                if e > 0 {
                    entry_mut(st, fd).so_error = e.min(u16::MAX as i32) as u16;
                }
            }
        }
        fflags = entry(st, fd).so_error as u32;
    }
    let Some(k) = st.knotes.get(slot) else { return Ok(None) };
    if k.flags & EV_CLEAR != 0 {
        let e = entry(st, fd);
        let edge = e.mask & EPOLLET != 0 && !e.parked;
        if let Kind::Fd { last_data, last_eof, .. } = k.kind {
            // Edge-triggered, every wake-up is a change of state, except the one epoll makes up after an
            // ADD/MOD of a ready fd, and a repeated EOF. Level-triggered (mixed with a level knote on the
            // same fd), only a change of what it would report is news.
            let same = (d, eof) == (last_data, last_eof);
            let suppress = if edge { same && (e.synced || (eof && last_eof)) } else { same };
            if suppress {
                return Ok(None);
            }
        }
    }
    let kev = State::event_of(k, if eof { EV_EOF } else { 0 }, fflags, d);
    if let Some(k) = st.knotes.get_mut(slot) {
        if let Kind::Fd { last_data, last_eof, .. } = &mut k.kind {
            *last_data = d;
            *last_eof = eof;
        }
    }
    Ok(Some(kev))
}

/// An epoll report for `fd`'s registration of generation `gen`. (Inlined into the harvest, for the same
/// reason as `evaluate`.)
#[inline(always)]
pub(crate) fn fd_ready(st: &mut State, fd: RawFd, gen: u32, revents: u32, out: &mut [Kevent], n: &mut usize) {
    let e = entry(st, fd);
    if e.gen != gen || e.mask == 0 || e.reg != FdReg::Epoll {
        // Either a report that raced with a change (harmless, once), or a registration we can no longer
        // remove because its fd was closed or reused while a dup() keeps the file open: that one comes
        // back at once, and then the inner epoll is rebuilt without it.
        st.stats.stale_events += 1;
        let tok = token(fd as u32, gen);
        if st.last_stale == tok {
            st.needs_rebuild = true;
        }
        st.last_stale = tok;
        return;
    }
    let mut any = false;
    for (s, bits) in [(e.read, READ_BITS), (e.write, WRITE_BITS)] {
        if s == 0 || revents & bits == 0 {
            continue;
        }
        let slot = s - 1;
        match st.knotes.get(slot) {
            Some(k) if k.enabled && !k.queued && k.seen == st.seq => {
                any = true; // reported earlier in this call
                continue;
            }
            Some(k) if k.enabled && !k.queued => {}
            _ => continue,
        }
        if *n >= out.len() {
            any = true;
            if e.mask & EPOLLET == 0 {
                continue; // level-triggered: epoll reports it again next time, with fresh state
            }
            // No room for an edge-triggered report: keep it for the next call, or it would be lost.
            if let Some(Knote { kind: Kind::Fd { revents: r, .. }, .. }) = st.knotes.get_mut(slot) {
                *r = revents;
            }
            st.enqueue(slot);
            continue;
        }
        match evaluate(st, slot, fd, revents) {
            Ok(Some(kev)) => {
                any = true;
                st.emit(slot, kev, out, n);
            }
            Ok(None) => {}
            Err(Errno(libc::EBADF)) => {
                // Closed behind our back while a dup() keeps the file open: the knotes go, as on BSD,
                // and so must the registration, which only a rebuild can reach now.
                st.purge_fd(fd);
                st.needs_rebuild = true;
                return;
            }
            Err(_) => {}
        }
    }
    let e = entry(st, fd);
    if e.gen != gen || e.mask == 0 {
        return;
    }
    entry_mut(st, fd).synced = false;
    if any && e.parked {
        // Something reported again: back to level-triggered (epoll re-queues it at once if still ready).
        entry_mut(st, fd).parked = false;
        let _ = sync(st, fd);
    } else if !any && e.mask & EPOLLET == 0 {
        // Nothing may report this level-triggered readiness (e.g. NOTE_LOWAT not met): wait for the next
        // change of state, edge-triggered, instead of spinning. It stays parked until a knote reports.
        entry_mut(st, fd).parked = true;
        st.stats.parks += 1;
        let _ = sync(st, fd);
    }
}

/// How many knotes a level-triggered epoll report for `fd` (registration `gen`) may make report: the count
/// `State::pending_count` adds for fds it leaves in epoll. (Edge-triggered ones it moves to the active
/// queue instead.)
pub(crate) fn level_ready(st: &State, fd: RawFd, gen: u32, revents: u32) -> usize {
    let e = entry(st, fd);
    if e.gen != gen || e.mask == 0 || e.mask & EPOLLET != 0 || e.reg != FdReg::Epoll {
        return 0;
    }
    [(e.read, READ_BITS), (e.write, WRITE_BITS)]
        .into_iter()
        .filter(|&(s, bits)| s != 0 && revents & bits != 0)
        .filter(|&(s, _)| st.knotes.get(s - 1).is_some_and(|k| k.enabled && !k.queued))
        .count()
}

/// A report kept on the active queue for lack of room.
pub(crate) fn deferred_ready(st: &mut State, slot: u32, revents: u32, out: &mut [Kevent], n: &mut usize) {
    let Some(k) = st.knotes.get(slot) else { return };
    let fd = k.ident as RawFd;
    if !matches!(verify(st, fd), Ok(true)) {
        // closed or reused since the report was deferred: it belonged to the old file
        st.purge_fd(fd);
        st.needs_rebuild = true;
        return;
    }
    match evaluate(st, slot, fd, revents) {
        Ok(Some(kev)) => {
            st.emit(slot, kev, out, n);
        }
        Ok(None) => {}
        Err(_) => {
            st.purge_fd(fd);
            st.needs_rebuild = true;
        }
    }
}

/// A regular file, directory or poll-less file knote taken off the active queue.
pub(crate) fn file_ready(st: &mut State, slot: u32, out: &mut [Kevent], n: &mut usize) {
    let Some(k) = st.knotes.get(slot) else { return };
    let fd = k.ident as RawFd;
    let data = match file_check(st, slot) {
        Ok(Some(d)) => d,
        Ok(None) => return, // nothing unread: IN_MODIFY puts it back on the queue when the file grows
        Err(()) => {
            st.purge_fd(fd); // closed, or the number names another file now: the knotes went with it
            return;
        }
    };
    let Some(k) = st.knotes.get(slot) else { return };
    let kev = State::event_of(k, 0, 0, data);
    let relevel = k.flags & (EV_CLEAR | EV_ONESHOT | EV_DISPATCH) == 0;
    if st.emit(slot, kev, out, n) && relevel {
        // Level-triggered: still ready until the data is read; looked at again on the next call.
        st.enqueue(slot);
    }
}

/// Something changed the regular file or directory of READ/WRITE knote `slot` (inotify.rs tells): its
/// readiness is looked at again when the active queue is drained.
pub(crate) fn file_changed(st: &mut State, slot: u32) {
    st.enqueue(slot);
}

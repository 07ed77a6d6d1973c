//! EVFILT_PROC and EVFILT_PROCDESC.
//!
//! Exits come from a pidfd per knote (any visible process, children or not; nothing is reaped, no signal
//! is touched, no thread runs). The wait status comes from waitid(P_PIDFD, WNOWAIT) for our children,
//! from PIDFD_GET_INFO for a process already reaped (Linux 6.15+), or from /proc/PID/stat for another
//! process's zombie. NOTE_FORK, NOTE_EXEC and NOTE_TRACK come from the kernel's process connector, one
//! netlink socket per kqueue that needs it, registered in the kqueue's epoll like everything else.

use crate::consts::*;
use crate::filter::TOKEN_CONNECTOR;
use crate::kevent::Kevent;
use crate::knote::{Kind, Knote, ProcState};
use crate::kqueue::{token, State, TAG_KNOTE};
use crate::sys::{self, Errno, ProcEvent, RawFd, Result};

/// fflags a change may ask for.
const PROC_NOTES: u32 = NOTE_EXIT | NOTE_FORK | NOTE_EXEC | NOTE_TRACK | NOTE_EXITSTATUS;
/// fflags that need the process connector.
const CONNECTOR_NOTES: u32 = NOTE_FORK | NOTE_EXEC | NOTE_TRACK;

fn validate(ch: &Kevent) -> Result<()> {
    let allowed = if ch.filter == EVFILT_PROCDESC { NOTE_EXIT | NOTE_EXITSTATUS } else { PROC_NOTES };
    if ch.fflags & !allowed != 0 {
        return Err(Errno(libc::EINVAL));
    }
    Ok(())
}

/// A kqueue's process-connector socket (fd -1 until a knote needs NOTE_FORK, NOTE_EXEC or NOTE_TRACK) and
/// its receive buffer, kept between wake-ups.
pub(crate) struct Connector {
    pub fd: RawFd,
    pub buf: Vec<u8>,
}

impl Connector {
    pub(crate) fn new() -> Connector {
        Connector { fd: -1, buf: Vec::new() }
    }
}

/// Opens the kqueue's process-connector socket if it has none yet.
fn ensure_connector(st: &mut State) -> Result<()> {
    if st.filters.connector.fd >= 0 {
        return Ok(());
    }
    let fd = sys::connector_open().map_err(|e| match e.0 {
        // No CONFIG_PROC_EVENTS / no connector: say "not supported" rather than a confusing errno.
        // ECONNREFUSED: no connector in this network namespace; ETIMEDOUT: the kernel ignores requests
        // from outside the initial pid/user namespaces.
        libc::EPROTONOSUPPORT | libc::ENOENT | libc::ETIMEDOUT | libc::ECONNREFUSED => Errno(libc::EOPNOTSUPP),
        _ => e,
    })?;
    if let Err(e) = sys::epoll_add(st.ep, fd, sys::EPOLLIN, TOKEN_CONNECTOR) {
        sys::close(fd);
        return Err(e);
    }
    st.filters.connector.fd = fd;
    Ok(())
}

fn open_pidfd(ch: &Kevent) -> Result<(RawFd, i32)> {
    if ch.filter == EVFILT_PROCDESC {
        let fd = i32::try_from(ch.ident).map_err(|_| Errno(libc::EBADF))?;
        let pid = sys::pidfd_pid(fd)?;
        // Our own duplicate: the caller's pidfd may also sit in this epoll under EVFILT_READ.
        let dup = sys::dup_cloexec(fd)?;
        return Ok((dup, pid));
    }
    let pid = i32::try_from(ch.ident).ok().filter(|&p| p > 0).ok_or(Errno(libc::ESRCH))?;
    match sys::pidfd_open(pid) {
        Ok(fd) => Ok((fd, pid)),
        // A thread id, not a process: EINVAL (ENOENT on Linux 6.18+).
        Err(Errno(libc::EINVAL)) | Err(Errno(libc::ENOENT)) => Err(Errno(libc::ESRCH)),
        Err(e) => Err(e),
    }
}

/// A pidfd's registration: one-shot, since a process exits once. The report that says it exited also
/// disarms it, so the pidfd kqrs opened itself is then closed without an EPOLL_CTL_DEL (the close removes
/// it; were the file still open in a forked child, it would stay behind, disarmed, until that closes).
const PIDFD_EVENTS: u32 = sys::EPOLLIN | sys::EPOLLONESHOT;

fn register(st: &mut State, slot: u32) -> Result<()> {
    let tok = TAG_KNOTE | token(slot, st.knotes.gen(slot));
    let epfd = st.ep;
    let Some(Knote { kind: Kind::Proc(p), .. }) = st.knotes.get_mut(slot) else {
        return Ok(());
    };
    if p.pidfd < 0 || p.registered {
        return Ok(());
    }
    sys::epoll_add(epfd, p.pidfd, PIDFD_EVENTS, tok)?;
    p.registered = true;
    Ok(())
}

fn unregister(st: &mut State, slot: u32) {
    let epfd = st.ep;
    if let Some(Knote { kind: Kind::Proc(p), .. }) = st.knotes.get_mut(slot) {
        if p.registered {
            let _ = sys::epoll_del(epfd, p.pidfd);
            p.registered = false;
        }
    }
}

pub(crate) fn attach(st: &mut State, ch: &Kevent) -> Result<u32> {
    validate(ch)?;
    crate::source::ensure(st, false)?;
    if ch.fflags & CONNECTOR_NOTES != 0 {
        ensure_connector(st)?;
    }
    let (pidfd, pid) = open_pidfd(ch)?;
    attach_with(st, ch, pidfd, pid)
}

fn attach_with(st: &mut State, ch: &Kevent, pidfd: RawFd, pid: i32) -> Result<u32> {
    let slot = st.insert(Knote::from_change(
        ch,
        (ch.flags & EV_STICKY) | EV_CLEAR,
        ch.fflags,
        Kind::Proc(Box::new(ProcState { pidfd, pid, pending: 0, data: 0, exit: None, registered: false })),
    ));
    if let Err(e) = register(st, slot) {
        st.knotes.remove(slot);
        st.index.remove(ch.ident, ch.filter, slot, &st.knotes);
        sys::close(pidfd);
        return Err(e);
    }
    Ok(slot)
}

/// Re-EV_ADD: new fflags (NOTE_FORK etc. may now need the connector), data and udata.
pub(crate) fn modify(st: &mut State, slot: u32, ch: &Kevent) -> Result<()> {
    validate(ch)?;
    if ch.fflags & CONNECTOR_NOTES != 0 {
        ensure_connector(st)?;
    }
    let Some(k) = st.knotes.get_mut(slot) else { return Err(Errno(libc::ENOENT)) };
    k.sfflags = ch.fflags;
    k.sdata = ch.data;
    k.udata = ch.udata;
    Ok(())
}

pub(crate) fn detach(st: &mut State, k: &Knote) {
    if let Kind::Proc(p) = &k.kind {
        let (pidfd, registered) = (p.pidfd, p.registered);
        if registered {
            let _ = sys::epoll_del(st.ep, pidfd);
        }
        if pidfd >= 0 {
            sys::close(pidfd);
        }
    }
}

pub(crate) fn enabled_changed(st: &mut State, slot: u32, on: bool) {
    if !on {
        return;
    }
    if let Some(Knote { kind: Kind::Proc(p), .. }) = st.knotes.get(slot) {
        if p.pending != 0 || p.exit.is_some() {
            st.enqueue(slot);
        }
    }
}

/// How a process exited: its wait status, or None when the kernel can no longer tell (it was reaped
/// and this kernel has no PIDFD_INFO_EXIT).
type ExitStatus = Option<i32>;

/// The wait status of the exited process behind `pidfd`; Err(()) when it has not exited yet, or is
/// another process's zombie whose status /proc does not give (then its reaping is waited for).
fn exit_status(pidfd: RawFd, pid: i32) -> std::result::Result<ExitStatus, ()> {
    match sys::pidfd_wait_status(pidfd) {
        Ok(Some(s)) => return Ok(Some(s)),
        Ok(None) => return Err(()), // our child, still running
        Err(_) => {}                // not our child, or already reaped
    }
    if let Ok(Some(s)) = sys::pidfd_exit_info(pidfd) {
        return Ok(Some(s));
    }
    // Another process's zombie: /proc has its status, and while it is not reaped its pid is not reused
    // (checked after the read).
    if let Some(s) = sys::proc_zombie_status(pid) {
        if sys::pidfd_alive(pidfd).is_ok() {
            return Ok(Some(s));
        }
    }
    if sys::pidfd_alive(pidfd).is_ok() {
        return Err(()); // still there (a zombie /proc would not describe): wait for the reaping (EPOLLHUP)
    }
    // Reaped: PIDFD_INFO_EXIT would have had it on Linux 6.15+.
    match sys::pidfd_exit_info(pidfd) {
        Ok(Some(s)) => Ok(Some(s)),
        _ => Ok(None),
    }
}

/// The pidfd is readable (the process exited) or hung up (it was reaped).
pub(crate) fn pidfd_ready(st: &mut State, slot: u32, revents: u32) {
    let Some(Knote { kind: Kind::Proc(p), filter, .. }) = st.knotes.get_mut(slot) else { return };
    if p.exit.is_some() {
        return;
    }
    let (pidfd, pid) = (p.pidfd, p.pid);
    match exit_status(pidfd, pid) {
        Ok(status) => {
            // This report disarmed the registration (one-shot). An EVFILT_PROC pidfd is kqrs's own file:
            // closing it removes the registration, so no EPOLL_CTL_DEL is spent (record_exit skips it once
            // `registered` is false). An EVFILT_PROCDESC duplicate shares the caller's file, which stays
            // open: record_exit deletes that one, or the same descriptor could not be watched again.
            if *filter == EVFILT_PROC {
                p.registered = false;
            }
            record_exit(st, slot, status);
        }
        Err(()) => {
            // Not gone yet (or someone else's zombie whose status we cannot read yet): listen again,
            // for the hang-up that comes with its reaping when it was readable already.
            let events = if revents & sys::EPOLLHUP == 0 { sys::EPOLLONESHOT } else { PIDFD_EVENTS };
            let tok = TAG_KNOTE | token(slot, st.knotes.gen(slot));
            let _ = sys::epoll_mod(st.ep, pidfd, events, tok);
        }
    }
}

fn record_exit(st: &mut State, slot: u32, status: ExitStatus) {
    unregister(st, slot);
    if let Some(Knote { kind: Kind::Proc(p), .. }) = st.knotes.get_mut(slot) {
        p.exit = Some(status);
    }
    st.enqueue(slot);
}

/// A process knote taken off the active queue: report what accumulated.
pub(crate) fn ready(st: &mut State, slot: u32, out: &mut [Kevent], n: &mut usize) {
    let Some(k) = st.knotes.get(slot) else { return };
    let Kind::Proc(p) = &k.kind else { return };
    let (pidfd, pending, data, exit, pid) = (p.pidfd, p.pending, p.data, p.exit, p.pid);
    if pending == 0 && exit.is_none() {
        return;
    }
    if k.filter == EVFILT_PROCDESC && !same_descriptor(k.ident as RawFd, pidfd, pid) {
        // The caller closed its process descriptor (or the number now names something else): as on
        // FreeBSD, closing the descriptor removed the knote.
        let _ = st.delete(slot);
        return;
    }
    let mut fflags = pending & (k.sfflags | NOTE_CHILD | NOTE_TRACKERR);
    let mut flags = 0;
    let mut d = data;
    let mut last = false;
    if pending & NOTE_CHILD != 0 && exit.is_some() {
        // A tracked child that is already gone: its first event still says NOTE_CHILD with the parent's
        // pid; the exit follows in the next call.
        let kev = State::event_of(k, 0, fflags, d);
        if st.emit(slot, kev, out, n) {
            if let Some(Knote { kind: Kind::Proc(p), .. }) = st.knotes.get_mut(slot) {
                p.pending = 0;
                p.data = 0;
            }
            st.enqueue(slot);
        }
        return;
    }
    if let Some(status) = exit {
        // The process is gone: the knote fires with EV_EOF, then is deleted.
        flags |= EV_EOF | EV_ONESHOT;
        last = true;
        if k.sfflags & NOTE_EXIT != 0 {
            fflags |= NOTE_EXIT;
            match status {
                Some(s) => d = s as isize,
                None => {
                    // Reaped by someone else before we looked, on a kernel without PIDFD_INFO_EXIT.
                    flags |= EV_ERROR;
                    d = libc::ECHILD as isize;
                }
            }
        }
    }
    if last && fflags == 0 {
        // Nothing it asked for happened (FreeBSD's EV_DROP): the knote goes without an event.
        let _ = st.delete(slot);
        return;
    }
    let kev = State::event_of(k, flags, fflags, d);
    if st.emit(slot, kev, out, n) {
        if let Some(Knote { kind: Kind::Proc(p), .. }) = st.knotes.get_mut(slot) {
            p.pending = 0;
            p.data = 0;
        }
    }
}

/// Whether the caller's descriptor `ident` is still the process descriptor our duplicate `dup` was made
/// of (kcmp; without kcmp, whether it is a pidfd of the same process, or of a reaped one).
fn same_descriptor(ident: RawFd, dup: RawFd, pid: i32) -> bool {
    match sys::same_file(ident, dup) {
        Ok(same) => same,
        Err(_) => matches!(sys::pidfd_pid(ident), Ok(p) if p == pid || p == -1),
    }
}

fn note(st: &mut State, pid: i32, bits: u32, data: Option<isize>) {
    let Some(slot) = st.index.get(pid as usize, EVFILT_PROC, &st.knotes) else { return };
    if let Some(Knote { kind: Kind::Proc(p), .. }) = st.knotes.get_mut(slot) {
        p.pending |= bits;
        if let Some(v) = data {
            p.data = v;
        }
    }
    st.enqueue(slot);
}

/// The connector socket is readable: apply the fork, exec and exit events it brings.
pub(crate) fn connector_ready(st: &mut State) {
    if st.filters.connector.fd < 0 {
        return;
    }
    // The connector wakes us for every fork, exec and exit on the system: reuse one receive buffer.
    let mut buf = std::mem::take(&mut st.filters.connector.buf);
    buf.resize(64 * 1024, 0);
    let r = sys::connector_read(st.filters.connector.fd, &mut buf);
    st.filters.connector.buf = buf;
    st.stats.forged_messages += r.ignored;
    for ev in r.events {
        match ev {
            ProcEvent::Fork { parent_tgid, child_pid, child_tgid } => {
                if child_pid != child_tgid {
                    continue; // a new thread, not a new process
                }
                fork_event(st, parent_tgid, child_tgid);
            }
            ProcEvent::Exec { tgid } => {
                let wants = st.index.get(tgid as usize, EVFILT_PROC, &st.knotes).and_then(|s| st.knotes.get(s));
                if wants.is_some_and(|k| k.sfflags & NOTE_EXEC != 0) {
                    note(st, tgid, NOTE_EXEC, None);
                }
            }
            ProcEvent::Exit { pid, tgid, status } => {
                if pid != tgid {
                    continue;
                }
                // Only a tracked child we could not open a pidfd for relies on this.
                let Some(slot) = st.index.get(tgid as usize, EVFILT_PROC, &st.knotes) else { continue };
                if let Some(Knote { kind: Kind::Proc(p), .. }) = st.knotes.get(slot) {
                    if p.pidfd != -1 || p.exit.is_some() {
                        continue;
                    }
                    record_exit(st, slot, Some(status));
                }
            }
        }
    }
    // After the events read with it: a child attached from one of them may be the one whose exit was lost.
    if r.overflowed {
        // Events were lost: every tracking knote learns that its tracking may have missed children.
        let tracking: Vec<i32> = st
            .knotes
            .iter_slots()
            .filter(|(_, k)| k.filter == EVFILT_PROC && k.sfflags & NOTE_TRACK != 0)
            .map(|(_, k)| k.ident as i32)
            .collect();
        for pid in tracking {
            note(st, pid, NOTE_TRACKERR, None);
        }
        // A tracked child that was gone before it got a pidfd learns its exit only from the connector;
        // if that message was lost, finish it now (status unknown) rather than leave it waiting forever.
        let orphans: Vec<u32> = st
            .knotes
            .iter_slots()
            .filter(|(_, k)| matches!(&k.kind, Kind::Proc(p) if p.pidfd == -1 && p.exit.is_none()))
            .map(|(slot, _)| slot)
            .collect();
        for slot in orphans {
            record_exit(st, slot, None);
        }
    }
}

fn fork_event(st: &mut State, parent: i32, child: i32) {
    let Some(pslot) = st.index.get(parent as usize, EVFILT_PROC, &st.knotes) else { return };
    let Some(pk) = st.knotes.get(pslot) else { return };
    let (sfflags, flags, udata, sdata) = (pk.sfflags, pk.flags, pk.udata, pk.sdata);
    if sfflags & NOTE_FORK != 0 {
        note(st, parent, NOTE_FORK, None);
    }
    if sfflags & NOTE_TRACK == 0 || st.index.get(child as usize, EVFILT_PROC, &st.knotes).is_some() {
        return;
    }
    // NOTE_TRACK: the child gets a knote of its own with the same fflags and udata.
    let ch = Kevent {
        ident: child as usize,
        filter: EVFILT_PROC,
        flags: EV_ADD | (flags & (EV_ONESHOT | EV_DISPATCH | EV_RECEIPT)),
        fflags: sfflags,
        data: sdata,
        udata,
    };
    // A child reaped before we got here has no pidfd; its exit still comes from the connector.
    let (pidfd, ok) = match sys::pidfd_open(child) {
        Ok(fd) => (fd, true),
        Err(Errno(libc::ESRCH)) => (-1, true),
        Err(_) => (-1, false),
    };
    if !ok {
        note(st, parent, NOTE_TRACKERR, None);
        return;
    }
    match attach_with(st, &ch, pidfd, child) {
        Ok(_) => note(st, child, NOTE_CHILD, Some(parent as isize)),
        Err(_) => note(st, parent, NOTE_TRACKERR, None),
    }
}

/// Every pidfd still watched (for a rebuild of the epoll).
pub(crate) fn registrations(st: &State) -> Vec<(RawFd, u32, u64)> {
    st.knotes
        .iter_slots()
        .filter_map(|(slot, k)| match &k.kind {
            Kind::Proc(p) if p.registered => {
                Some((p.pidfd, PIDFD_EVENTS, TAG_KNOTE | token(slot, st.knotes.gen(slot))))
            }
            _ => None,
        })
        .collect()
}

/// The connector socket's registration in the kqueue's epoll, for a rebuild.
pub(crate) fn connector_registration(st: &State) -> Option<(RawFd, u32, u64)> {
    (st.filters.connector.fd >= 0).then_some((st.filters.connector.fd, sys::EPOLLIN, TOKEN_CONNECTOR))
}

/// Teardown, for each knote: its pidfd is closed (the epoll it is registered in is being closed too).
pub(crate) fn close_knote(k: &Knote) {
    if let Kind::Proc(p) = &k.kind {
        if p.pidfd >= 0 {
            sys::close(p.pidfd);
        }
    }
}

/// Teardown: closes the connector socket.
pub(crate) fn close(st: &mut State) {
    if st.filters.connector.fd >= 0 {
        sys::close(st.filters.connector.fd);
        st.filters.connector.fd = -1;
    }
}

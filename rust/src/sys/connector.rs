//! The kernel's process connector (netlink): fork, exec and exit events of every process.

use super::{clock_ns, close, cvt, getpid, kernel_release, track, Errno, RawFd, Result};

const NETLINK_CONNECTOR: i32 = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
/// A process forked (`what` of a proc_event).
pub const PROC_EVENT_FORK: u32 = 0x1;
/// A process called exec.
pub const PROC_EVENT_EXEC: u32 = 0x2;
/// A process (or thread) exited.
pub const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// One event from the process connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcEvent {
    /// A fork: a new task (a thread when `child_pid != child_tgid`).
    Fork {
        /// The process that forked.
        parent_tgid: i32,
        /// The new task's id.
        child_pid: i32,
        /// The process the new task belongs to.
        child_tgid: i32,
    },
    /// An exec.
    Exec {
        /// The process that called exec.
        tgid: i32,
    },
    /// An exit.
    Exit {
        /// The task that exited.
        pid: i32,
        /// The process it belonged to.
        tgid: i32,
        /// Its wait status.
        status: i32,
    },
}

/// What a read of the connector socket saw.
#[derive(Debug, Default)]
pub struct ConnectorRead {
    /// The events, in the order the kernel sent them.
    pub events: Vec<ProcEvent>,
    /// Messages not sent by the kernel (port id != 0), or malformed: ignored.
    pub ignored: u64,
    /// The socket's receive buffer overflowed (ENOBUFS): events were lost.
    pub overflowed: bool,
}

fn cn_message(seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = 16 + 20 + payload.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes()); // nlmsg_type
    m.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
    m.extend_from_slice(&seq.to_ne_bytes()); // nlmsg_seq
    m.extend_from_slice(&getpid().to_ne_bytes()); // nlmsg_pid
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes()); // cn_msg.id.idx
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes()); // cn_msg.id.val
    m.extend_from_slice(&seq.to_ne_bytes()); // cn_msg.seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // cn_msg.ack
    m.extend_from_slice(&(payload.len() as u16).to_ne_bytes()); // cn_msg.len
    m.extend_from_slice(&0u16.to_ne_bytes()); // cn_msg.flags
    m.extend_from_slice(payload);
    m
}

/// Opens a process-connector socket subscribed to fork, exec and exit events (filtered by the kernel on
/// Linux 6.6+), and waits for the kernel's acknowledgement. EPERM without CAP_NET_ADMIN;
/// EPROTONOSUPPORT (or ENOENT) on kernels without CONFIG_PROC_EVENTS.
pub fn connector_open() -> Result<RawFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = track(cvt(unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, NETLINK_CONNECTOR)
    })?);
    match connector_subscribe(fd) {
        Ok(()) => Ok(fd),
        Err(e) => {
            close(fd);
            Err(e)
        }
    }
}

fn connector_subscribe(fd: RawFd) -> Result<()> {
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = CN_IDX_PROC;
    // SAFETY: sa is a valid sockaddr_nl of the given length.
    cvt(unsafe {
        libc::bind(fd, (&sa as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as u32)
    })?;
    // 1 = PROC_CN_MCAST_LISTEN, for every event type first: the kernel's acknowledgement is itself an
    // event (PROC_EVENT_NONE) that an event-type filter would drop.
    // A bigger receive buffer than the default (about 256 messages) before the flood starts: forced
    // past rmem_max where we may (CAP_NET_ADMIN), else as large as rmem_max allows.
    let size: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: size is a valid c_int for the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r == 0 {
            break;
        }
    }
    connector_send(fd, &1u32.to_ne_bytes())?;
    connector_wait_ack(fd)?;
    if kernel_release() >= (6, 6) {
        // Linux 6.6+ filters per socket: ask for fork, exec and exit only (no acknowledgement then).
        let mut payload = 1u32.to_ne_bytes().to_vec();
        payload.extend_from_slice(&(PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_EXIT).to_ne_bytes());
        connector_send(fd, &payload)?;
    }
    Ok(())
}

fn connector_send(fd: RawFd, payload: &[u8]) -> Result<()> {
    let msg = cn_message(1, payload);
    // SAFETY: sockaddr_nl is plain old data; all-zero (port 0, no groups: the kernel) is the address.
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: msg and `to` are valid for the given lengths.
    let r = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&to as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Waits (up to 2 s) for the kernel's PROC_EVENT_NONE acknowledgement; ETIMEDOUT when none comes (the
/// kernel ignores requests from outside the initial pid/user namespace).
fn connector_wait_ack(fd: RawFd) -> Result<()> {
    // The kernel acknowledges with a PROC_EVENT_NONE whose ack.err says whether it subscribed us.
    let deadline = clock_ns(false) + 2_000_000_000;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_sub(clock_ns(false));
        if left == 0 {
            return Err(Errno(libc::ETIMEDOUT));
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: pfd is one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, (left / 1_000_000).max(1) as i32) };
        let (n, from) = match recv_from(fd, &mut buf) {
            Ok(x) => x,
            Err(Errno(libc::EAGAIN)) => continue,
            Err(e) => return Err(e),
        };
        if from != 0 {
            continue;
        }
        let mut ack = None;
        parse_cn(&buf[..n], |what, data| {
            if what == 0 && data.len() >= 4 {
                ack = Some(u32::from_ne_bytes([data[0], data[1], data[2], data[3]]));
            }
        });
        match ack {
            Some(0) => return Ok(()),
            Some(err) => return Err(Errno(err as i32)),
            None => continue, // an event that raced the ack
        }
    }
}

/// recvfrom on a netlink socket: bytes read and the sender's port id.
fn recv_from(fd: RawFd, buf: &mut [u8]) -> Result<(usize, u32)> {
    // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
    let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
    // SAFETY: buf, from and len are valid for the call.
    let r = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut from as *mut libc::sockaddr_nl).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok((r as usize, from.nl_pid))
}

/// Walks the netlink messages in `buf`, calling `f(what, event_data)` for each process-connector event.
/// Returns false if anything was malformed.
fn parse_cn(buf: &[u8], mut f: impl FnMut(u32, &[u8])) -> bool {
    let rd =
        |b: &[u8], o: usize| -> Option<u32> { b.get(o..o + 4).map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]])) };
    let mut off = 0;
    let mut ok = true;
    while off + 16 <= buf.len() {
        let Some(len) = rd(buf, off).map(|l| l as usize) else { return false };
        if len < 16 || off + len > buf.len() {
            return false;
        }
        let msg = &buf[off + 16..off + len];
        // cn_msg: id.idx, id.val, seq, ack, len(u16), flags(u16), then proc_event.
        match (rd(msg, 0), rd(msg, 4)) {
            (Some(CN_IDX_PROC), Some(CN_VAL_PROC)) if msg.len() >= 20 + 16 => {
                let ev = &msg[20..];
                if let Some(what) = rd(ev, 0) {
                    f(what, &ev[16..]);
                }
            }
            _ => ok = false,
        }
        off += (len + 3) & !3;
    }
    // Bytes left that cannot hold a header: a truncated message.
    ok && off >= buf.len()
}

/// Reads everything waiting on a connector socket; only messages from the kernel (port id 0) count.
pub fn connector_read(fd: RawFd, buf: &mut [u8]) -> ConnectorRead {
    let mut out = ConnectorRead::default();
    loop {
        let (n, from) = match recv_from(fd, buf) {
            Ok(x) => x,
            Err(Errno(libc::ENOBUFS)) => {
                out.overflowed = true;
                continue;
            }
            Err(_) => return out,
        };
        connector_datagram(&buf[..n], from, &mut out);
    }
}

/// One datagram read from a connector socket, sent by port id `from`: its fork, exec and exit events are
/// added to `out`; a datagram not from the kernel, or malformed in any way (truncated, a length that runs
/// past its end, bytes left over, another connector's id), counts in `out.ignored` (what was well formed
/// before the fault is kept). Public for the engine's tests, which feed it hostile input.
#[doc(hidden)]
pub fn connector_datagram(buf: &[u8], from: u32, out: &mut ConnectorRead) {
    let rd =
        |b: &[u8], o: usize| -> Option<i32> { b.get(o..o + 4).map(|s| i32::from_ne_bytes([s[0], s[1], s[2], s[3]])) };
    if from != 0 {
        out.ignored += 1;
        return;
    }
    let mut short = false; // an event too short for the fields its kind has
    let ok = parse_cn(buf, |what, d| match what {
        PROC_EVENT_FORK => match (rd(d, 4), rd(d, 8), rd(d, 12)) {
            (Some(pt), Some(cp), Some(ct)) => {
                out.events.push(ProcEvent::Fork { parent_tgid: pt, child_pid: cp, child_tgid: ct });
            }
            _ => short = true,
        },
        PROC_EVENT_EXEC => match rd(d, 4) {
            Some(t) => out.events.push(ProcEvent::Exec { tgid: t }),
            None => short = true,
        },
        PROC_EVENT_EXIT => match (rd(d, 0), rd(d, 4), rd(d, 8)) {
            (Some(p), Some(t), Some(c)) => out.events.push(ProcEvent::Exit { pid: p, tgid: t, status: c }),
            _ => short = true,
        },
        _ => {} // an event kind not asked for (kernels before 6.6 send every kind)
    });
    let ok = ok && !short;
    if !ok {
        out.ignored += 1;
    }
}

//! The kernel's sock_diag (netlink): what a listening unix socket's accept queue holds.

use super::{close, cvt, fstat, track, Errno, RawFd, Result};

/// Connections waiting in a listening unix socket's accept queue, asked of the kernel's sock_diag
/// (UNIX_DIAG_RQLEN): unix sockets refuse FIONREAD and TCP_INFO while listening.
pub fn unix_accept_queue(fd: RawFd) -> Result<i64> {
    let ino = fstat(fd)?.ino as u32;
    // SAFETY: plain syscall with integer arguments.
    let nl = track(cvt(unsafe {
        libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG)
    })?);
    let r = unix_diag_rqlen(nl, ino);
    close(nl);
    r
}

fn unix_diag_rqlen(nl: RawFd, ino: u32) -> Result<i64> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_RQLEN: u32 = 0x10;
    const UNIX_DIAG_RQLEN: u16 = 4;
    const TCP_LISTEN: u32 = 10;
    // nlmsghdr (16) + unix_diag_req (24)
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    req[24..28].copy_from_slice(&ino.to_ne_bytes());
    req[28..32].copy_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
    req[32..40].copy_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE

    // SAFETY: req is a valid buffer of req.len() bytes; a null address sends to the kernel (connected).
    let r = unsafe { libc::send(nl, req.as_ptr().cast(), req.len(), 0) };
    if r < 0 {
        return Err(Errno::last());
    }
    let mut buf = [0u8; 512];
    // SAFETY: buf is a valid writable buffer of buf.len() bytes.
    let r = unsafe { libc::recv(nl, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if r < 16 {
        return Err(if r < 0 { Errno::last() } else { Errno(libc::EIO) });
    }
    let len = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(r as usize);
    let typ = u16::from_ne_bytes([buf[4], buf[5]]);
    if typ != SOCK_DIAG_BY_FAMILY {
        return Err(Errno(libc::ENOENT));
    }
    // nlmsghdr (16) + unix_diag_msg (16), then attributes.
    let mut off = 32;
    while off + 4 <= len {
        let alen = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
        let atype = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]);
        if alen < 4 {
            break;
        }
        if atype == UNIX_DIAG_RQLEN && alen >= 12 && off + 8 <= len {
            let q = u32::from_ne_bytes([buf[off + 4], buf[off + 5], buf[off + 6], buf[off + 7]]);
            return Ok(q as i64);
        }
        off += (alen + 3) & !3;
    }
    Err(Errno(libc::ENOENT))
}

//! EVFILT_LIBKQUEUE: libkqueue's filter for questions about the library itself. A change asks, and comes
//! back as an entry carrying the answer: NOTE_VERSION in `data` (0xMMmmpp00), NOTE_VERSION_STR as a pointer
//! to a static NUL-terminated string in `udata`. libkqueue's settings (NOTE_THREAD_SAFE, NOTE_FORK_CLEANUP,
//! NOTE_DEBUG*) have no meaning here and fail with EINVAL; NOTE_FILE_POLL_INTERVAL fails with ENOSYS, as in
//! libkqueue's Linux backend (regular files are re-armed by the kernel, not polled). No knote is made.

use crate::consts::*;
use crate::kevent::Kevent;
use crate::sys::{Errno, Result};

/// The name and version, NUL-terminated, for NOTE_VERSION_STR.
static VERSION_STR: &std::ffi::CStr = c"kqrs 0.1.0";

/// The library's version as 0xMMmmpp00.
fn version() -> isize {
    let mut it = env!("CARGO_PKG_VERSION").split('.').map(|p| p.parse::<isize>().unwrap_or(0));
    let (major, minor, patch) = (it.next().unwrap_or(0), it.next().unwrap_or(0), it.next().unwrap_or(0));
    ((major << 24) | (minor << 16) | (patch << 8)).max(1)
}

/// The entry answering an EVFILT_LIBKQUEUE change.
pub(crate) fn answer(ch: &Kevent) -> Result<Kevent> {
    if ch.flags & EV_ADD == 0 {
        return Err(Errno(libc::EINVAL));
    }
    let mut e = *ch;
    e.flags = EV_RECEIPT;
    match ch.fflags {
        NOTE_VERSION => e.data = version(),
        NOTE_VERSION_STR => e.udata = VERSION_STR.as_ptr() as usize,
        NOTE_FILE_POLL_INTERVAL => return Err(Errno(libc::ENOSYS)),
        _ => return Err(Errno(libc::EINVAL)),
    }
    Ok(e)
}

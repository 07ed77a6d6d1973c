//! The C entry points (feature `capi`): `kqueue`, `kevent` and `libkqueue_drain_pending_close`, exported
//! unmangled for C. They hold the only code of the C face that is not plain safe Rust: exported symbols,
//! and the blocking wait of kevent(), which runs in this frame with nothing live that has a destructor:
//! thread cancellation (pthread_cancel) acts there, in libc's epoll_wait, and unwinds this frame and the
//! caller's C frames only (a forced unwind through Rust frames with destructors is undefined behaviour).

use super::{cancel_disable, cancel_restore, EpollEvent};
use crate::capi::{self, CStep};
use crate::hazard;
use crate::Kevent;

/// `int kqueue(void)`.
// SAFETY: `no_mangle` exports the symbol C code links against (libkqueue's name and signature); no other
// item of kqrs has this name.
#[no_mangle]
pub extern "C" fn kqueue() -> libc::c_int {
    let old = cancel_disable();
    let r = capi::c_kqueue();
    cancel_restore(old);
    r
}

/// `int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist,
/// int nevents, const struct timespec *timeout)`: kevent(2), -1 with errno on failure.
// SAFETY: `no_mangle` exports libkqueue's kevent symbol (see `kqueue`). The pointers are only passed on
// as addresses, checked by the kernel before they are read or written (`user_kevents_in`).
#[no_mangle]
pub extern "C-unwind" fn kevent(
    kq: libc::c_int,
    changelist: *const Kevent,
    nchanges: libc::c_int,
    eventlist: *mut Kevent,
    nevents: libc::c_int,
    timeout: *const libc::timespec,
) -> libc::c_int {
    let state = cancel_disable();
    let mut step = capi::begin(kq, changelist as usize, nchanges, eventlist as usize, nevents, timeout as usize);
    loop {
        match step {
            CStep::Done(r) => {
                cancel_restore(state);
                return r;
            }
            CStep::Wait { ep, ms, id, wait } => {
                // Everything live in this frame is plain data: a cancel here unwinds cleanly. (The buffer is
                // set up only for a wait: most calls never get here.)
                let mut buf = [EpollEvent { events: 0, u64: 0 }; 64];
                let token = hazard::publish(id);
                cancel_restore(state);
                // SAFETY: `buf` is valid for writes of 64 events; epoll_wait is libc's (a cancellation
                // point).
                let n = unsafe { libc::epoll_wait(ep, buf.as_mut_ptr(), buf.len() as libc::c_int, ms) };
                let err = if n < 0 { super::Errno::last().0 } else { 0 };
                cancel_disable();
                if let Some(t) = token {
                    hazard::unpublish(t);
                }
                let got = &buf[..n.max(0) as usize];
                step = capi::resume(kq, id, got, err, eventlist as usize, nevents, wait);
            }
        }
    }
}

/// `void libkqueue_drain_pending_close(void)`: frees now every kqueue closed with close(2).
// SAFETY: `no_mangle` exports libkqueue's symbol of that name (see `kqueue`).
#[no_mangle]
pub extern "C" fn libkqueue_drain_pending_close() {
    let old = cancel_disable();
    capi::c_drain();
    cancel_restore(old);
}

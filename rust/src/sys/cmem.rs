//! Memory handed over by C callers (the C face, `capi.rs`), and the C face's errno and cancellation state.
//!
//! A bad pointer from C must come back as EFAULT, never crash kqrs. The kernel checks a region the first time
//! a thread hands it over (process_vm_readv/process_vm_writev on ourselves: they fail with EFAULT where a
//! plain copy would fault); regions a thread used before (an event loop passes the same buffers every call)
//! are copied directly. A region freed and unmapped after it was checked is the caller's use-after-free.

use super::{getpid, Errno, Result};

/// What a region handed over by a C caller is for: each use remembers its own last region, so that a caller
/// passing the same changelist, timeout and eventlist every call has them all checked once.
#[derive(Clone, Copy)]
enum Use {
    Changes = 0,
    Timeout = 1,
    Events = 2,
}

thread_local! {
    /// The last region this thread handed over for each `Use` that proved readable (changes, timeout) or
    /// writable (events): (address, length).
    static CHECKED: [std::cell::Cell<(usize, usize)>; 3] = const {
        [std::cell::Cell::new((0, 0)), std::cell::Cell::new((0, 0)), std::cell::Cell::new((0, 0))]
    };
}

/// Whether this thread's last region for `what` covers `len` bytes at `ptr` (every call asks: inlined, it
/// reads one pair).
#[inline(always)]
fn checked(ptr: usize, len: usize, what: Use) -> bool {
    CHECKED.with(|c| {
        let (p, l) = c[what as usize].get();
        p != 0 && ptr >= p && ptr.saturating_add(len) <= p + l
    })
}

/// Asks the kernel whether `len` bytes at `ptr` can be used as `what` needs (unless this thread's last
/// region for `what` covers them), and remembers them.
#[inline(always)]
fn check(ptr: usize, len: usize, what: Use) -> Result<()> {
    if checked(ptr, len, what) {
        return Ok(());
    }
    check_new(ptr, len, what)
}

/// A region this thread has not handed over for `what` before: asks the kernel.
#[cold]
#[inline(never)]
fn check_new(ptr: usize, len: usize, what: Use) -> Result<()> {
    probe_user(ptr, len, matches!(what, Use::Events))?;
    CHECKED.with(|c| c[what as usize].set((ptr, len)));
    Ok(())
}

/// Whether `len` bytes at `ptr` can be read (`write` false) or written, asked of the kernel.
fn probe_user(ptr: usize, len: usize, write: bool) -> Result<()> {
    if ptr == 0 {
        return Err(Errno(libc::EFAULT));
    }
    let mut scratch = [0u8; 256];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(scratch.len());
        let local = libc::iovec { iov_base: scratch.as_mut_ptr().cast(), iov_len: n };
        let remote = libc::iovec { iov_base: (ptr + off) as *mut libc::c_void, iov_len: n };
        // SAFETY: the local iovec names `scratch`, valid for n bytes; the remote one is only ever accessed
        // by the kernel, which checks it and fails with EFAULT instead of faulting.
        let r = unsafe {
            if write {
                // Reading a region does not prove it writable: write back what it holds.
                let got = libc::process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
                if got != n as isize {
                    got
                } else {
                    libc::process_vm_writev(getpid(), &local, 1, &remote, 1, 0)
                }
            } else {
                libc::process_vm_readv(getpid(), &local, 1, &remote, 1, 0)
            }
        };
        if r != n as isize {
            return Err(if r < 0 { Errno::last() } else { Errno(libc::EFAULT) });
        }
        off += n;
    }
    Ok(())
}

/// Copies `n` kevents from a C caller's array at `ptr` into `out` (EFAULT for memory it cannot read).
pub fn user_kevents_in(ptr: usize, n: usize, out: &mut Vec<crate::Kevent>) -> Result<()> {
    out.clear();
    if n == 0 {
        return Ok(());
    }
    let len = n.checked_mul(std::mem::size_of::<crate::Kevent>()).ok_or(Errno(libc::EINVAL))?;
    check(ptr, len, Use::Changes)?;
    out.reserve(n);
    // SAFETY: the kernel proved `len` bytes at `ptr` readable (now or in an earlier call on this thread);
    // Kevent is plain old data with no invalid bit patterns, copied byte-wise so alignment does not matter.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr as *const u8, out.as_mut_ptr().cast::<u8>(), len);
        out.set_len(n);
    }
    Ok(())
}

/// Copies `events` into a C caller's array at `ptr` of room for `cap` kevents (EFAULT for memory it
/// cannot write).
pub fn user_kevents_out(ptr: usize, cap: usize, events: &[crate::Kevent]) -> Result<()> {
    if cap == 0 {
        return Ok(());
    }
    // Only what is written is checked (a caller may announce more room than its array has, as FreeBSD
    // copies out only the events it returns).
    let n = events.len().min(cap);
    if n == 0 {
        return Ok(());
    }
    let room = n * std::mem::size_of::<crate::Kevent>();
    check(ptr, room, Use::Events)?;
    // SAFETY: the kernel proved `room` bytes at `ptr` writable; we write at most n <= cap kevents, byte-wise.
    unsafe {
        std::ptr::copy_nonoverlapping(
            events.as_ptr().cast::<u8>(),
            ptr as *mut u8,
            n * std::mem::size_of::<crate::Kevent>(),
        );
    }
    Ok(())
}

/// A C caller's `struct timespec` at `ptr` as (seconds, nanoseconds) (EFAULT for memory it cannot read).
pub fn user_timespec(ptr: usize) -> Result<(i64, i64)> {
    let len = std::mem::size_of::<libc::timespec>();
    check(ptr, len, Use::Timeout)?;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `len` bytes at `ptr` are readable (checked now or in an earlier call on this thread); copied
    // byte-wise into a local timespec.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr as *const u8, (&mut ts as *mut libc::timespec).cast::<u8>(), len);
    }
    Ok((ts.tv_sec, ts.tv_nsec))
}

/// Sets errno (the C face's way of reporting an error).
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location returns this thread's errno, valid for writes.
    unsafe { *libc::__errno_location() = e };
}

extern "C" {
    // glibc's (the libc crate does not declare it).
    fn pthread_setcancelstate(state: libc::c_int, oldstate: *mut libc::c_int) -> libc::c_int;
}
const PTHREAD_CANCEL_DISABLE: libc::c_int = 1;

/// The C face turns off thread cancellation while it works (a cancel must never unwind through the middle
/// of a change) and gives the caller's state back only around blocking waits (`c_entry::kevent`).
/// Returns the state before.
pub fn cancel_disable() -> i32 {
    let mut old = 0;
    // SAFETY: plain libc call with a valid out pointer.
    unsafe { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut old) };
    old
}

/// Restores a cancellation state saved by `cancel_disable`.
pub fn cancel_restore(old: i32) {
    let mut prev = 0;
    // SAFETY: plain libc call with a valid out pointer.
    unsafe { pthread_setcancelstate(old, &mut prev) };
}

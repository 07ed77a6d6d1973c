//! Constant values of libkqueue's `<sys/event.h>` on x86_64 Linux (FreeBSD's where libkqueue has none).

pub const EVFILT_READ: i16 = -1;
pub const EVFILT_WRITE: i16 = -2;
pub const EVFILT_AIO: i16 = -3;
pub const EVFILT_VNODE: i16 = -4;
pub const EVFILT_PROC: i16 = -5;
pub const EVFILT_SIGNAL: i16 = -6;
pub const EVFILT_TIMER: i16 = -7;
pub const EVFILT_NETDEV: i16 = -8;
pub const EVFILT_FS: i16 = -9;
pub const EVFILT_LIO: i16 = -10;
pub const EVFILT_USER: i16 = -11;
/// FreeBSD's process-descriptor filter (ident = a pidfd). libkqueue has none; FreeBSD's -8 is taken by
/// libkqueue's EVFILT_NETDEV, so kqrs uses -13.
pub const EVFILT_PROCDESC: i16 = -13;
/// libkqueue's own filter: NOTE_VERSION / NOTE_VERSION_STR ask the library's version (the change comes
/// back as an entry with `data` / `udata` set); kqrs answers them too, for code written for libkqueue.
pub const EVFILT_LIBKQUEUE: i16 = -12;
pub const EVFILT_SYSCOUNT: i16 = 12;

pub const EV_ADD: u16 = 0x0001;
pub const EV_DELETE: u16 = 0x0002;
pub const EV_ENABLE: u16 = 0x0004;
pub const EV_DISABLE: u16 = 0x0008;
pub const EV_ONESHOT: u16 = 0x0010;
pub const EV_CLEAR: u16 = 0x0020;
pub const EV_RECEIPT: u16 = 0x0040;
pub const EV_DISPATCH: u16 = 0x0080;
pub const EV_SYSFLAGS: u16 = 0xF000;
pub const EV_FLAG1: u16 = 0x2000;
pub const EV_ERROR: u16 = 0x4000;
pub const EV_EOF: u16 = 0x8000;

/// Flags a change may carry (EV_EOF/EV_ERROR/EV_FLAG1 are output flags and ignored on input, as on BSD).
pub const EV_INPUT_MASK: u16 =
    EV_ADD | EV_DELETE | EV_ENABLE | EV_DISABLE | EV_ONESHOT | EV_CLEAR | EV_RECEIPT | EV_DISPATCH | EV_SYSFLAGS;
/// Flags that stay with a knote once added and show in its events.
pub const EV_STICKY: u16 = EV_ONESHOT | EV_CLEAR | EV_RECEIPT | EV_DISPATCH;

// EVFILT_READ / EVFILT_WRITE
pub const NOTE_LOWAT: u32 = 0x0001;

// EVFILT_USER
pub const NOTE_FFNOP: u32 = 0x0000_0000;
pub const NOTE_FFAND: u32 = 0x4000_0000;
pub const NOTE_FFOR: u32 = 0x8000_0000;
pub const NOTE_FFCOPY: u32 = 0xc000_0000;
pub const NOTE_FFCTRLMASK: u32 = 0xc000_0000;
pub const NOTE_FFLAGSMASK: u32 = 0x00ff_ffff;
pub const NOTE_TRIGGER: u32 = 0x0100_0000;

// EVFILT_VNODE
pub const NOTE_DELETE: u32 = 0x0001;
pub const NOTE_WRITE: u32 = 0x0002;
pub const NOTE_EXTEND: u32 = 0x0004;
pub const NOTE_ATTRIB: u32 = 0x0008;
pub const NOTE_LINK: u32 = 0x0010;
pub const NOTE_RENAME: u32 = 0x0020;
pub const NOTE_REVOKE: u32 = 0x0040;
/// libkqueue's (and OpenBSD's): the file shrank. FreeBSD has no such note (its 0x0080 is NOTE_OPEN); kqrs
/// reports it together with FreeBSD's NOTE_ATTRIB for a truncation, never instead of it.
pub const NOTE_TRUNCATE: u32 = 0x0080;
// FreeBSD 11's opt-in notes about using the file (inotify's IN_CLOSE_NOWRITE, IN_CLOSE_WRITE, IN_ACCESS,
// IN_OPEN), reported only to a knote that asks for them. NOTE_CLOSE, NOTE_CLOSE_WRITE and NOTE_READ keep
// FreeBSD's values, which libkqueue leaves free; FreeBSD's NOTE_OPEN (0x0080) is libkqueue's NOTE_TRUNCATE,
// so kqrs's NOTE_OPEN takes the next free bit, 0x0800 (no vnode note of FreeBSD or libkqueue has it).
pub const NOTE_CLOSE: u32 = 0x0100;
pub const NOTE_CLOSE_WRITE: u32 = 0x0200;
pub const NOTE_READ: u32 = 0x0400;
pub const NOTE_OPEN: u32 = 0x0800;

// EVFILT_PROC
pub const NOTE_EXIT: u32 = 0x8000_0000;
pub const NOTE_FORK: u32 = 0x4000_0000;
pub const NOTE_EXEC: u32 = 0x2000_0000;
pub const NOTE_PCTRLMASK: u32 = 0xf000_0000;
pub const NOTE_PDATAMASK: u32 = 0x000f_ffff;
pub const NOTE_TRACK: u32 = 0x0000_0001;
pub const NOTE_TRACKERR: u32 = 0x0000_0002;
pub const NOTE_CHILD: u32 = 0x0000_0004;
/// macOS's flag asking for the exit status; accepted (kqrs reports the status either way).
pub const NOTE_EXITSTATUS: u32 = 0x0400_0000;

// EVFILT_NETDEV
pub const NOTE_LINKUP: u32 = 0x0001;
pub const NOTE_LINKDOWN: u32 = 0x0002;
pub const NOTE_LINKINV: u32 = 0x0004;

// EVFILT_LIBKQUEUE
pub const NOTE_VERSION: u32 = 0x0001;
pub const NOTE_VERSION_STR: u32 = 0x0002;
pub const NOTE_THREAD_SAFE: u32 = 0x0003;
pub const NOTE_FORK_CLEANUP: u32 = 0x0004;
pub const NOTE_DEBUG: u32 = 0x0005;
pub const NOTE_DEBUG_PREFIX: u32 = 0x0006;
pub const NOTE_DEBUG_FUNC: u32 = 0x0007;
pub const NOTE_FILE_POLL_INTERVAL: u32 = 0x0008;

// EVFILT_TIMER
pub const NOTE_SECONDS: u32 = 0x0001;
pub const NOTE_USECONDS: u32 = 0x0002;
pub const NOTE_NSECONDS: u32 = 0x0004;
pub const NOTE_ABSOLUTE: u32 = 0x0008;
pub const NOTE_TIMER_UNITS: u32 = NOTE_SECONDS | NOTE_USECONDS | NOTE_NSECONDS;

//! Constant values of libkqueue's `<sys/event.h>` on x86_64 Linux (FreeBSD's where libkqueue has none).

/// Readable: data to read, a connection to accept, or EOF (`data` = bytes or connections waiting).
pub const EVFILT_READ: i16 = -1;
/// Writable: room to write (`data` = bytes of room).
pub const EVFILT_WRITE: i16 = -2;
/// POSIX AIO completions (not built: EOPNOTSUPP).
pub const EVFILT_AIO: i16 = -3;
/// Changes to a file (`fflags` = the NOTE_* below that happened).
pub const EVFILT_VNODE: i16 = -4;
/// A process's exit, fork and exec (ident = a pid).
pub const EVFILT_PROC: i16 = -5;
/// Deliveries of a signal (ident = the signal number; `data` = deliveries since the last report).
pub const EVFILT_SIGNAL: i16 = -6;
/// A timer (ident = any id; `data` = its period, in the unit the NOTE_* below say).
pub const EVFILT_TIMER: i16 = -7;
/// libkqueue's network-interface filter (not built: EOPNOTSUPP).
pub const EVFILT_NETDEV: i16 = -8;
/// Filesystem events (not built: EOPNOTSUPP).
pub const EVFILT_FS: i16 = -9;
/// lio_listio completions (not built: EOPNOTSUPP).
pub const EVFILT_LIO: i16 = -10;
/// User events, triggered by a change with NOTE_TRIGGER (ident = any id).
pub const EVFILT_USER: i16 = -11;
/// FreeBSD's process-descriptor filter (ident = a pidfd). libkqueue has none; FreeBSD's -8 is taken by
/// libkqueue's EVFILT_NETDEV, so kqrs uses -13.
pub const EVFILT_PROCDESC: i16 = -13;
/// libkqueue's own filter: NOTE_VERSION / NOTE_VERSION_STR ask the library's version (the change comes
/// back as an entry with `data` / `udata` set); kqrs answers them too, for code written for libkqueue.
pub const EVFILT_LIBKQUEUE: i16 = -12;
/// How many filters libkqueue's header numbers.
pub const EVFILT_SYSCOUNT: i16 = 12;

/// Adds the knote, or modifies it if it exists.
pub const EV_ADD: u16 = 0x0001;
/// Removes the knote.
pub const EV_DELETE: u16 = 0x0002;
/// Lets the knote report again.
pub const EV_ENABLE: u16 = 0x0004;
/// Keeps the knote from reporting (it stays registered).
pub const EV_DISABLE: u16 = 0x0008;
/// Removes the knote after its first report.
pub const EV_ONESHOT: u16 = 0x0010;
/// Resets the knote's state after each report (edge-triggered).
pub const EV_CLEAR: u16 = 0x0020;
/// Answers the change with an EV_ERROR entry (data 0 on success) instead of collecting events.
pub const EV_RECEIPT: u16 = 0x0040;
/// Disables the knote after each report.
pub const EV_DISPATCH: u16 = 0x0080;
/// Flags reserved for the system.
pub const EV_SYSFLAGS: u16 = 0xF000;
/// A filter-specific flag (output only).
pub const EV_FLAG1: u16 = 0x2000;
/// On output: the entry answers a change, with the errno (or 0) in `data`.
pub const EV_ERROR: u16 = 0x4000;
/// On output: the filter's end-of-file condition (`fflags` may hold a socket error).
pub const EV_EOF: u16 = 0x8000;

/// Flags a change may carry (EV_EOF/EV_ERROR/EV_FLAG1 are output flags and ignored on input, as on BSD).
pub const EV_INPUT_MASK: u16 =
    EV_ADD | EV_DELETE | EV_ENABLE | EV_DISABLE | EV_ONESHOT | EV_CLEAR | EV_RECEIPT | EV_DISPATCH | EV_SYSFLAGS;
/// Flags that stay with a knote once added and show in its events.
pub const EV_STICKY: u16 = EV_ONESHOT | EV_CLEAR | EV_RECEIPT | EV_DISPATCH;

// EVFILT_READ / EVFILT_WRITE
/// EVFILT_READ / EVFILT_WRITE: report only once `data` reaches the change's `data` (a low-water mark).
pub const NOTE_LOWAT: u32 = 0x0001;

// EVFILT_USER
/// EVFILT_USER: leave the knote's fflags as they are.
pub const NOTE_FFNOP: u32 = 0x0000_0000;
/// EVFILT_USER: AND the change's fflags into the knote's.
pub const NOTE_FFAND: u32 = 0x4000_0000;
/// EVFILT_USER: OR the change's fflags into the knote's.
pub const NOTE_FFOR: u32 = 0x8000_0000;
/// EVFILT_USER: copy the change's fflags into the knote's.
pub const NOTE_FFCOPY: u32 = 0xc000_0000;
/// EVFILT_USER: the bits that say how fflags combine (NOTE_FFNOP/FFAND/FFOR/FFCOPY).
pub const NOTE_FFCTRLMASK: u32 = 0xc000_0000;
/// EVFILT_USER: the bits of fflags that are the user's.
pub const NOTE_FFLAGSMASK: u32 = 0x00ff_ffff;
/// EVFILT_USER: trigger the knote.
pub const NOTE_TRIGGER: u32 = 0x0100_0000;

// EVFILT_VNODE
/// EVFILT_VNODE: a name of the file was removed (unlink, renamed over).
pub const NOTE_DELETE: u32 = 0x0001;
/// EVFILT_VNODE: the file was written (a directory: an entry was added, removed or renamed).
pub const NOTE_WRITE: u32 = 0x0002;
/// EVFILT_VNODE: the file grew (a directory: an entry moved to or from another directory).
pub const NOTE_EXTEND: u32 = 0x0004;
/// EVFILT_VNODE: the file's attributes changed (mode, owner, times, size by truncation).
pub const NOTE_ATTRIB: u32 = 0x0008;
/// EVFILT_VNODE: the file's link count changed.
pub const NOTE_LINK: u32 = 0x0010;
/// EVFILT_VNODE: the file was renamed.
pub const NOTE_RENAME: u32 = 0x0020;
/// EVFILT_VNODE: access to the file was revoked (its filesystem was unmounted).
pub const NOTE_REVOKE: u32 = 0x0040;
/// libkqueue's (and OpenBSD's): the file shrank. FreeBSD has no such note (its 0x0080 is NOTE_OPEN); kqrs
/// reports it together with FreeBSD's NOTE_ATTRIB for a truncation, never instead of it.
pub const NOTE_TRUNCATE: u32 = 0x0080;
// FreeBSD 11's opt-in notes about using the file (inotify's IN_CLOSE_NOWRITE, IN_CLOSE_WRITE, IN_ACCESS,
// IN_OPEN), reported only to a knote that asks for them. NOTE_CLOSE, NOTE_CLOSE_WRITE and NOTE_READ keep
// FreeBSD's values, which libkqueue leaves free; FreeBSD's NOTE_OPEN (0x0080) is libkqueue's NOTE_TRUNCATE,
// so kqrs's NOTE_OPEN takes the next free bit, 0x0800 (no vnode note of FreeBSD or libkqueue has it).
/// EVFILT_VNODE (opt-in): the file, opened without write access, was closed.
pub const NOTE_CLOSE: u32 = 0x0100;
/// EVFILT_VNODE (opt-in): the file, opened for writing, was closed.
pub const NOTE_CLOSE_WRITE: u32 = 0x0200;
/// EVFILT_VNODE (opt-in): the file was read (a directory: listed).
pub const NOTE_READ: u32 = 0x0400;
/// EVFILT_VNODE (opt-in): the file was opened (kqrs's value, see above).
pub const NOTE_OPEN: u32 = 0x0800;

// EVFILT_PROC
/// EVFILT_PROC: the process exited (`data` = its wait status).
pub const NOTE_EXIT: u32 = 0x8000_0000;
/// EVFILT_PROC: the process forked.
pub const NOTE_FORK: u32 = 0x4000_0000;
/// EVFILT_PROC: the process called exec.
pub const NOTE_EXEC: u32 = 0x2000_0000;
/// EVFILT_PROC: the control bits of fflags.
pub const NOTE_PCTRLMASK: u32 = 0xf000_0000;
/// EVFILT_PROC: the data bits of fflags (a pid).
pub const NOTE_PDATAMASK: u32 = 0x000f_ffff;
/// EVFILT_PROC: follow the process's children (each gets a knote of its own).
pub const NOTE_TRACK: u32 = 0x0000_0001;
/// EVFILT_PROC: a child could not be followed.
pub const NOTE_TRACKERR: u32 = 0x0000_0002;
/// EVFILT_PROC: the first event of a followed child (`data` = the parent's pid).
pub const NOTE_CHILD: u32 = 0x0000_0004;
/// macOS's flag asking for the exit status; accepted (kqrs reports the status either way).
pub const NOTE_EXITSTATUS: u32 = 0x0400_0000;

// EVFILT_NETDEV
/// EVFILT_NETDEV: the link went up.
pub const NOTE_LINKUP: u32 = 0x0001;
/// EVFILT_NETDEV: the link went down.
pub const NOTE_LINKDOWN: u32 = 0x0002;
/// EVFILT_NETDEV: the link state is invalid.
pub const NOTE_LINKINV: u32 = 0x0004;

// EVFILT_LIBKQUEUE
/// EVFILT_LIBKQUEUE: asks the library's version as a number (in `data`).
pub const NOTE_VERSION: u32 = 0x0001;
/// EVFILT_LIBKQUEUE: asks the library's version as a string (in `udata`).
pub const NOTE_VERSION_STR: u32 = 0x0002;
/// EVFILT_LIBKQUEUE: libkqueue's thread-safety switch.
pub const NOTE_THREAD_SAFE: u32 = 0x0003;
/// EVFILT_LIBKQUEUE: libkqueue's fork-cleanup switch.
pub const NOTE_FORK_CLEANUP: u32 = 0x0004;
/// EVFILT_LIBKQUEUE: libkqueue's debug output switch.
pub const NOTE_DEBUG: u32 = 0x0005;
/// EVFILT_LIBKQUEUE: libkqueue's debug output prefix.
pub const NOTE_DEBUG_PREFIX: u32 = 0x0006;
/// EVFILT_LIBKQUEUE: libkqueue's debug output function.
pub const NOTE_DEBUG_FUNC: u32 = 0x0007;
/// EVFILT_LIBKQUEUE: libkqueue's polling interval for files.
pub const NOTE_FILE_POLL_INTERVAL: u32 = 0x0008;

// EVFILT_TIMER
/// EVFILT_TIMER: `data` is in seconds.
pub const NOTE_SECONDS: u32 = 0x0001;
/// EVFILT_TIMER: `data` is in microseconds.
pub const NOTE_USECONDS: u32 = 0x0002;
/// EVFILT_TIMER: `data` is in nanoseconds.
pub const NOTE_NSECONDS: u32 = 0x0004;
/// EVFILT_TIMER: `data` is an absolute time (CLOCK_REALTIME) to fire once at.
pub const NOTE_ABSOLUTE: u32 = 0x0008;
/// EVFILT_TIMER: the unit bits (milliseconds when none is set).
pub const NOTE_TIMER_UNITS: u32 = NOTE_SECONDS | NOTE_USECONDS | NOTE_NSECONDS;

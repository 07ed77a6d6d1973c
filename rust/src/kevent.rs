//! `struct kevent`, laid out as on x86_64 Linux (libkqueue).

/// One change or one event: `{ident, filter, flags, fflags, data, udata}`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Kevent {
    /// What the knote watches: an fd, a pid, a signal number, a timer or user id.
    pub ident: usize,
    /// The filter (EVFILT_*).
    pub filter: i16,
    /// EV_* flags: the action of a change, the state of an event.
    pub flags: u16,
    /// Filter-specific flags (NOTE_*).
    pub fflags: u32,
    /// Filter-specific data (a count, a size, a period, an errno with EV_ERROR).
    pub data: isize,
    /// The caller's value, given back with every event of the knote.
    pub udata: usize,
}

impl Kevent {
    /// A kevent with these fields (what C's EV_SET does).
    pub const fn new(ident: usize, filter: i16, flags: u16, fflags: u32, data: isize, udata: usize) -> Kevent {
        Kevent { ident, filter, flags, fflags, data, udata }
    }
}

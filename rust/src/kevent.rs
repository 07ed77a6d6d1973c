//! `struct kevent`, laid out as on x86_64 Linux (libkqueue).

/// One change or one event: `{ident, filter, flags, fflags, data, udata}`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Kevent {
    pub ident: usize,
    pub filter: i16,
    pub flags: u16,
    pub fflags: u32,
    pub data: isize,
    pub udata: usize,
}

impl Kevent {
    pub const fn new(ident: usize, filter: i16, flags: u16, fflags: u32, data: isize, udata: usize) -> Kevent {
        Kevent { ident, filter, flags, fflags, data, udata }
    }
}

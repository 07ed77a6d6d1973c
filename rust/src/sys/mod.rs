//! The syscall layer: every raw syscall and every `unsafe` block of kqrs lives here, behind safe
//! functions that return `Result<_, Errno>`. Each unsafe block says why it is sound. One file per kernel
//! facility; the rest of the crate names them all as `crate::sys::foo`.
#![allow(unsafe_code)]

#[cfg(feature = "capi")]
mod cmem;
mod connector;
mod dead;
mod direct;
mod epoll;
mod eventfd;
mod fdinfo;
#[cfg(feature = "python")]
mod futex;
mod host;
mod inotify;
mod membarrier;
mod mounts;
mod owned;
mod pidfd;
#[cfg(feature = "python")]
pub mod pycall;
mod signal;
mod sockdiag;
mod timerfd;
mod wipevec;

#[cfg(feature = "capi")]
pub mod c_entry;

#[cfg(feature = "capi")]
pub use cmem::*;
pub use connector::*;
pub use dead::*;
pub use epoll::*;
pub use eventfd::*;
pub use fdinfo::*;
#[cfg(feature = "python")]
pub use futex::*;
pub use host::*;
pub use inotify::*;
pub use membarrier::*;
pub use mounts::*;
pub use owned::*;
pub use pidfd::*;
pub use signal::*;
pub use sockdiag::*;
pub use timerfd::*;
pub use wipevec::*;

/// A positive errno value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

/// What every syscall wrapper returns.
pub type Result<T> = std::result::Result<T, Errno>;

fn cvt(r: libc::c_int) -> Result<libc::c_int> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

fn cvt_long(r: libc::c_long) -> Result<libc::c_long> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// An fd number.
pub type RawFd = i32;

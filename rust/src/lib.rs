//! kqrs: BSD kqueue for Linux.
//!
//! One [`Kqueue`] is one epoll instance (its fd is the kqueue's fd, so it is pollable and nestable) plus a
//! knote table. `kevent()` follows FreeBSD's semantics; see `docs/design.md` for the map of the engine.
#![deny(unsafe_code)]

pub mod consts;
mod counted;
mod filter;
mod forklock;
mod hazard;
mod kevent;
mod knote;
mod kqueue;
pub mod registry;
mod source;
pub(crate) mod sys;

#[cfg(feature = "python")]
mod python;

#[cfg(feature = "capi")]
mod capi;

pub use filter::is_supported;
pub use kevent::Kevent;
pub use kqueue::{fork_generation, Kqueue, PendingKick, Stats, Step, Wait};
pub use sys::Errno;

/// What the engine's own tests (rust/tests) reach below the public API: the process connector's parser,
/// fed hostile input there. Not an API.
#[doc(hidden)]
pub mod testing {
    pub use crate::sys::{
        connector_datagram, ConnectorRead, ProcEvent, PROC_EVENT_EXEC, PROC_EVENT_EXIT, PROC_EVENT_FORK,
    };
}

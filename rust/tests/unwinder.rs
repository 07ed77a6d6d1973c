//! build.rs links GCC's unwinder into kqrs's binaries (libgcc_eh.a) instead of loading libgcc_s.so.1 (see
//! `static_unwinder` there). This test binary is linked the same way: a panic must still unwind, and be
//! caught, as PyO3 needs to turn a panic into an exception and the C face to stop one at its boundary.

use std::panic::{catch_unwind, resume_unwind};

struct Dropped<'a>(&'a std::cell::Cell<bool>);

impl Drop for Dropped<'_> {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn a_panic_unwinds_through_frames_and_is_caught() {
    let dropped = std::cell::Cell::new(false);
    // resume_unwind: an unwinding panic without the panic hook's message.
    let r = catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = Dropped(&dropped);
        resume_unwind(Box::new(42u32));
    }));
    let payload = r.expect_err("the panic was caught");
    assert_eq!(payload.downcast_ref::<u32>(), Some(&42));
    assert!(dropped.get(), "the frame's destructor ran while unwinding");
}

/// build.rs says (cfg `kqrs_static_unwinder`) whether it linked the unwinder in; libgcc_s is mapped
/// exactly when it did not.
#[test]
fn this_binary_loads_libgcc_s_only_when_build_rs_did_not_link_the_unwinder_in() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    assert!(!maps.is_empty(), "/proc/self/maps is readable");
    let static_unwinder = cfg!(kqrs_static_unwinder);
    assert_eq!(maps.contains("libgcc_s"), !static_unwinder, "static unwinder: {static_unwinder}; maps:\n{maps}");
}

//! The process-wide memory barrier (see hazard.rs).

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// Registers this process for `membarrier()`; false where the kernel has no such barrier (before 4.14,
/// or filtered by seccomp).
pub fn membarrier_register() -> bool {
    // SAFETY: plain syscall with integer arguments.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 }
}

/// Makes every thread of this process that is running now execute a full memory barrier.
pub fn membarrier() {
    // SAFETY: plain syscall with integer arguments (registered by `membarrier_register`).
    unsafe {
        libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    }
}

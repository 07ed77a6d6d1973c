//! `WipeVec`: a growable array whose memory a fork child does not copy.
//!
//! fork() copies the page tables of every private anonymous page the parent has touched, and the child's
//! exit tears them down again: about 20-40 µs per MiB here. A kqueue's knote slab and index are the bulk of
//! what kqrs holds (64 bytes a knote), yet a fork child never reads them: its copy of every kqueue is closed
//! and leaked untouched (`Kqueue::drop`, the registries). So once an array outgrows `MAPPED_MIN` bytes it
//! moves to a mapping of its own marked `MADV_WIPEONFORK`: the child gets that range zero-filled, at no cost
//! per page. (A zero-filled range rather than none at all, as `MADV_DONTFORK` would leave: a stray read in
//! the child sees zeros instead of faulting.) Kernels without it (before 4.14) keep a plain mapping, which
//! forks as the heap does. Small arrays stay on the heap: a mapping per kqueue would cost a page and a VMA
//! for every small queue.
//!
//! The child must never read, write or drop a `WipeVec`'s elements it inherited: their bytes are zero there.

use std::alloc::{self, Layout};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// Arrays of at least this many bytes live in a mapping of their own.
const MAPPED_MIN: usize = 8192;

/// Mapping sizes are rounded up to this (the kernel rounds further on larger pages).
const PAGE: usize = 4096;

/// Whether this kernel honours MADV_WIPEONFORK (asked once; for `doctor` and tests).
#[cfg(any(test, feature = "python"))]
pub fn wipeonfork_supported() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 yes, 2 no
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let Some(p) = map(PAGE) else { return false };
            let ok = mark(p, PAGE);
            unmap(p, PAGE);
            STATE.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
    }
}

/// A fresh private anonymous read-write mapping of `len` bytes, marked MADV_WIPEONFORK where the kernel
/// can; None when the kernel refuses.
fn map(len: usize) -> Option<NonNull<u8>> {
    let p = map_plain(len)?;
    mark(p, len);
    Some(p)
}

/// A fresh private anonymous read-write mapping of `len` bytes, unmarked; None when the kernel refuses.
fn map_plain(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing: it aliases nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(p.cast())
}

/// Marks a mapping made by `map` MADV_WIPEONFORK; whether the kernel took it.
fn mark(p: NonNull<u8>, len: usize) -> bool {
    // SAFETY: advice on a range `map` made; it changes what a fork child sees, not this process.
    unsafe { libc::madvise(p.as_ptr().cast(), len, libc::MADV_WIPEONFORK) == 0 }
}

/// Grows a mapping made by `map` from `old` to `len` bytes, moving it if it must (contents kept); None
/// when the kernel refuses (the old mapping is then untouched).
fn remap(p: NonNull<u8>, old: usize, len: usize) -> Option<NonNull<u8>> {
    // SAFETY: remaps a range `map` made; MREMAP_MAYMOVE lets the kernel pick the new address, and the
    // caller re-derives every pointer from the result.
    let q = unsafe { libc::mremap(p.as_ptr().cast(), old, len, libc::MREMAP_MAYMOVE) };
    if q == libc::MAP_FAILED {
        return None;
    }
    let q = NonNull::new(q.cast())?;
    mark(q, len); // the flag moves with the range; marking again also covers the grown tail
    Some(q)
}

/// Mappings given back by dropped arrays, kept for the next array that needs one: a kqueue made after
/// another one closed (a fresh selector or queue per task) then reuses pages that are already mapped,
/// instead of taking a page fault (and the page's zeroing) for each of them, as a fresh mapping would. Kept
/// pages are given to the kernel with MADV_FREE: it reclaims them only under memory pressure, and a reused
/// page it did not reclaim is written to without a fault. At most `SPARES` mappings and `SPARE_BYTES` bytes.
/// Only ever try-locked: an array never waits for it, and a fork child whose parent held it (its holder is
/// gone) just does without. Each entry is (address, length); length 0: empty.
static SPARE: std::sync::Mutex<[(usize, usize); SPARES]> = std::sync::Mutex::new([(0, 0); SPARES]);

const SPARES: usize = 4;
const SPARE_BYTES: usize = 16 << 20;

/// The smallest kept mapping of at least `len` bytes, with its length.
fn take_spare(len: usize) -> Option<(NonNull<u8>, usize)> {
    let mut s = SPARE.try_lock().ok()?;
    let (i, &(addr, have)) = s.iter().enumerate().filter(|(_, &(_, l))| l >= len).min_by_key(|(_, &(_, l))| l)?;
    s[i] = (0, 0);
    Some((NonNull::new(addr as *mut u8)?, have))
}

/// Keeps a mapping made by `map` for reuse (its pages freed lazily); false when there is no room for it.
fn keep_spare(p: NonNull<u8>, len: usize) -> bool {
    let Ok(mut s) = SPARE.try_lock() else { return false };
    let kept: usize = s.iter().map(|&(_, l)| l).sum();
    let Some(slot) = s.iter_mut().find(|m| m.1 == 0) else { return false };
    if kept + len > SPARE_BYTES {
        return false;
    }
    // SAFETY: advice on a range `map` made that nothing refers into any more: its contents may be dropped.
    if unsafe { libc::madvise(p.as_ptr().cast(), len, libc::MADV_FREE) } != 0 {
        return false;
    }
    *slot = (p.as_ptr() as usize, len);
    true
}

/// A mapping for an array of `len` bytes (at least): a kept one if one is large enough, else a fresh one.
/// Returns it with its length. Its contents are unspecified (an array writes before it reads).
fn map_for(len: usize) -> Option<(NonNull<u8>, usize)> {
    take_spare(len).or_else(|| map(len).map(|p| (p, len)))
}

/// Gives a mapping made by `map_for` back: kept for reuse, or unmapped.
fn release(p: NonNull<u8>, len: usize) {
    if !keep_spare(p, len) {
        unmap(p, len);
    }
}

/// Unmaps a mapping made by `map`.
fn unmap(p: NonNull<u8>, len: usize) {
    // SAFETY: unmaps a range `map` made, which nothing refers into any more.
    unsafe { libc::munmap(p.as_ptr().cast(), len) };
}

/// One zeroed page of its own that a fork child gets zero-filled (MADV_WIPEONFORK) for the fork epoch
/// (host.rs); None where the kernel cannot mark it so (nothing stays mapped then).
pub fn map_wiped_page() -> Option<NonNull<u8>> {
    let p = map_plain(PAGE)?;
    if mark(p, PAGE) {
        Some(p)
    } else {
        unmap(p, PAGE);
        None
    }
}

/// Gives back a page `map_wiped_page` made that nothing refers to.
pub fn unmap_wiped_page(p: NonNull<u8>) {
    unmap(p, PAGE);
}

/// The allocation failure the global allocator reports (it aborts): a size that overflows, or a mapping
/// the kernel refused.
#[cold]
fn too_big<T>() -> ! {
    alloc::handle_alloc_error(Layout::new::<T>())
}

fn array_layout<T>(cap: usize) -> Layout {
    Layout::array::<T>(cap).unwrap_or_else(|_| too_big::<T>())
}

/// A `Vec`-like array (push, resize, slice access) that moves to a fork-wiped mapping when large.
pub struct WipeVec<T> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
    /// Set when the storage is a mapping: its length in bytes (at least cap * size_of::<T>(), rounded up to
    /// pages; more when a larger kept mapping was reused, and then cap covers it).
    map_len: usize,
    _owns: PhantomData<T>,
}

// SAFETY: a WipeVec owns its elements as a Vec does; sending or sharing it is sending or sharing them.
unsafe impl<T: Send> Send for WipeVec<T> {}
// SAFETY: as above: &WipeVec only hands out &T.
unsafe impl<T: Sync> Sync for WipeVec<T> {}

impl<T> Default for WipeVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> WipeVec<T> {
    const SIZE: usize = std::mem::size_of::<T>();

    /// An empty array (no allocation).
    pub const fn new() -> Self {
        assert!(std::mem::size_of::<T>() > 0, "WipeVec holds sized elements");
        WipeVec { ptr: NonNull::dangling(), len: 0, cap: 0, map_len: 0, _owns: PhantomData }
    }

    /// Whether the storage is a mapping a fork child gets zero-filled.
    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        self.map_len != 0
    }

    /// Makes room for `more` further elements.
    pub fn reserve(&mut self, more: usize) {
        let need = self.len.checked_add(more).unwrap_or_else(|| too_big::<T>());
        if need > self.cap {
            self.grow_to(need.max(self.cap * 2).max(4));
        }
    }

    #[inline]
    pub fn push(&mut self, v: T) {
        if self.len == self.cap {
            self.reserve(1);
        }
        // SAFETY: len < cap after reserve: the slot is inside the allocation and holds no live value.
        unsafe { self.ptr.as_ptr().add(self.len).write(v) };
        self.len += 1;
    }

    fn grow_to(&mut self, cap: usize) {
        let bytes = cap.checked_mul(Self::SIZE).unwrap_or_else(|| too_big::<T>());
        if bytes < MAPPED_MIN {
            let layout = array_layout::<T>(cap);
            let p = if self.cap == 0 {
                // SAFETY: layout has a non-zero size (cap >= 1, T sized and not zero-sized).
                unsafe { alloc::alloc(layout) }
            } else {
                let old = array_layout::<T>(self.cap);
                // SAFETY: ptr was allocated by the global allocator with `old` (heap storage: map_len == 0,
                // since mapped storage never shrinks back below MAPPED_MIN); the new size is non-zero.
                unsafe { alloc::realloc(self.ptr.as_ptr().cast(), old, layout.size()) }
            };
            let Some(p) = NonNull::new(p.cast::<T>()) else { alloc::handle_alloc_error(layout) };
            self.ptr = p;
            self.cap = cap;
            return;
        }
        let map_len = bytes.div_ceil(PAGE) * PAGE;
        let cap = map_len / Self::SIZE;
        if self.map_len != 0 {
            let Some(p) = remap(self.ptr.cast(), self.map_len, map_len) else { too_big::<T>() };
            self.ptr = p.cast();
            self.cap = cap;
            self.map_len = map_len;
            return;
        }
        let Some((new, map_len)) = map_for(map_len) else { too_big::<T>() };
        let cap = map_len / Self::SIZE;
        let new = new.cast::<T>();
        if self.cap != 0 {
            // SAFETY: the old storage holds `len` initialised elements; the new mapping has room for `cap` >=
            // len and does not overlap it. The elements are moved bitwise; the old storage is then freed
            // without dropping them.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), new.as_ptr(), self.len);
                alloc::dealloc(self.ptr.as_ptr().cast(), array_layout::<T>(self.cap));
            }
        }
        self.ptr = new;
        self.cap = cap;
        self.map_len = map_len;
    }
}

impl<T: Clone> WipeVec<T> {
    /// Grows to `len` elements, each new one a clone of `v` (never shrinks).
    pub fn resize(&mut self, len: usize, v: T) {
        if len <= self.len {
            return;
        }
        self.reserve(len - self.len);
        while self.len < len {
            // SAFETY: len < cap: the slot is inside the allocation and holds no live value.
            unsafe { self.ptr.as_ptr().add(self.len).write(v.clone()) };
            self.len += 1;
        }
    }

    /// An array of `len` clones of `v`.
    pub fn filled(len: usize, v: T) -> Self {
        let mut w = WipeVec::new();
        w.resize(len, v);
        w
    }
}

impl<T> std::ops::Deref for WipeVec<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` elements are initialised; ptr is non-null and aligned (dangling when cap
        // is 0, which is valid for an empty slice).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> std::ops::DerefMut for WipeVec<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref, and &mut self makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for WipeVec<T> {
    fn drop(&mut self) {
        // SAFETY: the first `len` elements are initialised and owned here; each is dropped once.
        unsafe { std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) };
        if self.map_len != 0 {
            release(self.ptr.cast(), self.map_len);
        } else if self.cap != 0 {
            // SAFETY: heap storage allocated with this layout by grow_to.
            unsafe { alloc::dealloc(self.ptr.as_ptr().cast(), array_layout::<T>(self.cap)) };
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for WipeVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_from_heap_to_mapping_keeping_contents() {
        let mut w: WipeVec<String> = WipeVec::new();
        for i in 0..5000 {
            w.push(i.to_string());
        }
        assert!(w.is_mapped());
        assert!(w.iter().enumerate().all(|(i, s)| *s == i.to_string()));
        w[7] = "x".into();
        assert_eq!(w[7], "x");
    }

    #[test]
    fn small_arrays_stay_on_the_heap() {
        let w = WipeVec::filled(100, 0u32);
        assert!(!w.is_mapped());
        assert_eq!(w.len(), 100);
        assert!(w.iter().all(|&v| v == 0));
    }

    #[test]
    fn resize_fills_and_never_shrinks() {
        let mut w = WipeVec::filled(3000, 7u64);
        assert!(w.is_mapped());
        w.resize(10, 1);
        assert_eq!(w.len(), 3000);
        w.resize(3001, 9);
        assert_eq!((w[0], w[2999], w[3000]), (7, 7, 9));
    }

    #[test]
    fn drops_every_element_once() {
        use std::rc::Rc;
        let probe = Rc::new(());
        let mut w = WipeVec::new();
        for _ in 0..3000 {
            w.push(probe.clone());
        }
        assert_eq!(Rc::strong_count(&probe), 3001);
        drop(w);
        assert_eq!(Rc::strong_count(&probe), 1);
    }

    #[test]
    fn a_fork_child_sees_the_mapping_zeroed() {
        let w = WipeVec::filled(4 * MAPPED_MIN, 0xabu8);
        assert!(w.is_mapped());
        assert!(wipeonfork_supported(), "Linux 4.14+ has MADV_WIPEONFORK");
        use std::os::fd::AsRawFd;
        let pair = std::os::unix::net::UnixStream::pair();
        assert!(pair.is_ok(), "socketpair: {pair:?}");
        let Ok((a, b)) = pair else { return };
        let (r, wr) = (a.as_raw_fd(), b.as_raw_fd());
        // SAFETY: fork in a test: the child only reads memory it owns, writes one byte and _exits.
        match unsafe { libc::fork() } {
            0 => {
                let b = [u8::from(w.iter().all(|&v| v == 0))];
                // SAFETY: b is valid for reading 1 byte; wr is an open socket.
                unsafe { libc::write(wr, b.as_ptr().cast(), 1) };
                // SAFETY: ends the child without running the parent's destructors or atexit handlers.
                unsafe { libc::_exit(0) };
            }
            pid => {
                let mut b = [9u8];
                // SAFETY: b is valid for writing 1 byte; r is an open socket.
                unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) };
                // SAFETY: reaps our own child; no status wanted.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                assert_eq!(b[0], 1, "the child saw the parent's bytes");
                assert!(w.iter().all(|&v| v == 0xab), "the parent's copy is untouched");
            }
        }
    }

    /// Runs `body` in a process of its own (this test binary, run again for this one test, one thread),
    /// where no other test takes or keeps spare mappings meanwhile.
    fn alone(test: &str, body: impl FnOnce()) {
        if std::env::var_os("KQRS_WIPEVEC_ALONE").is_some() {
            body();
            return;
        }
        let exe = std::env::current_exe();
        assert!(exe.is_ok(), "{exe:?}");
        let Ok(exe) = exe else { return };
        let out = std::process::Command::new(exe)
            .args(["--exact", test, "--test-threads=1", "--nocapture"])
            .env("KQRS_WIPEVEC_ALONE", "1")
            .output();
        assert!(out.as_ref().is_ok_and(|o| o.status.success()), "{out:?}");
        let stdout = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        assert!(stdout.contains("1 passed"), "the test ran: {stdout}");
    }

    #[test]
    fn a_dropped_mapping_is_kept_and_reused_by_the_next_array() {
        alone("sys::wipevec::tests::a_dropped_mapping_is_kept_and_reused_by_the_next_array", || {
            let a = WipeVec::filled(100_000, 1u64);
            let (p, kept) = (a.ptr.cast::<u8>(), a.map_len);
            drop(a);
            // a smaller array takes it (its pages already mapped), whatever they held
            let b = WipeVec::filled(50_000, 2u64);
            assert_eq!(b.ptr.cast::<u8>(), p, "the kept mapping is reused");
            assert_eq!(b.map_len, kept);
            assert_eq!(b.cap, kept / 8);
            assert!(b.iter().all(|&v| v == 2) && b.len() == 50_000);
            // still wiped for a fork child
            assert!(wipeonfork_supported());
            let mut flags = String::new();
            if let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") {
                let start = format!("{:x}-", p.as_ptr() as usize);
                let mut inside = false;
                for line in smaps.lines() {
                    if line.starts_with(&start) {
                        inside = true;
                    } else if inside && line.starts_with("VmFlags:") {
                        flags = line.to_string();
                        break;
                    }
                }
            }
            assert!(flags.split_whitespace().any(|f| f == "wf"), "MADV_WIPEONFORK kept: {flags:?}");
            // one larger than any kept mapping gets a fresh one
            let c = WipeVec::filled(300_000, 3u64);
            assert_ne!(c.ptr.cast::<u8>(), p);
        });
    }
}

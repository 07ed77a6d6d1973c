//! `kqrs._kqrs.EventQueue`: a multi-producer multi-consumer FIFO of Python objects, pollable.
//!
//! - State: one mutex around the items (a VecDeque), the waiting getters and putters (FIFO lists of
//!   `Waiter`s) and the fds; the item count is mirrored in an atomic (lock-free `qsize()`/`len()`, and the
//!   count the engine reports as EVFILT_READ `data`).
//! - Waiting: a getter that finds the queue empty queues a `Waiter` (this thread's spare one, reused) and
//!   sleeps on its own futex word with the GIL released. `put` hands its item straight to the oldest waiting getter (the item never enters
//!   the deque, so nobody else can take it) and wakes that one thread: one wake-up per item, no herd, no
//!   retry loop. Putters blocked on a full queue are the mirror image: a `get` that makes room moves the
//!   oldest blocked putter's item into the deque and wakes that putter. A timeout, a signal or `close()`
//!   ends a wait; each is settled under the lock, so an item is never both handed over and timed out.
//! - Pollability: `fileno()` makes (on first use) an eventfd kept readable exactly while the queue holds
//!   items (written on empty → non-empty, read back on non-empty → empty, under the lock), and registers
//!   it with the item count in the engine's counted-fd table, so an EVFILT_READ knote on it reports the
//!   count in `data`. A queue whose fileno() was never asked for makes no syscall at all.
//!   `_space_fileno()` is the same for "not full" (asyncio's `async_put`).
//! - close(): wakes every waiter (they raise ValueError), drops the items, and leaves the fds readable
//!   for good so that pollers wake up too; the fds are closed when the queue is freed.
//! - fork(): the child's copy reads as closed (its fds were closed by the engine's fork handler) and is
//!   never locked there (a thread of the parent may have held the lock at fork time).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyFloat, PyInt, PyList, PyTuple, PyType};
use pyo3::{PyTraverseError, PyVisit};

use super::os_error;
use crate::sys::pycall::fast_method;
use crate::sys::{self, Errno, RawFd};

/// A waiter's futex word.
const WAITING: u32 = 0;
/// A getter was handed an item (in its slot); a putter's item was moved into the queue.
const DONE: u32 = 1;
/// The queue was closed while it waited.
const CLOSED: u32 = 2;

/// How many times a thread that finds the lock taken yields before it sleeps in the mutex. It does not
/// spin on the lock first: measured on this 2-vCPU VM, 4 producers / 4 consumers on free-threaded 3.13t
/// ran at 1.13-1.17x SimpleQueue without spinning, 1.24-1.31x with 8 pauses and 1.41-1.74x with 64 (a
/// PAUSE loop in a guest costs exits when the host is busy, and a spinning thread holds the vCPU the
/// lock's holder needs). CPython's PyMutex also yields rather than spins.
const YIELDS: u32 = 16;

static EMPTY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static FULL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
/// kqrs._queue's coroutine functions behind async_get / async_put.
static ASYNC_GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ASYNC_PUT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn empty_err(py: Python<'_>) -> PyErr {
    match EMPTY.import(py, "queue", "Empty") {
        Ok(t) => PyErr::from_type(t.clone(), ()),
        Err(e) => e,
    }
}

fn full_err(py: Python<'_>) -> PyErr {
    match FULL.import(py, "queue", "Full") {
        Ok(t) => PyErr::from_type(t.clone(), ()),
        Err(e) => e,
    }
}

fn closed_err(what: &str) -> PyErr {
    PyValueError::new_err(format!("{what} on a closed EventQueue"))
}

const CLOSED_FD_MSG: &str = "I/O operation on closed EventQueue";

thread_local! {
    /// This thread's spare getter waiter (see `Waiter::spare`).
    static SPARE: std::cell::Cell<Option<Arc<Waiter>>> = const { std::cell::Cell::new(None) };
}

/// One blocked `get` or `put`.
struct Waiter {
    /// WAITING, then DONE or CLOSED (set under the queue's lock; the waiter sleeps on it).
    state: AtomicU32,
    /// A getter's item, handed over by `put`; a blocked putter's item, until it enters the queue.
    slot: Mutex<Option<Py<PyAny>>>,
}

impl Waiter {
    fn new(item: Option<Py<PyAny>>) -> Arc<Waiter> {
        Arc::new(Waiter { state: AtomicU32::new(WAITING), slot: Mutex::new(item) })
    }

    /// A getter's waiter: this thread's spare one when it has one (a blocking get() allocates nothing),
    /// else a new one.
    fn spare() -> Arc<Waiter> {
        match SPARE.try_with(|s| s.take()) {
            Ok(Some(w)) => w,
            _ => Waiter::new(None),
        }
    }

    /// Keeps a getter's waiter as this thread's spare once nobody else holds it (a putter that handed it
    /// an item may still be waking it: then it is simply freed). Reset for its next wait.
    fn keep(self: Arc<Self>) {
        if Arc::strong_count(&self) != 1 || Arc::weak_count(&self) != 0 {
            return;
        }
        if self.slot.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return; // (an item left in it: dropped with it, GIL held by the caller)
        }
        self.state.store(WAITING, Ordering::Relaxed);
        let _ = SPARE.try_with(|s| s.set(Some(self)));
    }

    fn take(&self) -> Option<Py<PyAny>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn put(&self, item: Py<PyAny>) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(item);
    }

    /// Settles the wait (under the queue's lock); `wake` then wakes the thread.
    fn finish(&self, state: u32) {
        self.state.store(state, Ordering::Release);
    }

    fn wake(&self) {
        sys::futex_wake(&self.state, 1);
    }
}

/// Wakes `w`'s thread with the GIL released, as os.eventfd_write makes its write: the woken thread wants
/// the GIL the moment it runs, and finds it free, instead of sleeping on it again until this thread lets
/// go (a second wake-up: a put → blocked get hand-off took 10 µs with the GIL held across the wake, 3 µs
/// without, on this machine).
/// (Free-threaded CPython has no GIL to hand over: the wake is made attached.)
fn wake_released(py: Python<'_>, ws: &[Arc<Waiter>]) {
    if ws.is_empty() {
    } else if super::FREE_THREADED {
        ws.iter().for_each(|w| w.wake());
    } else {
        py.detach(|| ws.iter().for_each(|w| w.wake()));
    }
}

/// How a sleep ended.
enum Slept {
    Settled(u32),
    TimedOut,
    Interrupted,
    Failed(Errno),
}

/// Sleeps (GIL released) until the waiter is settled, the deadline passes or a signal handler runs.
fn sleep(core: &Core, w: &Waiter, deadline: Option<u64>) -> Slept {
    // (No spinning for the item first: measured, it made a hand-off to a blocked get() 2 µs slower on
    // this VM and a 1/1 producer/consumer no faster.)
    loop {
        let s = w.state.load(Ordering::Acquire);
        if s != WAITING {
            return Slept::Settled(s);
        }
        core.sleeps.fetch_add(1, Ordering::Relaxed);
        match sys::futex_wait(&w.state, WAITING, deadline) {
            Ok(()) | Err(Errno(libc::EAGAIN)) => {}
            Err(Errno(libc::ETIMEDOUT)) => return Slept::TimedOut,
            Err(Errno(libc::EINTR)) => return Slept::Interrupted,
            Err(e) => return Slept::Failed(e),
        }
    }
}

#[derive(Default)]
#[repr(C)]
struct Inner {
    items: VecDeque<Py<PyAny>>,
    /// fileno(): readable while `items` is not empty (or closed); -1 until asked for.
    efd: RawFd,
    /// _space_fileno(): readable while there is room (or closed); -1 until asked for.
    space_fd: RawFd,
    efd_on: bool,
    space_on: bool,
    closed: bool,
    getters: VecDeque<Arc<Waiter>>,
    putters: VecDeque<Arc<Waiter>>,
    /// asyncio's waiters, per event loop (kqrs/_queue.py); made on first use.
    loops: Option<Py<PyDict>>,
}

impl Inner {
    fn new() -> Inner {
        Inner { efd: -1, space_fd: -1, ..Default::default() }
    }

    /// Hands `item` to the oldest waiting getter (returned, to be woken after the unlock), or queues it
    /// (at the front when it is one taken back).
    #[inline(always)]
    fn deliver(&mut self, item: Py<PyAny>, front: bool) -> Option<Arc<Waiter>> {
        if !self.getters.is_empty() {
            return self.hand_over(item);
        }
        if front {
            self.items.push_front(item);
        } else {
            self.items.push_back(item);
        }
        None
    }

    #[cold]
    fn hand_over(&mut self, item: Py<PyAny>) -> Option<Arc<Waiter>> {
        let w = self.getters.pop_front()?;
        w.put(item);
        w.finish(DONE);
        Some(w)
    }

    /// After items were taken: the oldest blocked putter's item goes in if there is room now.
    #[inline(always)]
    fn admit(&mut self, maxsize: usize) -> Option<Arc<Waiter>> {
        if self.putters.is_empty() || self.items.len() >= maxsize {
            return None;
        }
        self.admit_one()
    }

    #[cold]
    fn admit_one(&mut self) -> Option<Arc<Waiter>> {
        let w = self.putters.pop_front()?;
        if let Some(item) = w.take() {
            self.items.push_back(item);
        }
        w.finish(DONE);
        Some(w)
    }

    /// Removes a waiter that gives up (timeout, signal); false when it was settled meanwhile.
    fn withdraw(&mut self, w: &Arc<Waiter>, getter: bool) -> bool {
        if w.state.load(Ordering::Acquire) != WAITING {
            return false;
        }
        let list = if getter { &mut self.getters } else { &mut self.putters };
        if let Some(i) = list.iter().position(|x| Arc::ptr_eq(x, w)) {
            list.remove(i);
        }
        true
    }

    /// Brings the mirrors up to date after a change: the count, and the fds' readability.
    #[inline(always)]
    fn settle(&mut self, len: &AtomicUsize, maxsize: usize) {
        let n = self.items.len();
        len.store(n, Ordering::Release);
        if self.efd >= 0 || self.space_fd >= 0 {
            self.sync_fds(maxsize);
        }
        if n == 0 && self.items.capacity() > (1 << 20) {
            self.shrink();
        }
    }

    /// A queue that ran long and emptied gives its memory back.
    #[cold]
    fn shrink(&mut self) {
        self.items.shrink_to(64);
    }

    #[cold]
    fn sync_fds(&mut self, maxsize: usize) {
        let n = self.items.len();
        if self.efd >= 0 {
            let want = n > 0 || self.closed;
            set_readable(self.efd, &mut self.efd_on, want);
        }
        if self.space_fd >= 0 {
            let want = maxsize == 0 || n < maxsize || self.closed;
            set_readable(self.space_fd, &mut self.space_on, want);
        }
    }
}

/// An eventfd as a flag: counter 1 (readable) or 0.
fn set_readable(fd: RawFd, on: &mut bool, want: bool) {
    if *on == want {
        return;
    }
    let ok = if want { sys::eventfd_write(fd, 1).is_ok() } else { sys::read_u64(fd).is_ok() };
    if ok {
        *on = want;
    }
}

/// How long a call may wait for an item (or for room).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Patience {
    No,
    /// Up to this many ns.
    For(u64),
    Forever,
}

impl Patience {
    /// From `block` and `timeout`, `queue.Queue`'s way: without `block` the timeout is not looked at; a
    /// negative timeout is a ValueError; 0 does not wait.
    #[inline(always)]
    fn of(block: Option<&Bound<'_, PyAny>>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Patience> {
        if block.is_none() && timeout.is_none() {
            return Ok(Patience::Forever); // the common get() / put(item)
        }
        Self::parse(block, timeout)
    }

    #[inline(never)]
    fn parse(block: Option<&Bound<'_, PyAny>>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Patience> {
        if let Some(b) = block {
            if !b.is_truthy()? {
                return Ok(Patience::No);
            }
        }
        let Some(t) = timeout else { return Ok(Patience::Forever) };
        if t.is_none() {
            return Ok(Patience::Forever);
        }
        let secs: f64 = if let Ok(i) = t.cast::<PyInt>() {
            i.extract::<i64>().map(|v| v as f64).unwrap_or(f64::MAX)
        } else if let Ok(f) = t.cast::<PyFloat>() {
            f.value()
        } else {
            t.extract::<f64>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "timeout must be a number or None, not {}",
                    t.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                ))
            })?
        };
        if secs.is_nan() || secs < 0.0 {
            return Err(PyValueError::new_err("'timeout' must be a non-negative number"));
        }
        let ns = (secs * 1e9).ceil();
        Ok(if ns == 0.0 {
            Patience::No
        } else if ns >= (u64::MAX / 2) as f64 {
            Patience::Forever // beyond any deadline the clock can reach
        } else {
            Patience::For(ns as u64)
        })
    }

    /// The absolute CLOCK_MONOTONIC deadline, fixed now (None: none).
    fn deadline(self) -> Option<u64> {
        match self {
            Patience::For(ns) => Some(sys::clock_ns(false).saturating_add(ns)),
            _ => None,
        }
    }
}

/// The shared state, laid out (repr(C), cache-line aligned) so that what every put and get writes is in
/// one line: the count, the lock word and, at the head of `Inner`, the items' deque and the fds. (Left to
/// the compiler, the count went after the 120-byte `Inner`, on another line than the lock word: 4
/// producers / 4 consumers on free-threaded 3.13t ran ~7% slower.) The waiter lists, in the next line,
/// are only read while nobody waits.
#[repr(C, align(64))]
struct Core {
    /// The item count (mirrors `items.len()`, written under the lock; read without it).
    len: AtomicUsize,
    inner: Mutex<Inner>,
    /// Times a waiter went to sleep (for tests: a herd would show up here).
    sleeps: AtomicU64,
}

// The hot fields of `Inner` fit in Core's first line after the count (8 bytes) and the mutex's lock word
// and poison flag (std's Mutex keeps them before the data: 8 bytes).
const _: () = assert!(std::mem::offset_of!(Inner, closed) + 16 < 64);

impl crate::counted::Counted for Core {
    fn count(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

/// A thread-safe FIFO of Python objects whose `fileno()` is readable exactly while it holds items.
#[pyclass(name = "EventQueue", module = "kqrs._kqrs", subclass, frozen, weakref)]
pub struct PyEventQueue {
    core: Arc<Core>,
    /// 0: unbounded.
    maxsize: usize,
    born: crate::sys::ForkStamp,
}

impl PyEventQueue {
    /// Queues `item` in a queue with room (or hands it to the oldest waiting getter), updates the count and
    /// the fd, releases the lock, then wakes that getter.
    #[inline]
    fn push_unlock(&self, py: Python<'_>, mut g: MutexGuard<'_, Inner>, item: Py<PyAny>) {
        let w = g.deliver(item, false);
        g.settle(&self.core.len, self.maxsize);
        drop(g);
        wake_released(py, w.as_slice());
    }

    /// The state, locked. Never called in a fork child (see `is_forked`).
    #[inline]
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.try_take().unwrap_or_else(|| self.lock_contended())
    }

    /// The lock if it is free (nothing that can panic runs under it: a poisoned lock is taken over).
    #[inline]
    fn try_take(&self) -> Option<MutexGuard<'_, Inner>> {
        match self.core.inner.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// The lock is held by another thread: held for a few instructions, so it is free again as soon as
    /// that thread runs. Yield the CPU to it a few times, then sleep in the mutex.
    #[cold]
    fn lock_contended(&self) -> MutexGuard<'_, Inner> {
        for _ in 0..YIELDS {
            std::thread::yield_now();
            if let Some(g) = self.try_take() {
                return g;
            }
        }
        self.core.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inherited across fork(): reads as closed, and its lock is never taken.
    #[inline]
    fn is_forked(&self) -> bool {
        self.born.forked()
    }

    #[inline]
    fn bound(&self) -> usize {
        if self.maxsize == 0 {
            usize::MAX
        } else {
            self.maxsize
        }
    }

    /// Takes the oldest item if there is one (waking a putter that gets its room).
    #[inline(always)]
    fn pop(&self, g: &mut Inner) -> (Option<Py<PyAny>>, Option<Arc<Waiter>>) {
        let item = g.items.pop_front();
        if item.is_none() {
            return (None, None);
        }
        let w = g.admit(self.bound());
        g.settle(&self.core.len, self.maxsize);
        (item, w)
    }

    /// Takes the oldest item without waiting (waking a putter that gets its room): None when there is none,
    /// ValueError once closed.
    fn take_now(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if self.is_forked() {
            return Err(closed_err("get()"));
        }
        let mut g = self.lock();
        let (item, w) = self.pop(&mut g);
        let closed = g.closed;
        drop(g);
        wake_released(py, w.as_slice());
        match item {
            None if closed => Err(closed_err("get()")),
            item => Ok(item),
        }
    }

    /// Sleeps until `w` is settled (Ok(state)), or gives up: Ok(WAITING) on timeout, Err on a signal
    /// handler's exception or a failed wait. A getter's item handed over just as it gave up goes back to
    /// the front of the queue.
    fn wait(&self, py: Python<'_>, w: &Arc<Waiter>, deadline: Option<u64>, getter: bool) -> PyResult<u32> {
        loop {
            let (wr, core): (&Waiter, &Core) = (w, &self.core);
            let slept = py.detach(move || sleep(core, wr, deadline));
            let err = match slept {
                Slept::Settled(s) => return Ok(s),
                Slept::Interrupted => match py.check_signals() {
                    Ok(()) => continue,
                    Err(e) => Some(e),
                },
                Slept::TimedOut => None,
                Slept::Failed(e) => Some(os_error(e)),
            };
            let mut g = self.lock();
            if g.withdraw(w, getter) {
                drop(g);
                return match err {
                    None => Ok(WAITING),
                    Some(e) => Err(e),
                };
            }
            // Settled meanwhile.
            let s = w.state.load(Ordering::Acquire);
            let Some(e) = err else {
                drop(g);
                return Ok(s);
            };
            let mut wake = None;
            let mut back = None;
            if getter && s == DONE {
                if let Some(item) = w.take() {
                    wake = g.deliver(item, true);
                    g.settle(&self.core.len, self.maxsize);
                }
            } else if !getter && s == DONE {
                // The item is in the queue already: the put happened, the exception still propagates.
                back = w.take().map(|i| i.into_bound(py));
            }
            drop(g);
            if let Some(w) = wake {
                w.wake();
            }
            drop(back);
            return Err(e);
        }
    }

    /// A blocking get's slow path: waits for an item to be handed over.
    fn get_wait(&self, py: Python<'_>, mut g: MutexGuard<'_, Inner>, deadline: Option<u64>) -> PyResult<Py<PyAny>> {
        let w = Waiter::spare();
        g.getters.push_back(w.clone());
        drop(g);
        let r = match self.wait(py, &w, deadline, true) {
            Ok(DONE) => w.take().ok_or_else(|| empty_err(py)),
            Ok(CLOSED) => Err(closed_err("get()")),
            Ok(_) => Err(empty_err(py)),
            Err(e) => Err(e),
        };
        w.keep();
        r
    }

    /// Takes up to `max` items (locked); the putters that get room are returned to be woken.
    fn take_many(&self, g: &mut Inner, max: usize, out: &mut Vec<Py<PyAny>>) -> Vec<Arc<Waiter>> {
        let n = max.min(g.items.len());
        out.extend(g.items.drain(..n));
        let mut wake = Vec::new();
        while let Some(w) = g.admit(self.bound()) {
            wake.push(w);
        }
        g.settle(&self.core.len, self.maxsize);
        wake
    }

    fn do_close(&self) -> (VecDeque<Py<PyAny>>, Vec<Arc<Waiter>>) {
        let mut g = self.lock();
        if g.closed {
            return (VecDeque::new(), Vec::new());
        }
        g.closed = true;
        let items = std::mem::take(&mut g.items);
        let mut woken: Vec<Arc<Waiter>> = g.getters.drain(..).collect();
        woken.extend(g.putters.drain(..));
        for w in &woken {
            w.finish(CLOSED);
        }
        if g.efd >= 0 {
            crate::counted::unregister(g.efd);
        }
        g.settle(&self.core.len, self.maxsize);
        (items, woken)
    }

    /// An eventfd made for `fileno()` / `_space_fileno()`, readable as `want` says.
    fn make_fd(want: bool) -> PyResult<RawFd> {
        let fd = sys::eventfd().map_err(os_error)?;
        if want {
            if let Err(e) = sys::eventfd_write(fd, 1) {
                sys::close(fd);
                return Err(os_error(e));
            }
        }
        Ok(fd)
    }
}

/// `q.get()` / `q.get_nowait()` / `q.put(item)` / `q.put_nowait(item)` as most calls are made: no
/// argument beyond the item (sys/pycall.rs); anything else goes to the full methods below.
fn fast_get<'a, 'py>(
    py: Python<'py>,
    q: &'a PyEventQueue,
    args: &[Borrowed<'a, 'py, PyAny>],
) -> Option<PyResult<Bound<'py, PyAny>>> {
    args.is_empty().then(|| q.get(py, None, None).map(|o| o.into_bound(py)))
}

fn fast_get_nowait<'a, 'py>(
    py: Python<'py>,
    q: &'a PyEventQueue,
    args: &[Borrowed<'a, 'py, PyAny>],
) -> Option<PyResult<Bound<'py, PyAny>>> {
    args.is_empty().then(|| q.get_nowait(py).map(|o| o.into_bound(py)))
}

fn fast_put<'a, 'py>(
    py: Python<'py>,
    q: &'a PyEventQueue,
    args: &[Borrowed<'a, 'py, PyAny>],
) -> Option<PyResult<Bound<'py, PyAny>>> {
    let [item] = args else { return None };
    Some(q.put(py, item, None, None).map(|()| py.None().into_bound(py)))
}

fn fast_put_nowait<'a, 'py>(
    py: Python<'py>,
    q: &'a PyEventQueue,
    args: &[Borrowed<'a, 'py, PyAny>],
) -> Option<PyResult<Bound<'py, PyAny>>> {
    let [item] = args else { return None };
    Some(q.put_nowait(py, item).map(|()| py.None().into_bound(py)))
}

fast_method!(Get: PyEventQueue => fast_get);
fast_method!(GetNowait: PyEventQueue => fast_get_nowait);
fast_method!(Put: PyEventQueue => fast_put);
fast_method!(PutNowait: PyEventQueue => fast_put_nowait);

/// Installs the fast paths above (slots 1-4 of sys/pycall.rs).
pub(crate) fn install_fast(py: Python<'_>) -> PyResult<()> {
    use crate::sys::pycall::install;
    install::<1, PyEventQueue, Get>(py, c"get")?;
    install::<2, PyEventQueue, GetNowait>(py, c"get_nowait")?;
    install::<3, PyEventQueue, Put>(py, c"put")?;
    install::<4, PyEventQueue, PutNowait>(py, c"put_nowait")
}

#[pymethods]
impl PyEventQueue {
    /// EventQueue(maxsize=0): `maxsize` > 0 bounds the queue (`put` then waits for room, `put_nowait`
    /// raises queue.Full); 0 or less: unbounded.
    #[new]
    #[pyo3(signature = (maxsize=0))]
    fn new(maxsize: isize) -> PyEventQueue {
        PyEventQueue {
            core: Arc::new(Core {
                len: AtomicUsize::new(0),
                inner: Mutex::new(Inner::new()),
                sleeps: AtomicU64::new(0),
            }),
            maxsize: maxsize.max(0) as usize,
            born: crate::sys::ForkStamp::now(),
        }
    }

    /// `EventQueue[T]` (for type annotations).
    #[classmethod]
    fn __class_getitem__(cls: &Bound<'_, PyType>, item: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = cls.py();
        let alias = py.import("types")?.getattr("GenericAlias")?;
        Ok(alias.call1((cls, item))?.unbind())
    }

    /// Puts `item` at the end. With `block` (the default) on a full queue, waits up to `timeout` seconds
    /// (None: forever) for room, then raises queue.Full; without, raises queue.Full at once. ValueError once
    /// the queue is closed.
    #[pyo3(signature = (item, block=None, timeout=None), text_signature = "($self, item, block=True, timeout=None)")]
    fn put(
        &self,
        py: Python<'_>,
        item: &Bound<'_, PyAny>,
        block: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if self.is_forked() {
            return Err(closed_err("put()"));
        }
        // The item becomes a `Py` only where it is stored: a refused one is released at once (a `Py` dropped
        // in a fast call waits for PyO3's next call, sys/pycall.rs).
        let g = self.lock();
        if g.closed {
            drop(g);
            return Err(closed_err("put()"));
        }
        if g.items.len() < self.bound() {
            self.push_unlock(py, g, item.clone().unbind());
            return Ok(());
        }
        drop(g);
        // Full.
        let patience = Patience::of(block, timeout)?;
        if patience == Patience::No {
            return Err(full_err(py));
        }
        let deadline = patience.deadline();
        let mut g = self.lock();
        if g.closed {
            drop(g);
            return Err(closed_err("put()"));
        }
        if g.items.len() < self.bound() {
            // Room was made while the arguments were looked at.
            self.push_unlock(py, g, item.clone().unbind());
            return Ok(());
        }
        let w = Waiter::new(Some(item.clone().unbind()));
        g.putters.push_back(w.clone());
        drop(g);
        match self.wait(py, &w, deadline, false)? {
            DONE => Ok(()),
            CLOSED => {
                drop(w.take().map(|i| i.into_bound(py)));
                Err(closed_err("put()"))
            }
            _ => {
                drop(w.take().map(|i| i.into_bound(py)));
                Err(full_err(py))
            }
        }
    }

    /// `await q.async_get()`: get() for asyncio (kqrs/_queue.py): waits for an item without blocking the
    /// event loop; cancel-safe (a cancelled async_get takes no item).
    fn async_get<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        ASYNC_GET.import(slf.py(), "kqrs._queue", "_async_get")?.call1((slf,))
    }

    /// `await q.async_put(item)`: put() for asyncio: waits for room without blocking the event loop;
    /// cancel-safe (a cancelled async_put has put nothing).
    fn async_put<'py>(slf: &Bound<'py, Self>, item: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        ASYNC_PUT.import(slf.py(), "kqrs._queue", "_async_put")?.call1((slf, item))
    }

    /// asyncio's waiters by event loop (for kqrs/_queue.py).
    #[getter]
    fn _loops(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        if self.is_forked() {
            return Ok(PyDict::new(py).unbind());
        }
        if let Some(d) = &self.lock().loops {
            return Ok(d.clone_ref(py));
        }
        let fresh = PyDict::new(py).unbind();
        let mut g = self.lock();
        let d = g.loops.get_or_insert(fresh).clone_ref(py);
        drop(g);
        Ok(d)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if self.is_forked() {
            return Ok(());
        }
        // A lock held elsewhere: nothing reported (the collector then keeps these objects alive).
        let Ok(g) = self.core.inner.try_lock() else { return Ok(()) };
        for item in &g.items {
            visit.call(item)?;
        }
        visit.call(&g.loops)?;
        Ok(())
    }

    fn __clear__(&self) {
        if self.is_forked() {
            return;
        }
        let (items, loops) = {
            let mut g = self.lock();
            let taken = (std::mem::take(&mut g.items), g.loops.take());
            g.settle(&self.core.len, self.maxsize);
            taken
        };
        drop(items);
        drop(loops);
    }

    /// (getters waiting, putters waiting, sleeps so far): for tests and diagnostics.
    fn _stats(&self) -> (usize, usize, u64) {
        if self.is_forked() {
            return (0, 0, 0);
        }
        let g = self.lock();
        (g.getters.len(), g.putters.len(), self.core.sleeps.load(Ordering::Relaxed))
    }

    /// put(item, block=False).
    fn put_nowait(&self, py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<()> {
        let no = pyo3::types::PyBool::new(py, false);
        self.put(py, item, Some(no.as_any()), None)
    }

    /// Removes and returns the oldest item. With `block` (the default), waits up to `timeout` seconds
    /// (None: forever) for one, with the GIL released, then raises queue.Empty; without, raises queue.Empty
    /// at once. Each item goes to exactly one caller; ValueError once the queue is closed.
    #[pyo3(signature = (block=None, timeout=None), text_signature = "($self, block=True, timeout=None)")]
    fn get(
        &self,
        py: Python<'_>,
        block: Option<&Bound<'_, PyAny>>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if self.is_forked() {
            return Err(closed_err("get()"));
        }
        let patience = Patience::of(block, timeout)?;
        let mut g = self.lock();
        let (item, w) = self.pop(&mut g);
        if let Some(item) = item {
            drop(g);
            wake_released(py, w.as_slice());
            return Ok(item);
        }
        if g.closed {
            drop(g);
            return Err(closed_err("get()"));
        }
        if patience == Patience::No {
            drop(g);
            return Err(empty_err(py));
        }
        self.get_wait(py, g, patience.deadline())
    }

    /// get(block=False).
    fn get_nowait(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.take_now(py)?.ok_or_else(|| empty_err(py))
    }

    /// The oldest item, or `default` when there is none (no exception: for asyncio's async_get).
    fn _try_get(&self, default: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        Ok(self.take_now(default.py())?.unwrap_or_else(|| default.clone().unbind()))
    }

    /// Removes and returns up to `max_items` of the oldest items (None: all) as a list, in one call. Waits
    /// for the first as `get()` does (`block`, `timeout`; queue.Empty when there is none), never for more.
    #[pyo3(signature = (max_items=None, block=None, timeout=None), text_signature = "($self, max_items=None, block=True, timeout=None)")]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        max_items: Option<isize>,
        block: Option<&Bound<'py, PyAny>>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        if self.is_forked() {
            return Err(closed_err("get()"));
        }
        let max = match max_items {
            None => usize::MAX,
            Some(m) if m < 0 => return Err(PyValueError::new_err("max_items must be non-negative or None")),
            Some(m) => m as usize,
        };
        let patience = Patience::of(block, timeout)?;
        let mut out = Vec::new();
        let mut g = self.lock();
        if g.closed {
            drop(g);
            return Err(closed_err("get()"));
        }
        if max == 0 {
            return Ok(PyList::empty(py));
        }
        if g.items.is_empty() {
            if patience == Patience::No {
                drop(g);
                return Err(empty_err(py));
            }
            let first = self.get_wait(py, g, patience.deadline())?;
            out.push(first);
            if max == 1 {
                return PyList::new(py, out);
            }
            g = self.lock();
            if g.closed {
                drop(g);
                return PyList::new(py, out);
            }
        }
        let wake = self.take_many(&mut g, max - out.len(), &mut out);
        drop(g);
        wake_released(py, &wake);
        PyList::new(py, out)
    }

    /// Number of items in the queue now.
    fn qsize(&self) -> usize {
        if self.is_forked() {
            return 0;
        }
        self.core.len.load(Ordering::Acquire)
    }

    fn __len__(&self) -> usize {
        self.qsize()
    }

    /// Whether the queue holds no item now.
    fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether a bounded queue is at its maxsize now.
    fn full(&self) -> bool {
        self.maxsize > 0 && self.qsize() >= self.maxsize
    }

    /// The bound given at construction (0: unbounded).
    #[getter]
    fn maxsize(&self) -> usize {
        self.maxsize
    }

    /// Whether close() was called (or the queue was inherited across fork()).
    #[getter]
    fn closed(&self) -> bool {
        self.is_forked() || self.lock().closed
    }

    /// An fd readable exactly while the queue holds items (after close(): readable for good). An
    /// EVFILT_READ knote on it reports the number of items in `data`. Made on first use; do not read it.
    fn fileno(&self) -> PyResult<i32> {
        if self.is_forked() {
            return Err(PyValueError::new_err(CLOSED_FD_MSG));
        }
        let mut g = self.lock();
        if g.closed {
            return Err(PyValueError::new_err(CLOSED_FD_MSG));
        }
        if g.efd < 0 {
            let want = !g.items.is_empty();
            let fd = Self::make_fd(want)?;
            g.efd = fd;
            g.efd_on = want;
            let weak: std::sync::Weak<dyn crate::counted::Counted> = Arc::downgrade(&self.core) as _;
            crate::counted::register(fd, weak);
        }
        Ok(g.efd)
    }

    /// An fd readable exactly while the queue has room (after close(): readable for good), for
    /// asyncio's async_put. Made on first use; do not read it.
    fn _space_fileno(&self) -> PyResult<i32> {
        if self.is_forked() {
            return Err(PyValueError::new_err(CLOSED_FD_MSG));
        }
        let mut g = self.lock();
        if g.closed {
            return Err(PyValueError::new_err(CLOSED_FD_MSG));
        }
        if g.space_fd < 0 {
            let want = g.items.len() < self.bound();
            g.space_fd = Self::make_fd(want)?;
            g.space_on = want;
        }
        Ok(g.space_fd)
    }

    /// Closes the queue: every waiting get/put raises ValueError, and so does every later call; the items
    /// still queued are dropped. fileno() stays readable until the queue is freed. Closing twice is fine.
    fn close(&self, py: Python<'_>) {
        if self.is_forked() {
            return;
        }
        let (items, woken) = self.do_close();
        wake_released(py, &woken);
        // Dropped with the lock free: an item's __del__ may use the queue.
        drop(items);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.close(py);
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let name = slf.get_type().qualname()?;
        let q = slf.get();
        if q.closed() {
            return Ok(format!("<{name} closed>"));
        }
        Ok(format!("<{name} qsize={} maxsize={}>", q.qsize(), q.maxsize))
    }
}

impl Drop for PyEventQueue {
    fn drop(&mut self) {
        if self.is_forked() {
            // Inherited across fork(): its fds were closed by the fork handler (their numbers may name the
            // child's own files by now) and its state may have been copied mid-change (its lock held by a
            // thread that does not exist here). Leak it untouched.
            std::mem::forget(self.core.clone());
            return;
        }
        let mut g = self.lock();
        if g.efd >= 0 {
            crate::counted::unregister(g.efd);
            sys::close(g.efd);
            g.efd = -1;
        }
        if g.space_fd >= 0 {
            sys::close(g.space_fd);
            g.space_fd = -1;
        }
    }
}

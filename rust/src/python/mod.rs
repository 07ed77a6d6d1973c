//! The PyO3 layer: `kqrs._kqrs.kqueue` and `kqrs._kqrs.kevent`, mirroring CPython's `select.kqueue` and
//! `select.kevent` (argument parsing, error types and messages, comparisons).

use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::atomic::{AtomicI16, AtomicI64, AtomicU16, AtomicU32, AtomicU64};
use std::sync::Arc;

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyOSError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyInt, PyList, PyTuple, PyType};

use crate::consts::*;
use crate::kqueue::{Kqueue, Wait};

mod heap;
mod queue;
mod selector;
use crate::sys::Errno;
use crate::Kevent;

pub(crate) const CLOSED_MSG: &str = "I/O operation on closed kqueue object";

/// OSError(errno, strerror): CPython picks the subclass (FileNotFoundError, ...) from the errno.
pub(crate) fn os_error(e: Errno) -> PyErr {
    let msg = std::io::Error::from_raw_os_error(e.0).to_string();
    let msg = msg.split(" (os error").next().unwrap_or("").to_string();
    PyOSError::new_err((e.0, msg))
}

fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// `o.__index__()` as a Python int, with CPython's TypeError for anything else.
fn as_index<'py>(o: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyInt>> {
    if let Ok(i) = o.cast::<PyInt>() {
        return Ok(i.clone());
    }
    // Interned names: a fresh string per call would be kept alive by CPython's type attribute cache (one
    // entry per string object), which the soak tests count as Python blocks that keep growing.
    let name = pyo3::intern!(o.py(), "__index__");
    if !o.is_instance_of::<PyFloat>() && o.hasattr(name)? {
        let v = o.call_method0(name)?;
        if let Ok(i) = v.cast_into::<PyInt>() {
            return Ok(i);
        }
    }
    Err(PyTypeError::new_err(format!("'{}' object cannot be interpreted as an integer", type_name(o))))
}

/// An integer reduced modulo 2**bits, as C's unsigned "mask" conversions do.
fn masked(o: &Bound<'_, PyAny>, bits: u32) -> PyResult<u64> {
    let i = as_index(o)?;
    let mask: u128 = if bits >= 64 { u64::MAX as u128 } else { (1u128 << bits) - 1 };
    let m = i.bitand(mask)?;
    let v: u128 = m.extract()?;
    Ok(v as u64)
}

fn ident_of(o: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(i) = o.cast::<PyInt>() {
        if i.lt(0)? {
            return Err(PyOverflowError::new_err("can't convert negative value to size_t"));
        }
        return i
            .extract::<u64>()
            .map(|v| v as usize)
            .map_err(|_| PyOverflowError::new_err("Python int too large to convert to C size_t"));
    }
    let name = pyo3::intern!(o.py(), "fileno"); // (interned: see as_index)
    if !o.hasattr(name)? {
        return Err(PyTypeError::new_err("argument must be an int, or have a fileno() method."));
    }
    let r = o.call_method0(name)?;
    let Ok(i) = r.cast::<PyInt>() else {
        return Err(PyTypeError::new_err("fileno() returned a non-integer"));
    };
    let fd: i32 = i.extract().map_err(|_| PyOverflowError::new_err("Python int too large to convert to C int"))?;
    if fd < 0 {
        return Err(PyValueError::new_err(format!("file descriptor cannot be a negative integer ({fd})")));
    }
    Ok(fd as usize)
}

/// A kqueue event or change, as `select.kevent`.
///
/// Frozen, with each member in a relaxed atomic: reading a kevent (every change a `control()` call takes,
/// every attribute read) is plain loads, with no borrow flag to take and release with two locked
/// instructions, while the members stay writable as CPython's are. A member is one word, so a reader never
/// sees it torn; as in CPython, nothing orders one member's store against another's.
#[pyclass(name = "kevent", module = "kqrs", skip_from_py_object, freelist = 256, frozen)]
pub struct PyKevent {
    ident: AtomicU64,
    filter: AtomicI16,
    flags: AtomicU16,
    fflags: AtomicU32,
    data: AtomicI64,
    udata: AtomicU64,
}

const KEVENT_ARGS: [&str; 6] = ["ident", "filter", "flags", "fflags", "data", "udata"];

/// CPython's "can't delete" for a struct member, and the value to set otherwise.
fn settable<'a, 'py>(v: Option<&'a Bound<'py, PyAny>>) -> PyResult<&'a Bound<'py, PyAny>> {
    v.ok_or_else(|| PyTypeError::new_err("can't delete numeric/char attribute"))
}

fn as_long(v: &Bound<'_, PyAny>) -> PyResult<i64> {
    as_index(v)?.extract::<i64>().map_err(|_| PyOverflowError::new_err("Python int too large to convert to C long"))
}

/// A C struct member store with truncation: warns as CPython does, then keeps the low bits.
fn truncating(py: Python<'_>, v: i64, min: i64, max: i64, what: &str) -> PyResult<i64> {
    if v < min || v > max {
        let cat = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
        PyErr::warn(
            py,
            &cat,
            &std::ffi::CString::new(format!("Truncation of value to {what}")).unwrap_or_default(),
            1,
        )?;
    }
    Ok(v)
}

fn as_unsigned_member(v: &Bound<'_, PyAny>) -> PyResult<u64> {
    let i = as_index(v)?;
    if i.lt(0)? {
        return Err(PyOverflowError::new_err("can't convert negative int to unsigned"));
    }
    i.extract::<u64>().map_err(|_| PyOverflowError::new_err("Python int too large to convert to C unsigned long"))
}

impl PyKevent {
    fn to_kevent(&self) -> Kevent {
        Kevent {
            ident: self.ident.load(Relaxed) as usize,
            filter: self.filter.load(Relaxed),
            flags: self.flags.load(Relaxed),
            fflags: self.fflags.load(Relaxed),
            data: self.data.load(Relaxed) as isize,
            udata: self.udata.load(Relaxed) as usize,
        }
    }

    fn new_of(ident: u64, filter: i16, flags: u16, fflags: u32, data: i64, udata: u64) -> PyKevent {
        PyKevent {
            ident: AtomicU64::new(ident),
            filter: AtomicI16::new(filter),
            flags: AtomicU16::new(flags),
            fflags: AtomicU32::new(fflags),
            data: AtomicI64::new(data),
            udata: AtomicU64::new(udata),
        }
    }

    fn from_kevent(k: &Kevent) -> PyKevent {
        PyKevent::new_of(k.ident as u64, k.filter, k.flags, k.fflags, k.data as i64, k.udata as u64)
    }

    fn key(&self) -> (u64, i16, u16, u32, i64, i64) {
        let k = self.to_kevent();
        (k.ident as u64, k.filter, k.flags, k.fflags, k.data as i64, k.udata as i64)
    }
}

#[pymethods]
impl PyKevent {
    #[new]
    #[pyo3(signature = (*args, **kwargs), text_signature = "(ident, filter=-1, flags=1, fflags=0, data=0, udata=0)")]
    fn new(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<PyKevent> {
        // CPython's "O|hHILK:kevent" parsing: an explicit None is a value (and a TypeError), not "omitted".
        let nkw = kwargs.map_or(0, |k| k.len());
        if args.len() + nkw > 6 {
            return Err(PyTypeError::new_err(format!(
                "kevent() takes at most 6 arguments ({} given)",
                args.len() + nkw
            )));
        }
        let mut vals: [Option<Bound<'_, PyAny>>; 6] = Default::default();
        for (i, a) in args.iter().enumerate() {
            vals[i] = Some(a);
        }
        if let Some(kw) = kwargs {
            for (k, v) in kw.iter() {
                let key: String = k.extract()?;
                let Some(i) = KEVENT_ARGS.iter().position(|n| *n == key) else {
                    return Err(PyTypeError::new_err(format!("'{key}' is an invalid keyword argument for kevent()")));
                };
                if vals[i].is_some() {
                    return Err(PyTypeError::new_err(format!(
                        "argument for kevent() given by name ('{key}') and position ({})",
                        i + 1
                    )));
                }
                vals[i] = Some(v);
            }
        }
        let [ident, filter, flags, fflags, data, udata] = vals;
        let Some(ident) = ident else {
            return Err(PyTypeError::new_err("kevent() missing required argument 'ident' (pos 1)"));
        };
        let filter = match filter {
            None => EVFILT_READ,
            Some(f) => {
                let v = as_long(&f)?;
                if v < i16::MIN as i64 {
                    return Err(PyOverflowError::new_err("signed short integer is less than minimum"));
                }
                if v > i16::MAX as i64 {
                    return Err(PyOverflowError::new_err("signed short integer is greater than maximum"));
                }
                v as i16
            }
        };
        let flags = match flags {
            None => EV_ADD,
            Some(f) => masked(&f, 16)? as u16,
        };
        let fflags = match fflags {
            None => 0,
            Some(f) => masked(&f, 32)? as u32,
        };
        let data = match data {
            None => 0,
            Some(d) => {
                as_index(&d)?.extract::<i64>().map_err(|_| PyOverflowError::new_err("int too big to convert"))?
            }
        };
        let udata = match udata {
            None => 0,
            Some(u) => {
                if u.cast::<PyInt>().is_err() {
                    let what = if u.is_none() { "None".to_string() } else { type_name(&u) };
                    return Err(PyTypeError::new_err(format!("kevent() argument 6 must be int, not {what}")));
                }
                masked(&u, 64)?
            }
        };
        let ident = ident_of(&ident)? as u64;
        Ok(PyKevent::new_of(ident, filter, flags, fflags, data, udata))
    }

    #[deleter]
    fn delete_ident(&self) -> PyResult<()> {
        settable(None).map(|_| ())
    }
    #[deleter]
    fn delete_filter(&self) -> PyResult<()> {
        settable(None).map(|_| ())
    }
    #[deleter]
    fn delete_flags(&self) -> PyResult<()> {
        settable(None).map(|_| ())
    }
    #[deleter]
    fn delete_fflags(&self) -> PyResult<()> {
        settable(None).map(|_| ())
    }
    #[deleter]
    fn delete_data(&self) -> PyResult<()> {
        settable(None).map(|_| ())
    }
    #[deleter]
    fn delete_udata(&self) -> PyResult<()> {
        settable(None).map(|_| ())
    }

    #[setter]
    fn set_ident(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.ident.store(as_unsigned_member(v)?, Relaxed);
        Ok(())
    }

    #[setter]
    fn set_filter(&self, py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let x = as_long(v)?;
        self.filter.store(truncating(py, x, i16::MIN as i64, i16::MAX as i64, "short")? as i16, Relaxed);
        Ok(())
    }

    #[setter]
    fn set_flags(&self, py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let x = as_long(v)?;
        self.flags.store(truncating(py, x, 0, u16::MAX as i64, "unsigned short")? as u16, Relaxed);
        Ok(())
    }

    #[setter]
    fn set_fflags(&self, py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let x = as_long(v)?;
        self.fflags.store(truncating(py, x, 0, u32::MAX as i64, "unsigned int")? as u32, Relaxed);
        Ok(())
    }

    #[setter]
    fn set_data(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let d = as_index(v)?.extract::<i64>().map_err(|_| PyOverflowError::new_err("int too big to convert"))?;
        self.data.store(d, Relaxed);
        Ok(())
    }

    #[setter]
    fn set_udata(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.udata.store(as_unsigned_member(v)?, Relaxed);
        Ok(())
    }

    #[getter]
    fn ident(&self) -> u64 {
        self.ident.load(Relaxed)
    }
    #[getter]
    fn filter(&self) -> i16 {
        self.filter.load(Relaxed)
    }
    #[getter]
    fn flags(&self) -> u16 {
        self.flags.load(Relaxed)
    }
    #[getter]
    fn fflags(&self) -> u32 {
        self.fflags.load(Relaxed)
    }
    #[getter]
    fn data(&self) -> i64 {
        self.data.load(Relaxed)
    }
    #[getter]
    fn udata(&self) -> u64 {
        self.udata.load(Relaxed)
    }

    fn __repr__(&self) -> String {
        let k = self.to_kevent();
        format!(
            "<kqrs.kevent ident={} filter={} flags=0x{:x} fflags=0x{:x} data=0x{:x} udata=0x{:x}>",
            k.ident, k.filter, k.flags, k.fflags, k.data as u64, k.udata
        )
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp, py: Python<'_>) -> Py<PyAny> {
        let Ok(o) = other.cast::<PyKevent>() else {
            return py.NotImplemented();
        };
        let (a, b) = (self.key(), o.get().key());
        let r = match op {
            CompareOp::Lt => a < b,
            CompareOp::Le => a <= b,
            CompareOp::Eq => a == b,
            CompareOp::Ne => a != b,
            CompareOp::Gt => a > b,
            CompareOp::Ge => a >= b,
        };
        r.into_pyobject(py).map(|b| b.to_owned().into_any().unbind()).unwrap_or_else(|_| py.NotImplemented())
    }

    fn __hash__(&self) -> PyResult<isize> {
        Err(PyTypeError::new_err("unhashable type: 'kqrs.kevent'"))
    }
}

/// A positional argument that may be missing (PyO3 hands an explicit None over as `Some(None)`), so that
/// arity errors can say what CPython says.
pub(crate) struct Arg<'a, 'py>(Option<Borrowed<'a, 'py, PyAny>>);

impl Arg<'_, '_> {
    const MISSING: Self = Arg(None);
}

impl<'a, 'py> FromPyObject<'a, 'py> for Arg<'a, 'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(Arg(Some(obj)))
    }
}

fn register(kq: &Arc<Kqueue>) {
    crate::registry::register(kq);
}

fn find(fd: i32) -> Option<Arc<Kqueue>> {
    crate::registry::find_fd(fd)
}

/// Timeout in ns, CPython's way: None = forever; rounded away from zero; TypeError for anything that is
/// not a number (or does not fit); ValueError when negative.
fn timeout_ns(t: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    let Some(t) = t else { return Ok(None) };
    if t.is_none() {
        return Ok(None);
    }
    let bad = || PyTypeError::new_err(format!("timeout argument must be a number or None, got {}", type_name(t)));
    let ns: i128 = if let Ok(f) = t.cast::<PyFloat>() {
        let v = f.value() * 1e9;
        if !v.is_finite() || v.abs() > i64::MAX as f64 {
            return Err(bad());
        }
        (if v >= 0.0 { v.ceil() } else { v.floor() }) as i128
    } else {
        let i = as_index(t).map_err(|_| bad())?;
        let s: i64 = i.extract().map_err(|_| bad())?;
        (s as i128).checked_mul(1_000_000_000).filter(|v| v.abs() <= i64::MAX as i128).ok_or_else(bad)?
    };
    if ns < 0 {
        return Err(PyValueError::new_err("timeout must be positive or None"));
    }
    Ok(Some(ns as u64))
}

/// A kqueue, as `select.kqueue`.
#[pyclass(name = "kqueue", module = "kqrs", frozen)]
pub struct PyKqueue {
    kq: Arc<Kqueue>,
}

impl PyKqueue {
    fn check_open(&self) -> PyResult<()> {
        if self.kq.is_closed() {
            Err(PyValueError::new_err(CLOSED_MSG))
        } else {
            Ok(())
        }
    }
}

/// Built for free-threaded CPython (no GIL: nothing to hand over around a wake-up).
pub(crate) const FREE_THREADED: bool = {
    let v = env!("KQRS_BUILD_FREE_THREADED").as_bytes();
    v.len() == 1 && v[0] == b'1'
};

thread_local! {
    /// Each thread's reusable output buffer, so a control() call does not allocate its event array.
    static OUTBUF: std::cell::RefCell<Vec<Kevent>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with an output buffer of `n` events: on the stack for a handful, else the thread's own when
/// free (a signal handler may call control() while an outer call holds it), else a fresh one.
#[inline(always)]
pub(crate) fn with_outbuf<R>(n: usize, f: impl FnOnce(&mut [Kevent]) -> R) -> R {
    if n <= 8 {
        let mut small = [Kevent::default(); 8];
        return f(&mut small[..n]);
    }
    OUTBUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < n {
                v.resize(n, Kevent::default());
            }
            let r = f(&mut v[..n]);
            if v.len() > 65536 {
                // do not keep a huge buffer alive after a one-off call
                v.truncate(65536);
                v.shrink_to_fit();
            }
            r
        }
        Err(_) => f(&mut vec![Kevent::default(); n]),
    })
}

/// One kevent() call from Python: applies `changes` and collects into `out` as `wait` says. The GIL is
/// released only when the call may block or has changes to apply; on EINTR the signal handlers run (an
/// exception from one ends the call: PEP 475) and the wait goes on for the time left.
/// (Inlined for a poll, whose epoll_wait then runs in the caller's frame: see sys/direct.rs.)
#[inline(always)]
pub(crate) fn kevent_py(
    py: Python<'_>,
    kq: &Kqueue,
    changes: &[Kevent],
    out: &mut [Kevent],
    wait: Wait,
) -> Result<usize, PyErr> {
    if changes.is_empty() && wait == Wait::Poll {
        // Cannot block: no need to release the GIL.
        return kq.collect(out, wait).map_err(|e| map_err(kq, e));
    }
    kevent_py_general(py, kq, changes, out, wait)
}

#[inline(never)]
fn kevent_py_general(
    py: Python<'_>,
    kq: &Kqueue,
    changes: &[Kevent],
    out: &mut [Kevent],
    wait: Wait,
) -> Result<usize, PyErr> {
    if (wait == Wait::Poll || out.is_empty()) && changes.len() <= 64 {
        // A few changes and no wait: applied with the GIL held (as epoll.register is), but a kick that
        // wakes another thread is made with the GIL released, as os.eventfd_write makes its write: the
        // woken thread needs the GIL as soon as it wakes (holding it across the kick doubles the
        // cross-thread wake-up latency).
        let (r, kick) = kq.apply_deferring_kick(changes, out);
        if kick.is_some() && !FREE_THREADED {
            py.detach(move || kick.fire());
        } else {
            drop(kick);
        }
        return match r {
            Ok(None) if !out.is_empty() => kq.collect(out, Wait::Poll).map_err(|e| map_err(kq, e)),
            r => r.map(|n| n.unwrap_or(0)).map_err(|e| map_err(kq, e)),
        };
    }
    if changes.is_empty() && !out.is_empty() {
        // A wait often finds an event ready at once (an event loop's select() right after its callbacks
        // wrote): look first, with the GIL held, and only an empty look goes on to the wait, which
        // releases the GIL, reads the clock for its slices and has the kernel set up a timeout.
        let n = kq.collect(out, Wait::Poll).map_err(|e| map_err(kq, e))?;
        if n > 0 {
            return Ok(n);
        }
    }
    // A long wait goes in slices; after an empty one the kqueue checks that its fd was not closed behind
    // its back (os.close() of it by another thread wakes no one): then the wait fails with EBADF.
    let first = slice(wait);
    let sliced = !out.is_empty() && first != wait;
    if sliced {
        let _ = kq.watch_own_fd(); // (without a duplicate, a close behind its back cannot be told)
    }
    let mut res = py.detach(|| kq.kevent_once(changes, out, first));
    loop {
        match res {
            Err(Errno(libc::EINTR)) => {
                py.check_signals()?;
                res = py.detach(|| kq.collect_shared(out, slice(wait)));
            }
            Ok(0) if sliced && !expired(wait) => {
                // A signal that came between two slices interrupted no wait: its handlers run now (an
                // exception from one ends the call), as they would have at the EINTR of one long wait.
                py.check_signals()?;
                if kq.closed_behind() {
                    return Err(os_error(Errno(libc::EBADF)));
                }
                res = py.detach(|| kq.collect_shared(out, slice(wait)));
            }
            r => return r.map_err(|e| map_err(kq, e)),
        }
    }
}

/// How long a blocked control() waits before it checks that its kqueue's fd is still open.
const OWN_FD_CHECK_NS: u64 = 1_000_000_000;

/// The next slice of `wait`: at most OWN_FD_CHECK_NS from now.
fn slice(wait: Wait) -> Wait {
    if wait == Wait::Poll {
        return wait; // (no clock read for a call that cannot wait)
    }
    let end = crate::sys::clock_ns(false).saturating_add(OWN_FD_CHECK_NS);
    match wait {
        Wait::Forever => Wait::Until(end),
        Wait::Until(d) if d > end => Wait::Until(end),
        w => w,
    }
}

fn expired(wait: Wait) -> bool {
    match wait {
        Wait::Poll => true,
        Wait::Forever => false,
        Wait::Until(d) => crate::sys::clock_ns(false) >= d,
    }
}

/// An engine error as Python sees it: ValueError on a closed kqueue (CPython's message), else OSError.
pub(crate) fn map_err(kq: &Kqueue, e: Errno) -> PyErr {
    if e.0 == libc::EBADF && kq.is_closed() {
        PyValueError::new_err(CLOSED_MSG)
    } else {
        os_error(e)
    }
}

/// The changes of a changelist, on the stack when there are few.
enum Changes {
    Small([Kevent; 4], usize),
    Many(Vec<Kevent>),
}

impl Changes {
    fn push(&mut self, k: Kevent) {
        match self {
            Changes::Small(a, n) if *n < a.len() => {
                a[*n] = k;
                *n += 1;
            }
            Changes::Small(a, n) => {
                let mut v = a[..*n].to_vec();
                v.push(k);
                *self = Changes::Many(v);
            }
            Changes::Many(v) => v.push(k),
        }
    }

    fn as_slice(&self) -> &[Kevent] {
        match self {
            Changes::Small(a, n) => &a[..*n],
            Changes::Many(v) => v,
        }
    }
}

/// Timeout as a wait, CPython's way (see `timeout_ns`), with the common cases (None, 0) first.
#[inline]
fn wait_of(t: Option<&Bound<'_, PyAny>>) -> PyResult<Wait> {
    match t {
        None => Ok(Wait::Forever),
        Some(t) if t.is_none() => Ok(Wait::Forever),
        Some(t) => {
            if let Ok(i) = t.cast::<PyInt>() {
                if let Ok(0) = i.extract::<i64>() {
                    return Ok(Wait::Poll);
                }
            }
            Ok(Wait::after_ns(timeout_ns(Some(t))?))
        }
    }
}

/// A max_events argument (an int, or anything with __index__) as an i32.
#[inline]
fn max_events_of(o: &Bound<'_, PyAny>) -> PyResult<i32> {
    let too_big = || PyOverflowError::new_err("Python int too large to convert to C int");
    if let Ok(i) = o.cast::<PyInt>() {
        return i.extract::<i32>().map_err(|_| too_big());
    }
    as_index(o)?.extract().map_err(|_| too_big())
}

/// The process-wide hook on signal.signal() (see kqrs._hook_signal_module) is put in place by the first
/// EVFILT_SIGNAL knote, so that `import kqrs` alone imports nothing more.
static SIGNAL_HOOKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn hook_signal_module(py: Python<'_>) -> PyResult<()> {
    if SIGNAL_HOOKED.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    let r = py.import("kqrs").and_then(|m| m.call_method0("_hook_signal_module")).map(|_| ());
    if r.is_err() {
        SIGNAL_HOOKED.store(false, Ordering::Release);
    }
    r
}

#[pymethods]
impl PyKqueue {
    #[new]
    #[pyo3(signature = (*args, **kwargs), text_signature = "()")]
    fn new(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyAny>>) -> PyResult<PyKqueue> {
        if !args.is_empty() {
            return Err(PyTypeError::new_err("kqueue() takes no positional arguments"));
        }
        if kwargs.is_some_and(|k| k.len().unwrap_or(0) > 0) {
            return Err(PyTypeError::new_err("kqueue() takes no keyword arguments"));
        }
        let kq = Arc::new(Kqueue::new().map_err(os_error)?);
        register(&kq);
        Ok(PyKqueue { kq })
    }

    /// Creates a kqueue object for `fd`: the same queue when `fd` is a live kqrs kqueue, else it adopts
    /// `fd` if it is an epoll instance (-1 makes a new kqueue, as CPython does).
    #[classmethod]
    fn fromfd(_cls: &Bound<'_, PyType>, fd: &Bound<'_, PyAny>) -> PyResult<PyKqueue> {
        let fd: i32 = as_index(fd)?
            .extract()
            .map_err(|_| PyOverflowError::new_err("Python int too large to convert to C int"))?;
        if fd == -1 {
            let kq = Arc::new(Kqueue::new().map_err(os_error)?);
            register(&kq);
            return Ok(PyKqueue { kq });
        }
        if let Some(kq) = find(fd) {
            return Ok(PyKqueue { kq });
        }
        let kq = Arc::new(Kqueue::adopt(fd).map_err(os_error)?);
        register(&kq);
        Ok(PyKqueue { kq })
    }

    #[getter]
    fn closed(&self) -> bool {
        self.kq.is_closed()
    }

    fn fileno(&self) -> PyResult<i32> {
        self.check_open()?;
        Ok(self.kq.fd())
    }

    fn close(&self, py: Python<'_>) {
        let kq = self.kq.clone();
        py.detach(move || kq.close());
    }

    fn __enter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<Self>> {
        slf.get().check_open()?;
        let _ = py;
        Ok(slf)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.close(py);
    }

    /// control(changelist, max_events, timeout=None, /) -> list of kevent
    ///
    /// Parsed as a fast call (no argument tuple): arity errors carry CPython's messages; a keyword
    /// argument is a TypeError with PyO3's wording (CPython's says "takes no keyword arguments").
    #[pyo3(
        signature = (changelist=Arg::MISSING, max_events=Arg::MISSING, timeout=Arg::MISSING, /, *rest),
        text_signature = "($self, changelist, max_events, timeout=None, /)"
    )]
    fn control<'a, 'py>(
        &self,
        py: Python<'py>,
        changelist: Arg<'a, 'py>,
        max_events: Arg<'a, 'py>,
        timeout: Arg<'a, 'py>,
        rest: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyList>> {
        let got = usize::from(changelist.0.is_some());
        let (Some(changelist), Some(max_events)) = (changelist.0, max_events.0) else {
            return Err(PyTypeError::new_err(format!("control expected at least 2 arguments, got {got}")));
        };
        if !rest.is_empty() {
            let got = 3 + rest.len();
            return Err(PyTypeError::new_err(format!("control expected at most 3 arguments, got {got}")));
        }
        self.control_impl(py, &changelist, &max_events, timeout.0.as_deref())
    }

    /// Engine counters: (knotes, absorbed wake-ups, stale events, parks, rebuilds, forged connector
    /// messages ignored). For tests and diagnostics.
    fn _stats(&self) -> (usize, u64, u64, u64, u64, u64) {
        let s = self.kq.stats();
        (self.kq.knote_count(), s.absorbed_wakeups, s.stale_events, s.parks, s.rebuilds, s.forged_messages)
    }
}

crate::sys::pycall::fast_method!(Control: PyKqueue => fast_control);

/// `kq.control(changelist, max_events[, timeout])` called with positional arguments only (sys/pycall.rs).
fn fast_control<'a, 'py>(
    py: Python<'py>,
    kq: &'a PyKqueue,
    args: &[Borrowed<'a, 'py, PyAny>],
) -> Option<PyResult<Bound<'py, PyAny>>> {
    let (changelist, max_events, timeout) = match args {
        [c, m] => (c, m, None),
        [c, m, t] => (c, m, Some(&**t)),
        _ => return None,
    };
    Some(kq.control_impl(py, changelist, max_events, timeout).map(Bound::into_any))
}

impl PyKqueue {
    fn control_impl<'py>(
        &self,
        py: Python<'py>,
        changelist: &Bound<'py, PyAny>,
        max_events: &Bound<'py, PyAny>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let maxevents = max_events_of(max_events)?;
        self.check_open()?;
        if maxevents < 0 {
            return Err(PyValueError::new_err(format!("Length of eventlist must be 0 or positive, got {maxevents}")));
        }
        let wait = wait_of(timeout)?;
        let mut changes = match changelist.cast::<PyList>() {
            Ok(list) if list.len() > 4 => Changes::Many(Vec::with_capacity(list.len())),
            _ => Changes::Small([Kevent::default(); 4], 0),
        };
        let mut signals = false;
        if !changelist.is_none() {
            let mut add = |item: &Bound<'py, PyAny>| -> PyResult<()> {
                let Ok(ev) = item.cast::<PyKevent>() else {
                    return Err(PyTypeError::new_err("changelist must be an iterable of select.kevent objects"));
                };
                let k = ev.get().to_kevent();
                signals |= k.filter == EVFILT_SIGNAL && k.flags & EV_ADD != 0;
                changes.push(k);
                Ok(())
            };
            if let Ok(list) = changelist.cast::<PyList>() {
                for item in list.iter() {
                    add(&item)?;
                }
            } else {
                let it = changelist.try_iter().map_err(|e| {
                    if e.is_instance_of::<PyTypeError>(changelist.py()) {
                        PyTypeError::new_err("changelist is not iterable")
                    } else {
                        e // an exception raised by the object's own __iter__ goes through, as in CPython
                    }
                })?;
                for item in it {
                    add(&item?)?;
                }
            }
        }
        let changes = changes.as_slice();
        let kq = &*self.kq;
        // A call reports each knote at most once: no need for more room than there are knotes (plus the
        // changes' error entries), however large max_events is.
        let max = (maxevents as usize).min((kq.knote_count_hint() + changes.len() + 64).max(4096));
        let list = with_outbuf(
            max,
            #[inline(always)]
            |out| -> PyResult<Bound<'py, PyList>> {
                let n = kevent_py(py, kq, changes, out, wait)?;
                if n == 0 {
                    return Ok(PyList::empty(py));
                }
                if n == 1 {
                    // the common poll: no vector to allocate
                    return PyList::new(py, [Bound::new(py, PyKevent::from_kevent(&out[0]))?]);
                }
                let mut objs = Vec::with_capacity(n);
                for k in &out[..n] {
                    objs.push(Bound::new(py, PyKevent::from_kevent(k))?);
                }
                PyList::new(py, objs)
            },
        )?;
        if signals {
            hook_signal_module(py)?;
        }
        Ok(list)
    }
}

/// The kernel's floor under a changelist, for the benchmarks: `epoll_ctl(ADD)` of every fd of `fds` into
/// `epfd` (a `select.epoll`'s fd) with `events`, then `epoll_ctl(DEL)` of each, in a plain loop with no
/// knotes and no Python per call. Stops at the first failure (OSError).
#[pyfunction]
#[pyo3(signature = (epfd, fds, events, /))]
fn _epoll_ctl_cycle(epfd: i32, fds: Vec<i32>, events: u32) -> PyResult<()> {
    for &fd in &fds {
        crate::sys::epoll_add(epfd, fd, events, fd as u64).map_err(os_error)?;
    }
    for &fd in &fds {
        crate::sys::epoll_del(epfd, fd).map_err(os_error)?;
    }
    Ok(())
}

#[pyfunction]
fn _has_epoll_pwait2() -> bool {
    crate::sys::has_epoll_pwait2()
}

/// Whether fork children skip the knote tables' memory (MADV_WIPEONFORK, Linux 4.14+).
#[pyfunction]
fn _has_wipeonfork() -> bool {
    crate::sys::wipeonfork_supported()
}

#[pyfunction]
fn _filter_supported(filter: i16) -> bool {
    crate::is_supported(filter)
}

/// After the application set a new disposition for `signum` (kqrs wraps signal.signal() to call this):
/// kqrs's counting handler goes back in front of it if knotes watch the signal.
#[pyfunction]
fn _signal_reassert(signum: i32) -> PyResult<()> {
    crate::sys::signal_reassert(signum).map_err(os_error)
}

/// Whether kqrs's counting handler is installed for `signum` now.
#[pyfunction]
fn _signal_hooked(signum: i32) -> bool {
    crate::sys::signal_hooked(signum)
}

/// How many fds kqrs owns in this process (all kqueues together).
#[pyfunction]
fn _owned_fd_count() -> usize {
    crate::sys::owned_fd_count()
}

/// (bytes, blocks) of Rust heap the extension holds now (every kqueue, knote and table together).
#[pyfunction]
fn _heap() -> (isize, isize) {
    heap::live()
}

/// What this machine offers EVFILT_PROC: (pidfd works, PIDFD_GET_INFO works, connector errno or 0).
#[pyfunction]
fn _proc_support(py: Python<'_>) -> (bool, bool, i32) {
    py.detach(|| {
        let pidfd = match crate::sys::pidfd_open(crate::sys::getpid()) {
            Ok(fd) => {
                crate::sys::close(fd);
                true
            }
            Err(_) => false,
        };
        let conn = match crate::sys::connector_open() {
            Ok(fd) => {
                crate::sys::close(fd);
                0
            }
            Err(e) => e.0,
        };
        (pidfd, crate::sys::has_pidfd_get_info(), conn)
    })
}

/// How this extension was built, filled in at compile time (build.rs): what `kqrs doctor` reports as the
/// build row.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", env!("CARGO_PKG_VERSION"))?;
    d.set_item("target", env!("KQRS_BUILD_TARGET"))?;
    d.set_item("glibc", env!("KQRS_BUILD_GLIBC"))?;
    d.set_item("python_abi", env!("KQRS_BUILD_PYTHON_ABI"))?;
    d.set_item("free_threaded", env!("KQRS_BUILD_FREE_THREADED") == "1")?;
    d.set_item("profile", env!("KQRS_BUILD_PROFILE"))?;
    d.set_item("debug_assertions", cfg!(debug_assertions))?;
    d.set_item("rustc", env!("KQRS_BUILD_RUSTC"))?;
    Ok(d)
}

#[pymodule]
fn _kqrs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyKqueue>()?;
    m.add_class::<PyKevent>()?;
    m.add_class::<selector::PySelector>()?;
    m.add_class::<queue::PyEventQueue>()?;
    // The hottest methods' plain calls skip PyO3's argument parser (sys/pycall.rs).
    let py = m.py();
    crate::sys::pycall::install::<0, PyKqueue, Control>(py, c"control")?;
    queue::install_fast(py)?;
    selector::install_fast(py)?;
    m.add_function(wrap_pyfunction!(_has_epoll_pwait2, m)?)?;
    m.add_function(wrap_pyfunction!(_epoll_ctl_cycle, m)?)?;
    m.add_function(wrap_pyfunction!(_has_wipeonfork, m)?)?;
    m.add_function(wrap_pyfunction!(_filter_supported, m)?)?;
    m.add_function(wrap_pyfunction!(_proc_support, m)?)?;
    m.add_function(wrap_pyfunction!(_owned_fd_count, m)?)?;
    m.add_function(wrap_pyfunction!(_heap, m)?)?;
    m.add_function(wrap_pyfunction!(_signal_reassert, m)?)?;
    m.add_function(wrap_pyfunction!(_signal_hooked, m)?)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    let filters: &[(&str, i16)] = &[
        ("KQ_FILTER_READ", EVFILT_READ),
        ("KQ_FILTER_WRITE", EVFILT_WRITE),
        ("KQ_FILTER_AIO", EVFILT_AIO),
        ("KQ_FILTER_VNODE", EVFILT_VNODE),
        ("KQ_FILTER_PROC", EVFILT_PROC),
        ("KQ_FILTER_SIGNAL", EVFILT_SIGNAL),
        ("KQ_FILTER_TIMER", EVFILT_TIMER),
        ("KQ_FILTER_NETDEV", EVFILT_NETDEV),
        ("KQ_FILTER_USER", EVFILT_USER),
        ("KQ_FILTER_PROCDESC", EVFILT_PROCDESC),
    ];
    for (n, v) in filters {
        m.add(*n, *v)?;
    }
    let flags: &[(&str, u16)] = &[
        ("KQ_EV_ADD", EV_ADD),
        ("KQ_EV_DELETE", EV_DELETE),
        ("KQ_EV_ENABLE", EV_ENABLE),
        ("KQ_EV_DISABLE", EV_DISABLE),
        ("KQ_EV_ONESHOT", EV_ONESHOT),
        ("KQ_EV_CLEAR", EV_CLEAR),
        ("KQ_EV_RECEIPT", EV_RECEIPT),
        ("KQ_EV_DISPATCH", EV_DISPATCH),
        ("KQ_EV_SYSFLAGS", EV_SYSFLAGS),
        ("KQ_EV_FLAG1", EV_FLAG1),
        ("KQ_EV_EOF", EV_EOF),
        ("KQ_EV_ERROR", EV_ERROR),
    ];
    for (n, v) in flags {
        m.add(*n, *v)?;
    }
    let notes: &[(&str, u32)] = &[
        ("KQ_NOTE_LOWAT", NOTE_LOWAT),
        ("KQ_NOTE_DELETE", NOTE_DELETE),
        ("KQ_NOTE_WRITE", NOTE_WRITE),
        ("KQ_NOTE_EXTEND", NOTE_EXTEND),
        ("KQ_NOTE_ATTRIB", NOTE_ATTRIB),
        ("KQ_NOTE_LINK", NOTE_LINK),
        ("KQ_NOTE_RENAME", NOTE_RENAME),
        ("KQ_NOTE_REVOKE", NOTE_REVOKE),
        ("KQ_NOTE_TRUNCATE", NOTE_TRUNCATE),
        ("KQ_NOTE_OPEN", NOTE_OPEN),
        ("KQ_NOTE_CLOSE", NOTE_CLOSE),
        ("KQ_NOTE_CLOSE_WRITE", NOTE_CLOSE_WRITE),
        ("KQ_NOTE_READ", NOTE_READ),
        ("KQ_NOTE_EXIT", NOTE_EXIT),
        ("KQ_NOTE_FORK", NOTE_FORK),
        ("KQ_NOTE_EXEC", NOTE_EXEC),
        ("KQ_NOTE_PCTRLMASK", NOTE_PCTRLMASK),
        ("KQ_NOTE_PDATAMASK", NOTE_PDATAMASK),
        ("KQ_NOTE_TRACK", NOTE_TRACK),
        ("KQ_NOTE_TRACKERR", NOTE_TRACKERR),
        ("KQ_NOTE_CHILD", NOTE_CHILD),
        ("KQ_NOTE_EXITSTATUS", NOTE_EXITSTATUS),
        ("KQ_NOTE_LINKUP", NOTE_LINKUP),
        ("KQ_NOTE_LINKDOWN", NOTE_LINKDOWN),
        ("KQ_NOTE_LINKINV", NOTE_LINKINV),
        ("KQ_NOTE_TRIGGER", NOTE_TRIGGER),
        ("KQ_NOTE_FFNOP", NOTE_FFNOP),
        ("KQ_NOTE_FFAND", NOTE_FFAND),
        ("KQ_NOTE_FFOR", NOTE_FFOR),
        ("KQ_NOTE_FFCOPY", NOTE_FFCOPY),
        ("KQ_NOTE_FFCTRLMASK", NOTE_FFCTRLMASK),
        ("KQ_NOTE_FFLAGSMASK", NOTE_FFLAGSMASK),
        ("KQ_NOTE_SECONDS", NOTE_SECONDS),
        ("KQ_NOTE_USECONDS", NOTE_USECONDS),
        ("KQ_NOTE_NSECONDS", NOTE_NSECONDS),
        ("KQ_NOTE_ABSOLUTE", NOTE_ABSOLUTE),
    ];
    for (n, v) in notes {
        m.add(*n, *v)?;
    }
    Ok(())
}

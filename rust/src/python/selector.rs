//! The engine of `kqrs.KqueueSelector`: a `selectors`-compatible selector whose hot paths (register,
//! unregister, modify, get_key, select) run here, straight on the engine, with no kevent objects and no
//! Python frame in between. `python/kqrs/_selector.py` subclasses it with what is not hot (get_map, repr).
//!
//! It behaves as CPython's `selectors.KqueueSelector` does on the BSDs: the same errors and messages, and
//! one `(key, events)` entry per kevent (a READ and a WRITE event for one fd are two entries), unless made
//! with `merge=True` (one entry per fd, as every other selector; kqrs.asyncio's loop uses that).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyAttributeError, PyKeyError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyFloat, PyInt, PyList, PyTuple, PyType};

use super::{kevent_py, map_err, os_error, with_outbuf, CLOSED_MSG};
use crate::consts::*;
use crate::kqueue::{Kqueue, Wait};
use crate::Kevent;

const EVENT_READ: i64 = 1;
const EVENT_WRITE: i64 = 2;
/// The most events one select() takes from the engine (every registered knote, as CPython's selector asks
/// for; more than this stay pending for the next call).
const MAX_BATCH: usize = 1 << 20;

/// `selectors.SelectorKey` and `tuple.__new__`, looked up once: a key is made with one C-level call.
static SELECTOR_KEY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TUPLE_NEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn new_key<'py>(
    py: Python<'py>,
    fileobj: &Bound<'py, PyAny>,
    fd: i64,
    events: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let cls = SELECTOR_KEY.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        Ok(py.import("selectors")?.getattr("SelectorKey")?.cast_into::<PyType>()?.unbind())
    })?;
    let tnew = TUPLE_NEW
        .get_or_try_init(py, || -> PyResult<Py<PyAny>> { Ok(py.get_type::<PyTuple>().getattr("__new__")?.unbind()) })?;
    let fields = PyTuple::new(py, [fileobj.clone(), fd.into_pyobject(py)?.into_any(), events.clone(), data.clone()])?;
    tnew.bind(py).call1((cls.bind(py), fields))
}

/// The selector's state: its kqueue and the fd → key map (a dict, as `_fd_to_key` is in CPython).
#[pyclass(name = "_Selector", module = "kqrs._kqrs", subclass, frozen)]
pub struct PySelector {
    kq: Arc<Kqueue>,
    fd_to_key: Py<PyDict>,
    /// READ and WRITE knotes registered: the most events one select() can see.
    filters: AtomicUsize,
    /// A READ and a WRITE event for one fd in one select() make one entry.
    merge: bool,
    closed: AtomicBool,
}

fn invalid_events(events: &Bound<'_, PyAny>) -> PyResult<PyErr> {
    Ok(PyValueError::new_err(format!("Invalid events: {}", events.repr()?)))
}

/// `events` as READ/WRITE bits; ValueError as CPython's `(not events) or (events & ~3)`.
fn events_of(events: &Bound<'_, PyAny>) -> PyResult<i64> {
    if let Ok(i) = events.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            if v == 0 || v & !(EVENT_READ | EVENT_WRITE) != 0 {
                return Err(invalid_events(events)?);
            }
            return Ok(v);
        }
    }
    // Anything else: Python's own truth and & (which raise TypeError for what has no &).
    if !events.is_truthy()? || events.bitand(!(EVENT_READ | EVENT_WRITE))?.is_truthy()? {
        return Err(invalid_events(events)?);
    }
    events.extract::<i64>().map_err(|_| PyTypeError::new_err("events must be an int"))
}

/// CPython's `selectors._fileobj_to_fd`.
fn fileobj_to_fd(fileobj: &Bound<'_, PyAny>) -> PyResult<i64> {
    let fd = if let Ok(i) = fileobj.cast::<PyInt>() {
        i.extract::<i64>().unwrap_or(i64::MAX)
    } else {
        let invalid = || {
            PyValueError::new_err(format!(
                "Invalid file object: {}",
                fileobj.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        };
        let py = fileobj.py();
        let r = fileobj.call_method0(pyo3::intern!(py, "fileno")).and_then(|v| py.get_type::<PyInt>().call1((v,)));
        match r {
            Ok(v) => v.extract::<i64>().unwrap_or(i64::MAX),
            Err(e)
                if e.is_instance_of::<PyAttributeError>(py)
                    || e.is_instance_of::<PyTypeError>(py)
                    || e.is_instance_of::<PyValueError>(py) =>
            {
                return Err(invalid());
            }
            Err(e) => return Err(e),
        }
    };
    if fd < 0 {
        return Err(PyValueError::new_err(format!("Invalid file descriptor: {fd}")));
    }
    Ok(fd)
}

fn not_registered(fileobj: &Bound<'_, PyAny>) -> PyResult<PyErr> {
    Ok(PyKeyError::new_err(format!("{} is not registered", fileobj.repr()?)))
}

impl PySelector {
    /// CPython's `_fileobj_lookup`: the fd, or for an object that no longer has one (closed), the fd of
    /// the key registered for it.
    fn lookup(&self, py: Python<'_>, fileobj: &Bound<'_, PyAny>) -> PyResult<i64> {
        match fileobj_to_fd(fileobj) {
            Ok(fd) => Ok(fd),
            Err(e) if e.is_instance_of::<PyValueError>(py) => {
                for key in self.fd_to_key.bind(py).values() {
                    if key.get_item(0)?.is(fileobj) {
                        return key.get_item(1)?.extract();
                    }
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn change(&self, fd: i64, filter: i16, flags: u16) -> Result<(), crate::Errno> {
        let ch = [Kevent::new(usize::try_from(fd).unwrap_or(usize::MAX), filter, flags, 0, 0, 0)];
        self.kq.apply(&ch, &mut []).map(|_| ())
    }

    /// Adds the knotes for `events` (rolling back the first if the second fails).
    fn add(&self, fd: i64, events: i64) -> PyResult<()> {
        let mut done = 0;
        for (bit, filter) in [(EVENT_READ, EVFILT_READ), (EVENT_WRITE, EVFILT_WRITE)] {
            if events & bit == 0 {
                continue;
            }
            if let Err(e) = self.change(fd, filter, EV_ADD) {
                if done != 0 {
                    let _ = self.change(fd, EVFILT_READ, EV_DELETE);
                    self.filters.fetch_sub(1, Ordering::Relaxed);
                }
                return Err(map_err(&self.kq, e));
            }
            self.filters.fetch_add(1, Ordering::Relaxed);
            done |= bit;
        }
        Ok(())
    }

    /// Deletes the knotes for `events`; an fd closed since it was registered is no error (as CPython).
    fn remove(&self, fd: i64, events: i64) -> PyResult<()> {
        for (bit, filter) in [(EVENT_READ, EVFILT_READ), (EVENT_WRITE, EVFILT_WRITE)] {
            if events & bit == 0 {
                continue;
            }
            self.filters.fetch_sub(1, Ordering::Relaxed);
            match self.change(fd, filter, EV_DELETE) {
                Err(e) if e.0 == libc::EBADF && self.kq.is_closed() => return Err(map_err(&self.kq, e)),
                _ => {}
            }
        }
        Ok(())
    }

    fn key_events(key: &Bound<'_, PyAny>) -> PyResult<i64> {
        key.get_item(2)?.extract()
    }
}

/// The selector's hot methods as most calls are made, positional arguments only (sys/pycall.rs); any other
/// call goes to the full methods below.
fn fast_select<'a, 'py>(
    py: Python<'py>,
    s: &'a PySelector,
    args: &[Borrowed<'a, 'py, PyAny>],
) -> Option<PyResult<Bound<'py, PyAny>>> {
    let timeout = match args {
        [] => None,
        [t] => Some(&**t),
        _ => return None,
    };
    Some(s.select(py, timeout).map(Bound::into_any))
}

fn fast_register<'a, 'py>(
    py: Python<'py>,
    s: &'a PySelector,
    args: &[Borrowed<'a, 'py, PyAny>],
) -> Option<PyResult<Bound<'py, PyAny>>> {
    match args {
        [f, e] => Some(s.register(py, f, e, None)),
        [f, e, d] => Some(s.register(py, f, e, Some(d))),
        _ => None,
    }
}

fn fast_modify<'a, 'py>(
    py: Python<'py>,
    s: &'a PySelector,
    args: &[Borrowed<'a, 'py, PyAny>],
) -> Option<PyResult<Bound<'py, PyAny>>> {
    match args {
        [f, e] => Some(s.modify(py, f, e, None)),
        [f, e, d] => Some(s.modify(py, f, e, Some(d))),
        _ => None,
    }
}

fn fast_unregister<'a, 'py>(
    py: Python<'py>,
    s: &'a PySelector,
    args: &[Borrowed<'a, 'py, PyAny>],
) -> Option<PyResult<Bound<'py, PyAny>>> {
    let [f] = args else { return None };
    Some(s.unregister(py, f))
}

fn fast_get_key<'a, 'py>(
    py: Python<'py>,
    s: &'a PySelector,
    args: &[Borrowed<'a, 'py, PyAny>],
) -> Option<PyResult<Bound<'py, PyAny>>> {
    let [f] = args else { return None };
    Some(s.get_key(py, f))
}

crate::sys::pycall::fast_method!(Select: PySelector => fast_select);
crate::sys::pycall::fast_method!(Register: PySelector => fast_register);
crate::sys::pycall::fast_method!(Modify: PySelector => fast_modify);
crate::sys::pycall::fast_method!(Unregister: PySelector => fast_unregister);
crate::sys::pycall::fast_method!(GetKey: PySelector => fast_get_key);

/// Installs the fast paths above (slots 5-9 of sys/pycall.rs).
pub(crate) fn install_fast(py: Python<'_>) -> PyResult<()> {
    use crate::sys::pycall::install;
    install::<5, PySelector, Select>(py, c"select")?;
    install::<6, PySelector, Register>(py, c"register")?;
    install::<7, PySelector, Modify>(py, c"modify")?;
    install::<8, PySelector, Unregister>(py, c"unregister")?;
    install::<9, PySelector, GetKey>(py, c"get_key")
}

#[pymethods]
impl PySelector {
    #[new]
    #[pyo3(signature = (*, merge=false))]
    fn new(py: Python<'_>, merge: bool) -> PyResult<PySelector> {
        let kq = Arc::new(Kqueue::new().map_err(os_error)?);
        // select() returns keys and event masks, never `data`: no byte counts (one syscall or two per event).
        kq.use_levels_only();
        crate::registry::register(&kq);
        Ok(PySelector {
            kq,
            fd_to_key: PyDict::new(py).unbind(),
            filters: AtomicUsize::new(0),
            merge,
            closed: AtomicBool::new(false),
        })
    }

    /// The fd → SelectorKey map (CPython's `_fd_to_key`).
    #[getter]
    fn _fd_to_key(&self, py: Python<'_>) -> Py<PyDict> {
        self.fd_to_key.clone_ref(py)
    }

    /// Whether close() was called.
    #[getter]
    fn _closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// CPython's `_fileobj_lookup`.
    fn _fileobj_lookup(&self, py: Python<'_>, fileobj: &Bound<'_, PyAny>) -> PyResult<i64> {
        self.lookup(py, fileobj)
    }

    /// The kqueue's fd.
    fn fileno(&self) -> PyResult<i32> {
        if self.kq.is_closed() {
            return Err(PyValueError::new_err(CLOSED_MSG));
        }
        Ok(self.kq.fd())
    }

    /// Registers `fileobj` for `events` (EVENT_READ and/or EVENT_WRITE) with `data`; returns its key.
    #[pyo3(signature = (fileobj, events, data=None))]
    fn register<'py>(
        &self,
        py: Python<'py>,
        fileobj: &Bound<'py, PyAny>,
        events: &Bound<'py, PyAny>,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ev = events_of(events)?;
        let fd = self.lookup(py, fileobj)?;
        let map = self.fd_to_key.bind(py);
        if map.contains(fd)? {
            return Err(PyKeyError::new_err(format!("{} (FD {fd}) is already registered", fileobj.repr()?)));
        }
        let none = py.None().into_bound(py);
        let key = new_key(py, fileobj, fd, events, data.unwrap_or(&none))?;
        self.add(fd, ev)?;
        map.set_item(fd, &key)?;
        Ok(key)
    }

    /// Unregisters `fileobj`; returns its key.
    fn unregister<'py>(&self, py: Python<'py>, fileobj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let fd = self.lookup(py, fileobj)?;
        let map = self.fd_to_key.bind(py);
        let Some(key) = map.get_item(fd)? else { return Err(not_registered(fileobj)?) };
        map.del_item(fd)?;
        self.remove(fd, Self::key_events(&key)?)?;
        Ok(key)
    }

    /// Changes the events or the data `fileobj` is registered with; returns the new key. Only the knotes
    /// that change are touched.
    #[pyo3(signature = (fileobj, events, data=None))]
    fn modify<'py>(
        &self,
        py: Python<'py>,
        fileobj: &Bound<'py, PyAny>,
        events: &Bound<'py, PyAny>,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let fd = self.lookup(py, fileobj)?;
        let map = self.fd_to_key.bind(py);
        let Some(key) = map.get_item(fd)? else { return Err(not_registered(fileobj)?) };
        let none = py.None().into_bound(py);
        let data = data.unwrap_or(&none);
        let old = key.get_item(2)?;
        if events.ne(&old)? {
            // CPython unregisters and registers again: the new key has the new file object and data.
            let ev = match events_of(events) {
                Ok(ev) => ev,
                Err(e) => {
                    map.del_item(fd)?;
                    self.remove(fd, Self::key_events(&key)?)?;
                    return Err(e);
                }
            };
            let was = Self::key_events(&key)?;
            let new = new_key(py, fileobj, fd, events, data)?;
            if let Err(e) = self.add(fd, ev & !was) {
                map.del_item(fd)?;
                self.remove(fd, was)?;
                return Err(e);
            }
            self.remove(fd, was & !ev)?;
            map.set_item(fd, &new)?;
            return Ok(new);
        }
        if data.ne(key.get_item(3)?)? {
            let new = new_key(py, &key.get_item(0)?, fd, &old, data)?;
            map.set_item(fd, &new)?;
            return Ok(new);
        }
        Ok(key)
    }

    /// Waits up to `timeout` seconds (None: forever) for registered files to be ready; returns a list of
    /// (key, events), one per event (READ and WRITE separately, as CPython's KqueueSelector).
    #[pyo3(signature = (timeout=None))]
    fn select<'py>(&self, py: Python<'py>, timeout: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyList>> {
        let wait = match timeout {
            None => Wait::Forever,
            Some(t) if t.is_none() => Wait::Forever,
            Some(t) => {
                let secs: f64 = if let Ok(i) = t.cast::<PyInt>() {
                    i.extract::<i64>().map(|v| v as f64).unwrap_or(f64::MAX)
                } else if let Ok(f) = t.cast::<PyFloat>() {
                    f.value()
                } else {
                    t.extract::<f64>()?
                };
                if secs.is_nan() {
                    return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
                }
                if secs <= 0.0 {
                    Wait::Poll
                } else {
                    let ns = (secs * 1e9).ceil();
                    Wait::after_ns(if ns >= u64::MAX as f64 { None } else { Some(ns as u64) })
                }
            }
        };
        let max = self.filters.load(Ordering::Relaxed).clamp(1, MAX_BATCH);
        let kq = &*self.kq;
        with_outbuf(max, |out| -> PyResult<Bound<'py, PyList>> {
            let n = kevent_py(py, kq, &[], out, wait)?;
            let ready = PyList::empty(py);
            if n == 0 {
                return Ok(ready);
            }
            let map = self.fd_to_key.bind(py);
            let merge = self.merge && n > 1;
            // (fd, index in `ready`, events so far), when a READ and a WRITE for one fd make one entry
            let mut seen: Vec<(usize, usize, i64)> = Vec::new();
            for k in &out[..n] {
                let Some(key) = map.get_item(k.ident)? else { continue };
                let bit = if k.filter == EVFILT_READ { EVENT_READ } else { EVENT_WRITE };
                let ev = bit & Self::key_events(&key)?;
                if merge {
                    if let Some(s) = seen.iter_mut().find(|s| s.0 == k.ident) {
                        s.2 |= ev;
                        ready.set_item(s.1, PyTuple::new(py, [key, s.2.into_pyobject(py)?.into_any()])?)?;
                        continue;
                    }
                    seen.push((k.ident, ready.len(), ev));
                }
                ready.append(PyTuple::new(py, [key, ev.into_pyobject(py)?.into_any()])?)?;
            }
            Ok(ready)
        })
    }

    /// Closes the selector and its kqueue.
    fn close(&self, py: Python<'_>) {
        self.closed.store(true, Ordering::Release);
        let kq = self.kq.clone();
        py.detach(move || kq.close());
        self.fd_to_key.bind(py).clear();
        self.filters.store(0, Ordering::Relaxed);
    }

    /// The key `fileobj` is registered with (KeyError if it is not; RuntimeError once closed).
    fn get_key<'py>(&self, py: Python<'py>, fileobj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PyRuntimeError::new_err("Selector is closed"));
        }
        let fd = self.lookup(py, fileobj)?;
        match self.fd_to_key.bind(py).get_item(fd)? {
            Some(k) => Ok(k),
            None => Err(not_registered(fileobj)?),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.close(py);
    }
}

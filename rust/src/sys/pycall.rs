//! CPython's calling convention for the hottest Python methods (`kqueue.control`, `EventQueue.put` and
//! `get`): their common calls skip PyO3's generic argument parser and call trampoline.
//!
//! PyO3 turns every method into a METH_FASTCALL|METH_KEYWORDS function that parses its arguments against a
//! description (defaults, keywords, `*args`) and runs the body under a thread-local call counter and a
//! panic guard: some 20-30 ns a call, as much as `queue.SimpleQueue.put` costs whole. `install` puts a
//! plain METH_FASTCALL|METH_KEYWORDS function of kqrs's own in front of such a method: a call with only
//! positional arguments, at most `MAX_ARGS` of them, goes to a `Fast` function written in safe Rust; it
//! answers it, or says `None` and the call goes on to PyO3's method unchanged, as does any call with
//! keywords. Behaviour, errors and signatures stay PyO3's.
//!
//! What this trampoline does not do that PyO3's does: count the thread as inside a PyO3 call, and drain
//! PyO3's pool of deferred releases (behind a process-wide mutex, which made PyO3's trampoline cost as much
//! as the queue's whole `put` across threads). So a `Py` dropped in a `Fast` function is released at PyO3's
//! next call, not at once: the fast functions drop `Bound`s, which are released at once (queue.rs keeps
//! items as `Bound` until they are stored).

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::OnceLock;

use pyo3::exceptions::PySystemError;
use pyo3::ffi;
use pyo3::panic::PanicException;
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::True;
use pyo3::PyClass;

/// The most positional arguments a fast call takes.
pub const MAX_ARGS: usize = 3;

/// A method's fast path: the instance (of class `T`, frozen), the positional arguments. `None`: not handled
/// here, the call goes to PyO3's method. A type per method (see `fast_method!`), so that each slot's
/// trampoline calls it directly (inlined: no indirect call, and the result never goes through memory).
pub trait Fast<T> {
    fn call<'a, 'py>(
        py: Python<'py>,
        this: &'a T,
        args: &[Borrowed<'a, 'py, PyAny>],
    ) -> Option<PyResult<Bound<'py, PyAny>>>;
}

/// `fast_method!(Name: Class => function)`: the `Fast` type `Name` whose `call` is `function`.
macro_rules! fast_method {
    ($name:ident: $t:ty => $f:path) => {
        pub(crate) struct $name;
        impl $crate::sys::pycall::Fast<$t> for $name {
            #[inline(always)]
            fn call<'a, 'py>(
                py: pyo3::Python<'py>,
                this: &'a $t,
                args: &[pyo3::Borrowed<'a, 'py, pyo3::PyAny>],
            ) -> Option<pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>>> {
                $f(py, this, args)
            }
        }
    };
}
pub(crate) use fast_method;

/// One installed method: the PyO3 method its fast path stands in front of, and the method definition
/// CPython's descriptor points to (kept here, in static memory: a definition boxed and leaked instead is a
/// small permanent heap chunk, and every one of those drains glibc's cache of free chunks, which a fork child
/// of CPython then misses: its after-fork allocations take malloc's slow path and fault in heap pages).
struct Slot {
    full: Py<PyAny>,
    def: MethodDef,
    /// The docstring `def` points to.
    _doc: std::ffi::CString,
}

/// A `PyMethodDef` that may live in a static.
struct MethodDef(ffi::PyMethodDef);
// SAFETY: written once before it is shared (inside the slot's OnceLock), read-only afterwards; its pointers
// are to 'static data (the name, the trampoline) and to the slot's own docstring, which lives as long.
unsafe impl Sync for MethodDef {}
// SAFETY: as for Sync: nothing in it is tied to a thread.
unsafe impl Send for MethodDef {}

/// How many methods can be installed (one trampoline each).
const SLOTS: usize = 12;
static INSTALLED: [OnceLock<Slot>; SLOTS] = [const { OnceLock::new() }; SLOTS];

/// Calls `full` (PyO3's method, an unbound method descriptor) with `slf` and the call's own arguments.
fn call_full(
    _py: Python<'_>,
    full: &Py<PyAny>,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    let nkw = if kwnames.is_null() {
        0
    } else {
        // SAFETY: a non-null kwnames of a vectorcall is a tuple of str (CPython's contract).
        usize::try_from(unsafe { ffi::PyTuple_GET_SIZE(kwnames) }).unwrap_or(0)
    };
    let mut all = Vec::with_capacity(1 + nargs + nkw);
    all.push(slf);
    if nargs + nkw > 0 {
        // SAFETY: a vectorcall's `args` holds `nargs` positional arguments followed by one value per
        // keyword name, all valid for the call.
        all.extend_from_slice(unsafe { std::slice::from_raw_parts(args, nargs + nkw) });
    }
    // SAFETY: `full` is a live callable; `all` holds `1 + nargs` positional arguments and the keyword
    // values, borrowed for the call; kwnames is the caller's (or null). A null result has an exception set,
    // which goes to our caller as it is.
    unsafe { ffi::PyObject_Vectorcall(full.as_ptr(), all.as_ptr(), 1 + nargs, kwnames) }
}

/// The body of every trampoline: the fast path when the call is plain, else PyO3's method.
#[inline(always)]
fn dispatch<T: PyClass<Frozen = True> + Sync, F: Fast<T>>(
    id: usize,
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls a method's C function with the GIL held (or, free-threaded, attached to the
    // interpreter): the token is valid for this call.
    let py = unsafe { Python::assume_attached() };
    let Some(slot) = INSTALLED[id].get() else {
        // (never: a trampoline is handed to CPython only once its slot is set)
        PanicException::new_err("kqrs: fast method called before it was installed").restore(py);
        return std::ptr::null_mut();
    };
    let nargs = usize::try_from(nargs).unwrap_or(usize::MAX);
    let Some(slf_nn) = NonNull::new(slf) else {
        PySystemError::new_err("kqrs: method called without self").restore(py);
        return std::ptr::null_mut();
    };
    if (nargs > 0 || !kwnames.is_null()) && args.is_null() {
        PySystemError::new_err("kqrs: method called with arguments but no argument array").restore(py);
        return std::ptr::null_mut();
    }
    if !kwnames.is_null() || nargs > MAX_ARGS {
        return call_full(py, &slot.full, slf, args, nargs, kwnames);
    }
    // SAFETY: `slf` is the instance the method descriptor was called on, alive for the call.
    let me = unsafe { Borrowed::from_ptr(py, slf_nn.as_ptr()) };
    // SAFETY: CPython's method descriptor checks that `self` is an instance of the type it was made for
    // (descr_check, before calling the C function), and `install::<ID, T, F>` made this slot's descriptor on
    // `T`'s type.
    let this = unsafe { me.cast_unchecked::<T>() };
    let mut buf = [me; MAX_ARGS];
    for (i, b) in buf.iter_mut().enumerate().take(nargs) {
        // SAFETY: `args[i]` for i < nargs is a positional argument, a valid object borrowed for the call.
        *b = unsafe { Borrowed::from_ptr(py, *args.add(i)) };
    }
    let r = catch_unwind(AssertUnwindSafe(|| F::call(py, this.get(), &buf[..nargs])));
    match r {
        Ok(None) => call_full(py, &slot.full, slf, args, nargs, kwnames),
        Ok(Some(Ok(obj))) => obj.into_ptr(),
        Ok(Some(Err(e))) => {
            e.restore(py);
            std::ptr::null_mut()
        }
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic in kqrs".into());
            PanicException::new_err(msg).restore(py);
            std::ptr::null_mut()
        }
    }
}

/// The trampoline of slot `ID`, as CPython calls a METH_FASTCALL|METH_KEYWORDS method.
extern "C" fn trampoline<const ID: usize, T: PyClass<Frozen = True> + Sync, F: Fast<T>>(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    dispatch::<T, F>(ID, slf, args, nargs, kwnames)
}

/// Puts `F` in front of the method `name` of class `T` (made, not yet used): slot `ID` must be free.
/// The method keeps its name, its docstring and text signature (PyO3's, copied).
pub fn install<const ID: usize, T: PyClass<Frozen = True> + Sync, F: Fast<T>>(
    py: Python<'_>,
    name: &'static CStr,
) -> PyResult<()> {
    const { assert!(ID < SLOTS) };
    let ty = py.get_type::<T>();
    let full = ty.getattr(name.to_str().unwrap_or_default())?;
    let doc: Option<String> = full.getattr("__doc__")?.extract()?;
    let sig: Option<String> = full.getattr("__text_signature__").ok().and_then(|s| s.extract().ok());
    // CPython's convention: the signature line, "--", a blank line, then the docstring.
    let doc_c = match sig {
        Some(sig) => format!("{}{}\n--\n\n{}", name.to_str().unwrap_or_default(), sig, doc.unwrap_or_default()),
        None => doc.unwrap_or_default(),
    };
    let doc_c = std::ffi::CString::new(doc_c).unwrap_or_default();
    let def = MethodDef(ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFastWithKeywords: trampoline::<ID, T, F> },
        ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
        ml_doc: doc_c.as_ptr(), // the CString's heap buffer: it stays put when the CString moves
    });
    if INSTALLED[ID].set(Slot { full: full.unbind(), def, _doc: doc_c }).is_err() {
        return Err(pyo3::exceptions::PyRuntimeError::new_err("kqrs: fast method slot taken twice"));
    }
    let Some(slot) = INSTALLED[ID].get() else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err("kqrs: fast method slot not set"));
    };
    // SAFETY: `ty` is a type object; `slot.def` is in a static that is never cleared, so it outlives the type
    // as CPython requires, and CPython only reads it.
    let descr = unsafe { ffi::PyDescr_NewMethod(ty.as_type_ptr(), std::ptr::from_ref(&slot.def.0).cast_mut()) };
    // SAFETY: PyDescr_NewMethod returns a new reference or null with an exception set.
    let descr = unsafe { Bound::from_owned_ptr_or_err(py, descr) }?;
    ty.setattr(name.to_str().unwrap_or_default(), descr)
}

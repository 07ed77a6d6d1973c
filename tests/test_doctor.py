"""`kqrs doctor` / `python -m kqrs doctor`: a live support matrix."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

import kqrs
from kqrs import _doctor as doctor, kevent

from kqhelpers import FFAND, FFCTRLMASK, FFOR


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kqrs", "doctor", *args], capture_output=True, text=True, timeout=60)


def test_doctor_json_reports_every_filter_with_a_verdict() -> None:
    p = _doctor("--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    rows = {r["feature"]: r for r in report["rows"]}
    for built in ("EVFILT_READ", "EVFILT_WRITE", "EVFILT_TIMER", "EVFILT_USER", "pollable / nestable", "fork safety"):
        assert rows[built]["works"] == "yes", rows[built]
    for r in rows.values():
        assert r["works"] in ("yes", "no", "partly")
        assert r["detail"], r
    # a filter that is not built says so, with the errno it fails with, never "yes"
    import kqrs

    for name in ("EVFILT_AIO",):
        filt = getattr(kqrs, "KQ_FILTER_" + name.split("_")[1])
        if not kqrs._kqrs._filter_supported(filt):
            assert rows[name]["works"] == "no" and "ENOTSUP" in rows[name]["detail"], rows[name]


def test_doctor_text_is_a_table() -> None:
    p = _doctor()
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("kqrs ") and "Linux" in lines[0]
    assert any(ln.split()[:2] == ["EVFILT_READ", "yes"] for ln in lines[1:])


def test_doctor_names_the_build() -> None:
    import sysconfig

    import kqrs
    from kqrs import _kqrs

    p = _doctor("--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    build = report["build"]
    assert build == {**_kqrs.build_info(), "wheel_tag": build["wheel_tag"]}
    assert build["version"] == kqrs.__version__
    assert build["free_threaded"] is bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert isinstance(build["debug_assertions"], bool) and build["glibc"]
    row = {r["feature"]: r for r in report["rows"]}["build"]
    assert row["works"] == "yes", row
    for part in (
        f"kqrs {kqrs.__version__}",
        f"linked for glibc {build['glibc']}",
        build["python_abi"],
        "free-threaded" if build["free_threaded"] else "GIL",
        "debug assertions ON" if build["debug_assertions"] else "debug assertions off",
    ):
        assert part in row["detail"], (part, row["detail"])
    text = _doctor().stdout
    assert any(ln.split()[:2] == ["build", "yes"] for ln in text.splitlines()), text


def _kernel() -> tuple[int, int]:
    import platform

    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()))


def test_doctor_probes_each_kernel_facility_and_names_the_supported_range() -> None:
    from kqrs._doctor import KERNEL_FEATURES, OLDEST_KERNEL

    p = _doctor("--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    feats = {f["name"]: f for f in report["kernel_features"]}
    assert list(feats) == [f.name for f in KERNEL_FEATURES]
    # every facility a kernel this new has must be found by the live probe (the table's "since" is right
    # and the probe works); the connector depends on privileges, not on the release
    for f in feats.values():
        assert isinstance(f["present"], bool)
        if f["since"][0].isdigit() and _kernel() >= tuple(int(x) for x in f["since"].split(".")):
            assert f["present"], f
    row = {r["feature"]: r for r in report["rows"]}["kernel"]
    assert f"kqrs supports {OLDEST_KERNEL}+" in row["detail"]
    assert row["works"] == ("yes" if all(f["present"] for f in feats.values()) else "partly"), row
    text = _doctor().stdout
    assert f"supported: Linux {OLDEST_KERNEL} and newer" in text
    for name in feats:
        assert any(ln.split()[:1] == name.split()[:1] for ln in text.splitlines()), name


# --- every verdict is live: a kqueue with one bug makes its row say so ---------------------------------------

pytestmark = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")


class BuggyKqueue:
    """kqrs's kqueue with one bug: `changes` rewrites each change, `events` each event, `wait` replaces a
    blocking wait."""

    def __init__(self, changes=None, events=None, wait=None):
        self._kq = kqrs.kqueue()
        self._changes, self._events, self._wait = changes, events, wait

    def control(self, changes, n, timeout=None):
        if changes is not None and self._changes:
            changes = [self._changes(c) for c in changes]
        if self._wait and changes is None and timeout:
            got = self._wait(self._kq, n, timeout)
        else:
            got = self._kq.control(changes, n, timeout)
        if self._events:
            got = [e for e in map(self._events, got) if e is not None]
        return got

    def fileno(self):
        return self._kq.fileno()

    @property
    def closed(self):
        return self._kq.closed

    def close(self):
        self._kq.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def with_bug(monkeypatch, **bug):
    monkeypatch.setattr(doctor, "kqueue", lambda: BuggyKqueue(**bug))


def copy(e, **kw):
    f = dict(ident=e.ident, filter=e.filter, flags=e.flags, fflags=e.fflags, data=e.data, udata=e.udata)
    f.update(kw)
    return kevent(f["ident"], f["filter"], f["flags"], f["fflags"], f["data"], f["udata"])


def test_the_rows_pass_with_kqrs_as_it_is(monkeypatch):
    with_bug(monkeypatch)  # the wrapper alone changes nothing
    for probe in (doctor.probe_write, doctor.probe_timer, doctor.probe_user, doctor.probe_threads):
        assert probe()[0] == "yes", probe()


def test_write_row_probes_ev_eof(monkeypatch):
    with_bug(monkeypatch, events=lambda e: copy(e, flags=e.flags & ~kqrs.KQ_EV_EOF))
    works, detail = doctor.probe_write()
    assert works != "yes" and "EV_EOF" in detail, detail


def test_write_row_probes_note_lowat(monkeypatch):
    with_bug(monkeypatch, changes=lambda c: copy(c, fflags=c.fflags & ~kqrs.KQ_NOTE_LOWAT))
    works, detail = doctor.probe_write()
    assert works != "yes" and "NOTE_LOWAT" in detail, detail


@pytest.mark.parametrize("unit", ["KQ_NOTE_USECONDS", "KQ_NOTE_NSECONDS", "KQ_NOTE_SECONDS"])
def test_timer_row_probes_each_unit(monkeypatch, unit):
    bit = getattr(kqrs, unit)
    with_bug(
        monkeypatch,
        changes=lambda c: (
            copy(c, fflags=c.fflags & ~bit) if c.fflags & bit and not c.fflags & kqrs.KQ_NOTE_ABSOLUTE else c
        ),
    )  # the unit ignored: read as milliseconds
    works, detail = doctor.probe_timer()
    assert works == "no", detail


def test_timer_row_probes_overrun_counts(monkeypatch):
    with_bug(monkeypatch, events=lambda e: copy(e, data=min(e.data, 1)) if e.filter == kqrs.KQ_FILTER_TIMER else e)
    works, detail = doctor.probe_timer()
    assert works != "yes" and "overruns" in detail, detail


def test_user_row_probes_each_fflags_operation(monkeypatch):
    with_bug(
        monkeypatch,
        changes=lambda c: copy(c, fflags=(c.fflags & ~FFCTRLMASK) | FFOR) if c.fflags & FFCTRLMASK == FFAND else c,
    )  # NOTE_FFAND taken for NOTE_FFOR
    works, detail = doctor.probe_user()
    assert works == "no" and f"{FFAND:#x}" in detail, detail


def test_threads_row_probes_the_wake_up(monkeypatch):
    def deaf(kq, n, timeout):  # a blocked wait that nothing wakes early
        time.sleep(min(timeout, 3))
        return kq.control(None, n, 0)

    with_bug(monkeypatch, wait=deaf)
    works, detail = doctor.probe_threads()
    assert works == "no", detail


@pytest.mark.skipif(not kqrs._kqrs._filter_supported(kqrs.KQ_FILTER_SIGNAL), reason="EVFILT_SIGNAL is not built")
def test_signal_row_probes_blocked_signals(monkeypatch):
    def blind(e):  # an engine that never sees a blocked signal
        blocked = signal.SIGUSR2 in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        return None if e.filter == kqrs.KQ_FILTER_SIGNAL and blocked else e

    with_bug(monkeypatch, events=blind)
    works, detail = doctor.probe_signal()
    assert works != "yes" and "blocked" in detail, detail


@pytest.mark.skipif(not kqrs._kqrs._filter_supported(kqrs.KQ_FILTER_SIGNAL), reason="EVFILT_SIGNAL is not built")
def test_signal_row_states_what_was_measured():
    works, detail = doctor.probe_signal()
    assert "no mask, no thread" in detail and "blocked signal is counted when sent" in detail, detail
    # the limit Linux imposes is measured, not assumed: shown exactly when the probe saw it
    assert (works == "partly") == ("counts 0, FreeBSD 2" in detail or "counts 1, FreeBSD 2" in detail), detail


def test_inotify_row_is_live():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (fd, hard))  # no fd left: inotify_init1 fails
    try:
        works, detail = doctor.probe_inotify()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert works == "no" and "EMFILE" in detail, detail
    assert doctor.probe_inotify()[0] == "yes"


def test_unprobed_statements_are_marked_as_build_facts():
    """A row states only what its probe measured, or marks the rest "by design:"."""
    report = doctor.collect()
    for r in report["rows"]:
        assert "timerfd per timer" not in r["detail"], r  # what kqrs once claimed, and never was
    text = {r["feature"]: r["detail"] for r in report["rows"]}
    assert "by design:" in text["inotify"] and "by design:" in text["pidfd"]

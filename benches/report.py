"""Writes benches/RESULTS.md and its chart (results.svg) from the outputs of benchmark runs (benches/run.sh).

    python benches/report.py --out RESULTS.md --command "..." [--chart SVG] [--commit SHA] [--dirty]
                             [--require-clean] [--smoke] RUNDIR [RUNDIR ...]

Each RUNDIR holds bench.json (pytest-benchmark --benchmark-json), metrics.json (the `record` fixture),
engine.json (benches/engine.rs) and capi.json (benches/capi.c). Every row is kqrs / alternative, or a value
(bytes, fds, threads); lower is better for kqrs. A row with a target is "met" when the ratio (or value) is at
or under it in every run, "missed" when over it in every run, "mixed" otherwise. Every row is written, losses
included.

The chart has one horizontal bar per row with a target: the ratio of the worst run against the target
(a tick), green when met, red when missed, amber when mixed; values (bytes, fds, threads) in a panel of
their own. It is hand-written SVG (no plotting library needed).

--require-clean (what run.sh passes when writing the default benches/RESULTS.md): refuse to write
anything unless the tree is a git checkout whose tracked files have no uncommitted changes and whose
HEAD is still --commit (the commit measured).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from xml.sax.saxutils import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Row:
    id: str
    measure: str
    kqrs: str  # key of the kqrs value
    base: str | None  # key of the alternative's value (None: a value, not a ratio)
    unit: str  # "time" (seconds), "ns", "us", "B", "fds", "threads"
    target: float | None = None
    pending: bool = False
    #: the target on free-threaded CPython, when it differs
    target_ft: float | None = None

    @property
    def is_value(self) -> bool:
        return self.base is None


def _rows() -> list[Row]:
    r: list[Row] = []
    a = r.append
    # -- Python: polling (both sides ask for one event slot)
    a(
        Row(
            "empty",
            "nothing ready: `kq.control(None, 1, 0)` vs `ep.poll(0, 1)`",
            "empty/kqrs",
            "empty/epoll",
            "time",
            1.05,
        )
    )
    for n in (1, 1000, 10000):
        a(
            Row(
                f"ready{n}.epoll",
                f"one ready socket among {n:,}: `kq.control(None, 1, 0)` vs `ep.poll(0, 1)`",
                f"ready{n}/kqrs",
                f"ready{n}/epoll",
                "time",
            )
        )
    a(
        Row(
            "ready10000.eventfd",
            "one ready eventfd among 10,000 eventfds: `kq.control(None, 1, 0)` vs `ep.poll(0, 1)`",
            "ready10000_eventfd/kqrs",
            "ready10000_eventfd/epoll",
            "time",
            1.10,
        )
    )
    a(
        Row(
            "ready.data",
            "one ready socket and its readable bytes: `kq.control(None, 1, 0)` + `ev.data` vs "
            "`ep.poll(0, 1)` + `fcntl.ioctl(fd, FIONREAD, buf)` (reused buffer)",
            "ready_data/kqrs",
            "ready_data/epoll_fionread",
            "time",
            0.90,
        )
    )
    # -- Python: selectors, as a user writes them
    for n in (1, 1000, 10000):
        a(
            Row(
                f"selector.ready{n}",
                f"`select(0)`, one ready among {n:,} sockets: `selectors.KqueueSelector` "
                "(after `kqrs.install()`) vs `selectors.EpollSelector`",
                f"selector{n}/kqrs",
                f"selector{n}/epoll",
                "time",
                0.80,
            )
        )
    a(
        Row(
            "selector.register",
            "`register(sock, EVENT_READ)` + `unregister(sock)`: `KqueueSelector` (kqrs) vs `EpollSelector`",
            "selector_register/kqrs",
            "selector_register/epoll",
            "time",
            1.00,
        )
    )
    # -- Python: changelists
    for n in (1000, 10000):
        t = 0.90 if n == 10000 else None
        a(
            Row(
                f"changes{n}",
                f"{n:,} EV_ADD then {n:,} EV_DELETE (two prebuilt changelists) vs {n:,} "
                "`epoll.register` then as many `epoll.unregister`, per fd",
                f"cycle{n}/kqrs",
                f"cycle{n}/epoll",
                "time",
                t,
            )
        )
    a(
        Row(
            "changes10000.floor",
            "the floor under `changes10000`: the same 10,000 `epoll_ctl` ADD then DEL in a plain loop (in Rust, "
            "no knotes, one call from Python) vs `epoll.register`/`unregister` loops, per fd",
            "cycle10000/floor",
            "cycle10000/epoll",
            "time",
        )
    )
    a(
        Row(
            "changes10000.over_floor",
            "`changes10000`'s changelists vs that floor: what kqrs adds to the kernel's own work, per fd",
            "cycle10000/kqrs",
            "cycle10000/floor",
            "time",
        )
    )
    for n in (1000, 10000):
        a(
            Row(
                f"add{n}",
                f"register {n:,} sockets: one changelist (prebuilt kevents) vs {n:,} `epoll.register`",
                f"add{n}/kqrs",
                f"add{n}/epoll",
                "time",
            )
        )
        a(
            Row(
                f"add{n}.build",
                f"register {n:,} sockets: one changelist built in the loop vs {n:,} `epoll.register`",
                f"add{n}/kqrs_build",
                f"add{n}/epoll",
                "time",
            )
        )
        a(
            Row(
                f"del{n}",
                f"delete {n:,}: one prebuilt changelist of EV_DELETE vs {n:,} `epoll.unregister`",
                f"del{n}/kqrs",
                f"del{n}/epoll",
                "time",
            )
        )
    # -- Python: EVFILT_USER
    a(
        Row(
            "user",
            "USER trigger + retrieve in one `control()` vs `os.eventfd_write` + `ep.poll(0, 1)` + `os.eventfd_read`",
            "user/kqrs",
            "user/eventfd",
            "time",
        )
    )
    a(
        Row(
            "user.two_calls",
            "USER trigger, then `control(None, 1, 0)` vs `os.eventfd_write` + `ep.poll(0, 1)` + `os.eventfd_read`",
            "user/kqrs_two_calls",
            "user/eventfd",
            "time",
        )
    )
    for p, t in (("p50", 1.00), ("p99", None)):
        a(
            Row(
                f"xthread.{p}",
                f"cross-thread wake-up latency {p}: a thread in `kq.control(None, 1, None)` woken by a "
                "USER trigger vs a thread in `ep.poll(-1, 1)` woken by `os.eventfd_write`",
                f"xthread/kqrs.{p}",
                f"xthread/eventfd.{p}",
                "us",
                t,
            )
        )
    # -- Python: asyncio
    a(
        Row(
            "asyncio.pingpong",
            "asyncio socket ping-pong (100 round trips): `SelectorEventLoop(KqueueSelector())` "
            "on kqrs vs the default loop (`EpollSelector`)",
            "pingpong/kqrs",
            "pingpong/epoll",
            "time",
            0.95,
        )
    )
    a(
        Row(
            "asyncio.reader",
            "asyncio `add_reader` + `remove_reader`: kqrs loop vs the default loop",
            "reader/kqrs",
            "reader/epoll",
            "time",
            1.00,
        )
    )
    # -- Python: timers
    for p in ("p50", "p99"):
        a(
            Row(
                f"timer.timerfd.{p}",
                f"1 ms timer lateness {p}: EVFILT_TIMER vs timerfd + `ep.poll(-1, 1)`",
                f"timer/kqrs.{p}",
                f"timer/timerfd.{p}",
                "us",
            )
        )
        a(
            Row(
                f"timer.asyncio_kqrs.{p}",
                f"1 ms timer lateness {p}: asyncio `call_later` on the kqrs loop vs on the default loop",
                f"timer/asyncio_kqrs.{p}",
                f"timer/asyncio.{p}",
                "us",
            )
        )
    # -- Python: EVFILT_VNODE
    a(
        Row(
            "vnode.inotify",
            "write to a watched file → the event, one thread: EVFILT_VNODE `control()` vs inotify + `os.read`",
            "vnode/kqrs",
            "vnode/inotify",
            "time",
        )
    )
    a(
        Row(
            "vnode.watchfiles",
            "write to a watched file → the event, one thread: EVFILT_VNODE `control()` vs "
            "`watchfiles.watch(debounce=0, step=1)`",
            "vnode/kqrs_beside_watchfiles",
            "vnode/watchfiles",
            "time",
        )
    )
    for p in ("p50", "p99"):
        a(
            Row(
                f"vnode.xthread.inotify.{p}",
                f"write → a blocked thread wakes with the event, {p}: EVFILT_VNODE vs inotify + `os.read`",
                f"vnode_xthread/kqrs.{p}",
                f"vnode_xthread/inotify.{p}",
                "us",
            )
        )
        a(
            Row(
                f"vnode.xthread.watchfiles.{p}",
                f"write → a blocked thread wakes with the event, {p}: EVFILT_VNODE vs watchfiles",
                f"vnode_xthread/kqrs.{p}",
                f"vnode_xthread/watchfiles.{p}",
                "us",
            )
        )
    # -- resources (values)
    a(Row("mem.user", "bytes per USER knote (user-space RSS, at 100,000 knotes)", "mem/user.bytes", None, "B", 128))
    a(
        Row(
            "mem.timer",
            "bytes per TIMER knote (user-space RSS, at as many as the fd limit allows)",
            "mem/timer.bytes",
            None,
            "B",
        )
    )
    a(
        Row(
            "mem.read",
            "bytes per READ knote (user-space RSS; one socket each, so at the fd limit)",
            "mem/read.bytes",
            None,
            "B",
        )
    )
    a(Row("fds.kqueue", "fds per kqueue (a second kqueue in the process)", "mem/kqueue.fds", None, "fds", 1))
    a(
        Row(
            "fds.process",
            "fds per process, made with its first kqueue (the fd close() wakes waiters with)",
            "mem/process.fds",
            None,
            "fds",
        )
    )
    a(Row("fds.user", "fds per USER knote", "mem/user.fds", None, "fds"))
    a(Row("fds.timer", "fds per TIMER knote (beyond the kqueue's one timer source)", "mem/timer.fds", None, "fds", 0))
    a(Row("fds.read", "fds per READ knote (beyond the watched fd)", "mem/read.fds", None, "fds"))
    a(
        Row(
            "threads",
            "threads started by kqrs (/proc/self/task, before `import kqrs` vs after USER, TIMER, READ, "
            "WRITE, PROC, SIGNAL and VNODE knotes fired)",
            "threads/kqrs",
            None,
            "threads",
            0,
        )
    )
    # -- fork
    a(
        Row(
            "fork.user",
            "fork + `_exit` + `waitpid`, 10 kqueues × 1,000 USER knotes vs a process that never imported "
            "kqrs (nor the modules it imports)",
            "fork/user.best",
            "fork/bare.best",
            "us",
            1.05,
        )
    )
    a(
        Row(
            "fork.import",
            "fork + `_exit` + `waitpid`, `import kqrs` only vs a process that never imported kqrs (nor the "
            "modules it imports)",
            "fork/import.best",
            "fork/bare.best",
            "us",
            1.02,
        )
    )
    a(
        Row(
            "fork.import.samedeps",
            "fork + `_exit` + `waitpid`, `import kqrs` only vs no kqrs, both holding the modules kqrs imports",
            "fork/import.best",
            "fork/base.best",
            "us",
        )
    )
    a(
        Row(
            "fork.null",
            "fork + `_exit` + `waitpid`, the same process without kqrs twice (with and without the modules kqrs "
            "imports, none today): the measurement's own noise",
            "fork/base.best",
            "fork/bare.best",
            "us",
        )
    )
    a(
        Row(
            "fork.read",
            "fork + `_exit` + `waitpid`, 1,000 sockets in 10 kqueues (READ) vs in 10 `select.epoll`",
            "fork/read_kqrs.best",
            "fork/read_epoll.best",
            "us",
        )
    )
    # -- process exits (EVFILT_PROC)
    a(
        Row(
            "proc.1000",
            "1,000 child exits: NOTE_EXIT knotes vs `os.pidfd_open` + `select.epoll` by hand "
            "(registration to the last exit seen, status read and reaped)",
            "proc/kqrs.1000",
            "proc/pidfd.1000",
            "time",
            1.00,
        )
    )
    a(
        Row(
            "proc.per_exit",
            "one exit → its event (EVFILT_PROC), 10,000 vs 100 processes watched in the kqueue",
            "proc/kqrs.per_exit.10000",
            "proc/kqrs.per_exit.100",
            "time",
            1.10,
        )
    )
    a(
        Row(
            "proc.asyncio",
            "spawn 1,000 `true` and wait for all: `subprocess.Popen` + NOTE_EXIT vs "
            "`asyncio.create_subprocess_exec` + `wait()`",
            "proc/kqrs_spawn.1000",
            "proc/asyncio.1000",
            "time",
        )
    )
    # -- kqrs.EventQueue (issue 17)
    for alt, name in (("simplequeue", "`queue.SimpleQueue`"), ("queue", "`queue.Queue`")):
        a(
            Row(
                f"queue.{alt}",
                f"`put` + `get` of one item, one thread: `kqrs.EventQueue` vs {name}",
                "queue/kqrs",
                f"queue/{alt}",
                "time",
            )
        )
        a(
            Row(
                f"queue.xthread.{alt}",
                f"1 producer thread / 1 consumer thread, `put` + `get` per item: `kqrs.EventQueue` vs {name}",
                "queue_xthread/kqrs",
                f"queue_xthread/{alt}",
                "time",
                1.10 if alt == "simplequeue" else None,
            )
        )
    a(
        Row(
            "queue.4x4.simplequeue",
            "4 producer / 4 consumer threads, time per item: `kqrs.EventQueue` vs "
            "`queue.SimpleQueue` (target ≤ 1.00 on free-threaded CPython)",
            "queue_4x4/kqrs",
            "queue_4x4/simplequeue",
            "time",
            1.25,
            target_ft=1.00,
        )
    )
    a(
        Row(
            "queue.4x4.queue",
            "4 producer / 4 consumer threads, time per item: `kqrs.EventQueue` vs `queue.Queue`",
            "queue_4x4/kqrs",
            "queue_4x4/queue",
            "time",
            0.20,
        )
    )
    for p, t in (("p50", 1.00), ("p99", None)):
        a(
            Row(
                f"queue.handoff.{p}",
                f"cross-thread hand-off latency {p}: `put()` → a thread blocked in `get()` "
                "returns with it: `kqrs.EventQueue` vs `queue.SimpleQueue`",
                f"queue_handoff/kqrs.{p}",
                f"queue_handoff/simplequeue.{p}",
                "us",
                t,
            )
        )
    a(
        Row(
            "queue.asyncio",
            "asyncio, items put by another thread, time per item on the default loop: `q.put` → "
            "`await q.async_get()` vs `loop.call_soon_threadsafe(aq.put_nowait, x)` → `await aq.get()` "
            "(`asyncio.Queue`)",
            "queue_asyncio/kqrs",
            "queue_asyncio/asyncio",
            "time",
            0.80,
        )
    )
    a(
        Row(
            "queue.asyncio.kqrsloop",
            "the same on kqrs's loop (`kqrs.asyncio.new_event_loop()`)",
            "queue_asyncio_kqrsloop/kqrs",
            "queue_asyncio_kqrsloop/asyncio",
            "time",
        )
    )
    a(
        Row(
            "queue.asyncio.pingpong",
            "the same on the default loop, one item at a time (the thread waits until "
            "the coroutine has taken each item before putting the next: every item wakes the loop)",
            "queue_asyncio_pingpong/kqrs",
            "queue_asyncio_pingpong/asyncio",
            "time",
        )
    )
    # -- engine alone (Rust)
    a(
        Row(
            "engine.empty",
            "engine: `kevent()` timeout 0, nothing ready vs `epoll_wait` on an epoll with nothing ready",
            "engine.empty/kqrs",
            "engine.empty/base",
            "ns",
            1.10,
        )
    )
    a(
        Row(
            "engine.one_ready",
            "engine: one ready socket vs `epoll_wait`",
            "engine.one_ready/kqrs",
            "engine.one_ready/base",
            "ns",
        )
    )
    a(
        Row(
            "engine.one_ready_data",
            "engine: one ready socket with `data` vs `epoll_wait` + FIONREAD",
            "engine.one_ready_data/kqrs",
            "engine.one_ready_data/base",
            "ns",
            1.00,
        )
    )
    a(
        Row(
            "engine.ev_add",
            "engine: EV_ADD per change (1,000 in one changelist) vs `epoll_ctl(ADD)`",
            "engine.ev_add/kqrs",
            "engine.ev_add/base",
            "ns",
        )
    )
    a(
        Row(
            "engine.ev_delete",
            "engine: EV_DELETE per change vs `epoll_ctl(DEL)`",
            "engine.ev_delete/kqrs",
            "engine.ev_delete/base",
            "ns",
        )
    )
    a(
        Row(
            "engine.ev_add_single",
            "engine: EV_ADD, one change per `kevent()` call vs `epoll_ctl(ADD)`",
            "engine.ev_add_single/kqrs",
            "engine.ev_add_single/base",
            "ns",
        )
    )
    a(
        Row(
            "engine.user",
            "engine: USER trigger + retrieve vs eventfd write + `epoll_wait` + read",
            "engine.user/kqrs",
            "engine.user/base",
            "ns",
        )
    )
    a(
        Row(
            "engine.xthread.p50",
            "engine: cross-thread wake-up p50, a thread blocked in `kevent()` woken by a USER trigger vs a "
            "thread blocked in `epoll_wait(-1)` woken by an eventfd write (and reading it back)",
            "engine.xthread.p50/kqrs",
            "engine.xthread.p50/base",
            "ns",
        )
    )
    # -- the C face (kqrs's libkqueue.so.0, from a C program: benches/capi.c)
    a(
        Row(
            "capi.empty",
            "C face: `kevent()` timeout 0, nothing ready vs `epoll_wait` on an epoll with nothing ready",
            "capi.empty/kqrs",
            "capi.empty/base",
            "ns",
        )
    )
    a(
        Row(
            "capi.one_ready_data",
            "C face: one ready socket with `data` vs `epoll_wait` + FIONREAD",
            "capi.one_ready_data/kqrs",
            "capi.one_ready_data/base",
            "ns",
        )
    )
    a(
        Row(
            "capi.user",
            "C face: USER trigger + retrieve in one `kevent()` vs eventfd write + `epoll_wait` + read",
            "capi.user/kqrs",
            "capi.user/base",
            "ns",
        )
    )
    return r


ROWS = _rows()


def rows_for(free_threaded: bool) -> list[Row]:
    """The rows with the targets for this kind of interpreter (`target_ft` on free-threaded CPython)."""
    if not free_threaded:
        return ROWS
    return [dataclasses.replace(r, target=r.target_ft) if r.target_ft is not None else r for r in ROWS]


def load_run(d: str) -> dict[str, float]:
    """Every value of one run by key: pytest-benchmark medians (s), recorded metrics, engine ns."""
    vals: dict[str, float] = {}
    p = os.path.join(d, "bench.json")
    if os.path.exists(p):
        with open(p) as f:
            for b in json.load(f)["benchmarks"]:
                key = b.get("extra_info", {}).get("key")
                if key:
                    vals[key] = b["stats"]["median"]
    p = os.path.join(d, "metrics.json")
    if os.path.exists(p):
        with open(p) as f:
            vals.update(json.load(f)["metrics"])  # interleaved medians win over the per-side benchmarks
    for name in ("engine.json", "capi.json"):  # the same shape: {key: {kqrs_ns, base_ns, ...}}
        p = os.path.join(d, name)
        if os.path.exists(p):
            with open(p) as f:
                for k, v in json.load(f).items():
                    vals[f"{k}/kqrs"] = v["kqrs_ns"]
                    vals[f"{k}/base"] = v["base_ns"]
    return vals


def fmt(v: float | None, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    if unit == "time":
        v *= 1e9
        unit = "ns"
    if unit == "ns":
        if v >= 1e6:
            return f"{v / 1e6:.2f} ms"
        if v >= 1e3:
            return f"{v / 1e3:.2f} µs"
        return f"{v:.0f} ns"
    if unit == "us":
        return f"{v:.1f} µs"
    if unit == "B":
        return f"{v:.0f} B"
    return f"{v:g}"


def fmt_ratio(r: float, target: float | None) -> str:
    """Two decimals; three when two would print a ratio just over its target as the target itself."""
    s = f"{r:.2f}"
    if target is not None and r > target and s == f"{target:.2f}":
        s = f"{r:.3f}"
    return s


def fmt_target(row: Row) -> str:
    if row.target is None:
        return "—"
    if row.is_value:
        return f"≤ {fmt(float(row.target), row.unit)}"
    return f"≤ {row.target:.2f}"


def ratio(vals: dict[str, float], row: Row) -> float | None:
    """The row's figure in one run: kqrs / alternative, or the value itself for a value row."""
    k = vals.get(row.kqrs)
    if row.is_value:
        return k
    b = vals.get(row.base)
    if k is None or b is None or b <= 0:
        return None
    return k / b


def verdict(row: Row, ratios: list[float | None]) -> str:
    """met / missed / mixed / missing for a row with a target, "" without."""
    if row.pending:
        return "pending"
    if any(r is None for r in ratios):
        return "missing"
    if row.target is None:
        return ""
    met = sum(r <= row.target for r in ratios)
    return "met" if met == len(ratios) else "missed" if met == 0 else "mixed"


def status(row: Row, ratios: list[float | None]) -> str:
    if row.pending:
        return "pending (benchmark not written yet)"
    v = verdict(row, ratios)
    if v == "missing":
        return "missing"
    rs = [r for r in ratios if r is not None]
    note = ""
    if not row.is_value and len(rs) > 1 and max(rs) / min(rs) > 1.10:
        note = " (runs disagree)"
    if v == "":
        return "—" + note
    if v == "mixed":
        return f"mixed: met in {sum(r <= row.target for r in rs)} of {len(rs)} runs" + note
    return f"**{v}**" + note


def worst(ratios: list[float | None]) -> float | None:
    rs = [r for r in ratios if r is not None]
    return max(rs) if rs else None


def machine(python: str, when: str) -> list[str]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return [
        f"- kernel: `{platform.release()}` (uname -r); CPU: {cpu}, {os.cpu_count()} cores (shared with other work)",
        f"- Python: {python}",
        f"- date: {when}",
    ]


def git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def tree_dirty() -> bool:
    """Uncommitted changes (staged or not) in tracked files."""
    r = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT, capture_output=True)
    return r.returncode != 0


# ---- the chart -------------------------------------------------------------------------------------

COLORS = {"met": "#2e7d32", "missed": "#c62828", "mixed": "#f9a825", "missing": "#9e9e9e"}
LO, HI = 0.1, 5.0  # the ratio axis (log): 0.2 to 2.0 is 59% of its width
GRID = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def chart(rows: list[Row], runs: list[dict[str, float]], title: str, subtitle: str) -> str:
    W, LABEL_W, BAR_X0, BAR_W, ROW_H = 980, 190, 200, 480, 22
    text_x = BAR_X0 + BAR_W + 12
    ratio_rows = [r for r in rows if r.target is not None and not r.is_value and not r.pending]
    value_rows = [r for r in rows if r.target is not None and r.is_value and not r.pending]
    out: list[str] = []
    y = 0

    def t(x, yy, s, size=12, anchor="start", weight="normal", color="#222", family="sans-serif"):
        out.append(
            f'<text x="{x:.1f}" y="{yy:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{color}" font-family="{family}">{escape(s)}</text>'
        )

    def xr(v: float) -> float:
        v = min(max(v, LO), HI)
        return BAR_X0 + (math.log10(v) - math.log10(LO)) / (math.log10(HI) - math.log10(LO)) * BAR_W

    y = 24
    t(10, y, title, size=15, weight="bold")
    y += 18
    t(10, y, subtitle, size=11, color="#555")
    y += 16
    lx = 10
    for name, color in COLORS.items():
        out.append(f'<rect x="{lx}" y="{y - 9}" width="12" height="10" fill="{color}"/>')
        t(lx + 16, y, name, size=11)
        lx += 80
    out.append(f'<line x1="{lx + 4}" y1="{y - 11}" x2="{lx + 4}" y2="{y + 2}" stroke="#000" stroke-width="2"/>')
    t(lx + 10, y, "target", size=11)
    y += 26

    # -- ratios
    t(10, y, "kqrs / alternative, worst run (log axis; lower is better)", size=13, weight="bold")
    y += 14
    top = y
    bottom = top + ROW_H * len(ratio_rows)
    for g in GRID:
        x = xr(g)
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="{"#888" if g == 1 else "#ddd"}" '
            f'stroke-width="1"/>'
        )
        t(x, bottom + 14, f"{g:g}", size=10, anchor="middle", color="#555")
    for i, row in enumerate(ratio_rows):
        ry = top + i * ROW_H
        rs = [ratio(v, row) for v in runs]
        v = verdict(row, rs)
        w = worst(rs)
        t(LABEL_W, ry + 15, row.id, size=12, anchor="end", family="monospace")
        if w is not None:
            x = xr(w)
            out.append(
                f'<rect x="{BAR_X0}" y="{ry + 5}" width="{max(x - BAR_X0, 1):.1f}" height="12" '
                f'fill="{COLORS[v]}"><title>{escape(row.measure)}</title></rect>'
            )
            if w > HI or w < LO:  # off the axis: an arrow head at the edge
                ex = BAR_X0 + BAR_W if w > HI else BAR_X0
                d = 6 if w > HI else -6
                out.append(f'<path d="M{ex:.1f},{ry + 3} l{d},{8} l{-d},{8} z" fill="{COLORS[v]}"/>')
        tx = xr(row.target)
        out.append(f'<line x1="{tx:.1f}" y1="{ry + 2}" x2="{tx:.1f}" y2="{ry + 20}" stroke="#000" stroke-width="2"/>')
        label = "missing" if w is None else f"{fmt_ratio(w, row.target)}  (≤ {row.target:.2f})  {v}"
        t(text_x, ry + 15, label, size=12, color=COLORS[v] if v in ("missed", "mixed", "missing") else "#222")
    y = bottom + 40

    # -- values
    if value_rows:
        t(
            10,
            y,
            "resources, worst run (each bar on its own linear scale from 0; lower is better)",
            size=13,
            weight="bold",
        )
        y += 14
        for i, row in enumerate(value_rows):
            ry = y + i * ROW_H
            rs = [ratio(v, row) for v in runs]
            v = verdict(row, rs)
            w = worst(rs)
            scale = max(2 * row.target, 1.25 * (w or 0), 1.0)
            out.append(
                f'<line x1="{BAR_X0}" y1="{ry + 2}" x2="{BAR_X0}" y2="{ry + 20}" stroke="#888" stroke-width="1"/>'
            )
            t(LABEL_W, ry + 15, row.id, size=12, anchor="end", family="monospace")
            if w is not None and w > 0:
                out.append(
                    f'<rect x="{BAR_X0}" y="{ry + 5}" width="{max(w / scale * BAR_W, 1):.1f}" height="12" '
                    f'fill="{COLORS[v]}"><title>{escape(row.measure)}</title></rect>'
                )
            tx = BAR_X0 + row.target / scale * BAR_W
            out.append(
                f'<line x1="{tx:.1f}" y1="{ry + 2}" x2="{tx:.1f}" y2="{ry + 20}" stroke="#000" stroke-width="2"/>'
            )
            label = (
                "missing"
                if w is None
                else f"{fmt(w, row.unit)} {row.unit if row.unit in ('fds', 'threads') else ''}"
                f"  ({fmt_target(row)})  {v}"
            )
            t(
                text_x,
                ry + 15,
                " ".join(label.split()),
                size=12,
                color=COLORS[v] if v in ("missed", "mixed", "missing") else "#222",
            )
        y += ROW_H * len(value_rows) + 16
    H = y
    head = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">\n'
        f"<title>{escape(title)}</title>\n"
        f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>\n'
    )
    return head + "\n".join(out) + "\n</svg>\n"


# ---- main --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--chart", default=None, help="the SVG chart (default: results.svg beside --out)")
    ap.add_argument("--command", required=True)
    ap.add_argument("--build", default="")
    ap.add_argument("--python", default=sys.version.split()[0])
    ap.add_argument("--commit", default=None, help="the commit measured (default: HEAD now)")
    ap.add_argument("--dirty", action="store_true", help="the tree had uncommitted changes when measured")
    ap.add_argument(
        "--require-clean", action="store_true", help="refuse to write unless the tree is clean and still at --commit"
    )
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()

    head = git("rev-parse", "HEAD")
    commit = a.commit or head
    dirty = a.dirty or (head is not None and tree_dirty())
    if a.require_clean:
        problem = None
        if head is None:
            problem = "this is not a git checkout, so the results could not name the commit measured"
        elif dirty:
            problem = "the tree has uncommitted changes in tracked files"
        elif commit != head:
            problem = f"HEAD moved during the run (measured {commit}, now {head})"
        if problem:
            print(
                f"report: refusing to write {a.out}: {problem}. Commit first, or write elsewhere with --out.",
                file=sys.stderr,
            )
            sys.exit(3)

    rows = rows_for("free-threaded" in a.python)
    chart_path = a.chart or os.path.join(os.path.dirname(os.path.abspath(a.out)), "results.svg")
    runs = [load_run(d) for d in a.runs]
    nrun = len(runs)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    short = commit[:12] if commit else "unknown commit"

    lines = ["# kqrs benchmark results", ""]
    if a.smoke:
        lines += ["**Smoke run**: every measurement is tiny; the numbers mean nothing, only that everything ran.", ""]
    lines += machine(a.python, when)
    if a.build:
        lines.append(f"- kqrs build: {a.build}")
    if commit is None:
        lines.append("- source: not a git checkout (commit unknown)")
    elif dirty:
        lines.append(
            f"- source: commit `{commit}` **with uncommitted changes in tracked files**: these numbers "
            "are not that commit's"
        )
    else:
        lines.append(f"- source: commit `{commit}` (clean tree)")
    lines += [f"- command: `{a.command}`", ""]
    lines += [
        "Every ratio is kqrs / the alternative (time, latency or cost: lower is better for kqrs), medians of "
        "many rounds, every side of a row measured interleaved in the same run and asking for the same "
        "number of event slots. Resource rows are values (bytes, fds, threads).",
        f"{nrun} run{'s' if nrun > 1 else ''}; the kqrs and alternative columns are from run 1. A row "
        "with a target is **met** when its ratio (or value) is at or under the target in every run, "
        "**missed** when over it in every run, mixed otherwise. Every row is published, losses included.",
        "",
        f"![every ratio with a target, worst run, against its target]({os.path.relpath(chart_path, os.path.dirname(os.path.abspath(a.out)))})",
        "",
    ]
    rcols = " | ".join(f"run {i + 1}" for i in range(nrun))
    lines += [f"| id | measure | kqrs | alternative | {rcols} | target | status |", "|" + "---|" * (6 + nrun)]
    for row in rows:
        v0 = runs[0]
        ratios = [ratio(v, row) for v in runs]
        if row.pending:
            rc = " | ".join("—" for _ in runs)
            lines.append(f"| {row.id} | {row.measure} | — | — | {rc} | — | {status(row, ratios)} |")
            continue
        if row.is_value:
            rc = " | ".join(fmt(r, row.unit) for r in ratios)
            kq = fmt(v0.get(row.kqrs), row.unit)
            count = v0.get(row.kqrs.replace(".bytes", ".count")) if row.kqrs.endswith(".bytes") else None
            if count:
                kq += f" at {count:,.0f}"
            lines.append(f"| {row.id} | {row.measure} | {kq} | — | {rc} | {fmt_target(row)} | {status(row, ratios)} |")
            continue
        rc = " | ".join("missing" if r is None else fmt_ratio(r, row.target) for r in ratios)
        lines.append(
            f"| {row.id} | {row.measure} | {fmt(v0.get(row.kqrs), row.unit)} | {fmt(v0.get(row.base), row.unit)} "
            f"| {rc} | {fmt_target(row)} | {status(row, ratios)} |"
        )
    lines += [
        "",
        "Notes:",
        "- The run columns are ratios (kqrs / alternative), or for resource rows the value itself.",
        "- Time ratios come from the `*_pair` tests, which run every side of a row interleaved (a round of "
        "each in turn, hundreds of rounds, medians): on a shared machine only interleaved sides give stable "
        "ratios. The per-side pytest-benchmark tests (`pytest benches --benchmark-only`) are for looking at "
        "one side or comparing builds (`--benchmark-save` / `--benchmark-compare`).",
        "- Polling rows ask for one event slot on both sides (`control(None, 1, 0)` vs `poll(0, 1)`); "
        "selector rows use `selectors.KqueueSelector()` after `kqrs.install()` and `selectors.EpollSelector()` "
        "as a user writes them (`register(sock, EVENT_READ)`, `select(0)`).",
        "- `ready*.epoll` and `engine.one_ready` ask both sides for one event, but kqrs's event also carries "
        "`data` (bytes readable); `ready.data` and `engine.one_ready_data` are the pairs where both sides get "
        "that number.",
        "- The watchfiles rows compare with `watchfiles.watch` at its fastest settings (`debounce=0, step=1`): "
        "it reports a change once a look finds nothing newer, every `step` ms, so its floor is about two "
        "steps; the ratio measures that design as much as speed. inotify read directly is the like-for-like "
        "baseline for EVFILT_VNODE.",
        "- N registered sockets are both ends of N/2 socketpairs (the soft RLIMIT_NOFILE is raised to the hard "
        "limit); the ready one has 1 byte pending. The ready eventfd was written once and is never read.",
        "- READ knotes need one fd each, so their memory is measured at as many knotes as the fd limit allows "
        "(TIMER knotes too, in case they take one); kernel memory (epoll items, timerfds) is not in RSS and "
        "not counted.",
        "- Fork rows: every side is a fresh process that first imports the modules `import kqrs` brings in "
        "(besides kqrs's own), so that the sides differ only in kqrs (`fork.import` and `fork.user` compare with "
        "a process without them; they are none today). Every side runs pinned to the same one CPU, children "
        "included, in 24 chunks of 50 forks, alternating with the other sides; its figure is the fastest chunk "
        "median. The median of all of a side's forks moved by up to 8% between identical sides in one run "
        "(host load comes in spells longer than a chunk); `fork.null` shows what the method makes of two "
        "identical sides.",
        "- `kqrs.EventQueue` rows: every side is a fresh queue per round (threads started inside the timing, "
        "a few tens of µs of milliseconds). `queue.4x4.simplequeue`'s target is 1.25 on CPython with a GIL and "
        "1.00 on free-threaded CPython (the table shows the one of the interpreter measured). In "
        "`queue.asyncio` the producer thread runs ahead, so most `async_get()`s find an item waiting; "
        "`queue.asyncio.pingpong` is the case where every item has to wake the loop.",
        "- C face rows (`capi.*`, no targets): benches/capi.c, a C program built against the libkqueue.so.0 "
        "built from the same tree, against the same calls made directly (glibc's wrappers). What a C call "
        "adds to the engine's: two `pthread_setcancelstate` calls (thread cancellation is off while kqrs "
        "works, so a cancellation point cannot unwind through it) and thread-local lookups through "
        "`__tls_get_addr` (a shared library's thread-locals). Until December 2026 every C call also checked "
        "its timeout with two syscalls and allocated its event buffer (an empty poll cost 10x `epoll_wait`).",
        "- Process exits: children are forks blocked on one pipe (released by closing it) that `_exit(0)`; "
        "per-exit rows time one more child's release → its event. `proc.asyncio` on Python 3.11 uses asyncio's "
        "ThreadedChildWatcher (a thread per child); 3.12+ uses pidfds.",
        "- What the misses are made of (measured on this machine, December 2026): `changes10000` is bound by "
        "the kernel's epoll_ctl: the `changes10000.floor` side makes the same syscalls in a plain loop with "
        "nothing around them and is itself 0.93-0.96 of Python's loop, over the 0.90 target; kqrs's "
        "changelists run 1-3% above that floor (`changes10000.over_floor`). `engine.one_ready_data` makes the "
        "same two syscalls as its baseline (epoll_wait, FIONREAD), issued directly, both in `kevent()`'s own "
        "frame (every frame live across a syscall costs a mispredicted return here: 2-4% of this call each, "
        "measured); what is left is user-space work, about 490 instructions per call (callgrind) against some "
        "30 for the raw pair: the knote bookkeeping (the kqueue's lock, timed alone around the same syscalls, "
        "costs under 1%). Short alternating runs of that row put it at 0.97-1.02, so it lands on either side "
        "of its 1.00 target from run to run. "
        "`xthread.p50` moves by microseconds from run to run with where and when the woken thread is scheduled "
        "(a wake-up costs 8-15 µs on this VM); what is systematic is about 0.4 µs at p10: a USER trigger "
        "spends longer than `os.eventfd_write` before its syscall (the changelist is parsed, the kqueue "
        "locked, the knote queued). With a GIL, the woken "
        "thread also finds the GIL taken back by the triggering thread more often after a USER trigger than "
        "after `os.eventfd_write` (60-75% of wake-ups vs about 50%). The triggering thread's work around "
        "its syscall decides that race: the waker takes the GIL back after the syscall and keeps it until it "
        "blocks, and a woken thread that got there first has gone to sleep on the GIL and needs a second "
        "wake-up. A USER trigger costs ~0.9 µs in all (changelist, lock, queue, kick) against 0.47 µs for "
        "`os.eventfd_write`; giving the eventfd side 0.8 µs of extra Python after its write turned a "
        "p50 ratio of 1.10 into 0.96 in the same run. On a busy host (p50 11-18 µs rather than 8) "
        "this row read 1.1-1.4 for the code before and after December's changes alike. The 1 s slices of a "
        "blocked control() (after each, the waiter checks that its fd was not closed behind its back) arm a "
        "kernel timer for every wait, and that costs a wake-up on this VM: in C, a thread in "
        "`epoll_wait(1000 ms)` woke 3-9% later (p50, 8 runs of 8) than one in `epoll_wait(-1)`, both woken "
        "by the same timerfd tick. A Python waiter without the slices did better on free-threaded 3.13t "
        "(median ratio 1.05 vs 1.12 over 6 alternating runs) and worse with a GIL (5 runs of 6 on 3.11: a "
        "waiter that wakes sooner more often finds the GIL still held by the thread that woke it); the "
        "slices stay, for what they guarantee. `engine.xthread.p50` is the same "
        "wake-up with no Python at all (Rust threads, the waker spinning until the woken thread stamps its "
        "time): the engine alone is level with eventfd (0.9-1.1 from run to run, the eventfd side reading "
        "its counter back), so what the Python row adds is the Python layer's and the GIL's. Two changes "
        "tried on the Python row did not move it in 10 alternating runs each, and were not kept: harvesting "
        "with the GIL held, so the woken thread asks for the GIL as soon as epoll_wait returns (median "
        "ratio 1.10 vs 1.10), and laying the kqueue out so that a trigger and its harvest share one cache "
        "line of state instead of five (the engine's time before the trigger's syscall and after the "
        "wake-up, 155 and 260 ns, did not move). Fork "
        "rows: what a fork costs grows with what the parent holds (about 140 ns per resident private page: "
        "fork copies its page-table entry and the child's exit drops it) and with the pages the child "
        "touches (3-5 µs a page fault). The knote tables are not copied at all (MADV_WIPEONFORK); kqrs's fork "
        "child handler writes nothing (what a child must find reset is on a MADV_WIPEONFORK page of its own) "
        "and touches one page, its code; loading the extension leaves no small permanent heap chunk behind, "
        "which used to drain glibc's cache of free chunks and send CPython's six after-fork mallocs down "
        "malloc's slow path (four page faults a child). What `fork.user` keeps, 2-5%: the extension's own "
        "pages (relocated data, its type objects), the handler's code page with the kernel's fault-around, "
        "and its close_range. `proc.1000` makes the same five syscalls per child on both sides; its rounds "
        "are dominated by 1,000 processes exiting, and its ratio moves by ±5% from run to run.",
        "",
    ]
    title = f"kqrs benchmarks — commit {short}{' (uncommitted changes)' if dirty else ''}, {when}"
    subtitle = (
        f"{'SMOKE RUN (numbers mean nothing) · ' if a.smoke else ''}{nrun} run{'s' if nrun > 1 else ''}; "
        "bar = worst run; tick = target; met = at or under the target in every run"
    )
    svg = chart(rows, runs, title, subtitle)
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
    with open(chart_path, "w") as f:
        f.write(svg)
    print(f"report: wrote {a.out} and {chart_path}")
    missing = [
        row.id
        for row in rows
        if not row.pending and any((v.get(row.kqrs) is None) or (row.base and v.get(row.base) is None) for v in runs)
    ]
    if missing:
        print("report: rows without data: " + ", ".join(missing), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

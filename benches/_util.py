"""Helpers shared by the benchmark modules (plain code; the pytest fixtures are in conftest.py).

- timing: `interleaved` / `interleaved_rounds` (every side of a row measured in turn, medians),
  `percentile`, `scaled` (tiny counts in smoke mode), `record_all`;
- fd sets: `SocketSet` (N sockets, one made readable), `EventfdSet` (N eventfds, one kept readable);
- `Waiter`: a thread blocked in a wait, for cross-thread wake-up latency;
- `Blocked`: N children of ours blocked on one pipe (forked by a small helper interpreter), for exits;
- `on_kqrs`: whether a selector (or an asyncio loop's selector) really runs on kqrs.
"""

from __future__ import annotations

import array
import gc
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import timeit
from typing import Any, Callable

SMOKE = os.environ.get("KQRS_BENCH_SMOKE") == "1"
METRICS_PATH = os.environ.get("KQRS_BENCH_METRICS")
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_probe.py")

# N registered fds for the "one ready among N" and changelist pairs. 10,000 socket fds need 5,000
# socketpairs (both ends registered); the hard RLIMIT_NOFILE here is 20,000, so the soft limit is raised.
SIZES = (1, 1000, 10000)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_fds() -> int:
    """How many more fds this process may open (soft RLIMIT_NOFILE less the fds open now)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] - len(os.listdir("/proc/self/fd"))


def probe_fd_budget(most: int = 100_000) -> int:
    """How many fd-backed knotes a fresh process (benches/_probe.py, which raises its soft limit to the
    hard one) can hold: the hard RLIMIT_NOFILE less 200, in thousands, at most `most`."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    return min(most, (hard - 200) // 1000 * 1000)


def scaled(full: int, smoke: int = 2) -> int:
    """A count of rounds / samples: `full` normally, `smoke` in smoke mode."""
    return smoke if SMOKE else full


def percentile(xs: list[float], p: float) -> float:
    """The p-th percentile (0..100) of `xs`, nearest-rank on the sorted samples."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


# ---- timing -------------------------------------------------------------------------------------


def interleaved(sides: dict[str, tuple[str, dict]], rounds: int, iters: int) -> dict[str, float]:
    """Times each side's statement (`timeit`, GC off) `iters` times per round, the sides taking turns
    (the order reversed every other round), for `rounds` rounds. Returns each side's median seconds per
    execution."""
    timers = {n: timeit.Timer(stmt, globals=g) for n, (stmt, g) in sides.items()}
    names = list(timers)
    for n in names:  # warm-up
        timers[n].timeit(max(1, iters // 4))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            samples[n].append(timers[n].timeit(iters) / iters)
    return {n: statistics.median(v) for n, v in samples.items()}


def interleaved_rounds(
    sides: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]], rounds: int, warmup: int = 1
) -> dict[str, float]:
    """Like interleaved() for operations that need a fresh state each time: each side is (setup, run);
    setup() is untimed and its result is passed to run(), which is timed once per round."""
    names = list(sides)
    samples: dict[str, list[float]] = {n: [] for n in names}
    was = gc.isenabled()
    gc.disable()
    try:
        for r in range(-warmup, rounds):
            for n in names if r % 2 == 0 else names[::-1]:
                setup, run = sides[n]
                arg = setup()
                t0 = time.perf_counter_ns()
                run(arg)
                dt = time.perf_counter_ns() - t0
                if r >= 0:
                    samples[n].append(dt * 1e-9)
    finally:
        if was:
            gc.enable()
    return {n: statistics.median(v) for n, v in samples.items()}


def record_all(record, row: str, medians: dict[str, float]) -> None:
    for side, v in medians.items():
        record(f"{row}/{side}", v, "s (interleaved median)")


# ---- fd sets --------------------------------------------------------------------------------------


class SocketSet:
    """`n` socket fds, both ends of n/2 socketpairs, none readable. `socks[0]` (fd `fds[0]`) is made
    readable by `make_ready()` (a byte sent by its peer) and drained by `drain()`."""

    def __init__(self, n: int):
        self.pairs = [socket.socketpair() for _ in range(max(1, (n + 1) // 2))]
        for a, b in self.pairs:
            a.setblocking(False)
            b.setblocking(False)
        self.socks = [s for pair in self.pairs for s in pair][:n]
        self.fds = [s.fileno() for s in self.socks]
        self.ready_sock, self.peer = self.pairs[0]

    def make_ready(self) -> None:
        self.peer.send(b"x")

    def drain(self) -> None:
        try:
            while self.ready_sock.recv(4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for a, b in self.pairs:
            a.close()
            b.close()
        self.pairs = []


class EventfdSet:
    """`n` eventfds (non-blocking), none readable; `make_ready()` writes 1 to `fds[0]`, which then stays
    readable (level-triggered) until `close()`."""

    def __init__(self, n: int):
        self.fds: list[int] = []
        try:
            for _ in range(n):
                self.fds.append(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
        except BaseException:
            self.close()
            raise

    def make_ready(self) -> None:
        os.eventfd_write(self.fds[0], 1)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def fionread_buffer() -> array.array:
    """The reusable int buffer a careful user hands to `fcntl.ioctl(fd, termios.FIONREAD, buf)`."""
    return array.array("i", [0])


# ---- selectors ------------------------------------------------------------------------------------


def on_kqrs(sel) -> bool:
    """Whether a selector object runs on kqrs: a stdlib KqueueSelector whose `_selector` is a
    `kqrs.kqueue`, or a selector class of kqrs's own."""
    import kqrs

    return type(getattr(sel, "_selector", None)) is kqrs.kqueue or type(sel).__module__.split(".")[0] == "kqrs"


# ---- cross-thread wake-up -------------------------------------------------------------------------


class Waiter(threading.Thread):
    """Blocks in `wait()`, stamps the wake-up, hands it back; `armed` is set just before it blocks."""

    def __init__(self, wait):
        super().__init__(daemon=True)
        self.wait = wait
        self.armed = threading.Event()
        self.woke = threading.Event()
        self.t1 = 0
        self.stop = False

    def run(self):
        while True:
            self.armed.set()
            self.wait()
            self.t1 = time.perf_counter_ns()
            if self.stop:
                return
            self.woke.set()

    def sample(self, fire) -> int:
        """Fires once the waiter is (very likely) blocked; returns ns from the fire to its wake-up."""
        self.armed.wait()
        self.armed.clear()
        time.sleep(0.0002)  # let it get into the blocking call
        t0 = time.perf_counter_ns()
        fire()
        self.woke.wait()
        self.woke.clear()
        return self.t1 - t0

    def finish(self, fire):
        self.armed.wait()
        self.stop = True
        fire()
        self.join(5)


# ---- blocked children (process exits) -------------------------------------------------------------

# Children are forked by a small helper interpreter (`python -S`, ~8 MB) and become ours when it exits
# (the benchmark process is made a child subreaper: conftest's `subreaper` fixture): fork cost grows with
# the parent's memory, and a pytest-benchmark process forks ~6x slower than a bare interpreter (2 ms vs
# 0.3 ms each), which made 10,000 children take ~25 s to start. The helper prints the pids; each child
# closes every fd but the pipe's read end and blocks reading it.
FORKER = r"""
import os, sys
r, n = int(sys.argv[1]), int(sys.argv[2])
pids, err = [], ""
try:
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            try:
                os.closerange(0, r)
                os.closerange(r + 1, 1 << 20)
                os.read(r, 1)
            finally:
                os._exit(0)
        pids.append(pid)
except OSError as e:
    err = repr(e)
sys.stdout.write(" ".join(map(str, pids)) + "\n" + err)
"""
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37


class Blocked:
    """`n` children of ours blocked on one pipe; `release()` lets them all _exit(0). Needs this process
    to be a child subreaper (else the children are the init process's)."""

    def __init__(self, n: int):
        r, self.w = os.pipe()
        try:
            out = subprocess.run(
                [sys.executable, "-S", "-c", FORKER, str(r), str(n)],
                pass_fds=(r,),
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            os.close(r)
        line, err = out.stdout.split("\n", 1) if "\n" in out.stdout else ("", out.stdout)
        self.pids = [int(p) for p in line.split()]
        if len(self.pids) != n or out.returncode != 0:
            self.cleanup()
            raise RuntimeError(f"forked {len(self.pids)} of {n} children: {err or out.stderr[-500:]}")

    def release(self) -> None:
        if self.w >= 0:
            os.close(self.w)
            self.w = -1

    def cleanup(self) -> None:
        """Kill whatever is left and reap every child (idempotent)."""
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # reaped by the timed loop
        self.pids = []
        self.release()


# ---- fresh processes (benches/_probe.py) ------------------------------------------------------------


def probe(*args: str, timeout: float = 300) -> dict:
    """Runs `python benches/_probe.py ARGS...` and returns the JSON it prints last."""
    import json

    out = subprocess.run([sys.executable, PROBE, *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"_probe.py {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- fresh queues ---------------------------------------------------------------------------------


class Queues:
    """Fresh queues for interleaved_rounds() and benchmark.pedantic(): each setup first closes every queue
    made before, then makes one (and fills it, untimed)."""

    def __init__(self):
        self.open: list = []

    def fresh(self, make, fill=None):
        """setup() for interleaved_rounds: returns the new queue."""

        def setup():
            self.close()
            q = make()
            self.open.append(q)
            if fill:
                fill(q)
            return q

        return setup

    def pedantic(self, make, fill=None):
        """setup() for benchmark.pedantic: returns ((queue,), {})."""
        setup = self.fresh(make, fill)
        return lambda: ((setup(),), {})

    def close(self):
        for q in self.open:
            q.close()
        self.open = []

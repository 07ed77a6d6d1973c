"""Fork cost for worker pools: os.fork() + os._exit() + waitpid(), each side in fresh processes
(benches/_probe.py), alternating in chunks so both see the same machine.

Every side first imports every module `import kqrs` brings in besides kqrs's own (asked of a fresh process
by `_probe.py deps`), so that a process with kqrs and one without differ only in kqrs; the test checks that
from the `sys.modules` each side reports.
- fork.user: 10 kqueues x 1,000 EVFILT_USER knotes (no fds) vs a process that never imported kqrs;
- fork.import: `import kqrs` only, no kqueue, vs the same process without kqrs;
- fork.read: 1,000 sockets watched by 10 kqueues x 1,000 READ knotes vs the same 1,000 sockets in 10
  `select.epoll` objects (the same process with epoll instead of kqrs).
- fork.import.bare: `import kqrs` only vs a process that imports neither kqrs nor the modules it brings in
  (what those modules add to a process that would not have imported them anyway).
- fork.null: the same process twice (no kqrs, with and without the modules kqrs imports, which are none
  today): what the measurement itself makes of identical sides.

Each side's figure is the fastest of its chunk medians: on this shared machine the median of all forks of
one side moved by up to 8% between identical sides in one run (host load comes in spells longer than a
chunk), while the fastest chunk, which every side gets many tries at, moved by 1-2%.
"""

from __future__ import annotations

import statistics

from _util import probe, scaled

PAIRS = {
    "user": ("user", "base"),
    "read": ("read_kqrs", "read_epoll"),
    "import": ("import", "base"),
    "import_bare": ("import", "bare"),
}
KQRS_MODES = ("user", "read_kqrs", "import")


def _kqrs_free(modules) -> set[str]:
    return {m for m in modules if m != "kqrs" and not m.startswith("kqrs.")}


def test_fork_cost(record):
    deps = ",".join(probe("deps", timeout=60)["modules"])
    # many short chunks, alternating: the host's slow spells then fall on every side alike
    chunks, forks = scaled(24, 1), scaled(50, 3)
    lat: dict[str, list[int]] = {}
    chunk_medians: dict[str, list[float]] = {}
    modules: dict[str, list[str]] = {}
    modes = sorted({m for pair in PAIRS.values() for m in pair})
    for c in range(chunks):
        for mode in modes if c % 2 == 0 else modes[::-1]:
            r = probe("fork", "base" if mode == "bare" else mode, str(forks), "" if mode == "bare" else deps)
            assert len(r["ns"]) == forks
            assert r["imported_kqrs"] == (mode in KQRS_MODES)
            lat.setdefault(mode, []).extend(r["ns"])
            chunk_medians.setdefault(mode, []).append(statistics.median(r["ns"]))
            modules[mode] = r["modules"]
    # the process with `import kqrs` and the one without hold the same modules but kqrs's own
    assert _kqrs_free(modules["import"]) == set(modules["base"]), sorted(
        _kqrs_free(modules["import"]) ^ set(modules["base"])
    )
    assert set(modules["base"]) <= _kqrs_free(modules["user"])
    assert set(modules["bare"]) <= set(modules["base"])
    for mode, xs in lat.items():
        assert len(xs) == chunks * forks
        record(f"fork/{mode}.median", statistics.median(xs) / 1000, "us per fork+exit+wait (all chunks)")
        record(
            f"fork/{mode}.best",
            min(chunk_medians[mode]) / 1000,
            f"us per fork+exit+wait, the fastest of {chunks} chunk medians",
        )
    record(
        "fork/user.extra_modules",
        len(_kqrs_free(modules["user"]) - set(modules["base"])),
        "modules besides kqrs's own that 10 kqueues x 1,000 USER knotes import",
    )

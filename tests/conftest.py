"""What the whole suite shares: the `kq` fixture, and whether the kernel's process connector must work here.

A test that asks for ``kq`` gets a fresh kqrs kqueue, closed after the test (files that need another kind of
queue, or their own bookkeeping, define their own ``kq``, which overrides this one).

A test that needs the connector (NOTE_FORK, NOTE_EXEC, NOTE_TRACK) asks for the ``connector`` fixture. It
skips only where the connector really cannot work for this process: CAP_NET_ADMIN missing from the effective
capability set (checked, not guessed from the uid), or a user, pid or network namespace other than the
initial ones (the kernel serves the connector there only). Where it should work and does not, the test
fails: a skip there would hide a regression. Skips for a missing capability are counted in a line of their
own at the end of the run.
"""

from __future__ import annotations

import functools
import os

import pytest

CAP_NET_ADMIN = 12
# The initial user and pid namespaces have fixed inode numbers (PROC_USER_INIT_INO, PROC_PID_INIT_INO).
INIT_USER_NS = 0xEFFFFFFD
INIT_PID_NS = 0xEFFFFFFC
CONNECTOR_SKIP = "no process connector here"


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _ns_inode(pid: str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


@functools.cache
def connector_missing() -> str | None:
    """Why the process connector cannot work for this process, or None when it must."""
    if not effective_caps() >> CAP_NET_ADMIN & 1:
        return "CAP_NET_ADMIN is not in the effective capability set"
    if _ns_inode("self", "user") != INIT_USER_NS:
        return "not in the initial user namespace"
    if _ns_inode("self", "pid") != INIT_PID_NS:
        return "not in the initial pid namespace"
    # in the initial pid namespace, pid 1 is the real init: its network namespace is the initial one
    init_net = _ns_inode("1", "net")
    if init_net is not None and _ns_inode("self", "net") != init_net:
        return "not in the initial network namespace"
    return None


@functools.cache
def connector_errno() -> int:
    """0 when a kqueue can watch this process's forks (the connector works), else the errno it gets."""
    import kqrs

    if not kqrs._kqrs._filter_supported(kqrs.KQ_FILTER_PROC):
        return -1
    with kqrs.kqueue() as q:
        got = q.control(
            [kqrs.kevent(os.getpid(), kqrs.KQ_FILTER_PROC, kqrs.KQ_EV_ADD, kqrs.KQ_NOTE_EXIT | kqrs.KQ_NOTE_FORK)], 1, 0
        )
    return got[0].data if got else 0


def require_connector() -> None:
    """Returns when the connector works with CAP_NET_ADMIN; skips without that capability (or outside the
    initial namespaces); fails when it should work and does not.

    (Linux 6.6+ also lets a process without CAP_NET_ADMIN subscribe, but kqrs then cannot force the 8 MiB
    receive buffer it asks for, and the exact expectations of the tracking tests, no NOTE_TRACKERR without
    an overflow the test provokes, assume that buffer.)"""
    why = connector_missing()
    if why is not None:
        pytest.skip(f"{CONNECTOR_SKIP}: {why}")
    err = connector_errno()
    if err != 0:
        name = os.strerror(err) if err > 0 else "EVFILT_PROC is not built"
        pytest.fail(
            f"the process connector fails ({name}) although this process has CAP_NET_ADMIN in the "
            "initial namespaces: a regression, not a reason to skip",
            pytrace=False,
        )


@pytest.fixture
def connector() -> None:
    """For tests that need the connector."""
    require_connector()


@pytest.fixture
def has_connector() -> bool:
    """For tests that do more with the connector: True when it works, False where it cannot (the test then
    does less, and says so); a failure where it should work."""
    try:
        require_connector()
    except pytest.skip.Exception:
        return False
    return True


CAP_SETGID, CAP_SETUID, CAP_SYS_ADMIN = 6, 7, 21


@pytest.fixture(name="effective_caps")
def effective_caps_fixture() -> int:
    """This process's effective capability set, as a bit mask (CAP_* numbers from linux/capability.h)."""
    return effective_caps()


def require_caps(why: str, *bits: int) -> None:
    """Skips when a capability in `bits` is missing from the effective set (not guessed from the uid)."""
    missing = [b for b in bits if not effective_caps() >> b & 1]
    if missing:
        pytest.skip(f"{why} needs capabilities {missing} (not in the effective set)")


@pytest.fixture
def network_namespace() -> None:
    """For tests that run something under `unshare -n`: skips without CAP_SYS_ADMIN; with it, `unshare -n`
    that does not work is a failure."""
    require_caps("a network namespace", CAP_SYS_ADMIN)
    import subprocess

    p = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    assert p.returncode == 0, f"unshare -n fails with CAP_SYS_ADMIN: {p.stderr}"


@pytest.fixture
def can_change_user() -> None:
    """For tests that become another user: skips without CAP_SETUID and CAP_SETGID."""
    require_caps("becoming another user", CAP_SETUID, CAP_SETGID)


def pytest_terminal_summary(terminalreporter) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if CONNECTOR_SKIP in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} test(s) skipped for want of the process connector ({connector_missing()})"
        )


@pytest.fixture
def kq():
    import kqrs

    q = kqrs.kqueue()
    yield q
    q.close()

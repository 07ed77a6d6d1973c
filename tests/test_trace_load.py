"""`kqrs trace` when a process is gone before its exec is read (issue 14).

Under load the tracer is scheduled late: a short-lived child may have exec'd, exited and been reaped before
its events are read, and the events of different knotes come back in any order. What outlives the process
must still be told: the program (fanotify's FAN_OPEN_EXEC), the command name while it is a zombie, and that
the argv is gone. These cases are made exactly by stopping the tracer (SIGSTOP) while the child runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import kqrs
from kqrs import _trace

pytestmark = [
    pytest.mark.skipif(not kqrs._kqrs._filter_supported(kqrs.KQ_FILTER_PROC), reason="EVFILT_PROC is not built yet"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

KQRS = [sys.executable, "-m", "kqrs"]
SH, LS, SLEEP, TRUE = (os.path.realpath(shutil.which(p) or p) for p in ("sh", "ls", "sleep", "true"))


def _cap(bit: int) -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    return False


CAP_SYS_ADMIN, CAP_SYS_NICE = 21, 23
needs_fanotify = pytest.mark.skipif(not _cap(CAP_SYS_ADMIN), reason="needs CAP_SYS_ADMIN (fanotify)")
needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs setpriv and root to drop capabilities"
)
DROP_CAPS = ["setpriv", "--bounding-set=-sys_admin,-sys_nice", "--"]


# --- an exec read too late: what outlives the process ------------------------------------------------------

# The command: waits for "go", forks a child that runs ls, waits for the child to exit (reaping it or not, as
# argv[1] says), says so on stdout, and waits for stdin's end before reaping and exiting.
LATE = """
import os, sys
sys.stdin.readline()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv("/bin/ls", ["ls", "/"])
if sys.argv[1] == "reap":
    os.waitpid(pid, 0)
else:
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
print(pid, flush=True)
sys.stdin.read()
"""


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def trace_stopped_while_child_runs(how: str, prefix: list[str] | None = None) -> tuple[list[dict], int]:
    """The tracer is stopped (SIGSTOP) from before the child's fork until it is a zombie (or reaped), so the
    exec event is read only after the process is gone: what the trace still says about it."""
    cmd = [*(prefix or []), *KQRS, "trace", "--json", "--", sys.executable, "-c", LATE, how]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(p.stderr.readline())
        assert first["event"] == "exec"  # the tracer is running and attached
        os.kill(p.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while _state(p.pid) != "T":
            assert time.monotonic() < deadline
            time.sleep(0.001)
        p.stdin.write("go\n")
        p.stdin.flush()
        kid = int(p.stdout.readline())
        if how != "reap":
            assert _state(kid) == "Z"
        os.kill(p.pid, signal.SIGCONT)
        recs = [first]
        while not (recs[-1]["event"] == "exec" and recs[-1]["pid"] == kid):  # read before the zombie is reaped
            line = p.stderr.readline()
            assert line, recs
            recs.append(json.loads(line))
        p.stdin.close()
        recs += [json.loads(line) for line in p.stderr.read().splitlines()]
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.wait()
    return recs, kid


def exec_of(recs: list[dict], pid: int) -> dict:
    (e,) = [r for r in recs if r["event"] == "exec" and r["pid"] == pid]
    return e


@needs_fanotify
def test_exec_of_a_reaped_process_names_its_program_from_fanotify():
    recs, kid = trace_stopped_while_child_runs("reap")
    e = exec_of(recs, kid)
    assert (e["program"], e["program_source"], e["argv"], e["argv_gone"], e["comm"]) == (LS, "fanotify", None,
                                                                                         True, None)
    assert [r["event"] for r in recs if r.get("pid") == kid] == ["fork", "exec", "exit"]


@needs_fanotify
def test_exec_of_a_zombie_keeps_its_comm():
    recs, kid = trace_stopped_while_child_runs("zombie")
    e = exec_of(recs, kid)
    assert (e["program"], e["program_source"], e["argv"], e["argv_gone"], e["comm"]) == (LS, "fanotify", None,
                                                                                         True, "ls")


@needs_setpriv
def test_exec_of_a_zombie_without_fanotify_gives_its_comm():
    recs, kid = trace_stopped_while_child_runs("zombie", DROP_CAPS)
    e = exec_of(recs, kid)
    assert (e["program"], e["argv"], e["argv_gone"], e["comm"]) == (None, None, True, "ls")
    assert recs[-1]["exec_files"] is None


@needs_setpriv
def test_exec_of_a_reaped_process_without_fanotify_says_what_is_gone():
    recs, kid = trace_stopped_while_child_runs("reap", DROP_CAPS)
    e = exec_of(recs, kid)
    assert (e["program"], e["argv"], e["argv_gone"], e["comm"]) == (None, None, True, None)


# --- fanotify's exec records, directly -----------------------------------------------------------------------


@pytest.fixture
def exec_files():
    files, why = _trace.ExecFiles.open()
    if files is None:
        assert not _cap(CAP_SYS_ADMIN), f"fanotify unavailable with CAP_SYS_ADMIN: {why}"
        pytest.skip(f"needs CAP_SYS_ADMIN: {why}")
    yield files
    files.close()


def test_exec_files_names_the_program_not_its_loader(exec_files):
    p = subprocess.Popen([TRUE])
    p.wait()
    exec_files.drain(time.monotonic(), {})
    recs = exec_files.by_pid[p.pid]
    assert (recs[0][1], recs[0][2]) == (TRUE, False)
    assert all(loader for _, _, loader in recs[1:])  # its loader, if it is dynamically linked
    assert exec_files.take(p.pid) == TRUE
    assert exec_files.take(p.pid) is None  # taken once


def test_exec_files_script_is_named_by_its_interpreter_as_proc_exe_is(exec_files, tmp_path):
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    p = subprocess.Popen([str(script)])
    p.wait()
    exec_files.drain(time.monotonic(), {})
    assert [path for _, path, _ in exec_files.by_pid[p.pid]][:2] == [str(script), SH]
    assert exec_files.take(p.pid) == SH


def test_exec_files_latest_of_two_execs(exec_files):
    p = subprocess.Popen([SH, "-c", f": ; exec {TRUE}"])
    p.wait()
    exec_files.drain(time.monotonic(), {})
    assert exec_files.take(p.pid) == TRUE


def test_exec_files_forgets_strangers_after_a_while(exec_files):
    p = subprocess.Popen([TRUE])
    p.wait()
    now = time.monotonic()
    exec_files.drain(now, {})
    assert p.pid in exec_files.by_pid
    exec_files._pruned = 0.0
    exec_files.drain(now + 31, {})
    assert p.pid not in exec_files.by_pid

"""`kqrs pwait` (FreeBSD pwait(1) on EVFILT_PROC) and `kqrs trace` (a command's process tree as it lives).

pwait, as FreeBSD's: waits for every pid (none of which is its child); -v prints "PID: exited with status N."
or "PID: killed by signal N.", and "timeout"; -t DURATION (s/m/h units) gives up with status 124; -o returns
on the first exit; -p prints the pids still running; bad or nonexistent pids are warned about and ignored;
usage errors exit 64, bad durations 65.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import kqrs

pytestmark = [
    pytest.mark.skipif(not kqrs._kqrs._filter_supported(kqrs.KQ_FILTER_PROC), reason="EVFILT_PROC is not built yet"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

KQRS = [sys.executable, "-m", "kqrs"]


def run(*args, timeout=20, **kw):
    return subprocess.run([*KQRS, *args], capture_output=True, text=True, timeout=timeout, **kw)


def start(*args):
    return subprocess.Popen([*KQRS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Child:
    """A fork of this process blocked on a pipe; release() lets it exit with `code`."""

    def __init__(self, code=0):
        r, self._w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(self._w)
                os.read(r, 1)
            finally:
                os._exit(code)
        os.close(r)

    def release(self):
        os.write(self._w, b"x")

    def reap(self):
        return os.waitpid(self.pid, 0)[1]

    def alive(self):
        return os.waitpid(self.pid, os.WNOHANG)[0] == 0

    def cleanup(self):
        os.close(self._w)
        try:
            if os.waitpid(self.pid, os.WNOHANG)[0] == 0:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


@pytest.fixture
def child():
    made = []

    def _child(code=0):
        c = Child(code)
        made.append(c)
        return c

    yield _child
    for c in made:
        c.cleanup()


def settle(p, timeout=0.3):
    """pwait is still waiting after `timeout` (it did not return early)."""
    with pytest.raises(subprocess.TimeoutExpired):
        p.wait(timeout)


# --- pwait --------------------------------------------------------------------------------------------------


def test_pwait_waits_for_every_pid_and_prints_statuses(child):
    a, b = child(3), child()
    p = start("pwait", "-v", str(a.pid), str(b.pid))
    settle(p)
    a.release()
    settle(p, 0.2)  # b is still running
    os.kill(b.pid, signal.SIGTERM)
    out, err = p.communicate(timeout=5)
    assert p.returncode == 0, err
    assert sorted(out.splitlines()) == sorted([f"{a.pid}: exited with status 3.", f"{b.pid}: killed by signal 15."])
    assert err == ""
    # pwait reaps nothing (it could not): the statuses are still ours to collect
    assert (a.reap(), b.reap()) == (3 << 8, signal.SIGTERM)


def test_pwait_without_v_prints_nothing(child):
    a = child(0)
    p = start("pwait", str(a.pid))
    a.release()
    out, err = p.communicate(timeout=5)
    assert (p.returncode, out, err) == (0, "", "")


def test_pwait_zombie_returns_at_once(child):
    a = child(7)
    a.release()
    os.waitid(os.P_PID, a.pid, os.WEXITED | os.WNOWAIT)
    r = run("pwait", "-v", str(a.pid))
    assert (r.returncode, r.stdout) == (0, f"{a.pid}: exited with status 7.\n")


def test_pwait_timeout_exits_124(child):
    a = child()
    t0 = time.monotonic()
    r = run("pwait", "-v", "-t", "0.3", str(a.pid))
    assert time.monotonic() - t0 >= 0.3
    assert (r.returncode, r.stdout, r.stderr) == (124, "timeout\n", "")
    assert a.alive()


def test_pwait_timeout_zero_gives_up_at_once(child):
    a = child()
    r = run("pwait", "-t", "0", str(a.pid))
    assert (r.returncode, r.stdout) == (124, "")


def test_pwait_timeout_with_unit_and_p_lists_the_survivors(child):
    a, b = child(), child(1)
    b.release()
    r = run("pwait", "-p", "-t", "0.2s", str(a.pid), str(b.pid))
    assert r.returncode == 124
    assert r.stdout.split() == [str(a.pid)]


def test_pwait_timeout_not_reached(child):
    a = child(2)
    p = start("pwait", "-v", "-t", "1m", str(a.pid))
    settle(p, 0.2)
    a.release()
    out, _ = p.communicate(timeout=5)
    assert (p.returncode, out) == (0, f"{a.pid}: exited with status 2.\n")


@pytest.mark.parametrize(
    "value,message",
    [("1x", "timeout unit"), ("abc", "timeout value"), ("-1", "timeout value"), ("1e9", "timeout value")],
)
def test_pwait_bad_timeout_exits_65(value, message):
    r = run("pwait", "-t", value, "1")
    assert r.returncode == 65
    assert r.stderr.strip() == f"kqrs pwait: {message}"


def test_pwait_o_returns_on_the_first_exit(child):
    a, b = child(), child(5)
    p = start("pwait", "-o", "-v", str(a.pid), str(b.pid))
    settle(p, 0.2)
    b.release()
    out, _ = p.communicate(timeout=5)
    assert (p.returncode, out) == (0, f"{b.pid}: exited with status 5.\n")
    assert a.alive()


def test_pwait_nonexistent_pid_is_a_warning(child):
    gone = child(0)
    gone.release()
    gone.reap()
    a = child(4)
    p = start("pwait", "-v", str(gone.pid), str(a.pid))
    settle(p, 0.2)
    a.release()
    out, err = p.communicate(timeout=5)
    assert p.returncode == 0
    assert out == f"{a.pid}: exited with status 4.\n"
    assert err == f"kqrs pwait: {gone.pid}: No such process\n"


def test_pwait_only_nonexistent_pids_returns_0(child):
    gone = child(0)
    gone.release()
    gone.reap()
    r = run("pwait", "-v", str(gone.pid))
    assert (r.returncode, r.stdout) == (0, "")
    assert "No such process" in r.stderr


def test_pwait_o_with_a_nonexistent_pid_returns_at_once(child):
    gone = child(0)
    gone.release()
    gone.reap()
    a = child()
    r = run("pwait", "-o", str(gone.pid), str(a.pid))
    assert r.returncode == 0
    assert a.alive()


def test_pwait_bad_pids_and_proc_paths(child):
    a = child(9)
    a.release()
    os.waitid(os.P_PID, a.pid, os.WEXITED | os.WNOWAIT)
    r = run("pwait", "-v", "abc", "-5", f"/proc/{a.pid}", str(a.pid))  # "-5" after a pid is an operand
    assert r.returncode == 0
    assert r.stdout == f"{a.pid}: exited with status 9.\n"  # the duplicate is watched once
    assert r.stderr.splitlines() == ["kqrs pwait: abc: bad process id", "kqrs pwait: -5: bad process id"]


def test_pwait_usage_errors_exit_64():
    r = run("pwait")
    assert r.returncode == 64 and "usage: kqrs pwait" in r.stderr
    r = run("pwait", "-x", "1")
    assert r.returncode == 64 and "usage: kqrs pwait" in r.stderr


# --- trace --------------------------------------------------------------------------------------------------

SCRIPT = "true; ls /; exit 3"  # dash runs `true` itself, forks and execs ls, then exits 3


def trace_json(*cmd, **kw):
    r = run("trace", "--json", "--", *cmd, **kw)
    events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    return r, events


def test_trace_shell_script_text():
    r = run("trace", "--", "sh", "-c", SCRIPT)
    assert r.returncode == 3
    assert "usr" in r.stdout.split()  # ls's own output is untouched, on stdout
    lines = r.stderr.splitlines()
    sh = os.path.realpath("/bin/sh")
    m = re.fullmatch(r"\s*[\d.]+ (\d+) exec (\S+)  \[sh -c '(.*)'\]", lines[0])
    assert m and m.group(2) == sh and m.group(3) == SCRIPT, lines
    root = int(m.group(1))
    m = re.fullmatch(rf"\s*[\d.]+ {root} fork (\d+)", lines[1])
    assert m, lines
    kid = int(m.group(1))
    body = "\n".join(lines)
    # indented one level; the program always named (from fanotify when ls was gone by the time trace looked
    # at /proc), the argv or "[argv gone]", never a bare name
    ls = re.escape(os.path.realpath(shutil.which("ls")))
    assert re.search(rf"^\s*[\d.]+   {kid} exec {ls}(  \[ls /\]| \[argv gone\])$", body, re.M), body
    assert re.search(rf"^\s*[\d.]+   {kid} exited with status 0 after [\d.]+ ms$", body, re.M), body
    assert re.search(rf"^\s*[\d.]+ {root} exited with status 3 after [\d.]+ (ms|s)$", body, re.M), body
    assert lines[-1].startswith("summary: 2 processes; max depth 1; ")
    assert lines[-1].endswith("exit statuses: 0 (1), 3 (1)")


def test_trace_shell_script_json():
    r, evs = trace_json("sh", "-c", SCRIPT)
    assert r.returncode == 3
    assert len(evs) == len(r.stderr.splitlines())  # every line is one JSON object
    kinds = [e["event"] for e in evs]
    assert kinds == ["exec", "fork", "exec", "exit", "exit", "summary"], kinds
    root = evs[0]["pid"]
    assert evs[0]["depth"] == 0 and evs[0]["argv"] == ["sh", "-c", SCRIPT]
    assert evs[0]["program"] == os.path.realpath("/bin/sh")
    kid = evs[1]["pid"]
    assert (evs[1]["ppid"], evs[1]["depth"]) == (root, 1)
    assert evs[2]["pid"] == kid and evs[2]["program"] == os.path.realpath(shutil.which("ls"))
    # argv null: ls was gone already, and the trace says so (tests/test_trace_load.py: how often, under load)
    assert (evs[2]["argv"], evs[2]["argv_gone"]) in ((["ls", "/"], False), (None, True))
    assert (evs[3]["pid"], evs[3]["exit_code"], evs[3]["status"], evs[3]["signal"]) == (kid, 0, 0, None)
    assert (evs[4]["pid"], evs[4]["exit_code"], evs[4]["status"]) == (root, 3, 3 << 8)
    assert evs[4]["lifetime"] >= evs[3]["lifetime"] >= 0
    times = [e["time"] for e in evs]
    assert times == sorted(times)
    summary = evs[-1]
    assert (summary["processes"], summary["max_depth"], summary["exit_statuses"]) == (2, 1, {"0": 1, "3": 1})
    assert (summary["status"], summary["tracking"], summary["trackerr"], summary["unfinished"]) == (768, True, 0, [])


def test_trace_three_levels_and_a_fork_without_exec():
    r, evs = trace_json("sh", "-c", 'sh -c "sleep 0.1; exit 2"; (exit 5); exit 1')
    assert r.returncode == 1
    forks = {e["pid"]: e for e in evs if e["event"] == "fork"}
    exits = {e["pid"]: e for e in evs if e["event"] == "exit"}
    execs = {e["pid"]: e for e in evs if e["event"] == "exec"}
    root = evs[0]["pid"]
    assert len(forks) == 3 and set(exits) == set(forks) | {root}
    depth = {p: e["depth"] for p, e in forks.items()}
    (inner,) = [p for p, e in forks.items() if e["ppid"] == root and p in execs and execs[p]["argv"][0] == "sh"]
    (sleeper,) = [p for p, e in forks.items() if e["ppid"] == inner]
    (subshell,) = [p for p, e in forks.items() if e["ppid"] == root and p != inner]
    assert (depth[inner], depth[sleeper], depth[subshell]) == (1, 2, 1)
    assert subshell not in execs  # a fork that never execs
    assert execs[sleeper]["argv"] == ["sleep", "0.1"]
    assert {p: e["exit_code"] for p, e in exits.items()} == {root: 1, inner: 2, sleeper: 0, subshell: 5}
    assert exits[sleeper]["lifetime"] >= 0.09
    summary = evs[-1]
    assert (summary["processes"], summary["max_depth"]) == (4, 2)
    assert summary["exit_statuses"] == {"0": 1, "1": 1, "2": 1, "5": 1}


def test_trace_killed_command():
    r = run("trace", "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + signal.SIGTERM
    assert "killed by signal 15 (SIGTERM)" in r.stderr
    assert r.stderr.splitlines()[-1].endswith("exit statuses: SIGTERM (1)")


def test_trace_follows_an_orphan_until_it_exits():
    """`sleep &` outlives the shell (reparented away from trace): the trace goes on until it exits."""
    t0 = time.monotonic()
    r, evs = trace_json("sh", "-c", "sleep 0.3 & exit 0")
    assert time.monotonic() - t0 >= 0.3
    assert r.returncode == 0
    exits = [e for e in evs if e["event"] == "exit"]
    assert [e["exit_code"] for e in exits] == [0, 0]
    assert exits[-1]["pid"] != evs[0]["pid"] and exits[-1]["lifetime"] >= 0.25


def test_trace_missing_command():
    r = run("trace", "--", "/nonexistent/command")
    assert r.returncode == 127
    assert "kqrs trace: /nonexistent/command: No such file or directory" in r.stderr


def test_trace_usage_error():
    r = run("trace")
    assert r.returncode == 64 and "usage: kqrs trace" in r.stderr
    r = run("trace", "--bogus", "--", "true")
    assert r.returncode == 64


def test_trace_output_file(tmp_path):
    out = tmp_path / "trace.txt"
    r = run("trace", "-o", str(out), "--", "sh", "-c", "exit 4")
    assert r.returncode == 4
    assert r.stderr == ""
    text = out.read_text().splitlines()
    assert "exited with status 4" in text[-2] and text[-1].startswith("summary: 1 process; max depth 0; ")


def test_trace_without_double_dash():
    r = run("trace", "sh", "-c", "exit 0")  # no "--": the command starts at the first operand
    assert r.returncode == 0 and r.stderr.splitlines()[-1].startswith("summary: 1 process")


def test_trace_without_the_connector_shows_the_exit_only(network_namespace):
    p = subprocess.run(
        ["unshare", "-n", *KQRS, "trace", "--", "sh", "-c", SCRIPT], capture_output=True, text=True, timeout=20
    )
    assert p.returncode == 3
    lines = p.stderr.splitlines()
    assert lines[0].startswith("kqrs trace: forks and execs cannot be traced here")
    assert re.fullmatch(r"\s*[\d.]+ \d+ exited with status 3 after .*", lines[1]), lines
    assert lines[-1].startswith("summary: 1 process; ") and "no process connector" in lines[-1]

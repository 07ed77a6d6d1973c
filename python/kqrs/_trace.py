"""``kqrs trace``: run a command and print its process tree as it lives.

    kqrs trace [--json] [-o FILE] [--] COMMAND [ARG...]

Prints every fork, exec (with the program) and exit (with the status and the lifetime) of COMMAND and of
every process it starts, as they happen, then a summary: how many processes, the deepest level of the tree,
and the exit statuses seen. Lines go to standard error (or FILE), so the command's own output stays apart.

  --json        one JSON object per line and event ("fork", "exec", "exit", "trackerr"), then a "summary"
  -o FILE       write the trace to FILE instead of standard error

kqrs trace exits with the command's own exit status (128 + N when a signal N killed it; 127 when it could
not be run). It follows the tree until every process in it has exited, like strace -f.

How: one EVFILT_PROC knote with NOTE_EXIT|NOTE_FORK|NOTE_EXEC|NOTE_TRACK, added while the forked command
still waits on a pipe, so that not even its first fork or exec can be missed; NOTE_TRACK gives each new
process a knote of its own. Forks, execs and tracking need the kernel's process connector; without it only
the command's own exit is shown.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import sys
import time
from typing import IO, Any

PROG = "kqrs trace"
USAGE = f"usage: {PROG} [--json] [-o FILE] [--] COMMAND [ARG...]"
EX_USAGE = 64


class Proc:
    __slots__ = ("pid", "ppid", "depth", "start", "program", "argv")

    def __init__(self, pid: int, ppid: int | None, depth: int, start: float):
        self.pid = pid
        self.ppid = ppid
        self.depth = depth
        self.start = start
        self.program: str | None = None
        self.argv: list[str] | None = None


def _read_program(pid: int) -> tuple[str | None, list[str] | None]:
    """The executable and argv of a live process (its command name alone once it is a zombie)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
        argv = [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] or None
    except OSError:
        argv = None
    if exe is None and argv is None:
        try:
            with open(f"/proc/{pid}/comm") as f:
                exe = f.read().strip() or None
        except OSError:
            pass
    return exe, argv


def _read_ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _status_words(status: int) -> tuple[str, str]:
    """(sentence, summary key) for a wait(2) status."""
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return f"exited with status {code}", str(code)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        core = " (core dumped)" if os.WCOREDUMP(status) else ""
        return f"killed by signal {sig} ({name}){core}", name
    return f"terminated (status {status:#x})", f"{status:#x}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.3f} s"


class Tracer:
    def __init__(self, out: IO[str], json_out: bool, t0: float):
        self.out = out
        self.json = json_out
        self.t0 = t0
        self.procs: dict[int, Proc] = {}
        self.live: set[int] = set()
        self.statuses: dict[str, int] = {}
        self.lost = 0

    def _line(self, proc: Proc, now: float, event: str, text: str, *, about: Proc | None = None, **fields: object) -> None:
        """One line: the text indented at `proc`'s depth, or a JSON record about `about` (default proc)."""
        t = now - self.t0
        if self.json:
            a = about or proc
            rec = {"time": round(t, 6), "event": event, "pid": a.pid, "ppid": a.ppid, "depth": a.depth}
            rec.update(fields)
            self.out.write(json.dumps(rec) + "\n")
        else:
            self.out.write(f"{t:9.3f} {'  ' * proc.depth}{proc.pid} {text}\n")
        self.out.flush()

    def add(self, pid: int, ppid: int | None, now: float) -> Proc:
        parent = self.procs.get(ppid) if ppid is not None else None
        p = Proc(pid, ppid, parent.depth + 1 if parent else 1, now)
        self.procs[pid] = p
        self.live.add(pid)
        if parent is not None:
            self._line(parent, now, "fork", f"fork {pid}", about=p)
        else:
            self._line(p, now, "fork", "forked (parent unknown)")
        return p

    def exec_(self, p: Proc, now: float) -> None:
        p.program, p.argv = _read_program(p.pid)
        prog = p.program or "?"
        args = shlex.join(p.argv) if p.argv else ""
        self._line(p, now, "exec", f"exec {prog}" + (f"  [{args}]" if args else ""), program=p.program, argv=p.argv)

    def exit(self, p: Proc, now: float, status: int | None) -> None:
        self.live.discard(p.pid)
        life = now - p.start
        if status is None:
            sentence, key = "exited (status unknown)", "unknown"
            fields: dict[str, Any] = {"status": None, "exit_code": None, "signal": None}
        else:
            sentence, key = _status_words(status)
            fields = {
                "status": status,
                "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                "core": bool(os.WIFSIGNALED(status) and os.WCOREDUMP(status)),
            }
        self.statuses[key] = self.statuses.get(key, 0) + 1
        self._line(p, now, "exit", f"{sentence} after {_duration(life)}", lifetime=round(life, 6), **fields)

    def trackerr(self, p: Proc, now: float) -> None:
        self.lost += 1
        self._line(p, now, "trackerr", "lost track of some of its children (NOTE_TRACKERR)")

    def summary(self, now: float, root_status: int | None, tracking: bool) -> None:
        n = len(self.procs)
        depth = max((p.depth for p in self.procs.values()), default=0)
        if self.json:
            rec = {
                "event": "summary",
                "time": round(now - self.t0, 6),
                "processes": n,
                "max_depth": depth,
                "exit_statuses": self.statuses,
                "status": root_status,
                "tracking": tracking,
                "trackerr": self.lost,
                "unfinished": sorted(self.live),
            }
            self.out.write(json.dumps(rec) + "\n")
        else:
            st = ", ".join(f"{k} ({v})" for k, v in sorted(self.statuses.items(), key=lambda kv: kv[0]))
            parts = [
                f"{n} process{'es' if n != 1 else ''}",
                f"max depth {depth}",
                f"{_duration(now - self.t0)}",
                f"exit statuses: {st or 'none'}",
            ]
            if self.lost:
                parts.append(f"{self.lost} tracking error{'s' if self.lost != 1 else ''}: some processes were missed")
            if self.live:
                parts.append(f"still running: {' '.join(map(str, sorted(self.live)))}")
            if not tracking:
                parts.append("forks and execs not traced (no process connector)")
            self.out.write("summary: " + "; ".join(parts) + "\n")
        self.out.flush()


def _parse(argv: list[str]) -> tuple[bool, str | None, list[str]]:
    json_out, output = False, None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a == "--json":
            json_out = True
        elif a in ("-o", "--output"):
            if i + 1 >= len(argv):
                raise SystemExit(_usage_error(f"{a} needs a file name"))
            output = argv[i + 1]
            i += 1
        elif a.startswith("--output="):
            output = a.split("=", 1)[1]
        elif a in ("-h", "--help"):
            print(__doc__.split("\n\n", 1)[1].strip())
            raise SystemExit(0)
        elif a.startswith("-") and a != "-":
            raise SystemExit(_usage_error(f"unknown option {a}"))
        else:
            break
        i += 1
    cmd = argv[i:]
    if not cmd:
        raise SystemExit(_usage_error("no command given"))
    return json_out, output, cmd


def _usage_error(msg: str) -> int:
    print(f"{PROG}: {msg}\n{USAGE}", file=sys.stderr)
    return EX_USAGE


def main(argv: list[str]) -> int:
    try:
        json_out, output, cmd = _parse(argv)
    except SystemExit as e:
        return int(e.code or 0)
    out = open(output, "w") if output else sys.stderr
    try:
        return _trace(cmd, out, json_out)
    finally:
        if output:
            out.close()


def _spawn_waiting(cmd: list[str]) -> tuple[int, int, int]:
    """Fork a child that waits for a byte on a pipe, then execs cmd. Returns (pid, go fd, error fd)."""
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()  # close-on-exec: EOF on a successful exec, the errno otherwise
    pid = os.fork()
    if pid == 0:
        code = 127
        try:
            os.close(go_w)
            os.close(err_r)
            if os.read(go_r, 1) != b"x":
                os._exit(code)
            os.close(go_r)
            os.execvp(cmd[0], cmd)
        except OSError as e:
            code = 126 if e.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR) else 127
            try:
                os.write(err_w, str(e.errno or 0).encode())
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(err_w)
    return pid, go_w, err_r


def _trace(cmd: list[str], out: IO[str], json_out: bool) -> int:
    import kqrs
    from kqrs import kevent

    PROC = kqrs.KQ_FILTER_PROC
    EXIT, FORK, EXEC = kqrs.KQ_NOTE_EXIT, kqrs.KQ_NOTE_FORK, kqrs.KQ_NOTE_EXEC
    TRACK, TRACKERR, CHILD = kqrs.KQ_NOTE_TRACK, kqrs.KQ_NOTE_TRACKERR, kqrs.KQ_NOTE_CHILD

    kq = kqrs.kqueue()
    root, go, err = _spawn_waiting(cmd)
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the command; we report it
    tracking = True
    root_status: int | None = None
    try:
        try:
            kq.control([kevent(root, PROC, kqrs.KQ_EV_ADD, EXIT | FORK | EXEC | TRACK)], 0)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise
            print(f"{PROG}: forks and execs cannot be traced here ({e.strerror}); showing the exit only",
                  file=sys.stderr)
            tracking = False
            kq.control([kevent(root, PROC, kqrs.KQ_EV_ADD, EXIT)], 0)
        t0 = time.monotonic()
        tracer = Tracer(out, json_out, t0)
        tracer.procs[root] = Proc(root, os.getpid(), 0, t0)
        tracer.live.add(root)
        os.write(go, b"x")
        os.close(go)
        go = -1
        quiet_since: float | None = None
        while tracer.live:
            events = kq.control(None, 256, 1.0)
            now = time.monotonic()
            if not events:
                # Safety net: a tracked process that no longer exists and whose exit never came.
                if root_status is not None:
                    quiet_since = quiet_since or now
                    if now - quiet_since >= 2.0:
                        for pid in sorted(tracer.live):
                            if not os.path.exists(f"/proc/{pid}"):
                                tracer.exit(tracer.procs[pid], now, None)
                continue
            quiet_since = None
            for ev in events:
                if ev.filter != PROC:
                    continue
                pid, ff = ev.ident, ev.fflags
                p = tracer.procs.get(pid)
                if p is None or (ff & CHILD and pid not in tracer.live):  # a new process (or a reused pid)
                    ppid = ev.data if (ff & CHILD and not ff & EXIT) else _read_ppid(pid)
                    p = tracer.add(pid, ppid, now)
                if ff & TRACKERR:
                    tracer.trackerr(p, now)
                if ff & EXEC:
                    tracer.exec_(p, now)
                if ff & EXIT or ev.flags & kqrs.KQ_EV_EOF:
                    status = None if ev.flags & kqrs.KQ_EV_ERROR else ev.data
                    if pid == root:
                        _, waited = os.waitpid(root, 0)  # we are its parent: reap it
                        status = waited if status is None else status
                        root_status = status
                    if pid in tracer.live:
                        tracer.exit(p, now, status)
        reason = os.read(err, 64)
        if reason:
            code = int(reason)
            print(f"{PROG}: {cmd[0]}: {os.strerror(code)}", file=sys.stderr)
        tracer.summary(time.monotonic(), root_status, tracking)
    except KeyboardInterrupt:  # only if SIGINT came before it was ignored
        return 130
    finally:
        signal.signal(signal.SIGINT, old_int)
        if go >= 0:
            os.close(go)
        os.close(err)
        kq.close()
        try:
            if os.waitpid(root, os.WNOHANG)[0] == 0:
                os.kill(root, signal.SIGKILL)
                os.waitpid(root, 0)
        except ChildProcessError:
            pass
    if root_status is None:
        return 1
    if os.WIFEXITED(root_status):
        return os.WEXITSTATUS(root_status)
    if os.WIFSIGNALED(root_status):
        return 128 + os.WTERMSIG(root_status)
    return 1

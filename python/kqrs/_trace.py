"""``kqrs trace``: run a command and print its process tree as it lives.

    kqrs trace [--json] [-o FILE] [--] COMMAND [ARG...]

Prints every fork, exec (with the program and its arguments) and exit (with the status and the lifetime) of
COMMAND and of every process it starts, as they happen, then a summary: how many processes, the deepest
level of the tree, and the exit statuses seen. Lines go to standard error (or FILE), so the command's own
output stays apart.

  --json        one JSON object per line and event ("fork", "exec", "exit", "trackerr"), then a "summary"
  -o FILE       write the trace to FILE instead of standard error

kqrs trace exits with the command's own exit status (128 + N when a signal N killed it; 127 when it could
not be run). It follows the tree until every process in it has exited, like strace -f.

The trace is causally ordered: a process's fork line comes before anything the new process does, a
process's exec before the forks it makes after it, the exits of the processes a parent waited for before
the parent's own exit, and the command's exit after every line of the processes it waited for (a process
left running in the background, reparented away, is still followed: its lines come after).

An exec line names the program and its argv, read from /proc/PID/exe and cmdline the moment the exec is
reported. To be there in time beside CPU-bound processes the tracer runs at the lowest realtime priority
(SCHED_FIFO 1, where CAP_SYS_NICE allows; the command and all it starts keep their own priority). A process
that exits at once may still be gone by then: its program then comes from fanotify (FAN_OPEN_EXEC reports,
at exec time, the file each exec opened; it needs CAP_SYS_ADMIN), its command name from /proc/PID/stat,
which a zombie keeps until it is reaped, and what could not be read is said: "exec /usr/bin/ls [argv gone]",
"exec ls [path and argv gone]" (in JSON: "argv": null and "argv_gone": true; "program": null; "comm" and
"program_source" say what was found, and where). The summary says which of these means were missing.

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
import struct
import sys
import time
from typing import IO, Any, NamedTuple

from ._cli import EX_OK, EX_USAGE, Exit, fail

PROG = "kqrs trace"
USAGE = f"usage: {PROG} [--json] [-o FILE] [--] COMMAND [ARG...]"


class Snapshot(NamedTuple):
    """What /proc said about a process the moment its exec was reported."""

    argv: list[str] | None
    exe: str | None
    comm: str | None


class Proc:
    __slots__ = ("pid", "ppid", "depth", "start", "announced", "exited", "items")

    def __init__(self, pid: int, ppid: int | None, start: float):
        self.pid = pid
        self.ppid = ppid
        self.depth = 0
        self.start = start
        self.announced = False  # its fork line is printed
        self.exited = False  # its exit is known (printed, or waiting in items)
        self.items: list[tuple[str, float, Any]] = []  # events not printed yet: (kind, arrival time, detail)


def _read(path: str, size: int = 65536) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    chunks: list[bytes] = []
    try:
        while True:
            b = os.read(fd, size)
            if not b:
                break
            chunks.append(b)
    except OSError:
        pass  # e.g. the process exited between two reads: keep what came
    finally:
        os.close(fd)
    return b"".join(chunks) if chunks else None


def _snapshot(pid: int) -> Snapshot:
    """Everything /proc still has about a process that just exec'd, the most perishable first: argv and the
    executable go with its memory at exit, the command name only when it is reaped."""
    raw = _read(f"/proc/{pid}/cmdline")
    argv = None
    if raw:  # NUL-terminated arguments (the last one unterminated if the process rewrote them)
        argv = [a.decode(errors="replace") for a in (raw[:-1] if raw.endswith(b"\0") else raw).split(b"\0")]
    try:
        exe: str | None = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = None
    stat = _read(f"/proc/{pid}/stat", 4096)
    comm = None
    if stat:
        left, right = stat.find(b"("), stat.rfind(b")")
        if 0 <= left < right:
            comm = stat[left + 1 : right].decode(errors="replace") or None
    return Snapshot(argv, exe, comm)


def _read_ppid(pid: int) -> int | None:
    stat = _read(f"/proc/{pid}/stat", 4096)
    try:
        return int(stat.rsplit(b")", 1)[1].split()[1]) if stat else None
    except (ValueError, IndexError):
        return None


# --- fanotify: the file each exec opened, reported at exec time ----------------------------------------

FAN_CLOEXEC, FAN_NONBLOCK = 0x1, 0x2
FAN_OPEN_EXEC = 0x1000
FAN_MARK_ADD, FAN_MARK_MOUNT, FAN_MARK_FILESYSTEM = 0x1, 0x10, 0x100
AT_FDCWD = -100
_META = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata
_PT_INTERP = 3


def _elf_interpreter(fd: int) -> str | None:
    """PT_INTERP of the ELF file open at fd (the loader an exec of it opens next), or None."""
    try:
        hdr = os.pread(fd, 64, 0)
        if len(hdr) < 52 or hdr[:4] != b"\x7fELF" or hdr[5] not in (1, 2):
            return None
        e = "<" if hdr[5] == 1 else ">"
        if hdr[4] == 2:
            (phoff,) = struct.unpack_from(e + "Q", hdr, 32)
            phentsize, phnum = struct.unpack_from(e + "HH", hdr, 54)
            size, off_at, filesz_at, word = 56, 8, 32, "Q"
        elif hdr[4] == 1:
            (phoff,) = struct.unpack_from(e + "I", hdr, 28)
            phentsize, phnum = struct.unpack_from(e + "HH", hdr, 42)
            size, off_at, filesz_at, word = 32, 4, 16, "I"
        else:
            return None
        if not 0 < phnum <= 256 or phentsize < size:
            return None
        ph = os.pread(fd, phentsize * phnum, phoff)
        for i in range(len(ph) // phentsize):
            base = i * phentsize
            if struct.unpack_from(e + "I", ph, base)[0] == _PT_INTERP:
                (off,) = struct.unpack_from(e + word, ph, base + off_at)
                (filesz,) = struct.unpack_from(e + word, ph, base + filesz_at)
                if not 0 < filesz <= 4096:
                    return None
                return os.fsdecode(os.pread(fd, filesz, off).split(b"\0", 1)[0]) or None
    except (OSError, struct.error):
        pass
    return None


def _exec_mounts() -> list[str]:
    """A mount point of every filesystem mounted without noexec somewhere (one per device)."""
    out: dict[str, str] = {}
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 6 or b"noexec" in fields[5].split(b","):
                    continue
                path = fields[4]
                if b"\\" in path:  # octal escapes: \040 for a space etc.
                    path = path.decode("latin-1").encode("latin-1").decode("unicode_escape").encode("latin-1")
                out.setdefault(fields[2].decode(), os.fsdecode(path))
    except OSError:
        pass
    return list(out.values())


class ExecFiles:
    """fanotify FAN_OPEN_EXEC marks on every mounted filesystem: for each pid, the files its execs opened.

    An exec of a dynamically linked program opens the program, then its loader (PT_INTERP); an exec of a
    script opens the script, then its interpreter (and that one's loader). /proc/PID/exe names the last of
    these that is not a loader, and so does take(). The kernel merges an event with an identical one still
    queued (same pid, same file), which only ever drops a repeated open.
    """

    def __init__(self, fd: int):
        self.fd = fd
        self.by_pid: dict[int, list[tuple[float, str, bool]]] = {}  # pid -> [(time, path, is a loader)]
        self.loaders: set[tuple[int, int]] = set()  # (st_dev, st_ino) of every PT_INTERP seen
        self._interp_of: dict[tuple[int, int, int], tuple[int, int] | None] = {}
        self._pruned = 0.0

    @classmethod
    def open(cls) -> tuple[ExecFiles | None, str]:
        """The fanotify group, or None and why not."""
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            init, mark = libc.fanotify_init, libc.fanotify_mark
        except (OSError, AttributeError, ImportError):
            return None, "no fanotify in this C library"
        init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
        fd = init(FAN_CLOEXEC | FAN_NONBLOCK, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_LARGEFILE", 0))
        if fd < 0:
            return None, f"fanotify: {os.strerror(ctypes.get_errno())}"
        marked, why = 0, ""
        for path in _exec_mounts():
            for how in (FAN_MARK_FILESYSTEM, FAN_MARK_MOUNT):  # the whole filesystem, or this mount of it
                if mark(fd, FAN_MARK_ADD | how, FAN_OPEN_EXEC, AT_FDCWD, os.fsencode(path)) == 0:
                    marked += 1
                    break
                why = os.strerror(ctypes.get_errno())
        if not marked:
            os.close(fd)
            return None, f"fanotify FAN_OPEN_EXEC: {why or 'no filesystem to mark'}"
        return cls(fd), ""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _is_loader(self, fd: int) -> bool:
        """Whether the file open at fd is the loader of an ELF file seen before it (and if it is an ELF file
        with a loader, remember that one)."""
        try:
            st = os.fstat(fd)
        except OSError:
            return False
        me = (st.st_dev, st.st_ino)
        if me in self.loaders:
            return True
        key = (st.st_dev, st.st_ino, st.st_mtime_ns)
        if key not in self._interp_of:
            if len(self._interp_of) > 4096:
                self._interp_of.clear()
            interp = _elf_interpreter(fd)
            loader = None
            if interp is not None:
                try:
                    ist = os.stat(interp)
                    loader = (ist.st_dev, ist.st_ino)
                except OSError:
                    pass
            self._interp_of[key] = loader
        loader = self._interp_of[key]
        if loader is not None:
            self.loaders.add(loader)
        return False

    def drain(self, now: float, keep: dict[int, Any]) -> None:
        """Read every queued event; forget, after a while, those of processes that never joined the trace."""
        while self.fd >= 0:
            try:
                buf = os.read(self.fd, 4096)  # at most ~170 events: each one comes with an open fd
            except BlockingIOError:
                break
            except OSError:
                break
            off = 0
            while off + _META.size <= len(buf):
                length, _ver, _res, _mlen, mask, fd, pid = _META.unpack_from(buf, off)
                if length < _META.size:
                    break
                off += length
                if fd < 0:  # FAN_Q_OVERFLOW: events were lost; those programs come from /proc or not at all
                    continue
                try:
                    if mask & FAN_OPEN_EXEC and pid > 0:  # 0: a process outside our pid namespace
                        try:
                            path = os.readlink(f"/proc/self/fd/{fd}")
                        except OSError:
                            continue
                        self.by_pid.setdefault(pid, []).append((now, path, self._is_loader(fd)))
                finally:
                    os.close(fd)
        if now - self._pruned >= 1.0:
            self._pruned = now
            for pid in [p for p, recs in self.by_pid.items() if p not in keep and now - recs[-1][0] > 30.0]:
                del self.by_pid[pid]

    def take(self, pid: int) -> str | None:
        """The program of pid's latest exec (and forget its earlier ones)."""
        recs = self.by_pid.pop(pid, None)
        if not recs:
            return None
        for _, path, loader in reversed(recs):
            if not loader:
                return path
        return recs[-1][1]

    def forget(self, pid: int) -> None:
        self.by_pid.pop(pid, None)


# --- output -----------------------------------------------------------------------------------------------


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
    """Turns batches of kevents into lines, in causal order.

    Events of different knotes come back in one batch in any order, and an exit (from the process's pidfd)
    can overtake a fork (from the connector) that happened before it. So a batch is first taken whole (the
    caller collects until the kqueue has nothing more), each process's events are queued on it, and the
    lines are then printed walking the tree: a process's fork line, its execs, the lines of its descendants
    in the batch, and last its exit.
    """

    def __init__(self, out: IO[str], json_out: bool, t0: float, root: int, files: ExecFiles | None):
        self.out = out
        self.json = json_out
        self.t0 = t0
        self.root = root
        self.files = files
        self.procs: dict[int, Proc] = {}
        self.live: set[int] = set()
        self.statuses: dict[str, int] = {}
        self.lost = 0
        self.execs = 0
        self.argv_gone = 0
        self.last_time = 0.0
        self.priority: str | None = None
        self.touched: dict[int, Proc] = {}  # processes with events not printed yet, in arrival order
        p = Proc(root, os.getpid(), t0)
        p.announced = True
        self.procs[root] = p
        self.live.add(root)

    # -- taking events in ----------------------------------------------------------------------------------

    def event(self, pid: int, ff: int, data: int, flags: int, now: float, snap: Snapshot | None, k: Any) -> None:
        p = self.procs.get(pid)
        if p is None or (ff & k.KQ_NOTE_CHILD and pid not in self.live):  # a new process (or a reused pid)
            ppid = data if (ff & k.KQ_NOTE_CHILD and not ff & k.KQ_NOTE_EXIT) else _read_ppid(pid)
            p = Proc(pid, ppid, now)
            self.procs[pid] = p
            self.live.add(pid)
        if ff & k.KQ_NOTE_TRACKERR:
            p.items.append(("trackerr", now, None))
        if ff & k.KQ_NOTE_EXEC:
            p.items.append(("exec", now, snap))
        if (ff & k.KQ_NOTE_EXIT or flags & k.KQ_EV_EOF) and not p.exited:
            p.exited = True
            status = None if flags & k.KQ_EV_ERROR else data
            p.items.append(("exit", now, status))
        self.touched[pid] = p

    def root_status(self, status: int | None) -> None:
        """The root's status as waitpid() gave it, when the event had none."""
        for i, (kind, t, st) in enumerate(self.procs[self.root].items):
            if kind == "exit" and st is None:
                self.procs[self.root].items[i] = (kind, t, status)

    # -- printing -------------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Print every queued event, parents before children, a process's exit after its descendants'."""
        if not self.touched:
            return
        batch = self.touched
        self.touched = {}
        kids: dict[int, list[Proc]] = {}
        tops: list[Proc] = []
        for p in batch.values():
            up = self._touched_ancestor(p, batch)
            if up is None:
                tops.append(p)
            else:
                kids.setdefault(up.pid, []).append(p)
        # the command's own tree last: its exit, if it is in this batch, is the last line of it
        tops.sort(key=lambda p: p.pid == self.root)
        done_with: set[int] = set()
        self._walk(tops, kids, done_with)
        # a ppid chain that loops (pids reused within one trace) has no top: print it anyway, never lose it
        self._walk([p for p in batch.values() if p.pid not in done_with], kids, done_with)
        self.out.flush()

    def _walk(self, tops: list[Proc], kids: dict[int, list[Proc]], done_with: set[int]) -> None:
        stack: list[tuple[Proc, bool]] = [(p, False) for p in reversed(tops)]
        while stack:  # depth first, without recursion: a chain of processes can be deeper than Python's stack
            p, done = stack.pop()
            if done:
                if p.items:
                    _, t, status = p.items.pop()
                    self._exit(p, t, status)
                continue
            if p.pid in done_with:
                continue
            done_with.add(p.pid)
            self._open(p)
            stack.append((p, True))
            stack.extend((c, False) for c in reversed(kids.get(p.pid, ())))

    def _touched_ancestor(self, p: Proc, batch: dict[int, Proc]) -> Proc | None:
        if p.pid == self.root:  # its parent is kqrs trace itself
            return None
        seen = {p.pid}
        q = self.procs.get(p.ppid) if p.ppid is not None else None
        while q is not None and q.pid not in seen:
            if q.pid in batch:
                return q
            if q.pid == self.root:
                return None
            seen.add(q.pid)
            q = self.procs.get(q.ppid) if q.ppid is not None else None
        return None

    def _open(self, p: Proc) -> None:
        """A process's fork line (if not printed yet) and everything it did but its exit, which stays in
        p.items until the lines of its descendants in the batch are printed."""
        items = p.items
        p.items = [item for item in items if item[0] == "exit"]
        if not p.announced:
            self._announce(p, p.start)
        for kind, t, detail in items:
            if kind == "exec":
                self._exec(p, t, detail)
            elif kind == "trackerr":
                self.lost += 1
                self._line(p, t, "trackerr", "lost track of some of its children (NOTE_TRACKERR)")

    def _line(
        self, proc: Proc, now: float, event: str, text: str, *, about: Proc | None = None, **fields: object
    ) -> None:
        """One line: the text indented at `proc`'s depth, or a JSON record about `about` (default proc)."""
        t = max(now - self.t0, self.last_time)  # a line held back for its parent's never goes back in time
        self.last_time = t
        if self.json:
            a = about or proc
            rec = {"time": round(t, 6), "event": event, "pid": a.pid, "ppid": a.ppid, "depth": a.depth}
            rec.update(fields)
            self.out.write(json.dumps(rec) + "\n")
        else:
            self.out.write(f"{t:9.3f} {'  ' * proc.depth}{proc.pid} {text}\n")

    def _announce(self, p: Proc, now: float) -> None:
        p.announced = True
        parent = self.procs.get(p.ppid) if p.ppid is not None else None
        if parent is not None and parent is not p and parent.announced:
            p.depth = parent.depth + 1
            self._line(parent, now, "fork", f"fork {p.pid}", about=p)
        else:
            p.depth = 1
            self._line(p, now, "fork", "forked (parent unknown)")

    def _exec(self, p: Proc, now: float, snap: Snapshot | None) -> None:
        snap = snap or Snapshot(None, None, None)
        from_files = self.files.take(p.pid) if self.files is not None else None
        program, source = (snap.exe, "proc") if snap.exe else (from_files, "fanotify") if from_files else (None, None)
        argv = snap.argv
        self.execs += 1
        gone = [w for w, have in (("path", program), ("argv", argv)) if not have]
        if not argv:
            self.argv_gone += 1
        text = f"exec {program or snap.comm or '?'}"
        if argv:
            text += f"  [{shlex.join(argv)}]"
        if gone:
            text += f" [{' and '.join(gone)} gone]"
        self._line(
            p, now, "exec", text, program=program, argv=argv, comm=snap.comm, argv_gone=not argv, program_source=source
        )

    def _exit(self, p: Proc, now: float, status: int | None) -> None:
        self.live.discard(p.pid)
        if self.files is not None:
            self.files.forget(p.pid)
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

    def lost_exit(self, pid: int, now: float) -> None:
        """A process that no longer exists and whose exit never came."""
        p = self.procs[pid]
        p.exited = True
        p.items.append(("exit", now, None))
        self.touched[pid] = p

    def summary(self, now: float, root_status: int | None, tracking: bool, files_why: str) -> None:
        n = len(self.procs)
        depth = max((p.depth for p in self.procs.values()), default=0)
        if self.json:
            rec = {
                "event": "summary",
                "time": round(max(now - self.t0, self.last_time), 6),
                "processes": n,
                "max_depth": depth,
                "exit_statuses": self.statuses,
                "status": root_status,
                "tracking": tracking,
                "trackerr": self.lost,
                "unfinished": sorted(self.live),
                "execs": self.execs,
                "argv_gone": self.argv_gone,
                "exec_files": "fanotify" if self.files is not None else None,
                "priority": self.priority,
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
            else:
                if files_why:
                    parts.append(f"programs of short-lived processes may be missed ({files_why})")
                if self.priority is None:
                    parts.append("argv of short-lived processes may be missed (no realtime priority)")
            self.out.write("summary: " + "; ".join(parts) + "\n")
        self.out.flush()


# --- command line -----------------------------------------------------------------------------------------


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
                raise _usage_error(f"{a} needs a file name")
            output = argv[i + 1]
            i += 1
        elif a.startswith("--output="):
            output = a.split("=", 1)[1]
        elif a in ("-h", "--help"):
            print(__doc__.split("\n\n", 1)[1].strip())
            raise Exit(EX_OK)
        elif a.startswith("-") and a != "-":
            raise _usage_error(f"unknown option {a}")
        else:
            break
        i += 1
    cmd = argv[i:]
    if not cmd:
        raise _usage_error("no command given")
    return json_out, output, cmd


def _usage_error(msg: str) -> Exit:
    return fail(PROG, EX_USAGE, f"{msg}\n{USAGE}")


def main(argv: list[str]) -> int:
    try:
        json_out, output, cmd = _parse(argv)
    except Exit as e:
        return e.code
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


def _prefer_wakeups() -> str | None:
    """Have the tracer run the moment an event arrives, even beside CPU-bound processes: a process that
    execs and exits within a millisecond keeps its argv only that long. The lowest realtime priority
    (SCHED_FIFO 1, with SCHED_RESET_ON_FORK so that nothing started from here inherits it), or else the
    highest nice; the command was forked before this and runs at its normal priority. Returns which one."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0), os.sched_param(1))
        return "SCHED_FIFO 1"
    except (OSError, AttributeError):
        pass
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) > -20:
            os.setpriority(os.PRIO_PROCESS, 0, -20)
            return "nice -20"
    except OSError:
        pass
    return None


def _collect(kq: Any, timeout: float | None, k: Any) -> list[tuple[Any, float, Snapshot | None]]:
    """Wait for events, then take every event the kqueue has (an exit can overtake the fork before it, and
    a child already gone brings its exit in the call after its NOTE_CHILD). Each exec's /proc details are
    read as soon as the call that reported it returns, before anything else is done."""
    out: list[tuple[Any, float, Snapshot | None]] = []
    evs = kq.control(None, 256, timeout)
    while evs:
        snaps = [
            _snapshot(ev.ident) if ev.filter == k.KQ_FILTER_PROC and ev.fflags & k.KQ_NOTE_EXEC else None for ev in evs
        ]
        now = time.monotonic()
        out.extend(zip(evs, [now] * len(evs), snaps))
        if len(out) >= 16384:  # a flood: print what we have, come back for the rest
            break
        evs = kq.control(None, 256, 0)
    return out


def _trace(cmd: list[str], out: IO[str], json_out: bool) -> int:
    import kqrs
    from kqrs import kevent

    PROC = kqrs.KQ_FILTER_PROC
    EXIT, FORK, EXEC, TRACK = kqrs.KQ_NOTE_EXIT, kqrs.KQ_NOTE_FORK, kqrs.KQ_NOTE_EXEC, kqrs.KQ_NOTE_TRACK

    kq = kqrs.kqueue()
    root, go, err = _spawn_waiting(cmd)
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the command; we report it
    tracking = True
    root_status: int | None = None
    files: ExecFiles | None = None
    files_why = ""
    try:
        try:
            kq.control([kevent(root, PROC, kqrs.KQ_EV_ADD, EXIT | FORK | EXEC | TRACK)], 0)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise
            print(
                f"{PROG}: forks and execs cannot be traced here ({e.strerror}); showing the exit only", file=sys.stderr
            )
            tracking = False
            kq.control([kevent(root, PROC, kqrs.KQ_EV_ADD, EXIT)], 0)
        if tracking:
            files, files_why = ExecFiles.open()
        priority = _prefer_wakeups() if tracking else None
        t0 = time.monotonic()
        tracer = Tracer(out, json_out, t0, root, files)
        tracer.priority = priority
        os.write(go, b"x")
        os.close(go)
        go = -1
        quiet_since: float | None = None
        while tracer.live:
            batch = _collect(kq, 1.0, kqrs)
            now = time.monotonic()
            if files is not None:
                files.drain(now, tracer.procs)
            if not batch:
                # Safety net: a tracked process that no longer exists and whose exit never came.
                if root_status is not None:
                    quiet_since = quiet_since or now
                    if now - quiet_since >= 2.0:
                        for pid in sorted(tracer.live):
                            if not os.path.exists(f"/proc/{pid}"):
                                tracer.lost_exit(pid, now)
                        tracer.flush()
                continue
            quiet_since = None
            for ev, t, snap in batch:
                if ev.filter != PROC:
                    continue
                tracer.event(ev.ident, ev.fflags, ev.data, ev.flags, t, snap, kqrs)
                if ev.ident == root and root_status is None and tracer.procs[root].exited:
                    _, waited = os.waitpid(root, 0)  # we are its parent: reap it
                    st = None if ev.flags & kqrs.KQ_EV_ERROR else ev.data
                    root_status = waited if st is None else st
                    tracer.root_status(root_status)
            tracer.flush()
        reason = os.read(err, 64)
        if reason:
            code = int(reason)
            print(f"{PROG}: {cmd[0]}: {os.strerror(code)}", file=sys.stderr)
        tracer.summary(time.monotonic(), root_status, tracking, files_why)
    except KeyboardInterrupt:  # only if SIGINT came before it was ignored
        return 130
    finally:
        signal.signal(signal.SIGINT, old_int)
        if go >= 0:
            os.close(go)
        os.close(err)
        kq.close()
        if files is not None:
            files.close()
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

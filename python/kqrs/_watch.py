"""``kqrs watch``: print each change to files and directories as it happens, on kqrs's EVFILT_VNODE.

    kqrs watch [--json] [-c N] [-t SECONDS] [--] PATH ...

Opens every PATH read-only (directories too) and watches it until Ctrl-C. Each change is one line, printed
(and flushed) as soon as it is seen: the time, the path as given, and the notes by name, e.g.

    2026-11-26T16:33:34.123456 data/log NOTE_WRITE|NOTE_EXTEND

  --json            one JSON object per line instead: {"time": ISO 8601 local time, "timestamp": seconds
                    since the epoch, "path": ..., "notes": ["NOTE_WRITE", ...], "fflags": int, "eof": bool}
  -c, --count N     exit after N changes have been printed
  -t, --timeout S   exit after S seconds (a decimal number)

A directory reports NOTE_WRITE when entries are added, removed or renamed in it (and NOTE_LINK for a
subdirectory). The watch follows the open file, not its name: a renamed file is still watched (under the
name given), and a new file created at the old name is not. Notes that arrive together are one line.
Someone opening, reading or closing a watched file is no change. "Watching N path(s)." goes to standard
error once every watch is in place.

Exit status: 0 after --count changes or at --timeout, 130 on Ctrl-C, 64 on a usage error, 66 when a PATH
cannot be opened or watched (nothing is watched then), 71 when the kqueue itself fails.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time

from ._cli import EX_NOINPUT, EX_OK, EX_OSERR, EX_USAGE, Exit, fail, run_main

PROG = "kqrs watch"
USAGE = f"usage: {PROG} [--json] [-c N] [-t SECONDS] [--] PATH ..."

# In the order a reader expects them: what happened to the data, then to the file.
NOTE_NAMES = ("DELETE", "WRITE", "EXTEND", "TRUNCATE", "ATTRIB", "LINK", "RENAME", "REVOKE")


def _fail(code: int, msg: str) -> Exit:
    return fail(PROG, code, msg)


def note_bits() -> list[tuple[str, int]]:
    import kqrs

    return [(f"NOTE_{n}", getattr(kqrs, f"KQ_NOTE_{n}")) for n in NOTE_NAMES]


def decode(fflags: int) -> list[str]:
    """The NOTE_* names set in `fflags` (unknown bits as a hex number)."""
    names = []
    rest = fflags
    for name, bit in note_bits():
        if fflags & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return names


def _value(opt: str, val: str) -> tuple[str, int | float]:
    if opt == "count":
        if not (val.isascii() and val.isdigit()) or int(val) < 1:
            raise _fail(EX_USAGE, f"bad count: {val!r}\n{USAGE}")
        return opt, int(val)
    try:
        seconds = float(val)
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds < float("inf"):
        raise _fail(EX_USAGE, f"bad timeout: {val!r}\n{USAGE}")
    return opt, seconds


_LONG = {"--count": "count", "--timeout": "timeout"}
_SHORT = {"-c": "count", "-t": "timeout"}


def _parse(argv: list[str]) -> tuple[bool, int | None, float | None, list[str]]:
    """Options first (--json, -c/--count N, -t/--timeout S, -h/--help), then the paths; "--" ends the
    options, so that a path may start with "-"."""
    json_out = False
    opts: dict[str, int | float] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            break
        if arg in ("-h", "--help"):
            print(__doc__.split("\n\n", 1)[1].rstrip())
            raise Exit(EX_OK)
        if arg == "--json":
            json_out = True
            continue
        name, eq, val = arg.partition("=")
        opt = _LONG.get(name) if eq else _LONG.get(arg) or _SHORT.get(arg)
        if opt is None and arg[:2] in _SHORT and len(arg) > 2:  # -c5, -t0.5
            opt, val, eq = _SHORT[arg[:2]], arg[2:], "="
        if opt is not None:
            if not eq:
                if i >= len(argv):
                    raise _fail(EX_USAGE, f"{arg} needs a value\n{USAGE}")
                val = argv[i]
                i += 1
            key, v = _value(opt, val)
            opts[key] = v
            continue
        if arg.startswith("-") and arg != "-":
            raise _fail(EX_USAGE, f"unknown option {arg}\n{USAGE}")
        i -= 1
        break
    paths = argv[i:]
    if not paths:
        raise _fail(EX_USAGE, USAGE)
    count = opts.get("count")
    timeout = opts.get("timeout")
    return json_out, None if count is None else int(count), None if timeout is None else float(timeout), paths


def main(argv: list[str]) -> int:
    try:
        return run_main(_run, argv)
    except BrokenPipeError:
        # The reader went away (| head): not an error of ours. Keep Python from complaining at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EX_OK


def _line(json_out: bool, path: str, fflags: int, eof: bool, now: float) -> str:
    stamp = datetime.datetime.fromtimestamp(now).isoformat(timespec="microseconds")
    names = decode(fflags)
    if json_out:
        return json.dumps({"time": stamp, "timestamp": now, "path": path, "notes": names, "fflags": fflags, "eof": eof})
    return f"{stamp} {path} {'|'.join(names)}{' (EOF)' if eof else ''}"


def _run(argv: list[str]) -> int:
    json_out, count, timeout, paths = _parse(argv)

    import kqrs
    from kqrs import kevent

    all_notes = 0
    for _, bit in note_bits():
        all_notes |= bit
    deadline = None if timeout is None else time.monotonic() + timeout
    opened: list[int] = []
    try:
        try:
            kq = kqrs.kqueue()
        except OSError as e:
            raise _fail(EX_OSERR, f"kqueue: {e.strerror}") from None
        with kq:
            by_fd: dict[int, str] = {}
            for p in paths:
                try:
                    fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
                except OSError as e:
                    raise _fail(EX_NOINPUT, f"{p}: {e.strerror}") from None
                opened.append(fd)
                try:
                    kq.control(
                        [kevent(fd, kqrs.KQ_FILTER_VNODE, kqrs.KQ_EV_ADD | kqrs.KQ_EV_CLEAR, all_notes, 0, fd)], 0
                    )
                except OSError as e:
                    raise _fail(EX_NOINPUT, f"{p}: cannot watch: {e.strerror}") from None
                by_fd[fd] = p
            print(f"Watching {len(paths)} path{'s' if len(paths) != 1 else ''}.", file=sys.stderr, flush=True)
            printed = 0
            while count is None or printed < count:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    events = kq.control(None, 64, left)
                except OSError as e:
                    raise _fail(EX_OSERR, f"kevent: {e.strerror}") from None
                now = time.time()
                for ev in events:
                    if ev.filter != kqrs.KQ_FILTER_VNODE or ev.ident not in by_fd:
                        continue
                    line = _line(json_out, by_fd[ev.ident], ev.fflags, bool(ev.flags & kqrs.KQ_EV_EOF), now)
                    print(line, flush=True)
                    printed += 1
                    if count is not None and printed >= count:
                        break
                if deadline is not None and time.monotonic() >= deadline:
                    break
    finally:
        for fd in opened:
            os.close(fd)
    return EX_OK

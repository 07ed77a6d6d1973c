"""``kqrs pwait``: wait for processes to terminate, as FreeBSD's pwait(1), on kqrs's EVFILT_PROC.

    kqrs pwait [-t duration] [-opv] pid ...

Waits until every given process has terminated. The processes need not be children of pwait (they never
are): EVFILT_PROC watches any process this user can see, and reports its wait(2) status. Nothing is
reaped: pwait is no substitute for the shell's ``wait``.

-o            exit as soon as any of the given processes has terminated
-p            on exit, print the pids of the processes that have not terminated, one per line
-t duration   give up after ``duration`` (seconds; or with a unit: 1.5s, 2m, 1h) and exit with status 124
-v            print each process's exit status as it terminates ("PID: exited with status N." or
              "PID: killed by signal N."), and "timeout" if the time runs out first

Exit status: 0 when the processes terminated, 124 on timeout, 64 on a usage error, 65 on a bad duration,
71 when the kqueue itself fails. Pids that are not numbers, this process's own pid and pids of processes
that do not exist elicit a warning and are otherwise ignored (with -o, a process that does not exist
counts as one that terminated, as on FreeBSD).
"""

from __future__ import annotations

import getopt
import os
import re
import sys

from ._cli import EX_DATAERR, EX_OK, EX_OSERR, EX_USAGE, EXIT_TIMEOUT, Exit, fail, run_main, warn

PROG = "kqrs pwait"
USAGE = f"usage: {PROG} [-t duration] [-opv] pid ..."
MAX_TIMEOUT = 100_000_000  # seconds, FreeBSD's limit

_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+\.)(.*)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def _warn(msg: str) -> None:
    warn(PROG, msg)


def _fail(code: int, msg: str) -> Exit:
    return fail(PROG, code, msg)


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a decimal number, optionally followed by s, m or h."""
    m = _DURATION.fullmatch(text)
    if m is None:
        raise _fail(EX_DATAERR, "timeout value")
    unit = m.group(2)
    if unit not in _UNITS:
        raise _fail(EX_DATAERR, "timeout unit")
    seconds = float(m.group(1)) * _UNITS[unit]
    if seconds > MAX_TIMEOUT:
        raise _fail(EX_DATAERR, "timeout value")
    return seconds


def describe(pid: int, status: int) -> str:
    """pwait -v's line for a wait(2) status."""
    if os.WIFEXITED(status):
        return f"{pid}: exited with status {os.WEXITSTATUS(status)}."
    if os.WIFSIGNALED(status):
        return f"{pid}: killed by signal {os.WTERMSIG(status)}."
    return f"{pid}: terminated."


def main(argv: list[str]) -> int:
    return run_main(_run, argv)


def _run(argv: list[str]) -> int:
    try:
        opts, args = getopt.getopt(argv, "ot:pvh")
    except getopt.GetoptError as e:
        _warn(e.msg)
        raise _fail(EX_USAGE, USAGE) from None
    oflag = pflag = verbose = False
    timeout: float | None = None
    for opt, val in opts:
        if opt == "-o":
            oflag = True
        elif opt == "-p":
            pflag = True
        elif opt == "-v":
            verbose = True
        elif opt == "-t":
            timeout = parse_duration(val)
        else:  # -h
            print(__doc__.split("\n\n", 1)[1].strip())
            return EX_OK
    if not args:
        raise _fail(EX_USAGE, USAGE)

    import kqrs
    from kqrs import kevent

    try:
        kq = kqrs.kqueue()
    except OSError as e:
        raise _fail(EX_OSERR, f"kqueue: {e.strerror}") from None
    me = os.getpid()
    left: dict[int, None] = {}  # insertion-ordered set of the pids still running

    def finish(code: int) -> int:
        if pflag:
            for pid in left:
                print(pid)
        sys.stdout.flush()
        return code

    with kq:
        for arg in args:
            s = arg[len("/proc/") :] if arg.startswith("/proc/") else arg  # Solaris compatibility
            if not s.isascii() or not s.isdigit() or int(s) > 0x7FFFFFFF:
                _warn(f"{s}: bad process id")
                continue
            pid = int(s)
            if pid == me:
                _warn(f"{s}: skipping my own pid")
                continue
            if pid in left:
                continue
            try:
                kq.control([kevent(pid, kqrs.KQ_FILTER_PROC, kqrs.KQ_EV_ADD, kqrs.KQ_NOTE_EXIT)], 0)
            except OSError as e:
                _warn(f"{pid}: {e.strerror}")
                if oflag:
                    return finish(EX_OK)
                continue
            left[pid] = None
        if left and timeout is not None:
            # A one-shot timer in the same queue: the first of "all exited" and "time is up" wins.
            usec = int(timeout * 1_000_000)
            timer = kevent(0, kqrs.KQ_FILTER_TIMER, kqrs.KQ_EV_ADD | kqrs.KQ_EV_ONESHOT, kqrs.KQ_NOTE_USECONDS, usec)
            kq.control([timer], 0)
        while left:
            try:
                events = kq.control(None, len(left) + 1)
            except OSError as e:
                raise _fail(EX_OSERR, f"kevent: {e.strerror}") from None
            timed_out = False
            for ev in events:
                if ev.filter == kqrs.KQ_FILTER_TIMER:
                    timed_out = True
                    continue
                if ev.filter != kqrs.KQ_FILTER_PROC or ev.ident not in left:
                    continue
                del left[ev.ident]
                if verbose:
                    if ev.flags & kqrs.KQ_EV_ERROR:
                        print(f"{ev.ident}: terminated.")
                    else:
                        print(describe(ev.ident, ev.data))
                if oflag:
                    return finish(EX_OK)
            if timed_out and left:
                if verbose:
                    print("timeout")
                return finish(EXIT_TIMEOUT)
    return finish(EX_OK)

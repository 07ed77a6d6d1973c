"""What kqrs's command-line tools (pwait, trace, watch) share: exit statuses and the exception that ends a
tool with one. Imported only by those tools, never by ``import kqrs``."""

from __future__ import annotations

import sys
from collections.abc import Callable

# sysexits(3), and the shells' conventions for a timeout and Ctrl-C
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_OSERR = 71
EXIT_TIMEOUT = 124
EX_INTERRUPTED = 130


class Exit(Exception):
    """Ends a tool's run with exit status ``code`` (caught by :func:`run_main`)."""

    def __init__(self, code: int):
        self.code = code


def warn(prog: str, msg: str) -> None:
    """``prog: msg`` on standard error."""
    print(f"{prog}: {msg}", file=sys.stderr)


def fail(prog: str, code: int, msg: str) -> Exit:
    """Says ``prog: msg`` on standard error and returns the :class:`Exit` to raise."""
    warn(prog, msg)
    return Exit(code)


def run_main(run: Callable[[list[str]], int], argv: list[str]) -> int:
    """``run(argv)``'s exit status, an :class:`Exit`'s code, or 130 on Ctrl-C."""
    try:
        return run(argv)
    except Exit as e:
        return e.code
    except KeyboardInterrupt:
        return EX_INTERRUPTED

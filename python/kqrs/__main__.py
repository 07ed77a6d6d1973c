"""``python -m kqrs`` / ``kqrs``: command-line tools."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # pwait and trace parse their own arguments (getopt-style, and a command line after "--")
    if argv and argv[0] == "pwait":
        from ._pwait import main as pwait

        return pwait(argv[1:])
    if argv and argv[0] == "trace":
        from ._trace import main as trace

        return trace(argv[1:])
    if argv and argv[0] == "watch":
        from ._watch import main as watch

        return watch(argv[1:])
    parser = argparse.ArgumentParser(prog="kqrs", description="BSD kqueue for Linux")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("doctor", help="probe this machine and print what works, filter by filter")
    d.add_argument("--json", action="store_true", help="print the matrix as JSON")
    pwait_help = "wait for processes to terminate, as FreeBSD's pwait: pwait [-t duration] [-opv] pid ..."
    sub.add_parser("pwait", add_help=False, help=pwait_help)
    trace_help = "run a command and print its process tree as it lives: trace [--json] [-o FILE] -- CMD ..."
    sub.add_parser("trace", add_help=False, help=trace_help)
    watch_help = "print each change to files and directories as it happens: watch [--json] [-c N] [-t S] PATH ..."
    sub.add_parser("watch", add_help=False, help=watch_help)
    args = parser.parse_args(argv)
    if args.cmd == "doctor":
        from ._doctor import run

        return run(json_output=args.json)
    return 2


if __name__ == "__main__":
    sys.exit(main())

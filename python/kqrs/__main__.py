"""``python -m kqrs`` / ``kqrs``: command-line tools."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kqrs", description="BSD kqueue for Linux")
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("doctor", help="probe this machine and print what works, filter by filter")
    d.add_argument("--json", action="store_true", help="print the matrix as JSON")
    args = parser.parse_args(argv)
    if args.cmd == "doctor":
        from ._doctor import run

        return run(json_output=args.json)
    return 2


if __name__ == "__main__":
    sys.exit(main())

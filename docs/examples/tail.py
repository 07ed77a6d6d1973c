#!/usr/bin/env python3
"""``tail -F`` on kqrs: print the last lines of a file, then follow it, also across log rotation.

    python docs/examples/tail.py [-n LINES] [--idle-exit SECONDS] FILE

Two knotes per file. EVFILT_READ on the open regular file reports the bytes between the read offset and
the end of the file (``ev.value``), and fires again whenever the file grows: no polling, no sleep loop.
EVFILT_VNODE on the same file reports it being renamed or deleted (logrotate); tail then drains what is
left, reopens the path once it exists again, and goes on with the new file. A one-shot timer, re-armed on
every line, implements ``--idle-exit`` (stop after that long without output; for scripts and tests).
Without EVFILT_VNODE (an older kqrs), rotation is not followed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque

import kqrs
from kqrs import Filter, VnodeNote

ROTATED = VnodeNote.DELETE | VnodeNote.RENAME


class Tail:
    def __init__(self, path: str, idle_exit: float | None) -> None:
        self.path = path
        self.kq = kqrs.KQueue()
        self.idle_exit = idle_exit
        self.idle: kqrs.TimerHandle | None = None
        self.fd = -1
        self.partial = b""
        self.follow_name = Filter.VNODE.supported
        self.waiting_for_path: kqrs.FileHandle | None = None  # the directory, while the path is missing

    def open(self, from_end_lines: int | None) -> None:
        self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        # watch first, print second: whatever happens to the file after our first line is seen
        self.kq.readable(self.fd, data="data")
        if self.follow_name:
            self.kq.file(self.fd, ROTATED, data="rotated")
        if from_end_lines is not None:
            self.print_last(from_end_lines)

    def print_last(self, n: int) -> None:
        lines: deque[bytes] = deque(maxlen=n)
        data = b""
        while chunk := os.read(self.fd, 65536):
            data += chunk
            *complete, data = data.split(b"\n")
            lines.extend(complete)
        self.partial = data
        for line in lines:
            self.emit(line)

    def emit(self, line: bytes) -> None:
        sys.stdout.buffer.write(line + b"\n")
        sys.stdout.buffer.flush()

    def drain(self, nbytes: int) -> None:
        while nbytes > 0:
            chunk = os.read(self.fd, min(nbytes, 65536))
            if not chunk:
                break
            nbytes -= len(chunk)
            *complete, self.partial = (self.partial + chunk).split(b"\n")
            for line in complete:
                self.emit(line)
        self.arm_idle()

    def arm_idle(self) -> None:
        if self.idle_exit is None:
            return
        if self.idle is not None:
            self.idle.remove()
        self.idle = self.kq.timer(self.idle_exit, repeat=False, data="idle")

    def rotated(self) -> None:
        # read what the old file still holds, then drop it and wait for the path to come back
        self.drain(os.fstat(self.fd).st_size - os.lseek(self.fd, 0, os.SEEK_CUR))
        for h in self.kq.handles:
            if h.data in ("data", "rotated"):
                h.remove()
        os.close(self.fd)
        self.fd = -1
        if self.partial:
            self.emit(self.partial)
            self.partial = b""
        self.reopen_or_wait()

    def reopen_or_wait(self) -> None:
        # Watch the directory first, then look for the path: a file created between a failed open and
        # the watch would otherwise go unnoticed (its creation was the directory's last change).
        if self.waiting_for_path is None:
            parent = os.path.dirname(os.path.abspath(self.path))
            self.waiting_for_path = self.kq.file(parent, VnodeNote.WRITE, data="dir")
        try:
            self.open(None)
        except FileNotFoundError:
            return  # the directory's next change brings us back here
        self.waiting_for_path.remove()
        self.waiting_for_path = None
        self.drain(os.fstat(self.fd).st_size)

    def run(self, lines: int) -> int:
        self.open(lines)
        self.arm_idle()
        while True:
            for ev in self.kq.wait():
                if ev.data == "data":
                    self.drain(ev.value)
                elif ev.data == "rotated":
                    self.rotated()
                    break  # the other events of this batch were about the old file
                elif ev.data == "dir":
                    self.reopen_or_wait()
                elif ev.data == "idle":
                    self.kq.close()
                    if self.fd >= 0:
                        os.close(self.fd)
                    if self.partial:
                        self.emit(self.partial)
                    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="tail -F on kqrs")
    ap.add_argument("-n", "--lines", type=int, default=10)
    ap.add_argument("--idle-exit", type=float, default=None)
    ap.add_argument("file")
    args = ap.parse_args(argv)
    try:
        return Tail(args.file, args.idle_exit).run(args.lines)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

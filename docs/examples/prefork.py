#!/usr/bin/env python3
"""A prefork TCP server: the parent creates its kqueue, then forks workers; each worker makes its own.

    python docs/examples/prefork.py [--workers N] [--port PORT]

Each connection gets one line, ``pid <worker pid>``, and is closed. The parent prints
``listening <host> <port>``, then ``worker <pid> started`` for each worker, restarts a worker that dies
(``worker <pid> exited <how>``), and on SIGTERM or SIGINT stops the workers and exits 0.

What it shows about kqueues and fork(): a kqueue is not inherited. The parent's KQueue (made *before* the
workers are forked) reads as closed in every worker (``kq.closed``), exactly as on BSD, and nothing a
worker does touches the parent's registrations; each worker creates its own KQueue, in which it watches
the shared listening socket (``ev.value`` = connections waiting) and its parent's exit (EVFILT_PROC works
for a process that is not our child), so an orphaned worker goes away by itself, and SIGTERM (it keeps
the parent's no-op Python handler, so the signal only shows up as an event) to leave cleanly.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys

import kqrs

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def say(*words: object) -> None:
    print(*words, flush=True)


def worker(listener: socket.socket, inherited: kqrs.KQueue, parent: int) -> int:
    if not inherited.closed:
        say("BUG: kqueue inherited across fork")
        return 1
    with kqrs.KQueue() as kq:
        kq.readable(listener, data="accept")
        try:
            kq.process(parent, data="parent")
        except ProcessLookupError:
            return 0  # the parent is gone already
        for sig in STOP_SIGNALS:
            kq.signal(sig, data="stop")  # the no-op handler inherited from the parent keeps us alive
        # the parent forked us with these blocked: one sent before we were watching is delivered now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        while True:
            for ev in kq.wait():
                if ev.data in ("parent", "stop"):
                    return 0
                for _ in range(ev.value):  # connections waiting
                    try:
                        conn, _addr = listener.accept()
                    except OSError as e:  # another worker took it
                        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                            break
                        raise
                    with conn:
                        conn.sendall(f"pid {os.getpid()}\n".encode())


class Parent:
    def __init__(self, nworkers: int, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", port), backlog=64)
        self.listener.setblocking(False)
        self.kq = kqrs.KQueue()  # created before any fork
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda signum, frame: None)  # handled through the kqueue
            self.kq.signal(sig, data="stop")
        self.nworkers = nworkers
        self.workers: dict[int, kqrs.ProcessHandle] = {}
        self.stopping = False

    def spawn(self) -> None:
        me = os.getpid()
        # a stop signal sent to the worker before its kqueue watches it would be lost: block them across
        # fork(); the worker unblocks them once it watches them
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = worker(self.listener, self.kq, me)
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.workers[pid] = self.kq.process(pid, data="worker")
        say("worker", pid, "started")

    def run(self) -> int:
        host, port = self.listener.getsockname()[:2]
        say("listening", host, port)
        for _ in range(self.nworkers):
            self.spawn()
        while self.workers:
            for ev in self.kq.wait():
                if ev.data == "stop" and not self.stopping:
                    self.stopping = True
                    say("stopping", len(self.workers), "workers")
                    for pid in self.workers:
                        os.kill(pid, signal.SIGTERM)
                elif ev.data == "worker":
                    os.waitpid(ev.ident, 0)  # reap: kqrs reported the status without reaping
                    del self.workers[ev.ident]
                    how = (
                        f"code={ev.exit_code}"
                        if ev.signal is None
                        else f"signal={getattr(ev.signal, 'name', ev.signal)}"
                    )
                    say("worker", ev.ident, "exited", how)
                    if not self.stopping:
                        self.spawn()
        self.kq.close()
        self.listener.close()
        say("stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="a prefork TCP server on kqrs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    return Parent(args.workers, args.port).run()


if __name__ == "__main__":
    sys.exit(main())

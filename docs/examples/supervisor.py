#!/usr/bin/env python3
"""A process supervisor on one kqrs.KQueue: start commands, restart them when they exit, stop on SIGTERM.

    python docs/examples/supervisor.py [--restarts N] [--backoff SECONDS] [--duration SECONDS] CMD...

Each CMD is a shell command line. When one exits it is restarted after ``--backoff`` seconds, at most
``--restarts`` times; ``--duration`` stops everything after that long. SIGTERM or SIGINT stops every
service (SIGTERM to each, then waits for the exits) and exits. Exit status: 0, or 1 if a service was given
up on.

One thread, one kqueue, three kinds of events: process exits (``kq.process(popen)``: the decoded exit
status, no SIGCHLD handler, nothing reaped behind subprocess's back), one-shot timers (the restart
back-off and the duration), and signals (``kq.signal``). Each service runs in its own process group, so
stopping it stops whatever it started too. Every line printed is ``verb name key=value...``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

import kqrs


@dataclass
class Service:
    name: str
    command: str
    restarts_left: int
    popen: subprocess.Popen[bytes] | None = None
    history: list[int] = field(default_factory=list)  # returncodes


def say(*words: object) -> None:
    print(*words, flush=True)


def signame(n: int) -> str:
    return n.name if isinstance(n, signal.Signals) else f"SIG{n}"


class Supervisor:
    def __init__(self, commands: list[str], restarts: int, backoff: float) -> None:
        self.kq = kqrs.KQueue()
        self.backoff = backoff
        self.services = [Service(f"svc{i}", cmd, restarts) for i, cmd in enumerate(commands)]
        self.stopping = False
        self.gave_up = False
        # a no-op Python handler: the signal neither kills us nor reaches the children (exec resets caught
        # signals), and the kqueue counts it (on FreeBSD too)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: None)
            self.kq.signal(sig, data="stop")

    def start(self, svc: Service) -> None:
        # its own session and process group: stopping a service stops everything it started
        svc.popen = subprocess.Popen(["sh", "-c", svc.command], start_new_session=True)
        self.kq.process(svc.popen, data=svc)
        say("start", svc.name, f"pid={svc.popen.pid}")

    def on_exit(self, svc: Service, ev: kqrs.Event) -> None:
        assert svc.popen is not None
        svc.popen.wait()  # reap: the status is already known, this returns at once
        svc.popen = None
        how = f"code={ev.exit_code}" if ev.signal is None else f"signal={signame(ev.signal)}"
        svc.history.append(ev.returncode or 0)
        say("exit", svc.name, how)
        if self.stopping:
            return
        if svc.restarts_left == 0:
            say("giveup", svc.name, f"runs={len(svc.history)}")
            self.gave_up = True
            return
        svc.restarts_left -= 1
        say("restart", svc.name, f"in={self.backoff:g}s")
        self.kq.timer(self.backoff, repeat=False, data=("restart", svc))

    def stop(self, why: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        say("stop", "all", f"why={why}")
        for svc in self.services:
            if svc.popen is not None:
                try:
                    os.killpg(svc.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass  # exited meanwhile (its exit event is on its way)

    def running(self) -> bool:
        return any(s.popen is not None for s in self.services)

    def pending_restarts(self) -> bool:
        return any(isinstance(h, kqrs.TimerHandle) and isinstance(h.data, tuple) for h in self.kq.handles)

    def run(self, duration: float | None) -> int:
        for svc in self.services:
            self.start(svc)
        if duration is not None:
            self.kq.timer(duration, repeat=False, data="duration")
        while self.running() or (not self.stopping and self.pending_restarts()):
            for ev in self.kq.wait():
                if ev.filter == kqrs.Filter.PROC:
                    self.on_exit(ev.data, ev)
                elif ev.filter == kqrs.Filter.SIGNAL:
                    self.stop(signame(ev.signal or ev.ident))
                elif ev.data == "duration":
                    self.stop("duration")
                elif isinstance(ev.data, tuple) and not self.stopping:
                    self.start(ev.data[1])
        self.kq.close()
        say("done", "all", f"gave_up={int(self.gave_up)}")
        return 1 if self.gave_up else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--backoff", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("commands", nargs="+", metavar="CMD")
    args = ap.parse_args(argv)
    return Supervisor(args.commands, args.restarts, args.backoff).run(args.duration)


if __name__ == "__main__":
    sys.exit(main())

"""`kqrs trace`'s ordering, driven with made-up kevents: the engine may return the events of different knotes
in one batch in any order, and an exit (from a pidfd) can come before the fork (from the connector) that
preceded it. Whatever the order of a batch, and however a tree's events are split across batches, the
trace prints a process's fork line before anything the process does, a parent's exit after the lines of
its children in the batch, and the command's exit last of its batch; held-back lines never go back in time.

The real thing, run many times beside CPU-bound processes, is tests/test_trace_load.py.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re

import pytest

import kqrs
from kqrs._trace import Snapshot, Tracer

from kqhelpers import (
    EOF,
    ERROR,
    NOTE_CHILD as CHILD,
    NOTE_EXEC as EXEC,
    NOTE_EXIT as EXIT,
    NOTE_FORK as FORK,
    NOTE_TRACKERR as TRACKERR,
)

# root, its children C and D, C's child G: above any pid_max, so never this process or its parent
R, C, D, G = 5_000_000, 5_000_001, 5_000_002, 5_000_003


def snap(name):
    return Snapshot([name, "-x"], f"/usr/bin/{name}", name)


def tracer(json_out=True):
    out = io.StringIO()
    return Tracer(out, json_out, 0.0, R, None), out


def feed(t, events, now=1.0):
    for pid, ff, data, flags, *rest in events:
        t.event(pid, ff, data, flags, rest[0] if rest else now, snap(f"p{pid}") if ff & EXEC else None, kqrs)
    t.flush()


def records(out):
    return [json.loads(line) for line in out.getvalue().splitlines()]


def lines(out):
    return [(r["event"], r["pid"]) for r in records(out)]


def per_process_order_kept(batch):
    """A knote's own events stay in order (its NOTE_CHILD first, its exit last)."""
    seen: dict[int, list[int]] = {}
    for e in batch:
        seen.setdefault(e[0], []).append(TREE.index(e))
    return all(idx == sorted(idx) for idx in seen.values())


# one batch: the root execs, forks C (which forks G) and D; everyone exits, the root last
TREE = [
    (R, EXEC | FORK, 0, 0),
    (C, CHILD | EXEC | FORK, R, 0),
    (G, CHILD | EXEC, C, 0),
    (D, CHILD, R, 0),
    (G, EXIT, 0, EOF),
    (D, EXIT, 5 << 8, EOF),
    (C, EXIT, 0, EOF),
    (R, EXIT, 3 << 8, EOF),
]


def check_causal(recs, root=R):
    """A fork line before anything its process does, a parent's fork before its child's, each child's exit
    before its parent's, the root's exit last, times never going back."""
    forked = {root}
    exited = set()
    parent = {}
    for r in recs:
        pid = r["pid"]
        if r["event"] == "fork":
            assert pid not in forked, f"{pid} forked twice"
            assert r["ppid"] in forked and r["ppid"] not in exited, f"fork of {pid} before its parent's"
            forked.add(pid)
            parent[pid] = r["ppid"]
        else:
            assert pid in forked and pid not in exited, f"{r['event']} of {pid} before its fork or after its exit"
        if r["event"] == "exit":
            assert not [c for c, p in parent.items() if p == pid and c not in exited], f"{pid} exited before a child"
            exited.add(pid)
    assert recs[-1]["event"] == "exit" and recs[-1]["pid"] == root
    times = [r["time"] for r in recs]
    assert times == sorted(times)


EXPECTED_TREE = {
    ("exec", R),
    ("fork", C),
    ("exec", C),
    ("fork", G),
    ("exec", G),
    ("exit", G),
    ("exit", C),
    ("fork", D),
    ("exit", D),
    ("exit", R),
}


def test_every_order_of_one_batch_prints_causally():
    n = 0
    for batch in itertools.permutations(TREE):
        if not per_process_order_kept(batch):
            continue
        n += 1
        t, out = tracer()
        feed(t, batch)
        recs = records(out)
        check_causal(recs)
        assert set(lines(out)) == EXPECTED_TREE and len(recs) == len(EXPECTED_TREE), batch
        assert recs[0]["event"] == "exec" and recs[0]["pid"] == R  # the root's exec before its forks
        depth = {r["pid"]: r["depth"] for r in recs if r["event"] == "fork"}
        assert depth == {C: 1, G: 2, D: 1}
        assert t.live == set()
    assert n == 40320 // 2**4  # the orders of 8 events that keep each of 4 knotes' two in order


@pytest.mark.parametrize("cut", range(1, len(TREE)))
def test_a_tree_split_across_two_batches(cut):
    """The second batch brings the root's exit and whatever the first did not: still causal, every split
    point, and the batch order reversed as well."""
    for first, second in ((TREE[:cut], TREE[cut:]), (TREE[:cut][::-1], TREE[cut:][::-1])):
        if not (per_process_order_kept(first) and per_process_order_kept(second)):
            continue
        t, out = tracer()
        feed(t, first, 1.0)
        feed(t, second, 2.0)
        check_causal(records(out))
        assert set(lines(out)) == EXPECTED_TREE


def test_root_exit_waits_for_the_forks_that_preceded_it():
    """The failure seen under load: the shell's exit came back before its child's NOTE_CHILD."""
    t, out = tracer(json_out=False)
    feed(t, [(R, EXEC, 0, 0), (R, EXIT, 3 << 8, EOF), (C, CHILD | EXEC, R, 0), (C, EXIT, 0, EOF)])
    text = [re.sub(r"^\s*[\d.]+ ", "", line) for line in out.getvalue().splitlines()]
    assert text == [
        f"{R} exec /usr/bin/p{R}  [p{R} -x]",
        f"{R} fork {C}",
        f"  {C} exec /usr/bin/p{C}  [p{C} -x]",
        f"  {C} exited with status 0 after 0.0 ms",
        f"{R} exited with status 3 after 1.000 s",
    ]


def test_grandchild_before_its_parent_in_a_batch():
    t, out = tracer()
    feed(t, [(G, CHILD | EXEC, C, 0), (C, CHILD, R, 0)])
    assert lines(out) == [("fork", C), ("fork", G), ("exec", G)]
    assert [r["depth"] for r in records(out)] == [1, 2, 2]


def test_children_of_an_announced_parent_in_a_later_batch():
    t, out = tracer()
    feed(t, [(C, CHILD, R, 0)], 1.0)
    feed(t, [(R, EXIT, 0, EOF), (G, CHILD | EXEC, C, 0), (G, EXIT, 0, EOF)], 2.0)
    recs = records(out)
    assert lines(out) == [("fork", C), ("fork", G), ("exec", G), ("exit", G), ("exit", R)]
    assert recs[1]["ppid"] == C and recs[1]["depth"] == 2


def test_orphan_after_the_root_exit_comes_after_it():
    """A process left running when the command exits is followed until it exits; its exit, a later batch,
    is printed after the root's (it happened after it)."""
    t, out = tracer()
    feed(t, [(R, EXEC, 0, 0), (C, CHILD | EXEC, R, 0), (R, EXIT, 0, EOF)], 1.0)
    assert t.live == {C}
    feed(t, [(C, EXIT, 0, EOF)], 2.0)
    assert lines(out) == [("exec", R), ("fork", C), ("exec", C), ("exit", R), ("exit", C)]
    assert t.live == set()


def test_unknown_parent_is_said():
    t, out = tracer(json_out=False)
    feed(t, [(C, CHILD, 4_999_999, 0), (C, EXIT, 0, EOF)])
    text = out.getvalue().splitlines()
    assert re.fullmatch(rf"\s*[\d.]+   {C} forked \(parent unknown\)", text[0]), text
    assert re.fullmatch(rf"\s*[\d.]+   {C} exited with status 0 after .*", text[1]), text


def test_held_back_lines_never_go_back_in_time():
    t, out = tracer()
    # G arrives at 1.0 but its parent only at 2.0: G's lines are printed after C's fork, stamped 2.0
    feed(t, [(G, CHILD | EXEC, C, 0, 1.0), (C, CHILD, R, 0, 2.0)])
    recs = records(out)
    assert [r["time"] for r in recs] == [2.0, 2.0, 2.0]


def test_a_deep_chain_in_one_batch():
    """Deeper than Python's recursion limit: printed without recursion, each fork before its child's."""
    n = 3000
    batch = [(R + i + 1, CHILD, R + i, 0) for i in reversed(range(n))]
    batch += [(R + i + 1, EXIT, 0, EOF) for i in range(n)] + [(R, EXIT, 0, EOF)]
    t, out = tracer()
    feed(t, batch)
    recs = records(out)
    check_causal(recs)
    assert [r["pid"] for r in recs[:n]] == [R + i + 1 for i in range(n)]
    assert [r["pid"] for r in recs[n:]] == [R + n - i for i in range(n)] + [R]


def test_the_root_parent_is_this_process_even_if_its_pid_is_in_the_tree():
    """The root's parent is kqrs trace itself; a traced pid equal to it (a fake one here) must not make the
    tree a loop with no top, which would print nothing and never end."""
    me = os.getpid()
    t, out = tracer()
    feed(t, [(me, CHILD, R, 0), (me, EXIT, 0, EOF), (R, EXIT, 0, EOF)])
    assert lines(out) == [("fork", me), ("exit", me), ("exit", R)]
    assert t.live == set()


def test_a_loop_of_reused_pids_is_still_printed():
    t, out = tracer()
    feed(t, [(C, CHILD, R, 0)], 1.0)
    t.procs[C].ppid = D  # as if C's parent pid had been reused by D, a child of C
    feed(t, [(D, CHILD, C, 0), (C, EXIT, 0, EOF), (D, EXIT, 0, EOF)], 2.0)
    assert sorted(lines(out)) == sorted([("fork", C), ("fork", D), ("exit", D), ("exit", C)])
    assert t.live == {R}


def test_trackerr_is_printed_in_place():
    t, out = tracer()
    feed(t, [(R, TRACKERR, 0, 0), (R, EXIT, 0, EOF)])
    assert lines(out) == [("trackerr", R), ("exit", R)]
    assert t.lost == 1


def test_exit_with_an_error_has_no_status():
    t, out = tracer()
    feed(t, [(C, CHILD, R, 0), (C, EXIT, 10, EOF | ERROR)])
    rec = records(out)[-1]
    assert (rec["event"], rec["status"], rec["exit_code"]) == ("exit", None, None)


# --- what an exec line says when the process moved on before it was read ----------------------------------


class FakeFiles:
    """Stands for fanotify: the program each pid exec'd."""

    def __init__(self, programs):
        self.programs = programs

    def take(self, pid):
        return self.programs.pop(pid, None)

    def forget(self, pid):
        self.programs.pop(pid, None)


@pytest.mark.parametrize(
    "snapshot,files,text,fields",
    [
        (
            Snapshot(["ls", "/"], "/usr/bin/ls", "ls"),
            {},
            "exec /usr/bin/ls  [ls /]",
            {"program": "/usr/bin/ls", "argv": ["ls", "/"], "comm": "ls", "argv_gone": False, "program_source": "proc"},
        ),
        # a zombie: no exe, no cmdline, its comm still there; the program from fanotify
        (
            Snapshot(None, None, "ls"),
            {C: "/usr/bin/ls"},
            "exec /usr/bin/ls [argv gone]",
            {"program": "/usr/bin/ls", "argv": None, "comm": "ls", "argv_gone": True, "program_source": "fanotify"},
        ),
        # reaped before the exec was read: fanotify still knows the program
        (
            Snapshot(None, None, None),
            {C: "/usr/bin/ls"},
            "exec /usr/bin/ls [argv gone]",
            {"program": "/usr/bin/ls", "argv": None, "comm": None, "argv_gone": True, "program_source": "fanotify"},
        ),
        # no fanotify, a zombie: the command name only, and it says what is missing
        (
            Snapshot(None, None, "ls"),
            {},
            "exec ls [path and argv gone]",
            {"program": None, "argv": None, "comm": "ls", "argv_gone": True, "program_source": None},
        ),
        (
            Snapshot(None, None, None),
            {},
            "exec ? [path and argv gone]",
            {"program": None, "argv": None, "comm": None, "argv_gone": True, "program_source": None},
        ),
        # /proc/PID/exe unreadable but cmdline readable (another user's process, without root)
        (
            Snapshot(["ls", "/"], None, "ls"),
            {},
            "exec ls  [ls /] [path gone]",
            {"program": None, "argv": ["ls", "/"], "comm": "ls", "argv_gone": False, "program_source": None},
        ),
    ],
)
def test_exec_line_says_what_was_read(snapshot, files, text, fields):
    for json_out in (False, True):
        out = io.StringIO()
        t = Tracer(out, json_out, 0.0, R, FakeFiles(dict(files)))
        t.event(C, CHILD, R, 0, 1.0, None, kqrs)
        t.event(C, EXEC, 0, 0, 1.0, snapshot, kqrs)
        t.flush()
        last = out.getvalue().splitlines()[-1]
        if json_out:
            rec = json.loads(last)
            assert {k: rec[k] for k in fields} == fields
        else:
            assert re.fullmatch(rf"\s*[\d.]+   {C} " + re.escape(text), last), last
        assert t.argv_gone == (1 if fields["argv_gone"] else 0) and t.execs == 1


def test_proc_wins_over_fanotify_and_fanotify_is_consumed():
    """A live process's /proc/PID/exe is the truth; the fanotify record of that exec is used up with it, so
    that a later exec read too late does not get an earlier program."""
    files = FakeFiles({C: "/usr/bin/dash"})
    out = io.StringIO()
    t = Tracer(out, True, 0.0, R, files)
    t.event(C, CHILD | EXEC, R, 0, 1.0, Snapshot(["sh"], "/usr/bin/dash", "sh"), kqrs)
    t.flush()
    t.event(C, EXEC, 0, 0, 2.0, Snapshot(None, None, None), kqrs)
    t.flush()
    recs = records(out)
    assert (recs[1]["program"], recs[1]["program_source"]) == ("/usr/bin/dash", "proc")
    assert (recs[2]["program"], recs[2]["argv_gone"]) == (None, True)

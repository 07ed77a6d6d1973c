"""`kqrs watch`: each change to the given files and directories, printed as it happens (text or --json).

Each test runs `python -m kqrs watch` as a child, waits for "Watching N path(s)." on its stderr (every
watch in place), changes files, and reads the lines as they come.
"""

from __future__ import annotations

import datetime
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

import kqrs
from kqrs._watch import decode

KQRS = [sys.executable, "-m", "kqrs"]


def run(*args, timeout=10):
    return subprocess.run([*KQRS, "watch", *map(str, args)], capture_output=True, text=True, timeout=timeout)


class Watch:
    """A running `kqrs watch`; `line()` is the next stdout line (waiting at most `timeout`)."""

    def __init__(self, *args):
        self.p = subprocess.Popen(
            [*KQRS, "watch", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self.banner = self._readline(self.p.stderr, 10)

    @staticmethod
    def _readline(stream, timeout):
        r, _, _ = select.select([stream], [], [], timeout)
        return stream.readline() if r else None

    def line(self, timeout=5):
        return self._readline(self.p.stdout, timeout)

    def finish(self, timeout=5):
        out, err = self.p.communicate(timeout=timeout)
        return self.p.returncode, out, err

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.communicate()


@pytest.fixture
def watch():
    made = []

    def start(*args):
        w = Watch(*args)
        made.append(w)
        return w

    yield start
    for w in made:
        w.kill()


def append(path, data=b"x"):
    with open(path, "ab") as fh:  # no O_TRUNC: one change, one line
        fh.write(data)


def parse_text(line):
    stamp, path, notes = line.rstrip("\n").split(" ", 2)
    return datetime.datetime.fromisoformat(stamp), path, notes


def test_decode_names_every_note():
    assert decode(kqrs.KQ_NOTE_WRITE | kqrs.KQ_NOTE_EXTEND) == ["NOTE_WRITE", "NOTE_EXTEND"]
    assert decode(kqrs.KQ_NOTE_DELETE | kqrs.KQ_NOTE_LINK) == ["NOTE_DELETE", "NOTE_LINK"]
    every = (
        kqrs.KQ_NOTE_DELETE
        | kqrs.KQ_NOTE_WRITE
        | kqrs.KQ_NOTE_EXTEND
        | kqrs.KQ_NOTE_TRUNCATE
        | kqrs.KQ_NOTE_ATTRIB
        | kqrs.KQ_NOTE_LINK
        | kqrs.KQ_NOTE_RENAME
        | kqrs.KQ_NOTE_REVOKE
    )
    assert len(decode(every)) == 8
    assert decode(0x1000) == ["0x1000"]
    assert decode(0) == []


def test_file_changes_printed_as_they_happen(watch, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    w = watch(f)
    assert w.banner == "Watching 1 path.\n"
    before = datetime.datetime.now()
    append(f)
    stamp, path, notes = parse_text(w.line())
    assert (path, notes) == (str(f), "NOTE_WRITE|NOTE_EXTEND")
    assert before - datetime.timedelta(seconds=1) <= stamp <= datetime.datetime.now()
    os.chmod(f, 0o600)  # one line per change, while the previous one is already out
    assert parse_text(w.line())[1:] == (str(f), "NOTE_ATTRIB")
    os.truncate(f, 0)  # a setattr: FreeBSD's NOTE_ATTRIB, and libkqueue's NOTE_TRUNCATE
    assert parse_text(w.line())[1:] == (str(f), "NOTE_TRUNCATE|NOTE_ATTRIB")
    os.rename(f, tmp_path / "g")  # the file is followed, under the name given
    assert parse_text(w.line())[1:] == (str(f), "NOTE_RENAME")
    os.unlink(tmp_path / "g")
    _, path, notes = parse_text(w.line())
    assert path == str(f) and "NOTE_DELETE" in notes.split("|")


def test_directory_entries(watch, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    w = watch(d)
    (d / "x").write_bytes(b"")
    assert parse_text(w.line())[1:] == (str(d), "NOTE_WRITE")
    os.mkdir(d / "sub")
    assert parse_text(w.line())[1:] == (str(d), "NOTE_WRITE|NOTE_LINK")
    os.rename(d / "x", d / "y")
    assert parse_text(w.line())[1:] == (str(d), "NOTE_WRITE")


def test_several_paths_each_named(watch, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"")
    b.mkdir()
    w = watch(a, b)
    assert w.banner == "Watching 2 paths.\n"
    (b / "entry").write_bytes(b"")
    assert parse_text(w.line())[1:] == (str(b), "NOTE_WRITE")
    append(a, b"12")
    assert parse_text(w.line())[1:] == (str(a), "NOTE_WRITE|NOTE_EXTEND")


def test_json_lines(watch, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"")
    w = watch("--json", f)
    t0 = time.time()
    append(f, b"data")
    obj = json.loads(w.line())
    assert set(obj) == {"time", "timestamp", "path", "notes", "fflags", "eof"}
    assert obj["path"] == str(f)
    assert obj["notes"] == ["NOTE_WRITE", "NOTE_EXTEND"]
    assert obj["fflags"] == kqrs.KQ_NOTE_WRITE | kqrs.KQ_NOTE_EXTEND
    assert obj["eof"] is False
    assert t0 - 1 <= obj["timestamp"] <= time.time()
    assert datetime.datetime.fromisoformat(obj["time"]).timestamp() == pytest.approx(obj["timestamp"], abs=1e-5)


def test_count_exits_after_n_changes(watch, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"")
    w = watch("--count", 2, f)
    append(f)
    assert w.line() is not None
    os.chmod(f, 0o600)
    code, out, err = w.finish()
    assert code == 0
    assert [parse_text(x)[2] for x in out.splitlines()] == ["NOTE_ATTRIB"]
    assert err == ""


def test_timeout_without_changes_prints_nothing(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"")
    t0 = time.monotonic()
    r = run("-t", "0.3", f)
    assert time.monotonic() - t0 >= 0.3
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "Watching 1 path.\n")


def test_reading_the_file_prints_nothing(watch, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    w = watch("-t", "0.4", "--count=1", f)
    for _ in range(20):
        with open(f, "rb") as fh:
            fh.read()
        os.stat(f)
    code, out, _ = w.finish()
    assert (code, out) == (0, "")


def test_ctrl_c_exits_130_quietly(watch, tmp_path):
    w = watch(tmp_path)
    w.p.send_signal(signal.SIGINT)
    code, out, err = w.finish()
    assert (code, out, err) == (130, "", "")


def test_missing_path_fails_before_watching_anything(tmp_path):
    ok = tmp_path / "ok"
    ok.write_bytes(b"")
    r = run("-t", "5", ok, tmp_path / "missing")
    assert r.returncode == 66
    assert r.stdout == ""
    assert r.stderr == f"kqrs watch: {tmp_path / 'missing'}: No such file or directory\n"


def test_a_fifo_cannot_be_watched(tmp_path):
    p = tmp_path / "fifo"
    os.mkfifo(p)
    r = run("-t", "5", p)
    assert r.returncode == 66
    assert r.stderr == f"kqrs watch: {p}: cannot watch: Invalid argument\n"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--json"],
        ["-c", "0", "/"],
        ["-c", "x", "/"],
        ["-t", "-1", "/"],
        ["-t", "nan", "/"],
        ["-t"],
        ["--bogus", "/"],
    ],
)
def test_usage_errors_exit_64(args):
    r = run(*args)
    assert r.returncode == 64, r
    assert r.stdout == ""
    assert "usage: kqrs watch" in r.stderr


def test_help():
    r = run("--help")
    assert r.returncode == 0
    assert "--json" in r.stdout and "--count" in r.stdout and "--timeout" in r.stdout


def test_double_dash_allows_a_path_starting_with_a_dash(tmp_path):
    (tmp_path / "-odd").write_bytes(b"")
    r = subprocess.run(
        [*KQRS, "watch", "-t", "0", "--", "-odd"], capture_output=True, text=True, timeout=10, cwd=tmp_path
    )
    assert (r.returncode, r.stderr) == (0, "Watching 1 path.\n")


def test_listed_in_the_main_help():
    r = subprocess.run([*KQRS, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "watch" in r.stdout

"""The C face: kqrs's libkqueue.so.0 built from this tree (scripts/build-capi.sh), and C programs built
against it with pkg-config, as a user would: tests/capi/checks.c (behaviours libkqueue gets wrong) and the
example docs/examples/pwait.c. KQRS_CAPI_DIR names a library installed already (tests/run-all.sh sets it);
otherwise the session builds one (a release build of the engine without Python, about a minute)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="session")
def capi(tmp_path_factory) -> Path:
    given = os.environ.get("KQRS_CAPI_DIR")
    if given:
        return Path(given)
    dest = tmp_path_factory.mktemp("capi")
    subprocess.run(["bash", str(ROOT / "scripts/build-capi.sh"), str(dest)], check=True, timeout=1200)
    return dest


def _pkg_config(capi: Path, *args: str) -> list[str]:
    env = dict(os.environ, PKG_CONFIG_PATH=str(capi / "lib/pkgconfig"))
    out = subprocess.run(["pkg-config", *args, "libkqueue"], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def _build(capi: Path, src: Path, exe: Path, *extra: str) -> Path:
    flags = _pkg_config(capi, "--cflags", "--libs")
    cmd = ["gcc", "-O1", "-Wall", "-Werror", "-Wno-unused-result", "-o", str(exe), str(src), *flags, *extra]
    cmd.append(f"-Wl,-rpath,{capi / 'lib'}")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return exe


@pytest.fixture(scope="session")
def checks(capi, tmp_path_factory) -> Path:
    return _build(capi, ROOT / "tests/capi/checks.c", tmp_path_factory.mktemp("checks") / "checks", "-lpthread")


CHECKS = [
    "pollable",
    "nested",
    "no_early_return",
    "proc_not_a_child",
    "proc_fork_exec",
    "signal_handler_still_runs",
    "close_gives_fds_back",
    "fork_child",
    "fork_child_busy_parent",
    "bad_input",
    "buffers_checked_once",
    "reused_number",
    "cancel",
    "sockets",
    "regular_file",
    "closed_fd",
]


def test_the_list_of_checks_is_the_programs(checks):
    out = subprocess.run([str(checks)], capture_output=True, text=True, timeout=30).stdout.split()
    assert out == CHECKS


@pytest.mark.parametrize("name", CHECKS)
def test_check(checks, name):
    r = subprocess.run([str(checks), name], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "ok"), r.stderr


def test_installed_files(capi):
    lib = capi / "lib"
    assert (lib / "libkqueue.so").resolve() == (lib / "libkqueue.so.0").resolve()
    assert (lib / "libkqueue.a").is_file()
    assert (capi / "include/kqueue/sys/event.h").is_file()
    assert _pkg_config(capi, "--cflags") == [f"-I{capi / 'include/kqueue'}"]
    soname = subprocess.run(["objdump", "-p", str(lib / "libkqueue.so.0")], capture_output=True, text=True)
    if soname.returncode == 0:  # binutils is there wherever gcc is; the check below is what matters
        assert "SONAME               libkqueue.so.0" in soname.stdout
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(lib / "libkqueue.so.0")], capture_output=True, text=True, check=True
    )
    exported = sorted(line.split()[-1] for line in symbols.stdout.splitlines() if " T " in line)
    assert exported == ["kevent", "kqueue", "libkqueue_drain_pending_close"]


def test_static_library_links(capi, tmp_path):
    src = tmp_path / "s.c"
    src.write_text(
        "#include <sys/event.h>\n#include <stdio.h>\n"
        "int main(void) { int kq = kqueue(); struct kevent k; EV_SET(&k, 1, EVFILT_USER, EV_ADD, NOTE_TRIGGER, 0, 0);\n"
        '  struct timespec z = {0, 0}; int n = kevent(kq, &k, 1, &k, 1, &z); printf("%d %lu\\n", n, (unsigned long) k.ident);\n'
        "  return 0; }\n"
    )
    flags = _pkg_config(capi, "--cflags", "--static", "--libs")
    lib = [f for f in flags if f.startswith("-l") and f != "-lkqueue"]
    exe = tmp_path / "s"
    r = subprocess.run(
        ["gcc", "-o", str(exe), str(src), f"-I{capi / 'include/kqueue'}", str(capi / "lib/libkqueue.a"), *lib],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert subprocess.run([str(exe)], capture_output=True, text=True, timeout=30).stdout == "1 1\n"


@pytest.fixture(scope="session")
def pwait(capi, tmp_path_factory) -> Path:
    return _build(capi, ROOT / "docs/examples/pwait.c", tmp_path_factory.mktemp("pwait") / "pwait")


def test_example_pwait_waits_for_processes_that_are_not_its_children(pwait):
    a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    b = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(0.3); sys.exit(7)"])
    try:
        p = subprocess.Popen([str(pwait), "-v", str(a.pid), str(b.pid)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.6)
        assert p.poll() is None  # a still runs
        a.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=10)
    finally:
        a.kill()
        a.wait()
        b.wait()
    assert p.returncode == 0
    assert out.splitlines() == [f"{b.pid}: exited with status 7", f"{a.pid}: killed by signal {int(signal.SIGTERM)}"]


def test_example_pwait_times_out(pwait):
    t0 = time.monotonic()
    r = subprocess.run([str(pwait), "-t", "0.3", str(os.getpid())], timeout=10)
    assert r.returncode == 124
    assert time.monotonic() - t0 >= 0.3

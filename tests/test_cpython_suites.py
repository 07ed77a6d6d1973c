"""CPython's own kqueue suites, run on kqrs through kqrs.install() in a fresh interpreter each."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).with_name("cpython_suites.py")
SUITES = [
    "test_kqueue",
    "test_selectors",
    "test_asyncio.test_events",
    "test_asyncio.test_sock_lowlevel",
    "test_asyncio.test_sendfile",
]


def _have_test_package() -> bool:
    try:
        import test.support  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _have_test_package(), reason="this interpreter ships without its test package")
@pytest.mark.parametrize("suite", SUITES)
def test_cpython_suite_passes_on_kqrs(suite: str) -> None:
    env = dict(os.environ, PYTHONHASHSEED="0")
    p = subprocess.run(
        [sys.executable, str(RUNNER), suite],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no result line\nstdout:\n{p.stdout}\nstderr:\n{p.stderr[-4000:]}"
    counts = ast.literal_eval(lines[-1])
    assert counts["run"] > 0
    assert (counts["failures"], counts["errors"]) == (0, 0), p.stderr[-6000:]
    assert p.returncode == 0

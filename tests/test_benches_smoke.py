"""The benchmark suite runs: `bash benches/run.sh --smoke` writes a table with every row.

Benchmarks are not tests; this only checks that each one still runs and reports (CI smoke). It takes up
to a minute (the engine bench is compiled in release mode), and is skipped without pytest-benchmark.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("pytest_benchmark")
pytest.importorskip("watchfiles")  # the vnode rows compare with it

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
import report  # noqa: E402  (benches/report.py: the list of rows)

sys.path.pop(0)


@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is needed for the engine bench")
def test_smoke_run_writes_every_row(tmp_path):
    out = tmp_path / "RESULTS.md"
    r = subprocess.run(
        ["bash", "benches/run.sh", "--smoke", "--python", sys.executable, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = out.read_text()
    assert "Smoke run" in text
    assert f"- command: `bash benches/run.sh --smoke --python {sys.executable} --out {out}`" in text
    assert re.search(r"^- kernel: `[^`]+` \(uname -r\); CPU: ", text, re.M)
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 7 and cells[0] not in ("id", "---"):
            rows[cells[0]] = cells
    assert set(rows) == {row.id for row in report.ROWS}
    for row in report.ROWS:
        cells = rows[row.id]
        assert "missing" not in cells, (row.id, cells)
        kq, alt, ratio, target, status = cells[2], cells[3], cells[4], cells[5], cells[6]
        if row.pending:
            assert status.startswith("pending"), cells
        elif row.base is None:
            assert re.match(r"^[0-9.]+( B at [0-9,]+)?$", kq), cells
        else:
            assert re.match(r"^[0-9.]+ (ns|µs|ms)$", kq) and re.match(r"^[0-9.]+ (ns|µs|ms)$", alt), cells
            assert re.match(r"^[0-9]+\.[0-9]{2}$", ratio), cells
            if row.target is None:
                assert status.startswith("—"), cells
            else:
                assert target == f"≤ {row.target:.2f}", cells
                assert re.match(r"^(\*\*met\*\*|\*\*missed\*\*)", status), cells

"""`kqrs doctor` / `python -m kqrs doctor`: a live support matrix."""

from __future__ import annotations

import json
import subprocess
import sys


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kqrs", "doctor", *args], capture_output=True, text=True, timeout=60)


def test_doctor_json_reports_every_filter_with_a_verdict() -> None:
    p = _doctor("--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    rows = {r["feature"]: r for r in report["rows"]}
    for built in ("EVFILT_READ", "EVFILT_WRITE", "EVFILT_TIMER", "EVFILT_USER", "pollable / nestable", "fork safety"):
        assert rows[built]["works"] == "yes", rows[built]
    for r in rows.values():
        assert r["works"] in ("yes", "no", "partly")
        assert r["detail"], r
    # a filter that is not built says so, with the errno it fails with, never "yes"
    import kqrs

    for name in ("EVFILT_AIO",):
        filt = getattr(kqrs, "KQ_FILTER_" + name.split("_")[1])
        if not kqrs._kqrs._filter_supported(filt):
            assert rows[name]["works"] == "no" and "ENOTSUP" in rows[name]["detail"], rows[name]


def test_doctor_text_is_a_table() -> None:
    p = _doctor()
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("kqrs ") and "Linux" in lines[0]
    assert any(ln.split()[:2] == ["EVFILT_READ", "yes"] for ln in lines[1:])

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


def test_doctor_names_the_build() -> None:
    import sysconfig

    import kqrs
    from kqrs import _kqrs

    p = _doctor("--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    build = report["build"]
    assert build == {**_kqrs.build_info(), "wheel_tag": build["wheel_tag"]}
    assert build["version"] == kqrs.__version__
    assert build["free_threaded"] is bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert isinstance(build["debug_assertions"], bool) and build["glibc"]
    row = {r["feature"]: r for r in report["rows"]}["build"]
    assert row["works"] == "yes", row
    for part in (
        f"kqrs {kqrs.__version__}",
        f"linked for glibc {build['glibc']}",
        build["python_abi"],
        "free-threaded" if build["free_threaded"] else "GIL",
        "debug assertions ON" if build["debug_assertions"] else "debug assertions off",
    ):
        assert part in row["detail"], (part, row["detail"])
    text = _doctor().stdout
    assert any(ln.split()[:2] == ["build", "yes"] for ln in text.splitlines()), text


def _kernel() -> tuple[int, int]:
    import platform

    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()))


def test_doctor_probes_each_kernel_facility_and_names_the_supported_range() -> None:
    from kqrs._doctor import KERNEL_FEATURES, OLDEST_KERNEL

    p = _doctor("--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    feats = {f["name"]: f for f in report["kernel_features"]}
    assert list(feats) == [f.name for f in KERNEL_FEATURES]
    # every facility a kernel this new has must be found by the live probe (the table's "since" is right
    # and the probe works); the connector depends on privileges, not on the release
    for f in feats.values():
        assert isinstance(f["present"], bool)
        if f["since"][0].isdigit() and _kernel() >= tuple(int(x) for x in f["since"].split(".")):
            assert f["present"], f
    row = {r["feature"]: r for r in report["rows"]}["kernel"]
    assert f"kqrs supports {OLDEST_KERNEL}+" in row["detail"]
    assert row["works"] == ("yes" if all(f["present"] for f in feats.values()) else "partly"), row
    text = _doctor().stdout
    assert f"supported: Linux {OLDEST_KERNEL} and newer" in text
    for name in feats:
        assert any(ln.split()[:1] == name.split()[:1] for ln in text.splitlines()), name

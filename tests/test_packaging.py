"""Packaging and typing: the release wheel installs into a fresh venv and works there, the sdist has what a
build needs and builds, and the package type-checks (mypy --strict, mypy.stubtest).

Slow-ish: the wheel tests compile the crate in release mode (about 30 s from cold on 2 cores; the cargo
target directory is cached under ~/.cache/kqrs/packaging-target, or $KQRS_PACKAGING_TARGET) and the whole
file stays under 3 minutes. Set KQRS_SKIP_PACKAGING=1 to skip it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(bool(os.environ.get("KQRS_SKIP_PACKAGING")), reason="KQRS_SKIP_PACKAGING is set")


def maturin() -> str:
    exe = shutil.which("maturin") or str(Path(sys.executable).with_name("maturin"))
    if not Path(exe).exists():
        pytest.skip("maturin is not installed")
    return exe


def build_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = os.environ.get(
        "KQRS_PACKAGING_TARGET", str(Path.home() / ".cache" / "kqrs" / "packaging-target")
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def run(cmd: list[str], cwd: Path | str = ROOT, timeout: float = 170, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run([maturin(), "build", "--release", "-o", str(out), "-i", sys.executable], env=build_env())
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    run([maturin(), "sdist", "-o", str(out)], env=build_env())
    dists = list(out.glob("*.tar.gz"))
    assert len(dists) == 1, dists
    return dists[0]


SMOKE = textwrap.dedent(
    """
    import os, subprocess, sys, asyncio
    import kqrs, kqrs.asyncio
    assert "site-packages" in kqrs.__file__, kqrs.__file__
    with kqrs.KQueue() as kq:
        u = kq.user(data={"any": "object"})
        u.trigger(5)
        [ev] = kq.wait(2)
        assert ev.data == {"any": "object"} and ev.notes == 5 and ev.filter is kqrs.Filter.USER
        p = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        kq.process(p)
        [ev] = kq.wait(5)
        assert ev.exit_code == 3 and p.wait() == 3
    p = subprocess.Popen([sys.executable, "-c", "raise SystemExit(4)"])
    assert kqrs.asyncio.run(kqrs.asyncio.wait_process(p)).exit_code == 4
    p.wait()
    kq = kqrs.kqueue()
    kq.control([kqrs.kevent(1, kqrs.KQ_FILTER_TIMER, kqrs.KQ_EV_ADD | kqrs.KQ_EV_ONESHOT, 0, 1)], 0)
    assert kq.control(None, 1, 2)[0].ident == 1
    print("ok", kqrs.__version__)
    """
)


def test_release_wheel_is_manylinux_and_complete(wheel):
    m = re.fullmatch(r"kqrs-0\.1\.0-cp(\d+)-cp\d+t?-manylinux_(\d+)_(\d+)_x86_64\.whl", wheel.name)
    assert m, wheel.name
    assert m.group(1) == f"{sys.version_info.major}{sys.version_info.minor}"
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("__init__.py", "_api.py", "asyncio.py", "_queue.py", "_kqrs.pyi", "py.typed", "__main__.py"):
        assert f"kqrs/{f}" in names, f
    assert any(re.fullmatch(r"kqrs/_kqrs\.cpython-\d+t?-x86_64-linux-gnu\.so", n) for n in names), names
    entry = zipfile.ZipFile(wheel).read("kqrs-0.1.0.dist-info/entry_points.txt").decode()
    assert "kqrs=kqrs.__main__:main" in entry.replace(" ", "")


def test_wheel_installs_into_a_fresh_venv_and_works(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    py = venv / "bin" / "python"
    run([str(py), "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", str(wheel)], timeout=120)
    r = run([str(py), "-c", SMOKE], cwd=tmp_path)  # not the repo: the installed package must be used
    assert r.stdout.strip() == "ok 0.1.0"
    r = run([str(venv / "bin" / "kqrs"), "--help"], cwd=tmp_path)
    assert "doctor" in r.stdout


def test_sdist_has_what_a_build_needs_and_builds(sdist, tmp_path):
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        for f in ("Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md", "rust/src/lib.rs", "rust/src/python/mod.rs",
                  "python/kqrs/__init__.py", "python/kqrs/_api.py", "python/kqrs/asyncio.py",
                  "python/kqrs/_kqrs.pyi", "python/kqrs/py.typed", "PKG-INFO"):
            assert f in names, f
        assert not any(n.endswith(".so") for n in names)
        tar.extractall(tmp_path, filter="data") if sys.version_info >= (3, 12) else tar.extractall(tmp_path)
    src = tmp_path / sdist.name[: -len(".tar.gz")]
    pkg_info = (src / "PKG-INFO").read_text()
    assert "Name: kqrs" in pkg_info and "Version: 0.1.0" in pkg_info
    out = tmp_path / "out"
    run([maturin(), "build", "--release", "-o", str(out), "-i", sys.executable], cwd=src, env=build_env())
    assert len(list(out.glob("kqrs-0.1.0-*manylinux*.whl"))) == 1


# --- typing ------------------------------------------------------------------------------------------------


def mypy(*args: str) -> subprocess.CompletedProcess:
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.skip("mypy is not installed")
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=170)


def test_mypy_strict_on_the_high_level_api_and_the_examples():
    r = mypy("mypy", "--strict", "python/kqrs/_api.py", "python/kqrs/asyncio.py", "python/kqrs/__init__.py",
             "docs/examples")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_on_the_whole_package():
    r = mypy("mypy", "--strict", "python/kqrs", "docs/examples")
    assert r.returncode == 0, r.stdout + r.stderr


def test_stubtest():
    r = mypy("mypy.stubtest", "kqrs", "--allowlist", "stubtest-allowlist.txt")
    assert r.returncode == 0, r.stdout + r.stderr

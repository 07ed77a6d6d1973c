"""Packaging and typing: the release wheel installs into a fresh venv and works there, dist/ holds every
wheel scripts/build-wheels.sh promises, the sdist builds and passes tests from a fresh unpack, and the
package type-checks (mypy --strict, mypy.stubtest).

tests/run-all.sh sets KQRS_DIST to the dist/ that scripts/build-wheels.sh just filled: the wheel under test
is then that release wheel. Without it, the wheel and the sdist are built here (release mode: about 30 s
from cold on 2 cores; the cargo target directory is cached under ~/.cache/kqrs/packaging-target, or
$KQRS_PACKAGING_TARGET). Set KQRS_SKIP_PACKAGING=1 to skip the file; run-all.sh sets KQRS_SDIST_TESTED=1
for its second and third interpreters, whose sdist it already built and tested once.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIST = os.environ.get("KQRS_DIST")
ARCH = platform.machine()
FREE_THREADED = bool(__import__("sysconfig").get_config_var("Py_GIL_DISABLED"))
PY = f"cp{sys.version_info.major}{sys.version_info.minor}"
ABI = PY + ("t" if FREE_THREADED else "")
# What scripts/build-wheels.sh promises: (python tag, abi tag, arch)
RELEASE_WHEELS = {(f"cp3{m}", f"cp3{m}", a) for m in range(9, 15) for a in ("x86_64", "aarch64")} | {
    ("cp313", "cp313t", "x86_64")
}
ELF_MACHINE = {"x86_64": 62, "aarch64": 183}  # e_machine: EM_X86_64, EM_AARCH64
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
    if DIST:
        found = sorted(Path(DIST).glob(f"kqrs-*-{PY}-{ABI}-*_{ARCH}.whl"))
        assert len(found) == 1, f"{DIST} holds {found} for {ABI} {ARCH}"
        return found[0]
    out = tmp_path_factory.mktemp("wheel")
    run([maturin(), "build", "--release", "-o", str(out), "-i", sys.executable], env=build_env())
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    if DIST:
        found = sorted(Path(DIST).glob("kqrs-*.tar.gz"))
        assert len(found) == 1, found
        return found[0]
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


def wheel_name_parts(name: str) -> tuple[str, str, list[str]]:
    m = re.fullmatch(r"kqrs-0\.1\.0-(cp\d+)-(cp\d+t?)-([\w.]+)\.whl", name)
    assert m, name
    return m.group(1), m.group(2), m.group(3).split(".")


def check_wheel_contents(wheel: Path, abi: str, arch: str) -> None:
    z = zipfile.ZipFile(wheel)
    names = set(z.namelist())
    for f in (
        "__init__.py",
        "_api.py",
        "asyncio.py",
        "_queue.py",
        "_doctor.py",
        "_kqrs.pyi",
        "py.typed",
        "__main__.py",
    ):
        assert f"kqrs/{f}" in names, f
    for lic in ("LICENSE-MIT", "LICENSE-APACHE"):
        assert f"kqrs-0.1.0.dist-info/licenses/{lic}" in names, (wheel.name, lic)
    so = [n for n in names if n.endswith(".so")]
    assert so == [f"kqrs/_kqrs.cpython-{abi[2:]}-{arch}-linux-gnu.so"], so
    elf = z.read(so[0])
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == ELF_MACHINE[arch], wheel.name
    # build.rs recorded the ABI this extension was compiled for (kqrs doctor reports it): the right one
    assert abi.encode() in elf, (wheel.name, abi)
    others = {a for _, a, _ in RELEASE_WHEELS} - {abi}
    assert not [a for a in others if not abi.startswith(a) and a.encode() in elf], wheel.name
    entry = z.read("kqrs-0.1.0.dist-info/entry_points.txt").decode()
    assert "kqrs=kqrs.__main__:main" in entry.replace(" ", "")


def test_release_wheel_is_manylinux_and_complete(wheel):
    py, abi, plats = wheel_name_parts(wheel.name)
    assert (py, abi) == (PY, ABI)
    assert all(p.startswith("manylinux") and p.endswith("_" + ARCH) for p in plats), plats
    if DIST:
        assert set(plats) == {f"manylinux2014_{ARCH}", f"manylinux_2_17_{ARCH}"}, plats
    check_wheel_contents(wheel, abi, ARCH)


@pytest.mark.skipif(not DIST, reason="KQRS_DIST is not set: no scripts/build-wheels.sh output to check")
def test_dist_holds_every_promised_wheel_and_one_sdist():
    wheels = sorted(Path(DIST).glob("kqrs-*.whl"))
    found = set()
    for w in wheels:
        py, abi, plats = wheel_name_parts(w.name)
        arch = "x86_64" if plats[0].endswith("_x86_64") else plats[0].rsplit("_", 1)[-1]
        assert set(plats) == {f"manylinux2014_{arch}", f"manylinux_2_17_{arch}"}, w.name
        check_wheel_contents(w, abi, arch)
        found.add((py, abi, arch))
    assert found == RELEASE_WHEELS, (sorted(found - RELEASE_WHEELS), sorted(RELEASE_WHEELS - found))
    assert len(wheels) == len(RELEASE_WHEELS)
    assert [p.name for p in Path(DIST).glob("kqrs-*.tar.gz")] == ["kqrs-0.1.0.tar.gz"]


def test_wheel_installs_into_a_fresh_venv_and_works(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    py = venv / "bin" / "python"
    run([str(py), "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", str(wheel)], timeout=120)
    r = run([str(py), "-c", SMOKE], cwd=tmp_path)  # not the repo: the installed package must be used
    assert r.stdout.strip() == "ok 0.1.0"
    r = run([str(venv / "bin" / "kqrs"), "--help"], cwd=tmp_path)
    assert "doctor" in r.stdout


# From the unpacked sdist: the engine's tests, and these Python suites against the wheel built from it.
SDIST_PYTESTS = ["tests/test_kqueue.py", "tests/test_filter_user.py", "tests/test_release.py"]


@pytest.mark.skipif(
    bool(os.environ.get("KQRS_SDIST_TESTED")),
    reason="KQRS_SDIST_TESTED: this run built and tested the sdist in an earlier venv",
)
def test_sdist_builds_and_passes_tests_from_a_fresh_unpack(sdist, tmp_path):
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        for f in (
            "Cargo.toml",
            "Cargo.lock",
            "build.rs",
            "pyproject.toml",
            "README.md",
            "CHANGELOG.md",
            "LICENSE-MIT",
            "LICENSE-APACHE",
            "rust/src/lib.rs",
            "rust/src/python/mod.rs",
            "python/kqrs/__init__.py",
            "python/kqrs/_api.py",
            "python/kqrs/asyncio.py",
            "python/kqrs/_kqrs.pyi",
            "python/kqrs/py.typed",
            "PKG-INFO",
            "tests/run-all.sh",
            "rust/tests/engine.rs",
            *SDIST_PYTESTS,
        ):
            assert f in names, f
        assert not any(n.endswith(".so") or n.startswith(("target/", "dist/", ".venv")) for n in names)
        tar.extractall(tmp_path, filter="data") if sys.version_info >= (3, 12) else tar.extractall(tmp_path)
    src = tmp_path / sdist.name[: -len(".tar.gz")]
    pkg_info = (src / "PKG-INFO").read_text()
    assert "Name: kqrs" in pkg_info and "Version: 0.1.0" in pkg_info
    assert "License: MIT OR Apache-2.0" in pkg_info
    # tar keeps the files' old mtimes, and cargo's fingerprints of a path package are relative to it: in the
    # shared target directory an earlier unpack's test binaries (with its CARGO_MANIFEST_DIR) would look
    # fresh. Sources newer than any build make cargo compile this unpack's own.
    now = time.time()
    for f in src.rglob("*"):
        os.utime(f, (now, now))
    env = build_env()
    # the engine's own tests, from the unpacked sources
    r = run(["cargo", "test", "--quiet"], cwd=src, env=env, timeout=240)
    assert "test result: ok" in r.stdout
    out = tmp_path / "out"
    run([maturin(), "build", "--release", "-o", str(out), "-i", sys.executable], cwd=src, env=env)
    [built] = list(out.glob("kqrs-0.1.0-*manylinux*.whl"))
    site = tmp_path / "site"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(built),
        ],
        timeout=120,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("KQRS_EXPECT_WHEEL", None)
    r = run(
        [sys.executable, "-c", "import kqrs, kqrs._kqrs; print(kqrs.__file__); print(kqrs._kqrs.__file__)"],
        cwd=src,
        env=env,
    )
    assert all(Path(p).is_relative_to(site) for p in r.stdout.split()), r.stdout
    r = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SDIST_PYTESTS], cwd=src, env=env, timeout=240
    )
    assert re.search(r"\d+ passed", r.stdout) and " failed" not in r.stdout, r.stdout[-2000:]


# --- typing ------------------------------------------------------------------------------------------------


def mypy(*args: str) -> subprocess.CompletedProcess:
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.skip("mypy is not installed")
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=170)


def test_mypy_strict_on_the_high_level_api_and_the_examples():
    r = mypy(
        "mypy", "--strict", "python/kqrs/_api.py", "python/kqrs/asyncio.py", "python/kqrs/__init__.py", "docs/examples"
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_on_the_whole_package():
    r = mypy("mypy", "--strict", "python/kqrs", "docs/examples")
    assert r.returncode == 0, r.stdout + r.stderr


def test_stubtest():
    r = mypy("mypy.stubtest", "kqrs", "--allowlist", "stubtest-allowlist.txt")
    assert r.returncode == 0, r.stdout + r.stderr

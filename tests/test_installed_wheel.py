"""The suite runs against an installed release wheel (tests/run-all.sh sets KQRS_EXPECT_WHEEL=1 after
installing the manylinux2014 wheel scripts/build-wheels.sh built): these tests prove that the kqrs under
test is that wheel, not the source tree, and that the wheel is one any glibc 2.17+ Linux can install.

Without KQRS_EXPECT_WHEEL (a developer's `pip install -e .` or `pip install .`) there is no wheel to check
and they are skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import sysconfig
from importlib.metadata import distribution
from pathlib import Path

import pytest

import kqrs
from kqrs import _kqrs

pytestmark = pytest.mark.skipif(
    os.environ.get("KQRS_EXPECT_WHEEL") != "1", reason="KQRS_EXPECT_WHEEL is not 1: kqrs is not an installed wheel here"
)

ROOT = Path(__file__).resolve().parent.parent
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
ABI = f"cp{sys.version_info.major}{sys.version_info.minor}" + ("t" if FREE_THREADED else "")


def wheel_tags() -> list[str]:
    text = distribution("kqrs").read_text("WHEEL") or ""
    return [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Tag:")]


def wheel_checks():
    """scripts/check-wheels.py, the release check of every wheel built: its manylinux tag reading and its
    ELF facts (DT_NEEDED, newest GLIBC_ version) are the ones these tests apply to the installed wheel."""
    spec = importlib.util.spec_from_file_location("check_wheels", ROOT / "scripts" / "check-wheels.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_kqrs_under_test_is_the_installed_wheel_not_the_source_tree() -> None:
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    for mod in (kqrs, _kqrs):
        f = Path(mod.__file__ or "").resolve()
        assert any(s in f.parents for s in site), f"{mod.__name__} from {f}, not from {site}"
        assert ROOT / "python" not in f.parents, f"{mod.__name__} comes from the source tree: {f}"
    assert "site-packages" in Path(kqrs.__file__ or "").parts
    # and pip recorded it as installed from a wheel file (not an editable or a source install)
    direct = json.loads(distribution("kqrs").read_text("direct_url.json") or "{}")
    assert direct.get("url", "").endswith(".whl"), direct
    assert wheel_tags(), "no WHEEL tags in the installed dist-info"


def test_installed_wheel_is_manylinux_2_17_or_older_for_this_interpreter() -> None:
    tags = wheel_tags()
    for tag in tags:
        py, abi, plat = tag.split("-")
        assert (py, abi) == (ABI.rstrip("t"), ABI), tag
        assert wheel_checks().glibc_of(plat) <= (2, 17), tag
        assert plat.endswith("_" + sysconfig.get_platform().split("-")[-1]), tag


def test_extension_links_only_the_c_runtime_and_glibc_2_17() -> None:
    checks = wheel_checks()
    _machine, needed, newest = checks.elf_facts(Path(_kqrs.__file__ or "").read_bytes())
    assert needed, "no DT_NEEDED at all: not a dynamically linked extension?"
    assert all(checks.ALLOWED_NEEDED.fullmatch(n) for n in needed), needed
    assert (2, 2) <= newest <= (2, 17), newest


def test_build_info_names_the_wheels_build() -> None:
    info = _kqrs.build_info()
    assert info["version"] == kqrs.__version__
    assert info["glibc"] == "2.17"
    assert info["python_abi"] == ABI
    assert info["free_threaded"] is FREE_THREADED
    assert info["profile"] == "release" and info["debug_assertions"] is False
    assert info["target"] == f"{sysconfig.get_platform().split('-')[-1]}-unknown-linux-gnu"
    assert str(info["rustc"]).startswith("rustc 1.")


def test_installed_files_hold_the_stubs_py_typed_and_licences() -> None:
    files = {str(f) for f in distribution("kqrs").files or []}
    for f in ("kqrs/_kqrs.pyi", "kqrs/py.typed", "kqrs/__init__.py"):
        assert f in files, f
    licences = {f.rsplit("/", 1)[-1] for f in files if "/licenses/" in f}
    assert licences == {"LICENSE-MIT", "LICENSE-APACHE"}, licences
    assert any(re.fullmatch(rf"kqrs/_kqrs\.cpython-{ABI[2:]}-\w+-linux-gnu\.so", f) for f in files), files

"""Checks the release artefacts scripts/build-wheels.sh wrote, and prints one line per file.

Usage: python scripts/check-wheels.py DIST   (a Python with auditwheel and pyelftools: the build venv)

Each wheel must:
- be what auditwheel calls it: `auditwheel show` gives the manylinux tag the file name claims (the
  newest manylinux_X_Y in the name), so pip on a glibc that old installs it and nothing newer is needed;
- link only the C runtime (libc, libm, libpthread, libdl, librt, libgcc_s, ld-linux), and need no
  GLIBC_ symbol version newer than its tag;
- hold the package (kqrs/*.py), the extension for its own architecture, the stubs (`_kqrs.pyi`),
  `py.typed`, and both licence files.
Exit status 1 names every failure.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

ALLOWED_NEEDED = re.compile(
    r"libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libgcc_s\.so\.1"
    r"|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1"
)
E_MACHINE = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}
LICENCES = ("LICENSE-MIT", "LICENSE-APACHE")
WHEEL_NAME = re.compile(r"kqrs-(?P<ver>[^-]+)-(?P<py>cp\d+)-(?P<abi>cp\d+t?)-(?P<plat>[a-z0-9_.]+)\.whl")


def glibc_of(tag: str) -> tuple[int, int]:
    """manylinux_2_17_x86_64 -> (2, 17); the legacy manylinux2014 alias is (2, 17)."""
    if tag.startswith("manylinux2014_"):
        return (2, 17)
    m = re.match(r"manylinux_(\d+)_(\d+)_", tag)
    assert m, tag
    return (int(m.group(1)), int(m.group(2)))


def elf_facts(so: bytes) -> tuple[str, list[str], tuple[int, int]]:
    """(e_machine, DT_NEEDED names, newest GLIBC_x.y version needed)."""
    with tempfile.TemporaryFile() as f:
        f.write(so)
        f.seek(0)
        elf = ELFFile(f)
        needed: list[str] = []
        newest = (0, 0)
        for sec in elf.iter_sections():
            if isinstance(sec, DynamicSection):
                needed += [t.needed for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
            if isinstance(sec, GNUVerNeedSection):
                for _lib, auxes in sec.iter_versions():
                    for aux in auxes:
                        m = re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", aux.name)
                        if m:
                            newest = max(newest, (int(m.group(1)), int(m.group(2))))
        return elf["e_machine"], needed, newest


def check_wheel(whl: Path, auditwheel: str) -> tuple[list[str], str]:
    errors: list[str] = []
    m = WHEEL_NAME.fullmatch(whl.name)
    if not m:
        return [f"{whl.name}: not a kqrs CPython wheel name"], ""
    plats = m["plat"].split(".")
    arch = next((a for a in E_MACHINE if plats[0].endswith(a)), None)
    if arch is None or not all(p.endswith("_" + arch) for p in plats):
        return [f"{whl.name}: platform tags {plats} name no single known architecture"], ""
    claimed = max(plats, key=glibc_of)
    claimed_norm = "manylinux_{}_{}_{}".format(*glibc_of(claimed), arch)

    r = subprocess.run([auditwheel, "show", "--json", str(whl)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        errors.append(f"auditwheel show failed: {r.stderr.strip()[-500:]}")
        verdict = "?"
    else:
        report = json.loads(r.stdout)
        verdict = report["overall_tag"]
        if glibc_of(verdict) > glibc_of(claimed_norm) or not verdict.endswith(arch):
            errors.append(f"auditwheel says {verdict}, the name claims {claimed_norm}")
        if report.get("external_libs"):
            errors.append(f"auditwheel found external libraries {report['external_libs']}")

    z = zipfile.ZipFile(whl)
    names = set(z.namelist())
    dist_info = f"kqrs-{m['ver']}.dist-info"
    for f in (
        "kqrs/__init__.py",
        "kqrs/_api.py",
        "kqrs/_doctor.py",
        "kqrs/_kqrs.pyi",
        "kqrs/py.typed",
        f"{dist_info}/METADATA",
        f"{dist_info}/entry_points.txt",
    ):
        if f not in names:
            errors.append(f"missing {f}")
    for lic in LICENCES:
        if f"{dist_info}/licenses/{lic}" not in names:
            errors.append(f"missing licence file {dist_info}/licenses/{lic}")
    suffix = f"{m['abi'].replace('cp', 'cpython-', 1)}-{arch}-linux-gnu.so"
    sos = [n for n in names if n.endswith(".so")]
    if sos != [f"kqrs/_kqrs.{suffix}"]:
        errors.append(f"extension modules {sos}, expected kqrs/_kqrs.{suffix}")
    else:
        machine, needed, newest = elf_facts(z.read(sos[0]))
        if machine != E_MACHINE[arch]:
            errors.append(f"extension is {machine}, the name says {arch}")
        bad = [n for n in needed if not ALLOWED_NEEDED.fullmatch(n)]
        if bad:
            errors.append(f"extension links {bad} beyond the C runtime")
        if newest > glibc_of(claimed_norm):
            errors.append(f"extension needs GLIBC_{newest[0]}.{newest[1]}, newer than {claimed_norm}")
    return [f"{whl.name}: {e}" for e in errors], verdict


def check_sdist(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    want = [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "pyproject.toml",
        "README.md",
        "CHANGELOG.md",
        "PKG-INFO",
        "rust/src/lib.rs",
        "python/kqrs/_kqrs.pyi",
        "python/kqrs/py.typed",
        "tests/run-all.sh",
        *LICENCES,
    ]
    return [f"{sdist.name}: missing {f}" for f in want if f not in names]


def main(dist: str) -> int:
    d = Path(dist)
    auditwheel = str(Path(sys.executable).with_name("auditwheel"))
    wheels = sorted(d.glob("kqrs-*.whl"))
    sdists = sorted(d.glob("kqrs-*.tar.gz"))
    errors: list[str] = []
    if not wheels:
        errors.append(f"no wheels in {d}")
    if len(sdists) != 1:
        errors.append(f"expected one sdist in {d}, found {[s.name for s in sdists]}")
    for whl in wheels:
        errs, verdict = check_wheel(whl, auditwheel)
        errors += errs
        print(
            f"  {whl.name:<82} {whl.stat().st_size / 1024:6.0f} KiB  auditwheel: {verdict}"
            + ("" if not errs else "  FAILED")
        )
    for s in sdists:
        errors += check_sdist(s)
        print(f"  {s.name:<82} {s.stat().st_size / 1024:6.0f} KiB")
    for e in errors:
        print("check-wheels:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "dist"))

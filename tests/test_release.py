"""What a user checks before depending on kqrs: the README's opening, the changelog, the licence files, one
version everywhere, and the supported kernel range (the README's table is the one `kqrs doctor` probes)."""

from __future__ import annotations

import re
from pathlib import Path

import kqrs
from kqrs import _doctor, _kqrs

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def toml_value(path: Path, section: str, key: str) -> str:
    """The string value of `key` in `[section]` of a small TOML file (no tomllib on 3.9/3.10)."""
    text = path.read_text()
    body = text.split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
    m = re.search(rf'^{key} = "([^"]*)"', body, re.M)
    assert m, (path, section, key)
    return m.group(1)


def test_readme_opens_with_its_title_one_sentence_and_the_two_commands() -> None:
    blocks = README.split("\n\n")
    assert blocks[0] == "# kqrs", blocks[0]
    sentence = " ".join(blocks[1].split())
    assert sentence.startswith("kqrs ") and sentence.endswith(".") and sentence.count(". ") == 0, sentence
    fence = blocks[2].splitlines()
    assert fence[0] == "```sh" and fence[-1] == "```", blocks[2]
    commands = fence[1:-1]
    assert len(commands) == 2, commands
    assert commands[0].startswith("pip install . && kqrs "), commands[0]
    assert commands[1] == "bash tests/run-all.sh"
    # CI runs exactly the second command
    assert "bash tests/run-all.sh" in (ROOT / ".ci" / "run").read_text()


def test_one_version_everywhere_and_in_the_changelog() -> None:
    version = toml_value(ROOT / "Cargo.toml", "package", "version")
    assert toml_value(ROOT / "pyproject.toml", "project", "version") == version
    assert kqrs.__version__ == version
    assert _kqrs.build_info()["version"] == version
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog\n")
    headings = re.findall(r"^## (\S+)", changelog, re.M)
    assert headings and headings[0] == version, headings


def test_licence_files_are_the_declared_licence() -> None:
    declared = "MIT OR Apache-2.0"
    assert toml_value(ROOT / "Cargo.toml", "package", "license") == declared
    assert f'license = {{ text = "{declared}" }}' in (ROOT / "pyproject.toml").read_text()
    mit = (ROOT / "LICENSE-MIT").read_text()
    assert mit.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in mit
    apache = (ROOT / "LICENSE-APACHE").read_text()
    assert "Apache License" in apache and "Version 2.0, January 2004" in apache
    assert "END OF TERMS AND CONDITIONS" in apache


def readme_table(heading: str) -> list[list[str]]:
    """The rows (cells) of the README table whose header line starts with `heading`, header first."""
    i = README.index(heading)
    rows = []
    for line in README[i:].splitlines():
        if line.startswith("| ---"):
            continue
        if not line.startswith("| "):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def test_readme_kernel_facilities_are_doctors_table() -> None:
    rows = readme_table("| facility | since Linux |")
    assert rows[0] == ["facility", "since Linux", "what kqrs does with it", "without it"]
    assert rows[1:] == [list(f) for f in _doctor.KERNEL_FEATURES]


def test_readme_names_what_works_on_each_kernel_line_users_run() -> None:
    rows = readme_table("| Linux | what works |")
    kernels = [r[0] for r in rows[1:]]
    assert kernels == ["5.3 (the oldest supported)", "5.10 (LTS)", "6.1 (LTS)", "6.13 and newer", "any"]
    assert f"Linux {_doctor.OLDEST_KERNEL} or newer" in README
    # each facility is placed on the right side of each line: named as arriving no later than its release
    text = {r[0].split()[0]: r[1] for r in rows[1:]}
    assert "waitid(P_PIDFD)" in text["5.10"] and "epoll_pwait2" in text["6.1"]
    assert "rounded up to whole milliseconds" in text["5.3"]
    assert "PIDFD_GET_INFO" in text["6.13"] and "PIDFD_INFO_EXIT" in text["6.13"]
    assert "CAP_NET_ADMIN" in text["any"]

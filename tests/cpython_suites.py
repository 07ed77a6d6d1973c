"""Run CPython's own kqueue suites on kqrs (after ``kqrs.install()``).

    python tests/cpython_suites.py [--json] [SUITE...]

Suites: test_kqueue, test_selectors (KqueueSelectorTestCase), and the KqueueEventLoopTests classes of
test_asyncio.test_events, test_sock_lowlevel and test_sendfile. Exit status 0 only with no failure and no
error. With --json, prints one JSON line of counts per suite.
"""

from __future__ import annotations

import json
import sys
import unittest

import kqrs

kqrs.install()

import selectors  # noqa: E402  (after install: KqueueSelector must exist)

SUITES = {
    "test_kqueue": ("test.test_kqueue", None),
    "test_selectors": ("test.test_selectors", "KqueueSelectorTestCase"),
    "test_asyncio.test_events": ("test.test_asyncio.test_events", "KqueueEventLoopTests"),
    "test_asyncio.test_sock_lowlevel": ("test.test_asyncio.test_sock_lowlevel", "KqueueEventLoopTests"),
    "test_asyncio.test_sendfile": ("test.test_asyncio.test_sendfile", "KqueueEventLoopTests"),
}


def load(modname: str, clsname: str | None) -> unittest.TestSuite:
    import importlib

    mod = importlib.import_module(modname)
    loader = unittest.TestLoader()
    if clsname is None:
        return loader.loadTestsFromModule(mod)
    suite = unittest.TestSuite()
    for name in dir(mod):
        obj = getattr(mod, name)
        if isinstance(obj, type) and issubclass(obj, unittest.TestCase) and name.startswith(clsname):
            suite.addTests(loader.loadTestsFromTestCase(obj))
    return suite


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    names = [a for a in argv if not a.startswith("--")] or list(SUITES)
    assert hasattr(selectors, "KqueueSelector"), "kqrs.install() did not give selectors a KqueueSelector"
    assert selectors.DefaultSelector is selectors.KqueueSelector
    from test import support

    support.use_resources = ["cpu"]  # `-u cpu`: also test_above_fd_setsize (10,000 fds); nothing off-machine
    bad = 0
    for name in names:
        modname, clsname = SUITES[name]
        suite = load(modname, clsname)
        stream = sys.stderr
        result = unittest.TextTestRunner(stream=stream, verbosity=1).run(suite)
        counts = {
            "suite": name,
            "python": sys.version.split()[0],
            "run": result.testsRun,
            "failures": len(result.failures),
            "errors": len(result.errors),
            "skipped": len(result.skipped),
        }
        bad += counts["failures"] + counts["errors"]
        print(json.dumps(counts) if as_json else counts, flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

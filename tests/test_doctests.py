"""The docstring examples of every poller module run, so that what they show stays true.

Collected here with the stdlib doctest module rather than pytest's
--doctest-modules, which is one switch for every path pytest collects (tests/
included) and would need poller/ among the testpaths. Every module is imported
but poller.__main__ (it runs the command line) and the generated poller.proto.

Each docstring with examples is one test, named as pytest names doctests
(poller.trust.verify, poller.identity.context.TenantContext); one whose examples
are all +SKIP (they need a server, a network, or a loop for their `await`) is
reported as skipped. Each runs with its own copy of its module's globals, so
the order of the tests does not matter; they touch no file, so neither does the cwd.
"""

from __future__ import annotations

import doctest
import importlib

import pytest
from test_public_api import package_modules

# pytest's default for its own doctests, so that `pytest --doctest-modules poller` agrees.
OPTIONFLAGS = doctest.ELLIPSIS


def _doctests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder()
    found: list[doctest.DocTest] = []
    for name in package_modules():
        found += [test for test in finder.find(importlib.import_module(name), name) if test.examples]
    return sorted(found, key=lambda test: test.name)


DOCTESTS = _doctests()


@pytest.mark.parametrize("test", DOCTESTS, ids=[test.name for test in DOCTESTS])
def test_docstring_examples(test: doctest.DocTest) -> None:
    # A fresh copy of the module's globals each time: the examples' names never outlive one run.
    fresh = doctest.DocTest(test.examples, dict(test.globs), test.name, test.filename, test.lineno, test.docstring)
    report: list[str] = []
    result = doctest.DocTestRunner(optionflags=OPTIONFLAGS).run(fresh, out=report.append)
    if result.failed:
        pytest.fail("".join(report), pytrace=False)
    if not result.attempted:
        pytest.skip("every example is +SKIP")


def test_every_module_is_searched() -> None:
    # An import that failed quietly, or a walk that found nothing, would leave nothing to run.
    names = {test.name for test in DOCTESTS}
    assert {"poller.daemon.dialgate", "poller.identity.context.TenantContext", "poller.trust.verify"} <= names
    assert {"poller.gateway.server", "poller.testing"} <= names  # a subpackage's module, a package's __init__

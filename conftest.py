"""Shared fixtures for every test tree (real servers, started once per session)."""

import os

import pytest
from hypothesis import settings

pytest_plugins = ["dmp_stack.testing"]

# CI replays the same generated cases on every run (a failure there is reproducible);
# a developer's runs draw new ones each time, to keep finding what CI has not tried.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# `make test` shuffles the tests within each module and the modules among themselves
# (pytest-random-order, bucket "parent": a module's tests, wherever their functions are
# written). The reliability run keeps its faults in the order written: it has not been run
# shuffled yet, and each of its cycles takes minutes.
KEEP_ORDER = ("tests/reliability/",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(KEEP_ORDER):
            item.add_marker(pytest.mark.random_order(disabled=True))

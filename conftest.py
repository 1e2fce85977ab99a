"""Shared fixtures for every test tree (real servers, started once per session)."""

import os

from hypothesis import settings

pytest_plugins = ["dmp_stack.testing"]

# CI replays the same generated cases on every run (a failure there is reproducible);
# a developer's runs draw new ones each time, to keep finding what CI has not tried.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

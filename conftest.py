"""Shared fixtures for every test tree (real servers, started once per session)."""

pytest_plugins = ["dmp_stack.testing"]

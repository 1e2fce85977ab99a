"""Each service of tests/contract/<service>/ started on its own (see dmp_stack.contract)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dmp_stack.contract import Alone, alone
from dmp_stack.testing import Infra


@pytest.fixture(scope="module")
def alone_service(request: pytest.FixtureRequest, infra: Infra) -> Iterator[Alone]:
    name = request.module.SERVICE
    logs = Path(".dmp") / "test-logs"
    with alone(name, infra.mongo.url, logs) as service:
        yield service


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = metafunc.module.CASES
        metafunc.parametrize("case", cases, ids=[str(c) for c in cases])

"""Each service of tests/contract/<service>/ started on its own (see dmp_stack.contract)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dmp_stack.contract import Alone, alone, check_case
from dmp_stack.testing import Infra, kept_logs


@pytest.fixture(scope="module")
def alone_service(request: pytest.FixtureRequest, infra: Infra) -> Iterator[Alone]:
    name = request.module.SERVICE
    logs = kept_logs()
    with alone(name, infra.mongo.url, logs) as service:
        # What the module's cases read, made once (and checked) before any of them runs.
        for case in getattr(request.module, "GIVEN", ()):
            token = None if case.caller is None else service.token(case.caller)
            check_case(service, request.module.STUB(service.channel), case, token)
        yield service


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = metafunc.module.CASES
        metafunc.parametrize("case", cases, ids=[str(c) for c in cases])

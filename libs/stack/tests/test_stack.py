"""The local stack refuses to start twice and stops exactly what it started."""

from __future__ import annotations

import pytest

from dmp_stack.infra import InfraError
from dmp_stack.stack import alive
from dmp_stack.testing import RunningStack


def test_a_second_up_is_refused_while_running(stack: RunningStack) -> None:
    assert stack.stack.running()
    with pytest.raises(InfraError, match="already running"):
        stack.stack.up()
    state = stack.stack.state()
    assert state is not None
    assert set(state.processes) == {
        "identity",
        "notify",
        "dossier",
        "consent",
        "audit",
        "ingest",
        "messaging",
        "agenda",
        "gateway",
    }
    assert all(alive(pid) for pid in state.processes.values())

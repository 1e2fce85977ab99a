"""The harness's JetStream cluster: three nats-server processes routed together, streams at R3
written to disk before they acknowledge; an acknowledged event survives the stream leader's
kill -9, and the clients carry on through the other members."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmp.events.v1 import envelope_pb2, identity_pb2
from dmp_kit.bus import EventBus
from dmp_kit.clock import SystemClock
from dmp_kit.events import new_event
from dmp_stack import infra
from dmp_stack.credentials import Credentials
from dmp_stack.testing import Infra, own_servers

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Infra]:
    with own_servers("dmp-nats-cluster-", nats_nodes=3) as infra:
        yield infra


def login() -> envelope_pb2.Envelope:
    payload = identity_pb2.LoginAttempted(account_kind="patient", outcome="password_ok")
    return new_event("identity.login", payload, source="identity", clock=SystemClock())


async def test_an_acknowledged_event_survives_the_stream_leaders_kill(cluster: Infra) -> None:
    members = {
        name: tuple(int(x) for x in value.split(":"))
        for name, value in cluster.nats.extra.items()
        if name.startswith("node")
    }
    assert len(members) == 3 and cluster.nats.url.count(",") == 2
    bus = EventBus(cluster.nats.url, "cluster-test", stream_replicas=3, publish_timeout=10.0)
    await bus.connect()
    try:
        await bus.ensure_streams(["IDENTITY"])
        info = await bus.js.stream_info("IDENTITY")
        assert info.config.num_replicas == 3
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        sent = [login() for _ in range(20)]
        for event in sent[:10]:
            await bus.publish_event(event)

        leader = info.cluster.leader
        (pid, _port) = members[f"node{leader.rsplit('-', 1)[1]}"] if leader else (0, 0)
        assert pid, "the stream has a leader"
        os.kill(pid, signal.SIGKILL)
        for event in sent[10:]:  # a new leader is elected; the client moves to a live member
            for _ in range(60):
                try:
                    await bus.publish_event(event)
                    break
                except Exception:  # no leader yet, or the connection moving: again
                    await asyncio.sleep(0.5)
            else:
                pytest.fail("no member took the publish after the leader died")
        info = await bus.js.stream_info("IDENTITY")
        assert info.cluster is not None and info.cluster.leader != leader
        assert info.state.messages >= 20  # none of the acknowledged ones lost
    finally:
        await bus.close()


def test_a_cluster_whose_member_finds_its_port_taken_starts_on_other_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member that cannot bind its route port (taken meanwhile: here by this test, in CI
    once by another member's dial to it) fails the start, which is tried again on new ports."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    chosen, really_free = 0, infra.free_port

    def free_port() -> int:
        nonlocal chosen
        chosen += 1
        # the first start's third route port (client ports come first, then routes)
        return busy if chosen == 6 else really_free()

    monkeypatch.setattr(infra, "free_port", free_port)
    for folder in ("data", "secrets", "logs"):
        (tmp_path / folder).mkdir()
    try:
        started = infra.start_nats_cluster(tmp_path, Credentials())
        try:
            assert chosen > 9, "a second start, on ports chosen afresh"
            assert started.pid is not None and len(started.also) == 2
            assert f":{busy}" not in (tmp_path / "secrets" / "nats-3.conf").read_text()
            assert "address already in use" in (tmp_path / "logs" / "nats-3.log").read_text()
        finally:
            for pid in (started.pid, *started.also):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
    finally:
        taken.close()

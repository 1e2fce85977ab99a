"""The harness's JetStream cluster: three nats-server processes routed together, streams at R3
written to disk before they acknowledge; an acknowledged event survives the stream leader's
kill -9, and the clients carry on through the other members."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from dmp.events.v1 import envelope_pb2, identity_pb2
from dmp_kit.bus import EventBus
from dmp_kit.clock import SystemClock
from dmp_kit.events import new_event
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

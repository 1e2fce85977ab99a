"""The scaled fault suite's NATS cluster in network namespaces: what its wait for a current
member does with a member that /healthz says is stuck on one stream or consumer (its leader is
asked to step down), on three real nats-server processes."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from dmp_stack.credentials import Credentials
from dmp_stack.infra import InfraError
from dmp_stack.netns import NamespacedCluster, namespaces_available, step_down_subject
from dmp_stack.testing import until


def test_the_groups_named_by_healthz_map_to_their_step_down_requests() -> None:
    stream = "JetStream stream '$G > AGENDA' is not current: group node unhealthy"
    consumer = "JetStream consumer '$G > DOSSIER > notify-document-added' is not current: x"
    assert step_down_subject(stream) == "$JS.API.STREAM.LEADER.STEPDOWN.AGENDA"
    assert (
        step_down_subject(consumer)
        == "$JS.API.CONSUMER.LEADER.STEPDOWN.DOSSIER.notify-document-added"
    )
    # the meta group, or anything else: nothing to ask of a stream's leader
    assert step_down_subject("JetStream is not current with the meta leader") == ""
    assert step_down_subject("connection refused") == ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamespacedCluster]:
    why = namespaces_available()
    if why:
        pytest.fail(f"the namespaced cluster needs network namespaces: {why}")
    root = Path(tmp_path_factory.mktemp("netns-cluster"))
    made = NamespacedCluster(root, Credentials(), ("dmp-test", secrets.token_urlsafe(16)))
    made.start()
    try:
        yield made
    finally:
        made.close()


def leader(cluster: NamespacedCluster, stream: str) -> str:
    async def ask() -> str:
        user, password = cluster.superuser or (None, None)
        nc = await nats.connect([m.url for m in cluster.members], user=user, password=password)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(StreamConfig(name=stream, subjects=["probe.>"], num_replicas=3))
                info = await js.stream_info(stream)
            return (info.cluster.leader if info.cluster else None) or ""
        except (
            nats.js.errors.BadRequestError,
            nats.js.errors.ServiceUnavailableError,
            nats.errors.TimeoutError,
        ):
            # A member not back yet, or no meta leader elected yet (the test before healed
            # one): no placement, or no answer in time. Ask again.
            return ""
        finally:
            await nc.close()

    return asyncio.run(ask())


def test_a_stuck_streams_leader_is_asked_to_step_down(cluster: NamespacedCluster) -> None:
    first = until(lambda: leader(cluster, "PROBE"), timeout=60)
    assert first
    said = cluster.step_down(step_down_subject("JetStream stream '$G > PROBE' is not current: x"))
    assert '"success":true' in said.replace(" ", ""), said
    assert until(lambda: leader(cluster, "PROBE") not in ("", first), timeout=30), first
    cluster.wait_healthy(60)
    assert cluster.nudged == []  # every member current at once: nobody asked anything


def test_a_member_not_current_in_time_is_reported_with_what_it_says(
    cluster: NamespacedCluster,
) -> None:
    member = cluster.members[-1]
    cluster.isolate(member)
    try:
        # Cut off, it loses the meta leader (and if it led, so do the others until they elect
        # another): the wait gives up naming the first member not current, with what its
        # /healthz said and its log's end.
        assert until(lambda: not member.healthy(), timeout=30), member.health()
        with pytest.raises(InfraError) as raised:
            cluster.wait_healthy(1)
        said = str(raised.value)
        first = said.splitlines()[0]
        names = [m.name for m in cluster.members]
        expected = r"nats-\d's JetStream did not become current in 1 s: JetStream .+"
        assert re.fullmatch(expected, first), said
        assert first.split("'")[0] in names, said
        assert "[WRN] Healthcheck failed" in said or "[INF]" in said, said
    finally:
        cluster.heal(member)
    cluster.wait_healthy(120)
    assert member.health() == ""

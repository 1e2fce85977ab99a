"""Issue 23 §1: the scaled stack — two replicas of each service that can have several and two
gateways, the services calling one another over round-robin channels, NATS as a JetStream
cluster of three with every stream on all three. A care story through both gateways is served
by both replicas of each service on its path, every document is traced and notified once, and
kill -9 of a dossier replica under writes loses no acknowledged one."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import nats
import pytest

from dmp_stack.stack import REPLICATED
from dmp_stack.testing import (
    CareTeam,
    RunningStack,
    kept_logs,
    own_servers,
    running_stack,
    until,
)


@pytest.fixture(scope="module")
def scaled() -> Iterator[RunningStack]:
    # Servers of its own, whatever the session uses: a cluster of three NATS servers. Its logs
    # and the NATS servers' are kept for whoever reads a failure (CI prints them).
    kept = kept_logs() / "scaled"
    with own_servers("dmp-scaled-", nats_nodes=3) as infra:
        try:
            with running_stack(infra, replicas=2, keep_logs=kept) as stack:
                yield stack
        finally:
            for log in (infra.root / "logs").glob("nats-*.log"):
                shutil.copy(log, kept)


@pytest.fixture(scope="module")
def team(scaled: RunningStack) -> CareTeam:
    return CareTeam(scaled)


def document(title: str) -> dict[str, Any]:
    return {
        "type_code": "11488-4",
        "title": title,
        "mime_type": "text/plain",
        "content_base64": base64.b64encode(title.encode()).decode(),
    }


def add(stack: RunningStack, url: str, team: CareTeam, title: str) -> int:
    with stack.client(team.tokens["gp"]) as c:
        c.base_url = url  # type: ignore[assignment]
        return c.post(f"/v1/dossiers/{team.ins}/documents", json=document(title)).status_code


def titles(stack: RunningStack, team: CareTeam) -> list[str]:
    with team.client("gp") as c:
        r = c.get(f"/v1/dossiers/{team.ins}/documents", params={"page_size": 200})
    assert r.status_code == 200, r.text
    return [d["title"] for d in r.json()["items"]]


def test_every_replica_serves_and_every_stream_is_on_three_servers(
    scaled: RunningStack, team: CareTeam
) -> None:
    urls = scaled.state.gateway_urls
    assert len(urls) == 2
    for i in range(12):  # through both gateways in turn
        assert add(scaled, urls[i % 2], team, f"Compte rendu {i}") == 201
    assert len([t for t in titles(scaled, team) if t.startswith("Compte rendu ")]) == 12
    # Both replicas of each service on the path answered calls (round-robin channels).
    for service in ("dossier", "consent"):
        for instance in scaled.stack.replicas_of(service):
            calls = scaled.metric(instance.name, "dmp_rpc_requests_total", code="OK")
            assert calls and calls > 0, instance.name
    assert {i.service for i in scaled.stack.instances.values()} >= {*REPLICATED, "gateway"}
    assert all(len(scaled.stack.replicas_of(s)) == 2 for s in (*REPLICATED, "gateway"))

    async def replicas() -> dict[str, int]:
        nc = await nats.connect(scaled.infra.nats.url.split(","))
        try:
            js = nc.jetstream()
            return {
                s.config.name or "": s.config.num_replicas or 0 for s in await js.streams_info()
            }
        finally:
            await nc.close()

    streams = asyncio.run(replicas())
    assert streams and set(streams.values()) == {3}, streams


def test_a_block_is_in_force_at_once_through_every_replica(
    scaled: RunningStack, team: CareTeam
) -> None:
    """Rule 5 across replicas while dossier reuses consent's verdicts and consent the states it
    read (docs/scaling.md): both dossier replicas answer the care team's lists and the doctor's
    writes from verdicts they were given, consent from states it read; then the patient blocks
    the doctor through one gateway, and the doctor's very next list or write, through either
    gateway, whichever replicas serve it, is refused, the others' still answered; authorised
    again, answered."""
    urls = scaled.state.gateway_urls
    assert add(scaled, urls[0], team, "Lettre de liaison") == 201

    def lists(who: str, url: str) -> int:
        with team.client(who) as c:
            c.base_url = url  # type: ignore[assignment]
            return c.get(f"/v1/dossiers/{team.ins}/documents").status_code

    notes = iter(range(1000))

    def writes(url: str) -> int:
        """The doctor adds a document of the same facts (type, author) each time, so its
        decision is reused."""
        with team.client("doctor") as c:
            c.base_url = url  # type: ignore[assignment]
            body = document(f"Note de suivi {next(notes)}")
            return c.post(f"/v1/dossiers/{team.ins}/documents", json=body).status_code

    def round_of_lists() -> dict[str, list[int]]:
        return {
            **{
                who: [lists(who, urls[i % 2]) for i in range(6)]
                for who in ("doctor", "gp", "pharmacist")
            },
            "doctor writes": [writes(urls[i % 2]) for i in range(4)],
        }

    def reused(service: str, metric: str) -> dict[str, float]:
        return {
            i.name: scaled.metric(i.name, metric, source="reused") or 0.0
            for i in scaled.stack.replicas_of(service)
        }

    answered = {
        "doctor": [200] * 6,
        "gp": [200] * 6,
        "pharmacist": [200] * 6,
        "doctor writes": [201] * 4,
    }
    verdicts = reused("dossier", "dmp_dossier_verdicts_total")
    decisions = sum(
        scaled.metric(i.name, "dmp_dossier_verdicts_total", source="reused", of="decision") or 0.0
        for i in scaled.stack.replicas_of("dossier")
    )
    states = reused("consent", "dmp_consent_states_total")
    try:
        for turn in range(3):
            assert round_of_lists() == answered, f"turn {turn}"
            with scaled.client(team.tokens["patient"]) as c:
                c.base_url = urls[turn % 2]  # type: ignore[assignment]
                rpps = team.pros["doctor"]["rpps"]
                r = c.put(
                    f"/v1/dossiers/{team.ins}/professionals/{rpps}", json={"status": "blocked"}
                )
                assert r.status_code == 200, r.text
            refused = {**answered, "doctor": [403] * 6, "doctor writes": [403] * 4}
            assert round_of_lists() == refused, f"turn {turn}"
            team.set_pro("doctor", "authorized")
            assert round_of_lists() == answered, f"turn {turn}"
    finally:
        team.set_pro("doctor", "authorized")
    # What is under test happened: both dossier replicas reused verdicts, consent reused states.
    after = reused("dossier", "dmp_dossier_verdicts_total")
    assert all(after[name] > verdicts[name] for name in after), (verdicts, after)
    assert (
        sum(
            scaled.metric(i.name, "dmp_dossier_verdicts_total", source="reused", of="decision")
            or 0.0
            for i in scaled.stack.replicas_of("dossier")
        )
        > decisions
    )  # the doctor's writes reused the decision to admit them too
    assert sum(reused("consent", "dmp_consent_states_total").values()) > sum(states.values())


def test_each_document_is_traced_and_notified_once(scaled: RunningStack, team: CareTeam) -> None:
    before = set(titles(scaled, team))
    added = [f"Résultat {i}" for i in range(6)]
    for i, title in enumerate(added):
        assert add(scaled, scaled.state.gateway_urls[i % 2], team, title) == 201

    def inbox() -> list[dict[str, Any]]:
        with team.client("patient") as c:
            r = c.get("/v1/me/notifications", params={"page_size": 100})
        assert r.status_code == 200, r.text
        return [n for n in r.json()["items"] if n["kind"] == "document_added"]

    documents = len(set(titles(scaled, team)) - before) + len(before)
    assert until(lambda: len(inbox()) >= documents, timeout=60), (len(inbox()), documents)
    assert len(inbox()) == documents  # two notify replicas share the work: once each

    def trail() -> list[dict[str, Any]]:
        """Every creation in the whole trail, page after page: the other tests' lists are in
        it too, however many."""
        created: list[dict[str, Any]] = []
        cursor = ""
        with team.client("patient") as c:
            while True:
                params: dict[str, Any] = {
                    "page_size": 100,
                    **({"cursor": cursor} if cursor else {}),
                }
                r = c.get(f"/v1/dossiers/{team.ins}/access-log", params=params)
                assert r.status_code == 200, r.text
                page = r.json()
                created += [
                    e for e in page["entries"] if e["action"] == "create" and e.get("document_id")
                ]
                cursor = page.get("next") or ""
                if not cursor:
                    return created

    assert until(lambda: len(trail()) >= documents, timeout=60)
    seqs = [e["seq"] for e in trail()]
    assert len(seqs) == len(set(seqs)) == documents  # one entry each, in one log

    # one sequencer appended all of it, and the log verifies from the database
    sequencers = [
        scaled.metric(i.name, "dmp_audit_sequencer") for i in scaled.stack.replicas_of("audit")
    ]
    assert sorted(sequencers) == [0, 1], sequencers
    verify = subprocess.run(
        [sys.executable, "-m", "dmp_audit.cli", "audit", "verify", "--quiet",
         "--mongo-url", scaled.infra.mongo.url, "--keys-from", scaled.url],
        capture_output=True, text=True, env={**os.environ, "DMP_ENV": "dev"}, timeout=120,
        check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_kill_9_of_a_dossier_replica_under_writes_loses_no_acknowledged_one(
    scaled: RunningStack, team: CareTeam
) -> None:
    victim = scaled.processes["dossier-2"]
    acknowledged: list[str] = []
    failed = 0
    for i in range(30):
        title = f"Sous charge {i}"
        if i == 8:
            os.killpg(victim, signal.SIGKILL)  # the other replica carries on
        status = add(scaled, scaled.state.gateway_urls[i % 2], team, title)
        if status == 201:
            acknowledged.append(title)
        else:
            assert status == 503, status  # its in-flight calls only: refused, not hung
            failed += 1
    assert len(acknowledged) >= 25, (len(acknowledged), failed)
    listed = titles(scaled, team)
    assert all(listed.count(t) == 1 for t in acknowledged)  # each readable, once
    # Restarted, it is back in the gateways' and consent's rotation within seconds.
    scaled.stack.restart("dossier-2")
    back = iter(range(1000))

    def serves() -> bool:
        assert add(scaled, scaled.state.gateway_urls[0], team, f"Retour {next(back)}") == 201
        return bool(scaled.metric("dossier-2", "dmp_rpc_requests_total", code="OK"))

    assert until(serves, timeout=30, interval=0.5)

"""Faults across the scaled stack (issue 23 §2): what was acknowledged survives, once.

The stack of tests/e2e/test_scaled.py on servers of its own: two replicas of each service that
can have several (ingest keeps its one), two gateways the load alternates between, NATS as a
JetStream cluster of three with every stream on all three. Each NATS server lives in a network
namespace of its own (dmp_stack.netns), so that one can be cut off from the other two for real.
For each fault, in each cycle: the load runs, the fault strikes half-way, the load goes on, then
the checks of dmp_stack.workload.check (every acknowledged write readable and single, outbox and
consumers drained, `dmp audit verify` passing, each document notified once).

`make test-reliability-scaled` runs DMP_RELIABILITY_CYCLES (default 3) per fault and records
the figures in .dmp/reliability-scaled.json (the README quotes them); `make test` leaves this
file out (marker `scaled`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pymongo import MongoClient

from dmp.dossier.v1 import dossier_pb2 as pb
from dmp.dossier.v1 import dossier_pb2_grpc
from dmp.events.v1 import envelope_pb2
from dmp_stack.credentials import Credentials
from dmp_stack.infra import InfraError, start_mongo, start_smtp
from dmp_stack.netns import CURRENT_SECONDS, Member, NamespacedCluster, namespaces_available
from dmp_stack.stack import stop_started
from dmp_stack.testing import (
    TEST_NATS_USER,
    Infra,
    RunningStack,
    running_stack,
    until,
    with_nats_user,
)
from dmp_stack.workload import Person, Workload, check, reader_token, run_for

# A fault of three cycles on this machine takes up to 5 minutes (an isolation, its checks).
pytestmark = [pytest.mark.scaled, pytest.mark.timeout(900)]

CYCLES = int(os.environ.get("DMP_RELIABILITY_CYCLES", "1"))
LOAD_SECONDS = float(os.environ.get("DMP_RELIABILITY_SECONDS", "6"))
RESULTS = Path(".dmp") / "reliability-scaled.json"
SERVICES = ("gateway", "identity", "dossier", "consent", "notify", "ingest")
KILL_NATS_NODE = "kill -9 a NATS node"
KILL_STREAM_LEADER = "kill -9 the NATS node leading a stream"
ISOLATE_NATS_NODE = "a NATS node isolated from the other two"
RACE = "two dossier replicas change the same documents at once"
FAULTS = (
    *(f"kill -9 one {name} replica" for name in SERVICES),
    KILL_AUDIT := "kill -9 the audit sequencer replica",
    KILL_NATS_NODE,
    KILL_STREAM_LEADER,
    ISOLATE_NATS_NODE,
    RACE,
)
# The stream whose leader a fault strikes, by cycle: documents first (the busiest), then the
# others that the load writes to.
LED_STREAMS = ("DOSSIER", "CONSENT", "AUDIT", "IDENTITY")
DOWN_SECONDS = 3.0  # how long a killed NATS node stays away while the writes go on
# How long a member back in the cluster has to be current with the load going on; then the
# load is held until it is (up to CURRENT_SECONDS more).
LOADED_SECONDS = float(os.environ.get("DMP_RELIABILITY_LOADED_SECONDS", "60"))


@dataclass
class Rig:
    stack: RunningStack
    cluster: NamespacedCluster
    workload: Workload
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    # What a check found lost or duplicated stays so (the load's tally is the whole run's): it
    # is counted against the fault whose check saw it first, not again against every later one.
    found: set[str] = field(default_factory=set)


@contextmanager
def servers() -> Iterator[tuple[Infra, NamespacedCluster]]:
    """A database, an SMTP sink and the namespaced NATS cluster for this module alone,
    whatever the session uses."""
    why = namespaces_available()
    if why:
        pytest.fail(f"the scaled faults cut a NATS server off in a network namespace: {why}")
    saved = {k: os.environ.pop(k, None) for k in ("DMP_MONGO_URL", "DMP_NATS_URL")}
    root = Path(tempfile.mkdtemp(prefix="dmp-reliability-scaled-"))
    credentials = Credentials()
    password = secrets.token_urlsafe(24)
    cluster = NamespacedCluster(root, credentials, (TEST_NATS_USER, password))
    started = []
    try:
        mongo = start_mongo(root)
        started.append(mongo)
        nats_server = with_nats_user(cluster.start(), TEST_NATS_USER, password)
        smtp = start_smtp(root)
        started.append(smtp)
        yield Infra(root, mongo, nats_server, smtp, credentials), cluster
    finally:
        cluster.close()
        for dep in started:
            stop_started(dep)
        # The NATS members' logs outlive the run, beside the services' (CI prints their ends).
        kept = Path(".dmp") / "test-logs" / "scaled-nats"
        kept.mkdir(parents=True, exist_ok=True)
        for log in (root / "logs").glob("nats-*.log"):
            shutil.copyfile(log, kept / log.name)
        shutil.rmtree(root, ignore_errors=True)
        for key, value in saved.items():
            if value is not None:
                os.environ[key] = value


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with servers() as (infra, cluster), running_stack(infra, replicas=2) as stack:
        yield Rig(stack, cluster, Workload(stack, gateways=stack.state.gateway_urls))


# --------------------------------------------------------------------------- NATS


def nats_urls(stack: RunningStack) -> list[str]:
    return stack.infra.nats.url.split(",")


def leader_of(stack: RunningStack, stream: str) -> str:
    """The server that leads `stream` now, as JetStream says (its stream info)."""

    async def ask() -> str:
        nc = await nats.connect(nats_urls(stack))
        try:
            info = await nc.jetstream().stream_info(stream)
            return (info.cluster.leader if info.cluster else None) or ""
        finally:
            await nc.close()

    try:
        return asyncio.run(ask())
    except (nats.errors.Error, TimeoutError):
        return ""  # no leader at this moment (an election under way)


def new_leader(stack: RunningStack, stream: str, old: str, timeout: float = 30.0) -> str:
    """The leader the other members elect once `old` is gone or cut off."""
    found = until(lambda: (lead := leader_of(stack, stream)) not in ("", old) and lead, timeout)
    assert found, f"{stream}: no leader but {old!r} after {timeout:.0f} s"
    return str(found)


def back_in(rig: Rig, notes: dict[str, Any]) -> None:
    """Until every member says its JetStream is current: under the load for LOADED_SECONDS,
    then with the load held until they are (a member catching up on streams that keep
    growing, every write synced to disk, may not get there while they do). A hold is noted."""
    try:
        rig.cluster.wait_healthy(LOADED_SECONDS)
    except InfraError as exc:
        started = time.monotonic()
        with rig.workload.held():
            rig.cluster.wait_healthy(CURRENT_SECONDS)
        why = str(exc).splitlines()[0]
        notes.setdefault("load_held", []).append(f"{time.monotonic() - started:.0f} s: {why}")


def kill_nats_node(rig: Rig, member: Member, notes: dict[str, Any]) -> None:
    """SIGKILL; away for a few seconds of writes; started again on its files, back in the
    cluster once every member says its JetStream is current."""
    rig.cluster.kill(member)
    time.sleep(DOWN_SECONDS)
    rig.cluster.start_member(member, wait=False)
    back_in(rig, notes)


def isolate(rig: Rig, member: Member, stream: str, notes: dict[str, Any]) -> None:
    """Cut off from the other two (its clients still reach it) until the majority has elected
    another leader of `stream` and a few more seconds of writes have gone by; then healed."""
    others = [m for m in rig.cluster.members if m is not member]
    rig.cluster.isolate(member)
    try:
        assert not any(member.reaches(o) or o.reaches(member) for o in others), "not isolated"
        started = time.monotonic()
        new_leader(rig.stack, stream, member.name)
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - started)))
    finally:
        rig.cluster.heal(member)
    assert all(member.reaches(o) and o.reaches(member) for o in others), "not healed"
    back_in(rig, notes)


# --------------------------------------------------------------------------- the race


@dataclass
class Race:
    """Concurrent changes of the same documents through the two dossier replicas: per
    document, the patient masks it from professionals through one replica while, through the
    other, its author archives it and the patient keeps it from their trusted persons."""

    person: Person
    first_seq: int = 0
    # document id → the changes attempted, each with whether it was acknowledged
    changes: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)


CHANGES: dict[str, tuple[str, dict[str, Any]]] = {
    # name → (who, UpdateDocumentRequest fields)
    "mask": ("patient", {"masked_from_professionals": True}),
    "archive": ("author", {"status": pb.DOCUMENT_STATUS_ARCHIVED}),
    "hide from trusted persons": ("patient", {"hidden_from_trusted_persons": True}),
}


def race(rig: Rig, documents: int = 8) -> Race:
    workload, stack = rig.workload, rig.stack
    person = workload.people[0]
    result = Race(person, first_seq=stream_last_seq(stack, "DOSSIER") + 1)
    before = set(workload.tally.documents)
    for _ in range(documents):
        workload.submit(person)
    ids = [
        document_id
        for title, (ins, document_id) in workload.tally.documents.items()
        if title not in before and ins == person.ins
    ]
    assert ids, f"no document to race on: {dict(workload.tally.failures)}"
    replicas = [f"127.0.0.1:{i.port}" for i in stack.stack.replicas_of("dossier")]
    assert len(replicas) == 2, replicas
    tokens = {"patient": person.session.token(), "author": person.gp.token()}
    channels = [grpc.insecure_channel(address) for address in replicas]
    try:
        for n, document_id in enumerate(ids):
            # the mask on one replica, the two others on the other, by turns
            plan = [("mask", n % 2), ("archive", (n + 1) % 2), ("hide from trusted persons", 1)]
            stubs = [dossier_pb2_grpc.DossierServiceStub(channels[r]) for _, r in plan]
            changes = [(name, stub) for (name, _), stub in zip(plan, stubs, strict=True)]
            result.changes[document_id] = at_once(person.ins, document_id, changes, tokens, result)
    finally:
        for channel in channels:
            channel.close()
    return result


def at_once(
    ins: str, document_id: str, changes: list[tuple[str, Any]], tokens: dict[str, str], race: Race
) -> list[tuple[str, bool]]:
    """The changes sent at the same instant (a barrier), each through its stub; whether each
    was acknowledged."""
    barrier = threading.Barrier(len(changes))
    outcome: dict[str, bool] = {}

    def change(name: str, stub: Any) -> None:
        who, fields = CHANGES[name]
        request = pb.UpdateDocumentRequest(ins=ins, document_id=document_id, **fields)
        barrier.wait()
        try:
            stub.UpdateDocument(
                request, metadata=(("authorization", f"Bearer {tokens[who]}"),), timeout=10
            )
            outcome[name] = True
        except grpc.RpcError as error:
            outcome[name] = False
            race.errors[f"{name}: {error.code().name}"] += 1  # type: ignore[attr-defined]

    threads = [threading.Thread(target=change, args=step) for step in changes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return [(name, outcome.get(name, False)) for name, _ in changes]


def verify_race(rig: Rig, race: Race) -> tuple[list[str], list[str]]:
    """(lost, duplicated): an acknowledged change not in the document as read back, or with
    no event; a change with more events than attempts, or an event published twice."""
    lost: list[str] = []
    duplicated: list[str] = []
    token = reader_token(rig.stack, race.person.ins)
    with httpx.Client(base_url=rig.stack.url, timeout=30.0) as c:
        for document_id, changes in race.changes.items():
            r = c.get(
                f"/v1/dossiers/{race.person.ins}/documents/{document_id}",
                headers={"authorization": f"Bearer {token}"},
            )
            assert r.status_code == 200, r.text
            doc = r.json()
            now = {
                "mask": doc["masked_from_professionals"],
                "archive": doc["status"] == "archived",
                "hide from trusted persons": doc["hidden_from_trusted_persons"],
            }
            lost += [f"{name} of {document_id}" for name, ok in changes if ok and not now[name]]
    events = document_events(rig.stack, race.first_seq)
    ids = Counter(e.id for e in events)
    duplicated += [f"event {i} ×{n}" for i, n in ids.items() if n > 1]
    for document_id, changes in race.changes.items():
        visibility = sum(
            1
            for e in events
            if e.WhichOneof("payload") == "document_visibility_changed"
            and e.document_visibility_changed.document_id == document_id
        )
        archived = sum(
            1
            for e in events
            if e.WhichOneof("payload") == "document_status_changed"
            and e.document_status_changed.document_id == document_id
            and e.document_status_changed.status == "archived"
        )
        for kind, count, names in (
            ("visibility", visibility, ("mask", "hide from trusted persons")),
            ("archived", archived, ("archive",)),
        ):
            attempted = [ok for name, ok in changes if name in names]
            if count < sum(attempted):
                lost.append(f"{kind} events of {document_id}: {count} for {sum(attempted)}")
            if count > len(attempted):
                duplicated.append(f"{kind} events of {document_id}: {count}")
    return lost, duplicated


def stream_last_seq(stack: RunningStack, stream: str) -> int:
    async def ask() -> int:
        nc = await nats.connect(nats_urls(stack))
        try:
            return int((await nc.jetstream().stream_info(stream)).state.last_seq)
        finally:
            await nc.close()

    return asyncio.run(ask())


def document_events(stack: RunningStack, first_seq: int) -> list[envelope_pb2.Envelope]:
    """Every `document.*` event on the stream from `first_seq` on, read by a consumer of the
    test's own that acknowledges nothing and is deleted after."""

    async def read() -> list[envelope_pb2.Envelope]:
        nc = await nats.connect(nats_urls(stack))
        js = nc.jetstream()
        name = f"race_{secrets.token_hex(4)}"
        config = ConsumerConfig(
            durable_name=name,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=first_seq,
            ack_policy=AckPolicy.NONE,
            filter_subject="document.>",
        )
        try:
            sub = await js.pull_subscribe("document.>", durable=name, config=config)
            found = []
            while (await sub.consumer_info()).num_pending:
                for msg in await sub.fetch(500, timeout=5):
                    found.append(envelope_pb2.Envelope.FromString(msg.data))
            return found
        finally:
            await js.delete_consumer("DOSSIER", name)
            await nc.close()

    return asyncio.run(read())


# --------------------------------------------------------------------------- the faults


def inject(rig: Rig, fault: str, cycle: int, notes: dict[str, Any]) -> Callable[[], None]:
    """The fault for `run_for` to strike half-way; what it struck is noted in `notes`."""
    stack = rig.stack.stack

    def strike() -> None:
        if fault == KILL_AUDIT:
            sequencer = next(
                i.name
                for i in stack.replicas_of("audit")
                if rig.stack.metric(i.name, "dmp_audit_sequencer") == 1
            )
            notes.setdefault("killed", []).append(sequencer)
            stack.restart(sequencer, kill=True)
        elif fault.startswith("kill -9 one "):
            replicas = stack.replicas_of(fault.split()[3])
            victim = replicas[cycle % len(replicas)].name
            notes.setdefault("killed", []).append(victim)
            stack.restart(victim, kill=True)
        elif fault == KILL_NATS_NODE:
            lead = leader_of(rig.stack, "DOSSIER")
            follower = [m for m in rig.cluster.members if m.name != lead][cycle % 2]
            notes.setdefault("killed", []).append(follower.name)
            kill_nats_node(rig, follower, notes)
        elif fault == KILL_STREAM_LEADER:
            stream = LED_STREAMS[cycle % len(LED_STREAMS)]
            lead = leader_of(rig.stack, stream)
            assert lead, f"{stream} has no leader"
            rig.cluster.kill(rig.cluster.member(lead))
            elected = new_leader(rig.stack, stream, lead)
            notes.setdefault("killed", []).append(f"{lead} leading {stream} (then {elected})")
            time.sleep(DOWN_SECONDS)
            rig.cluster.start_member(rig.cluster.member(lead), wait=False)
            back_in(rig, notes)
        elif fault == ISOLATE_NATS_NODE:
            stream = LED_STREAMS[cycle % len(LED_STREAMS)]
            lead = leader_of(rig.stack, stream)
            assert lead, f"{stream} has no leader"
            notes.setdefault("isolated", []).append(f"{lead} leading {stream}")
            isolate(rig, rig.cluster.member(lead), stream, notes)
        else:
            notes.setdefault("races", []).append(race(rig))

    return strike


# FerretDB 1.24 (the database here unless Docker or mongod is found) checks update_one's filter
# and writes as two steps: two clients' compare-and-set on the same version can both land, the
# second overwriting the first. One process never showed it (its own lock orders its writes);
# two replicas did, until the scaled stack on FerretDB took a lease per record in the database
# (DMP_DOCUMENT_LEASES, dmp_kit.mongo.DocumentLocks): the race below holds with them. The raw
# check after it shows the engine's own behaviour, which MongoDB, as production uses, passes.
FERRETDB_CAS = (
    "FerretDB 1.24: a compare-and-set guarded by a version is not atomic between clients, so "
    "two replicas' changes of one record can both be acknowledged and one of them lost"
)


def expect_ferretdb_cas(rig: Rig, request: pytest.FixtureRequest) -> None:
    if rig.stack.infra.mongo.source.startswith("ferretdb"):
        request.applymarker(pytest.mark.xfail(reason=FERRETDB_CAS, raises=AssertionError))


@pytest.mark.parametrize("fault", FAULTS)
def test_acknowledged_writes_survive(rig: Rig, fault: str) -> None:
    mark = rig.workload.tally.mark()
    lost: list[str] = []
    duplicated: list[str] = []
    other: list[str] = []
    notes: dict[str, Any] = {}
    for cycle in range(CYCLES):
        run_for(rig.workload, LOAD_SECONDS, during=inject(rig, fault, cycle, notes))
        if rig.cluster.nudged:  # a member stuck not current: which leader was asked to step down
            notes.setdefault("nats_step_downs", []).extend(rig.cluster.nudged)
            rig.cluster.nudged.clear()
        findings = check(rig.workload, timeout=240)
        for race_run in notes.pop("races", []):
            race_lost, race_duplicated = verify_race(rig, race_run)
            findings.lost += race_lost
            findings.duplicated += race_duplicated
            tally = notes.setdefault("race", {"changes": 0, "acknowledged": 0, "failed": {}})
            tally["changes"] += sum(len(c) for c in race_run.changes.values())
            tally["acknowledged"] += sum(ok for c in race_run.changes.values() for _, ok in c)
            tally["failed"] = dict(Counter(tally["failed"]) + race_run.errors)
        lost += [f"cycle {cycle}: {x}" for x in findings.lost if x not in rig.found]
        duplicated += [f"cycle {cycle}: {x}" for x in findings.duplicated if x not in rig.found]
        rig.found.update(findings.lost, findings.duplicated)
        other += [f"cycle {cycle}: {x}" for x in findings.other]
        if other:
            break  # not drained, or the log does not verify: the next cycle would prove nothing
    figures = rig.workload.tally.since(mark, CYCLES)
    acknowledged, failed = figures["by_kind"], figures["failed"]
    rig.results[fault] = {
        **figures,
        "lost": len(lost),
        "duplicated": len(duplicated),
        **notes,
        **({"found": lost + duplicated + other} if lost or duplicated or other else {}),
    }
    # Before the verdict, so that a fault that loses something still leaves its figures.
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"cycles": CYCLES, "faults": rig.results}, indent=2))
    assert not (lost or duplicated or other), (fault, lost, duplicated, other)
    # The writes went on across the fault (a load that had stopped would prove nothing).
    assert all(acknowledged.get(kind, 0) > 0 for kind in ("submit", "consent")), (
        fault,
        dict(acknowledged),
        failed,
    )
    if fault == RACE:
        race_tally = rig.results[fault]["race"]
        # the race really raced: most changes landed (a change refused as contention may not)
        assert race_tally["acknowledged"] >= race_tally["changes"] * 2 // 3, race_tally


def test_compare_and_set_holds_between_clients(rig: Rig, request: pytest.FixtureRequest) -> None:
    """What every change of the platform stands on (dmp_kit.outbox.change_document): a write
    guarded by the version it read lands only if no other landed since. Two clients of their
    own, as two replicas are, append 100 items each to one record that way."""
    expect_ferretdb_cas(rig, request)
    database = f"cas_{secrets.token_hex(4)}"
    url = rig.stack.infra.mongo.url
    with MongoClient(url) as client:
        client[database]["records"].insert_one({"_id": "one", "items": [], "version": 1})

    def append(tag: str) -> None:
        with MongoClient(url) as client:
            records = client[database]["records"]
            for i in range(100):
                while True:
                    current = records.find_one({"_id": "one"})
                    assert current is not None
                    written = records.update_one(
                        {"_id": "one", "version": current["version"]},
                        {
                            "$set": {
                                "items": [*current["items"], f"{tag}{i}"],
                                "version": current["version"] + 1,
                            }
                        },
                    )
                    if written.modified_count == 1:
                        break

    threads = [threading.Thread(target=append, args=(tag,)) for tag in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    with MongoClient(url) as client:
        record = client[database]["records"].find_one({"_id": "one"})
        client.drop_database(database)
    assert record is not None
    rig.results["compare-and-set between two clients"] = {
        "acknowledged": 200,
        "kept": len(record["items"]),
        "lost": 200 - len(record["items"]),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"cycles": CYCLES, "faults": rig.results}, indent=2))
    assert len(record["items"]) == len(set(record["items"])) == 200, len(record["items"])

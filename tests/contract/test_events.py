"""The event contracts (proto/dmp/events/v1), both sides.

Producer side: a story through the gateway makes the services emit each kind of event about
one patient; every message read back from JetStream decodes as an Envelope, carries the
envelope fields (a UUIDv7 id that is also its Nats-Msg-Id, the type that is its subject, the
time, the actor, the patient, the trace, the source) and the payload its type promises.

Consumer side: each consumer reads, for each subject it takes, the payload field this table
says, and the recorded example of that type (tests/contract/events/, written from real
messages with DMP_RECORD_EVENTS=1) has that field, with the same fields the producer sends
today: a producer that drops a field, or a consumer that reads another, fails here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict, ParseDict

from dmp.events.v1 import envelope_pb2
from dmp_kit.identifiers import ins_control_key
from dmp_stack.testing import RunningStack, collect_events, until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = Path(__file__).parent / "events"
RECORD = os.environ.get("DMP_RECORD_EVENTS") == "1"

# The payload each event type carries.
PAYLOAD = {
    "identity.login": "login_attempted",
    "identity.representation.ending": "representation_ending",
    "identity.representation.ended": "representation_ended",
    "dossier.opened": "dossier_opened",
    "dossier.closed": "dossier_closed",
    "dossier.reopened": "dossier_reopened",
    "dossier.deletion_requested": "deletion_requested",
    "dossier.record_updated": "record_updated",
    "dossier.purged": "dossier_purged",
    "document.added": "document_added",
    "document.replaced": "document_replaced",
    "document.visibility_changed": "document_visibility_changed",
    "document.status_changed": "document_status_changed",
    "document.reminder_due": "reminder_due",
    "access.first": "access_first",
    "consent.changed": "consent_changed",
    "consent.break_glass": "emergency_access_granted",
    "consent.regulator_access": "emergency_access_granted",
    "audit": "audit_record",  # audit.<action>
}
# Who publishes each family (Envelope.source).
SOURCE = {
    "identity": "identity",
    "dossier": "dossier",
    "document": "dossier",
    "access": "dossier",
    "consent": "consent",
}
ENDED = "identity.representation.ended"
# What each consumer takes, and which payload field its code reads.
CONSUMERS = {
    "notify": (
        "services/notify/dmp_notify",
        {
            "document.added": "document_added",
            "access.first": "access_first",
            "consent.break_glass": "emergency_access_granted",
            "identity.login": "login_attempted",
            "identity.representation.ending": "representation_ending",
            "identity.representation.ended": "representation_ended",
        },
    ),
    "audit": (
        "services/audit/dmp_audit",
        {
            "audit": "audit_record",
            "consent.changed": "consent_changed",
            "identity.representation.ended": "representation_ended",
        },
    ),
    "consent": ("services/consent/dmp_consent", {ENDED: "representation_ended"}),
    "dossier": ("services/dossier/dmp_dossier", {ENDED: "representation_ended"}),
    "agenda": (
        "services/agenda/dmp_agenda",
        {
            "dossier.opened": "dossier_opened",
            "dossier.closed": "dossier_closed",
            "dossier.reopened": "dossier_reopened",
            "document.added": "document_added",
        },
    ),
}
# The story below makes these; the others (reminders, purges…) come from the scheduled rules.
STORY = (
    "identity.login",
    "dossier.opened",
    "consent.changed",
    "document.added",
    "document.visibility_changed",
    "dossier.record_updated",
    "consent.break_glass",
    "access.first",
    "dossier.closed",
    "dossier.reopened",
    "audit",
)
STREAMS = {"IDENTITY": "identity.>", "DOSSIER": ">", "CONSENT": "consent.>", "AUDIT": "audit.>"}


def family(event_type: str) -> str:
    return "audit" if event_type.startswith("audit.") else event_type


def story(stack: RunningStack) -> str:
    """One patient's DMP, lived through the gateway; returns the INS."""
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    gp = stack.create_professional(admin)
    er = stack.create_professional(admin)
    ins = patient["ins"]
    me = stack.login("patient", ins, patient["password"], patient["email"])["access_token"]
    tokens = {
        who: stack.login("professional", p["rpps"], p["password"], p["email"])["access_token"]
        for who, p in (("gp", gp), ("er", er))
    }
    document = {
        "type_code": "11488-4",
        "title": "Compte rendu",
        "mime_type": "text/plain",
        "content_base64": base64.b64encode(b"texte").decode(),
    }
    with stack.client(me) as c:
        body = {"ins": ins, "vitale_serial": patient["vitale_serial"], "patient_consent": True}
        assert c.post("/v1/dossiers", json=body).status_code == 201
        # consent hears of the DMP from dossier.opened: a moment later it knows it
        assert until(
            lambda: c.put(
                f"/v1/dossiers/{ins}/attending-physician", json={"rpps": gp["rpps"]}
            ).status_code
            == 200
        )
    with stack.client(tokens["gp"]) as c:
        r = c.post(f"/v1/dossiers/{ins}/documents", json=document)
        assert r.status_code == 201, r.text
        doc = r.json()["id"]
        assert c.get(f"/v1/dossiers/{ins}/documents").status_code == 200  # a first access
    with stack.client(me) as c:
        assert (
            c.patch(
                f"/v1/dossiers/{ins}/documents/{doc}", json={"masked_from_professionals": True}
            ).status_code
            == 200
        )
        assert (
            c.put(f"/v1/dossiers/{ins}/advance-directives", json={"text": "Aucune."}).status_code
            == 200
        )
    with stack.client(tokens["er"]) as c:
        r = c.post(
            f"/v1/dossiers/{ins}/emergency-access",
            json={"reason": "Patient inconscient aux urgences", "mode": "break_glass"},
        )
        assert r.status_code == 201, r.text
        assert c.get(f"/v1/dossiers/{ins}/documents").status_code == 200
    with stack.client(me) as c:
        assert c.post(f"/v1/dossiers/{ins}/close").status_code == 200
        assert c.post(f"/v1/dossiers/{ins}/reopen").status_code == 200
    return str(ins)


@pytest.fixture(scope="module")
def produced(stack: RunningStack) -> list[tuple[str, envelope_pb2.Envelope]]:
    ins = story(stack)

    def mine(events: list[envelope_pb2.Envelope]) -> list[envelope_pb2.Envelope]:
        return [e for e in events if e.patient_ins == ins]

    async def read() -> list[tuple[str, envelope_pb2.Envelope]]:
        found: list[tuple[str, envelope_pb2.Envelope]] = []
        for stream, subject in STREAMS.items():
            wanted = {t for t in STORY if _stream_of(t) == stream}

            def enough(events: list[envelope_pb2.Envelope], wanted: set[str] = wanted) -> bool:
                return wanted <= {family(e.type) for e in mine(events)}

            seen: list[envelope_pb2.Envelope] = []

            def enough_and_kept(
                events: list[envelope_pb2.Envelope],
                enough: Any = enough,
                seen: list[envelope_pb2.Envelope] = seen,
            ) -> bool:
                seen[:] = events
                return bool(enough(events))

            with contextlib.suppress(TimeoutError):  # what was seen is judged below
                await collect_events(
                    stack.infra.nats.url, stream, subject, enough_and_kept, wait=60
                )
            found += [(stream, e) for e in mine(seen)]
        return found

    return asyncio.run(read())


def _stream_of(event_type: str) -> str:
    prefix = event_type.split(".")[0]
    return {"identity": "IDENTITY", "consent": "CONSENT", "audit": "AUDIT"}.get(prefix, "DOSSIER")


def test_the_story_produces_every_kind_it_should(
    produced: list[tuple[str, envelope_pb2.Envelope]],
) -> None:
    assert set(STORY) <= {family(e.type) for _, e in produced}


def test_every_message_keeps_the_envelope_contract(
    produced: list[tuple[str, envelope_pb2.Envelope]],
) -> None:
    for _, event in produced:
        kind = family(event.type)
        assert kind in PAYLOAD, f"an event type no contract names: {event.type}"
        assert uuid.UUID(event.id).version == 7, event.type
        assert event.occurred_at.seconds > 0
        assert event.actor.kind in {"patient", "professional", "admin", "system", "service"}, event
        assert event.actor.id
        assert re.fullmatch(r"[12]\d{14}", event.patient_ins)
        assert ins_control_key(event.patient_ins[:13]) == int(event.patient_ins[13:])
        assert event.trace.trace_id or event.trace.request_id, event.type
        assert event.WhichOneof("payload") == PAYLOAD[kind], event.type
        prefix = event.type.split(".")[0]
        if prefix in SOURCE:
            assert event.source == SOURCE[prefix], event.type
        assert event.source, event.type


def example_path(kind: str) -> Path:
    return EXAMPLES / f"{kind}.json"


def fields(message: dict[str, Any]) -> set[str]:
    """The field paths of a message as JSON (values left out)."""
    out = set()
    for key, value in message.items():
        out.add(key)
        if isinstance(value, dict):
            out |= {f"{key}.{sub}" for sub in fields(value)}
    return out


def test_producers_still_send_what_the_recorded_examples_hold(
    produced: list[tuple[str, envelope_pb2.Envelope]],
) -> None:
    latest: dict[str, envelope_pb2.Envelope] = {}
    for _, event in produced:
        latest.setdefault(family(event.type), event)
    if RECORD:
        EXAMPLES.mkdir(exist_ok=True)
        for kind, event in latest.items():
            example_path(kind).write_text(
                json.dumps(MessageToDict(event), indent=2, sort_keys=True) + "\n"
            )
    for kind, event in latest.items():
        path = example_path(kind)
        assert path.exists(), f"no recorded example for {kind}: run with DMP_RECORD_EVENTS=1"
        recorded = json.loads(path.read_text())
        # Every field the example has, today's message has too (new fields may be added).
        assert fields(recorded) <= fields(MessageToDict(event)), kind


@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
def test_each_consumer_reads_what_the_examples_carry(consumer: str) -> None:
    package, takes = CONSUMERS[consumer]
    code = "\n".join(p.read_text() for p in (ROOT / package).rglob("*.py"))
    for kind, field in takes.items():
        example = ParseDict(json.loads(example_path(kind).read_text()), envelope_pb2.Envelope())
        # The recorded message decodes, and carries the payload this consumer reads…
        assert example.WhichOneof("payload") == field, (consumer, kind)
        assert example.HasField(field)
        # …which is the one its code reads.
        assert f"event.{field}" in code or f'"{field}"' in code, (consumer, kind, field)

"""The consent service on real servers: every RPC, its bad inputs, its events (exactly once)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from pymongo import AsyncMongoClient

from dmp.consent.v1 import consent_pb2 as pb
from dmp.consent.v1 import consent_pb2_grpc
from dmp.dossier.v1 import dossier_pb2, dossier_pb2_grpc
from dmp.events.v1 import dossier_pb2 as events_pb2
from dmp.identity.v1 import identity_pb2_grpc
from dmp_kit.bus import EventBus
from dmp_kit.clock import ManualClock
from dmp_kit.events import new_event
from dmp_kit.rpc.status import error_from_rpc
from dmp_kit.service_auth import ServiceTokens, identity_exchange
from dmp_stack.testing import RunningStack, collect_events, make_ins

pytestmark = pytest.mark.asyncio(loop_scope="session")


class World:
    """A patient with a dossier, and professionals, as dossier and identity see them."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        admin = stack.admin_token()
        self.patient = stack.create_patient(admin)
        self.ins = self.patient["ins"]
        self.patient_token = self.login(self.patient, "patient", "ins")
        self.other_patient_token = self.login(stack.create_patient(admin), "patient", "ins")
        self.gp = stack.create_professional(admin, "10")
        self.pharmacist = stack.create_professional(admin, "21")
        self.nurse = stack.create_professional(admin, "60")
        self.stranger = stack.create_professional(admin, "10")
        self.unwanted_doctor = stack.create_professional(admin, "10")
        self.tokens = {
            name: self.login(getattr(self, name), "professional", "rpps")
            for name in ("gp", "pharmacist", "nurse", "stranger")
        }

    def login(self, who: dict[str, Any], kind: str, key: str) -> str:
        return str(self.stack.login(kind, who[key], who["password"], who["email"])["access_token"])


@pytest.fixture(scope="module")
def world(stack: RunningStack) -> World:
    return World(stack)


async def opened(stack: RunningStack, world: World, consent: Any) -> World:
    """The world's dossier opened, as consent hears of it (its `dossier.opened` event)."""
    await publish_dossier_event(stack, "dossier.opened", world.ins, datetime.now(UTC))
    await until_ok(
        lambda: consent.GetSettings(pb.GetSettingsRequest(ins=world.ins), **md(world.patient_token))
    )
    return world


@pytest.fixture
async def chosen_world(stack: RunningStack, consent: Any) -> World:
    """A world of the test's own, its patient's choices made as test_the_patients_choices makes
    them (the same steps, the same checks): a test that reads their history reads its own."""
    world = World(stack)
    await patients_choices(stack, world, consent)
    return world


@pytest.fixture
async def own_world(stack: RunningStack, consent: Any) -> World:
    """A world of the test's own, its dossier open, for a test that closes it: the module's
    stays open for the tests after it, in whatever order they run."""
    return await opened(stack, World(stack), consent)


@pytest.fixture(scope="module")
async def consent(stack: RunningStack) -> AsyncIterator[consent_pb2_grpc.ConsentServiceStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{stack.stack.ports.grpc['consent']}")
    yield consent_pb2_grpc.ConsentServiceStub(channel)
    await channel.close()


def md(token: str) -> dict[str, Any]:
    return {"metadata": (("authorization", f"Bearer {token}"),), "timeout": 10}


async def publish_dossier_event(
    stack: RunningStack, event_type: str, ins: str, at: datetime, **opened: Any
) -> None:
    bus = EventBus(stack.infra.nats.url, "test-dossier")
    await bus.connect()
    payload = (
        events_pb2.DossierOpened(**opened)
        if event_type == "dossier.opened"
        else events_pb2.DossierClosed()
        if event_type == "dossier.closed"
        else events_pb2.DossierReopened()
    )
    await bus.publish_event(
        new_event(event_type, payload, source="dossier", clock=ManualClock(at), patient_ins=ins)
    )
    await bus.close()


async def until_ok(call: Any, attempts: int = 50) -> Any:
    """Consent learns of the dossier from its event, a moment later."""
    for _ in range(attempts):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            await asyncio.sleep(0.1)
    return await call()


async def expect(
    code: grpc.StatusCode, call: Any, field: str | None = None, slug: str | None = None
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    assert exc.value.code() == code, exc.value.details()
    err = error_from_rpc(exc.value)
    if field is not None:
        assert err.field == field
    if slug is not None:
        assert err.problem == slug


async def test_unknown_dossier_is_not_found(world: World, consent: Any) -> None:
    await expect(
        grpc.StatusCode.NOT_FOUND,
        consent.GetSettings(pb.GetSettingsRequest(ins=make_ins()), **md(world.patient_token)),
        slug="dossier-not-found",
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        consent.GetSettings(pb.GetSettingsRequest(ins="123"), **md(world.patient_token)),
        field="ins",
    )
    await expect(
        grpc.StatusCode.UNAUTHENTICATED,
        consent.GetSettings(pb.GetSettingsRequest(ins=world.ins), timeout=5),
    )


async def test_the_patients_choices(stack: RunningStack, world: World, consent: Any) -> None:
    await patients_choices(stack, world, consent)


async def patients_choices(stack: RunningStack, world: World, consent: Any) -> None:
    await publish_dossier_event(stack, "dossier.opened", world.ins, datetime.now(UTC))
    got = await until_ok(
        lambda: consent.GetSettings(pb.GetSettingsRequest(ins=world.ins), **md(world.patient_token))
    )
    assert got.settings.allow_emergency_access and got.settings.allow_regulator_access
    p = world.patient_token
    for token in (world.other_patient_token, world.tokens["gp"]):
        await expect(
            grpc.StatusCode.PERMISSION_DENIED,
            consent.PutSettings(
                pb.PutSettingsRequest(ins=world.ins, settings=pb.Settings()), **md(token)
            ),
        )

    await consent.SetAttendingPhysician(
        pb.SetAttendingPhysicianRequest(ins=world.ins, rpps=world.gp["rpps"]), **md(p)
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        consent.SetAttendingPhysician(
            pb.SetAttendingPhysicianRequest(ins=world.ins, rpps=world.pharmacist["rpps"]), **md(p)
        ),
        field="rpps",
        slug="not-a-doctor",
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        consent.SetAttendingPhysician(
            pb.SetAttendingPhysicianRequest(ins=world.ins, rpps="10000000009"[:-1] + "0"), **md(p)
        ),
        field="rpps",
    )
    await consent.SetProfessionalStatus(
        pb.SetProfessionalStatusRequest(
            ins=world.ins, rpps=world.pharmacist["rpps"], status=pb.PROFESSIONAL_STATUS_AUTHORIZED
        ),
        **md(p),
    )
    await consent.SetProfessionalStatus(
        pb.SetProfessionalStatusRequest(
            ins=world.ins, rpps=world.nurse["rpps"], status=pb.PROFESSIONAL_STATUS_BLOCKED
        ),
        **md(p),
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        consent.SetProfessionalStatus(
            pb.SetProfessionalStatusRequest(ins=world.ins, rpps=world.nurse["rpps"]), **md(p)
        ),
        field="status",
    )
    team = await consent.ListProfessionals(pb.ListProfessionalsRequest(ins=world.ins), **md(p))
    assert [m.rpps for m in team.authorized] == [world.gp["rpps"], world.pharmacist["rpps"]]
    assert team.authorized[0].attending_physician
    assert [m.rpps for m in team.blocked] == [world.nurse["rpps"]]
    unwanted = world.unwanted_doctor["rpps"]
    await consent.SetProfessionalStatus(
        pb.SetProfessionalStatusRequest(
            ins=world.ins, rpps=unwanted, status=pb.PROFESSIONAL_STATUS_BLOCKED
        ),
        **md(p),
    )
    await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        consent.SetAttendingPhysician(
            pb.SetAttendingPhysicianRequest(ins=world.ins, rpps=unwanted), **md(p)
        ),
    )
    await consent.RemoveProfessional(
        pb.RemoveProfessionalRequest(ins=world.ins, rpps=unwanted), **md(p)
    )
    await expect(
        grpc.StatusCode.NOT_FOUND,
        consent.RemoveProfessional(
            pb.RemoveProfessionalRequest(ins=world.ins, rpps=world.stranger["rpps"]), **md(p)
        ),
        field="rpps",
    )

    # Decisions, as the dossier service will ask for them.
    ctx = pb.DossierContext(status="open")
    docs = [
        pb.DocumentRef(id="bio", type_code="11502-2", author=world.gp["rpps"]),
        pb.DocumentRef(id="img", type_code="18748-4", author=world.gp["rpps"]),
        pb.DocumentRef(
            id="masked", type_code="11502-2", author=world.gp["rpps"], labels=["MASQUE_PS"]
        ),
    ]
    seen = {}
    for name in ("gp", "pharmacist", "nurse", "stranger"):
        r = await consent.FilterDocuments(
            pb.FilterDocumentsRequest(ins=world.ins, dossier=ctx, documents=docs),
            **md(world.tokens[name]),
        )
        seen[name] = list(r.visible_ids)
    assert seen == {
        "gp": ["bio", "img", "masked"],
        "pharmacist": ["bio"],
        "nurse": [],
        "stranger": [],
    }
    d = await consent.Decide(
        pb.DecideRequest(ins=world.ins, action=pb.ACTION_READ, dossier=ctx),
        **md(world.tokens["nurse"]),
    )
    assert (d.allowed, d.reason) == (False, "blocked")
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        consent.Decide(
            pb.DecideRequest(
                ins=world.ins,
                action=pb.ACTION_READ,
                dossier=ctx,
                document=pb.DocumentRef(id="x", type_code="NOPE"),
            ),
            **md(world.tokens["gp"]),
        ),
        field="document.type_code",
        slug="unknown-type-code",
    )


async def test_emergency_access(stack: RunningStack, chosen_world: World, consent: Any) -> None:
    world = chosen_world
    s = world.tokens["stranger"]
    req = pb.RequestEmergencyAccessRequest(
        ins=world.ins, reason="Inconscient aux urgences, AVP", mode=pb.ACCESS_MODE_BREAK_GLASS
    )
    await until_ok(
        lambda: consent.GetSettings(pb.GetSettingsRequest(ins=world.ins), **md(world.patient_token))
    )
    await expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        consent.RequestEmergencyAccess(
            pb.RequestEmergencyAccessRequest(
                ins=world.ins, reason="urgent", mode=pb.ACCESS_MODE_BREAK_GLASS
            ),
            **md(s),
        ),
        field="reason",
    )
    await expect(
        grpc.StatusCode.PERMISSION_DENIED,
        consent.RequestEmergencyAccess(
            pb.RequestEmergencyAccessRequest(
                ins=world.ins, reason=req.reason, mode=pb.ACCESS_MODE_REGULATOR
            ),
            **md(s),
        ),
    )
    await expect(
        grpc.StatusCode.PERMISSION_DENIED,
        consent.RequestEmergencyAccess(req, **md(world.tokens["nurse"])),
    )
    await expect(
        grpc.StatusCode.PERMISSION_DENIED,
        consent.RequestEmergencyAccess(req, **md(world.patient_token)),
    )
    await consent.PutSettings(
        pb.PutSettingsRequest(
            ins=world.ins,
            settings=pb.Settings(allow_emergency_access=False, allow_regulator_access=True),
        ),
        **md(world.patient_token),
    )
    await expect(
        grpc.StatusCode.PERMISSION_DENIED,
        consent.RequestEmergencyAccess(req, **md(s)),
        slug="emergency-access-refused",
    )
    await consent.PutSettings(
        pb.PutSettingsRequest(
            ins=world.ins,
            settings=pb.Settings(allow_emergency_access=True, allow_regulator_access=True),
        ),
        **md(world.patient_token),
    )
    grant = (await consent.RequestEmergencyAccess(req, **md(s))).grant
    lasts = grant.expires_at.ToDatetime() - grant.granted_at.ToDatetime()
    assert lasts == timedelta(hours=24) and grant.mode == pb.ACCESS_MODE_BREAK_GLASS
    r = await consent.FilterDocuments(
        pb.FilterDocumentsRequest(
            ins=world.ins,
            dossier=pb.DossierContext(status="open"),
            documents=[
                pb.DocumentRef(id="bio", type_code="11502-2", author=world.gp["rpps"]),
                pb.DocumentRef(
                    id="masked", type_code="11502-2", author=world.gp["rpps"], labels=["MASQUE_PS"]
                ),
            ],
        ),
        **md(s),
    )
    assert (list(r.visible_ids), r.mode) == (["bio"], pb.ACCESS_MODE_BREAK_GLASS)

    events = await collect_events(
        stack.infra.nats.url,
        "CONSENT",
        "consent.>",
        lambda seen: any(
            e.type == "consent.break_glass" and e.patient_ins == world.ins for e in seen
        ),
    )
    mine = [e for e in events if e.patient_ins == world.ins]
    assert len({e.id for e in mine}) == len(mine), "each change emitted once"
    glass = [e for e in mine if e.type == "consent.break_glass"]
    assert len(glass) == 1
    assert glass[0].emergency_access_granted.attending_physician_rpps == world.gp["rpps"]
    assert glass[0].emergency_access_granted.reason == req.reason
    changes = [e.consent_changed.change for e in mine if e.type == "consent.changed"]
    assert changes == [
        "attending_physician",
        "authorized",
        "blocked",
        "blocked",
        "removed",
        "settings",
        "settings",
    ]
    audit = await collect_events(
        stack.infra.nats.url,
        "AUDIT",
        "audit.consent",
        lambda seen: sum(e.patient_ins == world.ins for e in seen) >= 8,
    )
    traced = [
        (e.audit_record.action, e.audit_record.mode) for e in audit if e.patient_ins == world.ins
    ]
    assert traced == [("update", "normal")] * 7 + [("execute", "break_glass")]


async def test_closed_dossier_and_out_of_order_events(
    stack: RunningStack, own_world: World, consent: Any
) -> None:
    world = own_world
    ins = world.ins
    later = datetime.now(UTC) + timedelta(seconds=5)
    await publish_dossier_event(stack, "dossier.closed", ins, later)
    await publish_dossier_event(stack, "dossier.reopened", ins, later - timedelta(seconds=1))
    req = pb.RequestEmergencyAccessRequest(
        ins=ins, reason="Inconscient aux urgences, AVP", mode=pb.ACCESS_MODE_BREAK_GLASS
    )
    for _ in range(50):
        try:
            await consent.RequestEmergencyAccess(req, **md(world.tokens["gp"]))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the older "reopened" event must not win over "closed"
    await expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        consent.RequestEmergencyAccess(req, **md(world.tokens["gp"])),
        slug="dossier-closed",
    )
    # The patient can still see their choices (to reopen).
    assert (
        await consent.GetSettings(pb.GetSettingsRequest(ins=ins), **md(world.patient_token))
    ).settings


async def test_matrix_is_served_with_its_provenance(world: World, consent: Any) -> None:
    m = await consent.GetHabilitationMatrix(
        pb.GetHabilitationMatrixRequest(), **md(world.tokens["nurse"])
    )
    rules = {r.profession: list(r.readable_type_codes) for r in m.rules}
    assert rules["10"] == ["*"] and "REMB" in rules["21"]
    assert "Provenance" in m.provenance


async def test_a_dossier_not_yet_heard_of_is_asked_of_dossier(
    stack: RunningStack, consent: Any
) -> None:
    """Read-your-writes: a patient names their GP the moment after opening, whether or not
    consent has consumed `dossier.opened` yet."""
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    gp = stack.create_professional(admin, "10")
    token = stack.login("patient", patient["ins"], patient["password"], patient["email"])
    access = str(token["access_token"])
    stack.open_dossier(access, patient)
    records = AsyncMongoClient[dict[str, Any]](stack.infra.mongo.url)["consent"]["consents"]
    # Once the event is consumed, its record is removed: consent is back to not knowing, and
    # the event will not come again. Only asking dossier can answer now.
    for _ in range(100):
        if await records.find_one({"_id": patient["ins"], "status_at": {"$ne": None}}):
            break
        await asyncio.sleep(0.1)
    assert (await records.delete_one({"_id": patient["ins"]})).deleted_count == 1
    named = await consent.SetAttendingPhysician(
        pb.SetAttendingPhysicianRequest(ins=patient["ins"], rpps=gp["rpps"]), **md(access)
    )
    assert named.member.rpps == gp["rpps"]
    record = await records.find_one({"_id": patient["ins"]})
    assert record is not None and record["dossier_status"] == "open"
    assert record["attending_physician"]["rpps"] == gp["rpps"]
    # A later lifecycle event still applies over the adopted status.
    await publish_dossier_event(stack, "dossier.closed", patient["ins"], datetime.now(UTC))
    for _ in range(100):
        record = await records.find_one({"_id": patient["ins"]})
        if record is not None and record["dossier_status"] == "closed":
            break
        await asyncio.sleep(0.1)
    assert record is not None and record["dossier_status"] == "closed"


async def test_dossier_state_is_for_consent_alone(stack: RunningStack, world: World) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{stack.stack.ports.grpc['dossier']}")
    identity = grpc.aio.insecure_channel(f"127.0.0.1:{stack.stack.ports.grpc['identity']}")
    dossier = dossier_pb2_grpc.DossierServiceStub(channel)
    keys = {k: base64.b64decode(v) for k, v in stack.stack.credentials.service_account_keys.items()}
    exchange = identity_exchange(identity_pb2_grpc.IdentityServiceStub(identity), 5)
    issuer = "https://dmp.localhost/identity"
    try:
        consent_token = await ServiceTokens("consent", keys["consent"], issuer, exchange).token()
        notify_token = await ServiceTokens("notify", keys["notify"], issuer, exchange).token()
        ask = dossier_pb2.GetDossierStateRequest
        await expect(grpc.StatusCode.UNAUTHENTICATED, dossier.GetDossierState(ask(ins=world.ins)))
        for token in (world.patient_token, world.tokens["gp"], stack.admin_token(), notify_token):
            await expect(
                grpc.StatusCode.PERMISSION_DENIED,
                dossier.GetDossierState(ask(ins=world.ins), **md(token)),
            )
        await expect(
            grpc.StatusCode.INVALID_ARGUMENT,
            dossier.GetDossierState(ask(ins="123"), **md(consent_token)),
            field="ins",
        )
        await expect(
            grpc.StatusCode.NOT_FOUND,
            dossier.GetDossierState(ask(ins=make_ins()), **md(consent_token)),
            slug="dossier-not-found",
        )
    finally:
        await channel.close()
        await identity.close()

"""consent's gRPC contract, the service alone: it learns of one dossier from a real
`dossier.opened` event on its NATS; dossier and identity are away, so whatever needs them is
UNAVAILABLE — every change of a consent state among them, marked in dossier's record first."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from grpc import StatusCode as S

from dmp.consent.v1 import consent_pb2 as pb
from dmp.consent.v1 import consent_pb2_grpc
from dmp.events.v1 import dossier_pb2 as events_pb2
from dmp_kit.bus import EventBus
from dmp_kit.clock import ManualClock
from dmp_kit.events import new_event
from dmp_stack.contract import (
    DOCTOR_RPPS,
    OTHER_INS,
    PATIENT_INS,
    PHARMACIST_RPPS,
    TESTS,
    Alone,
    Case,
)

# The four tests every service has (dmp_stack.contract), run on this module's tables.
globals().update(TESTS)

SERVICE = "consent"
DESCRIPTOR = pb.DESCRIPTOR.services_by_name["ConsentService"]
STUB = consent_pb2_grpc.ConsentServiceStub
PUBLIC: set[str] = set()


@pytest.fixture(scope="module", autouse=True)
def opened(alone_service: Alone) -> None:
    """The patient's dossier, as consent learns of one: its `dossier.opened` event."""

    async def publish() -> None:
        bus = EventBus(alone_service.nats_url, "contract-dossier")
        await bus.connect()
        await bus.ensure_streams()
        event = new_event(
            "dossier.opened",
            events_pb2.DossierOpened(opened_by=PATIENT_INS, opener_kind="patient"),
            source="dossier",
            clock=ManualClock(datetime.now(UTC)),
            patient_ins=PATIENT_INS,
        )
        await bus.publish_event(event)
        await bus.close()

    asyncio.run(publish())
    stub = STUB(alone_service.channel)
    token = (("authorization", f"Bearer {alone_service.token('patient')}"),)
    deadline = time.monotonic() + 30
    while True:
        try:
            stub.GetSettings(pb.GetSettingsRequest(ins=PATIENT_INS), metadata=token, timeout=5)
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "consent never learnt of the dossier"
            time.sleep(0.2)


def open_context() -> pb.DossierContext:
    return pb.DossierContext(status="open")


def allowed(answer: Any) -> None:
    assert answer.allowed and answer.mode == pb.ACCESS_MODE_NORMAL


def may_write(answer: Any) -> None:
    assert answer.allowed and answer.reason in ("professional", "patient")


def reusable(held: bool) -> Any:
    """Consent says how long its answer holds only when the request carried an epoch."""

    def check(answer: Any) -> None:
        assert answer.HasField("reusable_for") == held
        if held:
            assert 0 < answer.reusable_for.ToTimedelta().total_seconds() <= 60

    return check


def refused(reason: str) -> Any:
    def check(answer: Any) -> None:
        assert not answer.allowed and answer.reason == reason

    return check


def only(*ids: str) -> Any:
    def check(answer: Any) -> None:
        assert list(answer.visible_ids) == list(ids)

    return check


def previewed(profession: str, verdicts: list[tuple[str, str]], withheld: tuple[int, int]) -> Any:
    """The viewer named, each document the caller reads with its reason (and an explanation),
    the others only counted (visible to the viewer, hidden from them)."""

    def check(answer: Any) -> None:
        assert answer.viewer.profession == profession and answer.viewer.profession_label
        assert not answer.viewer.rpps and answer.viewer.relation == pb.VIEWER_RELATION_NONE
        assert not answer.viewer.access.allowed and answer.viewer.access.explanation
        got = [(v.document_id, v.verdict.reason) for v in answer.verdicts]
        assert got == verdicts and all(v.verdict.explanation for v in answer.verdicts)
        assert (answer.withheld_visible, answer.withheld_hidden) == withheld

    return check


def default_settings(answer: Any) -> None:
    assert answer.settings.allow_emergency_access and answer.settings.allow_regulator_access


def the_matrix(answer: Any) -> None:
    rules = {r.profession: set(r.readable_type_codes) for r in answer.rules}
    assert rules["10"] == {"*"} and "11488-4" not in rules["21"] and answer.provenance
    sections = [s.name for s in answer.sections]
    assert len(sections) == 9 and sections[0] == "synthese"
    assert {t.code for t in answer.types} >= {"11488-4", "REMB", "DOC_PATIENT"}
    assert all(t.section in sections and t.label for t in answer.types)


REPORT = pb.DocumentRef(id="d1", type_code="11488-4", author=DOCTOR_RPPS)
HIDDEN = pb.DocumentRef(
    id="d2", type_code="11488-4", author=DOCTOR_RPPS, labels=["INVISIBLE_PATIENT"]
)
STRANGE = pb.DocumentRef(id="d3", type_code="NOPE")
FOR_THE_MINOR = pb.DocumentRef(
    id="d4", type_code="87273-9", author=DOCTOR_RPPS, labels=["INVISIBLE_REPRESENTANTS_LEGAUX"]
)
EMERGENCY = pb.RequestEmergencyAccessRequest(
    ins=PATIENT_INS, reason="Patient inconscient aux urgences", mode=pb.ACCESS_MODE_BREAK_GLASS
)
# Every change of a consent state is marked in the dossier's record before it is written
# (docs/scaling.md): with dossier away, none is made, so the list stays empty.
BLOCKED = Case(
    "SetProfessionalStatus",
    "a pharmacist blocked, with dossier away to mark the change",
    pb.SetProfessionalStatusRequest(
        ins=PATIENT_INS, rpps=PHARMACIST_RPPS, status=pb.PROFESSIONAL_STATUS_BLOCKED
    ),
    "patient",
    S.UNAVAILABLE,
)
EMPTY = Case(
    "ListProfessionals",
    "the patient's, empty",
    pb.ListProfessionalsRequest(ins=PATIENT_INS),
    "patient",
    S.OK,
    check=lambda a: not a.authorized and not a.blocked,
    given=(BLOCKED,),
)

CASES = [
    # the hot path: a refusal is an answer, not an error
    Case(
        "Decide",
        "the patient reads their open dossier",
        pb.DecideRequest(ins=PATIENT_INS, action=pb.ACTION_READ, dossier=open_context()),
        "patient",
        S.OK,
        check=allowed,
    ),
    Case(
        "Decide",
        "a doctor outside the care team",
        pb.DecideRequest(ins=PATIENT_INS, action=pb.ACTION_READ, dossier=open_context()),
        "doctor",
        S.OK,
        check=refused("not_in_care_team"),
    ),
    Case(
        "Decide",
        "under a consent epoch: reusable for a minute at most",
        pb.DecideRequest(
            ins=PATIENT_INS,
            action=pb.ACTION_READ,
            dossier=pb.DossierContext(status="open", consent_epoch="e1"),
        ),
        "doctor",
        S.OK,
        check=reusable(True),
    ),
    Case(
        "Decide",
        "without an epoch (a consent change under way): not reusable",
        pb.DecideRequest(ins=PATIENT_INS, action=pb.ACTION_READ, dossier=open_context()),
        "patient",
        S.OK,
        check=reusable(False),
    ),
    Case(
        "Decide",
        "a malformed INS",
        pb.DecideRequest(ins="1", action=pb.ACTION_READ),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "Decide",
        "no action",
        pb.DecideRequest(ins=PATIENT_INS),
        "patient",
        S.INVALID_ARGUMENT,
        field="action",
    ),
    Case(
        "Decide",
        "a dossier status that does not exist",
        pb.DecideRequest(
            ins=PATIENT_INS, action=pb.ACTION_READ, dossier=pb.DossierContext(status="half-open")
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="dossier.status",
    ),
    Case(
        "FilterDocuments",
        "what the patient sees: not what awaits its announcement",
        pb.FilterDocumentsRequest(
            ins=PATIENT_INS, dossier=open_context(), documents=[REPORT, HIDDEN]
        ),
        "patient",
        S.OK,
        check=only("d1"),
    ),
    Case(
        "FilterDocuments",
        "a document type outside the catalogue",
        pb.FilterDocumentsRequest(ins=PATIENT_INS, dossier=open_context(), documents=[STRANGE]),
        "patient",
        S.INVALID_ARGUMENT,
        field="document.type_code",
    ),
    Case(
        "FilterDocuments",
        "a malformed INS",
        pb.FilterDocumentsRequest(ins="x"),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    # the patient's preview of someone's view
    Case(
        "PreviewDocuments",
        "a doctor, any: no authorisation; what awaits its announcement only counted",
        pb.PreviewDocumentsRequest(
            ins=PATIENT_INS,
            dossier=open_context(),
            viewer=pb.ViewerRef(profession="médecin"),
            documents=[REPORT, HIDDEN],
        ),
        "patient",
        S.OK,
        check=previewed("10", [("d1", "not_in_care_team")], withheld=(0, 1)),
    ),
    Case(
        "PreviewDocuments",
        "a minor's legal representative: as the patient, less what is hidden from them",
        pb.PreviewDocumentsRequest(
            ins=PATIENT_INS,
            dossier=pb.DossierContext(status="open", legal_representatives=[OTHER_INS]),
            viewer=pb.ViewerRef(profession="21"),
            documents=[REPORT, HIDDEN, FOR_THE_MINOR],
        ),
        "other patient",
        S.OK,
        check=previewed("21", [("d1", "not_in_care_team")], withheld=(0, 2)),
    ),
    Case(
        "PreviewDocuments",
        "a closed dossier: closed to every professional",
        pb.PreviewDocumentsRequest(
            ins=PATIENT_INS,
            dossier=pb.DossierContext(status="closed"),
            viewer=pb.ViewerRef(profession="infirmier"),
            documents=[REPORT],
        ),
        "patient",
        S.OK,
        check=previewed("60", [("d1", "dossier_closed")], withheld=(0, 0)),
    ),
    Case(
        "PreviewDocuments",
        "a professional by RPPS, with identity away to say who they are",
        pb.PreviewDocumentsRequest(
            ins=PATIENT_INS, dossier=open_context(), viewer=pb.ViewerRef(rpps=DOCTOR_RPPS)
        ),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "PreviewDocuments",
        "by a professional",
        pb.PreviewDocumentsRequest(
            ins=PATIENT_INS, dossier=open_context(), viewer=pb.ViewerRef(profession="10")
        ),
        "doctor",
        S.PERMISSION_DENIED,
    ),
    Case(
        "PreviewDocuments",
        "by another patient",
        pb.PreviewDocumentsRequest(
            ins=PATIENT_INS, dossier=open_context(), viewer=pb.ViewerRef(profession="10")
        ),
        "other patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "PreviewDocuments",
        "nobody named",
        pb.PreviewDocumentsRequest(ins=PATIENT_INS, dossier=open_context()),
        "patient",
        S.INVALID_ARGUMENT,
        field="viewer",
    ),
    Case(
        "PreviewDocuments",
        "a profession that does not exist",
        pb.PreviewDocumentsRequest(
            ins=PATIENT_INS, dossier=open_context(), viewer=pb.ViewerRef(profession="astronaute")
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="viewer.profession",
        problem="invalid-profession",
    ),
    Case(
        "PreviewDocuments",
        "an RPPS with a wrong check digit",
        pb.PreviewDocumentsRequest(
            ins=PATIENT_INS, dossier=open_context(), viewer=pb.ViewerRef(rpps="10000000000")
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="viewer.rpps",
    ),
    Case(
        "PreviewDocuments",
        "a document type outside the catalogue",
        pb.PreviewDocumentsRequest(
            ins=PATIENT_INS,
            dossier=open_context(),
            viewer=pb.ViewerRef(profession="10"),
            documents=[STRANGE],
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="document.type_code",
    ),
    Case(
        "PreviewDocuments",
        "a malformed INS",
        pb.PreviewDocumentsRequest(ins="x", viewer=pb.ViewerRef(profession="10")),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    # the patient's choices
    Case(
        "GetSettings",
        "the patient's",
        pb.GetSettingsRequest(ins=PATIENT_INS),
        "patient",
        S.OK,
        check=default_settings,
    ),
    Case(
        "GetSettings",
        "another patient",
        pb.GetSettingsRequest(ins=PATIENT_INS),
        "other patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "GetSettings",
        "a doctor",
        pb.GetSettingsRequest(ins=PATIENT_INS),
        "doctor",
        S.PERMISSION_DENIED,
    ),
    Case(
        "GetSettings",
        "a malformed INS",
        pb.GetSettingsRequest(ins="180"),
        "patient",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "GetSettings",
        "a dossier it has not heard of, with dossier away",
        pb.GetSettingsRequest(ins=OTHER_INS),
        "other patient",
        S.UNAVAILABLE,
    ),
    Case(
        "PutSettings",
        "the patient's, with dossier away to mark the change",
        pb.PutSettingsRequest(
            ins=PATIENT_INS,
            settings=pb.Settings(allow_emergency_access=False, allow_regulator_access=True),
        ),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "PutSettings",
        "without settings",
        pb.PutSettingsRequest(ins=PATIENT_INS),
        "patient",
        S.INVALID_ARGUMENT,
        field="settings",
    ),
    Case(
        "PutSettings",
        "a pharmacist",
        pb.PutSettingsRequest(ins=PATIENT_INS, settings=pb.Settings()),
        "pharmacist",
        S.PERMISSION_DENIED,
    ),
    EMPTY,
    Case(
        "ListProfessionals",
        "a doctor",
        pb.ListProfessionalsRequest(ins=PATIENT_INS),
        "doctor",
        S.PERMISSION_DENIED,
    ),
    BLOCKED,
    Case(
        "SetProfessionalStatus",
        "no status",
        pb.SetProfessionalStatusRequest(ins=PATIENT_INS, rpps=PHARMACIST_RPPS),
        "patient",
        S.INVALID_ARGUMENT,
        field="status",
    ),
    Case(
        "SetProfessionalStatus",
        "an RPPS with a wrong check digit",
        pb.SetProfessionalStatusRequest(
            ins=PATIENT_INS, rpps="10000000000", status=pb.PROFESSIONAL_STATUS_AUTHORIZED
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="rpps",
    ),
    Case(
        "SetProfessionalStatus",
        "the pharmacist unblocking themself",
        pb.SetProfessionalStatusRequest(
            ins=PATIENT_INS, rpps=PHARMACIST_RPPS, status=pb.PROFESSIONAL_STATUS_AUTHORIZED
        ),
        "pharmacist",
        S.PERMISSION_DENIED,
    ),
    Case(
        "RemoveProfessional",
        "someone never listed",
        pb.RemoveProfessionalRequest(ins=PATIENT_INS, rpps=DOCTOR_RPPS),
        "patient",
        S.NOT_FOUND,
        field="rpps",
    ),
    Case(
        "RemoveProfessional",
        "a malformed RPPS",
        pb.RemoveProfessionalRequest(ins=PATIENT_INS, rpps="12"),
        "patient",
        S.INVALID_ARGUMENT,
        field="rpps",
    ),
    Case(
        "SetAttendingPhysician",
        "a doctor, with identity away to say who they are",
        pb.SetAttendingPhysicianRequest(ins=PATIENT_INS, rpps=DOCTOR_RPPS),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "SetAttendingPhysician",
        "a malformed RPPS",
        pb.SetAttendingPhysicianRequest(ins=PATIENT_INS, rpps="1"),
        "patient",
        S.INVALID_ARGUMENT,
        field="rpps",
    ),
    Case(
        "SetAttendingPhysician",
        "by another patient",
        pb.SetAttendingPhysicianRequest(ins=PATIENT_INS, rpps=DOCTOR_RPPS),
        "other patient",
        S.PERMISSION_DENIED,
    ),
    # emergency access
    Case(
        "RequestEmergencyAccess",
        "break-glass by a doctor, with dossier away to mark the change",
        EMERGENCY,
        "emergency doctor",
        S.UNAVAILABLE,
    ),
    Case("RequestEmergencyAccess", "by the patient", EMERGENCY, "patient", S.PERMISSION_DENIED),
    Case(
        "RequestEmergencyAccess",
        "no mode",
        pb.RequestEmergencyAccessRequest(ins=PATIENT_INS, reason="Patient inconscient"),
        "doctor",
        S.INVALID_ARGUMENT,
        field="mode",
    ),
    Case(
        "RequestEmergencyAccess",
        "no written reason",
        pb.RequestEmergencyAccessRequest(
            ins=PATIENT_INS, reason="vite", mode=pb.ACCESS_MODE_BREAK_GLASS
        ),
        "doctor",
        S.INVALID_ARGUMENT,
        field="reason",
    ),
    Case(
        "RequestEmergencyAccess",
        "regulation without the SAMU role",
        pb.RequestEmergencyAccessRequest(
            ins=PATIENT_INS, reason="Appel au 15, douleur thoracique", mode=pb.ACCESS_MODE_REGULATOR
        ),
        "doctor",
        S.PERMISSION_DENIED,
    ),
    Case(
        "RequestEmergencyAccess",
        "a dossier it has not heard of, with dossier away",
        pb.RequestEmergencyAccessRequest(
            ins=OTHER_INS,
            reason="Patient inconscient aux urgences",
            mode=pb.ACCESS_MODE_BREAK_GLASS,
        ),
        "doctor",
        S.UNAVAILABLE,
    ),
    Case(
        "GetHabilitationMatrix",
        "any signed-in caller",
        pb.GetHabilitationMatrixRequest(),
        "pharmacist",
        S.OK,
        check=the_matrix,
    ),
    Case(
        "MayMessage",
        "a professional the patient has not blocked",
        pb.MayMessageRequest(ins=PATIENT_INS),
        "doctor",
        S.OK,
        check=may_write,
    ),
    Case(
        "MayMessage",
        "the patient in their own space",
        pb.MayMessageRequest(ins=PATIENT_INS),
        "patient",
        S.OK,
        check=may_write,
    ),
    Case(
        "MayMessage",
        "another patient",
        pb.MayMessageRequest(ins=PATIENT_INS),
        "other patient",
        S.OK,
        check=refused("not_your_dossier"),
    ),
    Case(
        "MayMessage",
        "an insurer's system has no mailbox",
        pb.MayMessageRequest(ins=PATIENT_INS),
        "insurer",
        S.OK,
        check=refused("not_a_care_actor"),
    ),
    Case(
        "MayMessage",
        "a malformed INS",
        pb.MayMessageRequest(ins="123"),
        "doctor",
        S.INVALID_ARGUMENT,
        field="ins",
    ),
    Case(
        "MayMessage",
        "a dossier consent has not heard of, dossier away",
        pb.MayMessageRequest(ins=OTHER_INS),
        "doctor",
        S.UNAVAILABLE,
    ),
    # Trusted persons: identity (who checks the person has an account) is away.
    Case(
        "InviteTrustedPerson",
        "the patient names another patient, identity away",
        pb.InviteTrustedPersonRequest(
            ins=PATIENT_INS, trusted_ins=OTHER_INS, scope=pb.TRUST_SCOPE_READ
        ),
        "patient",
        S.UNAVAILABLE,
    ),
    Case(
        "InviteTrustedPerson",
        "the patient themselves",
        pb.InviteTrustedPersonRequest(
            ins=PATIENT_INS, trusted_ins=PATIENT_INS, scope=pb.TRUST_SCOPE_READ
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="trusted_ins",
    ),
    Case(
        "InviteTrustedPerson",
        "no scope",
        pb.InviteTrustedPersonRequest(ins=PATIENT_INS, trusted_ins=OTHER_INS),
        "patient",
        S.INVALID_ARGUMENT,
        field="scope",
    ),
    Case(
        "InviteTrustedPerson",
        "a malformed INS",
        pb.InviteTrustedPersonRequest(
            ins=PATIENT_INS, trusted_ins="123", scope=pb.TRUST_SCOPE_READ
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="trusted_ins",
    ),
    Case(
        "InviteTrustedPerson",
        "a professional names nobody's trusted persons",
        pb.InviteTrustedPersonRequest(
            ins=PATIENT_INS, trusted_ins=OTHER_INS, scope=pb.TRUST_SCOPE_MANAGE
        ),
        "doctor",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ListTrustedPersons",
        "the patient's, none yet",
        pb.ListTrustedPersonsRequest(ins=PATIENT_INS),
        "patient",
        S.OK,
        check=lambda answer: list(answer.trusts) == [],
    ),
    Case(
        "ListTrustedPersons",
        "another patient",
        pb.ListTrustedPersonsRequest(ins=PATIENT_INS),
        "other patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ChangeTrustedPerson",
        "someone the patient does not trust",
        pb.ChangeTrustedPersonRequest(
            ins=PATIENT_INS, trusted_ins=OTHER_INS, scope=pb.TRUST_SCOPE_MANAGE
        ),
        "patient",
        S.NOT_FOUND,
        field="trusted_ins",
    ),
    Case(
        "ChangeTrustedPerson",
        "a professional",
        pb.ChangeTrustedPersonRequest(
            ins=PATIENT_INS, trusted_ins=OTHER_INS, scope=pb.TRUST_SCOPE_MANAGE
        ),
        "doctor",
        S.PERMISSION_DENIED,
    ),
    Case(
        "RemoveTrustedPerson",
        "someone the patient does not trust",
        pb.RemoveTrustedPersonRequest(ins=PATIENT_INS, trusted_ins=OTHER_INS),
        "patient",
        S.NOT_FOUND,
        field="trusted_ins",
    ),
    Case(
        "RemoveTrustedPerson",
        "a person withdrawing from a trust they do not have",
        pb.RemoveTrustedPersonRequest(ins=PATIENT_INS, trusted_ins=OTHER_INS),
        "other patient",
        S.NOT_FOUND,
        field="trusted_ins",
    ),
    Case(
        "AcceptTrustedInvitation",
        "no invitation",
        pb.AcceptTrustedInvitationRequest(ins=PATIENT_INS),
        "other patient",
        S.NOT_FOUND,
        field="ins",
    ),
    Case(
        "AcceptTrustedInvitation",
        "a professional",
        pb.AcceptTrustedInvitationRequest(ins=PATIENT_INS),
        "doctor",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ListRepresented",
        "a patient whom nobody trusts",
        pb.ListRepresentedRequest(),
        "other patient",
        S.OK,
        check=lambda answer: list(answer.represented) == [],
    ),
    Case(
        "ListRepresented",
        "a professional",
        pb.ListRepresentedRequest(),
        "doctor",
        S.PERMISSION_DENIED,
    ),
]
SLOW = Case(
    "GetSettings",
    "the patient's",
    pb.GetSettingsRequest(ins=PATIENT_INS),
    "patient",
    S.OK,
    check=default_settings,
)

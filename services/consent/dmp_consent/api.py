"""Consent's gRPC servicer: every access question goes to `domain.decide`, nowhere else."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import grpc
from uuid6 import uuid7

from dmp.consent.v1 import consent_pb2 as pb
from dmp.consent.v1 import consent_pb2_grpc
from dmp.identity.v1 import identity_pb2, identity_pb2_grpc
from dmp_consent import events
from dmp_consent.config import ConsentSettings
from dmp_consent.domain import (
    Action,
    ConsentState,
    Decision,
    DocumentFacts,
    DossierState,
    DossierStatus,
    HabilitationMatrix,
    Label,
    Mode,
    TrustScope,
    decide,
    explain,
    may_message,
    profession_code,
    viewer,
)
from dmp_consent.identity_client import PatientLookup
from dmp_consent.store import (
    ACTIVE,
    INVITED,
    ConsentStore,
    DossierLookup,
    consent_state,
    dossier_state,
)
from dmp_kit.access import raise_if_denied
from dmp_kit.auth import Principal, caller
from dmp_kit.catalogue import Catalogue
from dmp_kit.clock import Clock
from dmp_kit.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from dmp_kit.events import audit_event
from dmp_kit.identifiers import PROFESSIONS, validate_ins, validate_rpps
from dmp_kit.mongo import Document
from dmp_kit.outbox import Change, OutboxRelay
from dmp_kit.proto import timestamp
from dmp_kit.rpc.client import call_options
from dmp_kit.rpc.status import error_from_rpc

ACTIONS = {
    pb.ACTION_READ: Action.READ,
    pb.ACTION_WRITE: Action.WRITE,
    pb.ACTION_MANAGE: Action.MANAGE,
    pb.ACTION_OPEN: Action.OPEN,
    pb.ACTION_GOVERN: Action.GOVERN,
}
SCOPES = {pb.TRUST_SCOPE_READ: TrustScope.READ, pb.TRUST_SCOPE_MANAGE: TrustScope.MANAGE}
SCOPE_PB = {scope: value for value, scope in SCOPES.items()}
STATUS_PB = {INVITED: pb.TRUST_STATUS_INVITED, ACTIVE: pb.TRUST_STATUS_ACTIVE}
MAX_TRUSTED_PERSONS = 5
# How long a caller may reuse FilterDocuments' verdicts at most (`reusable_for`).
VERDICT_REUSE_SECONDS = 60
MODES = {
    Mode.NORMAL: pb.ACCESS_MODE_NORMAL,
    Mode.BREAK_GLASS: pb.ACCESS_MODE_BREAK_GLASS,
    Mode.REGULATOR: pb.ACCESS_MODE_REGULATOR,
}
MODE_FROM_PB = {
    pb.ACCESS_MODE_BREAK_GLASS: Mode.BREAK_GLASS,
    pb.ACCESS_MODE_REGULATOR: Mode.REGULATOR,
}
LABELS = {label.value: label for label in Label}
MAX_REASON = 500


def _context(ins: str, ctx: pb.DossierContext) -> DossierState:
    try:
        status = DossierStatus(ctx.status or "absent")
    except ValueError as exc:
        raise InvalidArgument("unknown dossier status", field="dossier.status") from exc
    return DossierState(
        ins, status, frozenset(ctx.legal_representatives), declared_gp=ctx.declared_gp
    )


def reusable_until(consent: ConsentState, now: datetime) -> datetime:
    """Until when `decide` answers as now for the same caller, dossier, consent state and
    document facts: time enters only through emergency grants' ends; and a minute at most,
    so a new habilitation matrix is in force within one (docs/scaling.md)."""
    ends = [g.expires_at for g in consent.grants if g.expires_at > now]
    return min([now + timedelta(seconds=VERDICT_REUSE_SECONDS), *ends])


def _document(ref: pb.DocumentRef, catalogue: Catalogue) -> DocumentFacts:
    labels = frozenset(LABELS[name] for name in ref.labels if name in LABELS)
    section = ref.section or catalogue.type(ref.type_code, field="document.type_code").section
    return DocumentFacts(ref.type_code, section, ref.author, labels, ref.deleted)


class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer):
    def __init__(
        self,
        settings: ConsentSettings,
        store: ConsentStore,
        matrix: HabilitationMatrix,
        catalogue: Catalogue,
        clock: Clock,
        relay: OutboxRelay,
        identity: identity_pb2_grpc.IdentityServiceStub,
        dossier_state_of: DossierLookup,
        patient_named: PatientLookup,
    ) -> None:
        self.settings = settings
        self.store = store
        self.matrix = matrix
        self.catalogue = catalogue
        self.clock = clock
        self.relay = relay
        self.identity = identity
        self.dossier_state_of = dossier_state_of
        self.patient_named = patient_named

    async def _known(self, ins: str) -> Document | None:
        """The dossier's consent record. One this service has not heard of yet (its
        `dossier.opened` event still on the way) is asked of dossier, so a patient can name
        their GP the moment after opening (read-your-writes); so is one last heard of as purged
        (a DMP opened again). One last heard of as closed is asked too, and answered with the
        dossier's own status until the event comes: reopened a moment ago, it is open."""
        doc = await self.store.get(ins)
        status = (doc or {}).get("dossier_status")
        if doc is not None and status == DossierStatus.OPEN.value:
            return doc
        found = await self.dossier_state_of(ins)
        if doc is not None and status != DossierStatus.ABSENT.value:
            if found is None or found[0] is DossierStatus.ABSENT:
                return doc
            live, representatives = found
            if live is not DossierStatus.OPEN:
                return {**doc, "dossier_status": live.value}
            return {**doc, "dossier_status": live.value, "legal_representatives": representatives}
        if found is None:
            return None
        live, representatives = found
        await self.store.adopt_dossier_status(ins, live, representatives)
        return await self.store.get(ins)

    # the hot path ----------------------------------------------------------------

    async def Decide(
        self, request: pb.DecideRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecideResponse:
        ins = validate_ins(request.ins)
        action = ACTIONS.get(request.action)
        if action is None:
            raise InvalidArgument("action is required", field="action")
        consent = await self.store.consent_of(ins, request.dossier.consent_epoch)
        document = (
            _document(request.document, self.catalogue) if request.HasField("document") else None
        )
        now = self.clock.now()
        decision = decide(
            caller(), _context(ins, request.dossier), consent, self.matrix, action, now, document
        )
        answer = pb.DecideResponse(
            allowed=decision.allowed, mode=MODES[decision.mode], reason=decision.reason
        )
        if request.dossier.consent_epoch:  # a state of that epoch: the caller may reuse it
            answer.reusable_for.FromTimedelta(reusable_until(consent, now) - now)
        return answer

    async def FilterDocuments(
        self, request: pb.FilterDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.FilterDocumentsResponse:
        ins = validate_ins(request.ins)
        who = caller()
        dossier = _context(ins, request.dossier)
        consent = await self.store.consent_of(ins, request.dossier.consent_epoch)
        now = self.clock.now()
        judged = self._judged(who, dossier, consent, now, request.documents)
        visible = [
            ref.id
            for ref, decision in zip(request.documents, judged, strict=True)
            if decision.allowed
        ]
        mode = decide(who, dossier, consent, self.matrix, Action.READ, now).mode
        answer = pb.FilterDocumentsResponse(visible_ids=visible, mode=MODES[mode])
        if request.dossier.consent_epoch:
            answer.reusable_for.FromTimedelta(reusable_until(consent, now) - now)
        return answer

    def _judged(
        self,
        who: Principal,
        dossier: DossierState,
        consent: ConsentState,
        now: datetime,
        refs: Iterable[pb.DocumentRef],
    ) -> list[Decision]:
        """`decide` on reading each document, in order: the hot path's filter and the
        preview's verdicts are this one loop. One decision per distinct set of facts: a dossier
        holds many documents of one type by one author, and `decide` depends on nothing else
        of a document."""
        decisions: dict[DocumentFacts, Decision] = {}
        judged = []
        for ref in refs:
            facts = _document(ref, self.catalogue)
            decision = decisions.get(facts)
            if decision is None:
                decision = decide(who, dossier, consent, self.matrix, Action.READ, now, facts)
                decisions[facts] = decision
            judged.append(decision)
        return judged

    async def PreviewDocuments(
        self, request: pb.PreviewDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewDocumentsResponse:
        """Each document's verdict for the viewer, from `decide` exactly as the hot path asks
        it when that professional calls; the caller is told only of what they may read."""
        ins = validate_ins(request.ins)
        who = caller()
        dossier = _context(ins, request.dossier)
        consent = await self.store.consent_of(ins, request.dossier.consent_epoch)
        now = self.clock.now()
        # Only who manages the dossier (the patient, a minor's legal representatives) previews.
        raise_if_denied(decide(who, dossier, consent, self.matrix, Action.MANAGE, now))
        seen, summary = await self._viewer(request.viewer, consent)
        own = self._judged(who, dossier, consent, now, request.documents)
        theirs = self._judged(seen, dossier, consent, now, request.documents)
        answer = pb.PreviewDocumentsResponse()
        for ref, mine, verdict in zip(request.documents, own, theirs, strict=True):
            if mine.allowed:
                answer.verdicts.append(
                    pb.DocumentVerdict(document_id=ref.id, verdict=_verdict(verdict))
                )
            elif verdict.allowed:
                answer.withheld_visible += 1
            else:
                answer.withheld_hidden += 1
        summary.access.CopyFrom(
            _verdict(decide(seen, dossier, consent, self.matrix, Action.READ, now))
        )
        answer.viewer.CopyFrom(summary)
        return answer

    async def _viewer(
        self, ref: pb.ViewerRef, consent: ConsentState
    ) -> tuple[Principal, pb.Viewer]:
        """Whom the preview is for, as `decide` sees them, and as the patient is told."""
        which = ref.WhichOneof("viewer")
        if which == "profession":
            code = profession_code(ref.profession)
            if code is None:
                raise InvalidArgument(
                    "no profession has this code or name",
                    field="viewer.profession",
                    slug="invalid-profession",
                )
            return viewer("", code), pb.Viewer(
                profession=code,
                profession_label=PROFESSIONS[code],
                relation=pb.VIEWER_RELATION_NONE,
            )
        if which != "rpps":
            raise InvalidArgument(
                "a professional's RPPS or a profession is required", field="viewer"
            )
        rpps = validate_rpps(ref.rpps, field="viewer.rpps")
        found = await self._professional(rpps, field="viewer.rpps")
        if rpps in consent.blocked:
            relation = pb.VIEWER_RELATION_BLOCKED
        elif rpps == consent.attending_physician:
            relation = pb.VIEWER_RELATION_ATTENDING_PHYSICIAN
        elif rpps in consent.authorized:
            relation = pb.VIEWER_RELATION_AUTHORIZED
        else:
            relation = pb.VIEWER_RELATION_NONE
        return viewer(rpps, found.profession, found.roles), pb.Viewer(
            rpps=rpps,
            profession=found.profession,
            profession_label=PROFESSIONS.get(found.profession, ""),
            given_name=found.given_name,
            family_name=found.family_name,
            relation=relation,
        )

    async def _professional(self, rpps: str, field: str) -> identity_pb2.Professional:
        """The directory's entry for this RPPS; one it does not know is the caller's error."""
        try:
            found = await self.identity.LookupProfessional(
                identity_pb2.LookupProfessionalRequest(rpps=rpps),
                **call_options(self.settings.grpc_deadline_seconds),
            )
        except grpc.aio.AioRpcError as exc:
            err = error_from_rpc(exc)
            if err.grpc_code == grpc.StatusCode.NOT_FOUND:
                raise InvalidArgument("no professional has this RPPS", field=field) from exc
            raise err from exc
        professional: identity_pb2.Professional = found.professional
        return professional

    # the patient's choices ---------------------------------------------------------------

    async def _managed(
        self, ins: str, action: Action = Action.MANAGE, *, reading: bool = False
    ) -> tuple[Principal, dict[str, Any]]:
        """The caller may manage this dossier's consent (the patient, a representative, a
        trusted person allowed to manage; `GOVERN`: not a trusted person). `reading`: a
        trusted person allowed to read only may read the choices too."""
        who = caller()
        doc = await self._known(ins)
        decision = decide(
            who,
            dossier_state(ins, doc),
            consent_state(doc),
            self.matrix,
            action,
            self.clock.now(),
        )
        if not (reading and decision.reason == "read_only"):
            raise_if_denied(decision)
        assert doc is not None
        return who, doc

    async def _apply(
        self,
        ins: str,
        who: Principal,
        fields: Change,
        change: str,
        rpps: str = "",
        trusted_ins: str = "",
    ) -> dict[str, Any]:
        """One change, computed from the current state by `fields`, with its event and trace."""
        doc = await self.store.change(
            ins,
            fields,
            events.consent_changed(self.clock, who, ins, change, rpps, trusted_ins),
            audit_event(
                source="consent",
                clock=self.clock,
                caller=who,
                patient_ins=ins,
                action="update",
                outcome="success",
                query=f"consent:{change}",
            ),
        )
        if doc is None:
            raise NotFound("no dossier for this INS", field="ins", slug="dossier-not-found")
        self.relay.kick(self.store.consents, ins)
        return doc

    async def GetSettings(
        self, request: pb.GetSettingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSettingsResponse:
        _, doc = await self._managed(validate_ins(request.ins), reading=True)
        return pb.GetSettingsResponse(settings=_settings(doc))

    async def PutSettings(
        self, request: pb.PutSettingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutSettingsResponse:
        ins = validate_ins(request.ins)
        who, _ = await self._managed(ins)
        if not request.HasField("settings"):
            raise InvalidArgument("settings are required", field="settings")
        settings = {
            "allow_emergency_access": request.settings.allow_emergency_access,
            "allow_regulator_access": request.settings.allow_regulator_access,
        }
        doc = await self._apply(ins, who, lambda _: {"settings": settings}, "settings")
        return pb.PutSettingsResponse(settings=_settings(doc))

    async def ListProfessionals(
        self, request: pb.ListProfessionalsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProfessionalsResponse:
        _, doc = await self._managed(validate_ins(request.ins), reading=True)
        return _care_team(doc)

    async def SetProfessionalStatus(
        self, request: pb.SetProfessionalStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetProfessionalStatusResponse:
        ins, rpps = validate_ins(request.ins), validate_rpps(request.rpps)
        if request.status not in (
            pb.PROFESSIONAL_STATUS_AUTHORIZED,
            pb.PROFESSIONAL_STATUS_BLOCKED,
        ):
            raise InvalidArgument("status must be authorized or blocked", field="status")
        who, _ = await self._managed(ins)
        target = "authorized" if request.status == pb.PROFESSIONAL_STATUS_AUTHORIZED else "blocked"
        other = "blocked" if target == "authorized" else "authorized"
        entry = {"rpps": rpps, "since": self.clock.now()}

        def fields(doc: Document | None) -> Document:
            assert doc is not None
            return {
                target: [*_without(doc, target, rpps), entry],
                other: _without(doc, other, rpps),
            }

        doc = await self._apply(ins, who, fields, target, rpps)
        return pb.SetProfessionalStatusResponse(member=_member(doc, rpps))

    async def RemoveProfessional(
        self, request: pb.RemoveProfessionalRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveProfessionalResponse:
        ins, rpps = validate_ins(request.ins), validate_rpps(request.rpps)
        who, _ = await self._managed(ins)

        def fields(doc: Document | None) -> Document:
            assert doc is not None
            listed = {m["rpps"] for m in doc.get("authorized", []) + doc.get("blocked", [])}
            if rpps not in listed:
                raise NotFound("this professional is neither authorised nor blocked", field="rpps")
            return {
                "authorized": _without(doc, "authorized", rpps),
                "blocked": _without(doc, "blocked", rpps),
            }

        await self._apply(ins, who, fields, "removed", rpps)
        return pb.RemoveProfessionalResponse()

    async def SetAttendingPhysician(
        self, request: pb.SetAttendingPhysicianRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetAttendingPhysicianResponse:
        ins, rpps = validate_ins(request.ins), validate_rpps(request.rpps)
        who, _ = await self._managed(ins)
        found = await self._professional(rpps, field="rpps")
        if found.profession != "10":
            raise InvalidArgument(
                "the attending physician must be a doctor", field="rpps", slug="not-a-doctor"
            )
        since = self.clock.now()

        def fields(doc: Document | None) -> Document:
            assert doc is not None
            if rpps in {m["rpps"] for m in doc.get("blocked", [])}:
                raise Conflict("this professional is blocked; unblock them first", field="rpps")
            return {"attending_physician": {"rpps": rpps, "since": since}}

        doc = await self._apply(ins, who, fields, "attending_physician", rpps)
        return pb.SetAttendingPhysicianResponse(member=_member(doc, rpps))

    # emergency access ------------------------------------------------------------------

    async def RequestEmergencyAccess(
        self, request: pb.RequestEmergencyAccessRequest, context: grpc.aio.ServicerContext
    ) -> pb.RequestEmergencyAccessResponse:
        ins = validate_ins(request.ins)
        who = caller()
        who.require_kind("professional")
        mode = MODE_FROM_PB.get(request.mode)
        if mode is None:
            raise InvalidArgument("mode must be break_glass or regulator", field="mode")
        reason = request.reason.strip()
        if not self.settings.min_reason_length <= len(reason) <= MAX_REASON:
            raise InvalidArgument(
                f"a written reason of {self.settings.min_reason_length} to {MAX_REASON} "
                "characters is required",
                field="reason",
            )
        if mode is Mode.REGULATOR:
            who.require_role("samu_regulator")
        doc = await self._known(ins)
        state, consent = dossier_state(ins, doc), consent_state(doc)
        if state.status is DossierStatus.ABSENT:
            raise NotFound("no dossier for this INS", field="ins", slug="dossier-not-found")
        if state.status is not DossierStatus.OPEN:
            raise Conflict("the dossier is closed", slug="dossier-closed")
        if who.rpps in consent.blocked:
            raise PermissionDenied(
                "the patient has blocked this professional", slug="access-denied"
            )
        allowed = (
            consent.allow_emergency_access
            if mode is Mode.BREAK_GLASS
            else consent.allow_regulator_access
        )
        if not allowed:
            raise PermissionDenied(
                "the patient has refused this kind of access in advance",
                slug="emergency-access-refused",
            )
        now = self.clock.now()
        expires = now + timedelta(hours=self.settings.emergency_access_hours)
        grant = {
            "id": str(uuid7()),
            "rpps": who.rpps,
            "mode": mode.value,
            "reason": reason,
            "granted_at": now,
            "expires_at": expires,
        }

        def fields(current: Document | None) -> Document:
            assert current is not None
            live = [g for g in current.get("grants", []) if g["expires_at"] > now]
            return {"grants": [*live, grant]}

        updated = await self.store.change(
            ins,
            fields,
            events.emergency_granted(
                self.clock,
                who,
                ins,
                grant_id=grant["id"],
                mode=mode,
                reason=reason,
                expires_at=expires,
                # A blocked GP is refused everything (rule 5), being told included.
                attending_physician=(
                    consent.attending_physician
                    if consent.attending_physician not in consent.blocked
                    else ""
                )
                or "",
            ),
            audit_event(
                source="consent",
                clock=self.clock,
                caller=who,
                patient_ins=ins,
                action="execute",
                outcome="success",
                mode=mode.value,
                reason=reason,
                query="emergency_access",
            ),
        )
        if updated is None:
            raise NotFound("no dossier for this INS", field="ins", slug="dossier-not-found")
        self.relay.kick(self.store.consents, ins)
        return pb.RequestEmergencyAccessResponse(
            grant=pb.EmergencyGrant(
                id=grant["id"],
                ins=ins,
                rpps=who.rpps,
                mode=MODES[mode],
                reason=reason,
                granted_at=timestamp(now),
                expires_at=timestamp(expires),
            )
        )

    async def MayMessage(
        self, request: pb.MayMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.MayMessageResponse:
        ins = validate_ins(request.ins)
        doc = await self._known(ins)
        decision = may_message(caller(), dossier_state(ins, doc), consent_state(doc))
        return pb.MayMessageResponse(allowed=decision.allowed, reason=decision.reason)

    # trusted persons -----------------------------------------------------------------------

    async def InviteTrustedPerson(
        self, request: pb.InviteTrustedPersonRequest, context: grpc.aio.ServicerContext
    ) -> pb.InviteTrustedPersonResponse:
        ins = validate_ins(request.ins)
        trusted = validate_ins(request.trusted_ins, field="trusted_ins")
        scope = _scope(request.scope)
        who, _ = await self._managed(ins, Action.GOVERN)
        if trusted in (ins, who.ins):
            raise InvalidArgument(
                "a trusted person is someone else than the patient and whoever invites them",
                field="trusted_ins",
                slug="invalid-trusted-person",
            )
        named = await self.patient_named(trusted)
        if named is None:
            raise InvalidArgument(
                "no active patient account has this INS",
                field="trusted_ins",
                slug="not-a-patient",
            )
        patient = await self.patient_named(ins) or ("", "")
        entry = {
            "ins": trusted,
            "scope": scope.value,
            "status": INVITED,
            "given_name": named[0],
            "family_name": named[1],
            "invited_at": self.clock.now(),
            "accepted_at": None,
        }

        def fields(doc: Document | None) -> Document:
            assert doc is not None
            trusts = doc.get("trusts", [])
            if any(t["ins"] == trusted for t in trusts):
                raise Conflict(
                    "this person is already trusted or invited",
                    field="trusted_ins",
                    slug="already-trusted",
                )
            if len(trusts) >= MAX_TRUSTED_PERSONS:
                raise Conflict(
                    f"at most {MAX_TRUSTED_PERSONS} trusted persons",
                    field="trusted_ins",
                    slug="too-many-trusted-persons",
                )
            return {
                "trusts": [*trusts, entry],
                "trusted_ins": [*doc.get("trusted_ins", []), trusted],
                "patient_name": {"given_name": patient[0], "family_name": patient[1]},
            }

        doc = await self._apply(ins, who, fields, "trusted_person_invited", trusted_ins=trusted)
        return pb.InviteTrustedPersonResponse(trust=_trust(doc, ins, trusted))

    async def ListTrustedPersons(
        self, request: pb.ListTrustedPersonsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTrustedPersonsResponse:
        ins = validate_ins(request.ins)
        _, doc = await self._managed(ins, Action.GOVERN)
        return pb.ListTrustedPersonsResponse(
            trusts=[_trust(doc, ins, t["ins"]) for t in doc.get("trusts", [])]
        )

    async def ChangeTrustedPerson(
        self, request: pb.ChangeTrustedPersonRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangeTrustedPersonResponse:
        ins = validate_ins(request.ins)
        trusted = validate_ins(request.trusted_ins, field="trusted_ins")
        scope = _scope(request.scope)
        who, _ = await self._managed(ins, Action.GOVERN)

        def fields(doc: Document | None) -> Document:
            assert doc is not None
            _trust_entry(doc, trusted)
            return {
                "trusts": [
                    {**t, "scope": scope.value} if t["ins"] == trusted else t
                    for t in doc.get("trusts", [])
                ]
            }

        doc = await self._apply(ins, who, fields, "trusted_person_changed")
        return pb.ChangeTrustedPersonResponse(trust=_trust(doc, ins, trusted))

    async def RemoveTrustedPerson(
        self, request: pb.RemoveTrustedPersonRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveTrustedPersonResponse:
        """The patient revokes a trust (or an invitation); the trusted person withdraws from
        it (or declines)."""
        ins = validate_ins(request.ins)
        trusted = validate_ins(request.trusted_ins, field="trusted_ins")
        who = caller()
        if who.kind == "patient" and who.ins == trusted:
            doc = await self._known(ins)
            if doc is None or not any(t["ins"] == trusted for t in doc.get("trusts", [])):
                raise NotFound(
                    "no such trusted person", field="trusted_ins", slug="trusted-person-not-found"
                )
        else:
            who, _ = await self._managed(ins, Action.GOVERN)

        def fields(doc: Document | None) -> Document:
            assert doc is not None
            _trust_entry(doc, trusted)
            return {
                "trusts": [t for t in doc.get("trusts", []) if t["ins"] != trusted],
                "trusted_ins": [x for x in doc.get("trusted_ins", []) if x != trusted],
            }

        await self._apply(ins, who, fields, "trusted_person_removed")
        return pb.RemoveTrustedPersonResponse()

    async def AcceptTrustedInvitation(
        self, request: pb.AcceptTrustedInvitationRequest, context: grpc.aio.ServicerContext
    ) -> pb.AcceptTrustedInvitationResponse:
        ins = validate_ins(request.ins)
        who = caller()
        who.require_kind("patient")
        me = who.ins
        now = self.clock.now()
        none = NotFound("no invitation from this patient", field="ins", slug="invitation-not-found")
        current = await self.store.get(ins)
        if current is None or not any(t["ins"] == me for t in current.get("trusts", [])):
            raise none  # whether the patient has a DMP is not told either

        def fields(doc: Document | None) -> Document:
            found = next((t for t in (doc or {}).get("trusts", []) if t["ins"] == me), None)
            if found is None or found["status"] != INVITED:
                raise none
            assert doc is not None
            return {
                "trusts": [
                    {**t, "status": ACTIVE, "accepted_at": now} if t["ins"] == me else t
                    for t in doc.get("trusts", [])
                ]
            }

        doc = await self._apply(ins, who, fields, "trusted_person_accepted")
        return pb.AcceptTrustedInvitationResponse(trust=_trust(doc, ins, me))

    async def ListRepresented(
        self, request: pb.ListRepresentedRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRepresentedResponse:
        who = caller()
        who.require_kind("patient")
        answer = pb.ListRepresentedResponse()
        for doc in sorted(await self.store.trusting(who.ins), key=lambda d: str(d["_id"])):
            ins = str(doc["_id"])
            if who.ins in dossier_state(ins, doc).legal_representatives:
                if doc.get("dossier_status") != DossierStatus.OPEN.value:
                    continue
                named = await self.patient_named(ins) or ("", "")
                answer.represented.append(
                    pb.Represented(
                        ins=ins,
                        given_name=named[0],
                        family_name=named[1],
                        relation=pb.RELATION_LEGAL_REPRESENTATIVE,
                        scope=pb.TRUST_SCOPE_MANAGE,
                        status=pb.TRUST_STATUS_ACTIVE,
                    )
                )
                continue
            if who.ins not in doc.get("trusted_ins", []):
                continue  # a former representative, and no trust
            trust = _trust(doc, ins, who.ins)
            answer.represented.append(
                pb.Represented(
                    ins=ins,
                    given_name=trust.patient_given_name,
                    family_name=trust.patient_family_name,
                    relation=pb.RELATION_TRUSTED_PERSON,
                    scope=trust.scope,
                    status=trust.status,
                    invited_at=trust.invited_at,
                )
            )
        return answer

    async def GetHabilitationMatrix(
        self, request: pb.GetHabilitationMatrixRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetHabilitationMatrixResponse:
        caller()
        return pb.GetHabilitationMatrixResponse(
            rules=[
                pb.HabilitationRule(profession=p, readable_type_codes=sorted(types))
                for p, types in sorted(self.matrix.readable.items())
            ],
            provenance=self.matrix.provenance,
            sections=[
                pb.SectionInfo(name=name, label=label)
                for name, label in self.catalogue.sections.items()
            ],
            types=[
                pb.DocumentTypeInfo(code=t.code, label=t.label, section=t.section)
                for t in self.catalogue.types.values()
            ],
        )


def _verdict(decision: Decision) -> pb.Verdict:
    return pb.Verdict(
        allowed=decision.allowed,
        mode=MODES[decision.mode],
        reason=decision.reason,
        explanation=explain(decision.reason),
    )


def _scope(value: int) -> TrustScope:
    scope = SCOPES.get(value)
    if scope is None:
        raise InvalidArgument("scope must be read or manage", field="scope")
    return scope


def _trust_entry(doc: Document, trusted: str) -> Document:
    for t in doc.get("trusts", []):
        if t["ins"] == trusted:
            return t  # type: ignore[no-any-return]
    raise NotFound("no such trusted person", field="trusted_ins", slug="trusted-person-not-found")


def _trust(doc: Document, ins: str, trusted: str) -> pb.Trust:
    t = _trust_entry(doc, trusted)
    patient = doc.get("patient_name") or {}
    return pb.Trust(
        patient_ins=ins,
        patient_given_name=patient.get("given_name", ""),
        patient_family_name=patient.get("family_name", ""),
        trusted_ins=trusted,
        trusted_given_name=t.get("given_name", ""),
        trusted_family_name=t.get("family_name", ""),
        scope=SCOPE_PB[TrustScope(t["scope"])],
        status=STATUS_PB[t["status"]],
        invited_at=timestamp(t["invited_at"]),
        accepted_at=timestamp(t["accepted_at"]) if t.get("accepted_at") else None,
    )


def _without(doc: Document, key: str, rpps: str) -> list[Document]:
    return [m for m in doc.get(key, []) if m["rpps"] != rpps]


def _settings(doc: dict[str, Any]) -> pb.Settings:
    s = doc.get("settings", {})
    return pb.Settings(
        allow_emergency_access=bool(s.get("allow_emergency_access", True)),
        allow_regulator_access=bool(s.get("allow_regulator_access", True)),
    )


def _member(doc: dict[str, Any], rpps: str) -> pb.CareTeamMember:
    gp = (doc.get("attending_physician") or {}).get("rpps")
    for key, status in (
        ("authorized", pb.PROFESSIONAL_STATUS_AUTHORIZED),
        ("blocked", pb.PROFESSIONAL_STATUS_BLOCKED),
    ):
        for m in doc.get(key, []):
            if m["rpps"] == rpps:
                return pb.CareTeamMember(
                    rpps=rpps,
                    status=status,
                    attending_physician=gp == rpps,
                    since=timestamp(m["since"]),
                )
    since = (doc.get("attending_physician") or {}).get("since")
    return pb.CareTeamMember(
        rpps=rpps,
        status=pb.PROFESSIONAL_STATUS_AUTHORIZED,
        attending_physician=gp == rpps,
        since=timestamp(since) if since else None,
    )


def _care_team(doc: dict[str, Any]) -> pb.ListProfessionalsResponse:
    gp = doc.get("attending_physician")
    authorized = [_member(doc, m["rpps"]) for m in doc.get("authorized", [])]
    if gp and gp["rpps"] not in {m.rpps for m in authorized}:
        authorized.insert(0, _member(doc, gp["rpps"]))
    return pb.ListProfessionalsResponse(
        authorized=authorized, blocked=[_member(doc, m["rpps"]) for m in doc.get("blocked", [])]
    )

"""Trusted persons (personnes de confiance) and acting for someone.

A patient names another patient as a trusted person, with read or read-and-manage access to
their space; the trusted person accepts first. Acting for someone is calling the dossier's
own routes with their INS in the path and one's own token: consent decides as for the patient,
within the scope, and every trace names both people (`actor` and `on_behalf_of`).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from dmp.consent.v1 import consent_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso
from dmp_gateway.security import Caller

router = APIRouter(tags=["trusted persons"])

Scope = Literal["read", "manage"]
SCOPES: dict[str, pb.TrustScope.ValueType] = {
    "read": pb.TRUST_SCOPE_READ,
    "manage": pb.TRUST_SCOPE_MANAGE,
}
SCOPE_NAMES = {value: name for name, value in SCOPES.items()}
STATUSES = {pb.TRUST_STATUS_INVITED: "invited", pb.TRUST_STATUS_ACTIVE: "active"}
RELATIONS = {
    pb.RELATION_TRUSTED_PERSON: "trusted_person",
    pb.RELATION_LEGAL_REPRESENTATIVE: "legal_representative",
}
SCOPE_DOC = (
    "`read`: the space as the patient reads it, less the documents hidden from the patient and "
    "those the patient keeps from trusted persons; `manage`: also the patient's choices (care "
    "team, blocks, masking, profile, personal documents) — never closing the space nor naming "
    "trusted persons"
)


class TrustedPersonIn(BaseModel):
    ins: str = Field(max_length=32, description="the trusted person's INS (a patient account)")
    scope: Scope = Field(description=SCOPE_DOC)


class ScopeIn(BaseModel):
    scope: Scope = Field(description=SCOPE_DOC)


class TrustedPerson(BaseModel):
    ins: str
    given_name: str
    family_name: str
    scope: Scope
    status: Literal["invited", "active"]
    invited_at: str
    accepted_at: str | None = None


class TrustedPersons(BaseModel):
    items: list[TrustedPerson]


class RepresentedPerson(BaseModel):
    ins: str
    given_name: str
    family_name: str
    relation: Literal["trusted_person", "legal_representative"]
    scope: Scope
    status: Literal["invited", "active"]
    invited_at: str | None = None


class RepresentedPersons(BaseModel):
    items: list[RepresentedPerson]


def trusted_person(t: pb.Trust) -> TrustedPerson:
    return TrustedPerson(
        ins=t.trusted_ins,
        given_name=t.trusted_given_name,
        family_name=t.trusted_family_name,
        scope=SCOPE_NAMES[t.scope],  # type: ignore[arg-type]
        status=STATUSES[t.status],  # type: ignore[arg-type]
        invited_at=iso(t.invited_at) or "",
        accepted_at=iso(t.accepted_at) if t.HasField("accepted_at") else None,
    )


@router.get(
    "/v1/dossiers/{ins}/trusted-persons",
    response_model=TrustedPersons,
    response_model_exclude_none=True,
    summary="Whom the patient trusts, invitations included",
    description="For the patient and a minor's legal representatives.",
    responses=problems.responses(403, 404),
)
async def list_trusted(ins: str, request: Request, who: Caller) -> TrustedPersons:
    ds = downstream(request)
    resp = await ds.call(
        ds.consent.ListTrustedPersons, pb.ListTrustedPersonsRequest(ins=ins), token=who.token
    )
    return TrustedPersons(items=[trusted_person(t) for t in resp.trusts])


@router.post(
    "/v1/dossiers/{ins}/trusted-persons",
    response_model=TrustedPerson,
    response_model_exclude_none=True,
    status_code=201,
    summary="Invite a trusted person",
    description="The invited person (another patient with an active account) has access once "
    "they accept (`POST /v1/me/represented/{ins}/accept`). Five at most.",
    responses=problems.responses(
        403,
        404,
        422,
        types={
            409: ("already-trusted", "too-many-trusted-persons", "dossier-closed"),
            422: ("validation-error", "invalid-ins", "not-a-patient", "invalid-trusted-person"),
        },
    ),
)
async def invite(ins: str, body: TrustedPersonIn, request: Request, who: Caller) -> TrustedPerson:
    ds = downstream(request)
    resp = await ds.call(
        ds.consent.InviteTrustedPerson,
        pb.InviteTrustedPersonRequest(ins=ins, trusted_ins=body.ins, scope=SCOPES[body.scope]),
        token=who.token,
        fields={"trusted_ins": "ins"},  # consent's name for the body's `ins`
    )
    return trusted_person(resp.trust)


@router.patch(
    "/v1/dossiers/{ins}/trusted-persons/{trusted_ins}",
    response_model=TrustedPerson,
    response_model_exclude_none=True,
    summary="Change what a trusted person may do",
    responses=problems.responses(
        403, 422, types={404: ("dossier-not-found", "trusted-person-not-found")}
    ),
)
async def change(
    ins: str, trusted_ins: str, body: ScopeIn, request: Request, who: Caller
) -> TrustedPerson:
    ds = downstream(request)
    resp = await ds.call(
        ds.consent.ChangeTrustedPerson,
        pb.ChangeTrustedPersonRequest(ins=ins, trusted_ins=trusted_ins, scope=SCOPES[body.scope]),
        token=who.token,
    )
    return trusted_person(resp.trust)


@router.delete(
    "/v1/dossiers/{ins}/trusted-persons/{trusted_ins}",
    status_code=204,
    summary="Revoke a trust or an invitation; or, as the trusted person, withdraw or decline",
    responses=problems.responses(
        403, 422, types={404: ("dossier-not-found", "trusted-person-not-found")}
    ),
)
async def remove(ins: str, trusted_ins: str, request: Request, who: Caller) -> Response:
    ds = downstream(request)
    await ds.call(
        ds.consent.RemoveTrustedPerson,
        pb.RemoveTrustedPersonRequest(ins=ins, trusted_ins=trusted_ins),
        token=who.token,
    )
    return Response(status_code=204)


@router.get(
    "/v1/me/represented",
    response_model=RepresentedPersons,
    response_model_exclude_none=True,
    summary="Whom I may act for: patients who trust me (invitations included), minors I represent",
    responses=problems.responses(403),
)
async def represented(request: Request, who: Caller) -> RepresentedPersons:
    ds = downstream(request)
    resp = await ds.call(ds.consent.ListRepresented, pb.ListRepresentedRequest(), token=who.token)
    return RepresentedPersons(
        items=[
            RepresentedPerson(
                ins=r.ins,
                given_name=r.given_name,
                family_name=r.family_name,
                relation=RELATIONS[r.relation],  # type: ignore[arg-type]
                scope=SCOPE_NAMES[r.scope],  # type: ignore[arg-type]
                status=STATUSES[r.status],  # type: ignore[arg-type]
                invited_at=iso(r.invited_at) if r.HasField("invited_at") else None,
            )
            for r in resp.represented
        ]
    )


@router.post(
    "/v1/me/represented/{ins}/accept",
    response_model=TrustedPerson,
    response_model_exclude_none=True,
    summary="Accept a patient's invitation to be their trusted person",
    responses=problems.responses(403, 422, types={404: ("invitation-not-found",)}),
)
async def accept(ins: str, request: Request, who: Caller) -> TrustedPerson:
    ds = downstream(request)
    resp = await ds.call(
        ds.consent.AcceptTrustedInvitation,
        pb.AcceptTrustedInvitationRequest(ins=ins),
        token=who.token,
    )
    return trusted_person(resp.trust)

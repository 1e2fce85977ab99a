"""Consent: the patient's settings, care team, attending physician; emergency access; matrix."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from dmp.consent.v1 import consent_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso
from dmp_gateway.security import Caller

router = APIRouter(tags=["consent"])

STATUS = {
    pb.PROFESSIONAL_STATUS_AUTHORIZED: "authorized",
    pb.PROFESSIONAL_STATUS_BLOCKED: "blocked",
}
MODES = {"break_glass": pb.ACCESS_MODE_BREAK_GLASS, "regulator": pb.ACCESS_MODE_REGULATOR}


class ConsentSettings(BaseModel):
    allow_emergency_access: bool
    allow_regulator_access: bool


class Member(BaseModel):
    rpps: str
    status: Literal["authorized", "blocked"]
    attending_physician: bool
    since: str | None = None


class CareTeam(BaseModel):
    authorized: list[Member]
    blocked: list[Member]


class StatusIn(BaseModel):
    status: Literal["authorized", "blocked"]


class PhysicianIn(BaseModel):
    rpps: str = Field(max_length=32)


class EmergencyIn(BaseModel):
    reason: str = Field(max_length=500, description="written reason, at least 10 characters")
    mode: Literal["break_glass", "regulator"] = "break_glass"


class Grant(BaseModel):
    id: str
    ins: str
    rpps: str
    mode: Literal["break_glass", "regulator"]
    reason: str
    granted_at: str
    expires_at: str


class DocumentType(BaseModel):
    label: str
    section: str


class Matrix(BaseModel):
    provenance: str
    rules: dict[str, list[str]] = Field(description="profession code → readable type codes")
    sections: dict[str, str] = Field(
        default_factory=dict, description="section (rubrique) → its label, in display order"
    )
    types: dict[str, DocumentType] = Field(
        default_factory=dict, description="type code → its label and section"
    )


def member(m: pb.CareTeamMember) -> Member:
    return Member(
        rpps=m.rpps,
        status=STATUS[m.status],  # type: ignore[arg-type]
        attending_physician=m.attending_physician,
        since=iso(m.since) if m.HasField("since") else None,
    )


@router.get(
    "/v1/dossiers/{ins}/consent-settings",
    response_model=ConsentSettings,
    responses=problems.responses(403, 404),
)
async def get_settings(ins: str, request: Request, who: Caller) -> ConsentSettings:
    ds = downstream(request)
    resp = await ds.call(ds.consent.GetSettings, pb.GetSettingsRequest(ins=ins), token=who.token)
    return ConsentSettings(
        allow_emergency_access=resp.settings.allow_emergency_access,
        allow_regulator_access=resp.settings.allow_regulator_access,
    )


@router.put(
    "/v1/dossiers/{ins}/consent-settings",
    response_model=ConsentSettings,
    summary="Refuse or allow emergency and regulator access in advance",
    responses=problems.responses(403, 404, 409),
)
async def put_settings(
    ins: str, body: ConsentSettings, request: Request, who: Caller
) -> ConsentSettings:
    ds = downstream(request)
    resp = await ds.call(
        ds.consent.PutSettings,
        pb.PutSettingsRequest(
            ins=ins,
            settings=pb.Settings(
                allow_emergency_access=body.allow_emergency_access,
                allow_regulator_access=body.allow_regulator_access,
            ),
        ),
        token=who.token,
    )
    return ConsentSettings(
        allow_emergency_access=resp.settings.allow_emergency_access,
        allow_regulator_access=resp.settings.allow_regulator_access,
    )


@router.get(
    "/v1/dossiers/{ins}/professionals",
    response_model=CareTeam,
    response_model_exclude_none=True,
    responses=problems.responses(403, 404),
)
async def professionals(ins: str, request: Request, who: Caller) -> CareTeam:
    ds = downstream(request)
    resp = await ds.call(
        ds.consent.ListProfessionals, pb.ListProfessionalsRequest(ins=ins), token=who.token
    )
    return CareTeam(
        authorized=[member(m) for m in resp.authorized], blocked=[member(m) for m in resp.blocked]
    )


@router.put(
    "/v1/dossiers/{ins}/professionals/{rpps}",
    response_model=Member,
    response_model_exclude_none=True,
    summary="Authorise or block a professional",
    responses=problems.responses(403, 404, 409),
)
async def set_professional(
    ins: str, rpps: str, body: StatusIn, request: Request, who: Caller
) -> Member:
    ds = downstream(request)
    status = (
        pb.PROFESSIONAL_STATUS_AUTHORIZED
        if body.status == "authorized"
        else pb.PROFESSIONAL_STATUS_BLOCKED
    )
    resp = await ds.call(
        ds.consent.SetProfessionalStatus,
        pb.SetProfessionalStatusRequest(ins=ins, rpps=rpps, status=status),
        token=who.token,
    )
    return member(resp.member)


@router.delete(
    "/v1/dossiers/{ins}/professionals/{rpps}",
    status_code=204,
    responses=problems.responses(403, 404, 409),
)
async def remove_professional(ins: str, rpps: str, request: Request, who: Caller) -> None:
    ds = downstream(request)
    await ds.call(
        ds.consent.RemoveProfessional,
        pb.RemoveProfessionalRequest(ins=ins, rpps=rpps),
        token=who.token,
    )


@router.put(
    "/v1/dossiers/{ins}/attending-physician",
    response_model=Member,
    response_model_exclude_none=True,
    summary="Name the attending physician (GP)",
    responses=problems.responses(403, 404, 409),
)
async def attending_physician(ins: str, body: PhysicianIn, request: Request, who: Caller) -> Member:
    ds = downstream(request)
    resp = await ds.call(
        ds.consent.SetAttendingPhysician,
        pb.SetAttendingPhysicianRequest(ins=ins, rpps=body.rpps),
        token=who.token,
    )
    return member(resp.member)


@router.post(
    "/v1/dossiers/{ins}/emergency-access",
    status_code=201,
    response_model=Grant,
    summary="Break-glass or SAMU regulator access (rule 9)",
    responses=problems.responses(403, 404, 409),
)
async def emergency_access(ins: str, body: EmergencyIn, request: Request, who: Caller) -> Grant:
    ds = downstream(request)
    resp = await ds.call(
        ds.consent.RequestEmergencyAccess,
        pb.RequestEmergencyAccessRequest(ins=ins, reason=body.reason, mode=MODES[body.mode]),
        token=who.token,
    )
    g = resp.grant
    return Grant(
        id=g.id,
        ins=g.ins,
        rpps=g.rpps,
        mode=body.mode,
        reason=g.reason,
        granted_at=iso(g.granted_at),
        expires_at=iso(g.expires_at),
    )


@router.get("/v1/habilitation-matrix", response_model=Matrix)
async def habilitation_matrix(request: Request, who: Caller) -> Matrix:
    ds = downstream(request)
    resp = await ds.call(
        ds.consent.GetHabilitationMatrix, pb.GetHabilitationMatrixRequest(), token=who.token
    )
    return Matrix(
        provenance=resp.provenance,
        rules={r.profession: list(r.readable_type_codes) for r in resp.rules},
        sections={s.name: s.label for s in resp.sections},
        types={t.code: DocumentType(label=t.label, section=t.section) for t in resp.types},
    )

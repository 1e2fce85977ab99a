"""Administration: the directory of patients, professionals and system clients; key rotation."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from dmp.identity.v1 import identity_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import Downstream, iso
from dmp_gateway.security import Caller

router = APIRouter(tags=["administration"])


class PatientIn(BaseModel):
    ins: str = Field(max_length=32)
    vitale_serial: str = Field(max_length=32)
    given_name: str = Field(max_length=100)
    family_name: str = Field(max_length=100)
    birth_date: str = Field(max_length=10, description="YYYY-MM-DD")
    email: str = Field(default="", max_length=254)
    phone: str = Field(default="", max_length=32)
    password: str | None = Field(default=None, max_length=256)
    legal_representatives: list[str] = Field(
        default_factory=list, max_length=2, description="INS of a minor's legal representatives"
    )
    declared_gp: str | None = Field(
        default=None,
        max_length=32,
        description="RPPS of the attending physician declared to the insurer, when its "
        "registry says one: among doctors, only they may open the patient's DMP",
    )


class PatientOut(BaseModel):
    id: str
    ins: str
    vitale_serial: str
    given_name: str
    family_name: str
    birth_date: str
    email: str
    phone: str
    legal_representatives: list[str]
    declared_gp: str | None = None


class ProfessionalIn(BaseModel):
    rpps: str = Field(max_length=32)
    profession: str = Field(max_length=4)
    specialty: str | None = Field(default=None, max_length=100)
    given_name: str = Field(max_length=100)
    family_name: str = Field(max_length=100)
    email: str = Field(default="", max_length=254)
    phone: str = Field(default="", max_length=32)
    password: str | None = Field(default=None, max_length=256)
    roles: list[Literal["samu_regulator"]] = Field(default_factory=list, max_length=4)
    practice: Literal["liberal", "salaried", "mixed"] | None = Field(
        default=None,
        description="the RPPS directory's mode of practice: among nurses, only self-employed "
        "ones (liberal or mixed) may open a DMP",
    )


class ProfessionalOut(BaseModel):
    id: str
    rpps: str
    profession: str
    specialty: str
    given_name: str
    family_name: str
    email: str
    phone: str
    roles: list[str]
    practice: str | None = None


class AgentIn(BaseModel):
    login: str = Field(max_length=64)
    given_name: str = Field(max_length=100)
    family_name: str = Field(max_length=100)
    email: str = Field(default="", max_length=254)
    phone: str = Field(default="", max_length=32)
    password: str | None = Field(default=None, max_length=256)


class AgentOut(BaseModel):
    id: str
    login: str
    given_name: str
    family_name: str
    email: str
    phone: str
    roles: list[str]


class ClientIn(BaseModel):
    client_id: str = Field(max_length=128)
    public_key_pem: str = Field(max_length=8192)
    roles: list[Literal["insurer", "facility", "directory_sync", "mailbox"]] = Field(
        min_length=1, max_length=3
    )


class ClientOut(BaseModel):
    client_id: str
    roles: list[str]
    created_at: str


class RotationOut(BaseModel):
    new_key_id: str
    published_key_ids: list[str]


class RevocationOut(BaseModel):
    revoked_key_id: str
    signing_key_id: str
    published_key_ids: list[str]


def _ds(request: Request) -> Downstream:
    downstream: Downstream = request.app.state.downstream
    return downstream


@router.post(
    "/v1/admin/patients",
    status_code=201,
    response_model=PatientOut,
    responses=problems.responses(403, 404, 409),
)
async def create_patient(body: PatientIn, request: Request, who: Caller) -> PatientOut:
    ds = _ds(request)
    resp = await ds.call(
        ds.identity.RegisterPatient,
        pb.RegisterPatientRequest(**body.model_dump(exclude_none=True)),
        token=who.token,
    )
    p = resp.patient
    return PatientOut(
        id=p.id,
        ins=p.ins,
        vitale_serial=p.vitale_serial,
        given_name=p.given_name,
        family_name=p.family_name,
        birth_date=p.birth_date,
        email=p.email,
        phone=p.phone,
        legal_representatives=list(p.legal_representatives),
        declared_gp=p.declared_gp or None,
    )


@router.post(
    "/v1/admin/professionals",
    status_code=201,
    response_model=ProfessionalOut,
    responses=problems.responses(403, 409),
)
async def create_professional(
    body: ProfessionalIn, request: Request, who: Caller
) -> ProfessionalOut:
    ds = _ds(request)
    resp = await ds.call(
        ds.identity.RegisterProfessional,
        pb.RegisterProfessionalRequest(**body.model_dump(exclude_none=True)),
        token=who.token,
    )
    p = resp.professional
    return ProfessionalOut(
        id=p.id,
        rpps=p.rpps,
        profession=p.profession,
        specialty=p.specialty,
        given_name=p.given_name,
        family_name=p.family_name,
        email=p.email,
        phone=p.phone,
        roles=list(p.roles),
        practice=p.practice or None,
    )


@router.post(
    "/v1/admin/agents",
    status_code=201,
    response_model=AgentOut,
    summary="Register an insurance (CPAM) agent: opens DMPs, reads none",
    responses=problems.responses(403, 409),
)
async def create_agent(body: AgentIn, request: Request, who: Caller) -> AgentOut:
    ds = _ds(request)
    resp = await ds.call(
        ds.identity.RegisterAgent,
        pb.RegisterAgentRequest(**body.model_dump(exclude_none=True)),
        token=who.token,
    )
    a = resp.agent
    return AgentOut(
        id=a.id,
        login=a.login,
        given_name=a.given_name,
        family_name=a.family_name,
        email=a.email,
        phone=a.phone,
        roles=list(a.roles),
    )


@router.post(
    "/v1/admin/clients",
    status_code=201,
    response_model=ClientOut,
    responses=problems.responses(403, 409),
)
async def create_client(body: ClientIn, request: Request, who: Caller) -> ClientOut:
    ds = _ds(request)
    resp = await ds.call(
        ds.identity.RegisterClient,
        pb.RegisterClientRequest(
            client_id=body.client_id, public_key_pem=body.public_key_pem, roles=body.roles
        ),
        token=who.token,
    )
    return ClientOut(
        client_id=resp.client_id,
        roles=list(resp.roles),
        created_at=iso(resp.created_at),
    )


@router.post(
    "/v1/admin/signing-keys/rotate",
    response_model=RotationOut,
    responses=problems.responses(403, types={409: ("rotation-too-soon",)}),
)
async def rotate_signing_key(request: Request, who: Caller) -> RotationOut:
    ds = _ds(request)
    resp = await ds.call(
        ds.identity.RotateSigningKey, pb.RotateSigningKeyRequest(), token=who.token
    )
    return RotationOut(new_key_id=resp.new_key_id, published_key_ids=list(resp.published_key_ids))


@router.post(
    "/v1/admin/signing-keys/{key_id}/revoke",
    response_model=RevocationOut,
    summary="Withdraw a token-signing key from the JWKS for good (docs/signing-keys.md)",
    responses=problems.responses(403, 404),
)
async def revoke_signing_key(
    key_id: Annotated[str, Path(max_length=64)], request: Request, who: Caller
) -> RevocationOut:
    ds = _ds(request)
    resp = await ds.call(
        ds.identity.RevokeSigningKey, pb.RevokeSigningKeyRequest(key_id=key_id), token=who.token
    )
    return RevocationOut(
        revoked_key_id=resp.revoked_key_id,
        signing_key_id=resp.signing_key_id,
        published_key_ids=list(resp.published_key_ids),
    )

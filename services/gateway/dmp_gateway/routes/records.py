"""The dossier's structured records: medical profile, emergency contacts, advance directives."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from dmp.dossier.v1 import dossier_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso, stamp
from dmp_gateway.security import Caller

router = APIRouter(tags=["dossier"])


class Measurement(BaseModel):
    kind: str = Field(max_length=50, description="e.g. blood_pressure, glycaemia")
    value: str = Field(max_length=50)
    unit: str = Field(max_length=20)
    measured_at: datetime


class Profile(BaseModel):
    allergies: list[str] = Field(default_factory=list, max_length=100)
    history: list[str] = Field(default_factory=list, max_length=100)
    chronic_conditions: list[str] = Field(default_factory=list, max_length=100)
    ongoing_treatments: list[str] = Field(default_factory=list, max_length=100)
    measurements: list[Measurement] = Field(default_factory=list, max_length=1000)
    updated_at: str | None = None


class Contact(BaseModel):
    name: str = Field(max_length=100)
    relationship: str = Field(default="", max_length=50)
    phone: str = Field(default="", max_length=32)
    email: str = Field(default="", max_length=254)


class Contacts(BaseModel):
    contacts: list[Contact] = Field(max_length=10)


class DirectivesIn(BaseModel):
    text: str = Field(max_length=20_000)


class Directives(BaseModel):
    text: str
    version: int
    updated_at: str


def profile_out(p: pb.Profile) -> Profile:
    return Profile(
        allergies=list(p.allergies),
        history=list(p.history),
        chronic_conditions=list(p.chronic_conditions),
        ongoing_treatments=list(p.ongoing_treatments),
        measurements=[
            Measurement(
                kind=m.kind, value=m.value, unit=m.unit, measured_at=m.measured_at.ToDatetime()
            )
            for m in p.measurements
        ],
        updated_at=iso(p.updated_at) if p.HasField("updated_at") else None,
    )


def contacts_out(items: list[pb.EmergencyContact]) -> Contacts:
    return Contacts(
        contacts=[
            Contact(name=c.name, relationship=c.relationship, phone=c.phone, email=c.email)
            for c in items
        ]
    )


@router.get(
    "/v1/dossiers/{ins}/profile",
    response_model=Profile,
    response_model_exclude_none=True,
    responses=problems.responses(403, 404),
)
async def get_profile(ins: str, request: Request, who: Caller) -> Profile:
    ds = downstream(request)
    resp = await ds.call(ds.dossier.GetProfile, pb.GetProfileRequest(ins=ins), token=who.token)
    return profile_out(resp.profile)


@router.put(
    "/v1/dossiers/{ins}/profile",
    response_model=Profile,
    response_model_exclude_none=True,
    summary="Allergies, history, chronic conditions, treatment, measurements",
    responses=problems.responses(403, 404, 409),
)
async def put_profile(ins: str, body: Profile, request: Request, who: Caller) -> Profile:
    profile = pb.Profile(
        allergies=body.allergies,
        history=body.history,
        chronic_conditions=body.chronic_conditions,
        ongoing_treatments=body.ongoing_treatments,
    )
    for m in body.measurements:
        entry = profile.measurements.add(kind=m.kind, value=m.value, unit=m.unit)
        stamp(entry.measured_at, m.measured_at, "measurements.measured_at")
    ds = downstream(request)
    resp = await ds.call(
        ds.dossier.PutProfile, pb.PutProfileRequest(ins=ins, profile=profile), token=who.token
    )
    return profile_out(resp.profile)


@router.get(
    "/v1/dossiers/{ins}/emergency-contacts",
    response_model=Contacts,
    responses=problems.responses(403, 404),
)
async def get_contacts(ins: str, request: Request, who: Caller) -> Contacts:
    ds = downstream(request)
    resp = await ds.call(
        ds.dossier.GetEmergencyContacts, pb.GetEmergencyContactsRequest(ins=ins), token=who.token
    )
    return contacts_out(list(resp.contacts))


@router.put(
    "/v1/dossiers/{ins}/emergency-contacts",
    response_model=Contacts,
    responses=problems.responses(403, 404, 409),
)
async def put_contacts(ins: str, body: Contacts, request: Request, who: Caller) -> Contacts:
    ds = downstream(request)
    resp = await ds.call(
        ds.dossier.PutEmergencyContacts,
        pb.PutEmergencyContactsRequest(
            ins=ins, contacts=[pb.EmergencyContact(**c.model_dump()) for c in body.contacts]
        ),
        token=who.token,
    )
    return contacts_out(list(resp.contacts))


@router.get(
    "/v1/dossiers/{ins}/advance-directives",
    response_model=Directives | None,
    responses=problems.responses(403, 404),
)
async def get_directives(ins: str, request: Request, who: Caller) -> Directives | None:
    ds = downstream(request)
    resp = await ds.call(
        ds.dossier.GetAdvanceDirectives, pb.GetAdvanceDirectivesRequest(ins=ins), token=who.token
    )
    if not resp.HasField("directives"):
        return None
    d = resp.directives
    return Directives(text=d.text, version=d.version, updated_at=iso(d.updated_at))


@router.put(
    "/v1/dossiers/{ins}/advance-directives",
    response_model=Directives,
    summary="A new version replaces the current one (the old are kept)",
    responses=problems.responses(403, 404, 409),
)
async def put_directives(ins: str, body: DirectivesIn, request: Request, who: Caller) -> Directives:
    ds = downstream(request)
    resp = await ds.call(
        ds.dossier.PutAdvanceDirectives,
        pb.PutAdvanceDirectivesRequest(ins=ins, text=body.text),
        token=who.token,
    )
    d = resp.directives
    return Directives(text=d.text, version=d.version, updated_at=iso(d.updated_at))

"""Who the token belongs to."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from dmp.identity.v1 import identity_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import Downstream
from dmp_gateway.security import Caller

router = APIRouter(tags=["me"])

KIND_NAMES = {
    pb.ACCOUNT_KIND_PATIENT: "patient",
    pb.ACCOUNT_KIND_PROFESSIONAL: "professional",
    pb.ACCOUNT_KIND_ADMIN: "admin",
    pb.ACCOUNT_KIND_SYSTEM: "system",
    pb.ACCOUNT_KIND_SERVICE: "service",
    pb.ACCOUNT_KIND_AGENT: "agent",
}


class Me(BaseModel):
    kind: Literal["patient", "professional", "agent", "admin", "system", "service"]
    id: str
    ins: str | None = None
    rpps: str | None = None
    profession: str | None = None
    specialty: str | None = None
    roles: list[str]
    given_name: str | None = None
    family_name: str | None = None
    login: str | None = None


@router.get(
    "/v1/me", response_model=Me, response_model_exclude_none=True, responses=problems.responses(404)
)
async def me(request: Request, who: Caller) -> Me:
    ds: Downstream = request.app.state.downstream
    resp = await ds.call(ds.identity.GetMe, pb.GetMeRequest(), token=who.token)
    if who.app:
        # An app learns whose space it acts in (the INS its routes name), not the person's
        # name nor their login: no scope on the consent page says it would.
        return Me(kind="patient", id=resp.id, ins=resp.ins or None, roles=list(resp.roles))
    return Me(
        kind=KIND_NAMES[resp.kind],  # type: ignore[arg-type]
        id=resp.id,
        ins=resp.ins or None,
        rpps=resp.rpps or None,
        profession=resp.profession or None,
        specialty=resp.specialty or None,
        roles=list(resp.roles),
        given_name=resp.given_name or None,
        family_name=resp.family_name or None,
        login=resp.login or None,
    )

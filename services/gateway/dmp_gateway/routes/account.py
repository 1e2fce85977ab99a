"""The person's own account: password, sessions (and, below, contacts and activation)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from dmp.identity.v1 import identity_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso
from dmp_gateway.security import Caller
from dmp_gateway.throttle import account_throttled, auth_throttled, client_address
from dmp_kit.auth import Principal

router = APIRouter(tags=["account"])
# A password checked here is checked as a login's: the same per-address limit.
throttled = APIRouter(tags=["account"], dependencies=[Depends(auth_throttled)])

# What a call about one's own account meets: a caller who is not a person, an account gone.
MINE: dict[int, tuple[str, ...]] = {403: ("forbidden",), 404: ("not-found",)}
PASSWORD_REFUSALS = ("weak-password", "trivial-password", "common-password", "personal-password")


class PasswordChangeIn(BaseModel):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(
        min_length=1,
        max_length=256,
        description="12 to 256 characters; not a common or breached password, not a "
        "repetition or a sequence, not built from the person's names, numbers or addresses",
    )


class PasswordChanged(BaseModel):
    sessions_ended: int = Field(description="the person's other sessions, ended")


class Session(BaseModel):
    id: str
    created_at: str
    last_used_at: str = Field(description="the session's last login or refresh")
    expires_at: str
    user_agent: str | None = None
    current: bool = Field(description="the session of the token that asks")


class Sessions(BaseModel):
    items: list[Session]


class SessionsEnded(BaseModel):
    ended: int


def _login_key(who: Principal) -> str:
    """The per-account limit's key, shared with the login of the same account."""
    return f"login:{who.kind}:{(who.ins or who.rpps or who.subject).casefold()}"


@throttled.post(
    "/v1/me/password",
    response_model=PasswordChanged,
    summary="Change one's password (the current one is needed); ends one's other sessions",
    responses=problems.responses(
        423,
        types={
            403: ("forbidden",),
            404: ("not-found",),
            422: ("validation-error", "wrong-password", *PASSWORD_REFUSALS),
        },
    ),
)
async def change_password(body: PasswordChangeIn, request: Request, who: Caller) -> PasswordChanged:
    await account_throttled(request, _login_key(who))
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.ChangePassword,
        pb.ChangePasswordRequest(
            current_password=body.current_password,
            new_password=body.new_password,
            client_ip=client_address(request),
        ),
        token=who.token,
    )
    return PasswordChanged(sessions_ended=resp.sessions_ended)


@router.get(
    "/v1/me/sessions",
    response_model=Sessions,
    response_model_exclude_none=True,
    summary="One's sessions (one per login, alive while its refresh token is)",
    responses=problems.responses(types=MINE),
)
async def list_sessions(request: Request, who: Caller) -> Sessions:
    ds = downstream(request)
    resp = await ds.call(ds.identity.ListSessions, pb.ListSessionsRequest(), token=who.token)
    return Sessions(
        items=[
            Session(
                id=s.id,
                created_at=iso(s.created_at),
                last_used_at=iso(s.last_used_at),
                expires_at=iso(s.expires_at),
                user_agent=s.user_agent or None,
                current=s.current,
            )
            for s in resp.sessions
        ]
    )


@router.delete(
    "/v1/me/sessions/{session_id}",
    status_code=204,
    summary="End one of one's sessions (its refresh token stops working; an access token "
    "already issued lives until it expires)",
    responses=problems.responses(types=MINE),
)
async def end_session(
    request: Request,
    who: Caller,
    session_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> None:
    ds = downstream(request)
    await ds.call(
        ds.identity.EndSession, pb.EndSessionRequest(session_id=session_id), token=who.token
    )


@router.delete(
    "/v1/me/sessions",
    response_model=SessionsEnded,
    summary="End all of one's sessions, or all but the current one",
    responses=problems.responses(types=MINE),
)
async def end_sessions(
    request: Request,
    who: Caller,
    keep_current: Annotated[
        bool, Query(description="true: every session but the one of this token")
    ] = False,
) -> SessionsEnded:
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.EndSessions, pb.EndSessionsRequest(keep_current=keep_current), token=who.token
    )
    return SessionsEnded(ended=resp.ended)

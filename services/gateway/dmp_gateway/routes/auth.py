"""Authentication: password then one-time code, refresh, client credentials, JWKS."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from dmp.identity.v1 import identity_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import Downstream, iso
from dmp_gateway.throttle import account_throttled, assertion_client, auth_throttled

router = APIRouter(tags=["authentication"])
# Login, code, refresh and token share one per-address limit (see throttle.py).
throttled = APIRouter(tags=["authentication"], dependencies=[Depends(auth_throttled)])

KINDS = {
    "patient": pb.ACCOUNT_KIND_PATIENT,
    "professional": pb.ACCOUNT_KIND_PROFESSIONAL,
    "agent": pb.ACCOUNT_KIND_AGENT,
    "admin": pb.ACCOUNT_KIND_ADMIN,
}


class LoginIn(BaseModel):
    kind: Literal["patient", "professional", "agent", "admin"]
    login: str = Field(
        min_length=1, max_length=64, description="INS, RPPS, or the agent's or administrator's name"
    )
    password: str = Field(min_length=1, max_length=256)


class LoginOut(BaseModel):
    challenge_id: str
    channel: Literal["email", "sms"]
    expires_at: str


class OtpIn(BaseModel):
    challenge_id: str = Field(min_length=1, max_length=64)
    code: str = Field(pattern=r"^[0-9]{6}$")


class Tokens(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105
    expires_in: int


class RefreshIn(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=128)


class ClientToken(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105
    expires_in: int


class Jwk(BaseModel):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class Jwks(BaseModel):
    keys: list[Jwk]


def _downstream(request: Request) -> Downstream:
    downstream: Downstream = request.app.state.downstream
    return downstream


def _tokens(pair: pb.TokenPair) -> Tokens:
    return Tokens(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@throttled.post(
    "/v1/auth/login",
    response_model=LoginOut,
    summary="Password step; sends a code",
    responses=problems.responses(423, types={401: ("invalid-credentials",)}),
)
async def login(body: LoginIn, request: Request) -> LoginOut:
    await account_throttled(request, f"login:{body.kind}:{body.login.casefold()}")
    ds = _downstream(request)
    resp = await ds.call(
        ds.identity.Login,
        pb.LoginRequest(
            kind=KINDS[body.kind],
            login=body.login,
            password=body.password,
            client_ip=request.client.host if request.client else "",
        ),
    )
    return LoginOut(
        challenge_id=resp.challenge_id,
        channel="email" if resp.channel == pb.OTP_CHANNEL_EMAIL else "sms",
        expires_at=iso(resp.expires_at),
    )


@throttled.post(
    "/v1/auth/otp",
    response_model=Tokens,
    summary="One-time code step; issues tokens",
    responses=problems.responses(423, types={401: ("invalid-otp", "otp-expired")}),
)
async def otp(body: OtpIn, request: Request) -> Tokens:
    await account_throttled(request, f"challenge:{body.challenge_id}")
    ds = _downstream(request)
    resp = await ds.call(
        ds.identity.VerifyOtp,
        pb.VerifyOtpRequest(
            challenge_id=body.challenge_id,
            code=body.code,
            user_agent=request.headers.get("user-agent", "")[:200],
        ),
    )
    return _tokens(resp.tokens)


@throttled.post(
    "/v1/auth/refresh",
    response_model=Tokens,
    summary="Rotate a refresh token",
    responses=problems.responses(
        types={401: ("invalid-token", "refresh-token-reused", "session-expired")}
    ),
)
async def refresh(body: RefreshIn, request: Request) -> Tokens:
    await account_throttled(request, f"refresh:{body.refresh_token}")
    ds = _downstream(request)
    resp = await ds.call(ds.identity.Refresh, pb.RefreshRequest(refresh_token=body.refresh_token))
    return _tokens(resp.tokens)


@router.post("/v1/auth/logout", status_code=204, summary="Revoke a refresh token's family")
async def logout(body: RefreshIn, request: Request) -> None:
    ds = _downstream(request)
    await ds.call(ds.identity.Logout, pb.LogoutRequest(refresh_token=body.refresh_token))


@throttled.post(
    "/v1/auth/token",
    response_model=ClientToken,
    summary="OAuth2 client credentials with a signed client assertion (RFC 7523)",
    responses=problems.responses(types={401: ("invalid-client",)}),
)
async def token(
    request: Request,
    grant_type: Annotated[str, Form(max_length=64)],
    client_assertion_type: Annotated[str, Form(max_length=128)],
    client_assertion: Annotated[str, Form(max_length=8192)],
    scope: Annotated[str, Form(max_length=512)] = "",
) -> ClientToken:
    await account_throttled(request, assertion_client(client_assertion))
    ds = _downstream(request)
    resp = await ds.call(
        ds.identity.IssueClientToken,
        pb.IssueClientTokenRequest(
            grant_type=grant_type,
            client_assertion_type=client_assertion_type,
            client_assertion=client_assertion,
            scope=scope,
        ),
    )
    return ClientToken(access_token=resp.access_token, expires_in=resp.expires_in)


@router.get("/.well-known/jwks.json", response_model=Jwks, summary="Public token-signing keys")
async def jwks(request: Request) -> JSONResponse:
    ds = _downstream(request)
    resp = await ds.call(ds.identity.GetJwks, pb.GetJwksRequest())
    body = Jwks(
        keys=[Jwk(kty=k.kty, crv=k.crv, x=k.x, kid=k.kid, alg=k.alg, use=k.use) for k in resp.keys]
    )
    return JSONResponse(body.model_dump(), headers={"Cache-Control": "public, max-age=300"})

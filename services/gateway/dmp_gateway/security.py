"""Who is calling: the bearer token, verified here (deny by default) and forwarded downstream."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dmp_gateway.app_access import check_app
from dmp_kit.auth import Principal, TokenVerifier
from dmp_kit.errors import Unauthenticated

bearer = HTTPBearer(
    auto_error=False, description="An access token from /v1/auth/otp or /v1/auth/token"
)


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("a bearer token is required")
    verifier: TokenVerifier = request.app.state.verifier
    who = await verifier.verify(credentials.credentials)
    if who.app:
        await check_app(request, who)
    return who


Caller = Annotated[Principal, Depends(principal)]

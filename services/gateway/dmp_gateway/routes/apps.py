"""Apps the patient connects (docs/connected-apps.md): the catalogue administrators keep, the
OAuth 2.0 endpoints an app talks to (authorization code with PKCE, RFC 6749 / RFC 7636, in the
profile of RFC 9700), the consent the portal asks of the patient, and the patient's list of
connected apps. Identity holds the protocol and the storage; these routes carry it over HTTP.

The OAuth endpoints (`/oauth/…`, `/.well-known/oauth-authorization-server`) answer as RFC 6749
and RFC 8414 say, for any OAuth client library to understand; the `/v1` routes answer as the
rest of the API does (problem+json)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from dmp.identity.v1 import identity_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso
from dmp_gateway.security import Caller
from dmp_gateway.throttle import auth_throttled
from dmp_kit import app_scopes
from dmp_kit.errors import InvalidArgument

router = APIRouter(tags=["connected apps"])
oauth = APIRouter(tags=["OAuth 2.0 (connected apps)"], dependencies=[Depends(auth_throttled)])

PORTAL_CONSENT = "/portail/#/autoriser"
FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
ClientId = Annotated[str, Path(min_length=1, max_length=64)]


class Scope(BaseModel):
    scope: str
    label: str = Field(description="what it allows, in plain French, as the patient reads it")


class AppOut(BaseModel):
    client_id: str
    name: str
    publisher: str
    description: str
    website: str | None = None
    redirect_uris: list[str]
    scopes: list[Scope]
    logo_url: str | None = Field(None, description="the logo's address on this API, if any")
    created_at: str | None = None


class Apps(BaseModel):
    items: list[AppOut]


class AppIn(BaseModel):
    name: str = Field(min_length=1, max_length=80)
    publisher: str = Field(min_length=1, max_length=120)
    description: str = Field("", max_length=2000)
    website: str = Field("", max_length=512, description="https")
    redirect_uris: list[Annotated[str, Field(max_length=512)]] = Field(
        min_length=1,
        max_length=5,
        description="matched exactly: https, http on a loopback address (RFC 8252 §7.3), or a "
        "private-use scheme such as com.example.app:/callback (RFC 8252 §7.1)",
    )
    scopes: list[Annotated[str, Field(max_length=64)]] = Field(
        min_length=1, max_length=10, description=", ".join(app_scopes.SCOPES)
    )
    logo_base64: str | None = Field(
        None,
        max_length=350_000,
        description="PNG or JPEG, 256 KiB at most; on PUT, absent keeps the current logo",
    )


class AuthorizationCheck(BaseModel):
    app: AppOut | None = None
    scopes: list[Scope] = Field(default_factory=list, description="what the app asks for")
    redirect_uri: str | None = None
    error_redirect: str | None = Field(
        None,
        description="the request is refused and the app must hear it: send the browser there",
    )


class AuthorizationIn(BaseModel):
    query: str = Field(
        min_length=1, max_length=4096, description="the authorization request's query string"
    )
    allow: bool = Field(description="the patient's answer")


class AuthorizationDecision(BaseModel):
    redirect_to: str = Field(description="where the browser goes next: back to the app")


class ConnectedApp(BaseModel):
    client_id: str
    name: str
    publisher: str
    logo_url: str | None = None
    scopes: list[Scope]
    connected_at: str
    last_used_at: str | None = None


class ConnectedApps(BaseModel):
    items: list[ConnectedApp]


def _scopes(names: Any) -> list[Scope]:
    return [Scope(scope=s, label=app_scopes.label(s)) for s in names]


def _logo_url(app: pb.App) -> str | None:
    return f"/v1/apps/{app.client_id}/logo" if app.logo_type else None


def app_out(app: pb.App) -> AppOut:
    return AppOut(
        client_id=app.client_id,
        name=app.name,
        publisher=app.publisher,
        description=app.description,
        website=app.website or None,
        redirect_uris=list(app.redirect_uris),
        scopes=_scopes(app.scopes),
        logo_url=_logo_url(app),
        created_at=iso(app.created_at) if app.HasField("created_at") else None,
    )


def _fields(body: AppIn) -> pb.AppFields:
    logo = b""
    if body.logo_base64:
        try:
            logo = base64.b64decode(body.logo_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidArgument(
                "logo_base64 is not base64", field="logo_base64", slug="invalid-logo"
            ) from exc
    return pb.AppFields(
        name=body.name,
        publisher=body.publisher,
        description=body.description,
        website=body.website,
        redirect_uris=body.redirect_uris,
        scopes=body.scopes,
        logo=logo,
    )


# the catalogue ---------------------------------------------------------------------------


@router.get("/v1/apps", response_model=Apps, summary="The catalogue of referenced apps (public)")
async def list_apps(request: Request) -> Apps:
    ds = downstream(request)
    resp = await ds.call(ds.identity.ListApps, pb.ListAppsRequest())
    return Apps(items=[app_out(a) for a in resp.apps])


@router.get(
    "/v1/apps/{client_id}",
    response_model=AppOut,
    response_model_exclude_none=True,
    summary="One app of the catalogue (public)",
    responses=problems.responses(404),
)
async def get_app(client_id: ClientId, request: Request) -> AppOut:
    ds = downstream(request)
    resp = await ds.call(ds.identity.GetApp, pb.GetAppRequest(client_id=client_id))
    return app_out(resp.app)


@router.get(
    "/v1/apps/{client_id}/logo",
    response_class=Response,
    summary="An app's logo (public)",
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, **problems.responses(404)},
)
async def app_logo(client_id: ClientId, request: Request) -> Response:
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.GetApp, pb.GetAppRequest(client_id=client_id, include_logo=True)
    )
    if not resp.app.logo_type:
        return problems.problem(404, "not-found", "Not found", "this app has no logo")
    return Response(
        resp.app.logo,
        media_type=resp.app.logo_type,
        headers={
            "Cache-Control": "public, max-age=3600",
            "Content-Security-Policy": "default-src 'none'",
        },
    )


@router.post(
    "/v1/admin/apps",
    status_code=201,
    response_model=AppOut,
    response_model_exclude_none=True,
    summary="Reference an app (administrators)",
    responses=problems.responses(403, 422),
)
async def register_app(body: AppIn, request: Request, who: Caller) -> AppOut:
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.RegisterApp,
        pb.RegisterAppRequest(app=_fields(body)),
        token=who.token,
        fields={"logo": "logo_base64"},
    )
    return app_out(resp.app)


@router.put(
    "/v1/admin/apps/{client_id}",
    response_model=AppOut,
    response_model_exclude_none=True,
    summary="Change an app (administrators); scopes taken away end its connections",
    responses=problems.responses(403, 404, 422),
)
async def update_app(client_id: ClientId, body: AppIn, request: Request, who: Caller) -> AppOut:
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.UpdateApp,
        pb.UpdateAppRequest(
            client_id=client_id, app=_fields(body), keep_logo=body.logo_base64 is None
        ),
        token=who.token,
        fields={"logo": "logo_base64"},
    )
    return app_out(resp.app)


@router.delete(
    "/v1/admin/apps/{client_id}",
    status_code=204,
    summary="Take an app out of the catalogue (administrators): every connection ends",
    responses=problems.responses(403, 404),
)
async def delist_app(client_id: ClientId, request: Request, who: Caller) -> Response:
    ds = downstream(request)
    await ds.call(ds.identity.DelistApp, pb.DelistAppRequest(client_id=client_id), token=who.token)
    return Response(status_code=204)


# the patient's consent (the portal's page) ---------------------------------------------------


@router.get(
    "/v1/oauth/authorization",
    response_model=AuthorizationCheck,
    response_model_exclude_none=True,
    summary="What an authorization request asks, for the consent page (its query as is)",
    responses=problems.responses(422),
)
async def check_authorization(request: Request) -> AuthorizationCheck:
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.CheckAuthorization, pb.CheckAuthorizationRequest(query=request.url.query)
    )
    if resp.error_redirect:
        return AuthorizationCheck(error_redirect=resp.error_redirect)
    return AuthorizationCheck(
        app=app_out(resp.app), scopes=_scopes(resp.scopes), redirect_uri=resp.redirect_uri
    )


@router.post(
    "/v1/oauth/authorization",
    response_model=AuthorizationDecision,
    summary="The patient allows or refuses an app (their own token)",
    responses=problems.responses(403, 422),
)
async def authorize(body: AuthorizationIn, request: Request, who: Caller) -> AuthorizationDecision:
    ds = downstream(request)
    resp = await ds.call(
        ds.identity.Authorize,
        pb.AuthorizeRequest(query=body.query, allow=body.allow),
        token=who.token,
        fields={"client_id": "query", "redirect_uri": "query"},
    )
    return AuthorizationDecision(redirect_to=resp.redirect_to)


# the patient's connected apps ---------------------------------------------------------------


@router.get(
    "/v1/me/connected-apps",
    response_model=ConnectedApps,
    response_model_exclude_none=True,
    summary="The apps connected to one's account, what each may do and when it last acted",
    responses=problems.responses(403),
)
async def connected_apps(request: Request, who: Caller) -> ConnectedApps:
    ds = downstream(request)
    resp = await ds.call(ds.identity.ListConnections, pb.ListConnectionsRequest(), token=who.token)
    return ConnectedApps(
        items=[
            ConnectedApp(
                client_id=c.app.client_id,
                name=c.app.name,
                publisher=c.app.publisher,
                logo_url=_logo_url(c.app),
                scopes=_scopes(c.scopes),
                connected_at=iso(c.connected_at),
                last_used_at=iso(c.last_used_at) if c.HasField("last_used_at") else None,
            )
            for c in resp.connections
        ]
    )


@router.delete(
    "/v1/me/connected-apps/{client_id}",
    status_code=204,
    summary="Disconnect an app: its tokens stop working at once",
    responses=problems.responses(403, 404),
)
async def disconnect(client_id: ClientId, request: Request, who: Caller) -> Response:
    ds = downstream(request)
    await ds.call(
        ds.identity.Disconnect, pb.DisconnectRequest(client_id=client_id), token=who.token
    )
    return Response(status_code=204)


# OAuth 2.0 endpoints -----------------------------------------------------------------------


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get(
    "/.well-known/oauth-authorization-server",
    summary="OAuth 2.0 authorization server metadata (RFC 8414)",
)
async def metadata(request: Request) -> JSONResponse:
    base = _base(request)
    settings = downstream(request).settings
    return JSONResponse(
        {
            "issuer": settings.jwt_issuer,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": list(app_scopes.SCOPES),
            "authorization_response_iss_parameter_supported": True,
            "service_documentation": f"{base}/docs",
        }
    )


@oauth.get(
    "/oauth/authorize",
    response_class=RedirectResponse,
    status_code=302,
    summary="The authorization endpoint (RFC 6749 §4.1.1, PKCE S256 required)",
    responses={
        302: {
            "description": "to the portal's consent page, or back to the app with an "
            "error (RFC 6749 §4.1.2.1)"
        }
    },
)
async def authorize_endpoint(request: Request) -> RedirectResponse:
    ds = downstream(request)
    query = request.url.query
    # A request the app must hear of goes back to it; any other, valid or not to be trusted
    # (unknown app, unregistered address), goes to the portal, which shows it in French.
    target = f"{PORTAL_CONSENT}?{query}"
    try:
        resp = await ds.call(
            ds.identity.CheckAuthorization, pb.CheckAuthorizationRequest(query=query)
        )
        target = resp.error_redirect or target
    except InvalidArgument:
        pass
    return RedirectResponse(target, status_code=302, headers=NO_STORE)


_FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            FORM: {"schema": {"type": "object", "additionalProperties": {"type": "string"}}}
        },
    }
}


async def _form(request: Request) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if media != FORM:
        return ""
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        return ""


def _oauth_answer(status: int, body: str) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=NO_STORE)


async def _through_identity(request: Request, method: str, message: Any) -> Response:
    """An OAuth endpoint: the form as sent, to identity; its answer (status and JSON) as is."""
    form = await _form(request)
    if not form:
        return _oauth_answer(400, _INVALID_REQUEST)
    ds = downstream(request)
    resp = await ds.call(getattr(ds.identity, method), message(form=form))
    return _oauth_answer(resp.status, resp.body or "{}")


_INVALID_REQUEST = (
    '{"error": "invalid_request", "error_description": '
    '"the body is application/x-www-form-urlencoded, in ASCII"}'
)


@oauth.post(
    "/oauth/token",
    summary="The token endpoint (RFC 6749 §3.2): authorization_code (with code_verifier) and "
    "refresh_token grants, for public clients; errors as RFC 6749 §5.2",
    openapi_extra=_FORM_BODY,
    responses={
        200: {"description": "access_token, token_type, expires_in, refresh_token, scope"},
        400: problems.oauth_error("an OAuth error: invalid_request, invalid_grant, …"),
        401: problems.oauth_error("invalid_client"),
    },
)
async def token_endpoint(request: Request) -> Response:
    return await _through_identity(request, "AppToken", pb.AppTokenRequest)


@oauth.post(
    "/oauth/revoke",
    summary="Token revocation (RFC 7009): a refresh token, and the connection it belongs to",
    openapi_extra=_FORM_BODY,
    responses={
        200: {"description": "revoked, or not a token of this client"},
        400: problems.oauth_error("invalid_request, unsupported_token_type"),
        401: problems.oauth_error("invalid_client"),
    },
)
async def revoke_endpoint(request: Request) -> Response:
    return await _through_identity(request, "RevokeAppToken", pb.RevokeAppTokenRequest)

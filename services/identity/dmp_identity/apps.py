"""Apps a patient connects: the catalogue, and the OAuth 2.0 authorization server that gives an
app a token limited to one patient and the scopes they granted (docs/connected-apps.md).

oauthlib speaks the protocol (RFC 6749 authorization code and refresh token grants, RFC 7636
PKCE, RFC 7009 revocation); identity keeps the storage and signs the tokens. A request runs in
three steps: everything oauthlib's validator may ask is read from the database first (the app;
the code or refresh token presented; the patient), the validator answers from that snapshot and
notes what to store, and the notes are written afterwards. A code or a refresh token is spent
by one atomic update there, so one presented twice is refused, and ends the connection it opened
(RFC 6749 §4.1.2; RFC 9700 §2.2.2 and §4.14.2).

The profile of RFC 9700 kept here: public clients only, PKCE with S256 only, redirect URIs
matched exactly (https, a loopback address, or a private-use scheme, RFC 8252), codes that live
60 seconds and serve once, refresh tokens rotated at each use, and the `iss` parameter in every
authorization response (RFC 9207).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import puremagic
from oauthlib.common import Request
from oauthlib.oauth2 import RequestValidator, WebApplicationServer
from oauthlib.oauth2.rfc6749 import errors as oauth_errors
from oauthlib.oauth2.rfc6749.grant_types.authorization_code import code_challenge_method_s256
from uuid6 import uuid7

from dmp.identity.v1 import identity_pb2 as pb
from dmp_identity import domain
from dmp_identity.store import AppStore
from dmp_kit import app_scopes
from dmp_kit.auth import Principal, TokenVerifier, caller
from dmp_kit.errors import DmpError, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from dmp_kit.logging import get_logger
from dmp_kit.proto import timestamp

log = get_logger(__name__)
# oauthlib's debug lines quote codes and tokens: they never reach the service's log.
logging.getLogger("oauthlib").setLevel(logging.WARNING)

CODE_TTL = timedelta(seconds=60)
LAST_USED_EVERY = timedelta(minutes=1)
MAX_REDIRECT_URIS = 5
MAX_LOGO_BYTES = 256 * 1024
LOGO_TYPES = frozenset({"image/png", "image/jpeg"})
# RFC 8252 §7.3 and §8.3: a loopback IP literal, not "localhost" (which a resolver may send
# elsewhere); any port is accepted at authorization, the app's listener picks one.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1"})
# RFC 8252 §7.1: a private-use scheme in reverse domain-name form (com.example.app).
PRIVATE_SCHEME = re.compile(r"[a-z][a-z0-9-]*(\.[a-z0-9-]+)+")
# RFC 7636 §4.1 and §4.2: the verifier's characters and length; an S256 challenge's form.
VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
# oauthlib reads the request's address only to parse its query and insists on https; the
# gateway terminates TLS, so the address handed to it is this fixed one.
_ENDPOINT = "https://identity.internal/oauth"
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _text(value: str, name: str, *, required: bool = True, limit: int) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidArgument(f"{name} is required", field=name)
    if len(value) > limit:
        raise InvalidArgument(f"{name} is {limit} characters at most", field=name)
    return value


def check_redirect_uri(uri: str) -> str:
    """An address a code may be sent to: https, http on a loopback address (RFC 8252 §7.3), or
    a private-use scheme with a dot in it (RFC 8252 §7.1); no fragment, no user info."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise InvalidArgument("not a URI", field="redirect_uris") from exc
    scheme = parts.scheme.lower()
    try:
        parts.port  # noqa: B018 - a port that is not a number is refused here
    except ValueError as exc:
        raise InvalidArgument("not a URI", field="redirect_uris") from exc
    ok = (
        (scheme == "https" and bool(parts.hostname))
        or (scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
        or bool(PRIVATE_SCHEME.fullmatch(scheme))
    )
    if not ok or parts.fragment or "@" in parts.netloc or len(uri) > 512 or " " in uri:
        raise InvalidArgument(
            "a redirect URI is https, http on a loopback address, or a private-use scheme "
            "(com.example.app:/callback), without a fragment",
            field="redirect_uris",
            slug="invalid-redirect-uri",
        )
    return uri


def _loopback_portless(uri: str) -> str | None:
    """An http address on a loopback IP literal, without its port; None for any other."""
    parts = urlsplit(uri)
    host = parts.hostname
    if parts.scheme != "http" or host not in LOOPBACK_HOSTS:
        return None
    return urlunsplit(parts._replace(netloc=f"[{host}]" if ":" in host else host))


def registered(uri: str, uris: list[str]) -> bool:
    """The address is one the app registered: exactly, but for a loopback address's port,
    which the app's listener chooses when it starts (RFC 8252 §7.3)."""
    if uri in uris:
        return True
    try:
        wanted = _loopback_portless(uri)
        return wanted is not None and any(_loopback_portless(u) == wanted for u in uris)
    except ValueError:
        return False


def check_app_fields(fields: pb.AppFields) -> dict[str, Any]:
    scopes = list(dict.fromkeys(fields.scopes))
    if not scopes:
        raise InvalidArgument("an app asks for one scope at least", field="scopes")
    if unknown := app_scopes.unknown(scopes):
        raise InvalidArgument(
            f"unknown scopes: {', '.join(unknown)}", field="scopes", slug="invalid-scope"
        )
    uris = list(dict.fromkeys(fields.redirect_uris))
    if not uris or len(uris) > MAX_REDIRECT_URIS:
        raise InvalidArgument(
            f"an app has 1 to {MAX_REDIRECT_URIS} redirect URIs", field="redirect_uris"
        )
    website = _text(fields.website, "website", required=False, limit=512)
    if website and urlsplit(website).scheme != "https":
        raise InvalidArgument("the website is an https address", field="website")
    doc: dict[str, Any] = {
        "name": _text(fields.name, "name", limit=80),
        "publisher": _text(fields.publisher, "publisher", limit=120),
        "description": _text(fields.description, "description", required=False, limit=2000),
        "redirect_uris": [check_redirect_uri(u) for u in uris],
        "scopes": scopes,
        "website": website,
    }
    if fields.logo:
        doc |= _logo(fields.logo)
    return doc


def _logo(content: bytes) -> dict[str, Any]:
    if len(content) > MAX_LOGO_BYTES:
        raise InvalidArgument("the logo is 256 KiB at most", field="logo", slug="invalid-logo")
    try:
        sniffed = puremagic.from_string(content[:4096], mime=True)
    except puremagic.PureError:
        sniffed = ""
    if sniffed not in LOGO_TYPES:
        raise InvalidArgument("the logo is a PNG or JPEG image", field="logo", slug="invalid-logo")
    return {"logo": content, "logo_type": sniffed}


def app_message(doc: dict[str, Any], *, logo: bool = False) -> pb.App:
    """An app as the catalogue shows it to anyone: its redirect URIs too, which every
    authorization request carries in the clear anyway."""
    return pb.App(
        client_id=doc["_id"],
        name=doc["name"],
        publisher=doc["publisher"],
        description=doc.get("description", ""),
        redirect_uris=doc["redirect_uris"],
        scopes=doc["scopes"],
        website=doc.get("website", ""),
        logo_type=doc.get("logo_type", ""),
        logo=doc.get("logo", b"") if logo else b"",
        listed=doc.get("listed", False),
        created_at=timestamp(doc.get("created_at")),
    )


def with_iss(uri: str, issuer: str) -> str:
    """The authorization response names its issuer (RFC 9207), so an app talking to several
    servers knows which one answered (mix-up attacks, RFC 9700 §4.4)."""
    parts = urlsplit(uri)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=query + urlencode({"iss": issuer})))


@dataclass
class Snapshot:
    """What the validator may ask, read beforehand; what it noted, written afterwards."""

    now: datetime
    digest: Any
    app: dict[str, Any] | None = None
    code: dict[str, Any] | None = None
    token: dict[str, Any] | None = None
    account: dict[str, Any] | None = None
    connection: dict[str, Any] | None = None
    new_code: dict[str, Any] | None = None
    issued: dict[str, Any] | None = None
    revoked: str = ""
    access: Principal | None = None  # an access token presented for revocation, verified

    def listed_app(self, client_id: str) -> dict[str, Any] | None:
        app = self.app
        if app is None or app["_id"] != client_id or not app.get("listed"):
            return None
        return app


@dataclass
class _Client:
    client_id: str
    scopes: list[str] = field(default_factory=list)


class Validator(RequestValidator):  # type: ignore[misc]
    """oauthlib's questions, answered from a Snapshot."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    # clients: public ones only, identified by their client_id ------------------------------

    def client_authentication_required(self, request: Request, *args: Any, **kw: Any) -> bool:
        return False

    def authenticate_client(self, request: Request, *args: Any, **kw: Any) -> bool:
        return False

    def authenticate_client_id(
        self, client_id: str, request: Request, *args: Any, **kw: Any
    ) -> bool:
        app = self.snap.listed_app(client_id)
        if app is None:
            return False
        request.client = _Client(client_id, app["scopes"])
        return True

    def validate_client_id(self, client_id: str, request: Request, *args: Any, **kw: Any) -> bool:
        return self.authenticate_client_id(client_id, request)

    def validate_redirect_uri(
        self, client_id: str, redirect_uri: str, request: Request, *args: Any, **kw: Any
    ) -> bool:
        app = self.snap.listed_app(client_id)
        return app is not None and registered(redirect_uri, app["redirect_uris"])

    def get_default_redirect_uri(
        self, client_id: str, request: Request, *args: Any, **kw: Any
    ) -> str | None:
        return None  # an app always says where the code goes

    def validate_response_type(
        self, client_id: str, response_type: str, client: Any, request: Request, *a: Any, **k: Any
    ) -> bool:
        return response_type == "code"

    def validate_grant_type(
        self, client_id: str, grant_type: str, client: Any, request: Request, *a: Any, **k: Any
    ) -> bool:
        return grant_type in ("authorization_code", "refresh_token")

    def validate_scopes(
        self, client_id: str, scopes: list[str], client: Any, request: Request, *a: Any, **k: Any
    ) -> bool:
        app = self.snap.listed_app(client_id)
        return bool(scopes) and app is not None and set(scopes) <= set(app["scopes"])

    def get_default_scopes(
        self, client_id: str, request: Request, *args: Any, **kw: Any
    ) -> list[str]:
        return []  # an app names what it asks for

    def is_pkce_required(self, client_id: str, request: Request) -> bool:
        return True

    # codes -------------------------------------------------------------------------------

    def save_authorization_code(
        self, client_id: str, code: dict[str, str], request: Request, *args: Any, **kw: Any
    ) -> None:
        account = self.snap.account
        assert account is not None
        self.snap.new_code = {
            "_id": self.snap.digest(code["code"]),
            "client_id": client_id,
            "account_id": account["_id"],
            "redirect_uri": request.redirect_uri,
            "scopes": list(request.scopes),
            "challenge": request.code_challenge,
            "challenge_method": request.code_challenge_method,
            "created_at": self.snap.now,
            "expires_at": self.snap.now + CODE_TTL,
            "used": False,
        }

    def validate_code(
        self, client_id: str, code: str, client: Any, request: Request, *args: Any, **kw: Any
    ) -> bool:
        found = self.snap.code
        app = self.snap.listed_app(client_id)
        if (
            found is None
            or found["used"]
            or found["expires_at"] <= self.snap.now
            or found["client_id"] != client_id
            or self.snap.account is None
            or app is None
            or not registered(found["redirect_uri"], app["redirect_uris"])
        ):
            return False
        request.user = self.snap.account
        # What the app may still ask for: an administrator may have narrowed it meanwhile.
        request.scopes = [s for s in found["scopes"] if s in app["scopes"]]
        return bool(request.scopes)

    def get_code_challenge(self, code: str, request: Request) -> str | None:
        return self.snap.code["challenge"] if self.snap.code else None

    def get_code_challenge_method(self, code: str, request: Request) -> str | None:
        return self.snap.code["challenge_method"] if self.snap.code else None

    def confirm_redirect_uri(
        self, client_id: str, code: str, redirect_uri: str, client: Any, request: Request, *a: Any
    ) -> bool:
        return self.snap.code is not None and self.snap.code["redirect_uri"] == redirect_uri

    def invalidate_authorization_code(
        self, client_id: str, code: str, request: Request, *args: Any, **kw: Any
    ) -> None:
        pass  # spent atomically when the notes are written (AppStore.use_code)

    # tokens ------------------------------------------------------------------------------

    def save_bearer_token(self, token: dict[str, Any], request: Request, *a: Any, **k: Any) -> None:
        self.snap.issued = dict(token)

    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: Request, *args: Any, **kw: Any
    ) -> bool:
        found, connection = self.snap.token, self.snap.connection
        if (
            found is None
            or found["status"] != "active"
            or found["expires_at"] <= self.snap.now
            or found["client_id"] != client.client_id
            or connection is None
            or connection["status"] != "active"
            or self.snap.account is None
        ):
            return False
        request.user = self.snap.account
        return True

    def get_original_scopes(
        self, refresh_token: str, request: Request, *args: Any, **kw: Any
    ) -> list[str]:
        app = self.snap.app
        if self.snap.token is None or app is None:
            return []
        return [s for s in self.snap.token["scopes"] if s in app["scopes"]]

    def is_within_original_scope(
        self, request_scopes: list[str], refresh_token: str, request: Request, *a: Any, **k: Any
    ) -> bool:
        return False

    def rotate_refresh_token(self, request: Request) -> bool:
        return True

    def revoke_token(
        self, token: str, token_type_hint: str | None, request: Request, *args: Any, **kw: Any
    ) -> None:
        found = self.snap.token
        if found is not None and found["client_id"] == request.client_id:
            self.snap.revoked = found["connection"]
        elif self.snap.access is not None and self.snap.access.app == request.client_id:
            self.snap.revoked = self.snap.access.connection  # an access token: its connection


def oauth_server(snap: Snapshot, token: Any, ttl: int) -> WebApplicationServer:
    server = WebApplicationServer(Validator(snap), token_generator=token, token_expires_in=ttl)
    # PKCE with S256 only: "plain" gives nothing against a code intercepted (RFC 9700 §2.1.1).
    server.auth_grant._code_challenge_methods = {"S256": code_challenge_method_s256}
    return server


def _one(query: str, name: str) -> str:
    values = parse_qs(query).get(name, [])
    return values[0] if len(values) == 1 else ""


class ConnectedApps:
    """The RPCs of the catalogue and the authorization server, for IdentityServicer."""

    # Provided by IdentityServicer.
    settings: Any
    store: Any
    keys: Any
    clock: Any
    apps: AppStore

    # Set at start (identity's own token verifier): an access token presented for revocation.
    verifier: TokenVerifier | None = None

    def _digest(self, value: str) -> str:
        raise NotImplementedError

    async def _record(self, throttle_id: str, change: Any, **event: Any) -> Any:
        raise NotImplementedError

    # the catalogue -----------------------------------------------------------------------

    async def RegisterApp(
        self, request: pb.RegisterAppRequest, context: Any
    ) -> pb.RegisterAppResponse:
        caller().require_role("admin")
        doc = check_app_fields(request.app)
        now = self.clock.now()
        doc |= {
            "_id": f"app_{secrets.token_hex(8)}",
            "listed": True,
            "created_at": now,
            "updated_at": now,
        }
        await self.apps.insert_app(doc)
        log.info("app_registered", client_id=doc["_id"])
        return pb.RegisterAppResponse(app=app_message(doc))

    async def UpdateApp(self, request: pb.UpdateAppRequest, context: Any) -> pb.UpdateAppResponse:
        caller().require_role("admin")
        current = await self._listed(request.client_id)
        doc = check_app_fields(request.app)
        if "logo" not in doc and request.keep_logo and current.get("logo"):
            doc |= {"logo": current["logo"], "logo_type": current["logo_type"]}
        doc |= {
            "_id": current["_id"],
            "listed": True,
            "created_at": current["created_at"],
            "updated_at": self.clock.now(),
        }
        if not await self.apps.replace_app(doc):
            raise NotFound("no such app in the catalogue", field="client_id", slug="app-not-found")
        # Scopes taken away are taken from every connection too: the patient reconnects.
        if set(current["scopes"]) - set(doc["scopes"]):
            await self.apps.end_connections({"client_id": doc["_id"]}, self.clock.now())
        await self.apps.drop_codes(doc["_id"])  # codes given under the former terms
        return pb.UpdateAppResponse(app=app_message(doc))

    async def DelistApp(self, request: pb.DelistAppRequest, context: Any) -> pb.DelistAppResponse:
        caller().require_role("admin")
        now = self.clock.now()
        if not await self.apps.delist(request.client_id, now):
            raise NotFound("no such app in the catalogue", field="client_id", slug="app-not-found")
        ended = await self.apps.end_connections({"client_id": request.client_id}, now)
        await self.apps.drop_codes(request.client_id)
        log.info("app_delisted", client_id=request.client_id, connections_ended=ended)
        return pb.DelistAppResponse(connections_ended=ended)

    async def ListApps(self, request: pb.ListAppsRequest, context: Any) -> pb.ListAppsResponse:
        return pb.ListAppsResponse(apps=[app_message(d) for d in await self.apps.listed_apps()])

    async def GetApp(self, request: pb.GetAppRequest, context: Any) -> pb.GetAppResponse:
        doc = await self._listed(request.client_id)
        return pb.GetAppResponse(app=app_message(doc, logo=request.include_logo))

    async def _listed(self, client_id: str) -> dict[str, Any]:
        doc = await self.apps.get_app(client_id) if client_id else None
        if doc is None or not doc.get("listed"):
            raise NotFound("no such app in the catalogue", field="client_id", slug="app-not-found")
        return doc

    # the authorization endpoint ------------------------------------------------------------

    async def _snapshot(self, client_id: str) -> Snapshot:
        snap = Snapshot(now=self.clock.now(), digest=self._digest)
        if client_id:
            snap.app = await self.apps.get_app(client_id)
        return snap

    def _check(self, server: WebApplicationServer, query: str) -> tuple[list[str], dict[str, Any]]:
        """The request as RFC 6749 §4.1.1 and RFC 7636 §4.3 want it; a client or redirect URI
        not to be trusted is an error told to the person, never a redirect (§4.1.2.1)."""
        try:
            scopes, credentials = server.validate_authorization_request(
                f"{_ENDPOINT}/authorize?{query}"
            )
            request = credentials["request"]
            if request.response_mode not in (None, "query"):
                # The code goes in the query, beside `iss` (RFC 9207): never in a fragment,
                # which survives a redirect on the app's side (RFC 9700 §4.11).
                raise oauth_errors.InvalidRequestError(
                    description="response_mode is query", request=request
                )
            if not S256_CHALLENGE.fullmatch(request.code_challenge or ""):
                raise oauth_errors.InvalidRequestError(
                    description="code_challenge is the S256 of a verifier (RFC 7636 §4.2)",
                    request=request,
                )
        except ValueError as exc:  # oauthlib: not x-www-form-urlencoded (a raw control char)
            raise InvalidArgument(
                "the authorization request is not a URL query string",
                field="query",
                slug="invalid-authorization-request",
            ) from exc
        except oauth_errors.FatalClientError as exc:
            field_name = (
                "client_id"
                if isinstance(exc, oauth_errors.InvalidClientIdError)
                else "redirect_uri"
            )
            raise InvalidArgument(
                "this authorization request names an unknown app or an address it did not "
                "register; nobody is sent anywhere",
                field=field_name,
                slug="invalid-authorization-request",
            ) from exc
        return list(scopes), credentials

    def _error_redirect(self, exc: oauth_errors.OAuth2Error) -> str:
        exc.response_mode = None  # in the query, whatever the request asked: beside `iss`
        return with_iss(exc.in_uri(exc.redirect_uri), self.settings.jwt_issuer)

    async def CheckAuthorization(
        self, request: pb.CheckAuthorizationRequest, context: Any
    ) -> pb.CheckAuthorizationResponse:
        snap = await self._snapshot(_one(request.query, "client_id"))
        server = oauth_server(snap, None, 0)
        try:
            scopes, credentials = self._check(server, request.query)
        except oauth_errors.OAuth2Error as exc:
            return pb.CheckAuthorizationResponse(error_redirect=self._error_redirect(exc))
        assert snap.app is not None
        return pb.CheckAuthorizationResponse(
            app=app_message(snap.app),
            scopes=scopes,
            redirect_uri=credentials["redirect_uri"],
        )

    def _person(self) -> Principal:
        """The patient themselves: never an app (no app connects another)."""
        who = caller()
        if who.app:
            raise PermissionDenied("an app cannot do this", slug="insufficient-scope")
        who.require_kind("patient")
        return who

    async def Authorize(self, request: pb.AuthorizeRequest, context: Any) -> pb.AuthorizeResponse:
        who = self._person()
        snap = await self._snapshot(_one(request.query, "client_id"))
        snap.account = await self.store.get_account(who.subject)
        if snap.account is None:
            raise Unauthenticated("the account no longer exists", slug="invalid-token")
        server = oauth_server(snap, None, 0)
        uri = f"{_ENDPOINT}/authorize?{request.query}"
        try:
            scopes, credentials = self._check(server, request.query)
            if not request.allow:
                raise oauth_errors.AccessDeniedError(request=credentials["request"])
        except oauth_errors.OAuth2Error as exc:
            return pb.AuthorizeResponse(redirect_to=self._error_redirect(exc))
        headers, _, _ = server.create_authorization_response(
            uri, scopes=scopes, credentials={"user": snap.account}
        )
        if snap.new_code is None or "Location" not in headers:
            raise InvalidArgument("the authorization request is incomplete", field="query")
        await self.apps.insert_code(snap.new_code)
        log.info("app_authorized", client_id=snap.new_code["client_id"])
        return pb.AuthorizeResponse(
            redirect_to=with_iss(headers["Location"], self.settings.jwt_issuer)
        )

    # the token endpoint --------------------------------------------------------------------

    def _token_for(self, snap: Snapshot, key: tuple[str, bytes], connection: str) -> Any:
        kid, raw = key

        def generate(request: Request) -> str:
            app, account = snap.app, snap.account
            assert app is not None and account is not None
            claims = domain.access_claims(
                account=account,
                kind="patient",
                issuer=self.settings.jwt_issuer,
                audience=self.settings.jwt_audience,
                now=snap.now,
                ttl=timedelta(seconds=self.settings.app_access_token_ttl_seconds),
                jti=str(uuid7()),
            )
            claims |= {
                "app": app["_id"],
                "app_name": app["name"],
                "scope": " ".join(request.scopes),
                "cid": connection,
            }
            return domain.sign_access_token(claims, raw, kid)

        return generate

    async def AppToken(self, request: pb.AppTokenRequest, context: Any) -> pb.AppTokenResponse:
        form = request.form
        snap = await self._snapshot(_one(form, "client_id"))
        grant = _one(form, "grant_type")
        connection = str(uuid7())
        if grant == "authorization_code" and (code := _one(form, "code")):
            snap.code = await self.apps.get_code(self._digest(code))
            if snap.code is not None:
                snap.account = await self.store.get_account(snap.code["account_id"])
        elif grant == "refresh_token" and (refresh := _one(form, "refresh_token")):
            snap.token = await self.apps.get_token(self._digest(refresh))
            if snap.token is not None:
                connection = snap.token["connection"]
                snap.connection = await self.apps.get_connection(connection)
                snap.account = await self.store.get_account(snap.token["account_id"])
        verifier = _one(form, "code_verifier")
        if grant == "authorization_code" and verifier and not VERIFIER.fullmatch(verifier):
            return _oauth_error(
                "invalid_request", "code_verifier is 43 to 128 unreserved characters (RFC 7636)"
            )
        ttl = self.settings.app_access_token_ttl_seconds
        key = await self.keys.signing_key()
        server = oauth_server(snap, self._token_for(snap, key, connection), ttl)
        try:
            _, body, status = server.create_token_response(
                f"{_ENDPOINT}/token", http_method="POST", body=form, headers=_FORM
            )
        except ValueError:  # oauthlib: not x-www-form-urlencoded
            return _oauth_error("invalid_request", "the body is not x-www-form-urlencoded")
        if status == 200 and snap.issued is not None:
            if not await self._keep(snap, grant, connection):
                return _oauth_error("invalid_grant", "this grant was already used")
        elif snap.code is not None and snap.code["used"] and snap.code.get("connection"):
            # A code presented again: whoever holds it is not to be trusted, nor what it gave.
            await self.apps.end_connections({"_id": snap.code["connection"]}, snap.now)
            log.warning("app_code_reused", client_id=snap.code["client_id"])
        elif snap.token is not None and snap.token["status"] == "used":
            await self.apps.end_connections({"_id": snap.token["connection"]}, snap.now)
            log.warning("app_refresh_token_reused", client_id=snap.token["client_id"])
        return pb.AppTokenResponse(status=status, body=body)

    async def _keep(self, snap: Snapshot, grant: str, connection: str) -> bool:
        """Writes what the token request noted; False when its code or refresh token was spent
        meanwhile (by a concurrent request: a copy), which ends what it gave."""
        issued, account, app = snap.issued, snap.account, snap.app
        assert issued is not None and account is not None and app is not None
        now = snap.now
        if grant == "authorization_code":
            assert snap.code is not None
            scopes = issued["scope"].split()
            # The connection is written first, then the code spent: a copy of the code that
            # loses the race finds the connection named on the code, and ends it.
            await self.apps.insert_connection(
                {
                    "_id": connection,
                    "account_id": account["_id"],
                    "client_id": app["_id"],
                    "scopes": scopes,
                    "connected_at": now,
                    "status": "active",
                }
            )
            if not await self.apps.use_code(snap.code["_id"], connection, now):
                spent = await self.apps.get_code(snap.code["_id"])
                ended = {connection, (spent or {}).get("connection") or connection}
                await self.apps.end_connections({"_id": {"$in": sorted(ended)}}, now)
                log.warning("app_code_reused", client_id=app["_id"])
                return False
            # One connection per app and patient: connecting again replaces the older one.
            await self.apps.end_connections(
                {"account_id": account["_id"], "client_id": app["_id"], "_id": {"$ne": connection}},
                now,
            )
            # The patient hears of it, as of a login, and the dossier's trail has it.
            await self._record(
                self._digest(f"app:{account['_id']}"),
                lambda t: t,
                kind="patient",
                outcome="app_connected",
                success=True,
                account=account,
            )
        else:
            assert snap.token is not None
            # RFC 6749 §6: the new refresh token has the scope of the one it replaces.
            scopes = list(snap.token["scopes"])
            if not await self.apps.use_token(snap.token["_id"], now):
                await self.apps.end_connections({"_id": connection}, now)
                return False
        await self.apps.insert_token(
            {
                "_id": self._digest(issued["refresh_token"]),
                "connection": connection,
                "client_id": app["_id"],
                "account_id": account["_id"],
                "scopes": scopes,
                "status": "active",
                "created_at": now,
                "expires_at": now + timedelta(seconds=self.settings.app_refresh_token_ttl_seconds),
            }
        )
        return True

    async def RevokeAppToken(
        self, request: pb.RevokeAppTokenRequest, context: Any
    ) -> pb.RevokeAppTokenResponse:
        snap = await self._snapshot(_one(request.form, "client_id"))
        if token := _one(request.form, "token"):
            snap.token = await self.apps.get_token(self._digest(token))
            if snap.token is None and token.count(".") == 2 and self.verifier is not None:
                with contextlib.suppress(DmpError):
                    snap.access = await self.verifier.verify(token)
        server = oauth_server(snap, None, 0)
        try:
            _, body, status = server.create_revocation_response(
                f"{_ENDPOINT}/revoke", http_method="POST", body=request.form, headers=_FORM
            )
        except ValueError:  # oauthlib: not x-www-form-urlencoded
            error = _oauth_error("invalid_request", "the body is not x-www-form-urlencoded")
            return pb.RevokeAppTokenResponse(status=error.status, body=error.body)
        if status == 200 and snap.revoked:
            await self.apps.end_connections({"_id": snap.revoked}, snap.now)
        return pb.RevokeAppTokenResponse(status=status, body=body or "")

    # the patient's connections -------------------------------------------------------------

    async def ListConnections(
        self, request: pb.ListConnectionsRequest, context: Any
    ) -> pb.ListConnectionsResponse:
        who = self._person()
        shown = []
        for doc in await self.apps.live_connections(who.subject):
            app = await self.apps.get_app(doc["client_id"])
            if app is None or not app.get("listed"):
                continue
            shown.append(
                pb.Connection(
                    app=app_message(app),
                    scopes=doc["scopes"],
                    connected_at=timestamp(doc["connected_at"]),
                    last_used_at=timestamp(doc.get("last_used_at")),
                )
            )
        return pb.ListConnectionsResponse(connections=shown)

    async def Disconnect(
        self, request: pb.DisconnectRequest, context: Any
    ) -> pb.DisconnectResponse:
        who = self._person()
        ended = await self.apps.end_connections(
            {"account_id": who.subject, "client_id": request.client_id}, self.clock.now()
        )
        if not ended:
            raise NotFound(
                "this app is not connected to your account",
                field="client_id",
                slug="app-not-connected",
            )
        log.info("app_disconnected", client_id=request.client_id)
        return pb.DisconnectResponse()

    async def CheckConnection(
        self, request: pb.CheckConnectionRequest, context: Any
    ) -> pb.CheckConnectionResponse:
        who = caller()
        found = await self.apps.get_connection(who.connection) if who.app else None
        app = await self.apps.get_app(who.app) if found is not None else None
        if (
            found is None
            or app is None
            or not app.get("listed")
            or found["status"] != "active"
            or found["client_id"] != who.app
            or found["account_id"] != who.subject
        ):
            raise Unauthenticated(
                "this app's connection has ended: the patient disconnected it",
                slug="invalid-token",
            )
        await self.apps.note_use(found["_id"], self.clock.now(), LAST_USED_EVERY)
        return pb.CheckConnectionResponse(app_name=who.app_name)


def _oauth_error(error: str, description: str) -> pb.AppTokenResponse:
    return pb.AppTokenResponse(
        status=400, body=json.dumps({"error": error, "error_description": description})
    )

"""Issue 20 §3, through the gateway: a third-party app, played by a well-kept OAuth 2.0 client
library (Authlib), is referenced by an administrator, connected by a patient with the
authorization code flow and PKCE, calls the API within its scopes and is refused outside them,
never sees more than the patient, is traced under its own name, and is cut off the moment the
patient disconnects it. The negative cases of RFC 6749 / RFC 7636 / RFC 9700: wrong verifier,
wrong or unregistered redirect URI, code reused, refresh token reused, PKCE missing or plain."""

from __future__ import annotations

import base64
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import OAuth2Client

from dmp.consent.v1 import consent_pb2, consent_pb2_grpc
from dmp.dossier.v1 import dossier_pb2, dossier_pb2_grpc
from dmp.identity.v1 import identity_pb2, identity_pb2_grpc
from dmp_stack.testing import CareTeam, RunningStack, until

PROBLEM = "application/problem+json"
REDIRECT = "http://127.0.0.1:9/callback"
OTHER_REDIRECT = "http://127.0.0.1:9/other"
# The smallest PNG there is: a 1x1 transparent pixel.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def problem(r: Any, status: int, slug: str, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/" + slug), r.json()
    if field:
        assert r.json()["field"] == field, r.json()


class World(CareTeam):
    """A patient's DMP with their care team, and an app referenced in the catalogue."""

    def __init__(self, stack: RunningStack) -> None:
        super().__init__(stack)
        self.admin = stack.admin_token()
        self.app_name = f"Suivi tension {secrets.token_hex(3)}"
        with stack.client(self.admin) as c:
            r = c.post(
                "/v1/admin/apps",
                json={
                    "name": self.app_name,
                    "publisher": "Éditeur SAS",
                    "description": "Un carnet de tension",
                    "website": "https://example.org/tension",
                    "redirect_uris": [REDIRECT, OTHER_REDIRECT],
                    "scopes": ["documents.read", "measurements.read", "measurements.write"],
                    "logo_base64": base64.b64encode(PNG).decode(),
                },
            )
        assert r.status_code == 201, r.text
        self.app = r.json()
        self.client_id = self.app["client_id"]

    def oauth(self, scope: str = "documents.read measurements.read") -> OAuth2Client:
        return OAuth2Client(
            client_id=self.client_id,
            redirect_uri=REDIRECT,
            scope=scope,
            code_challenge_method="S256",
            token_endpoint_auth_method="none",
        )

    def consent(self, authorization_url: str, allow: bool = True) -> str:
        """The patient's browser: the authorization endpoint sends it to the portal's consent
        page; the page describes the request, the patient answers; back to the app."""
        r = httpx.get(authorization_url, follow_redirects=False)
        assert r.status_code == 302, r.text
        location = r.headers["location"]
        assert location.startswith("/portail/#/autoriser?"), location
        query = location.split("?", 1)[1]
        with self.stack.client() as c:
            shown = c.get(f"/v1/oauth/authorization?{query}")
        assert shown.status_code == 200, shown.text
        assert shown.json()["app"]["name"] == self.app_name
        with self.client("patient") as c:
            r = c.post("/v1/oauth/authorization", json={"query": query, "allow": allow})
        assert r.status_code == 200, r.text
        return str(r.json()["redirect_to"])

    def connect(
        self, scope: str = "documents.read measurements.read"
    ) -> tuple[OAuth2Client, dict[str, Any]]:
        app = self.oauth(scope)
        verifier = generate_token(48)
        url, _ = app.create_authorization_url(
            f"{self.stack.url}/oauth/authorize", code_verifier=verifier
        )
        back = self.consent(url)
        token = app.fetch_token(
            f"{self.stack.url}/oauth/token", authorization_response=back, code_verifier=verifier
        )
        return app, dict(token)

    def as_app(self, token: dict[str, Any]) -> httpx.Client:
        return self.stack.client(token["access_token"])


@pytest.fixture(scope="module")
def world(stack: RunningStack) -> World:
    return World(stack)


@pytest.fixture
def own_world(stack: RunningStack) -> World:
    """A world of the test's own, for a test that ends what others use (the app delisted, every
    session of the patient ended): the module's world stays whole whatever the order."""
    return World(stack)


def params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_the_catalogue_and_the_server_metadata(world: World, stack: RunningStack) -> None:
    with stack.client() as c:
        listed = c.get("/v1/apps").json()["items"]
        logo = c.get(world.app["logo_url"])
        meta = c.get("/.well-known/oauth-authorization-server").json()
    mine = next(a for a in listed if a["client_id"] == world.client_id)
    assert mine["publisher"] == "Éditeur SAS"
    assert {s["scope"]: s["label"] for s in mine["scopes"]}["measurements.read"].startswith(
        "Lire vos constantes"
    )
    assert logo.status_code == 200 and logo.content == PNG
    assert logo.headers["content-type"] == "image/png"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["token_endpoint_auth_methods_supported"] == ["none"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["token_endpoint"].endswith("/oauth/token")


def test_only_an_administrator_references_an_app_and_bad_fields_are_named(
    world: World, stack: RunningStack
) -> None:
    body = {"name": "X", "publisher": "Y", "redirect_uris": [REDIRECT], "scopes": ["agenda.read"]}
    with world.client("patient") as c:
        problem(c.post("/v1/admin/apps", json=body), 403, "forbidden")
    with stack.client(world.admin) as c:
        bad = c.post("/v1/admin/apps", json={**body, "redirect_uris": ["http://evil.example/cb"]})
        problem(bad, 422, "invalid-redirect-uri", "redirect_uris")
        problem(
            c.post("/v1/admin/apps", json={**body, "scopes": ["everything"]}),
            422,
            "invalid-scope",
            "scopes",
        )
        problem(
            c.post(
                "/v1/admin/apps", json={**body, "logo_base64": base64.b64encode(b"<svg/>").decode()}
            ),
            422,
            "invalid-logo",
            "logo_base64",
        )
        names = [a["name"] for a in c.get("/v1/apps").json()["items"]]
    assert "X" not in names  # nothing of a refused request was kept


def test_an_app_connected_with_pkce_reads_within_its_scopes_only(world: World) -> None:
    with world.client("gp") as c:
        r = c.post(
            f"/v1/dossiers/{world.ins}/documents",
            json={
                "type_code": "11488-4",
                "title": "Consultation cardiologie",
                "mime_type": "text/plain",
                "content_base64": base64.b64encode(b"RAS").decode(),
            },
        )
        assert r.status_code == 201, r.text
        hidden = c.post(
            f"/v1/dossiers/{world.ins}/documents",
            json={
                "type_code": "11502-2",
                "title": "Résultat à annoncer",
                "mime_type": "text/plain",
                "content_base64": base64.b64encode(b"secret").decode(),
                "hidden_from_patient": True,
            },
        )
        assert hidden.status_code == 201, hidden.text
    _, token = world.connect()
    assert token["token_type"].lower() == "bearer" and token["refresh_token"]
    assert set(token["scope"].split()) == {"documents.read", "measurements.read"}
    with world.as_app(token) as app:
        docs = app.get(f"/v1/dossiers/{world.ins}/documents")
        assert docs.status_code == 200, docs.text
        titles = {d["title"] for d in docs.json()["items"]}
        assert "Consultation cardiologie" in titles
        assert "Résultat à annoncer" not in titles  # never more than the patient sees
        seen = next(d for d in docs.json()["items"] if d["title"] == "Consultation cardiologie")
        content = app.get(f"/v1/dossiers/{world.ins}/documents/{seen['id']}/content")
        assert content.status_code == 200 and content.content == b"RAS"
        assert app.get(f"/v1/dossiers/{world.ins}").json()["status"] == "open"
        problem(
            app.get(f"/v1/dossiers/{world.ins}/documents/{hidden.json()['id']}"),
            403,
            "access-denied",
        )
        assert app.get(f"/v1/dossiers/{world.ins}/measurements").status_code == 200
        # Outside its scopes, and routes no scope covers: refused.
        problem(
            app.post(
                f"/v1/dossiers/{world.ins}/measurements",
                json={
                    "kind": "weight",
                    "value": 70,
                    "unit": "kg",
                    "measured_at": "2026-11-01T08:00:00+01:00",
                },
            ),
            403,
            "insufficient-scope",
        )
        problem(app.get(f"/v1/dossiers/{world.ins}/access-log"), 403, "insufficient-scope")
        problem(app.get(f"/v1/dossiers/{world.ins}/professionals"), 403, "insufficient-scope")
        problem(app.post(f"/v1/dossiers/{world.ins}/close"), 403, "insufficient-scope")
        problem(app.get("/v1/me/connected-apps"), 403, "insufficient-scope")
        fhir = app.get("/fhir/R4/DocumentReference", params={"patient.identifier": world.ins})
        assert fhir.status_code == 403, fhir.text  # an OperationOutcome there
        # The patient's own space only.
        other = world.stack.create_patient(world.admin)
        assert app.get(f"/v1/dossiers/{other['ins']}/documents").status_code == 403
        me = app.get("/v1/me")
        assert me.status_code == 200 and me.json()["ins"] == world.ins
    # Every access is traced under the app's name.
    with world.client("patient") as c:
        entries = c.get(f"/v1/dossiers/{world.ins}/access-log", params={"page_size": 50}).json()
    by_app = [e for e in entries["entries"] if e.get("actor", {}).get("kind") == "app"]
    assert by_app, entries
    assert {e["actor"]["name"] for e in by_app} == {world.app_name}
    assert {e["actor"]["id"] for e in by_app} == {world.client_id}
    # The patient sees the app connected, what it may do and that it acted.
    with world.client("patient") as c:
        listed = c.get("/v1/me/connected-apps").json()["items"]
    mine = next(a for a in listed if a["client_id"] == world.client_id)
    assert {s["scope"] for s in mine["scopes"]} == {"documents.read", "measurements.read"}
    assert mine["last_used_at"]


def test_measurements_an_app_writes_come_from_a_device(world: World) -> None:
    _, token = world.connect("measurements.read measurements.write")
    with world.as_app(token) as app:
        r = app.post(
            f"/v1/dossiers/{world.ins}/measurements",
            json={
                "kind": "heart_rate",
                "value": 64,
                "unit": "/min",
                "measured_at": "2026-11-01T08:00:00+01:00",
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["source"] == "device"
        mine = r.json()["id"]
        assert app.delete(f"/v1/dossiers/{world.ins}/measurements/{mine}").status_code == 204
        # Documents were not granted this time.
        problem(app.get(f"/v1/dossiers/{world.ins}/documents"), 403, "insufficient-scope")


def test_wrong_verifier_wrong_redirect_and_reused_code_are_refused(world: World) -> None:
    app = world.oauth()
    verifier = generate_token(48)
    url, _ = app.create_authorization_url(
        f"{world.stack.url}/oauth/authorize", code_verifier=verifier
    )
    back = world.consent(url)
    code = params(back)["code"]
    token_url = f"{world.stack.url}/oauth/token"
    form = {"grant_type": "authorization_code", "code": code, "client_id": world.client_id}
    wrong = httpx.post(
        token_url, data={**form, "redirect_uri": REDIRECT, "code_verifier": generate_token(48)}
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant", wrong.text
    assert wrong.headers["cache-control"] == "no-store"
    moved = httpx.post(
        token_url, data={**form, "redirect_uri": OTHER_REDIRECT, "code_verifier": verifier}
    )
    assert moved.status_code == 400 and moved.json()["error"] in (
        "invalid_grant",
        "invalid_request",
    ), moved.text
    missing = httpx.post(token_url, data={**form, "redirect_uri": REDIRECT})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request", missing.text
    first = httpx.post(
        token_url, data={**form, "redirect_uri": REDIRECT, "code_verifier": verifier}
    )
    assert first.status_code == 200, first.text
    with world.stack.client(first.json()["access_token"]) as c:
        assert c.get(f"/v1/dossiers/{world.ins}/documents").status_code == 200
    again = httpx.post(
        token_url, data={**form, "redirect_uri": REDIRECT, "code_verifier": verifier}
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant", again.text
    # A code used twice: what it gave is revoked too (RFC 6749 §4.1.2).
    with world.stack.client(first.json()["access_token"]) as c:
        problem(c.get(f"/v1/dossiers/{world.ins}/documents"), 401, "invalid-token")
    refreshed = httpx.post(
        token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": first.json()["refresh_token"],
            "client_id": world.client_id,
        },
    )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_an_unregistered_redirect_uri_sends_nobody_anywhere(world: World) -> None:
    app = OAuth2Client(
        client_id=world.client_id,
        redirect_uri="https://attacker.example/steal",
        scope="documents.read",
        code_challenge_method="S256",
    )
    url, _ = app.create_authorization_url(
        f"{world.stack.url}/oauth/authorize", code_verifier=generate_token(48)
    )
    r = httpx.get(url, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith("/portail/#/autoriser?")
    query = r.headers["location"].split("?", 1)[1]
    with world.stack.client() as c:
        problem(
            c.get(f"/v1/oauth/authorization?{query}"),
            422,
            "invalid-authorization-request",
            "redirect_uri",
        )
    with world.client("patient") as c:
        problem(
            c.post("/v1/oauth/authorization", json={"query": query, "allow": True}),
            422,
            "invalid-authorization-request",
        )
    unknown = url.replace(world.client_id, "app_0000000000000000")
    query = httpx.get(unknown, follow_redirects=False).headers["location"].split("?", 1)[1]
    with world.stack.client() as c:
        problem(
            c.get(f"/v1/oauth/authorization?{query}"),
            422,
            "invalid-authorization-request",
            "client_id",
        )


def test_pkce_is_required_with_s256_and_a_refusal_goes_back_as_access_denied(world: World) -> None:
    base = {
        "response_type": "code",
        "client_id": world.client_id,
        "redirect_uri": REDIRECT,
        "scope": "documents.read",
        "state": "xyz",
    }
    authorize = f"{world.stack.url}/oauth/authorize"
    for extra in ({}, {"code_challenge": generate_token(43), "code_challenge_method": "plain"}):
        r = httpx.get(authorize, params={**base, **extra}, follow_redirects=False)
        assert r.status_code == 302
        back = params(r.headers["location"])
        assert r.headers["location"].startswith(REDIRECT)
        assert back["error"] == "invalid_request" and back["state"] == "xyz"
        assert back["iss"]
    r = httpx.get(
        authorize,
        params={
            **base,
            "scope": "agenda.read",
            "code_challenge": generate_token(43),
            "code_challenge_method": "S256",
        },
        follow_redirects=False,
    )
    assert params(r.headers["location"])["error"] == "invalid_scope"  # not what the app may ask
    url, state = world.oauth().create_authorization_url(authorize, code_verifier=generate_token(48))
    refused = params(world.consent(url, allow=False))
    assert (
        refused["error"] == "access_denied" and refused["state"] == state and "code" not in refused
    )


def test_refresh_rotates_and_a_refresh_token_used_twice_ends_the_connection(world: World) -> None:
    app, token = world.connect()
    fresh = app.refresh_token(
        f"{world.stack.url}/oauth/token", refresh_token=token["refresh_token"]
    )
    assert fresh["refresh_token"] != token["refresh_token"]
    with world.as_app(fresh) as c:
        assert c.get(f"/v1/dossiers/{world.ins}/documents").status_code == 200
    with pytest.raises(OAuthError) as replay:
        app.refresh_token(f"{world.stack.url}/oauth/token", refresh_token=token["refresh_token"])
    assert replay.value.error == "invalid_grant"
    with world.as_app(fresh) as c:  # the copy and the original alike: the connection ended
        problem(c.get(f"/v1/dossiers/{world.ins}/documents"), 401, "invalid-token")


def test_disconnecting_cuts_the_app_off_at_once(world: World) -> None:
    app, token = world.connect()
    with world.client("patient") as c:
        listed = c.get("/v1/me/connected-apps").json()["items"]
    assert "last_used_at" not in next(a for a in listed if a["client_id"] == world.client_id)
    with world.as_app(token) as c:
        assert c.get(f"/v1/dossiers/{world.ins}/documents").status_code == 200
    with world.client("patient") as c:
        assert c.delete(f"/v1/me/connected-apps/{world.client_id}").status_code == 204
        listed = c.get("/v1/me/connected-apps").json()["items"]
        problem(
            c.delete(f"/v1/me/connected-apps/{world.client_id}"),
            404,
            "app-not-connected",
            "client_id",
        )
    assert world.client_id not in {a["client_id"] for a in listed}
    with world.as_app(token) as c:
        problem(c.get(f"/v1/dossiers/{world.ins}/documents"), 401, "invalid-token")
    with pytest.raises(OAuthError) as refused:
        app.refresh_token(f"{world.stack.url}/oauth/token", refresh_token=token["refresh_token"])
    assert refused.value.error == "invalid_grant"


def test_an_app_token_reaches_no_other_method_of_any_service(world: World) -> None:
    """Zero trust: presented to a service directly, an app's token reaches only the methods the
    gateway's routes for apps use (dmp_kit.app_scopes.APP_METHODS), whatever its scopes."""
    _, token = world.connect()
    metadata = (("authorization", f"Bearer {token['access_token']}"),)
    env = world.stack.state.env
    with grpc.insecure_channel(env["DMP_CONSENT_ADDR"]) as channel:
        consent = consent_pb2_grpc.ConsentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            consent.ListProfessionals(
                consent_pb2.ListProfessionalsRequest(ins=world.ins), metadata=metadata, timeout=10
            )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with grpc.insecure_channel(env["DMP_IDENTITY_ADDR"]) as channel:
        identity = identity_pb2_grpc.IdentityServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            identity.ListSessions(identity_pb2.ListSessionsRequest(), metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as refused:
            identity.ListConnections(
                identity_pb2.ListConnectionsRequest(), metadata=metadata, timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        me = identity.GetMe(identity_pb2.GetMeRequest(), metadata=metadata, timeout=10)
    assert me.ins == world.ins
    # Within the methods apps reach, the scope still counts: this one has no measurements.write.
    with grpc.insecure_channel(env["DMP_DOSSIER_ADDR"]) as channel:
        dossier = dossier_pb2_grpc.DossierServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            dossier.DeleteMeasurement(
                dossier_pb2.DeleteMeasurementRequest(ins=world.ins, measurement_id="x"),
                metadata=metadata,
                timeout=10,
            )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_patient_hears_of_a_connection_and_ending_all_sessions_ends_the_apps(
    own_world: World, stack: RunningStack
) -> None:
    """A patient's stolen token could connect an app that outlives it: the patient is told of
    each connection (as of a login), and « end all sessions » ends the apps too."""
    world = own_world
    app, token = world.connect()
    with world.client("patient") as c:
        assert until(
            lambda: any(
                n["title"] == "Application connectée à votre DMP"
                for n in c.get("/v1/me/notifications", params={"page_size": 100}).json()["items"]
            )
        )
        # the trail too, once audit has had the event (it comes through the bus, as notify's)
        assert until(
            lambda: any(
                e.get("query") == "login:app_connected"
                for e in c.get(
                    f"/v1/dossiers/{world.ins}/access-log", params={"page_size": 50}
                ).json()["entries"]
            )
        )
        assert c.delete("/v1/me/sessions").status_code == 200
    with world.as_app(token) as c:
        problem(c.get(f"/v1/dossiers/{world.ins}/documents"), 401, "invalid-token")
    with pytest.raises(OAuthError):
        app.refresh_token(f"{stack.url}/oauth/token", refresh_token=token["refresh_token"])


def test_the_edges_of_the_protocol(world: World, stack: RunningStack) -> None:
    """No code in a fragment; a verifier of the wrong form; an access token revoked ends its
    connection; /v1/me tells an app the INS, not the name; narrowing a refresh keeps the
    connection's scopes; a loopback redirect URI on another port (RFC 8252 §7.3)."""
    authorize = f"{stack.url}/oauth/authorize"
    fragment = httpx.get(
        authorize,
        params={
            "response_type": "code",
            "client_id": world.client_id,
            "redirect_uri": REDIRECT,
            "scope": "documents.read",
            "code_challenge": "a" * 43,
            "code_challenge_method": "S256",
            "response_mode": "fragment",
        },
        follow_redirects=False,
    )
    assert params(fragment.headers["location"])["error"] == "invalid_request"
    assert "#" not in fragment.headers["location"]

    app = world.oauth()
    url, _ = app.create_authorization_url(authorize, code_verifier=generate_token(48))
    code = params(world.consent(url))["code"]
    short = httpx.post(
        f"{stack.url}/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "client_id": world.client_id,
            "redirect_uri": REDIRECT,
            "code_verifier": "x",
        },
    )
    assert short.status_code == 400 and short.json()["error"] == "invalid_request", short.text

    app, token = world.connect()
    with world.as_app(token) as c:
        me = c.get("/v1/me").json()
    assert me["ins"] == world.ins and "given_name" not in me and "login" not in me
    narrowed = app.refresh_token(
        f"{stack.url}/oauth/token", refresh_token=token["refresh_token"], scope="documents.read"
    )
    assert narrowed["scope"] == "documents.read"
    widened = app.refresh_token(f"{stack.url}/oauth/token", refresh_token=narrowed["refresh_token"])
    assert set(widened["scope"].split()) == {"documents.read", "measurements.read"}
    revoked = httpx.post(
        f"{stack.url}/oauth/revoke",
        data={"token": widened["access_token"], "client_id": world.client_id},
    )
    assert revoked.status_code == 200
    with world.as_app(widened) as c:
        problem(c.get(f"/v1/dossiers/{world.ins}/documents"), 401, "invalid-token")

    native = OAuth2Client(
        client_id=world.client_id,
        redirect_uri="http://127.0.0.1:48123/callback",
        scope="documents.read",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = generate_token(48)
    url, _ = native.create_authorization_url(authorize, code_verifier=verifier)
    back = world.consent(url)
    assert back.startswith("http://127.0.0.1:48123/callback?")
    token = native.fetch_token(
        f"{stack.url}/oauth/token", authorization_response=back, code_verifier=verifier
    )
    assert token["access_token"]


def test_an_app_with_agenda_read_reads_the_agenda_and_changes_nothing(world: World) -> None:
    """The agenda's routes for apps: the appointments, the .ics and the reminders of the
    patient's own space with agenda.read; no write; traced under the app's name."""
    ins = world.ins
    listed = {
        "name": world.app_name,
        "publisher": "Éditeur SAS",
        "redirect_uris": [REDIRECT, OTHER_REDIRECT],
        "scopes": ["documents.read", "measurements.read", "measurements.write"],
    }
    with world.stack.client(world.admin) as c:
        r = c.put(
            f"/v1/admin/apps/{world.client_id}",
            json={**listed, "scopes": [*listed["scopes"], "agenda.read"]},
        )
        assert r.status_code == 200, r.text
    try:
        visit = {"title": "Kiné", "starts_at": "2030-03-04T10:00+01:00"}
        with world.client("patient") as c:
            r = c.post(
                f"/v1/dossiers/{ins}/appointments",
                json={**visit, "ends_at": "2030-03-04T10:30+01:00"},
            )
            assert r.status_code == 201, r.text
        _, token = world.connect("agenda.read")
        with world.as_app(token) as app:
            r = app.get(f"/v1/dossiers/{ins}/appointments")
            assert r.status_code == 200 and [a["title"] for a in r.json()["items"]] == ["Kiné"]
            assert app.get(f"/v1/dossiers/{ins}/reminders").status_code == 200
            r = app.get(f"/v1/dossiers/{ins}/agenda.ics")
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/calendar")
            problem(
                app.post(f"/v1/dossiers/{ins}/appointments", json=visit), 403, "insufficient-scope"
            )
            problem(
                app.put(f"/v1/dossiers/{ins}/prevention", json={"messages": False}),
                403,
                "insufficient-scope",
            )
            problem(app.get(f"/v1/dossiers/{ins}/documents"), 403, "insufficient-scope")
        with world.client("patient") as c:
            entries = c.get(f"/v1/dossiers/{ins}/access-log", params={"page_size": 50}).json()
        by_app = [e for e in entries["entries"] if e.get("actor", {}).get("kind") == "app"]
        assert any("appointments" in e.get("entry", "") for e in by_app), by_app
    finally:
        with world.stack.client(world.admin) as c:
            assert c.put(f"/v1/admin/apps/{world.client_id}", json=listed).status_code == 200


def test_revocation_by_the_app_and_delisting_by_an_administrator(
    own_world: World, stack: RunningStack
) -> None:
    world = own_world
    _, token = world.connect()
    r = httpx.post(
        f"{stack.url}/oauth/revoke",
        data={
            "token": token["refresh_token"],
            "token_type_hint": "refresh_token",
            "client_id": world.client_id,
        },
    )
    assert r.status_code == 200, r.text
    with world.as_app(token) as c:
        problem(c.get(f"/v1/dossiers/{world.ins}/documents"), 401, "invalid-token")
    _, token = world.connect()
    with stack.client(world.admin) as c:
        assert c.delete(f"/v1/admin/apps/{world.client_id}").status_code == 204
        problem(c.get(f"/v1/apps/{world.client_id}"), 404, "app-not-found")
    with world.as_app(token) as c:
        problem(c.get(f"/v1/dossiers/{world.ins}/documents"), 401, "invalid-token")

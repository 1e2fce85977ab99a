"""Apps the patient connects, in Chromium (docs/connected-apps.md): an app sends the browser to
the authorization endpoint; the portal's consent page, after signing in, says in French what the
app asks for and where the browser goes back to; « Autoriser » lands on the app's address with a
code the app exchanges (PKCE), « Refuser » with access_denied; a request not to be trusted is
said in French and sends the browser nowhere. « Mes applications connectées » lists what each
app may do and when it last acted, disconnects one (its tokens stop working), and shows the
catalogue. At desktop and at phone width (390 px), with screenshots."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from dmp_stack.testing import RunningStack, until
from tests.browser.test_portal import (  # noqa: F401 (fixtures)
    DESKTOP,
    PHONE,
    PNG,
    Visitor,
    _js_object,
    _token,
    browser,
    visitors,
)

BLOOD_PRESSURE_APP = {
    "name": "Tensio Suivi",
    "publisher": "Santé Connectée SAS",
    "description": (
        "Relève votre tension artérielle depuis votre tensiomètre et la partage avec votre "
        "espace santé."
    ),
    "website": "https://tensio.example.fr",
    "scopes": ["measurements.read", "measurements.write", "documents.read"],
}
VACCINES_APP = {
    "name": "Carnet Vaccins",
    "publisher": "Association Prévention Pour Tous",
    "description": "Vos vaccinations et vos rappels, dans votre poche.",
    "website": "https://vaccins.example.org",
    "scopes": ["agenda.read"],
}


def _closed_port() -> int:
    """A loopback port nothing listens on: the app's address, whose loads the browser test
    answers itself (so a landing there is seen, and nothing real is reached)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _register(stack: RunningStack, admin: str, spec: dict[str, Any], redirect: str) -> Any:
    body = {**spec, "redirect_uris": [redirect]}
    if spec is BLOOD_PRESSURE_APP:
        body["logo_base64"] = base64.b64encode(PNG).decode()
    with stack.client(admin) as c:
        r = c.post("/v1/admin/apps", json=body)
    assert r.status_code == 201, r.text
    return r.json()


class Request:
    """One authorization request of an app, with PKCE (RFC 7636, S256)."""

    def __init__(self, client_id: str, redirect: str, scopes: list[str]) -> None:
        self.verifier = secrets.token_urlsafe(48)
        challenge = hashlib.sha256(self.verifier.encode()).digest()
        self.state = secrets.token_urlsafe(16)
        self.redirect = redirect
        self.client_id = client_id
        self.params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "scope": " ".join(scopes),
            "state": self.state,
            "code_challenge": base64.urlsafe_b64encode(challenge).rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }

    @property
    def query(self) -> str:
        return urlencode(self.params)

    def url(self, stack: RunningStack) -> str:
        return f"{stack.url}/oauth/authorize?{self.query}"


class AppAddress:
    """The app's redirect address as the browser reaches it: every load there is answered here
    and remembered."""

    def __init__(self, page: Page, port: int) -> None:
        self.seen: list[str] = []
        self.pattern = re.compile(rf"^http://127\.0\.0\.1:{port}/")
        page.route(self.pattern, self._answer)

    def _answer(self, route: Route) -> None:
        self.seen.append(route.request.url)
        route.fulfill(
            status=200, content_type="text/html", body="<!doctype html><title>App</title><p>App</p>"
        )

    def landed(self, page: Page) -> dict[str, list[str]]:
        page.wait_for_url(self.pattern)
        assert self.seen, "the browser never reached the app's address"
        return parse_qs(urlsplit(self.seen[-1]).query)


def _sign_in_here(me: Visitor, person: dict[str, Any]) -> None:
    """Signing in on the login page the browser is on (not from the portal's home)."""
    page = me.page
    sent = me.stack.mailbox.codes_sent(person["email"])
    page.get_by_label("Patient").check()
    page.get_by_label(re.compile("^Numéro INS")).fill(person["ins"])
    page.get_by_label("Mot de passe").fill(person["password"])
    page.get_by_role("button", name="Continuer").click()
    me.enter_code(me.stack.mailbox.last_code(person["email"], after=sent))


def _exchange(stack: RunningStack, request: Request, code: str) -> dict[str, Any]:
    """What the app does with the code: the token endpoint, with its PKCE verifier."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": request.redirect,
        "client_id": request.client_id,
        "code_verifier": request.verifier,
    }
    with stack.client() as c:
        r = c.post("/oauth/token", data=form)
    assert r.status_code == 200, r.text
    return dict(r.json())


@dataclass
class Referenced:
    """An app in the catalogue, its address on this machine, and a patient with a dossier."""

    admin: str
    port: int
    redirect: str
    tensio: dict[str, Any]
    patient: dict[str, Any]

    def request(self, scopes: list[str], redirect: str = "") -> Request:
        """An authorization request of the referenced app."""
        return Request(self.tensio["client_id"], redirect or self.redirect, scopes)


@pytest.fixture
def referenced(stack: RunningStack) -> Referenced:
    admin = stack.admin_token()
    port = _closed_port()
    redirect = f"http://127.0.0.1:{port}/cb"
    tensio = _register(stack, admin, BLOOD_PRESSURE_APP, redirect)
    patient = stack.create_patient(admin)
    stack.open_dossier(_token(stack, patient), patient)
    return Referenced(admin, port, redirect, tensio, patient)


def test_an_app_is_authorized_after_signing_in_then_disconnected(
    stack: RunningStack,
    visitors: Any,  # noqa: F811
    referenced: Referenced,
) -> None:
    port, redirect = referenced.port, referenced.redirect
    tensio, patient = referenced.tensio, referenced.patient
    vaccins = _register(stack, referenced.admin, VACCINES_APP, redirect)
    ins = patient["ins"]

    me = visitors()
    page = me.page
    app = AppAddress(page, port)
    request = Request(tensio["client_id"], redirect, BLOOD_PRESSURE_APP["scopes"])
    # The app sends the browser to the authorization endpoint; signed out, the portal asks to
    # sign in first, and says why. The consent page may never be framed.
    landing = page.goto(request.url(stack))
    assert landing is not None
    assert "frame-ancestors 'none'" in landing.headers["content-security-policy"]
    assert landing.headers["x-frame-options"] == "DENY"
    expect(page).to_have_url(re.compile(r"/portail/#/connexion$"))
    expect(page.get_by_role("status").filter(has_text="Une application demande")).to_be_visible()
    _sign_in_here(me, patient)

    # Back on the consent page, the request as the app sent it.
    expect(page.get_by_role("heading", name="Autoriser une application")).to_be_visible()
    assert page.url.endswith(f"#/autoriser?{request.query}")
    card = page.locator("section.consent")
    expect(card.get_by_role("heading", name="Tensio Suivi")).to_be_visible()
    expect(card).to_contain_text("Éditeur : Santé Connectée SAS")
    expect(card).to_contain_text(BLOOD_PRESSURE_APP["description"])
    expect(card).to_contain_text("Tensio Suivi souhaite accéder à votre espace santé")
    labels = [s["label"] for s in tensio["scopes"]]
    assert len(labels) == 3 and all(re.match("^[A-Z]", label) for label in labels), labels
    expect(card.locator("ul.app-scopes li")).to_have_text(labels)
    expect(card.locator(".return-host")).to_have_text(f"127.0.0.1:{port}")
    expect(card).to_contain_text("« Mes applications connectées »")
    logo = card.locator("img.app-logo")
    expect(logo).to_have_attribute("src", f"/v1/apps/{tensio['client_id']}/logo")
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", logo.element_handle())
    me.fits_the_screen()
    me.shot("60-autoriser-application")
    page.set_viewport_size(PHONE)
    me.fits_the_screen()
    me.shot("61-telephone-autoriser-application")
    page.set_viewport_size(DESKTOP)
    assert app.seen == []

    # « Autoriser »: the browser lands on the app's address with a code and the app's state.
    card.get_by_role("button", name="Autoriser").click()
    answer = app.landed(page)
    assert answer["state"] == [request.state] and "error" not in answer, answer
    tokens = _exchange(stack, request, answer["code"][0])
    assert set(tokens["scope"].split()) == set(BLOOD_PRESSURE_APP["scopes"]), tokens
    with stack.client(tokens["access_token"]) as c:
        assert c.get(f"/v1/dossiers/{ins}/measurements").status_code == 200
        assert c.get(f"/v1/dossiers/{ins}/documents").status_code == 200
    with stack.client(_token(stack, patient)) as c:
        assert until(
            lambda: any(
                e.get("actor", {}).get("kind") == "app"
                for e in c.get(f"/v1/dossiers/{ins}/access-log").json()["entries"]
            )
        )
        # A second app, connected through the API as the portal does it.
        second = Request(vaccins["client_id"], redirect, VACCINES_APP["scopes"])
        r = c.post("/v1/oauth/authorization", json={"query": second.query, "allow": True})
        assert r.status_code == 200, r.text
    _exchange(stack, second, parse_qs(urlsplit(r.json()["redirect_to"]).query)["code"][0])

    # Back in the portal: the app's reading in the access history, under its name.
    page.goto(f"{stack.url}/portail/")
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    me.go_to("Historique des accès")
    by_app = page.locator("table.log tbody tr").filter(has_text="Tensio Suivi")
    expect(by_app.first.locator("td").nth(1)).to_have_text("Tensio Suivi (application connectée)")
    # « Mes applications connectées »: both apps, what each may do, when each last acted.
    me.go_to("Mes applications")
    expect(page.get_by_role("heading", name="Mes applications connectées", level=1)).to_be_visible()
    connected = page.locator("ul.apps.connected > li")
    expect(connected).to_have_count(2)
    mine = connected.filter(has_text="Tensio Suivi")
    expect(mine.locator("ul.app-scopes li")).to_have_text(labels)
    expect(mine).to_contain_text("Éditeur : Santé Connectée SAS")
    expect(mine.locator(".meta").filter(has_text="Connectée depuis le ")).to_have_count(1)
    expect(mine.locator(".last-used")).to_have_text(re.compile(r"^Dernière utilisation le \d"))
    other = connected.filter(has_text="Carnet Vaccins")
    expect(other.locator("ul.app-scopes li")).to_have_text([vaccins["scopes"][0]["label"]])
    # The catalogue below: every referenced app, its website opened without the portal's
    # window or address.
    catalogue = page.locator(
        "section", has=page.get_by_role("heading", name="Catalogue des services référencés")
    )
    listed = catalogue.locator("ul.apps.catalogue > li")
    for spec, referenced_app in ((BLOOD_PRESSURE_APP, tensio), (VACCINES_APP, vaccins)):
        item = listed.and_(page.locator(f'[data-client-id="{referenced_app["client_id"]}"]'))
        expect(item.get_by_role("heading", name=spec["name"])).to_be_visible()
        expect(item).to_contain_text(spec["description"])
        expect(item).to_contain_text(f"Éditeur : {spec['publisher']}")
        expect(item.locator(".badge")).to_have_text("Connectée")
        link = item.get_by_role("link", name=f"Site de {spec['name']}")
        expect(link).to_have_attribute("href", spec["website"])
        expect(link).to_have_attribute("rel", "noopener noreferrer")
    me.fits_the_screen()
    me.shot("62-applications-connectees")
    page.set_viewport_size(PHONE)
    me.fits_the_screen()
    me.shot("63-telephone-applications-connectees")
    page.set_viewport_size(DESKTOP)

    # « Déconnecter », confirmed: the app is gone from the list and its tokens stop working.
    mine.get_by_role("button", name="Déconnecter Tensio Suivi").click()
    confirm = mine.get_by_role("group", name="Confirmer la déconnexion")
    expect(confirm).to_contain_text("Elle perd aussitôt tout accès")
    confirm.get_by_role("button", name="Confirmer la déconnexion").click()
    expect(
        page.get_by_text("Tensio Suivi est déconnectée : elle n'a plus accès à votre espace santé.")
    ).to_be_visible()
    expect(connected).to_have_count(1)
    expect(connected.first).to_contain_text("Carnet Vaccins")
    tensio_in_catalogue = listed.and_(page.locator(f'[data-client-id="{tensio["client_id"]}"]'))
    expect(tensio_in_catalogue.locator(".badge")).to_have_count(0)
    with stack.client(tokens["access_token"]) as c:
        assert c.get(f"/v1/dossiers/{ins}/measurements").status_code == 401
    with stack.client() as c:
        refreshed = c.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": tensio["client_id"],
            },
        )
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant", (
        refreshed.text
    )


def test_a_refusal_an_untrusted_request_and_a_professional(
    stack: RunningStack,
    visitors: Any,  # noqa: F811
    referenced: Referenced,
) -> None:
    patient = referenced.patient
    doctor = stack.create_professional(referenced.admin, "10")
    french = _js_object("MESSAGES")["invalid-authorization-request"]

    # On a phone, signed in already: the consent page at once; « Refuser » tells the app so.
    me = visitors(phone=True)
    page = me.page
    app = AppAddress(page, referenced.port)
    me.sign_in("Patient", patient["ins"], patient["password"], patient["email"])
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    request = referenced.request(["measurements.read"])
    page.goto(request.url(stack))
    card = page.locator("section.consent")
    expect(card.get_by_role("heading", name="Tensio Suivi")).to_be_visible()
    # Only what this request asks for, not all the app may ask.
    expect(card.locator("ul.app-scopes li")).to_have_count(1)
    me.fits_the_screen()
    card.get_by_role("button", name="Refuser").click()
    answer = app.landed(page)
    assert answer["error"] == ["access_denied"] and answer["state"] == [request.state], answer
    assert "code" not in answer
    with stack.client(_token(stack, patient)) as c:
        assert c.get("/v1/me/connected-apps").json()["items"] == []

    # Requests not to be trusted, the gateway's way in and the portal's: an unknown app, an
    # address the app did not declare. Said in French; the browser goes nowhere.
    unknown = Request("app_0123456789abcdef", referenced.redirect, ["measurements.read"])
    elsewhere = f"http://127.0.0.1:{referenced.port}/ailleurs"
    undeclared = referenced.request(["measurements.read"], elsewhere)
    for url in (
        unknown.url(stack),
        undeclared.url(stack),
        f"{stack.url}/portail/#/autoriser?{undeclared.query}",
    ):
        seen = len(app.seen)
        page.goto("about:blank")
        page.goto(url)
        refusal = page.get_by_role("alert")
        expect(refusal).to_have_text(french)
        expect(refusal).to_have_attribute("data-problem", "invalid-authorization-request")
        expect(page.get_by_role("button", name="Autoriser")).to_have_count(0)
        assert "/portail/#/autoriser?" in page.url and len(app.seen) == seen
    me.fits_the_screen()
    me.shot("64-telephone-autorisation-invalide")

    # A request the app must hear of (a scope it may not ask for), reaching the portal: the
    # browser goes back to the app with the error, and nothing is asked of the patient.
    too_much = referenced.request(["agenda.read"])
    page.goto(f"{stack.url}/portail/#/autoriser?{too_much.query}")
    answer = app.landed(page)
    assert answer["error"] == ["invalid_scope"] and answer["state"] == [too_much.state], answer

    # An app on the phone itself comes back through its own scheme (RFC 8252 §7.1): the page
    # names that scheme.
    scheme = "fr.carnet-vaccins.app:/retour"
    native = _register(stack, referenced.admin, VACCINES_APP, scheme)
    page.goto(Request(native["client_id"], scheme, ["agenda.read"]).url(stack))
    expect(page.locator("section.consent .return-host")).to_have_text("fr.carnet-vaccins.app")

    # A professional is told only a patient connects an app, and offered to sign in as one.
    pro = visitors()
    pro.sign_in("Professionnel de santé", doctor["rpps"], doctor["password"], doctor["email"])
    expect(pro.page.get_by_role("heading", name="Rechercher un patient")).to_be_visible()
    pro.page.goto(referenced.request(["measurements.read"]).url(stack))
    expect(
        pro.page.get_by_text(re.compile("Seul un patient peut connecter une application"))
    ).to_be_visible()
    expect(pro.page.get_by_role("button", name="Autoriser")).to_have_count(0)
    pro.page.get_by_role("button", name="Me connecter avec mon compte patient").click()
    expect(pro.page).to_have_url(re.compile(r"/portail/#/connexion$"))
    _sign_in_here(pro, patient)
    expect(
        pro.page.locator("section.consent").get_by_role("heading", name="Tensio Suivi")
    ).to_be_visible()

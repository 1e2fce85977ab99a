"""The web portal in a real browser (Debian's Chromium driven by Playwright) on the running
stack: the patient's journey and the professional's, end to end, through the public API only.
Every page is also checked at a phone's width (390 px: the space is used on smartphones), and
every refusal is said in French. Screenshots of each step go to docs/screenshots/ (shown in the
README)."""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from dmp_gateway.problems import STATUSES
from dmp_kit.errors import ERRORS
from dmp_stack.testing import RunningStack, until

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PORTAL = Path(__file__).resolve().parents[2] / "services/gateway/dmp_gateway/portal"
TIMEOUT_MS = 20_000
DESKTOP = {"width": 1200, "height": 900}
PHONE = {"width": 390, "height": 844}
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
)


def chromium() -> str:
    """The system's Chromium: Playwright never downloads a browser here."""
    path = os.environ.get("DMP_CHROMIUM") or shutil.which("chromium")
    assert path, "no Chromium: install Debian's `chromium` (.ci/run does) or set DMP_CHROMIUM"
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=chromium(),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield launched
        launched.close()


class Visitor:
    """One person in their own browser context (own tab storage), signing in as people do."""

    def __init__(self, browser: Browser, stack: RunningStack, phone: bool = False) -> None:
        self.stack = stack
        # A phone as Chromium emulates one: its width, touch, and the page's viewport meta.
        screen: dict[str, Any] = (
            {"viewport": PHONE, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
            if phone
            else {"viewport": DESKTOP}
        )
        self.context = browser.new_context(**screen, locale="fr-FR", timezone_id="Europe/Paris")
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        # An API refusal shows as a failed resource load (the portal handles it); anything
        # else logged as an error — a script error, a CSP violation — is a defect.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(message.text)

    def ask_code(self, kind: str, identifier: str, password: str, address: str) -> str:
        """The first step of signing in; returns the one-time code sent."""
        page = self.page
        page.goto(self.stack.url + "/")
        expect(page).to_have_url(re.compile(r"/portail/#/connexion$"))
        page.get_by_label(kind).check()
        page.get_by_label(re.compile("^Numéro (INS|RPPS)")).fill(identifier)
        page.get_by_label("Mot de passe").fill(password)
        sent = self.stack.mailbox.codes_sent(address)
        page.get_by_role("button", name="Continuer").click()
        return self.stack.mailbox.last_code(address, after=sent)

    def enter_code(self, code: str) -> None:
        self.page.get_by_label("Code à usage unique").fill(code)
        self.page.get_by_role("button", name="Se connecter").click()

    def sign_in(self, kind: str, identifier: str, password: str, address: str) -> None:
        self.enter_code(self.ask_code(kind, identifier, password, address))

    def go_to(self, link: str | re.Pattern[str]) -> None:
        """A menu link, as a person reaches it: on a phone the menu opens first."""
        menu = self.page.get_by_role("button", name="Menu")
        entry = self.page.get_by_role("navigation").get_by_role("link", name=link, exact=True)
        if menu.is_visible():
            expect(entry).to_be_hidden()
            menu.click()
        entry.click()

    def fits_the_screen(self) -> None:
        """Nothing wider than the screen: the page never scrolls sideways."""
        wide = self.page.evaluate(
            "[document.scrollingElement.scrollWidth, window.innerWidth,"
            " document.documentElement.clientWidth]"
        )
        width = self.page.viewport_size["width"] if self.page.viewport_size else 0
        assert wide[0] <= wide[1] and wide[0] <= wide[2] and wide[1] <= width, wide

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        # In CSS pixels: a phone's shots are 390 px wide whatever its pixel density.
        self.page.screenshot(path=SHOTS / f"{name}.png", full_page=True, scale="css")

    def close(self) -> None:
        self.context.close()
        assert not self.problems, self.problems


@pytest.fixture
def visitors(browser: Browser, stack: RunningStack) -> Iterator[Any]:
    opened: list[Visitor] = []

    def visitor(phone: bool = False) -> Visitor:
        opened.append(Visitor(browser, stack, phone))
        return opened[-1]

    yield visitor
    for v in opened:
        v.close()


def test_the_portal_is_served_with_a_strict_policy(stack: RunningStack) -> None:
    with httpx.Client(base_url=stack.url) as c:
        home = c.get("/")
        assert home.status_code == 303 and home.headers["location"] == "/portail/"
        page = c.get("/portail/")
        script = c.get("/portail/js/app.js")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" in page.headers
    assert '<html lang="fr">' in page.text
    # Nothing is loaded from elsewhere: every script and style is on this origin.
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert not re.search(r"https?://", script.text)


def _js_object(name: str) -> dict[str, str]:
    """An object literal of js/problems.js, keys to strings (its entries are written one a line,
    a long one on the next)."""
    text = (PORTAL / "js" / "problems.js").read_text()
    block = re.search(rf"^export const {name} = \{{\n(.*?)^\}};", text, re.S | re.M)
    assert block, name
    entries = re.findall(r'^  "?([a-z0-9-]+)"?:\s*"((?:[^"\\]|\\.)*)",$', block[1], re.M)
    return dict(entries)


def test_every_problem_type_has_a_french_message() -> None:
    """Each problem type the gateway can return has its French sentence in the portal, and each
    status a French fallback: a new type without one fails here."""
    catalogue = {t for s in STATUSES.values() for t in s.types} | {e.slug for e in ERRORS}
    messages = _js_object("MESSAGES")
    assert len(messages) >= len(catalogue) > 40
    assert sorted(catalogue - messages.keys()) == []
    assert sorted(messages.keys() - catalogue) == [], "a message for a type nobody returns"
    by_status = _js_object("BY_STATUS")
    assert sorted(set(map(str, STATUSES)) - by_status.keys()) == []
    english = {s.title for s in STATUSES.values()} | {e.title for e in ERRORS}
    for sentence in [*messages.values(), *by_status.values()]:
        assert sentence.endswith(".") and sentence[0].isupper(), sentence
        assert sentence not in english and not re.search(r"\b(the|wrong|not|is)\b", sentence)


def test_patient_journey(stack: RunningStack, visitors: Any) -> None:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    gp = stack.create_professional(admin, "10")
    unwanted = stack.create_professional(admin, "21")
    ins = patient["ins"]

    me = visitors()
    page = me.page
    page.goto(stack.url + "/")
    expect(page.get_by_role("heading", name="Connexion à votre espace santé")).to_be_visible()
    me.shot("01-connexion")
    page.set_viewport_size(PHONE)
    me.fits_the_screen()
    me.shot("11-telephone-connexion")
    page.set_viewport_size(DESKTOP)
    me.sign_in("Patient", ins, patient["password"], patient["email"])

    # No DMP yet: the patient opens it with their Vitale card's serial and their consent.
    expect(page.get_by_role("heading", name="Ouvrir le dossier médical partagé")).to_be_visible()
    page.get_by_label("Numéro de série de la carte Vitale").fill(patient["vitale_serial"])
    page.get_by_label("Je souhaite ouvrir mon dossier médical partagé").check()
    page.get_by_role("button", name="Ouvrir le dossier").click()
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    expect(page.get_by_text("Dossier ouvert")).to_be_visible()
    expect(page.locator(".sections li")).to_have_count(9)

    # Who may see the record: the GP named, a pharmacist blocked, emergency settings.
    page.get_by_role("link", name="Qui peut voir mon dossier").click()
    gp_form = page.locator("form", has=page.get_by_role("heading", name="Mon médecin traitant"))
    gp_form.get_by_label("Numéro RPPS du médecin").fill(gp["rpps"])
    gp_form.get_by_role("button", name="Désigner").click()
    expect(page.get_by_text(f"Votre médecin traitant : RPPS {gp['rpps']}.")).to_be_visible()
    team = page.locator("form", has=page.get_by_role("heading", name="Professionnels autorisés"))
    team.get_by_label("Numéro RPPS du professionnel").fill(unwanted["rpps"])
    team.get_by_role("button", name="Bloquer").click()
    expect(page.get_by_text(f"RPPS {unwanted['rpps']}")).to_be_visible()
    expect(page.get_by_role("button", name="Débloquer")).to_be_visible()
    page.get_by_label("Autoriser le médecin régulateur du SAMU-Centre 15").uncheck()
    page.get_by_role("button", name="Enregistrer mes choix").click()
    expect(page.get_by_text("Vos choix sont enregistrés.")).to_be_visible()
    me.shot("03-qui-peut-voir")
    # A wrong RPPS is refused in French, next to the field (the API's detail kept for
    # developers), and nothing changes.
    gp_form = page.locator("form", has=page.get_by_role("heading", name="Mon médecin traitant"))
    gp_form.get_by_label("Numéro RPPS du médecin").fill("123")
    gp_form.get_by_role("button", name="Changer de médecin traitant").click()
    refusal = gp_form.get_by_role("alert")
    expect(refusal).to_have_text("Ce numéro RPPS n'est pas valide : vérifiez ses 11 chiffres.")
    expect(refusal).to_have_attribute("data-problem", "invalid-rpps")
    expect(refusal).to_have_attribute("data-detail", re.compile("RPPS"))
    with stack.client(_token(stack, patient)) as c:
        settings = c.get(f"/v1/dossiers/{ins}/consent-settings").json()
        team_now = c.get(f"/v1/dossiers/{ins}/professionals").json()
    assert settings == {"allow_emergency_access": True, "allow_regulator_access": False}
    assert [m["rpps"] for m in team_now["blocked"]] == [unwanted["rpps"]]
    assert [m["rpps"] for m in team_now["authorized"] if m["attending_physician"]] == [gp["rpps"]]

    # A personal document, shown in the page, then masked from professionals.
    page.get_by_role("link", name="Mon dossier", exact=True).click()
    page.get_by_role("link", name="Ajouter un document").click()
    page.get_by_label("Titre").fill("Mon carnet de tension")
    page.get_by_label("Fichier").set_input_files(
        files=[{"name": "tension.txt", "mimeType": "text/plain", "buffer": b"12/8 le matin"}]
    )
    page.get_by_role("button", name="Ajouter au dossier").click()
    expect(page.get_by_role("heading", name="Mon carnet de tension")).to_be_visible()
    expect(page.locator("pre.content")).to_have_text("12/8 le matin")
    page.get_by_role("button", name="Masquer aux professionnels").click()
    expect(page.get_by_text("Masqué aux professionnels", exact=True)).to_be_visible()
    me.shot("04-document")
    page.get_by_role("link", name="Dossier", exact=True).click()
    expect(page.get_by_role("link", name=re.compile("^Espace personnel"))).to_contain_text("1")
    me.shot("02-mon-dossier")

    # Profile, emergency contact, advance directives.
    page.get_by_role("link", name="Mon profil médical").click()
    page.get_by_label("Allergies").fill("Pénicilline\nArachide")
    page.get_by_role("button", name="Enregistrer le profil").click()
    expect(page.get_by_text("Profil enregistré.")).to_be_visible()
    page.get_by_label("Nom").last.fill("Alex Martin")
    page.get_by_label("Lien").last.fill("conjoint")
    page.get_by_label("Téléphone").last.fill("+33612345678")
    page.get_by_role("button", name="Enregistrer les contacts").click()
    expect(page.get_by_role("group", name="Alex Martin")).to_be_visible()
    page.get_by_label("Mes directives").fill("Pas d'acharnement thérapeutique.")
    page.get_by_role("button", name="Enregistrer mes directives").click()
    expect(page.get_by_text("Directives enregistrées (version 1).")).to_be_visible()
    with stack.client(_token(stack, patient)) as c:
        assert c.get(f"/v1/dossiers/{ins}/profile").json()["allergies"] == [
            "Pénicilline",
            "Arachide",
        ]
        contacts = c.get(f"/v1/dossiers/{ins}/emergency-contacts").json()["contacts"]
    assert [(x["name"], x["relationship"]) for x in contacts] == [("Alex Martin", "conjoint")]

    # Notification preferences.
    page.get_by_role("link", name="Notifications").click()
    page.get_by_label("Nouveau document dans mon dossier par SMS").check()
    page.get_by_role("button", name="Enregistrer").click()
    expect(page.get_by_text("Préférences enregistrées.")).to_be_visible()

    # Close, then reopen, with the consequences said first.
    page.get_by_role("link", name="Mon dossier", exact=True).click()
    expect(page.get_by_text("plus aucun professionnel ne pourra le consulter")).to_be_visible()
    page.get_by_role("button", name="Fermer mon dossier").click()
    expect(page.get_by_text("Dossier fermé")).to_be_visible()
    page.get_by_role("button", name="Rouvrir mon dossier").click()
    expect(page.get_by_text("Dossier ouvert")).to_be_visible()

    # Keyboard only: on a fresh page, Tab reaches the skip link, which leads to the content,
    # then the menu.
    page.reload()
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Aller au contenu")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("button", name="Se déconnecter")).to_be_focused()

    # On a phone: the same pages fit the screen, the menu opens from one button, and a wrong
    # one-time code is refused in French (the API's English detail is never shown).
    phone = visitors(phone=True)
    ppage = phone.page
    code = phone.ask_code("Patient", ins, patient["password"], patient["email"])
    expect(ppage.get_by_role("heading", name="Vérification en deux étapes")).to_be_visible()
    phone.enter_code("000000" if code != "000000" else "111111")
    refusal = ppage.get_by_role("alert")
    expect(refusal).to_have_text("Code incorrect ou déjà utilisé. Saisissez le dernier code reçu.")
    expect(refusal).to_have_attribute("data-problem", "invalid-otp")
    expect(ppage.locator("body")).not_to_contain_text("wrong or used code")
    phone.fits_the_screen()
    phone.shot("12-telephone-code-refuse")
    phone.enter_code(code)
    expect(ppage.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    expect(ppage.locator(".sections li")).to_have_count(9)
    phone.fits_the_screen()
    phone.shot("13-telephone-mon-dossier")
    ppage.get_by_role("button", name="Menu").click()
    expect(ppage.get_by_role("button", name="Menu")).to_have_attribute("aria-expanded", "true")
    phone.fits_the_screen()
    phone.shot("14-telephone-menu")
    ppage.get_by_role("button", name="Menu").click()
    phone.go_to("Qui peut voir mon dossier")
    expect(ppage.get_by_text(f"Votre médecin traitant : RPPS {gp['rpps']}.")).to_be_visible()
    phone.fits_the_screen()
    phone.shot("15-telephone-qui-peut-voir")
    phone.go_to("Mon profil médical")
    expect(ppage.get_by_role("group", name="Alex Martin")).to_be_visible()
    phone.fits_the_screen()
    phone.go_to("Mon dossier")
    ppage.get_by_role("link", name=re.compile("^Espace personnel")).click()
    ppage.get_by_role("link", name="Mon carnet de tension").click()
    expect(ppage.locator("pre.content")).to_have_text("12/8 le matin")
    phone.fits_the_screen()
    phone.shot("16-telephone-document")

    # A type the portal does not know yet is said by its status, in French, with the wait.
    said = ppage.evaluate(
        """async () => {
          const { sentence } = await import("/portail/js/problems.js");
          return [
            sentence({ type: "a-new-type", status: 409 }),
            sentence({ type: "", status: 502 }),
            sentence({ type: "account-locked", status: 423, retryAfter: 90 }),
          ];
        }"""
    )
    assert said == [
        "Cette action n'est pas possible dans l'état actuel. Rechargez la page et réessayez.",
        "Le service a rencontré un problème. Réessayez plus tard.",
        "Trop de tentatives infructueuses : le compte est temporairement bloqué. "
        "Réessayez dans 2 minutes.",
    ]


def test_patient_account_and_professional_preview(stack: RunningStack, visitors: Any) -> None:
    """«Que voit un professionnel ?» for a nurse of the care team, then «Mon compte»: sessions
    ended, a weak password refused in French then a good one, a new e-mail address confirmed by
    its code. The patient is this test's own: their password and address change."""
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    nurse = stack.create_professional(admin, "60")
    doctor = stack.create_professional(admin, "10")
    ins = patient["ins"]
    token = _token(stack, patient)
    stack.open_dossier(token, patient)
    with stack.client(token) as c:
        for who in (nurse, doctor):
            url = f"/v1/dossiers/{ins}/professionals/{who['rpps']}"
            r = c.put(url, json={"status": "authorized"})
            assert r.status_code == 200, r.text
    doctor_token = _token(stack, doctor)
    docs = {
        title: stack.add_document(doctor_token, ins, code, title)
        for code, title in (
            ("11502-2", "Bilan sanguin"),
            ("11488-4", "Compte rendu de consultation"),
            ("11490-0", "Lettre de sortie"),
        )
    }
    with stack.client(token) as c:
        r = c.patch(
            f"/v1/dossiers/{ins}/documents/{docs['Lettre de sortie']['id']}",
            json={"masked_from_professionals": True},
        )
        assert r.status_code == 200, r.text
        said = c.get(f"/v1/dossiers/{ins}/preview", params={"rpps": nurse["rpps"]}).json()
    why = {d["title"]: d["explanation"] for d in said["hidden"]}
    assert set(why) == {"Compte rendu de consultation", "Lettre de sortie"}, said

    me = visitors()
    page = me.page
    me.sign_in("Patient", ins, patient["password"], patient["email"])
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()

    # From who may see the record, to what the nurse would see, and why not the rest.
    me.go_to("Qui peut voir mon dossier")
    page.get_by_role("link", name="Vérifier ce que voit un professionnel").click()
    expect(page.get_by_role("heading", name="Que voit un professionnel ?")).to_be_visible()
    page.get_by_role("link", name=f"Voir ce que voit RPPS {nurse['rpps']}").click()
    result = page.locator("section.preview")
    expect(result.get_by_role("heading", level=2)).to_contain_text(
        f"Infirmier (RPPS {nurse['rpps']})"
    )
    expect(result).to_contain_text("Autorisé par vous")
    expect(result.get_by_role("heading", name="Documents qu'il verrait (1)")).to_be_visible()
    expect(result.locator("li.seen")).to_have_count(1)
    expect(result.locator("li.seen")).to_contain_text("Bilan sanguin")
    expect(result.get_by_role("heading", name="Documents qu'il ne verrait pas (2)")).to_be_visible()
    for title, explanation in why.items():
        hidden = result.locator("li.not-seen").filter(has_text=title)
        expect(hidden.locator(".reason")).to_have_text(f"Pourquoi : {explanation}")
    expect(result.locator("li.not-seen").filter(has_text="Lettre de sortie")).to_contain_text(
        "Vous avez masqué ce document"
    )
    expect(result.locator("li.not-seen").filter(has_text="Compte rendu")).to_contain_text(
        "La matrice d'habilitation"
    )
    me.shot("25-apercu-professionnel")
    page.set_viewport_size(PHONE)
    me.fits_the_screen()
    page.set_viewport_size(DESKTOP)
    # A wrong RPPS is refused in French, next to its field.
    rpps = page.get_by_label("Numéro RPPS du professionnel")
    rpps.fill("123")
    page.get_by_role("button", name="Voir ce qu'il voit").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Ce numéro RPPS n'est pas valide : vérifiez ses 11 chiffres."
    )
    expect(rpps).to_have_attribute("aria-invalid", "true")
    expect(result).to_have_count(0)
    # A nurse the patient never authorised: no access at all, said in French.
    page.get_by_label("Profession", exact=True).select_option(label="Infirmier")
    page.get_by_role("button", name="Voir ce que verrait cette profession").click()
    expect(result.get_by_role("heading", level=2)).to_contain_text("« Infirmier »")
    expect(result.get_by_role("status").first).to_contain_text("Ne peut pas ouvrir votre dossier")
    expect(result.locator("li.seen")).to_have_count(0)
    expect(result.locator("li.not-seen")).to_have_count(3)

    # Mon compte: this browser, the API client's session, and two more; one ended, then all
    # the others.
    for _ in range(2):
        _token(stack, patient)
    me.go_to("Mon compte")
    expect(page.get_by_role("heading", name="Mon compte")).to_be_visible()
    sessions = page.locator("ul.sessions li")
    expect(sessions).to_have_count(4)
    expect(page.locator("ul.sessions li.current")).to_contain_text("Chrome sur Linux")
    expect(page.locator("ul.sessions li.current")).to_contain_text("Cet appareil")
    page.get_by_role("button", name="Mettre fin").first.click()
    expect(page.get_by_text(re.compile(r"^La session « .* » est fermée\.$"))).to_be_visible()
    expect(sessions).to_have_count(3)
    page.get_by_role("button", name="Déconnecter mes autres appareils").click()
    expect(page.get_by_text("2 autres appareils déconnectés.")).to_be_visible()
    expect(sessions).to_have_count(1)
    expect(page.get_by_role("button", name="Déconnecter mes autres appareils")).to_be_hidden()

    # A common password is refused, in French, on its field; then a good one is taken.
    good = "un chemin de grès sous la pluie"
    form = page.locator("form", has=page.get_by_role("heading", name="Mon mot de passe"))
    form.get_by_label("Mot de passe actuel").fill(patient["password"])
    form.get_by_label("Nouveau mot de passe").fill("password1234")
    form.get_by_role("button", name="Changer mon mot de passe").click()
    refusal = form.get_by_role("alert")
    expect(refusal).to_have_text(
        "Ce mot de passe figure parmi les plus utilisés ou déjà divulgués : choisissez-en un autre."
    )
    expect(refusal).to_have_attribute("data-problem", "common-password")
    expect(form.get_by_label("Nouveau mot de passe")).to_have_attribute("aria-invalid", "true")
    form.get_by_label("Nouveau mot de passe").fill(good)
    form.get_by_role("button", name="Changer mon mot de passe").click()
    expect(form.get_by_text("Votre mot de passe est changé.")).to_be_visible()
    expect(form.get_by_label("Mot de passe actuel")).to_have_value("")
    expect(form.get_by_label("Nouveau mot de passe")).not_to_have_attribute("aria-invalid", "true")
    me.shot("24-mon-compte")
    page.set_viewport_size(PHONE)
    me.fits_the_screen()
    me.shot("26-telephone-mon-compte")
    page.set_viewport_size(DESKTOP)

    # A new e-mail address, confirmed with the code sent to it.
    new_email = f"nouvelle-{ins}@example.org"
    address = page.get_by_label("Nouvelle adresse e-mail")
    address.fill("nouvelle adresse")
    page.get_by_role("button", name="Recevoir un code de confirmation").first.click()
    expect(page.get_by_role("alert")).to_have_text(
        "Le champ « Nouvelle adresse e-mail » n'est pas valide : "
        "Par exemple : prenom.nom@exemple.fr"
    )
    expect(address).to_have_attribute("aria-invalid", "true")
    address.fill(new_email)
    page.get_by_role("button", name="Recevoir un code de confirmation").first.click()
    expect(page.get_by_label("Code de confirmation")).to_be_focused()
    code = until(lambda: _code_sent(stack, new_email))
    assert code, "no code reached the new address"
    page.get_by_label("Code de confirmation").fill(code)
    page.get_by_role("button", name="Confirmer").click()
    expect(page.get_by_text(f"Votre adresse e-mail est désormais {new_email}.")).to_be_visible()

    # The API agrees: the new password and the new address sign in; the old password no longer.
    with stack.client() as c:
        r = c.post(
            "/v1/auth/login",
            json={"kind": "patient", "login": ins, "password": patient["password"]},
        )
        assert r.status_code == 401, r.text
    tokens = stack.login("patient", ins, good, new_email)
    with stack.client(tokens["access_token"]) as c:
        assert len(c.get("/v1/me/sessions").json()["items"]) == 2


def test_health_measurements_charts_and_tables(stack: RunningStack, visitors: Any) -> None:
    """« Mes constantes »: a weight typed the French way, an implausible one refused in French on
    its field, one SVG chart per series with its table, the BMI computed, one's own entry
    deleted and not the doctor's; the doctor reads the page without its form; a phone's width."""
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    doctor = stack.create_professional(admin, "10")
    ins = patient["ins"]
    token = _token(stack, patient)
    stack.open_dossier(token, patient)
    doctor_token = _token(stack, doctor)
    days = [40, 30, 20, 10]
    with stack.client(token) as c:
        r = c.put(
            f"/v1/dossiers/{ins}/professionals/{doctor['rpps']}", json={"status": "authorized"}
        )
        assert r.status_code == 200, r.text
        series = [("height", 172.0, "cm", 60)]
        weights = (78, 77.2, 76.5, 75.8)
        series += [("weight", w, "kg", d) for w, d in zip(weights, days, strict=True)]
        series += [
            ("glycaemia", g, "g/L", d) for g, d in zip((1.12, 1.05, 0.98, 1.01), days, strict=True)
        ]
        for kind, value, unit, ago in series:
            when = (datetime.now(UTC) - timedelta(days=ago)).isoformat()
            body = {"kind": kind, "value": value, "unit": unit, "measured_at": when}
            assert c.post(f"/v1/dossiers/{ins}/measurements", json=body).status_code == 201
    with stack.client(doctor_token) as c:
        pressures = ((142, 91), (136, 88), (131, 84))
        for (systolic, diastolic), ago in zip(pressures, days[:3], strict=True):
            when = (datetime.now(UTC) - timedelta(days=ago)).isoformat()
            body = {
                "kind": "blood_pressure",
                "systolic": systolic,
                "diastolic": diastolic,
                "unit": "mm[Hg]",
                "measured_at": when,
                "note": "Au cabinet",
            }
            assert c.post(f"/v1/dossiers/{ins}/measurements", json=body).status_code == 201

    me = visitors()
    page = me.page
    me.sign_in("Patient", ins, patient["password"], patient["email"])
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    me.go_to("Mes constantes")
    expect(page.get_by_role("heading", name="Mes constantes", level=1)).to_be_visible()
    charts = page.locator("section.series")
    expect(charts).to_have_count(5)  # height, weight, BMI, blood pressure, glycaemia
    for i in range(5):
        section = charts.nth(i)
        chart = section.get_by_role("img")
        expect(chart).to_have_count(1)
        expect(chart).to_have_accessible_name(re.compile(r"^Courbe : .+ mesures? du "))
        expect(section.get_by_role("table")).to_be_visible()
    pressure = charts.filter(has=page.get_by_role("heading", name="Tension artérielle (mmHg)"))
    expect(pressure.locator("polyline")).to_have_count(2)  # systolic and diastolic
    expect(pressure.get_by_role("row")).to_have_count(4)
    expect(pressure.get_by_role("row").nth(1)).to_contain_text("131 / 84 mmHg")
    expect(pressure.get_by_role("row").nth(1)).to_contain_text("Un professionnel de santé")
    expect(pressure.get_by_role("button", name=re.compile("^Supprimer"))).to_have_count(0)
    bmi = charts.filter(has=page.get_by_role("heading", name=re.compile("^Indice de masse")))
    expect(bmi.get_by_role("row").nth(1)).to_contain_text("25,6 kg/m²")  # 75.8 / 1.72²

    # A weight typed with a comma; then an implausible one, refused on its field, in French.
    form = page.locator("form", has=page.get_by_role("heading", name="Ajouter une mesure"))
    form.get_by_label("Mesure", exact=True).select_option(label="Poids")
    expect(form.get_by_label("Systolique (le chiffre le plus haut)")).to_be_hidden()
    expect(form.get_by_label("Unité de la glycémie")).to_be_hidden()
    form.get_by_label("Valeur").fill("74,6")
    form.get_by_role("button", name="Enregistrer la mesure").click()
    expect(page.get_by_text("Mesure enregistrée : poids.")).to_be_visible()
    weight = charts.filter(has=page.get_by_role("heading", name="Poids (kg)"))
    expect(weight.get_by_role("row").nth(1)).to_contain_text("74,6 kg")
    expect(weight.get_by_role("row").nth(1)).to_contain_text("Vous")
    form = page.locator("form", has=page.get_by_role("heading", name="Ajouter une mesure"))
    form.get_by_label("Valeur").fill("7460")
    form.get_by_role("button", name="Enregistrer la mesure").click()
    refusal = form.get_by_role("alert")
    expect(refusal).to_have_text(
        "Cette valeur n'est pas plausible : vérifiez le chiffre saisi et son unité."
    )
    expect(refusal).to_have_attribute("data-problem", "measurement-out-of-range")
    expect(form.get_by_label("Valeur")).to_have_attribute("aria-invalid", "true")
    form.get_by_label("Mesure", exact=True).select_option(label="Tension artérielle")
    expect(form.get_by_label("Valeur")).to_be_hidden()
    form.get_by_label("Systolique (le chiffre le plus haut)").fill("80")
    form.get_by_label("Diastolique (le chiffre le plus bas)").fill("90")
    form.get_by_role("button", name="Enregistrer la mesure").click()
    expect(form.get_by_role("alert")).to_have_attribute("data-problem", "measurement-out-of-range")
    me.shot("40-mes-constantes")

    # The patient deletes their own entry: the new weight goes, the BMI follows.
    weight.get_by_role("button", name=re.compile(r"^Supprimer la mesure .*74,6 kg")).click()
    expect(page.get_by_text("Mesure supprimée.")).to_be_visible()
    expect(weight.get_by_role("row").nth(1)).to_contain_text("75,8 kg")
    expect(bmi.get_by_role("row")).to_have_count(5)

    page.set_viewport_size(PHONE)
    me.fits_the_screen()
    me.shot("41-telephone-constantes")
    page.set_viewport_size(DESKTOP)

    # The doctor reads the same page, without the form.
    pro = visitors()
    pro.sign_in("Professionnel de santé", doctor["rpps"], doctor["password"], doctor["email"])
    expect(pro.page.get_by_role("heading", name="Rechercher un patient")).to_be_visible()
    pro.page.goto(f"{stack.url}/portail/#/dossier/{ins}/constantes")
    expect(pro.page.get_by_role("heading", name="Constantes du patient")).to_be_visible()
    expect(pro.page.locator("section.series")).to_have_count(5)
    expect(pro.page.get_by_role("heading", name="Ajouter une mesure")).to_have_count(0)


def _code_sent(stack: RunningStack, address: str) -> str | None:
    """The 6-digit code of the newest verification message sent to `address`, if any."""
    with stack.client() as c:
        items = c.get("/dev/outbox", params={"to": address}).json()["items"]
    for m in items:
        if m["subject"] == "Votre code de vérification DMP":
            found = re.search(r"\b([0-9]{6})\b", m["body"])
            if found:
                return found.group(1)
    return None


def test_professional_journey(stack: RunningStack, visitors: Any) -> None:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    gp = stack.create_professional(admin, "10")
    emergency = stack.create_professional(admin, "10")
    ins = patient["ins"]
    patient_token = _token(stack, patient)
    stack.open_dossier(patient_token, patient)
    with stack.client(patient_token) as c:
        r = c.put(f"/v1/dossiers/{ins}/attending-physician", json={"rpps": gp["rpps"]})
        assert r.status_code == 200, r.text

    # The GP finds the patient, sees what the matrix allows, adds a diagnosis to announce.
    doctor = visitors()
    page = doctor.page
    doctor.sign_in("Professionnel de santé", gp["rpps"], gp["password"], gp["email"])
    expect(page.get_by_role("heading", name="Rechercher un patient")).to_be_visible()
    page.get_by_label("Numéro INS du patient").fill("12345")
    page.get_by_role("button", name="Rechercher").click()
    expect(page.get_by_role("alert")).to_contain_text("15 chiffres")
    page.get_by_label("Numéro INS du patient").fill(ins)
    page.get_by_role("button", name="Rechercher").click()
    expect(page.get_by_role("heading", name=f"Dossier médical — patient {ins}")).to_be_visible()
    expect(page.get_by_text("En tant que Médecin, la matrice d'habilitation")).to_be_visible()
    doctor.shot("05-professionnel-dossier")
    page.set_viewport_size(PHONE)
    doctor.fits_the_screen()
    doctor.shot("17-telephone-professionnel-dossier")
    page.set_viewport_size(DESKTOP)
    page.get_by_role("link", name="Ajouter un document").click()
    page.get_by_label("Titre").fill("Résultat de biopsie")
    page.get_by_label("Type de document").select_option("11488-4")
    page.get_by_label("Fichier").set_input_files(
        files=[{"name": "biopsie.txt", "mimeType": "text/plain", "buffer": b"Compte rendu"}]
    )
    page.get_by_label("Invisible pour le patient jusqu'à la consultation d'annonce").check()
    doctor.shot("06-professionnel-ajout")
    page.get_by_role("button", name="Ajouter au dossier").click()
    expect(page.get_by_role("heading", name="Résultat de biopsie")).to_be_visible()
    expect(page.get_by_text("Invisible pour le patient", exact=True)).to_be_visible()

    # The patient knows one document waits, and nothing else about it.
    me = visitors()
    me.sign_in("Patient", ins, patient["password"], patient["email"])
    expect(me.page.get_by_text("1 document en attente")).to_be_visible()
    expect(me.page.get_by_text("Résultat de biopsie")).to_have_count(0)
    me.shot("07-patient-en-attente")

    # After the announcement, the GP reveals it.
    page.get_by_role("button", name="Rendre visible au patient").click()
    expect(page.get_by_text("Le patient voit désormais ce document.")).to_be_visible()
    me.page.reload()
    expect(me.page.get_by_text("document en attente")).to_have_count(0)
    me.page.get_by_role("link", name=re.compile("^Comptes rendus")).click()
    expect(me.page.get_by_role("link", name="Résultat de biopsie")).to_be_visible()

    # An emergency doctor the patient never authorised: refused, then break-glass, with a
    # mandatory reason and a banner while it lasts.
    urgent = visitors()
    upage = urgent.page
    urgent.sign_in(
        "Professionnel de santé", emergency["rpps"], emergency["password"], emergency["email"]
    )
    upage.get_by_label("Numéro INS du patient").fill(ins)
    upage.get_by_role("button", name="Rechercher").click()
    expect(upage.get_by_text("Accès refusé.")).to_be_visible()
    upage.set_viewport_size(PHONE)
    urgent.fits_the_screen()
    upage.set_viewport_size(DESKTOP)
    upage.get_by_role("link", name="Accès en urgence").click()
    upage.get_by_label("Motif de l'accès").fill("court")
    upage.get_by_role("button", name="Accéder en urgence").click()
    expect(upage.get_by_role("alert")).to_have_text(
        "Le champ « Motif de l'accès » n'est pas valide : saisissez au moins 10 caractères."
    )
    upage.get_by_label("Motif de l'accès").fill("Patient inconscient aux urgences, AVP")
    upage.get_by_role("button", name="Accéder en urgence").click()
    expect(upage.locator(".emergency-banner")).to_contain_text("Accès en urgence actif")
    expect(upage.get_by_role("heading", name=f"Dossier médical — patient {ins}")).to_be_visible()
    upage.get_by_role("link", name=re.compile("^Comptes rendus")).click()
    expect(upage.get_by_role("link", name="Résultat de biopsie")).to_be_visible()
    expect(upage.locator(".emergency-banner")).to_be_visible()
    urgent.shot("08-acces-urgence")

    # The patient's access history: the emergency access stands out, and the whole trace
    # checks out against the signed log, in the browser.
    mpage = me.page
    mpage.get_by_role("link", name="Historique des accès").click()
    expect(mpage.locator("tr.emergency").first).to_contain_text("Accès en urgence")
    reasoned = mpage.locator("tr.emergency").filter(has_text="Patient inconscient aux urgences")
    expect(reasoned.first).to_be_visible()
    mpage.get_by_role("button", name="Vérifier l'historique").click()
    expect(mpage.get_by_text(re.compile("^Historique vérifié"))).to_be_visible(timeout=60_000)
    expect(mpage.locator("td.verdict.ok").first).to_have_text("✓ vérifiée")
    assert mpage.locator("td.verdict.bad").count() == 0
    me.shot("09-historique-verifie")
    mpage.set_viewport_size(PHONE)
    me.fits_the_screen()
    me.shot("18-telephone-historique")

    # And the notifications: the emergency access was announced to the patient.
    me.go_to("Notifications")
    expect(mpage.locator(".inbox li").first).to_be_visible()
    me.fits_the_screen()
    me.shot("19-telephone-notifications")
    mpage.set_viewport_size(DESKTOP)
    me.go_to("Notifications")
    expect(mpage.locator(".inbox li").first).to_be_visible()
    me.shot("10-notifications")

    # Then the GP and the patient write to each other (same sessions).
    _messaging(stack, doctor, me, patient, gp["rpps"])

    # A professional has « Mon compte » too: this browser's session among theirs.
    doctor.go_to("Mon compte")
    expect(page.get_by_text(f"RPPS {gp['rpps']}", exact=False).first).to_be_visible()
    expect(page.locator("ul.sessions li.current")).to_contain_text("Cet appareil")
    expect(page.get_by_role("button", name="Changer mon mot de passe")).to_be_visible()


def _messaging(
    stack: RunningStack, doctor: Visitor, me: Visitor, patient: dict[str, Any], rpps: str
) -> None:
    """The secure messaging, both sides: the GP writes with attachments, the patient sees the
    unread badge, reads, downloads and replies; the GP sees the read receipt, files the
    patient's picture into the DMP and closes; the patient can no longer reply."""
    page, mpage, ins = doctor.page, me.page, patient["ins"]

    # The GP writes from the patient's dossier, with a PDF and a document of the DMP.
    page.get_by_role("link", name="Dossier", exact=True).click()
    page.get_by_role("link", name="Écrire au patient").click()
    page.get_by_label("Objet").fill("Vos résultats")
    page.get_by_label("Message", exact=True).fill("Bonjour,\nvos analyses sont normales.")
    page.get_by_label("Joindre un fichier").set_input_files(
        files=[{"name": "bilan.pdf", "mimeType": "application/pdf", "buffer": PDF}]
    )
    page.get_by_role("button", name="Joindre un document du dossier du patient…").click()
    picked = page.get_by_label("Joindre un document du dossier du patient")
    expect(picked.locator("option", has_text="Résultat de biopsie")).to_have_count(1)
    picked.select_option(index=1)
    doctor.shot("22-professionnel-ecrire")
    page.get_by_role("button", name="Envoyer").click()
    expect(page.get_by_role("heading", name="Vos résultats")).to_be_visible()
    sent = page.locator(".message.mine")
    expect(sent).to_have_count(1)
    expect(sent.locator(".receipt")).to_have_text("Non lu")
    expect(sent.get_by_role("button", name="Télécharger bilan.pdf")).to_be_visible()
    expect(sent.get_by_text("Copie d'un document du DMP")).to_be_visible()

    # The patient: the menu says one message waits, the list says where.
    me.go_to("Mon dossier")
    inbox = mpage.get_by_role("link", name=re.compile("^Messagerie"))
    expect(inbox).to_have_accessible_name("Messagerie (1 message non lu)")
    inbox.click()
    expect(mpage.get_by_role("heading", name="Messagerie")).to_be_visible()
    listed = mpage.locator(".conversations li").first
    expect(listed.get_by_role("link", name="Vos résultats")).to_be_visible()
    expect(listed.locator(".badge.unread")).to_have_text("1 non lu")
    me.shot("20-messagerie-patient")
    # A search of one's own messages, case and accents aside.
    search = mpage.get_by_role("searchbox", name="Rechercher dans mes messages")
    search.fill("RESULTATS")
    mpage.get_by_role("button", name="Rechercher").click()
    expect(mpage.get_by_text("Conversations contenant « RESULTATS » :")).to_be_visible()
    expect(listed.get_by_role("link", name="Vos résultats")).to_be_visible()
    search.fill("introuvable")
    mpage.get_by_role("button", name="Rechercher").click()
    expect(mpage.get_by_text("Aucune conversation ne contient « introuvable ».")).to_be_visible()
    search.fill("")
    mpage.get_by_role("button", name="Rechercher").click()
    expect(listed.get_by_role("link", name="Vos résultats")).to_be_visible()
    # On a phone, the folded menu's button says it too.
    mpage.set_viewport_size(PHONE)
    toggle = mpage.get_by_role("button", name="Menu")
    expect(toggle).to_have_accessible_name("Menu (1 message non lu)")
    me.fits_the_screen()
    mpage.set_viewport_size(DESKTOP)

    # Reading it: the sender, the text, the attachment's bytes; the badge goes.
    listed.get_by_role("link", name="Vos résultats").click()
    received = mpage.locator(".message").first
    expect(received.locator(".from")).to_contain_text("Médecin")
    expect(received.locator(".body")).to_have_text("Bonjour,\nvos analyses sont normales.")
    with mpage.expect_download() as got:
        received.get_by_role("button", name="Télécharger bilan.pdf").click()
    assert got.value.suggested_filename == "bilan.pdf"
    assert Path(got.value.path()).read_bytes() == PDF

    # The patient replies with a picture and a document of their DMP.
    mpage.get_by_label("Votre réponse").fill("Merci docteur, voici la photo.")
    mpage.get_by_label("Joindre un fichier").set_input_files(
        files=[{"name": "photo.png", "mimeType": "image/png", "buffer": PNG}]
    )
    mpage.get_by_role("button", name="Joindre un document de mon dossier…").click()
    mpage.get_by_label("Joindre un document de mon dossier").select_option(index=1)
    mpage.get_by_role("button", name="Envoyer la réponse").click()
    mine = mpage.locator(".message.mine")
    expect(mine).to_have_count(1)
    expect(mine.locator(".body")).to_have_text("Merci docteur, voici la photo.")
    expect(mine.locator(".attachments li")).to_have_count(2)
    expect(mine.get_by_text("Copie d'un document du DMP")).to_be_visible()
    menu = mpage.get_by_role("navigation")
    expect(menu.get_by_role("link", name="Messagerie", exact=True)).to_be_visible()  # all read
    expect(mine.locator(".receipt")).to_have_text("Non lu")
    me.shot("21-conversation")
    mpage.set_viewport_size(PHONE)
    me.fits_the_screen()
    me.shot("23-telephone-messagerie")
    mpage.set_viewport_size(DESKTOP)

    # The GP, in their own messaging: the reply waits; the patient read the first message.
    doctor.go_to(re.compile("^Messagerie"))
    waiting = page.locator(".conversations li").filter(has_text="Vos résultats")
    expect(waiting).to_contain_text("Camille Martin")
    expect(waiting.locator(".badge.unread")).to_have_text("1 non lu")
    waiting.get_by_role("link", name="Vos résultats").click()
    expect(page.locator(".message.mine .receipt")).to_have_text(re.compile("^Lu le "))
    reply = page.locator(".message:not(.mine)")
    expect(reply.locator(".body")).to_have_text("Merci docteur, voici la photo.")
    reply.get_by_role("button", name="Classer dans le DMP").click()
    page.get_by_label("Type de document").select_option("11488-4")
    page.get_by_label("Titre").fill("Photo de la plaie")
    page.get_by_role("button", name="Classer", exact=True).click()
    expect(page.get_by_text("La pièce jointe est classée dans le dossier")).to_be_visible()
    page.get_by_role("link", name="Classé dans le DMP").click()
    expect(page.get_by_role("heading", name="Photo de la plaie")).to_be_visible()
    page.go_back()
    page.get_by_role("button", name="Fermer la conversation").click()
    expect(page.get_by_text("Conversation close : le patient ne peut plus")).to_be_visible()
    expect(page.get_by_role("button", name="Rouvrir la conversation")).to_be_visible()
    page.set_viewport_size(PHONE)
    doctor.fits_the_screen()
    page.set_viewport_size(DESKTOP)

    # The patient, on the page still open, is told in French that it is closed.
    mpage.get_by_label("Votre réponse").fill("Une dernière question ?")
    mpage.get_by_role("button", name="Envoyer la réponse").click()
    refusal = mpage.locator("form.reply").get_by_role("alert")
    closed = "Cette conversation est close : seul le professionnel peut la rouvrir."
    expect(refusal).to_have_text(closed)
    expect(refusal).to_have_attribute("data-problem", "conversation-closed")
    mpage.reload()
    expect(mpage.get_by_text("close : vous ne pouvez plus y répondre")).to_be_visible()
    expect(mpage.get_by_role("button", name="Envoyer la réponse")).to_have_count(0)
    # Until the GP reopens it.
    page.get_by_role("button", name="Rouvrir la conversation").click()
    expect(page.get_by_text("Conversation rouverte")).to_be_visible()
    mpage.reload()
    expect(mpage.get_by_role("button", name="Envoyer la réponse")).to_be_visible()

    # Writing first to a pharmacy that never dispensed to the patient: refused, in French.
    pharmacist = stack.create_professional(stack.admin_token(), "21")
    me.go_to("Messagerie")
    mpage.get_by_role("link", name="Écrire à ma pharmacie").click()
    mpage.get_by_label("Numéro RPPS du pharmacien").fill(pharmacist["rpps"])
    mpage.get_by_label("Objet").fill("Ordonnance")
    mpage.get_by_label("Message", exact=True).fill("Bonjour, mon traitement est-il prêt ?")
    mpage.get_by_role("button", name="Envoyer").click()
    refusal = mpage.get_by_role("alert")
    expect(refusal).to_contain_text("une pharmacie qui lui a délivré des médicaments remboursés")
    expect(refusal).to_have_attribute("data-problem", "conversation-not-allowed")
    wrong = mpage.get_by_label("Numéro RPPS du pharmacien")
    expect(wrong).to_have_attribute("aria-invalid", "true")
    mpage.set_viewport_size(PHONE)
    me.fits_the_screen()
    mpage.set_viewport_size(DESKTOP)

    # Blocking the professional from the conversation, after a confirmation.
    me.go_to("Messagerie")
    mpage.get_by_role("link", name="Vos résultats").click()
    mpage.get_by_role("button", name="Bloquer ce professionnel").click()
    confirm = mpage.get_by_role("group", name="Confirmer le blocage")
    expect(confirm).to_contain_text("ne pourra plus vous écrire ni consulter votre dossier")
    confirm.get_by_role("button", name="Confirmer le blocage").click()
    expect(mpage.get_by_text("Ce professionnel est bloqué.")).to_be_visible()
    with stack.client(_token(stack, patient)) as c:
        blocked = c.get(f"/v1/dossiers/{ins}/professionals").json()["blocked"]
    assert [m["rpps"] for m in blocked] == [rpps]


def _token(stack: RunningStack, person: dict[str, Any]) -> str:
    key = "ins" if "ins" in person else "rpps"
    kind = "patient" if key == "ins" else "professional"
    return str(stack.login(kind, person[key], person["password"], person["email"])["access_token"])


def test_trusted_persons_and_acting_for(stack: RunningStack, visitors: Any) -> None:
    """« Mes proches » and « Agir pour »: a patient invites another patient with read access and
    keeps one document from her; the other accepts, acts for the first (banner, switch, her
    documents less the one kept back, a change refused in French), comes back to her own space;
    the first patient's history names both people for that read; then a change of access and a
    revocation, after a confirmation."""
    admin = stack.admin_token()
    camille = stack.create_patient(admin)
    alex = stack.create_patient(admin, given_name="Alex", family_name="Durand")
    # Alex is also the legal representative of a minor, whom she acts for already.
    lea = stack.create_patient(
        admin, legal_representatives=[alex["ins"]], given_name="Léa", family_name="Durand"
    )
    stack.open_dossier(_token(stack, lea), lea)
    with stack.client(_token(stack, alex)) as c:
        assert until(
            lambda: [i["ins"] for i in c.get("/v1/me/represented").json()["items"]] == [lea["ins"]]
        )
    gp = stack.create_professional(admin, "10")
    ins = camille["ins"]
    token = _token(stack, camille)
    stack.open_dossier(token, camille)
    stack.open_dossier(_token(stack, alex), alex)
    with stack.client(token) as c:
        r = c.put(f"/v1/dossiers/{ins}/professionals/{gp['rpps']}", json={"status": "authorized"})
        assert r.status_code == 200, r.text
    stack.add_document(_token(stack, gp), ins, "11502-2", "Bilan sanguin")
    journal = stack.add_document(token, ins, "DOC_PATIENT", "Mon journal de grossesse")

    me = visitors()
    page = me.page
    me.sign_in("Patient", ins, camille["password"], camille["email"])
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    # Nobody to act for yet: no switch.
    expect(page.get_by_label("Agir pour")).to_have_count(0)

    # Mes proches: naming oneself is refused in French, then Alex is invited with read access.
    me.go_to("Mes proches")
    expect(page.get_by_role("heading", name="Mes proches")).to_be_visible()
    expect(page.get_by_text("Vous n'avez désigné personne.")).to_be_visible()
    invite = page.locator("form.invite")
    invite.get_by_label("Numéro INS de la personne").fill(ins)
    invite.get_by_role("button", name="Inviter").click()
    refusal = invite.get_by_role("alert")
    expect(refusal).to_have_text(
        "Vous ne pouvez pas vous désigner vous-même comme personne de confiance."
    )
    expect(refusal).to_have_attribute("data-problem", "invalid-trusted-person")
    invite.get_by_label("Numéro INS de la personne").fill(alex["ins"])
    expect(invite.get_by_label("Lecture", exact=True)).to_be_checked()
    invite.get_by_role("button", name="Inviter").click()
    expect(page.locator(".outcome")).to_contain_text("Invitation envoyée à Alex Durand")
    trusted = page.locator("ul.trusted li").filter(has_text="Alex Durand")
    expect(trusted.locator(".badge")).to_have_text("Invitation envoyée")
    expect(trusted).to_contain_text(f"INS {alex['ins']} · Lecture")
    # Inviting her twice: refused, and still one entry.
    page.locator("form.invite").get_by_label("Numéro INS de la personne").fill(alex["ins"])
    page.locator("form.invite").get_by_role("button", name="Inviter").click()
    expect(page.locator("form.invite").get_by_role("alert")).to_have_attribute(
        "data-problem", "already-trusted"
    )
    expect(page.locator("ul.trusted li")).to_have_count(1)
    me.shot("27-mes-proches")
    page.set_viewport_size(PHONE)
    me.fits_the_screen()
    page.set_viewport_size(DESKTOP)

    # One document is not shared with trusted persons: the patient's own choice.
    page.goto(f"{stack.url}/portail/#/dossier/{ins}/document/{journal['id']}")
    expect(page.get_by_role("heading", name="Mon journal de grossesse")).to_be_visible()
    page.get_by_label("Ne pas partager avec mes proches").check()
    expect(page.get_by_text("Ce document n'est plus partagé avec vos proches.")).to_be_visible()
    expect(page.get_by_text("Non partagé avec mes proches", exact=True)).to_be_visible()
    expect(page.get_by_label("Ne pas partager avec mes proches")).to_be_checked()
    me.shot("28-document-non-partage")
    with stack.client(token) as c:
        r = c.get(f"/v1/dossiers/{ins}/documents/{journal['id']}")
    assert r.json()["hidden_from_trusted_persons"] is True, r.text

    # Alex, at a phone's width: the invitation waits in « Ils vous font confiance »; she accepts.
    her = visitors()
    hpage = her.page
    her.sign_in("Patient", alex["ins"], alex["password"], alex["email"])
    hpage.set_viewport_size(PHONE)
    expect(hpage.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    her.go_to("Mes proches")
    invited = hpage.locator("ul.trusted li").filter(has_text="Camille Martin")
    expect(invited.locator(".badge")).to_have_text("Invitation reçue")
    expect(invited).to_contain_text("Vous êtes sa personne de confiance · Lecture")
    minor = hpage.locator("ul.trusted li").filter(has_text="Léa Durand")
    expect(minor).to_contain_text("Vous êtes son représentant légal · Lecture et gestion")
    expect(minor.get_by_role("link", name="Agir pour Léa Durand")).to_be_visible()
    invited.get_by_role("button", name="Accepter").click()
    expect(
        hpage.get_by_text("Vous êtes désormais personne de confiance de Camille Martin.")
    ).to_be_visible()
    expect(invited.locator(".badge")).to_have_text("Actif")
    her.fits_the_screen()
    her.shot("31-telephone-mes-proches")

    # « Agir pour »: the switch, in the menu, opens Camille's space under a banner.
    hpage.get_by_role("button", name="Menu").click()
    hpage.get_by_label("Agir pour").select_option(label="Camille Martin (personne de confiance)")
    hpage.get_by_role("button", name="Ouvrir", exact=True).click()
    expect(hpage.get_by_role("heading", name="Dossier médical — Camille Martin")).to_be_visible()
    banner = hpage.locator(".acting-banner")
    expect(banner).to_have_text(
        "Vous agissez pour Camille Martin (lecture seule) — revenir à mon espace"
    )
    expect(hpage.get_by_text("sans pouvoir rien y changer")).to_be_visible()
    expect(hpage.get_by_role("link", name="Ajouter un document")).to_have_count(0)
    expect(hpage.get_by_role("button", name="Fermer mon dossier")).to_have_count(0)
    her.fits_the_screen()
    her.shot("32-telephone-agir-pour")
    # Her own pages wait until she is back in her space.
    hpage.get_by_role("button", name="Menu").click()
    menu = hpage.get_by_role("navigation")
    for own in ("Messagerie", "Mon compte", "Mes proches", "Notifications"):
        expect(menu.get_by_role("link", name=own, exact=True)).to_have_count(0)
    expect(hpage.get_by_label("Agir pour")).to_have_value(ins)
    choices = hpage.get_by_label("Agir pour").locator("option").all_text_contents()
    assert sorted(choices) == [
        "Camille Martin (personne de confiance)",
        "Léa Durand (représentant légal)",
        "Moi-même (Alex Durand)",
    ], choices
    her.fits_the_screen()
    hpage.get_by_role("button", name="Menu").click()

    # At desktop width: Camille's documents, less the one she keeps from her trusted persons.
    hpage.set_viewport_size(DESKTOP)
    hpage.get_by_role("link", name=re.compile("^Espace personnel")).click()
    expect(hpage.get_by_text("Aucun document dans cette rubrique.")).to_be_visible()
    expect(banner).to_be_visible()
    hpage.get_by_role("link", name="Dossier", exact=True).click()
    hpage.get_by_role("link", name=re.compile("^Analyses de biologie")).click()
    expect(hpage.get_by_role("link", name="Bilan sanguin")).to_be_visible()
    hpage.get_by_role("link", name="Bilan sanguin").click()
    expect(hpage.get_by_role("heading", name="Bilan sanguin")).to_be_visible()
    expect(hpage.locator("pre.content")).to_have_text("Bilan sanguin")
    # Neither masking nor the patient's own sharing choice: read access only.
    expect(hpage.get_by_label("Ne pas partager avec mes proches")).to_have_count(0)
    expect(hpage.get_by_role("button", name="Masquer aux professionnels")).to_have_count(0)
    her.shot("29-agir-pour")
    # A change with read access only: refused, in French.
    her.go_to("Qui peut voir son dossier")
    expect(
        hpage.get_by_role("heading", name="Qui peut voir son dossier — Camille Martin")
    ).to_be_visible()
    hpage.get_by_role("button", name="Enregistrer mes choix").click()
    refusal = hpage.get_by_role("alert")
    expect(refusal).to_have_text(
        "Votre accès à ce dossier est en lecture seule : vous ne pouvez rien y modifier."
    )
    expect(refusal).to_have_attribute("data-problem", "read-only")
    # The API agrees: the same list, without the journal.
    with stack.client(_token(stack, alex)) as c:
        r = c.get(f"/v1/dossiers/{ins}/documents")
    assert r.status_code == 200, r.text
    assert [d["title"] for d in r.json()["items"]] == ["Bilan sanguin"]
    # Back to her own space: no banner, her own menu.
    banner.get_by_role("link", name="revenir à mon espace").click()
    expect(hpage.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    expect(hpage.locator(".acting-banner")).to_have_count(0)
    expect(hpage.get_by_label("Agir pour")).to_have_value(alex["ins"])

    # Camille's history: Alex's read, with both names; the trace still checks out.
    me.go_to("Historique des accès")
    read = page.locator("table.log tbody tr").filter(
        has_text="Alex Durand (pour le compte de Camille Martin)"
    )
    expect(read.first).to_be_visible()
    expect(read.filter(has_text="Consultation d'un document").first).to_be_visible()
    # Her acceptance is her own act; the invitation, Camille's.
    rows = page.locator("table.log tbody tr")
    accepted = rows.filter(has_text="Invitation acceptée par une personne de confiance")
    expect(accepted.locator("td").nth(1)).to_have_text("Alex Durand")
    invited = rows.filter(has_text="Invitation d'une personne de confiance")
    expect(invited.locator("td").nth(1)).to_have_text("Vous")
    page.get_by_role("button", name="Vérifier l'historique").click()
    expect(page.get_by_text(re.compile("^Historique vérifié"))).to_be_visible(timeout=60_000)
    assert page.locator("td.verdict.bad").count() == 0
    me.shot("30-historique-proche")
    page.set_viewport_size(PHONE)
    me.fits_the_screen()
    page.set_viewport_size(DESKTOP)

    # Read and manage, then no access at all, after a confirmation.
    me.go_to("Mes proches")
    trusted = page.locator("ul.trusted li").filter(has_text="Alex Durand")
    expect(trusted.locator(".badge")).to_have_text("Actif")
    trusted.get_by_label("Accès de Alex Durand").select_option("manage")
    trusted.get_by_role("button", name="Modifier l'accès").click()
    expect(
        page.get_by_text("L'accès de Alex Durand est désormais : lecture et gestion.")
    ).to_be_visible()
    with stack.client(token) as c:
        items = c.get(f"/v1/dossiers/{ins}/trusted-persons").json()["items"]
    assert [(p["ins"], p["scope"], p["status"]) for p in items] == [
        (alex["ins"], "manage", "active")
    ]
    # Alex, on her next visit, manages: no longer read-only, and she may add a document.
    hpage.goto(f"{stack.url}/portail/#/dossier/{ins}")
    hpage.reload()
    expect(banner).to_have_text("Vous agissez pour Camille Martin — revenir à mon espace")
    expect(hpage.get_by_role("link", name="Ajouter un document")).to_be_visible()
    trusted = page.locator("ul.trusted li").filter(has_text="Alex Durand")
    trusted.get_by_role("button", name="Retirer l'accès").click()
    confirm = trusted.get_by_role("group", name="Confirmer le retrait")
    expect(confirm).to_contain_text("ne pourra plus consulter votre dossier")
    confirm.get_by_role("button", name="Confirmer le retrait").click()
    expect(page.get_by_text("Alex Durand n'a plus accès à votre dossier.")).to_be_visible()
    expect(page.locator("ul.trusted")).to_have_count(0)
    # Revoked: Alex acts for Camille no more; the page says so in French.
    hpage.reload()
    expect(hpage.get_by_role("alert")).to_have_text(
        "Vous n'êtes pas autorisé à consulter ces informations."
    )
    expect(hpage.locator(".acting-banner")).to_have_count(0)
    with stack.client(_token(stack, alex)) as c:
        left = c.get("/v1/me/represented").json()["items"]
        assert [i["ins"] for i in left] == [lea["ins"]], left
        r = c.get(f"/v1/dossiers/{ins}/documents")
    assert r.status_code == 403, r.text

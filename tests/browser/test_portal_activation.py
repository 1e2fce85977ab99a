"""The portal's pages for an account the insurer's directory created, in a real browser on the
running stack: its person activates it (both codes, a password refused in French then a good
one) and logs in; another opposes it after a confirmation; a wrong provisional code is refused
in French. At a desktop's width and a phone's; screenshots to docs/screenshots/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from playwright.sync_api import Page, expect

from dmp_stack.testing import RunningStack, until


def _sibling(name: str, path: Path) -> ModuleType:
    """Another test module, loaded once, whose fixtures and helpers are shared here."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


TESTS = Path(__file__).resolve().parents[1]
# The browser, its visitors and the screen sizes of the portal's tests; the directory's
# accounts, the outbox and its codes as the API's tests read them.
portal = _sibling("dmp_browser_portal", TESTS / "browser" / "test_portal.py")
accounts = _sibling("dmp_e2e_accounts", TESTS / "e2e" / "test_accounts.py")
browser = portal.browser
visitors = portal.visitors
DESKTOP, PHONE = portal.DESKTOP, portal.PHONE

WRONG_PROOF = (
    "Ces informations ne correspondent à aucun compte en attente : vérifiez votre numéro INS, "
    "le numéro de série de votre carte Vitale et le code provisoire reçu."
)


def _created(stack: RunningStack) -> dict[str, Any]:
    """An account the directory created, its provisional code, and the directory's token."""
    directory = stack.client_token(stack.admin_token(), ["directory_sync"])
    account: dict[str, Any] = accounts.provisional(stack, directory, phone="")
    return {**account, "directory": directory}


def _code(stack: RunningStack, address: str) -> str:
    """The verification code sent to `address` (e-mail or SMS)."""
    sent = until(lambda: accounts.outbox(stack, address, accounts.VERIFY))
    assert sent, f"no code reached {address}"
    code: str = accounts.code_in(sent[0]["body"])
    return code


def _status(stack: RunningStack, account: dict[str, Any]) -> Any:
    with stack.client(account["directory"]) as c:
        return c.get(f"/v1/accounts/{account['ins']}").json()["status"]


def _prove(page: Page, account: dict[str, Any], code: str) -> None:
    page.get_by_label("Numéro INS").fill(account["ins"])
    page.get_by_label("Numéro de série de la carte Vitale").fill(account["vitale_serial"])
    page.get_by_label("Code provisoire").fill(code)


def test_a_person_activates_their_account_then_logs_in(stack: RunningStack, visitors: Any) -> None:
    account = _created(stack)
    ins = account["ins"]
    email, phone = f"mine-{ins}@example.org", f"+336{ins[-8:]}"
    me = visitors()
    page = me.page
    page.goto(stack.url + "/")
    page.get_by_role("link", name="Activer mon compte").click()
    expect(page.get_by_role("heading", name="Activer mon espace santé")).to_be_visible()
    expect(page.locator("main")).to_contain_text("n'a aucun impact sur vos remboursements")

    # A wrong provisional code: refused in French, nothing sent, what was typed kept.
    _prove(page, account, "ABCDEFGHJK")
    page.get_by_label("Adresse e-mail").fill(email)
    page.get_by_label("Téléphone mobile").fill(phone)
    page.get_by_role("button", name="Recevoir mes codes de confirmation").click()
    refusal = page.get_by_role("alert")
    expect(refusal).to_have_text(WRONG_PROOF)
    expect(refusal).to_have_attribute("data-problem", "invalid-credentials")
    expect(page.get_by_label("Adresse e-mail")).to_have_value(email)
    assert not accounts.outbox(stack, email, accounts.VERIFY)
    me.shot("33-activation-code-refuse")
    page.set_viewport_size(PHONE)
    me.fits_the_screen()
    page.set_viewport_size(DESKTOP)

    # A malformed address is refused on its field, in French.
    code = account["code"].lower()
    page.get_by_label("Code provisoire").fill(f"{code[:5]} {code[5:]}")
    page.get_by_label("Adresse e-mail").fill("mon adresse")
    page.get_by_role("button", name="Recevoir mes codes de confirmation").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "Le champ « Adresse e-mail » n'est pas valide"
    )
    expect(page.get_by_label("Adresse e-mail")).to_have_attribute("aria-invalid", "true")

    # The provisional code as people type it; a code goes to each address.
    page.get_by_label("Adresse e-mail").fill(email)
    page.get_by_role("button", name="Recevoir mes codes de confirmation").click()
    expect(page.get_by_role("heading", name="2. Vos codes et votre mot de passe")).to_be_visible()
    expect(page.get_by_label("Code reçu par e-mail")).to_be_focused()
    expect(page.locator("main")).to_contain_text(f"Un code à 6 chiffres a été envoyé à {email}")
    expect(page.locator(".rules li")).to_have_count(4)
    page.get_by_label("Code reçu par e-mail").fill(_code(stack, email))
    page.get_by_label("Code reçu par SMS").fill(_code(stack, phone))

    # Two passwords that differ, then one with the person's name: each refused in French.
    password = page.get_by_label("Mot de passe", exact=True)
    again = page.get_by_label("Confirmez le mot de passe")
    password.fill("gwenaelle au soleil")
    again.fill("gwenaelle sous la pluie")
    page.get_by_role("button", name="Activer mon compte").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Les deux mots de passe saisis ne sont pas identiques."
    )
    expect(again).to_have_attribute("aria-invalid", "true")
    again.fill("gwenaelle au soleil")
    page.get_by_role("button", name="Activer mon compte").click()
    refusal = page.get_by_role("alert")
    expect(refusal).to_have_text(
        "Ce mot de passe contient vos nom, prénom, numéros ou coordonnées : "
        "choisissez-en un sans rapport avec vous."
    )
    expect(refusal).to_have_attribute("data-problem", "personal-password")
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(again).not_to_have_attribute("aria-invalid", "true")
    assert _status(stack, account) == "to_activate"
    me.shot("34-activation-mot-de-passe")
    page.set_viewport_size(PHONE)
    me.fits_the_screen()
    me.shot("36-telephone-activation")
    page.set_viewport_size(DESKTOP)

    good = "un chemin de grès sous la pluie"
    password.fill(good)
    again.fill(good)
    page.get_by_role("button", name="Activer mon compte").click()
    expect(page.get_by_role("heading", name="Votre espace santé est activé")).to_be_visible()
    done = page.locator("main").get_by_role("status")
    expect(done).to_contain_text(f"un code vous sera envoyé à {email}")
    assert _status(stack, account) == "active"
    me.shot("35-activation-reussie")
    page.set_viewport_size(PHONE)
    me.fits_the_screen()
    page.set_viewport_size(DESKTOP)

    # From the confirmation to the login, with the password just chosen.
    page.get_by_role("link", name="Me connecter").click()
    expect(page.get_by_role("heading", name="Connexion à votre espace santé")).to_be_visible()
    me.sign_in("Patient", ins, good, email)
    expect(page.locator("#nav .who")).to_contain_text("Gwenaëlle Le Goff")
    expect(page.get_by_role("link", name="Mon compte", exact=True)).to_be_visible()


def test_a_person_opposes_their_account_on_a_phone(stack: RunningStack, visitors: Any) -> None:
    account = _created(stack)
    me = visitors(phone=True)
    page = me.page
    page.goto(stack.url + "/")
    page.get_by_role("link", name="Je ne souhaite pas de compte (opposition)").click()
    heading = page.get_by_role("heading", name="M'opposer à la création de mon espace santé")
    expect(heading).to_be_visible()
    main = page.locator("main")
    expect(main).to_contain_text("Votre compte et votre espace santé sont supprimés.")
    expect(main).to_contain_text("tant que vous ne changez pas d'avis")
    me.fits_the_screen()

    # A wrong provisional code, once confirmed: refused in French, the fields editable again.
    _prove(page, account, "ABCDEFGHJK")
    page.get_by_role("button", name="Continuer").click()
    confirm = page.get_by_role("group", name="Confirmer l'opposition")
    expect(confirm).to_contain_text("Confirmez-vous votre opposition ?")
    expect(page.get_by_label("Code provisoire")).not_to_be_editable()
    page.get_by_role("button", name="Confirmer mon opposition").click()
    refusal = page.get_by_role("alert")
    expect(refusal).to_have_text(WRONG_PROOF)
    expect(refusal).to_have_attribute("data-problem", "invalid-credentials")
    expect(confirm).to_have_count(0)
    expect(page.get_by_label("Code provisoire")).to_be_editable()
    me.fits_the_screen()
    me.shot("39-telephone-opposition-code-refuse")

    # Cancelling the confirmation sends nothing.
    page.get_by_label("Code provisoire").fill(account["code"])
    page.get_by_role("button", name="Continuer").click()
    page.get_by_role("button", name="Annuler").click()
    expect(confirm).to_have_count(0)
    assert _status(stack, account) == "to_activate"

    page.get_by_role("button", name="Continuer").click()
    expect(confirm).to_be_visible()
    me.fits_the_screen()
    me.shot("37-telephone-opposition")
    page.get_by_role("button", name="Confirmer mon opposition").click()
    expect(page.get_by_role("heading", name="Votre opposition est enregistrée")).to_be_visible()
    expect(main.get_by_role("status")).to_have_text(
        "Votre compte et votre espace santé ont été supprimés. Aucun espace ne sera ouvert "
        "pour vous tant que vous ne reviendrez pas sur votre décision."
    )
    me.fits_the_screen()
    me.shot("38-telephone-opposition-faite")
    assert _status(stack, account) == "opposed"

    # The provisional code is spent: activating now is refused, in French.
    page.get_by_role("link", name="Retour à la connexion").click()
    page.get_by_role("link", name="Activer mon compte").click()
    # the activation form, not the opposition form it replaces, takes the proof
    expect(page.get_by_role("heading", name="Activer mon espace santé")).to_be_visible()
    _prove(page, account, account["code"])
    expect(page.get_by_label("Numéro INS")).to_have_value(account["ins"])
    page.get_by_label("Adresse e-mail").fill(account["email"])
    page.get_by_label("Téléphone mobile").fill("+33612345678")
    page.get_by_role("button", name="Recevoir mes codes de confirmation").click()
    expect(page.get_by_role("alert")).to_have_text(WRONG_PROOF)

"""« Télécharger mes données » in « Mon compte », in Chromium: the patient prepares the archive,
sees it ready, downloads it (a ZIP named by its date), at desktop and at phone width."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from playwright.sync_api import expect

from dmp_stack.testing import RunningStack
from tests.browser.test_portal import _token, browser, visitors  # noqa: F401 (fixtures)


def test_a_patient_prepares_and_downloads_their_data(
    stack: RunningStack,
    visitors: Any,  # noqa: F811
) -> None:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    doctor = stack.create_professional(admin, "10")
    ins = patient["ins"]
    stack.open_dossier(_token(stack, patient), patient)
    stack.add_document(_token(stack, doctor), ins, "11488-4", "Compte rendu de consultation")

    for phone in (False, True):
        me = visitors(phone=phone)
        page = me.page
        me.sign_in("Patient", ins, patient["password"], patient["email"])
        expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
        me.go_to("Mon compte")
        title = page.get_by_role("heading", name="Télécharger mes données")
        card = page.locator("section", has=title)
        expect(card).to_be_visible()
        if not phone:
            card.get_by_role("button", name="Préparer mon archive").click()
            said = card.get_by_text("Votre archive est prête : vous pouvez la télécharger.")
            expect(said).to_be_visible(timeout=60_000)
        ready = card.get_by_role("button", name="Télécharger").first
        expect(ready).to_be_visible(timeout=60_000)
        expect(card.locator("ul.exports li").first).to_contain_text("Prête")
        me.fits_the_screen()
        if not phone:
            me.shot("42-telecharger-mes-donnees")
        with page.expect_download() as arrived:
            ready.click()
        download = arrived.value
        assert download.suggested_filename.startswith("mon-espace-sante-")
        assert download.suggested_filename.endswith(".zip")
        path = download.path()
        names = zipfile.ZipFile(io.BytesIO(path.read_bytes())).namelist()
        assert "LISEZMOI.txt" in names and "documents/index.json" in names
        assert any(n.startswith("documents/comptes_rendus/") for n in names)

"""« Mon agenda » and « Prévention » in Chromium, on the running stack: the patient adds an
appointment shared with her doctor, moves it and cancels it; the doctor sees it and proposes
another, which she accepts; she exports her agenda (.ics); she marks a screening done with a
document of her dossier, postpones another, and stops prevention messages, the reminders staying
shown. At desktop and phone widths, with screenshots (docs/screenshots/70 to 75)."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
from playwright.sync_api import Browser, Locator, Page, expect

from dmp_kit.identifiers import ins_control_key
from dmp_stack.testing import RunningStack, make_ins, until
from tests.browser.test_portal import PHONE, browser, visitors  # noqa: F401 (fixtures)

PARIS = ZoneInfo("Europe/Paris")
BREAST = "Dépistage du cancer du sein (mammographie)"
COLORECTAL = "Dépistage du cancer colorectal (test immunologique)"
CERVICAL = "Dépistage du cancer du col de l'utérus (test HPV)"


def woman_of_51(stack: RunningStack) -> dict[str, Any]:
    """A woman (her INS says so: 2) of 51, for whom the rules file has three screenings due."""
    first13 = "2" + make_ins()[1:13]
    ins = f"{first13}{ins_control_key(first13):02d}"
    today = datetime.now(PARIS).date()
    birth = date(today.year - 51, 1, 15) if today.month > 2 else date(today.year - 52, 6, 15)
    return stack.create_patient(
        stack.admin_token(),
        ins=ins,
        birth_date=birth.isoformat(),
        email=f"patient-{ins}@example.org",
    )


def in_days(days: int) -> str:
    return (datetime.now(PARIS).date() + timedelta(days=days)).isoformat()


def at_paris(day: str, time: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{time}:00").replace(tzinfo=PARIS)


def fill(form: Locator, title: str, day: str, start: str, end: str, place: str) -> None:
    """An appointment's form filled in as a person does: its date and times in Paris time."""
    form.get_by_label("Objet").fill(title)
    form.get_by_label("Date").fill(day)
    form.get_by_label("Heure de début").fill(start)
    form.get_by_label("Heure de fin").fill(end)
    form.get_by_label("Lieu (facultatif)").fill(place)


def agenda_of(visitor: Any, person: dict[str, Any], ins: str) -> Page:
    """`person` signs in, acts for `ins` (« Agir pour ») and opens their agenda."""
    page: Page = visitor.page
    visitor.sign_in("Patient", person["ins"], person["password"], person["email"])
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    page.get_by_label("Agir pour").select_option(ins)
    page.get_by_role("button", name="Ouvrir").click()
    visitor.go_to("Son agenda")
    return page


def item(page: Page, title: str) -> Locator:
    return page.locator("li.appointment", has=page.get_by_text(title, exact=True))


def reminder(page: Page, act: str) -> Locator:
    return page.locator("li.reminder", has=page.get_by_text(act, exact=True))


def test_times_are_read_and_typed_in_paris_time_on_a_device_elsewhere(
    stack: RunningStack,
    browser: Browser,  # noqa: F811
) -> None:
    """A device set to New York's time: the agenda still says and reads Paris time, summer and
    winter, across the night and the changes of hour."""
    context = browser.new_context(locale="fr-FR", timezone_id="America/New_York")
    try:
        page = context.new_page()
        page.goto(stack.url + "/portail/")
        said = page.evaluate(
            """async () => {
              const { parisInstant, when } = await import("/portail/js/agenda.js");
              return {
                offset: new Date("2026-07-01T12:00:00Z").getTimezoneOffset(),
                typed: [
                  parisInstant("2026-07-01", "09:30"),
                  parisInstant("2026-12-24", "23:00"),
                  parisInstant("2026-03-29", "03:30"),
                  parisInstant("2026-10-25", "12:00"),
                  parisInstant("2026-07-01", ""),
                ],
                shown: [
                  when({ starts_at: "2026-07-01T07:30:00Z", ends_at: "2026-07-01T08:00:00Z" }),
                  when({ starts_at: "2026-12-24T22:00:00Z", ends_at: "2026-12-25T07:00:00Z" }),
                ],
              };
            }"""
        )
    finally:
        context.close()
    assert said["offset"] == 240  # the device is in New York (UTC-4 in summer)
    assert said["typed"] == [
        "2026-07-01T07:30:00.000Z",
        "2026-12-24T22:00:00.000Z",
        "2026-03-29T01:30:00.000Z",  # the night summer time began
        "2026-10-25T11:00:00.000Z",  # the day it ended
        None,
    ]
    assert said["shown"] == [
        "mercredi 1 juillet 2026, 09:30 – 10:00",
        "jeudi 24 décembre 2026, 23:00 – vendredi 25 décembre 2026, 08:00",
    ]


def test_agenda_appointments_and_prevention_reminders(
    stack: RunningStack,
    visitors: Any,  # noqa: F811
) -> None:
    admin = stack.admin_token()
    patient = woman_of_51(stack)
    doctor = stack.create_professional(admin, "10")
    ins = patient["ins"]
    token = stack.token_for(patient, "patient")
    stack.open_dossier(token, patient)
    with stack.client(token) as c:
        r = c.put(
            f"/v1/dossiers/{ins}/professionals/{doctor['rpps']}", json={"status": "authorized"}
        )
        assert r.status_code == 200, r.text
    result = stack.add_document(token, ins, "DOC_PATIENT", "Résultat de ma mammographie")

    me = visitors()
    page = me.page
    me.sign_in("Patient", ins, patient["password"], patient["email"])
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    me.go_to("Mon agenda")
    expect(page.get_by_role("heading", name="Mon agenda", level=1)).to_be_visible()
    expect(page.get_by_text("Aucun rendez-vous à venir.")).to_be_visible()

    # She adds an appointment, shared with her doctor (chosen among her care team).
    form = page.locator("form", has=page.get_by_role("heading", name="Ajouter un rendez-vous"))
    first_day = in_days(3)
    fill(form, "Consultation de cardiologie", first_day, "09:30", "10:00", "Hôpital Nord")
    form.get_by_label(f"RPPS {doctor['rpps']}").check()
    form.get_by_role("button", name="Ajouter le rendez-vous").click()
    expect(page.get_by_text("Rendez-vous ajouté : Consultation de cardiologie.")).to_be_visible()
    heart = item(page, "Consultation de cardiologie")
    expect(heart).to_contain_text("09:30 – 10:00")
    expect(heart).to_contain_text("Lieu : Hôpital Nord")
    expect(heart).to_contain_text(f"Partagé avec : RPPS {doctor['rpps']}")
    expect(heart.locator(".badge")).to_have_text("Confirmé")
    url = f"/v1/dossiers/{ins}/appointments"
    with stack.client(token) as c:
        [saved] = c.get(url).json()["items"]
    assert datetime.fromisoformat(saved["starts_at"]) == at_paris(first_day, "09:30")
    assert datetime.fromisoformat(saved["ends_at"]) == at_paris(first_day, "10:00")
    assert saved["shared_with"] == [doctor["rpps"]] and saved["status"] == "confirmed"

    # A refusal is said in French next to the form, and nothing is written.
    form = page.locator("form", has=page.get_by_role("heading", name="Ajouter un rendez-vous"))
    form.get_by_label("Objet").fill("Dentiste")
    form.get_by_role("button", name="Ajouter le rendez-vous").click()
    expect(form.get_by_role("alert")).to_have_text(
        "Indiquez la date, l'heure de début et l'heure de fin."
    )
    fill(form, "Dentiste", in_days(6), "11:00", "10:30", "")
    form.get_by_role("button", name="Ajouter le rendez-vous").click()
    expect(form.get_by_role("alert")).to_have_text(
        "L'heure de fin doit venir après l'heure de début."
    )
    with stack.client(token) as c:
        assert len(c.get(url).json()["items"]) == 1

    # She moves it to the next day, in the afternoon.
    heart.get_by_role("button", name="Modifier").click()
    edit = heart.locator("form")
    moved_day = in_days(4)
    edit.get_by_label("Date").fill(moved_day)
    edit.get_by_label("Heure de début").fill("14:00")
    edit.get_by_label("Heure de fin").fill("14:45")
    edit.get_by_role("button", name="Enregistrer les modifications").click()
    expect(page.get_by_text("Rendez-vous modifié : Consultation de cardiologie.")).to_be_visible()
    expect(item(page, "Consultation de cardiologie")).to_contain_text("14:00 – 14:45")
    with stack.client(token) as c:
        [saved] = c.get(url).json()["items"]
    assert datetime.fromisoformat(saved["starts_at"]) == at_paris(moved_day, "14:00")
    assert saved["shared_with"] == [doctor["rpps"]]

    # The doctor sees it from the patient's dossier and proposes a follow-up.
    pro = visitors()
    ppage = pro.page
    pro.sign_in("Professionnel de santé", doctor["rpps"], doctor["password"], doctor["email"])
    expect(ppage.get_by_role("heading", name="Rechercher un patient")).to_be_visible()
    ppage.goto(f"{stack.url}/portail/#/dossier/{ins}")
    ppage.get_by_role("link", name="Rendez-vous partagés").click()
    expect(
        ppage.get_by_role("heading", name=f"Rendez-vous partagés — patient {ins}")
    ).to_be_visible()
    expect(item(ppage, "Consultation de cardiologie")).to_contain_text("14:00 – 14:45")
    # Not theirs to move or cancel.
    expect(item(ppage, "Consultation de cardiologie").get_by_role("button")).to_have_count(0)
    proposal = ppage.locator(
        "form", has=ppage.get_by_role("heading", name="Proposer un rendez-vous")
    )
    expect(proposal.get_by_text("Partager avec")).to_have_count(0)
    fill(proposal, "Consultation de suivi", in_days(10), "11:00", "11:20", "Cabinet du Dr Lefèvre")
    proposal.get_by_role("button", name="Proposer le rendez-vous").click()
    expect(
        ppage.get_by_text("Rendez-vous proposé au patient : Consultation de suivi.")
    ).to_be_visible()
    expect(item(ppage, "Consultation de suivi").locator(".badge")).to_have_text(
        "Proposé, en attente de réponse"
    )
    expect(item(ppage, "Consultation de suivi").get_by_role("button")).to_have_text(
        "Retirer ma proposition"
    )
    expect(item(ppage, "Consultation de suivi")).to_contain_text("Proposé par vous")
    pro.fits_the_screen()
    pro.shot("74-professionnel-rendez-vous")

    # She accepts it.
    page.reload()
    proposals = page.locator("section.proposals")
    expect(proposals.get_by_role("heading")).to_have_text("Propositions de rendez-vous (1)")
    follow = proposals.locator("li.appointment")
    expect(follow).to_contain_text("Consultation de suivi")
    expect(follow).to_contain_text(f"Proposé par le professionnel RPPS {doctor['rpps']}")
    expect(follow).to_contain_text("11:00 – 11:20")
    follow.get_by_role("button", name="Accepter").click()
    expect(page.get_by_text("Rendez-vous accepté : Consultation de suivi.")).to_be_visible()
    expect(page.locator("section.proposals")).to_have_count(0)
    expect(item(page, "Consultation de suivi").locator(".badge")).to_have_text("Confirmé")

    # She cancels the cardiology appointment, after a confirmation: it goes with the past.
    heart = item(page, "Consultation de cardiologie")
    heart.get_by_role("button", name="Annuler le rendez-vous").click()
    heart.get_by_role("button", name="Confirmer l'annulation").click()
    expect(page.get_by_text("Rendez-vous annulé : Consultation de cardiologie.")).to_be_visible()
    past = page.locator("details.past")
    expect(past.locator("summary")).to_have_text("Rendez-vous passés, annulés ou refusés (1)")
    expect(item(page, "Consultation de cardiologie")).to_be_hidden()  # folded
    past.locator("summary").click()
    expect(item(page, "Consultation de cardiologie").locator(".badge")).to_have_text("Annulé")
    with stack.client(token) as c:
        statuses = {a["title"]: a["status"] for a in c.get(url).json()["items"]}
    assert statuses == {
        "Consultation de cardiologie": "cancelled",
        "Consultation de suivi": "confirmed",
    }
    me.fits_the_screen()
    me.shot("70-mon-agenda")

    # The .ics export, downloaded with her session.
    with page.expect_download() as arrived:
        page.get_by_role("button", name="Exporter (.ics)").click()
    download = arrived.value
    assert download.suggested_filename == "agenda.ics"
    calendar = icalendar.Calendar.from_ical(download.path().read_bytes())
    events = {str(e["SUMMARY"]): str(e["STATUS"]) for e in calendar.walk("VEVENT")}
    assert events == {
        "Consultation de cardiologie": "CANCELLED",
        "Consultation de suivi": "CONFIRMED",
    }
    assert f"Rappel de prévention : {BREAST}" in {str(t["SUMMARY"]) for t in calendar.walk("VTODO")}

    # Prevention: three screenings due for her age, each saying why.
    page.get_by_role("navigation", name="Agenda").get_by_role("link", name="Prévention").click()
    expect(page.get_by_role("heading", name="Prévention", level=1)).to_be_visible()
    expect(page.get_by_role("heading", name="À faire maintenant (3)")).to_be_visible()
    for act in (BREAST, COLORECTAL, CERVICAL):
        expect(page.locator("section.due").get_by_text(act, exact=True)).to_be_visible()
    breast = reminder(page, BREAST)
    expect(
        breast.get_by_text("Recommandé pour les femmes de 50 à 74 ans, tous les 2 ans")
    ).to_be_hidden()
    breast.get_by_text("Pourquoi ?").click()
    expect(
        breast.get_by_text("Recommandé pour les femmes de 50 à 74 ans, tous les 2 ans")
    ).to_be_visible()
    expect(breast).to_contain_text(
        "Source : Programme national de dépistage organisé du cancer du sein"
    )

    # Done, with a document of her dossier.
    breast.get_by_role("button", name="C'est fait").click()
    breast.get_by_label("Document justificatif (facultatif)").select_option(
        label="Résultat de ma mammographie"
    )
    breast.get_by_role("button", name="Confirmer").click()
    expect(page.get_by_text(f"C'est noté : {BREAST}, fait.")).to_be_visible()
    done = page.locator("section.done")
    expect(done.get_by_role("heading")).to_have_text("Faits (1)")
    expect(done.get_by_role("link", name="Voir le justificatif")).to_have_attribute(
        "href", f"#/dossier/{ins}/document/{result['id']}"
    )

    # Postponed to a date: among those to come.
    later = in_days(45)
    colorectal = reminder(page, COLORECTAL)
    colorectal.get_by_role("button", name="Reporter").click()
    colorectal.get_by_label("Me le rappeler le").fill(later)
    colorectal.get_by_role("button", name="Confirmer le report").click()
    expect(
        page.get_by_text(re.compile(r"^Rappel reporté au .+ : Dépistage du cancer colorectal"))
    ).to_be_visible()
    expect(page.get_by_role("heading", name="À faire maintenant (1)")).to_be_visible()
    upcoming = page.locator("section.upcoming")
    expect(upcoming.get_by_text(COLORECTAL, exact=True)).to_be_visible()
    expect(reminder(page, COLORECTAL)).to_contain_text("Reporté au ")

    # She stops prevention messages: the reminders stay shown.
    switch = page.get_by_role("switch", name="Ne plus recevoir de rappels de prévention")
    expect(switch).not_to_be_checked()
    switch.check()
    expect(
        page.get_by_text("Vous ne recevrez plus de rappels de prévention.", exact=False)
    ).to_be_visible()
    expect(
        page.get_by_role("switch", name="Ne plus recevoir de rappels de prévention")
    ).to_be_checked()
    expect(page.get_by_text("Ils restent visibles ici", exact=False)).to_be_visible()
    expect(page.locator("li.reminder")).to_have_count(3)
    with stack.client(token) as c:
        listing = c.get(f"/v1/dossiers/{ins}/reminders").json()
    assert listing["prevention_messages"] is False
    by_act = {r["act"]: r for r in listing["items"]}
    assert by_act[BREAST]["status"] == "done"
    assert by_act[BREAST]["document_id"] == result["id"]
    assert by_act[COLORECTAL]["status"] == "postponed"
    assert by_act[COLORECTAL]["postponed_until"] == later
    assert by_act[CERVICAL]["status"] == "due"
    me.fits_the_screen()
    me.shot("71-prevention")

    # Her access history says what each agenda entry was about, never a title or a place.
    def traced() -> bool:
        with stack.client(token) as c:
            r = c.get(f"/v1/dossiers/{ins}/access-log", params={"page_size": 100})
        return {"calendar", "prevention"} <= {e.get("query") for e in r.json()["entries"]}

    assert until(traced)
    me.go_to("Historique des accès")
    log = page.locator("table.log")
    for entry in (
        "Ajout d'un rendez-vous",
        "Modification d'un rendez-vous",
        "Consultation de l'agenda",
        "Export de l'agenda (.ics)",
        "Consultation des rappels de prévention",
        "Rappel de prévention marqué fait ou reporté",
        "Choix des messages de prévention",
    ):
        expect(log.get_by_role("cell", name=entry, exact=True).first).to_be_visible()
    expect(log).not_to_contain_text("cardiologie")

    # The same pages at a phone's width.
    phone = visitors(phone=True)
    small = phone.page
    phone.sign_in("Patient", ins, patient["password"], patient["email"])
    expect(small.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    phone.go_to("Mon agenda")
    expect(item(small, "Consultation de suivi")).to_be_visible()
    phone.fits_the_screen()
    phone.shot("72-telephone-mon-agenda")
    small.get_by_role("navigation", name="Agenda").get_by_role("link", name="Prévention").click()
    expect(small.get_by_role("heading", name="À faire maintenant (1)")).to_be_visible()
    reminder(small, CERVICAL).get_by_role("button", name="Reporter").click()
    phone.fits_the_screen()
    phone.shot("73-telephone-prevention")
    ppage.set_viewport_size(PHONE)
    ppage.reload()
    expect(item(ppage, "Consultation de suivi").locator(".badge")).to_have_text("Confirmé")
    pro.fits_the_screen()
    pro.shot("75-telephone-professionnel-rendez-vous")


def test_a_parent_keeps_a_childs_agenda_and_a_blocked_doctor_sees_nothing(
    stack: RunningStack,
    visitors: Any,  # noqa: F811
) -> None:
    """A minor's legal representative acts on the child's agenda and reminders from « Agir
    pour »; a doctor the child blocked is refused, in French."""
    admin = stack.admin_token()
    parent = stack.create_patient(admin, given_name="Alex", family_name="Durand")
    child = stack.create_patient(
        admin, legal_representatives=[parent["ins"]], given_name="Léa", family_name="Durand"
    )
    blocked = stack.create_professional(admin, "10")
    ins = child["ins"]
    child_token = stack.token_for(child, "patient")
    stack.open_dossier(child_token, child)
    stack.open_dossier(stack.token_for(parent, "patient"), parent)
    with stack.client(child_token) as c:
        r = c.put(f"/v1/dossiers/{ins}/professionals/{blocked['rpps']}", json={"status": "blocked"})
        assert r.status_code == 200, r.text
        listed = c.get(f"/v1/dossiers/{ins}/reminders").json()["items"]
    due = [i for i in listed if i["status"] == "due"]
    assert due, "a child of her age has reminders due"

    page = agenda_of(visitors(), parent, ins)
    expect(page.get_by_role("heading", name="Son agenda — Léa Durand")).to_be_visible()
    expect(page.locator(".acting-banner")).to_contain_text("Vous agissez pour Léa Durand")
    form = page.locator("form", has=page.get_by_role("heading", name="Ajouter un rendez-vous"))
    # Her care team authorises nobody: nothing to share with, and it says how.
    expect(form).to_contain_text("autorisez-le d'abord")
    fill(form, "Pédiatre", in_days(5), "17:00", "17:30", "Cabinet de pédiatrie")
    form.get_by_role("button", name="Ajouter le rendez-vous").click()
    expect(item(page, "Pédiatre")).to_contain_text("17:00 – 17:30")
    with stack.client(child_token) as c:
        [saved] = c.get(f"/v1/dossiers/{ins}/appointments").json()["items"]
    assert saved["title"] == "Pédiatre" and saved["status"] == "confirmed"

    page.get_by_role("navigation", name="Agenda").get_by_role("link", name="Prévention").click()
    expect(page.get_by_role("heading", name="Prévention — Léa Durand")).to_be_visible()
    expect(page.get_by_role("heading", name=f"À faire maintenant ({len(due)})")).to_be_visible()
    first = reminder(page, due[0]["act"])
    first.get_by_role("button", name="C'est fait").click()
    # No document in her prevention section nor her own space: none to link.
    choices = first.get_by_label("Document justificatif (facultatif)").locator("option")
    expect(choices).to_have_text(["Aucun document"])
    first.get_by_role("button", name="Confirmer").click()
    expect(page.get_by_role("heading", name="Faits (1)")).to_be_visible()
    with stack.client(child_token) as c:
        listing = c.get(f"/v1/dossiers/{ins}/reminders").json()
    assert {r["id"]: r["status"] for r in listing["items"]}[due[0]["id"]] == "done"

    # The blocked doctor: refused, in French, with the API's type kept for developers.
    pro = visitors()
    pro.sign_in("Professionnel de santé", blocked["rpps"], blocked["password"], blocked["email"])
    expect(pro.page.get_by_role("heading", name="Rechercher un patient")).to_be_visible()
    pro.page.goto(f"{stack.url}/portail/#/dossier/{ins}/agenda")
    refusal = pro.page.get_by_role("alert")
    expect(refusal).to_have_text("Vous n'êtes pas autorisé à consulter ces informations.")
    expect(refusal).to_have_attribute("data-problem", "access-denied")
    expect(pro.page.get_by_text("Pédiatre")).to_have_count(0)


def test_a_trusted_person_with_read_access_sees_the_agenda_without_changing_it(
    stack: RunningStack,
    visitors: Any,  # noqa: F811
) -> None:
    """A trusted person with read access, acting for the patient: her appointments and
    reminders shown, with nothing to add, move, cancel or mark, and the switch not hers."""
    admin = stack.admin_token()
    patient = woman_of_51(stack)
    friend = stack.create_patient(admin, given_name="Alex", family_name="Durand")
    ins = patient["ins"]
    token = stack.token_for(patient, "patient")
    friend_token = stack.token_for(friend, "patient")
    stack.open_dossier(token, patient)
    stack.open_dossier(friend_token, friend)
    with stack.client(token) as c:
        r = c.post(
            f"/v1/dossiers/{ins}/trusted-persons", json={"ins": friend["ins"], "scope": "read"}
        )
        assert r.status_code == 201, r.text
        start = at_paris(in_days(2), "08:15")
        r = c.post(
            f"/v1/dossiers/{ins}/appointments",
            json={
                "title": "Kinésithérapie",
                "starts_at": start.isoformat(),
                "ends_at": (start + timedelta(minutes=45)).isoformat(),
            },
        )
        assert r.status_code == 201, r.text
    with stack.client(friend_token) as c:
        r = c.post(f"/v1/me/represented/{ins}/accept")
        assert r.status_code == 200, r.text

    page = agenda_of(visitors(), friend, ins)
    expect(page.get_by_role("heading", name="Son agenda — Camille Martin")).to_be_visible()
    expect(item(page, "Kinésithérapie")).to_contain_text("08:15 – 09:00")
    expect(item(page, "Kinésithérapie").get_by_role("button")).to_have_count(0)
    expect(page.get_by_role("heading", name="Ajouter un rendez-vous")).to_have_count(0)
    page.get_by_role("navigation", name="Agenda").get_by_role("link", name="Prévention").click()
    expect(page.get_by_role("heading", name="À faire maintenant (3)")).to_be_visible()
    expect(page.locator("li.reminder").get_by_role("button")).to_have_count(0)
    switch = page.get_by_role("switch", name="Ne plus recevoir de rappels de prévention")
    expect(switch).to_be_disabled()
    expect(switch).not_to_be_checked()

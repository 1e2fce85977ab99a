"""What notify says for each event: to whom, of what kind, never with medical content."""

from __future__ import annotations

import pytest

from dmp_notify import domain

INS = "180057512345623"
PARENT = "279057512345688"


def test_a_document_hidden_from_the_patient_is_not_announced() -> None:
    assert domain.document_added(INS, hidden_from_patient=True) == []
    [notice] = domain.document_added(INS, hidden_from_patient=False)
    assert notice.recipient == f"patient:{INS}" and notice.kind == "document_added"


def test_emergency_access_tells_the_patient_and_the_attending_physician() -> None:
    patient, gp = domain.emergency_access(INS, "regulator", "10001234567")
    assert patient.recipient == f"patient:{INS}"
    assert gp.recipient == "professional:10001234567"
    assert "SAMU" in patient.message.body and INS not in gp.message.body
    assert len(domain.emergency_access(INS, "break_glass", "")) == 1


def test_every_message_is_french_and_free_of_identifiers() -> None:
    notices = [
        *domain.document_added(INS, False),
        *domain.access_first(INS, "21"),
        *domain.emergency_access(INS, "break_glass", "10001234567"),
        *domain.reminder(INS),
        *domain.login(INS, "23/11/2026 à 15:40"),
        *domain.message_received("patient", INS),
        *domain.representation("representation_ending", INS, [PARENT], "2027-03-01"),
        *domain.representation("representation_ended", INS, [PARENT], "2027-03-01"),
        *domain.trusted_invitation(PARENT),
        *domain.prevention_reminder(INS, "Vaccin ROR, 2e dose"),
    ]
    assert {n.kind for n in notices} == set(domain.KINDS)
    for notice in notices:
        assert INS not in notice.message.body and "10001234567" not in notice.message.body
        assert "DMP" in notice.message.subject or notice.kind in (
            "message_received",
            "prevention_reminder",
        )
    assert "un pharmacien" in domain.access_first(INS, "21")[0].message.body


def test_preferences_default_to_email_and_refuse_the_unknown() -> None:
    prefs = domain.validate_preferences({"login": ["sms", "email"]})
    assert prefs["login"] == {"sms", "email"} and prefs["reminder"] == {"email"}
    with pytest.raises(ValueError, match="weather"):
        domain.validate_preferences({"weather": []})
    with pytest.raises(ValueError, match="pigeon"):
        domain.validate_preferences({"login": ["pigeon"]})


def test_a_new_message_is_announced_to_its_recipient_without_its_content() -> None:
    [to_patient] = domain.message_received("patient", INS)
    assert to_patient.recipient == f"patient:{INS}"
    assert to_patient.message.subject == "Vous avez reçu un nouveau message"
    [to_pro] = domain.message_received("professional", "10001234567")
    assert to_pro.recipient == "professional:10001234567"
    assert domain.message_received("system", "hospital-mailbox") == []
    # a minor's correspondence is theirs: their legal representatives are not told of it
    assert domain.audience("message_received", False, "") == (True, False)


@pytest.mark.parametrize("kind", domain.REPRESENTATION_KINDS)
def test_the_end_of_a_representation_is_told_to_the_minor_and_each_representative(
    kind: str,
) -> None:
    other = "183057512345611"
    minor, *parents = domain.representation(kind, INS, [PARENT, other, INS], "2027-03-01")
    assert minor.recipient == f"patient:{INS}" and minor.kind == kind
    assert [p.recipient for p in parents] == [f"patient:{PARENT}", f"patient:{other}"]
    for notice in (minor, *parents):
        # the day, French style; no name, no INS, in the message nor in its SMS
        assert "01/03/2027" in notice.message.body
        assert "01/03/2027" in domain.sms_text(notice.message)
        for ident in (INS, PARENT, other):
            assert ident not in notice.message.subject + notice.message.body
    assert "personne que vous représent" in parents[0].message.body
    assert "personne que vous représent" not in minor.message.body
    # the event names the representatives: notify asks identity for nobody else
    assert domain.audience(kind, False, "") == (True, False)
    assert domain.representation("login", INS, [PARENT], "2027-03-01") == []


def test_a_prevention_reminder_says_the_acts_name_and_nothing_else() -> None:
    [notice] = domain.prevention_reminder(INS, "Vaccin ROR, 2e dose")
    assert notice.recipient == f"patient:{INS}"
    assert notice.message.subject == "Rappel de prévention : Vaccin ROR, 2e dose"
    assert notice.message.body == notice.message.subject + domain.SIGNATURE
    assert domain.prevention_reminder(INS, " ") == []
    # a minor's legal representatives are told, as of what happens in their dossier
    assert domain.audience("prevention_reminder", False, "") == (True, True)

"""What notify writes: French, the code and its validity, nothing medical."""

from __future__ import annotations

from dmp_notify import domain
from dmp_notify.domain import otp_message, sms_text


def test_otp_message_carries_the_code_and_nothing_else() -> None:
    message = otp_message("042917", 5)
    assert message.subject == "Votre code de connexion DMP"
    assert "042917" in message.body and "5 minutes" in message.body
    assert "Ne le communiquez à personne" in message.body
    sms = sms_text(message)
    assert "042917" in sms and len(sms) <= 160


def test_legal_representatives_are_told_what_the_patient_would_be() -> None:
    hidden = domain.HIDDEN_FROM_REPRESENTATIVES
    assert domain.audience("document_added", False, "") == (True, True)
    assert domain.audience("document_added", True, "") == (True, False)
    assert domain.audience("access_first", False, "") == (True, True)
    assert domain.audience("emergency_access", False, "") == (True, True)
    assert domain.audience("login", False, "") == (True, False), "the minor's own account"
    assert domain.audience("reminder", False, "INVISIBLE_PATIENT") == (True, False)
    assert domain.audience("reminder", False, hidden) == (False, True)
    notices = domain.emergency_access("1", "break_glass", "10000000006")
    told = domain.for_representatives(notices, "1", ["2", "3", "1"])
    assert [n.recipient for n in told] == ["patient:2", "patient:3"], "not the GP's, not twice"
    assert all(n.message.body.startswith(domain.REPRESENTATIVE_INTRO) for n in told)


def test_a_code_for_a_new_address_says_what_it_confirms() -> None:
    message = domain.contact_code_message("318204", 5)
    assert message.subject == "Votre code de vérification DMP"
    assert "318204" in message.body and "confirmer cette adresse" in message.body
    sms = sms_text(message)
    assert "318204" in sms and len(sms) <= 160


def test_a_provisional_code_tells_the_delay_and_what_it_opens() -> None:
    message = domain.activation_message("ABCDE23456", 42 * 24 * 60)
    assert "ABCDE23456" in message.body and "42 jours" in message.body
    assert "opposer" in message.body and "carte Vitale" in message.body
    assert "ABCDE23456" in sms_text(message)


def test_a_notice_to_a_replaced_address_carries_no_address_nor_secret() -> None:
    for notice in domain.ACCOUNT_NOTICES.values():
        assert "@" not in notice.body and not any(c.isdigit() for c in notice.body)
        assert "mot de passe" in notice.body

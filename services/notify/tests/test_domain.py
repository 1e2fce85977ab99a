"""What notify writes: French, the code and its validity, nothing medical."""

from __future__ import annotations

from dmp_notify.domain import otp_message, sms_text


def test_otp_message_carries_the_code_and_nothing_else() -> None:
    message = otp_message("042917", 5)
    assert message.subject == "Votre code de connexion DMP"
    assert "042917" in message.body and "5 minutes" in message.body
    assert "Ne le communiquez à personne" in message.body
    sms = sms_text(message)
    assert "042917" in sms and len(sms) <= 160

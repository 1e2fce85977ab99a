"""What notify says, in French, and what it never says (no medical content). No I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    subject: str
    body: str


def otp_message(code: str, valid_minutes: int) -> Message:
    return Message(
        subject="Votre code de connexion DMP",
        body=(
            f"Votre code de connexion est : {code}\n"
            f"Il est valable {valid_minutes} minutes.\n"
            "Ne le communiquez à personne : aucun agent ne vous le demandera.\n"
            "Si vous n'êtes pas à l'origine de cette connexion, changez votre mot de passe."
        ),
    )


def sms_text(message: Message) -> str:
    return message.body.split("\n", 2)[0] + " " + message.body.split("\n", 2)[1]

"""What an app the patient connects may be allowed to do: its OAuth 2.0 scopes, each with the
plain French the patient reads on the consent page. Identity checks an app asks for no other;
the gateway maps each route an app may call to the one scope it needs (deny by default)."""

from __future__ import annotations

SCOPES: dict[str, str] = {
    "documents.read": "Lire vos documents de santé (ceux que vous pouvez lire vous-même)",
    "measurements.read": "Lire vos constantes de santé (poids, tension, glycémie…)",
    "measurements.write": (
        "Ajouter des constantes à votre profil, et supprimer celles qu'elle a ajoutées"
    ),
    "agenda.read": "Lire votre agenda médical et vos rappels de prévention",
}


def label(scope: str) -> str:
    return SCOPES.get(scope, scope)


def unknown(scopes: list[str]) -> list[str]:
    return [s for s in scopes if s not in SCOPES]

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


# The gRPC methods an app's token may reach at all, in any service, each with the scope it
# needs ("": any app token); each service's auth interceptor refuses it any other. They are the
# methods the gateway's routes for apps call with it, and those these call in turn with the
# caller's token forwarded (consent's decisions). Presented anywhere, an app's token does no
# more than its scopes let it do through the gateway.
ANY = ""
APP_METHODS: dict[str, str] = {
    "/dmp.identity.v1.IdentityService/GetMe": ANY,
    "/dmp.identity.v1.IdentityService/CheckConnection": ANY,
    "/dmp.consent.v1.ConsentService/Decide": ANY,
    "/dmp.consent.v1.ConsentService/FilterDocuments": ANY,
    # the agenda asks it with the caller's token: the patient's own space, open or not
    "/dmp.consent.v1.ConsentService/MayMessage": ANY,
    "/dmp.dossier.v1.DossierService/GetDossier": "documents.read",
    "/dmp.dossier.v1.DossierService/ListDocuments": "documents.read",
    "/dmp.dossier.v1.DossierService/GetDocument": "documents.read",
    "/dmp.dossier.v1.DossierService/GetDocumentContent": "documents.read",
    "/dmp.dossier.v1.DossierService/ListMeasurements": "measurements.read",
    "/dmp.dossier.v1.DossierService/AddMeasurement": "measurements.write",
    "/dmp.dossier.v1.DossierService/DeleteMeasurement": "measurements.write",
    "/dmp.agenda.v1.AgendaService/ListAppointments": "agenda.read",
    "/dmp.agenda.v1.AgendaService/ExportCalendar": "agenda.read",
    "/dmp.agenda.v1.AgendaService/ListReminders": "agenda.read",
}


def app_may_call(method: str, scopes: frozenset[str]) -> bool:
    needed = APP_METHODS.get(method)
    return needed is not None and (needed == ANY or needed in scopes)

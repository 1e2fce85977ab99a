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


# The gRPC methods an app's token may reach at all, in any service (each service's auth
# interceptor refuses it any other): those the gateway's routes for apps call with it, and
# those these call in turn with the caller's token forwarded. Which scope a route needs is the
# gateway's to check (dmp_gateway.app_access); this keeps an app's token, wherever it is
# presented, from doing what no route for apps does.
APP_METHODS = frozenset(
    {
        "/dmp.identity.v1.IdentityService/GetMe",
        "/dmp.identity.v1.IdentityService/CheckConnection",
        "/dmp.dossier.v1.DossierService/GetDossier",
        "/dmp.dossier.v1.DossierService/ListDocuments",
        "/dmp.dossier.v1.DossierService/GetDocument",
        "/dmp.dossier.v1.DossierService/GetDocumentContent",
        "/dmp.dossier.v1.DossierService/ListMeasurements",
        "/dmp.dossier.v1.DossierService/AddMeasurement",
        "/dmp.dossier.v1.DossierService/DeleteMeasurement",
        "/dmp.consent.v1.ConsentService/Decide",
        "/dmp.consent.v1.ConsentService/FilterDocuments",
        "/dmp.agenda.v1.AgendaService/ListAppointments",
        "/dmp.agenda.v1.AgendaService/ExportCalendar",
        "/dmp.agenda.v1.AgendaService/ListReminders",
        # the agenda asks it with the caller's token: the patient's own space, open or not
        "/dmp.consent.v1.ConsentService/MayMessage",
    }
)

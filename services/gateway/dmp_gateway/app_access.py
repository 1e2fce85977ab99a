"""What an app the patient connected may call through the gateway: each route it may use names
the one scope it needs (dmp_kit.app_scopes); every other route is refused to an app, whatever
its scopes (deny by default). And its connection must still stand: identity is asked at each
request, so that the patient's disconnecting it cuts it off at once."""

from __future__ import annotations

from fastapi import Request

from dmp.identity.v1 import identity_pb2
from dmp_gateway.clients import downstream
from dmp_kit.auth import Principal
from dmp_kit.errors import PermissionDenied

ANY_SCOPE = ""
# (method, route) → the scope it needs; ANY_SCOPE: any app token.
APP_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/v1/me"): ANY_SCOPE,
    ("GET", "/v1/dossiers/{ins}"): "documents.read",
    ("GET", "/v1/dossiers/{ins}/documents"): "documents.read",
    ("GET", "/v1/dossiers/{ins}/documents/{document_id}"): "documents.read",
    ("GET", "/v1/dossiers/{ins}/documents/{document_id}/content"): "documents.read",
    ("GET", "/v1/dossiers/{ins}/measurements"): "measurements.read",
    ("POST", "/v1/dossiers/{ins}/measurements"): "measurements.write",
    ("DELETE", "/v1/dossiers/{ins}/measurements/{measurement_id}"): "measurements.write",
    ("GET", "/v1/dossiers/{ins}/appointments"): "agenda.read",
    ("GET", "/v1/dossiers/{ins}/agenda.ics"): "agenda.read",
    ("GET", "/v1/dossiers/{ins}/reminders"): "agenda.read",
}


def needed_scope(method: str, route: str) -> str | None:
    """The scope an app needs for this route; None: no app may call it."""
    return APP_ROUTES.get((method, route))


async def check_app(request: Request, who: Principal) -> None:
    route = getattr(request.scope.get("route"), "path", "")
    needed = needed_scope(request.method, route)
    if needed is None or (needed and needed not in who.scopes):
        granted = " ".join(sorted(who.scopes))
        raise PermissionDenied(
            f"this app may not do this: the patient granted it {granted}"
            + (f", and this needs {needed}" if needed else ", and no scope covers this"),
            slug="insufficient-scope",
        )
    named = request.path_params.get("ins")
    if named is not None and named != who.ins:
        # The patient's own space only, and not even whether another's exists.
        raise PermissionDenied("an app acts in its patient's own space only", slug="access-denied")
    ds = downstream(request)
    await ds.call(
        ds.identity.CheckConnection, identity_pb2.CheckConnectionRequest(), token=who.token
    )

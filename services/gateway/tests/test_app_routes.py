"""The routes an app the patient connected may call (dmp_gateway.app_access) are routes that
exist, each with a scope the catalogue knows: a typo or a route gone would otherwise leave an
entry that matches nothing, or one that a later route at that path would inherit unreviewed."""

from __future__ import annotations

from fastapi.routing import APIRoute

from dmp_gateway.app import create_app
from dmp_gateway.app_access import ANY_SCOPE, APP_ROUTES
from dmp_gateway.config import GatewaySettings
from dmp_kit.app_scopes import SCOPES


def test_every_route_an_app_may_call_exists_with_a_known_scope() -> None:
    app = create_app(GatewaySettings(env="dev"))
    routes = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert set(APP_ROUTES) <= routes, sorted(set(APP_ROUTES) - routes)
    assert {scope for scope in APP_ROUTES.values() if scope != ANY_SCOPE} == set(SCOPES)

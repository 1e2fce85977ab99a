"""Every answer is one the OpenAPI document gives its operation: each class of request the
sweeps send (no token, a body too large, not JSON or malformed, unknown ids, each kind of
caller), against every operation of the document. The sweeps check each answer they observe the
same way (the `documented` fixture); this module adds the classes they do not send."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dmp_gateway.app import create_app
from dmp_gateway.clients import SERVICES
from dmp_gateway.config import GatewaySettings
from dmp_stack.testing import RunningStack, fill_path, unknown_ids

# Rotating the signing key changes every later call (tests/e2e/test_identity.py covers it).
EXCLUDED = {("POST", "/v1/admin/signing-keys/rotate")}
TOO_LARGE = json.dumps({"title": "x" * (30 * 1024 * 1024)}).encode()
BODIES: dict[str, tuple[str, bytes]] = {
    "too large": ("application/json", TOO_LARGE),
    "not JSON": ("text/plain", b"text"),
    "malformed JSON": ("application/json", b"{not json"),
    "the wrong shape": ("application/json", b"[1, 2]"),
}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def alone() -> Iterator[TestClient]:
    """The gateway with every service it calls down."""
    down = f"127.0.0.1:{closed_port()}"
    services = SERVICES
    settings = GatewaySettings(env="dev", **{f"{name}_addr": down for name in services})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    found = [(m.upper(), path) for path, item in spec["paths"].items() for m in item]
    assert len(found) > 40
    return [o for o in found if o not in EXCLUDED]


def test_without_services_every_answer_is_documented(
    alone: TestClient, documents: Callable[[dict[str, Any]], Any]
) -> None:
    """No token, each kind of bad body, and the services down (503, readiness's `checks`)."""
    spec = alone.get("/openapi.json").json()
    documented = documents(spec)
    seen: set[int] = set()
    for method, path in operations(spec):
        url = fill_path(path, unknown_ids())
        r = alone.request(method, url)
        documented.check(method, path, r)
        seen.add(r.status_code)
        for media, body in BODIES.values():
            r = alone.request(method, url, content=body, headers={"content-type": media})
            documented.check(method, path, r)
            seen.add(r.status_code)
    assert {401, 413, 415, 422, 503} <= seen, seen


def test_unknown_ids_get_documented_answers(
    stack: RunningStack, documented: Any, operations_live: list[tuple[str, str]]
) -> None:
    """Each kind of caller, every operation, ids that name nothing (404, 403, 422…)."""
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    pro = stack.create_professional(admin)
    tokens = {
        "admin": admin,
        "patient": stack.login("patient", patient["ins"], patient["password"], patient["email"])[
            "access_token"
        ],
        "professional": stack.login("professional", pro["rpps"], pro["password"], pro["email"])[
            "access_token"
        ],
        "insurer": stack.client_token(admin, ["insurer"]),
    }
    seen: set[int] = set()
    for token in tokens.values():
        with stack.client(token) as c:
            for method, path in operations_live:
                url = fill_path(path, unknown_ids())
                r = c.request(method, url, json={}) if method != "GET" else c.get(url)
                documented.check(method, path, r)
                seen.add(r.status_code)
    assert {403, 404, 422} <= seen, seen


@pytest.fixture(scope="module")
def operations_live(documented: Any) -> list[tuple[str, str]]:
    return operations(documented.spec)

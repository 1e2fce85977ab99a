"""Bad input on every route that takes a body, from the OpenAPI document: each gets a 4xx
problem+json that tells nothing of the inside, never a 5xx, and one the document gives that
route; and the headers every answer carries."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmp_stack.testing import INTERNALS, RunningStack, fill_path, unknown_ids

MALFORMED: dict[str, tuple[str, bytes]] = {
    "not JSON": ("application/json", b"{not json"),
    "invalid UTF-8": ("application/json", b'{"a": "\xff\xfe\xfa"}'),
    "deep arrays": ("application/json", b"[" * 100_000 + b"]" * 100_000),
    "deep objects": ("application/json", b'{"a":' * 20_000 + b"1" + b"}" * 20_000),
    "a huge number": ("application/json", b'{"a": 1' + b"0" * 5000 + b"}"),
    "a NUL": ("application/json", b'{"ins": "\\u0000", "title": "\x00"}'),
    "the wrong shape": ("application/json", b'[1, "two", null, {"three": []}]'),
    "a string": ("application/json", b'"just a string"'),
    "null": ("application/json", b"null"),
    "text": ("text/plain", b'{"looks": "like json"}'),
    "a form": ("application/x-www-form-urlencoded", b"a=1&b=2"),
    "XML": ("application/xml", b"<?xml version='1.0'?><a/>"),
    "no type": ("", b'{"a": 1}'),
}


@pytest.fixture(scope="module")
def json_routes(stack: RunningStack) -> list[tuple[str, str]]:
    with stack.client() as c:
        spec = c.get("/openapi.json").json()
    routes = [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]
    assert len(routes) >= 20
    return routes


@pytest.fixture(scope="module")
def admin(stack: RunningStack) -> str:
    return stack.admin_token()


def url(path: str) -> str:
    return fill_path(path, unknown_ids())


def problem_4xx(r: httpx.Response, context: Any) -> None:
    assert 400 <= r.status_code < 500, (context, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/problem+json"), context
    assert not INTERNALS.search(r.text), (context, r.text)
    assert r.headers["x-content-type-options"] == "nosniff"


def test_every_json_route_refuses_malformed_bodies(
    stack: RunningStack, admin: str, json_routes: list[tuple[str, str]], documented: Any
) -> None:
    with stack.client(admin) as c:
        for method, path in json_routes:
            for name, (media, body) in MALFORMED.items():
                headers = {"content-type": media} if media else {}
                r = c.request(method, url(path), content=body, headers=headers)
                problem_4xx(r, (method, path, name))
                documented.check(method, path, r)
                if media not in ("application/json", ""):
                    assert r.status_code == 415, (method, path, name)


def test_bodies_too_large_are_refused_before_they_are_read(
    stack: RunningStack, admin: str, json_routes: list[tuple[str, str]], documented: Any
) -> None:
    huge = json.dumps({"title": "x" * (30 * 1024 * 1024)}).encode()
    with stack.client(admin) as c:
        for method, path in json_routes:
            r = c.request(
                method, url(path), content=huge, headers={"content-type": "application/json"}
            )
            assert r.status_code == 413, (method, path, r.status_code)
            problem_4xx(r, (method, path))
            documented.check(method, path, r)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=20), children, max_size=4),
        max_leaves=20,
    ),
    route=st.integers(min_value=0, max_value=10_000),
)
def test_any_json_value_gets_an_answer_never_a_crash(
    stack: RunningStack,
    admin: str,
    json_routes: list[tuple[str, str]],
    documented: Any,
    body: Any,
    route: int,
) -> None:
    method, path = json_routes[route % len(json_routes)]
    with stack.client(admin) as c:
        r = c.request(
            method,
            url(path),
            content=json.dumps(body),
            headers={"content-type": "application/json"},
        )
    assert r.status_code < 500, (method, path, body, r.text[:300])
    if r.status_code >= 400:
        problem_4xx(r, (method, path, body))
    documented.check(method, path, r)


def test_patient_data_is_never_cached_and_frames_are_refused(
    stack: RunningStack, admin: str
) -> None:
    patient = stack.create_patient(admin)
    tokens = stack.login("patient", patient["ins"], patient["password"], patient["email"])
    with stack.client(tokens["access_token"]) as c:
        for r in (c.get("/v1/me"), c.get(f"/v1/dossiers/{patient['ins']}"), c.get("/v1/nowhere")):
            assert r.headers["cache-control"] == "no-store", r.url
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["strict-transport-security"].startswith("max-age=")
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            assert "server" not in r.headers


def test_cross_origin_requests_get_no_permission(stack: RunningStack, admin: str) -> None:
    origin = {"origin": "https://elsewhere.example"}
    with stack.client(admin) as c:
        preflight = c.options("/v1/me", headers={**origin, "access-control-request-method": "GET"})
        assert "access-control-allow-origin" not in preflight.headers
        simple = c.get("/v1/me", headers=origin)
        assert "access-control-allow-origin" not in simple.headers


def test_text_with_a_nul_character_is_refused_with_its_field(stack: RunningStack) -> None:
    """No text of the platform holds a NUL character; PostgreSQL (under FerretDB) cannot even
    compare one, so it is refused at every service's door, naming the field."""
    with stack.client() as c:
        r = c.post(
            "/v1/auth/login",
            json={"kind": "patient", "login": "1800175\u00001234", "password": "x"},
        )
        problem_4xx(r, "login")
        assert (r.status_code, r.json()["field"]) == (422, "login")
        r = c.post("/v1/auth/otp", json={"challenge_id": "a\u0000b", "code": "123456"})
        assert (r.status_code, r.json()["field"]) == (422, "challenge_id")

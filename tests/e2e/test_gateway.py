"""The gateway's own behaviour: problem+json, headers, limits, docs, readiness."""

from __future__ import annotations

from collections.abc import Iterator

from dmp_stack.testing import RunningStack, until


def test_unknown_route_and_method_are_problems(stack: RunningStack) -> None:
    with stack.client() as c:
        r = c.get("/v1/nowhere")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        r = c.delete("/v1/auth/login")
        assert r.status_code == 405 and r.json()["type"].endswith("/method-not-allowed")


def test_bad_bodies_are_4xx_problems(stack: RunningStack) -> None:
    with stack.client() as c:
        for content, ctype in (
            (b"{not json", "application/json"),
            (b"\xff\xfe\xfa", "application/json"),
            (b"kind=admin", "text/plain"),
            (b"[" * 5000 + b"]" * 5000, "application/json"),
        ):
            r = c.post("/v1/auth/login", content=content, headers={"content-type": ctype})
            assert 400 <= r.status_code < 500, (content[:10], r.status_code)
            assert r.headers["content-type"] == "application/problem+json"
        r = c.post(
            "/v1/auth/login",
            content=b"x" * (2 * 1024 * 1024),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413 and r.json()["type"].endswith("/payload-too-large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the bytes are counted as they come
            for _ in range(40):
                yield b" " * 65536

        r = c.post("/v1/auth/login", content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and r.json()["type"].endswith("/payload-too-large")
        assert r.headers["x-content-type-options"] == "nosniff"


def test_security_headers_and_request_id(stack: RunningStack) -> None:
    with stack.client() as c:
        r = c.get("/healthz", headers={"x-request-id": "req-123"})
    assert r.headers["x-request-id"] == "req-123"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in r.headers["content-security-policy"]


def test_openapi_docs_and_metrics(stack: RunningStack) -> None:
    with stack.client() as c:
        spec = c.get("/openapi.json").json()
        assert "/v1/auth/login" in spec["paths"] and "/v1/admin/patients" in spec["paths"]
        docs = c.get("/docs")
        assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
        assert c.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
        c.get("/healthz")
        metrics = c.get("/metrics").text
        assert 'dmp_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics


def test_readyz_reports_every_service(stack: RunningStack) -> None:
    """Ready, naming every service; waited for, since a fault test of the session (a database
    paused) may have just left every service not serving for a few seconds."""
    with stack.client() as c:
        until(lambda: c.get("/readyz").json()["status"] == "ready", timeout=60)
        body = c.get("/readyz").json()
    assert body["status"] == "ready", body
    assert set(body["checks"]) == {
        "identity",
        "dossier",
        "consent",
        "audit",
        "notify",
        "ingest",
        "messaging",
        "agenda",
    }


def test_a_date_off_the_calendar_is_a_clear_422(stack: RunningStack) -> None:
    """Year 1 at +23:59 has no UTC time: the field is named, nothing breaks (found by the
    fuzzer: it was a 500)."""
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    token = stack.token_for(patient, "patient")
    stack.open_dossier(token, patient)
    ins = patient["ins"]
    edge = "0001-01-01T00:00:00+23:59"
    with stack.client(token) as c:
        for path, params, field in (
            (f"/v1/dossiers/{ins}/documents", {"since": edge}, "since"),
            (f"/v1/dossiers/{ins}/measurements", {"from": edge}, "from"),
            (f"/v1/dossiers/{ins}/appointments", {"from": edge}, "from"),
        ):
            r = c.get(path, params=params)
            assert r.status_code == 422, r.text
            assert r.json()["field"] == field, r.json()

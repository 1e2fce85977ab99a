"""identity.login reaches JetStream; a paused database or NATS turns readiness red, never hangs."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from dmp.events.v1 import envelope_pb2
from dmp_gateway.clients import SERVICES
from dmp_stack.testing import RunningStack, collect_events, make_ins


async def login_events(
    stack: RunningStack, until: Callable[[list[envelope_pb2.Envelope]], bool]
) -> list[envelope_pb2.Envelope]:
    return await collect_events(stack.infra.nats.url, "IDENTITY", "identity.login", until)


async def test_every_login_success_or_failure_emits_identity_login(stack: RunningStack) -> None:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    with stack.client() as c:
        r = c.post(
            "/v1/auth/login",
            json={"kind": "patient", "login": patient["ins"], "password": "wrong password!"},
        )
        assert r.status_code == 401
        unknown = make_ins()
        r = c.post(
            "/v1/auth/login",
            json={"kind": "patient", "login": unknown, "password": "wrong password!"},
        )
        assert r.status_code == 401
    stack.login("patient", patient["ins"], patient["password"], patient["email"])

    def mine(events: list[envelope_pb2.Envelope]) -> list[tuple[str, bool]]:
        return [
            (e.login_attempted.outcome, e.login_attempted.success)
            for e in events
            if e.patient_ins == patient["ins"]
        ]

    events = await login_events(stack, lambda seen: len(mine(seen)) >= 3)
    assert mine(events) == [("bad_password", False), ("password_ok", True), ("otp_ok", True)]
    ours = [e for e in events if e.patient_ins == patient["ins"]]
    assert all(
        e.type == "identity.login" and e.source == "identity" and len(e.id) == 36 for e in ours
    )
    assert ours[0].id[14] == "7", "event ids are UUIDv7"
    assert ours[0].trace.request_id, "the trace context travels in the envelope"
    assert len({e.id for e in events}) == len(events), "no duplicates"
    # The unknown login also left an event, with no account and no patient attached.
    assert any(
        e.login_attempted.outcome == "bad_password" and not e.login_attempted.account_id
        for e in events
    )


def _wait_ready(
    stack: RunningStack, want: int, timeout: float = 30, all_down: bool = False
) -> dict[str, bool]:
    deadline = time.monotonic() + timeout
    with stack.client() as c:
        while time.monotonic() < deadline:
            r = c.get("/readyz")
            checks = dict(r.json()["checks"])
            if r.status_code == want and not (all_down and any(checks.values())):
                return checks
            time.sleep(0.3)
    raise AssertionError(f"/readyz did not become {want} within {timeout}s")


def test_database_paused_gives_503_problems_not_hangs(stack: RunningStack) -> None:
    infra = stack.infra
    infra.pause(infra.mongo)
    try:
        # Each service sees the database gone at its next health check.
        checks = _wait_ready(stack, 503, all_down=True)
        assert set(checks) == set(SERVICES)
        with httpx.Client(base_url=stack.url, timeout=30) as c:
            t0 = time.monotonic()
            r = c.post(
                "/v1/auth/login",
                json={"kind": "admin", "login": "admin", "password": "whatever it is"},
            )
            elapsed = time.monotonic() - t0
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/service-unavailable")
        assert "Traceback" not in r.text
        assert elapsed < 10, f"answered after {elapsed:.1f}s"
    finally:
        infra.resume(infra.mongo)
    _wait_ready(stack, 200)
    assert stack.admin_token()


async def test_nats_paused_turns_readiness_red_and_loses_no_login_event(
    stack: RunningStack,
) -> None:
    infra = stack.infra
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    infra.pause(infra.nats)
    try:
        _wait_ready(stack, 503)
        # Logging in does not need NATS: the event waits in the outbox.
        stack.login("patient", patient["ins"], patient["password"], patient["email"])
    finally:
        infra.resume(infra.nats)
    _wait_ready(stack, 200)
    events = await login_events(
        stack, lambda seen: sum(e.patient_ins == patient["ins"] for e in seen) >= 2
    )
    outcomes = [e.login_attempted.outcome for e in events if e.patient_ins == patient["ins"]]
    assert outcomes == ["password_ok", "otp_ok"]

"""Accounts people manage themselves, through the gateway on real servers: the password policy
wherever a password is set, password change, sessions, contact changes, activation."""

from __future__ import annotations

from typing import Any

import pytest

from dmp_stack.testing import RunningStack, make_ins, make_rpps

PROBLEM = "application/problem+json"


def problem(r: Any, status: int, slug: str, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"].endswith("/" + slug), body
    if field is not None:
        assert body.get("field") == field, body
    return body


@pytest.fixture(scope="module")
def admin(stack: RunningStack) -> str:
    return stack.admin_token()


def patient_body(**over: Any) -> dict[str, Any]:
    ins = make_ins()
    return {
        "ins": ins,
        "vitale_serial": "12345678",
        "given_name": "Gwenaëlle",
        "family_name": "Le Goff",
        "birth_date": "1984-05-17",
        "email": f"gwen-{ins}@example.org",
        "phone": "+33612345678",
        **over,
    }


@pytest.mark.parametrize(
    ("password", "slug"),
    [
        ("aaaaaaaaaaaa", "trivial-password"),
        ("123456789012", "trivial-password"),
        ("azertyuiopqsdf", "trivial-password"),
        ("password1234", "common-password"),
        ("motdepasse2024!", "common-password"),
        ("gwenaelle au soleil", "personal-password"),
        ("le goff 4ever!!", "personal-password"),
        ("né le 17051984 !", "personal-password"),
        ("appel 0612345678", "personal-password"),
        ("short", "weak-password"),
    ],
)
def test_an_administrator_cannot_set_a_weak_password(
    stack: RunningStack, admin: str, password: str, slug: str
) -> None:
    body = patient_body(password=password)
    with stack.client(admin) as c:
        refused = problem(c.post("/v1/admin/patients", json=body), 422, slug, "password")
        assert "mot de passe" in refused["detail"].lower()
        # Nothing was kept: the same registration with a good password goes through.
        r = c.post("/v1/admin/patients", json={**body, "password": "la mer est calme ce soir"})
        assert r.status_code == 201, r.text


def test_a_password_with_a_professional_s_or_agent_s_own_words_is_refused(
    stack: RunningStack, admin: str
) -> None:
    rpps = make_rpps()
    professional = {
        "rpps": rpps,
        "profession": "10",
        "given_name": "Théophile",
        "family_name": "Durand",
        "email": f"ps-{rpps}@example.org",
    }
    agent = {
        "login": f"agent-{rpps}",
        "given_name": "Sam",
        "family_name": "Petitjean",
        "email": f"agent-{rpps}@example.org",
    }
    with stack.client(admin) as c:
        for password in (f"rpps {rpps}!", "theophile 2024!", "durand durand!"):
            r = c.post("/v1/admin/professionals", json={**professional, "password": password})
            assert r.status_code == 422, r.text
            assert r.json()["field"] == "password"
        r = c.post("/v1/admin/agents", json={**agent, "password": "petitjean du 75"})
        problem(r, 422, "personal-password", "password")
        r = c.post("/v1/admin/agents", json={**agent, "password": "qwertyuiop12"})
        problem(r, 422, "common-password", "password")
        good = "la mer est calme ce soir"
        r = c.post("/v1/admin/professionals", json={**professional, "password": good})
        assert r.status_code == 201, r.text
        r = c.post("/v1/admin/agents", json={**agent, "password": good})
        assert r.status_code == 201, r.text


# ------------------------------------------------------------- password change and sessions

GOOD = "la mer est calme ce soir"


def patient_login(stack: RunningStack, patient: dict[str, Any], password: str) -> dict[str, Any]:
    return stack.login("patient", patient["ins"], password, patient["email"])


def refreshes(stack: RunningStack, tokens: dict[str, Any]) -> int:
    with stack.client() as c:
        r = c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    if r.status_code == 200:
        tokens.update(r.json())
    return r.status_code


def test_a_person_changes_their_password_and_their_other_sessions_end(
    stack: RunningStack, admin: str
) -> None:
    patient = stack.create_patient(admin)
    here = patient_login(stack, patient, patient["password"])
    elsewhere = patient_login(stack, patient, patient["password"])
    with stack.client(here["access_token"]) as c:
        r = c.post(
            "/v1/me/password", json={"current_password": "not my password", "new_password": GOOD}
        )
        problem(r, 422, "wrong-password", "current_password")
        r = c.post(
            "/v1/me/password",
            json={"current_password": patient["password"], "new_password": "password1234"},
        )
        assert "mot de passe" in problem(r, 422, "common-password", "new_password")["detail"]
        r = c.post(
            "/v1/me/password",
            json={"current_password": patient["password"], "new_password": "camille 2024 !!"},
        )
        problem(r, 422, "personal-password", "new_password")
        # Refused changes changed nothing: both sessions live, the old password logs in.
        assert refreshes(stack, elsewhere) == 200
        r = c.post(
            "/v1/me/password",
            json={"current_password": patient["password"], "new_password": GOOD},
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"sessions_ended": 1}
    assert refreshes(stack, elsewhere) == 401
    assert refreshes(stack, here) == 200, "the session that changed it goes on"
    with stack.client() as c:
        r = c.post(
            "/v1/auth/login",
            json={"kind": "patient", "login": patient["ins"], "password": patient["password"]},
        )
        problem(r, 401, "invalid-credentials")
    patient_login(stack, patient, GOOD)


def test_a_person_lists_their_sessions_and_ends_one_or_all(stack: RunningStack, admin: str) -> None:
    patient = stack.create_patient(admin)
    other = stack.create_patient(admin)
    first, second, third = (patient_login(stack, patient, patient["password"]) for _ in range(3))
    theirs = patient_login(stack, other, other["password"])
    with stack.client(first["access_token"]) as c:
        sessions = c.get("/v1/me/sessions").json()["items"]
        assert len(sessions) == 3
        assert [s["current"] for s in sessions].count(True) == 1
        assert all("python-httpx" in s["user_agent"] for s in sessions)
        assert all(s["created_at"] <= s["last_used_at"] < s["expires_at"] for s in sessions)
        current = next(s for s in sessions if s["current"])
        # A refresh moves the session's last use, not its start.
        assert refreshes(stack, first) == 200
        c.headers["authorization"] = f"Bearer {first['access_token']}"
        again = {s["id"]: s for s in c.get("/v1/me/sessions").json()["items"]}
        assert again[current["id"]]["created_at"] == current["created_at"]
        assert again[current["id"]]["last_used_at"] > current["last_used_at"]
        assert again[current["id"]]["current"]
        # Another person's session is not one's own to end.
        with stack.client(theirs["access_token"]) as t:
            their_id = t.get("/v1/me/sessions").json()["items"][0]["id"]
        problem(c.delete(f"/v1/me/sessions/{their_id}"), 404, "not-found", "session_id")
        assert refreshes(stack, theirs) == 200
        # One ended: only its refresh token stops.
        one = next(i for i, s in again.items() if not s["current"])
        assert c.delete(f"/v1/me/sessions/{one}").status_code == 204
        assert len(c.get("/v1/me/sessions").json()["items"]) == 2
        assert sorted([refreshes(stack, second), refreshes(stack, third)]) == [200, 401]
        # All but this one, then all.
        r = c.delete("/v1/me/sessions", params={"keep_current": "true"})
        assert r.json() == {"ended": 1}
        assert refreshes(stack, first) == 200
        c.headers["authorization"] = f"Bearer {first['access_token']}"
        assert c.delete("/v1/me/sessions").json() == {"ended": 1}
    assert refreshes(stack, first) == 401
    assert refreshes(stack, second) == 401 and refreshes(stack, third) == 401


def test_the_current_password_is_checked_under_the_login_lockout(
    stack: RunningStack, admin: str
) -> None:
    """Ten wrong current passwords lock the account as ten wrong logins would: the right
    password is then refused too, at the login as here."""
    patient = stack.create_patient(admin)
    tokens = patient_login(stack, patient, patient["password"])
    wrong = {"current_password": "not my password", "new_password": GOOD}
    with stack.client(tokens["access_token"]) as c:
        for _ in range(9):
            problem(c.post("/v1/me/password", json=wrong), 422, "wrong-password")
        r = c.post("/v1/me/password", json=wrong)
        assert r.status_code in (422, 423), r.text
        right = {"current_password": patient["password"], "new_password": GOOD}
        r = c.post("/v1/me/password", json=right)
        problem(r, 423, "account-locked")
        assert int(r.headers["retry-after"]) > 0
    with stack.client() as c:
        r = c.post(
            "/v1/auth/login",
            json={"kind": "patient", "login": patient["ins"], "password": patient["password"]},
        )
        problem(r, 423, "account-locked")


def test_self_service_is_for_people(stack: RunningStack, admin: str) -> None:
    system = stack.client_token(admin, ["insurer"])
    with stack.client(system) as c:
        problem(c.get("/v1/me/sessions"), 403, "forbidden")
        r = c.post("/v1/me/password", json={"current_password": "x", "new_password": GOOD})
        problem(r, 403, "forbidden")
    with stack.client() as c:
        problem(c.get("/v1/me/sessions"), 401, "unauthenticated")
        problem(c.delete("/v1/me/sessions"), 401, "unauthenticated")

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

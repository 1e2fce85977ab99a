"""Accounts people manage themselves, through the gateway on real servers: the password policy
wherever a password is set, password change, sessions, contact changes, activation."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dmp_stack.testing import RunningStack, make_ins, make_rpps, until

PROBLEM = "application/problem+json"


def problem(r: Any, status: int, slug: str | None, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert slug is None or body["type"].endswith("/" + slug), body
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


# ------------------------------------------------------------------- e-mail and phone changes


def outbox(stack: RunningStack, address: str, subject: str | None = None) -> list[dict[str, Any]]:
    """What the stack sent to `address` (with that subject), newest first."""
    with stack.client() as c:
        items: list[dict[str, Any]] = c.get("/dev/outbox", params={"to": address}).json()["items"]
    return [m for m in items if subject is None or m["subject"] == subject]


def code_in(text: str) -> str:
    found = re.search(r"\b([0-9]{6})\b", text)
    assert found, text
    return found.group(1)


VERIFY = "Votre code de vérification DMP"


def test_a_person_replaces_their_email_with_a_code_and_the_old_address_is_told(
    stack: RunningStack, admin: str
) -> None:
    patient = stack.create_patient(admin)
    old, new = patient["email"], f"new-{patient['ins']}@example.org"
    tokens = patient_login(stack, patient, patient["password"])
    with stack.client(tokens["access_token"]) as c:
        problem(c.post("/v1/me/contact-changes", json={"email": "nope"}), 422, None, "email")
        problem(c.post("/v1/me/contact-changes", json={}), 422, "validation-error", "email")
        r = c.post("/v1/me/contact-changes", json={"email": new})
        assert r.status_code == 202, r.text
        change = r.json()
        assert change["channel"] == "email"
        mail = until(lambda: outbox(stack, new, VERIFY))
        assert mail, "no code reached the new address"
        code = code_in(mail[0]["body"])
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        url = f"/v1/me/contact-changes/{change['change_id']}/confirm"
        problem(c.post(url, json={"code": wrong}), 422, "invalid-otp", "code")
        assert c.get("/v1/me").status_code == 200, "a wrong code is not a bad token"
        # A code for a new address opens no session.
        with stack.client() as anonymous:
            r = anonymous.post(
                "/v1/auth/otp", json={"challenge_id": change["change_id"], "code": code}
            )
            problem(r, 401, "invalid-otp")
        r = c.post(url, json={"code": code})
        assert r.status_code == 200, r.text
        assert r.json()["email"] == new
        problem(c.post(url, json={"code": code}), 422, "invalid-otp", "code")
    notice = until(lambda: outbox(stack, old, "L'adresse e-mail de votre compte DMP a changé"))
    assert notice and new not in notice[0]["body"], "the old address is told, not the new one"
    # The codes now go to the new address.
    patient_login(stack, {**patient, "email": new}, patient["password"])


def test_a_person_sets_then_replaces_their_phone(stack: RunningStack, admin: str) -> None:
    patient = stack.create_patient(admin)
    tokens = patient_login(stack, patient, patient["password"])
    first, second = "+33611223344", "+33655667788"
    with stack.client(tokens["access_token"]) as c:
        for phone in (first, second):
            r = c.post("/v1/me/contact-changes", json={"phone": phone})
            assert r.status_code == 202, r.text
            sms = until(lambda phone=phone: outbox(stack, phone, VERIFY))
            assert sms and sms[0]["channel"] == "sms"
            url = f"/v1/me/contact-changes/{r.json()['change_id']}/confirm"
            r = c.post(url, json={"code": code_in(sms[0]["body"])})
            assert r.status_code == 200, r.text
            assert r.json() == {"email": patient["email"], "phone": phone}
    told = until(lambda: outbox(stack, first, "Le téléphone de votre compte DMP a changé"))
    assert told and told[0]["channel"] == "sms"
    assert not outbox(stack, second, "Le téléphone de votre compte DMP a changé")


def test_someone_else_s_change_is_answered_as_a_wrong_code(stack: RunningStack, admin: str) -> None:
    owner, other = stack.create_patient(admin), stack.create_patient(admin)
    new = f"moved-{owner['ins']}@example.org"
    with stack.client(patient_login(stack, owner, owner["password"])["access_token"]) as c:
        change = c.post("/v1/me/contact-changes", json={"email": new}).json()
    code = code_in(until(lambda: outbox(stack, new, VERIFY))[0]["body"])
    url = f"/v1/me/contact-changes/{change['change_id']}/confirm"
    with stack.client(patient_login(stack, other, other["password"])["access_token"]) as c:
        problem(c.post(url, json={"code": code}), 422, "invalid-otp", "code")
        problem(
            c.post("/v1/me/contact-changes/no-such-change/confirm", json={"code": code}),
            422,
            "invalid-otp",
            "code",
        )
        assert c.get("/v1/me").status_code == 200


def test_code_guesses_on_a_new_address_count_towards_the_login_lockout(
    stack: RunningStack, admin: str
) -> None:
    patient = stack.create_patient(admin)
    new = f"guess-{patient['ins']}@example.org"
    with stack.client(patient_login(stack, patient, patient["password"])["access_token"]) as c:
        change = c.post("/v1/me/contact-changes", json={"email": new}).json()
        code = code_in(until(lambda: outbox(stack, new, VERIFY))[0]["body"])
        url = f"/v1/me/contact-changes/{change['change_id']}/confirm"
        wrong = [f"{(int(code) + n) % 1_000_000:06d}" for n in range(1, 6)]
        answers = [c.post(url, json={"code": guess}).status_code for guess in wrong]
        assert answers[:4] == [422] * 4 and answers[4] in (422, 423), answers
        problem(c.post(url, json={"code": code}), 423, "account-locked")
    with stack.client() as c:
        r = c.post(
            "/v1/auth/login",
            json={"kind": "patient", "login": patient["ins"], "password": patient["password"]},
        )
        problem(r, 423, "account-locked")


# ------------------------------------------------------------------------------- activation

PROVISIONAL = "Votre code provisoire pour activer votre espace DMP"


@pytest.fixture(scope="module")
def directory(stack: RunningStack, admin: str) -> str:
    """The insurer's directory sync, as a system client."""
    return stack.client_token(admin, ["directory_sync"])


def provisional(stack: RunningStack, directory: str, **over: Any) -> dict[str, Any]:
    """An account the directory created, and the provisional code its person received."""
    body = patient_body(**over)
    with stack.client(directory) as c:
        r = c.post("/v1/accounts", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "to_activate"
    address = body["email"] or body["phone"]
    sent = until(lambda: outbox(stack, address, PROVISIONAL))
    assert sent, "no provisional code was sent"
    found = re.search(r"provisoire est : ([A-Z0-9]{10})", sent[0]["body"])
    assert found, sent[0]["body"]
    return {**body, **r.json(), "code": found.group(1)}


def proof(account: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "ins": account["ins"],
        "vitale_serial": account["vitale_serial"],
        "provisional_code": account["code"],
        **over,
    }


def test_the_directory_creates_an_account_that_its_person_activates(
    stack: RunningStack, admin: str, directory: str
) -> None:
    account = provisional(stack, directory, phone="")
    due = datetime.fromisoformat(account["activation_due_at"].replace("Z", "+00:00"))
    assert timedelta(days=41) < due - datetime.now(UTC) <= timedelta(days=42, minutes=5)
    # Until its person decides, no one opens a DMP for them.
    agent = stack.agent_token(admin)
    opening = {"ins": account["ins"], "vitale_serial": account["vitale_serial"]}
    with stack.client(agent) as c:
        r = c.post("/v1/dossiers", json={**opening, "patient_consent": True})
        problem(r, 404, "patient-not-found", "ins")
    # No password yet: nobody logs in with it.
    with stack.client() as c:
        r = c.post(
            "/v1/auth/login",
            json={"kind": "patient", "login": account["ins"], "password": GOOD},
        )
        problem(r, 401, "invalid-credentials")
    new_email, phone = f"mine-{account['ins']}@example.org", "+33699887766"
    contacts = {"email": new_email, "phone": phone}
    with stack.client() as c:
        wrong = proof(account, provisional_code="ABCDEFGHJK")
        problem(c.post("/v1/accounts/activation", json={**wrong, **contacts}), 401, None)
        serial = proof(account, vitale_serial="99999999")
        problem(c.post("/v1/accounts/activation", json={**serial, **contacts}), 401, None)
        # Typed as people type it: lower case, in groups.
        code = account["code"].lower()
        typed = proof(account, provisional_code=f"{code[:5]} {code[5:]}")
        r = c.post("/v1/accounts/activation", json={**typed, **contacts})
        assert r.status_code == 202, r.text
        activation = r.json()["activation_id"]
        email_code = code_in(until(lambda: outbox(stack, new_email, VERIFY))[0]["body"])
        sms_code = code_in(until(lambda: outbox(stack, phone, VERIFY))[0]["body"])
        url = f"/v1/accounts/activation/{activation}"
        codes = {"email_code": email_code, "sms_code": sms_code}
        r = c.post(url, json={**codes, "password": "gwenaelle et moi"})
        problem(r, 422, "personal-password", "password")
        r = c.post(url, json={**codes, "password": "aaaaaaaaaaaa"})
        problem(r, 422, "trivial-password", "password")
        other = f"{(int(email_code) + 1) % 1_000_000:06d}"
        r = c.post(url, json={**codes, "email_code": other, "password": GOOD})
        problem(r, 401, "invalid-otp")
        r = c.post(url, json={**codes, "password": GOOD})
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "active"}
        problem(c.post(url, json={**codes, "password": GOOD}), 401, "invalid-otp")
        # The provisional code served its purpose.
        r = c.post("/v1/accounts/activation", json={**proof(account), **contacts})
        problem(r, 401, "invalid-credentials")
    with stack.client(directory) as c:
        assert c.get(f"/v1/accounts/{account['ins']}").json() == {
            "ins": account["ins"],
            "status": "active",
        }
    tokens = stack.login("patient", account["ins"], GOOD, new_email)
    with stack.client(tokens["access_token"]) as c:
        assert c.get("/v1/me").json()["ins"] == account["ins"]
    with stack.client(agent) as c:
        r = c.post("/v1/dossiers", json={**opening, "patient_consent": True})
        assert r.status_code == 201, r.text


def test_a_wrong_proof_is_answered_alike_whether_the_account_exists_or_not(
    stack: RunningStack, directory: str
) -> None:
    """Ten wrong tries lock an INS, an account's as one nobody holds, and every answer on the
    way is the same: nothing tells whether an account awaits."""
    account = provisional(stack, directory)
    contacts = {"email": "x@example.org", "phone": "+33611223344"}

    def tries(ins: str) -> list[tuple[int, str]]:
        body = {**proof(account, ins=ins, provisional_code="ABCDEFGHJK"), **contacts}
        answers = []
        with stack.client() as c:
            for _ in range(11):
                r = c.post("/v1/accounts/activation", json=body)
                answers.append((r.status_code, r.json()["type"]))
        return answers

    held, nobody = tries(account["ins"]), tries(make_ins())
    assert held == nobody
    assert held[:9] == [(401, held[0][1])] * 9 and held[0][1].endswith("/invalid-credentials")
    assert held[-1][0] == 423
    # Locked: the right proof is refused too, and the login of that INS with it.
    with stack.client() as c:
        r = c.post("/v1/accounts/activation", json={**proof(account), **contacts})
        problem(r, 423, "account-locked")
        problem(c.post("/v1/accounts/opposition", json=proof(account)), 423, "account-locked")


def test_opposition_deletes_the_account_and_keeps_the_ins_closed_until_withdrawn(
    stack: RunningStack, admin: str, directory: str
) -> None:
    account = provisional(stack, directory, email="")  # the code goes by SMS
    with stack.client() as c:
        wrong = proof(account, provisional_code="ABCDEFGHJK")
        problem(c.post("/v1/accounts/opposition", json=wrong), 401, "invalid-credentials")
        r = c.post("/v1/accounts/opposition", json=proof(account))
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "opposed"}
        # The account is gone, its code with it.
        contacts = {"email": "x@example.org", "phone": "+33611223344"}
        r = c.post("/v1/accounts/activation", json={**proof(account), **contacts})
        problem(r, 401, "invalid-credentials")
    body = {k: account[k] for k in patient_body() if k in account}
    with stack.client(directory) as c:
        assert c.get(f"/v1/accounts/{account['ins']}").json()["status"] == "opposed"
        problem(c.post("/v1/accounts", json=body), 409, "account-opposed", "ins")
    with stack.client(admin) as c:
        r = c.post("/v1/admin/patients", json={**body, "password": GOOD})
        problem(r, 409, "account-opposed", "ins")
        r = c.get(f"/v1/dossiers/{account['ins']}")
        assert r.status_code == 404, r.text
    # Withdrawn (the person asked the insurer): an account may be opened again.
    patient = stack.create_patient(admin)
    with stack.client(patient_login(stack, patient, patient["password"])["access_token"]) as c:
        problem(c.delete(f"/v1/accounts/{account['ins']}/opposition"), 403, "forbidden")
    with stack.client(directory) as c:
        assert c.delete(f"/v1/accounts/{account['ins']}/opposition").status_code == 204
        problem(c.delete(f"/v1/accounts/{account['ins']}/opposition"), 404, "not-found")
        r = c.post("/v1/accounts", json=body)
        assert r.status_code == 201, r.text


def test_an_account_neither_activated_nor_opposed_becomes_active_after_the_legal_delay(
    clock: RunningStack, admin: str, directory: str
) -> None:
    account = provisional(clock, directory)
    # The directory's tokens come dated on the moved clock; the administrator does not log in
    # meanwhile (its codes would stay dated in the future for the rest of the session).
    sync = clock.register_client(admin, ["directory_sync"])
    day = 24 * 3600
    clock.set_clock_offset(41 * day)
    with clock.client(clock.assertion_token(*sync, clock_offset=41 * day)) as c:
        assert c.get(f"/v1/accounts/{account['ins']}").json()["status"] == "to_activate"
    clock.set_clock_offset(42 * day + 3600)
    with clock.client(clock.assertion_token(*sync, clock_offset=42 * day + 3600)) as c:
        assert c.get(f"/v1/accounts/{account['ins']}").json() == {
            "ins": account["ins"],
            "status": "active",
        }
    with clock.client() as c:
        r = c.post("/v1/accounts/opposition", json=proof(account))
        problem(r, 409, "opposition-too-late")
        # Opened by default, it is still the person's to activate, to log in.
        contacts = {"email": account["email"], "phone": "+33644556677"}
        r = c.post("/v1/accounts/activation", json={**proof(account), **contacts})
        assert r.status_code == 202, r.text


def test_only_the_directory_creates_and_reads_accounts(stack: RunningStack, admin: str) -> None:
    patient = stack.create_patient(admin)
    tokens = stack.login("patient", patient["ins"], patient["password"], patient["email"])
    with stack.client(tokens["access_token"]) as c:
        problem(c.post("/v1/accounts", json=patient_body()), 403, "forbidden")
        problem(c.get(f"/v1/accounts/{patient['ins']}"), 403, "forbidden")
    insurer = stack.client_token(admin, ["insurer"])
    with stack.client(insurer) as c:
        problem(c.post("/v1/accounts", json=patient_body()), 403, "forbidden")
    with stack.client(admin) as c:
        problem(
            c.post("/v1/accounts", json={**patient_body(), "password": GOOD}),
            422,
            "validation-error",
            "password",
        )

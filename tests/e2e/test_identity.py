"""Identity through the gateway, every process real: login, codes, tokens, directory, faults."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pymongo import MongoClient

from dmp.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from dmp_kit.auth import JWKS_MAX_AGE_SECONDS
from dmp_stack.testing import RunningStack, make_ins, make_rpps, until

PROBLEM = "application/problem+json"


def problem(r: Any, status: int, slug: str, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"].endswith("/" + slug), body
    assert body["status"] == status
    if field is not None:
        assert body["field"] == field, body
    return body


@pytest.fixture
def admin(stack: RunningStack) -> str:
    """A token of each test's own: a test here revokes the signing key, which ends every
    token signed before it (a module's token would fail the tests shuffled after it)."""
    return stack.admin_token()


def test_admin_logs_in_with_password_and_emailed_code(stack: RunningStack, admin: str) -> None:
    with stack.client(admin) as c:
        me = c.get("/v1/me").json()
    assert me["kind"] == "admin" and me["login"] == "admin" and "admin" in me["roles"]
    mail = stack.mailbox.messages_to("admin@dmp.localhost")[-1]
    assert mail["Subject"] == "Votre code de connexion DMP"
    assert "valable 5 minutes" in mail.get_body(("plain",)).get_content()


def test_dev_outbox_lists_the_sent_code(stack: RunningStack) -> None:
    with stack.client() as c:
        r = c.post(
            "/v1/auth/login",
            json={"kind": "admin", "login": "admin", "password": stack.admin_password},
        )
        assert r.status_code == 200
        items = c.get("/dev/outbox", params={"to": "admin@dmp.localhost"}).json()["items"]
    # The code just sent is listed, by e-mail (another test's login of the administrator may
    # have been sent within the same instant: the newest is not told apart by time alone).
    code = stack.mailbox.last_code("admin@dmp.localhost")
    sent = [i for i in items if code in i["body"]]
    assert sent and sent[0]["channel"] == "email", items[:3]


def test_patient_and_professional_journey(stack: RunningStack, admin: str) -> None:
    patient = stack.create_patient(admin)
    pro = stack.create_professional(admin, profession="21")
    pt = stack.login("patient", patient["ins"], patient["password"], patient["email"])
    assert pt["token_type"] == "Bearer" and pt["expires_in"] == 900
    with stack.client(pt["access_token"]) as c:
        me = c.get("/v1/me").json()
    assert (me["kind"], me["ins"], me["given_name"]) == ("patient", patient["ins"], "Camille")
    ps = stack.login("professional", pro["rpps"], pro["password"], pro["email"])
    with stack.client(ps["access_token"]) as c:
        me = c.get("/v1/me").json()
    assert (me["kind"], me["rpps"], me["profession"]) == ("professional", pro["rpps"], "21")
    header = jwt.get_unverified_header(ps["access_token"])
    claims = jwt.decode(ps["access_token"], options={"verify_signature": False})
    assert header["alg"] == "EdDSA" and header["typ"] == "at+jwt"
    assert (
        claims["aud"] == "dmp"
        and claims["kind"] == "professional"
        and claims["rpps"] == pro["rpps"]
    )
    with stack.client() as c:
        keys = c.get("/.well-known/jwks.json").json()["keys"]
    assert header["kid"] in {k["kid"] for k in keys}


def test_registration_bad_input(stack: RunningStack, admin: str) -> None:
    ins = make_ins()
    bad_ins = ins[:-2] + f"{(int(ins[-2:]) + 1) % 100:02d}"
    base = {
        "ins": ins,
        "vitale_serial": "12345678",
        "given_name": "A",
        "family_name": "B",
        "birth_date": "1990-02-03",
        "email": "x@example.org",
    }
    with stack.client(admin) as c:
        problem(
            c.post("/v1/admin/patients", json={**base, "ins": bad_ins}), 422, "invalid-ins", "ins"
        )
        problem(
            c.post("/v1/admin/patients", json={**base, "birth_date": "1990-13-03"}),
            422,
            "validation-error",
            "birth_date",
        )
        problem(
            c.post("/v1/admin/patients", json={**base, "email": "nope"}),
            422,
            "validation-error",
            "email",
        )
        problem(
            c.post("/v1/admin/patients", json={**base, "password": "short"}),
            422,
            "weak-password",
            "password",
        )
        problem(
            c.post("/v1/admin/patients", json={k: v for k, v in base.items() if k != "ins"}),
            422,
            "validation-error",
            "ins",
        )
        assert c.post("/v1/admin/patients", json=base).status_code == 201
        problem(c.post("/v1/admin/patients", json=base), 409, "already-exists", "ins")
        rpps = make_rpps()
        pro = {
            "rpps": rpps[:-1] + str((int(rpps[-1]) + 1) % 10),
            "profession": "10",
            "given_name": "A",
            "family_name": "B",
            "email": "p@example.org",
        }
        problem(c.post("/v1/admin/professionals", json=pro), 422, "invalid-rpps", "rpps")
        problem(
            c.post("/v1/admin/professionals", json={**pro, "rpps": rpps, "profession": "99"}),
            422,
            "invalid-profession",
            "profession",
        )
        problem(
            c.post("/v1/admin/professionals", json={**pro, "rpps": rpps, "roles": ["god"]}),
            422,
            "validation-error",
            "roles.0",
        )


def test_directory_is_for_administrators_only(stack: RunningStack, admin: str) -> None:
    patient = stack.create_patient(admin)
    pt = stack.login("patient", patient["ins"], patient["password"], patient["email"])
    body = {
        "ins": make_ins(),
        "vitale_serial": "12345678",
        "given_name": "A",
        "family_name": "B",
        "birth_date": "1990-02-03",
        "email": "y@example.org",
    }
    with stack.client(pt["access_token"]) as c:
        problem(c.post("/v1/admin/patients", json=body), 403, "forbidden")
    with stack.client() as c:
        problem(c.post("/v1/admin/patients", json=body), 401, "unauthenticated")


def test_wrong_password_and_unknown_login_look_the_same(stack: RunningStack, admin: str) -> None:
    """The same answer, byte for byte where it matters. That both cost one Argon2
    verification of the same parameters is counted in services/identity/tests/test_passwords.py:
    a timing ratio of a few logins here failed whenever the machine was busy."""
    patient = stack.create_patient(admin)
    with stack.client() as c:
        answers = [
            c.post(
                "/v1/auth/login",
                json={"kind": "patient", "login": login, "password": "wrong password!"},
            )
            for login in (patient["ins"], make_ins(), patient["ins"], make_ins())
        ]
    bodies = [problem(r, 401, "invalid-credentials") for r in answers]
    for body in bodies:
        assert body["detail"] == "wrong login or password"
    assert len({tuple(sorted(set(b) - {"instance", "request_id"})) for b in bodies}) == 1
    assert len({r.headers.get("content-type") for r in answers}) == 1


def test_ten_wrong_passwords_lock_the_account_for_a_growing_period(
    stack: RunningStack, admin: str
) -> None:
    patient = stack.create_patient(admin)
    creds = {"kind": "patient", "login": patient["ins"]}
    try:
        with stack.client() as c:
            for _ in range(10):
                problem(
                    c.post("/v1/auth/login", json={**creds, "password": "wrong password!"}),
                    401,
                    "invalid-credentials",
                )
            r = c.post("/v1/auth/login", json={**creds, "password": patient["password"]})
            problem(r, 423, "account-locked")
            assert 0 < int(r.headers["retry-after"]) <= 60
            stack.set_clock_offset(61)
            assert (
                c.post(
                    "/v1/auth/login", json={**creds, "password": patient["password"]}
                ).status_code
                == 200
            )
            for _ in range(10):
                c.post("/v1/auth/login", json={**creds, "password": "wrong password!"})
            r = c.post("/v1/auth/login", json={**creds, "password": patient["password"]})
            problem(r, 423, "account-locked")
            assert 60 < int(r.headers["retry-after"]) <= 120, "the second lock lasts twice as long"
    finally:
        stack.set_clock_offset(0)


def test_a_child_born_today_in_paris_registers_while_it_is_still_yesterday_in_utc(
    stack: RunningStack,
) -> None:
    """At 23:30 UTC it is already tomorrow in Paris (UTC+1 or +2): that date is a birth date,
    the one after it is not."""
    now = datetime.now(UTC)
    late = now.replace(hour=23, minute=30, second=0, microsecond=0)
    if late <= now:
        late += timedelta(days=1)
    paris = late.astimezone(ZoneInfo("Europe/Paris")).date()
    assert paris > late.date()
    stack.set_clock_offset((late - now).total_seconds())
    try:
        admin = stack.admin_token()  # issued on the moved clock
        newborn = stack.create_patient(admin, birth_date=paris.isoformat())
        assert newborn["birth_date"] == paris.isoformat()
        with stack.client(admin) as c:
            tomorrow = (paris + timedelta(days=1)).isoformat()
            r = c.post(
                "/v1/admin/patients",
                json={
                    "ins": make_ins(),
                    "vitale_serial": "12345678",
                    "given_name": "A",
                    "family_name": "B",
                    "birth_date": tomorrow,
                    "email": "x@example.org",
                },
            )
            problem(r, 422, "validation-error", "birth_date")
    finally:
        stack.set_clock_offset(0)


def test_otp_wrong_expired_replayed_and_five_failures_lock(stack: RunningStack, admin: str) -> None:
    patient = stack.create_patient(admin)
    creds = {"kind": "patient", "login": patient["ins"], "password": patient["password"]}
    try:
        with stack.client() as c:
            cid = c.post("/v1/auth/login", json=creds).json()["challenge_id"]
            code = stack.mailbox.last_code(patient["email"])
            wrong = f"{(int(code) + 1) % 10**6:06d}"
            problem(
                c.post("/v1/auth/otp", json={"challenge_id": cid, "code": wrong}),
                401,
                "invalid-otp",
            )
            problem(
                c.post("/v1/auth/otp", json={"challenge_id": cid, "code": "12ab56"}),
                422,
                "validation-error",
                "code",
            )
            ok = c.post("/v1/auth/otp", json={"challenge_id": cid, "code": code})
            assert ok.status_code == 200
            problem(
                c.post("/v1/auth/otp", json={"challenge_id": cid, "code": code}), 401, "invalid-otp"
            )

            cid = c.post("/v1/auth/login", json=creds).json()["challenge_id"]
            code = stack.mailbox.last_code(patient["email"])
            stack.set_clock_offset(301)
            problem(
                c.post("/v1/auth/otp", json={"challenge_id": cid, "code": code}), 401, "otp-expired"
            )
            stack.set_clock_offset(0)

            cid = c.post("/v1/auth/login", json=creds).json()["challenge_id"]
            code = stack.mailbox.last_code(patient["email"])
            wrong = f"{(int(code) + 1) % 10**6:06d}"
            for _ in range(5):
                problem(
                    c.post("/v1/auth/otp", json={"challenge_id": cid, "code": wrong}),
                    401,
                    "invalid-otp",
                )
            problem(
                c.post("/v1/auth/otp", json={"challenge_id": cid, "code": code}),
                423,
                "account-locked",
            )
            problem(c.post("/v1/auth/login", json=creds), 423, "account-locked")
    finally:
        stack.set_clock_offset(0)


def test_refresh_rotates_and_reuse_revokes_the_family(stack: RunningStack, admin: str) -> None:
    patient = stack.create_patient(admin)
    first = stack.login("patient", patient["ins"], patient["password"], patient["email"])
    with stack.client() as c:
        second = c.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert second.status_code == 200
        assert second.json()["refresh_token"] != first["refresh_token"]
        problem(
            c.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}),
            401,
            "refresh-token-reused",
        )
        # The thief's reuse revoked the legitimate, newer token too.
        problem(
            c.post("/v1/auth/refresh", json={"refresh_token": second.json()["refresh_token"]}),
            401,
            "invalid-token",
        )
        problem(c.post("/v1/auth/refresh", json={"refresh_token": "made-up"}), 401, "invalid-token")
        problem(c.post("/v1/auth/refresh", json={}), 422, "validation-error", "refresh_token")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_bad_tokens_are_refused_and_change_nothing(stack: RunningStack, admin: str) -> None:
    head, body, sig = admin.split(".")
    claims = jwt.decode(admin, options={"verify_signature": False})
    header = jwt.get_unverified_header(admin)
    attacker = Ed25519PrivateKey.generate()
    bad = {
        "tampered": f"{head}.{_b64({**claims, 'roles': ['admin', 'patient']})}.{sig}",
        "alg-none": f"{_b64({**header, 'alg': 'none'})}.{body}.",
        "wrong-aud": jwt.encode(
            {**claims, "aud": "other"}, attacker, algorithm="EdDSA", headers=header
        ),
        "foreign-signature": jwt.encode(claims, attacker, algorithm="EdDSA", headers=header),
        "wrong-typ": jwt.encode(
            claims, attacker, algorithm="EdDSA", headers={**header, "typ": "JWT"}
        ),
    }
    with stack.client() as c:
        for name, token in bad.items():
            r = c.post(
                "/v1/admin/patients",
                headers={"authorization": f"Bearer {token}"},
                json={
                    "ins": make_ins(),
                    "vitale_serial": "12345678",
                    "given_name": "A",
                    "family_name": "B",
                    "birth_date": "1990-02-03",
                    "email": "t@example.org",
                },
            )
            problem(r, 401, "invalid-token"), name
        refresh = stack.login("admin", "admin", stack.admin_password, "admin@dmp.localhost")[
            "refresh_token"
        ]
        problem(
            c.get("/v1/me", headers={"authorization": f"Bearer {refresh}"}), 401, "invalid-token"
        )
    try:
        stack.set_clock_offset(3600)
        with stack.client(admin) as c:
            problem(c.get("/v1/me"), 401, "token-expired")
    finally:
        stack.set_clock_offset(0)


def test_client_credentials_with_a_signed_assertion(stack: RunningStack, admin: str) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    client_id = f"cpam-{uuid.uuid4().hex[:8]}"
    with stack.client(admin) as c:
        r = c.post(
            "/v1/admin/clients",
            json={"client_id": client_id, "public_key_pem": pem, "roles": ["insurer"]},
        )
        assert r.status_code == 201, r.text
        problem(
            c.post(
                "/v1/admin/clients",
                json={"client_id": client_id, "public_key_pem": pem, "roles": ["insurer"]},
            ),
            409,
            "already-exists",
            "client_id",
        )
        problem(
            c.post(
                "/v1/admin/clients",
                json={"client_id": "x-1", "public_key_pem": "nope", "roles": ["insurer"]},
            ),
            422,
            "validation-error",
            "public_key_pem",
        )

    def assertion(**over: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": f"{stack.url}/v1/auth/token",
            "iat": now,
            "exp": now + 120,
            "jti": uuid.uuid4().hex,
            **over,
        }
        return jwt.encode(claims, key, algorithm="EdDSA")

    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    with stack.client() as c:
        signed = assertion()
        r = c.post("/v1/auth/token", data={**form, "client_assertion": signed})
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        problem(
            c.post("/v1/auth/token", data={**form, "client_assertion": signed}),
            401,
            "invalid-client",
        )
        problem(
            c.post(
                "/v1/auth/token",
                data={**form, "client_assertion": assertion(aud="https://elsewhere")},
            ),
            401,
            "invalid-client",
        )
        problem(
            c.post(
                "/v1/auth/token",
                data={**form, "client_assertion": assertion(exp=int(time.time()) + 3600)},
            ),
            401,
            "invalid-client",
        )
        other = jwt.encode(
            {
                "iss": client_id,
                "sub": client_id,
                "aud": f"{stack.url}/v1/auth/token",
                "exp": int(time.time()) + 60,
                "jti": "x",
            },
            Ed25519PrivateKey.generate(),
            algorithm="EdDSA",
        )
        problem(
            c.post("/v1/auth/token", data={**form, "client_assertion": other}),
            401,
            "invalid-client",
        )
        problem(
            c.post(
                "/v1/auth/token",
                data={**form, "grant_type": "password", "client_assertion": assertion()},
            ),
            422,
            "unsupported-grant-type",
            "grant_type",
        )
    with stack.client(token) as c:
        me = c.get("/v1/me").json()
    assert (me["kind"], me["roles"]) == ("system", ["insurer", "system"])


async def ingest_accepts(stack: RunningStack, token: str) -> bool:
    """Whether the ingest service, called directly, takes the token (it then finds the empty
    request invalid) or refuses it."""
    port = stack.stack.ports.grpc["ingest"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await ingest_pb2_grpc.IngestServiceStub(ch).GetBatch(
                ingest_pb2.GetBatchRequest(),
                timeout=5,
                metadata=(("authorization", f"Bearer {token}"),),
            )
    code = exc.value.code()
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED), code
    return code == grpc.StatusCode.INVALID_ARGUMENT


def invented_kid(admin: str) -> str:
    """A token naming a key nobody has: every verifier that sees it reads the JWKS again, and
    may not again for a few seconds (they are rate-limited)."""
    claims = jwt.decode(admin, options={"verify_signature": False})
    return jwt.encode(
        claims,
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": uuid.uuid4().hex[:16], "typ": "at+jwt"},
    )


async def test_key_rotation_publishes_the_new_key_before_it_signs(stack: RunningStack) -> None:
    admin = stack.admin_token()
    old_kid = jwt.get_unverified_header(admin)["kid"]
    with stack.client(admin) as c:
        while True:
            # The gateway and ingest have just read the JWKS, and may not for a few seconds.
            unknown = invented_kid(admin)
            assert (
                c.get("/v1/me", headers={"authorization": f"Bearer {unknown}"}).status_code == 401
            )
            assert not await ingest_accepts(stack, unknown)
            before = {k["kid"] for k in c.get("/.well-known/jwks.json").json()["keys"]}
            r = c.post("/v1/admin/signing-keys/rotate")
            if r.status_code != 409:
                break
            problem(r, 409, "rotation-too-soon")
            assert 0 < int(r.headers["retry-after"]) <= JWKS_MAX_AGE_SECONDS
            await asyncio.sleep(int(r.headers["retry-after"]))
        assert r.status_code == 200, r.text
        rotation = r.json()
    # Signed by the new key at once, and taken at once: the verifiers held it already.
    fresh = stack.admin_token()
    assert jwt.get_unverified_header(fresh)["kid"] == rotation["new_key_id"] != old_kid
    with stack.client(fresh) as c:
        assert c.get("/v1/me").status_code == 200
    assert await ingest_accepts(stack, fresh)
    assert {old_kid, rotation["new_key_id"]} <= set(rotation["published_key_ids"])
    with stack.client() as c:
        kids = {k["kid"] for k in c.get("/.well-known/jwks.json").json()["keys"]}
    assert {old_kid, rotation["new_key_id"]} <= kids
    assert rotation["new_key_id"] in before, "the new key was published before it signed"
    # Earlier tests may have left older keys published (until their tokens expire): what this
    # rotation added is the key after the new one, already published.
    assert len(kids - before) == 1, "the key after the new one is published already"
    assert not (kids - before) & {old_kid, rotation["new_key_id"]}
    with stack.client(admin) as c:
        assert c.get("/v1/me").status_code == 200, "a token signed before rotation stays valid"
        problem(c.post("/v1/admin/signing-keys/rotate"), 409, "rotation-too-soon")


def test_a_patient_without_email_gets_the_code_by_sms(stack: RunningStack, admin: str) -> None:
    ins = make_ins()
    phone = f"+3361{ins[-7:]}"
    body = {
        "ins": ins,
        "vitale_serial": "87654321",
        "given_name": "Paul",
        "family_name": "Petit",
        "birth_date": "1950-07-14",
        "email": "",
        "phone": phone,
        "password": "sms only password",
    }
    with stack.client(admin) as c:
        assert c.post("/v1/admin/patients", json=body).status_code == 201
    with stack.client() as c:
        r = c.post(
            "/v1/auth/login", json={"kind": "patient", "login": ins, "password": body["password"]}
        )
        assert r.status_code == 200 and r.json()["channel"] == "sms"
        items = c.get("/dev/outbox", params={"to": phone}).json()["items"]
        assert items[0]["channel"] == "sms"
        code = next(w for w in items[0]["body"].split() if w.isdigit() and len(w) == 6)
        r = c.post("/v1/auth/otp", json={"challenge_id": r.json()["challenge_id"], "code": code})
        assert r.status_code == 200


def test_logout_revokes_the_refresh_token(stack: RunningStack, admin: str) -> None:
    patient = stack.create_patient(admin)
    tokens = stack.login("patient", patient["ins"], patient["password"], patient["email"])
    with stack.client() as c:
        assert (
            c.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}).status_code
            == 204
        )
        problem(
            c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
            401,
            "invalid-token",
        )


async def test_parallel_wrong_passwords_are_all_counted(stack: RunningStack, admin: str) -> None:
    patient = stack.create_patient(admin)
    creds = {"kind": "patient", "login": patient["ins"]}
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as c:
        answers = await asyncio.gather(
            *(
                c.post("/v1/auth/login", json={**creds, "password": "wrong password!"})
                for _ in range(10)
            )
        )
        assert [r.status_code for r in answers] == [401] * 10, [r.text for r in answers]
        r = await c.post("/v1/auth/login", json={**creds, "password": patient["password"]})
    problem(r, 423, "account-locked")


def test_a_login_key_left_by_a_crash_does_not_block_registration(
    stack: RunningStack, admin: str
) -> None:
    """Accounts are found by a `kind:login` key (a key lookup on every server). A key whose
    account was never written (the process died between the two inserts) is taken over."""
    ins = make_ins()
    logins = MongoClient(stack.infra.mongo.url)["identity"]["logins"]
    logins.insert_one({"_id": f"patient:{ins}", "account_id": "never-written"})
    body = {
        "ins": ins,
        "vitale_serial": "12345678",
        "given_name": "Léa",
        "family_name": "Petit",
        "birth_date": "1990-02-03",
        "email": f"patient-{ins}@example.org",
        "phone": "",
        "password": "patient password 1",
    }
    with stack.client(admin) as c:
        assert c.post("/v1/admin/patients", json=body).status_code == 201
        problem(c.post("/v1/admin/patients", json=body), 409, "already-exists", "ins")
    key = logins.find_one({"_id": f"patient:{ins}"})
    assert key is not None and key["account_id"] != "never-written"
    tokens = stack.login("patient", ins, "patient password 1", body["email"])
    assert tokens["access_token"]


async def test_concurrent_code_guesses_are_counted_before_they_are_checked(
    stack: RunningStack, admin: str
) -> None:
    """40 guesses at once on one challenge: at most 5 are checked, the others are refused as
    locked, and the right code sent after them does not log in."""
    patient = stack.create_patient(admin)
    creds = {"kind": "patient", "login": patient["ins"], "password": patient["password"]}
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as c:
        sent = stack.mailbox.codes_sent(patient["email"])
        cid = (await c.post("/v1/auth/login", json=creds)).json()["challenge_id"]
        code = stack.mailbox.last_code(patient["email"], after=sent)
        guesses = [f"{(int(code) + i) % 10**6:06d}" for i in range(1, 40)] + [code]
        answers = await asyncio.gather(
            *(c.post("/v1/auth/otp", json={"challenge_id": cid, "code": g}) for g in guesses)
        )
        checked = [r for r in answers if r.status_code != 423]
        assert 1 <= len(checked) <= 5, [r.status_code for r in answers]
        for r in answers:
            if r.status_code == 423:
                problem(r, 423, "account-locked")
            elif r.status_code != 200:  # the right code, if it was among the five checked
                problem(r, 401, "invalid-otp")
        if all(r.status_code != 200 for r in answers):
            r = await c.post("/v1/auth/otp", json={"challenge_id": cid, "code": code})
            problem(r, 423, "account-locked")


async def test_concurrent_wrong_passwords_are_counted_before_they_are_checked(
    stack: RunningStack, admin: str
) -> None:
    patient = stack.create_patient(admin)
    creds = {"kind": "patient", "login": patient["ins"]}
    async with httpx.AsyncClient(base_url=stack.url, timeout=120) as c:
        answers = await asyncio.gather(
            *(
                c.post("/v1/auth/login", json={**creds, "password": f"wrong password {i}"})
                for i in range(40)
            )
        )
        # Each check costs a password hash, and each attempt a write on the login's counters:
        # on a loaded machine some answers outlast the gateway's deadline (503).
        statuses = [r.status_code for r in answers]
        assert statuses.count(401) <= 10 and set(statuses) <= {401, 423, 503}, statuses
        for r in answers:
            if r.status_code == 423:
                problem(r, 423, "account-locked")
        r = await c.post("/v1/auth/login", json={**creds, "password": patient["password"]})
    problem(r, 423, "account-locked")


def test_a_session_ends_at_its_absolute_lifetime(stack: RunningStack, admin: str) -> None:
    """Refreshing slides each refresh token's expiry, never the session's: 30 days after the
    login, a refresh is refused and the user logs in again."""
    patient = stack.create_patient(admin)
    tokens = stack.login("patient", patient["ins"], patient["password"], patient["email"])
    day = 24 * 3600
    try:
        with stack.client() as c:
            for offset in (10 * day, 20 * day, 29 * day):
                stack.set_clock_offset(offset)
                r = c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
                assert r.status_code == 200, r.text
                tokens = r.json()
            stack.set_clock_offset(30 * day + 60)
            problem(
                c.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
                401,
                "session-expired",
            )
    finally:
        stack.set_clock_offset(0)


def test_a_client_id_can_never_be_a_person_s_identifier(stack: RunningStack, admin: str) -> None:
    """A system's token names it by its client_id; were that an RPPS or an INS, the system
    would act as that professional or patient (authorship, access rules)."""
    pro = stack.create_professional(admin)
    patient = stack.create_patient(admin)
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    with stack.client(admin) as c:
        for taken in (pro["rpps"], patient["ins"], make_rpps(), make_ins(), make_ins(corsica="2A")):
            problem(
                c.post(
                    "/v1/admin/clients",
                    json={"client_id": taken, "public_key_pem": pem, "roles": ["facility"]},
                ),
                422,
                "validation-error",
                "client_id",
            )


# Last: it revokes the key that signs, which ends every token this module holds.
async def test_a_revoked_key_is_refused_everywhere_within_the_bound(stack: RunningStack) -> None:
    admin = stack.admin_token()
    kid = jwt.get_unverified_header(admin)["kid"]
    patient = stack.create_patient(admin)
    # Verified (and remembered as verified) by the gateway, identity and ingest beforehand.
    with stack.client(admin) as c:
        assert c.get("/v1/me").status_code == 200
    assert await ingest_accepts(stack, admin)
    pt = stack.login("patient", patient["ins"], patient["password"], patient["email"])
    with stack.client(pt["access_token"]) as c:
        problem(c.post(f"/v1/admin/signing-keys/{kid}/revoke"), 403, "forbidden")
    with stack.client(admin) as c:
        r = c.post(f"/v1/admin/signing-keys/{kid}/revoke")
    assert r.status_code == 200, r.text
    revoked = r.json()
    assert revoked["revoked_key_id"] == kid != revoked["signing_key_id"]
    assert kid not in revoked["published_key_ids"]
    with stack.client() as c:
        assert kid not in {k["kid"] for k in c.get("/.well-known/jwks.json").json()["keys"]}

    start = time.monotonic()
    while True:
        with stack.client(admin) as c:
            gateway = c.get("/v1/me").status_code
        service = await ingest_accepts(stack, admin)
        if gateway == 401 and not service:
            break
        assert time.monotonic() - start < JWKS_MAX_AGE_SECONDS, (gateway, service)
        await asyncio.sleep(0.5)
    with stack.client(admin) as c:
        problem(c.get("/v1/me"), 401, "invalid-token")
    with stack.client(pt["access_token"]) as c:
        problem(c.get("/v1/me"), 401, "invalid-token")

    # The next key signs at once, and is taken at once.
    fresh = stack.admin_token()
    assert jwt.get_unverified_header(fresh)["kid"] == revoked["signing_key_id"]
    with stack.client(fresh) as c:
        assert c.get("/v1/me").status_code == 200
        problem(c.post(f"/v1/admin/signing-keys/{kid}/revoke"), 404, "not-found", "key_id")
        problem(c.post("/v1/admin/signing-keys/0000000000000000/revoke"), 404, "not-found")
    assert await ingest_accepts(stack, fresh)


def _throttle_of(stack: RunningStack, creds: dict[str, str]) -> tuple[Any, str]:
    """The login's counters in identity's database (their id is a keyed digest): the one
    document its first, wrong, attempt creates."""
    throttles = MongoClient(stack.infra.mongo.url)["identity"]["throttles"]
    before = {doc["_id"] for doc in throttles.find({}, {"_id": 1})}
    with stack.client() as c:
        r = c.post("/v1/auth/login", json={**creds, "password": "wrong password!"})
        problem(r, 401, "invalid-credentials")
    (created,) = {doc["_id"] for doc in throttles.find({}, {"_id": 1})} - before
    # Written once the outbox relay is done with it (on FerretDB its write could undo ours).
    assert until(lambda: not (throttles.find_one({"_id": created}) or {}).get("outbox_pending"))
    return throttles, created


def test_attempts_abandoned_during_their_check_hold_the_login_for_a_bounded_time(
    stack: RunningStack, admin: str
) -> None:
    """Nine attempts took their place and never ended (the process died, the call was cancelled
    while the hash waited): with the one failure, every place is held. Logins are refused, but
    saying when, and the places lapse by themselves."""
    patient = stack.create_patient(admin)
    creds = {"kind": "patient", "login": patient["ins"]}
    throttles, throttle_id = _throttle_of(stack, creds)
    lapse = datetime.now(UTC) + timedelta(seconds=30)
    throttles.update_one(
        {"_id": throttle_id}, {"$set": {"leases": {f"lost-{n}": lapse for n in range(9)}}}
    )
    try:
        with stack.client() as c:
            r = c.post("/v1/auth/login", json={**creds, "password": patient["password"]})
        problem(r, 423, "account-locked")
        assert 0 < int(r.headers["retry-after"]) <= 30
        stack.set_clock_offset(31)
        tokens = stack.login("patient", patient["ins"], patient["password"], patient["email"])
        assert tokens["access_token"]
    finally:
        stack.set_clock_offset(0)


def test_counters_left_at_the_limit_without_a_lock_lock_for_a_while_not_for_ever(
    stack: RunningStack, admin: str
) -> None:
    """Counters as attempts counted and never settled left them before places lapsed: at the
    limit, no lock. Such a login once answered 423 `retry-after: 1` for ever; it locks now, with
    the usual backoff, and the lock ends."""
    patient = stack.create_patient(admin)
    creds = {"kind": "patient", "login": patient["ins"]}
    throttles, throttle_id = _throttle_of(stack, creds)
    throttles.update_one(
        {"_id": throttle_id},
        {"$set": {"password_failures": 10, "locked_until": None}, "$unset": {"leases": ""}},
    )
    try:
        with stack.client() as c:
            r = c.post("/v1/auth/login", json={**creds, "password": patient["password"]})
        problem(r, 423, "account-locked")
        assert 1 < int(r.headers["retry-after"]) <= 60, "the first lock's length"
        stack.set_clock_offset(61)
        tokens = stack.login("patient", patient["ins"], patient["password"], patient["email"])
        assert tokens["access_token"]
    finally:
        stack.set_clock_offset(0)


def test_login_codes_still_go_out_after_the_clock_moves_back(clock: RunningStack) -> None:
    """Identity's own token for notify, minted while the clock was an hour ahead, is dated
    ahead once the clock is back: a notify that had not verified it before refused it as not
    valid yet, and no login code went out until it expired (an hour and five minutes)."""
    clock.set_clock_offset(3600)
    clock.admin_token()  # a code sent: identity mints its token at the moved time
    clock.set_clock_offset(0)
    clock.stack.restart("notify")  # as a notify replica that has not seen the token yet
    # Logins go through again within seconds (the first, as identity reaches the new notify,
    # may still meet a 503), not after the hour the refused token had left to live.
    clock.serving_again(timeout=30)
    assert clock.admin_token()


def test_notify_refusing_identity_is_a_503_not_the_person_s_401(stack: RunningStack) -> None:
    """Notify refusing identity's own token (a key or configuration mismatch between them) is
    not the person's doing: the login answers 503, never a 401 saying their token is not
    valid (they sent none)."""
    refused = "the code could not be sent; try again in a moment"
    creds = {"kind": "admin", "login": "admin", "password": stack.admin_password}

    def login() -> Any:
        with stack.client() as c:
            return c.post("/v1/auth/login", json=creds)

    stack.stack.restart("notify", kill=False, env={"DMP_JWT_AUDIENCE": "another-platform"})
    try:
        # identity's channel may first have to find the new notify (a 503 of another kind)
        def answered() -> Any:
            r = login()
            return r if r.status_code != 503 or refused in r.text else None

        r = until(answered, 15)
        assert r is not None, "notify was never reached"
        assert problem(r, 503, "service-unavailable")["detail"] == refused
    finally:
        stack.stack.restart("notify", kill=False, env={"DMP_JWT_AUDIENCE": "dmp"})
    assert until(lambda: login().status_code == 200, 15), "logins work again"

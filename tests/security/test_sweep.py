"""The security sweep, driven by the gateway's own OpenAPI document: a route added tomorrow is
swept tomorrow, or fails here until it is classified.

- Every route that is not public refuses a missing, expired, tampered, unsigned (`alg: none`),
  foreign-audience, foreign-issuer, wrong-type token and a refresh token (401 problem+json).
- Every route refuses the kinds of principal it is not for (principal kind × route).
- No error body carries a stack trace or an internal identifier.
- Every answer is one the document gives its route (the `documented` fixture, conftest.py).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx
import jwt
import pytest

from dmp_stack.testing import (
    INTERNALS,
    PRINCIPAL_KINDS,
    RunningStack,
    fill_path,
    make_ins,
    make_rpps,
    unknown_ids,
    until,
)

# Routes any client may call without a token (method, path as in the OpenAPI document).
PUBLIC = {
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/otp"),
    ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/auth/token"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    # The signed audit log is public by design: anyone may check a tree head or a proof.
    ("GET", "/v1/audit/checkpoint"),
    ("GET", "/v1/audit/entries/{seq}/proof"),
    ("GET", "/v1/audit/consistency"),
    ("GET", "/v1/audit/keys"),
    # The same log in the C2SP formats tiled-log tools read (docs/audit.md): the checkpoint
    # note and the hash tiles, hashes only. Entry bundles are not served.
    ("GET", "/v1/audit/log/checkpoint"),
    ("GET", "/v1/audit/log/tile/{level}/{index}"),
    # A witness hands the log its cosignature: the signature is the credential, checked
    # against the configured witnesses' keys (tests/e2e/test_tlog_go.py).
    ("POST", "/v1/audit/log/cosignatures"),
    # Dev mode only (absent otherwise: services/gateway/tests/test_dev_routes.py).
    ("GET", "/dev/outbox"),
    # A person activates or opposes the account the directory created, before having any
    # token: the INS, Vitale serial and provisional code are the credentials.
    ("POST", "/v1/accounts/activation"),
    ("POST", "/v1/accounts/activation/{activation_id}"),
    ("POST", "/v1/accounts/opposition"),
    # Connected apps (docs/connected-apps.md): the catalogue is public, and an app talks to the
    # OAuth endpoints before it holds any token (a public client: PKCE is its proof); the
    # consent page reads what a request asks before the patient answers with their token.
    ("GET", "/v1/apps"),
    ("GET", "/v1/apps/{client_id}"),
    ("GET", "/v1/apps/{client_id}/logo"),
    ("GET", "/v1/oauth/authorization"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/.well-known/oauth-authorization-server/identity"),
    ("GET", "/oauth/authorize"),
    ("POST", "/oauth/token"),
    ("POST", "/oauth/revoke"),
}
APP = {
    "name": "Carnet",
    "publisher": "Éditeur",
    "redirect_uris": ["https://app.example.org/callback"],
    "scopes": ["measurements.read"],
}
EXPECTED_TYPES = {"missing": "unauthenticated", "expired": "token-expired"}
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "field", "errors", "checks"}


@dataclass
class Operation:
    method: str
    path: str
    body_types: list[str]
    secured: bool


@pytest.fixture(scope="module")
def operations(stack: RunningStack) -> list[Operation]:
    with stack.client() as c:
        spec = c.get("/openapi.json").json()
    found = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {})
            found.append(Operation(method.upper(), path, list(body), "security" in op))
    assert len(found) > 40
    return found


def test_every_route_without_a_token_is_declared_public(operations: list[Operation]) -> None:
    open_routes = {(o.method, o.path) for o in operations if not o.secured}
    assert open_routes == PUBLIC


def no_leak(r: httpx.Response) -> None:
    """An error is problem+json with the problem fields only, and nothing of the inside."""
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    body = r.json()
    assert set(body) <= PROBLEM_FIELDS, body
    assert not INTERNALS.search(r.text), r.text


class Tokens:
    """Every way a bearer token can be wrong, for the same caller."""

    def __init__(self, stack: RunningStack, admin: str, refresh: str) -> None:
        claims = jwt.decode(admin, options={"verify_signature": False})
        head, body, sig = admin.split(".")
        now = int(time.time())

        def b64(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

        header = jwt.get_unverified_header(admin)
        self.bad = {
            "missing": None,
            "not-a-jwt": "not.a.jwt",
            "expired": stack.forge({**claims, "iat": now - 7200, "exp": now - 3600}),
            "tampered": f"{head}.{b64({**claims, 'sub': str(uuid.uuid4())})}.{sig}",
            "alg-none": f"{b64({**header, 'alg': 'none'})}.{body}.",
            "wrong-audience": stack.forge({**claims, "aud": "another-platform"}),
            "wrong-issuer": stack.forge({**claims, "iss": "https://elsewhere/identity"}),
            "wrong-type": stack.forge(claims, {"typ": "JWT"}),
            "refresh-token": refresh,
        }


@pytest.fixture(scope="module")
def tokens(stack: RunningStack) -> Tokens:
    pair = stack.login("admin", "admin", stack.admin_password, "admin@dmp.localhost")
    return Tokens(stack, pair["access_token"], pair["refresh_token"])


def test_every_protected_route_refuses_every_bad_token(
    stack: RunningStack, operations: list[Operation], tokens: Tokens, documented: Any
) -> None:
    ins = make_ins()
    refusals = 0
    with stack.client() as c:
        for op in operations:
            if not op.secured:
                continue
            for name, token in tokens.bad.items():
                headers = {"authorization": f"Bearer {token}"} if token else {}
                r = c.request(
                    op.method, fill_path(op.path, unknown_ids(ins)), headers=headers, json={}
                )
                assert r.status_code == 401, (op.method, op.path, name, r.status_code, r.text)
                no_leak(r)
                documented.check(op.method, op.path, r)
                expected = EXPECTED_TYPES.get(name, "invalid-token")
                assert r.json()["type"].endswith(f"/{expected}"), (op.path, name, r.json())
                assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), (
                    op.path,
                    name,
                )
                refusals += 1
    assert refusals >= 40 * len(tokens.bad)


def test_a_forged_token_with_the_right_claims_is_accepted(
    stack: RunningStack, tokens: Tokens
) -> None:
    """The control: the sweep's tokens fail for the flaw each was given, not for their
    signature (they are signed with identity's real key)."""
    pair = stack.login("admin", "admin", stack.admin_password, "admin@dmp.localhost")
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    with stack.client(stack.forge(claims)) as c:
        assert c.get("/v1/me").status_code == 200


# --------------------------------------------------------------------------- principal × route

# The administrator last: it rotates the token-signing key, the last thing this module does.
KINDS = PRINCIPAL_KINDS
CLAIMS_HEADER = (
    "claim_id,ins,care_date,kind,code,label,professional_rpps,amount_paid,amount_reimbursed"
)
PEM = (
    "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----\n"
)


APPOINTMENT = {
    "title": "Dentiste",
    "starts_at": "2030-01-02T09:00:00+01:00",
    "ends_at": "2030-01-02T09:30:00+01:00",
}


def bodies(ins: str) -> dict[tuple[str, str], Any]:
    """A valid request for each route with a body: so that what refuses is the principal, not
    the input. A new route with a body needs its example here."""
    document = {
        "type_code": "11488-4",
        "title": "Compte rendu",
        "mime_type": "text/plain",
        "content_base64": base64.b64encode(b"texte").decode(),
    }
    examples: dict[tuple[str, str], Any] = {
        ("PATCH", "/v1/me/notifications/{notification_id}"): {"read": True},
        ("PUT", "/v1/me/notification-preferences"): {"preferences": {"document_added": ["email"]}},
        ("POST", "/v1/admin/patients"): {
            "ins": make_ins(),
            "vitale_serial": "12345678",
            "given_name": "Alix",
            "family_name": "Morel",
            "birth_date": "1990-02-03",
            "email": f"{uuid.uuid4().hex[:8]}@example.org",
        },
        ("POST", "/v1/admin/professionals"): {
            "rpps": make_rpps(),
            "profession": "10",
            "given_name": "Lou",
            "family_name": "Roux",
            "email": f"{uuid.uuid4().hex[:8]}@example.org",
        },
        ("POST", "/v1/admin/agents"): {
            "login": f"agent-{uuid.uuid4().hex[:8]}",
            "given_name": "Sam",
            "family_name": "Petit",
            "email": f"{uuid.uuid4().hex[:8]}@example.org",
        },
        ("POST", "/v1/admin/clients"): {
            "client_id": f"client-{uuid.uuid4().hex[:8]}",
            "public_key_pem": PEM,
            "roles": ["insurer"],
        },
        ("POST", "/v1/dossiers"): {
            "ins": ins,
            "vitale_serial": "12345678",
            "patient_consent": True,
        },
        ("POST", "/v1/dossiers/{ins}/documents"): document,
        ("PATCH", "/v1/dossiers/{ins}/documents/{document_id}"): {
            "masked_from_professionals": True
        },
        ("PUT", "/v1/dossiers/{ins}/profile"): {"allergies": []},
        ("PUT", "/v1/dossiers/{ins}/emergency-contacts"): {"contacts": []},
        ("PUT", "/v1/dossiers/{ins}/advance-directives"): {"text": "Aucune."},
        ("POST", "/v1/dossiers/{ins}/measurements"): {
            "kind": "weight",
            "value": 70.5,
            "unit": "kg",
            "measured_at": "2020-01-02T08:00:00Z",
        },
        ("PUT", "/v1/dossiers/{ins}/consent-settings"): {
            "allow_emergency_access": True,
            "allow_regulator_access": True,
        },
        ("PUT", "/v1/dossiers/{ins}/professionals/{rpps}"): {"status": "authorized"},
        ("PUT", "/v1/dossiers/{ins}/attending-physician"): {"rpps": make_rpps()},
        ("POST", "/v1/dossiers/{ins}/emergency-access"): {
            "reason": "Patient inconscient aux urgences",
            "mode": "break_glass",
        },
        ("POST", "/v1/ingest/batches"): CLAIMS_HEADER + "\n",
        ("POST", "/v1/conversations"): {"patient_ins": ins, "subject": "Suivi", "body": "Bonjour"},
        ("POST", "/v1/conversations/{conversation_id}/messages"): {"body": "Merci"},
        ("POST", "/v1/conversations/{conversation_id}/attachments/{attachment_id}/file"): {
            "type_code": "11488-4"
        },
        # Past authorization, a wrong current password (the right one would change it)
        ("POST", "/v1/me/password"): {
            "current_password": "not the password",
            "new_password": "la mer est calme ce soir",
        },
        ("POST", "/v1/me/contact-changes"): {"email": f"{uuid.uuid4().hex[:8]}@example.org"},
        ("POST", "/v1/me/contact-changes/{change_id}/confirm"): {"code": "123456"},
        ("PATCH", "/v1/dossiers/{ins}/trusted-persons/{trusted_ins}"): {"scope": "manage"},
        ("POST", "/v1/admin/apps"): APP,
        ("PUT", "/v1/admin/apps/{client_id}"): APP,
        # A request for no app: past authorization, refused on its merits.
        ("POST", "/v1/oauth/authorization"): {"query": "client_id=nobody", "allow": True},
        ("POST", "/v1/dossiers/{ins}/appointments"): APPOINTMENT,
        ("PATCH", "/v1/dossiers/{ins}/appointments/{appointment_id}"): {"title": "Kiné"},
        ("POST", "/v1/dossiers/{ins}/reminders/{reminder_id}/done"): {},
        ("POST", "/v1/dossiers/{ins}/reminders/{reminder_id}/postpone"): {
            "until": (date.today() + timedelta(days=30)).isoformat()
        },
        ("PUT", "/v1/dossiers/{ins}/prevention"): {"messages": True},
    }
    # The directory's own registration of a patient, to be activated: the same fields
    examples[("POST", "/v1/accounts")] = {
        **examples[("POST", "/v1/admin/patients")],
        "ins": make_ins(),
        "email": f"{uuid.uuid4().hex[:8]}@example.org",
    }
    return examples


# What changes the dossier for every later call runs last, in this order.
LAST = (
    ("POST", "/v1/dossiers/{ins}/appointments/{appointment_id}/cancel"),
    ("DELETE", "/v1/dossiers/{ins}/trusted-persons/{trusted_ins}"),
    ("POST", "/v1/conversations/{conversation_id}/block"),
    ("DELETE", "/v1/me/sessions"),
    ("POST", "/v1/admin/signing-keys/rotate"),
    ("DELETE", "/v1/dossiers/{ins}/documents/{document_id}"),
    ("DELETE", "/v1/dossiers/{ins}/professionals/{rpps}"),
    ("POST", "/v1/dossiers/{ins}/emergency-access"),
    ("POST", "/v1/dossiers/{ins}/close"),
    ("POST", "/v1/dossiers/{ins}/reopen"),
    ("POST", "/v1/dossiers/{ins}/deletion-request"),
)


class Scene:
    """A patient with an open DMP, their attending physician (who added a document), an
    insurer (who sent a batch), and whoever else a kind needs."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.admin = stack.admin_token()
        self.patient, self.owner = self.new_patient()
        self.gp_rpps, self.gp = self.professional("10")
        ins = self.patient["ins"]
        with stack.client(self.owner) as c:
            r = c.put(f"/v1/dossiers/{ins}/attending-physician", json={"rpps": self.gp_rpps})
            assert r.status_code == 200, r.text
        with stack.client(self.gp) as c:
            r = c.post(
                f"/v1/dossiers/{ins}/documents",
                json=bodies(ins)[("POST", "/v1/dossiers/{ins}/documents")],
            )
            assert r.status_code == 201, r.text
            self.document_id = r.json()["id"]
        self.insurer = stack.client_token(self.admin, ["insurer"])
        with stack.client(self.insurer) as c:
            r = c.post(
                "/v1/ingest/batches",
                content=CLAIMS_HEADER + "\n",
                headers={"content-type": "text/csv"},
            )
            assert r.status_code == 202, r.text
            self.batch_id = r.json()["batch_id"]

        def inbox() -> str | None:
            with stack.client(self.owner) as c:
                items = c.get("/v1/me/notifications").json()["items"]
            return str(items[0]["id"]) if items else None

        self.notification_id = until(inbox)
        assert self.notification_id, "the patient was never told of the document"
        with stack.client(self.gp) as c:  # the GP writes to the patient, with a file
            pdf = base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()
            r = c.post(
                "/v1/conversations",
                json={
                    "patient_ins": ins,
                    "subject": "Résultats",
                    "body": "Bonjour",
                    "attachments": [{"filename": "r.pdf", "content_base64": pdf}],
                },
            )
            assert r.status_code == 201, r.text
            self.conversation_id = r.json()["conversation"]["id"]
            self.attachment_id = r.json()["message"]["attachments"][0]["id"]
        # The patient trusts another patient (invited, not yet accepted), and a third one is
        # there to be invited.
        self.friend = stack.create_patient(self.admin)
        self.invitee = stack.create_patient(self.admin)
        with stack.client(self.owner) as c:
            r = c.post(
                f"/v1/dossiers/{ins}/measurements",
                json=bodies(ins)[("POST", "/v1/dossiers/{ins}/measurements")],
            )
            assert r.status_code == 201, r.text
            self.measurement_id = r.json()["id"]
            r = c.post(f"/v1/dossiers/{ins}/appointments", json=APPOINTMENT)
            assert r.status_code == 201, r.text
            self.appointment_id = r.json()["id"]
            r = c.post(
                f"/v1/dossiers/{ins}/trusted-persons",
                json={"ins": self.friend["ins"], "scope": "read"},
            )
            assert r.status_code == 201, r.text

    def new_patient(self) -> tuple[dict[str, Any], str]:
        patient = self.stack.create_patient(self.admin)
        token = self.stack.login("patient", patient["ins"], patient["password"], patient["email"])
        with self.stack.client(token["access_token"]) as c:
            body = {
                "ins": patient["ins"],
                "vitale_serial": patient["vitale_serial"],
                "patient_consent": True,
            }
            r = c.post("/v1/dossiers", json=body)
            assert r.status_code == 201, r.text
        return patient, str(token["access_token"])

    def professional(self, profession: str) -> tuple[str, str]:
        pro = self.stack.create_professional(self.admin, profession)
        tokens = self.stack.login("professional", pro["rpps"], pro["password"], pro["email"])
        return str(pro["rpps"]), str(tokens["access_token"])

    def ids(self) -> dict[str, str]:
        return {
            "ins": self.patient["ins"],
            "rpps": self.gp_rpps,
            "document_id": self.document_id,
            "notification_id": self.notification_id,
            "batch_id": self.batch_id,
            "conversation_id": self.conversation_id,
            "attachment_id": self.attachment_id,
            "measurement_id": self.measurement_id,
            "appointment_id": self.appointment_id,
            # an occurrence of a rule for everyone, upcoming for the scene's patient
            "reminder_id": "grippe~0",
            "seq": "0",
            "key_id": "0000000000000000",
            "session_id": str(uuid.uuid4()),
            "change_id": "no-such-change",
            "trusted_ins": self.friend["ins"],
            # an export of nobody: the patient's own is asked for by the sweep itself
            "export_id": str(uuid.uuid4()),
            # an app in no catalogue, connected to nobody
            "client_id": "app_0000000000000000",
        }

    def token(self, kind: str) -> str:
        if kind == "patient":
            return self.owner
        if kind == "attending-physician":
            return self.gp
        if kind == "admin":
            return self.admin
        if kind == "insurer":
            return self.insurer
        if kind == "facility":
            return self.stack.client_token(self.admin, ["facility"])
        if kind == "other-patient":
            return self.new_patient()[1]
        if kind in ("doctor", "pharmacist"):
            return self.professional("10" if kind == "doctor" else "21")[1]
        assert kind == "agent"
        return self.stack.agent_token(self.admin)


def outcomes(
    stack: RunningStack, operations: list[Operation], kind: str, documented: Any
) -> dict[tuple[str, str], int]:
    """What each route answers `kind`, on a scene of its own (so that what one kind changes
    does not change what the next is answered)."""
    scene = Scene(stack)
    token = scene.token(kind)
    ids = scene.ids()
    examples = bodies(ids["ins"])
    examples[("PUT", "/v1/dossiers/{ins}/attending-physician")] = {"rpps": scene.gp_rpps}
    examples[("POST", "/v1/dossiers/{ins}/trusted-persons")] = {
        "ins": scene.invitee["ins"],
        "scope": "read",
    }
    secured = [o for o in operations if o.secured]
    ordered = [o for o in secured if (o.method, o.path) not in LAST] + [
        o for key in LAST for o in secured if (o.method, o.path) == key
    ]
    found = {}
    with stack.client(token) as c:
        for op in ordered:
            key = (op.method, op.path)
            url = fill_path(op.path, ids)
            if not op.body_types:
                r = c.request(op.method, url)
            elif op.body_types[0] == "application/json":
                assert key in examples, f"add a valid example body for {key}"
                r = c.request(op.method, url, json=examples[key])
            else:
                r = c.request(
                    op.method,
                    url,
                    content=examples[key],
                    headers={"content-type": op.body_types[0]},
                )
            if r.status_code >= 400:
                no_leak(r)
            documented.check(op.method, op.path, r)
            assert r.status_code < 500, (kind, key, r.text)
            found[key] = r.status_code
    return found


EVERYONE = frozenset(KINDS)
PEOPLE = frozenset({"patient", "other-patient", "attending-physician", "doctor", "pharmacist"})
PROFESSIONALS = frozenset({"attending-physician", "doctor", "pharmacist"})
CARE = frozenset({"patient", "attending-physician"})  # the patient and whom they chose
# A facility's software writes documents, and reads back those it wrote (none on the scene's
# dossier but its own): it may look at the dossier and list, and finds only what it wrote.
FACILITY = frozenset({"facility"})
PATIENT = frozenset({"patient"})
ADMIN = frozenset({"admin"})
PERSONS = PEOPLE | {"agent", "admin"}
# Who gets past authorization on each route, on the scene's dossier (DESIGN.md §1 and §3).
ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/v1/me"): EVERYONE,
    ("GET", "/v1/habilitation-matrix"): EVERYONE,
    ("GET", "/v1/me/notifications"): PEOPLE,
    ("PATCH", "/v1/me/notifications/{notification_id}"): PATIENT,  # the patient's own
    ("GET", "/v1/me/notification-preferences"): PEOPLE,
    ("PUT", "/v1/me/notification-preferences"): PEOPLE,
    ("GET", "/v1/admin/notifications/dead-letters"): ADMIN,
    ("POST", "/v1/admin/patients"): ADMIN,
    ("POST", "/v1/admin/professionals"): ADMIN,
    ("POST", "/v1/admin/agents"): ADMIN,
    ("POST", "/v1/admin/clients"): ADMIN,
    ("POST", "/v1/admin/signing-keys/rotate"): ADMIN,
    ("POST", "/v1/admin/signing-keys/{key_id}/revoke"): ADMIN,
    ("GET", "/v1/admin/openings"): ADMIN,
    # Rule 1: the patient, a professional of an opening profession, an insurance agent.
    ("POST", "/v1/dossiers"): PATIENT | PROFESSIONALS | {"agent"},
    ("GET", "/v1/dossiers/{ins}"): CARE | FACILITY,
    ("POST", "/v1/dossiers/{ins}/close"): PATIENT,
    ("POST", "/v1/dossiers/{ins}/reopen"): PATIENT,
    ("POST", "/v1/dossiers/{ins}/deletion-request"): PATIENT,
    ("GET", "/v1/dossiers/{ins}/documents"): CARE | FACILITY,
    ("POST", "/v1/dossiers/{ins}/documents"): PROFESSIONALS | FACILITY,
    ("GET", "/v1/dossiers/{ins}/documents/{document_id}"): CARE,
    ("GET", "/v1/dossiers/{ins}/documents/{document_id}/content"): CARE,
    ("PATCH", "/v1/dossiers/{ins}/documents/{document_id}"): PATIENT,  # masking
    ("DELETE", "/v1/dossiers/{ins}/documents/{document_id}"): {"attending-physician"},  # author
    ("GET", "/v1/dossiers/{ins}/profile"): CARE,
    ("PUT", "/v1/dossiers/{ins}/profile"): CARE,
    ("GET", "/v1/dossiers/{ins}/emergency-contacts"): CARE,
    ("PUT", "/v1/dossiers/{ins}/emergency-contacts"): PATIENT,
    ("GET", "/v1/dossiers/{ins}/advance-directives"): CARE,
    ("PUT", "/v1/dossiers/{ins}/advance-directives"): PATIENT,
    ("GET", "/v1/dossiers/{ins}/measurements"): CARE,
    ("POST", "/v1/dossiers/{ins}/measurements"): CARE,
    ("DELETE", "/v1/dossiers/{ins}/measurements/{measurement_id}"): PATIENT,  # its author
    ("GET", "/v1/dossiers/{ins}/preview"): PATIENT,
    ("GET", "/v1/dossiers/{ins}/consent-settings"): PATIENT,
    ("PUT", "/v1/dossiers/{ins}/consent-settings"): PATIENT,
    ("GET", "/v1/dossiers/{ins}/professionals"): PATIENT,
    ("PUT", "/v1/dossiers/{ins}/professionals/{rpps}"): PATIENT,
    ("DELETE", "/v1/dossiers/{ins}/professionals/{rpps}"): PATIENT,
    ("PUT", "/v1/dossiers/{ins}/attending-physician"): PATIENT,
    ("POST", "/v1/dossiers/{ins}/emergency-access"): PROFESSIONALS,
    # Rule 10: the patient and the attending physician see all, others their own entries.
    ("GET", "/v1/dossiers/{ins}/access-log"): PATIENT | PROFESSIONALS,
    ("POST", "/v1/ingest/batches"): {"insurer"},
    ("GET", "/v1/ingest/batches/{batch_id}"): {"insurer", "admin"},  # the sender's, and operators'
    # Messaging: mailboxes are people's (and establishments' mailbox clients', which the sweep's
    # facility is not); a conversation is its two sides'
    # (the scene's: the GP wrote to the patient), the professional side closes and files, the
    # patient blocks.
    ("GET", "/v1/conversations"): PEOPLE,
    ("POST", "/v1/conversations"): PEOPLE,
    ("GET", "/v1/conversations/{conversation_id}"): CARE,
    ("POST", "/v1/conversations/{conversation_id}/messages"): CARE,
    ("POST", "/v1/conversations/{conversation_id}/close"): {"attending-physician"},
    ("POST", "/v1/conversations/{conversation_id}/reopen"): {"attending-physician"},
    ("POST", "/v1/conversations/{conversation_id}/block"): PATIENT,
    ("GET", "/v1/conversations/{conversation_id}/attachments/{attachment_id}"): CARE,
    ("POST", "/v1/conversations/{conversation_id}/attachments/{attachment_id}/file"): {
        "attending-physician"
    },
    # One's own account: people, agents and administrators, not systems.
    ("POST", "/v1/me/password"): PERSONS,
    ("GET", "/v1/me/sessions"): PERSONS,
    ("DELETE", "/v1/me/sessions"): PERSONS,
    ("DELETE", "/v1/me/sessions/{session_id}"): PERSONS,
    ("POST", "/v1/me/contact-changes"): PERSONS,
    ("POST", "/v1/me/contact-changes/{change_id}/confirm"): PERSONS,
    # Exports of one's data: a patient's, for themselves (each kind's scene has its own
    # patient); an export of someone else, or none, is not found.
    ("POST", "/v1/me/exports"): PATIENT | {"other-patient"},
    ("GET", "/v1/me/exports"): PATIENT | {"other-patient"},
    ("GET", "/v1/me/exports/{export_id}"): frozenset(),
    ("GET", "/v1/me/exports/{export_id}/content"): frozenset(),
    # Trusted persons: the patient names them; a patient finds whom they may act for, and
    # accepts an invitation (the scene's callers have none: "no such invitation").
    ("GET", "/v1/dossiers/{ins}/trusted-persons"): PATIENT,
    ("POST", "/v1/dossiers/{ins}/trusted-persons"): PATIENT,
    ("PATCH", "/v1/dossiers/{ins}/trusted-persons/{trusted_ins}"): PATIENT,
    ("DELETE", "/v1/dossiers/{ins}/trusted-persons/{trusted_ins}"): PATIENT,
    ("GET", "/v1/me/represented"): PATIENT | {"other-patient"},
    ("POST", "/v1/me/represented/{ins}/accept"): frozenset(),
    # The agenda: the patient's; a professional the patient has not blocked lists what is
    # shared with them and proposes (the scene's appointment is shared with no one, so it is
    # no one else's to accept, decline or cancel: not found to them); reminders are the
    # patient's side alone.
    ("GET", "/v1/dossiers/{ins}/appointments"): PATIENT | PROFESSIONALS,
    ("POST", "/v1/dossiers/{ins}/appointments"): PATIENT | PROFESSIONALS,
    ("PATCH", "/v1/dossiers/{ins}/appointments/{appointment_id}"): PATIENT,
    ("POST", "/v1/dossiers/{ins}/appointments/{appointment_id}/accept"): PATIENT,
    ("POST", "/v1/dossiers/{ins}/appointments/{appointment_id}/decline"): PATIENT,
    ("POST", "/v1/dossiers/{ins}/appointments/{appointment_id}/cancel"): PATIENT,
    ("GET", "/v1/dossiers/{ins}/agenda.ics"): PATIENT,
    ("GET", "/v1/dossiers/{ins}/reminders"): PATIENT,
    ("POST", "/v1/dossiers/{ins}/reminders/{reminder_id}/done"): PATIENT,
    ("POST", "/v1/dossiers/{ins}/reminders/{reminder_id}/postpone"): PATIENT,
    ("PUT", "/v1/dossiers/{ins}/prevention"): PATIENT,
    # The insurer's directory (a directory_sync client, or an administrator).
    ("POST", "/v1/accounts"): ADMIN,
    ("GET", "/v1/accounts/{ins}"): ADMIN,
    ("DELETE", "/v1/accounts/{ins}/opposition"): ADMIN,
    # Connected apps: administrators keep the catalogue; a patient answers a request and
    # lists and disconnects their own apps (an app's tokens: tests/e2e/test_connected_apps.py).
    ("POST", "/v1/admin/apps"): ADMIN,
    ("PUT", "/v1/admin/apps/{client_id}"): ADMIN,
    ("DELETE", "/v1/admin/apps/{client_id}"): ADMIN,
    ("POST", "/v1/oauth/authorization"): PATIENT | {"other-patient"},
    ("GET", "/v1/me/connected-apps"): PATIENT | {"other-patient"},
    ("DELETE", "/v1/me/connected-apps/{client_id}"): PATIENT | {"other-patient"},
}
CONVERSATION_ROUTES = [key for key in ALLOWED if "{conversation_id}" in key[1]]
PROPOSAL_ROUTES = [key for key in ALLOWED if key[1].endswith(("/accept", "/decline", "/cancel"))]
# Where a refusal is "no such thing" (someone else's notification, batch): their existence is
# not told either.
REFUSED_AS_NOT_FOUND = {
    ("PATCH", "/v1/me/notifications/{notification_id}"): PEOPLE,
    ("GET", "/v1/ingest/batches/{batch_id}"): EVERYONE,
    **{key: PEOPLE - CARE for key in CONVERSATION_ROUTES},  # people, not its sides
    ("POST", "/v1/me/represented/{ins}/accept"): frozenset({"patient", "other-patient"}),
    ("GET", "/v1/me/exports/{export_id}"): frozenset({"patient", "other-patient"}),
    ("GET", "/v1/me/exports/{export_id}/content"): frozenset({"patient", "other-patient"}),
    **{key: PROFESSIONALS for key in PROPOSAL_ROUTES if "{appointment_id}" in key[1]},
}
# Allowed, and the scene makes the answer a conflict: its DMP is already open.
ALLOWED_CONFLICTS = {("POST", "/v1/dossiers"): 409}
# Allowed, and the scene names no key: revoking a real one would end the sweep's tokens
# (tests/e2e/test_identity.py revokes them).
ALLOWED_CONFLICTS[("POST", "/v1/admin/signing-keys/{key_id}/revoke")] = 404
# Allowed, and a patient writes first only to a pharmacy that dispensed to them (the example
# names a patient: tests/e2e/test_messaging.py covers the pharmacy).
ALLOWED_CONFLICTS[("POST", "/v1/conversations")] = 422
# Allowed, and refused as too soon when another test of the session rotated within the JWKS'
# cache time (tests/e2e/test_identity.py rotates, and covers the refusal).
ALLOWED_CONFLICTS[("POST", "/v1/admin/signing-keys/rotate")] = 409
# Allowed, and the sweep names nobody whose view to preview (tests/e2e/test_preview.py does).
ALLOWED_CONFLICTS[("GET", "/v1/dossiers/{ins}/preview")] = 422
# Allowed, and the example is refused on its merits: a wrong current password, a code for no
# change, a session or an opposition that does not exist.
ALLOWED_CONFLICTS[("POST", "/v1/me/password")] = 422
ALLOWED_CONFLICTS[("POST", "/v1/me/contact-changes/{change_id}/confirm")] = 422
ALLOWED_CONFLICTS[("DELETE", "/v1/me/sessions/{session_id}")] = 404
ALLOWED_CONFLICTS[("DELETE", "/v1/accounts/{ins}/opposition")] = 404
# Allowed, and the sweep names no app (or a request for none, or an app not connected).
ALLOWED_CONFLICTS[("PUT", "/v1/admin/apps/{client_id}")] = 404
ALLOWED_CONFLICTS[("DELETE", "/v1/admin/apps/{client_id}")] = 404
ALLOWED_CONFLICTS[("POST", "/v1/oauth/authorization")] = 422
ALLOWED_CONFLICTS[("DELETE", "/v1/me/connected-apps/{client_id}")] = 404
# Allowed, and the scene's appointment is the patient's own, confirmed: not a proposal.
ALLOWED_CONFLICTS[("POST", "/v1/dossiers/{ins}/appointments/{appointment_id}/accept")] = 409
ALLOWED_CONFLICTS[("POST", "/v1/dossiers/{ins}/appointments/{appointment_id}/decline")] = 409


def test_every_protected_route_is_classified(operations: list[Operation]) -> None:
    secured = {(o.method, o.path) for o in operations if o.secured}
    assert secured == set(ALLOWED), {
        "not classified": sorted(secured - set(ALLOWED)),
        "gone": sorted(set(ALLOWED) - secured),
    }


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_principal_reaches_only_its_routes(
    stack: RunningStack, operations: list[Operation], kind: str, documented: Any
) -> None:
    found = outcomes(stack, operations, kind, documented)
    wrong = {}
    for key, status in found.items():
        if kind in ALLOWED[key]:
            ok = status < 400 or ALLOWED_CONFLICTS.get(key) == status
        elif kind in REFUSED_AS_NOT_FOUND.get(key, frozenset()):
            ok = status == 404
        else:
            ok = status == 403
        if not ok:
            wrong[f"{key[0]} {key[1]}"] = status
    assert not wrong, wrong

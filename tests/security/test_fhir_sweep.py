"""The security sweep of the FHIR endpoint, driven by the gateway's own FHIR routes (they are
not in the OpenAPI document: the CapabilityStatement describes them): a FHIR route added
tomorrow is swept tomorrow, or fails here until it is classified.

- Every route but the CapabilityStatement refuses a missing, malformed, expired, unsigned,
  foreign-audience or refresh token: 401 as an OperationOutcome, nothing of the inside.
- Who may do what through FHIR is what /v1 lets them do (principal kind × route), on a
  dossier of their own for each kind.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from fastapi.routing import APIRoute

from dmp_gateway.fhir.routes import router
from dmp_stack.testing import INTERNALS, PRINCIPAL_KINDS, RunningStack, make_ins

FHIR = "application/fhir+json"
PUBLIC = {("GET", "/fhir/R4/metadata")}
CATCH_ALL = "/fhir/R4/{path:path}"
VISIBILITY = (
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
    "TRE-A07-StatutVisibiliteDocument"
)


def fhir_operations() -> list[tuple[str, str]]:
    return sorted(
        (method, route.path)
        for route in router.routes
        if isinstance(route, APIRoute) and route.path != CATCH_ALL
        for method in route.methods
    )


def refused_cleanly(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.request.method, r.request.url.path, r.status_code, r.text)
    assert r.headers["content-type"].startswith(FHIR), r.text
    body = dict(r.json())
    assert body["resourceType"] == "OperationOutcome"
    assert not INTERNALS.search(r.text), r.text
    return body


def test_every_fhir_route_but_the_statement_refuses_bad_tokens(stack: RunningStack) -> None:
    pair = stack.login("admin", "admin", stack.admin_password, "admin@dmp.localhost")
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    head, body, _ = pair["access_token"].split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    now = int(time.time())
    unsigned = (
        base64.urlsafe_b64encode(json.dumps({**header, "alg": "none"}).encode())
        .decode()
        .rstrip("=")
        + f".{body}."
    )
    bad = {
        "missing": None,
        "not-a-jwt": "not.a.jwt",
        "expired": stack.forge({**claims, "iat": now - 7200, "exp": now - 3600}),
        "alg-none": unsigned,
        "wrong-audience": stack.forge({**claims, "aud": "another-platform"}),
        "refresh-token": pair["refresh_token"],
    }
    ins = make_ins()
    operations = fhir_operations()
    assert len(operations) >= 12
    with httpx.Client(base_url=stack.url, timeout=30) as c:
        for method, path in operations:
            if (method, path) in PUBLIC:
                assert c.request(method, path).status_code == 200
                continue
            url = path.replace("{resource_id}", f"{ins}-{uuid.uuid4()}").replace("{ins}", ins)
            for name, token in bad.items():
                headers = {"accept": FHIR, "content-type": FHIR}
                if token:
                    headers["authorization"] = f"Bearer {token}"
                r = c.request(method, url, headers=headers, content=b"{}")
                body = refused_cleanly(r, 401)
                assert body["issue"][0]["code"] == "login", (method, path, name)
                assert r.headers.get("www-authenticate", "").lower().startswith("bearer")


# ------------------------------------------------------------------------ principal × route

KINDS = PRINCIPAL_KINDS
CARE = frozenset({"patient", "attending-physician"})
WRITERS = frozenset({"attending-physician", "doctor", "pharmacist", "facility"})
# A facility's software searches any open dossier and finds only what it wrote.
SEARCHERS = CARE | {"facility"}
ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/fhir/R4/DocumentReference"): SEARCHERS,
    ("GET", "/fhir/R4/DocumentReference/_search"): SEARCHERS,
    ("POST", "/fhir/R4/DocumentReference/_search"): SEARCHERS,
    ("GET", "/fhir/R4/DocumentReference/{resource_id}"): CARE,
    ("PATCH", "/fhir/R4/DocumentReference/{resource_id}"): frozenset({"patient"}),  # masking
    ("GET", "/fhir/R4/Binary/{resource_id}"): CARE,
    # Health measurements: read as the profile is (the patient and their care team).
    ("GET", "/fhir/R4/Observation"): CARE,
    ("GET", "/fhir/R4/Observation/_search"): CARE,
    ("POST", "/fhir/R4/Observation/_search"): CARE,
    ("GET", "/fhir/R4/List"): SEARCHERS,
    ("GET", "/fhir/R4/List/_search"): SEARCHERS,
    ("POST", "/fhir/R4/List/_search"): SEARCHERS,
    ("GET", "/fhir/R4/Patient/{ins}"): CARE,
    ("GET", "/fhir/R4/Patient"): CARE,
    ("POST", "/fhir/R4/Patient/_search"): CARE,
    ("POST", "/fhir/R4"): WRITERS,
    ("POST", "/fhir/R4/"): WRITERS,
    ("GET", "/fhir/R4/metadata"): frozenset(KINDS),
}


def test_every_fhir_route_is_classified() -> None:
    assert set(fhir_operations()) == set(ALLOWED)


class Scene:
    """A patient with an open DMP and their GP, who wrote one document."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.admin = stack.admin_token()
        self.patient = stack.create_patient(self.admin)
        self.ins = self.patient["ins"]
        self.owner = stack.login(
            "patient", self.ins, self.patient["password"], self.patient["email"]
        )["access_token"]
        stack.open_dossier(self.owner, self.patient)
        gp = stack.create_professional(self.admin, "10")
        self.gp_rpps = gp["rpps"]
        self.gp = stack.login("professional", gp["rpps"], gp["password"], gp["email"])[
            "access_token"
        ]
        with stack.client(self.owner) as c:
            r = c.put(f"/v1/dossiers/{self.ins}/attending-physician", json={"rpps": self.gp_rpps})
            assert r.status_code == 200, r.text
        with stack.client(self.gp) as c:
            r = c.post(
                f"/v1/dossiers/{self.ins}/documents",
                json={
                    "type_code": "11488-4",
                    "title": "Compte rendu",
                    "mime_type": "text/plain",
                    "content_base64": base64.b64encode(b"texte").decode(),
                },
            )
            assert r.status_code == 201, r.text
            self.resource_id = f"{self.ins}-{r.json()['id']}"

    def token(self, kind: str) -> str:
        if kind == "patient":
            return str(self.owner)
        if kind == "attending-physician":
            return str(self.gp)
        if kind == "admin":
            return self.admin
        if kind in ("insurer", "facility"):
            return self.stack.client_token(self.admin, [kind])
        if kind == "other-patient":
            other = self.stack.create_patient(self.admin)
            return str(
                self.stack.login("patient", other["ins"], other["password"], other["email"])[
                    "access_token"
                ]
            )
        if kind in ("doctor", "pharmacist"):
            pro = self.stack.create_professional(self.admin, "10" if kind == "doctor" else "21")
            return str(
                self.stack.login("professional", pro["rpps"], pro["password"], pro["email"])[
                    "access_token"
                ]
            )
        assert kind == "agent"
        return self.stack.agent_token(self.admin)

    def bundle(self) -> dict[str, Any]:
        content = b"Compte rendu"
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001",
                    "request": {"method": "POST", "url": "List"},
                    "resource": {
                        "resourceType": "List",
                        "status": "current",
                        "mode": "working",
                        "extension": [
                            {
                                "url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
                                "valueIdentifier": {"value": "urn:oid:1.2.250.1.999.1"},
                            }
                        ],
                        "subject": {"reference": f"Patient/{self.ins}"},
                    },
                },
                {
                    "fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000002",
                    "request": {"method": "POST", "url": "DocumentReference"},
                    "resource": {
                        "resourceType": "DocumentReference",
                        "status": "current",
                        "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
                        "subject": {"reference": f"Patient/{self.ins}"},
                        "content": [
                            {
                                "attachment": {
                                    "contentType": "text/plain",
                                    "title": "Compte rendu",
                                    "data": base64.b64encode(content).decode(),
                                }
                            }
                        ],
                    },
                },
            ],
        }


def answers(stack: RunningStack, kind: str) -> dict[tuple[str, str], int]:
    scene = Scene(stack)
    token = scene.token(kind)
    found = {}
    headers = {"authorization": f"Bearer {token}", "accept": FHIR}
    patient_param = {"patient": f"Patient/{scene.ins}"}
    # The transactions last: a writer then finds what it wrote (rule 4), which would change
    # what the searches after it answer.
    ordered = sorted(fhir_operations(), key=lambda op: op[1] in ("/fhir/R4", "/fhir/R4/"))
    with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as c:
        for method, path in ordered:
            url = path.replace("{resource_id}", scene.resource_id).replace("{ins}", scene.ins)
            if method == "POST" and path.endswith("/_search"):
                form = {"identifier": f"urn:oid:1.2.250.1.213.1.4.8|{scene.ins}"}
                r = c.post(url, data=form if "Patient" in path else patient_param)
            elif method == "POST":
                r = c.post(url, json=scene.bundle(), headers={"content-type": FHIR})
            elif method == "PATCH":
                r = c.patch(
                    url,
                    json=[
                        {
                            "op": "add",
                            "path": "/securityLabel/-",
                            "value": {"coding": [{"system": VISIBILITY, "code": "MASQUE_PS"}]},
                        }
                    ],
                    headers={"content-type": "application/json-patch+json"},
                )
            elif path == "/fhir/R4/Patient":
                r = c.get(url, params={"identifier": f"urn:oid:1.2.250.1.213.1.4.8|{scene.ins}"})
            elif path.endswith(("/DocumentReference", "/_search", "/List", "/Observation")):
                r = c.get(url, params=patient_param)
            else:
                r = c.get(url)
            if r.status_code >= 400:
                refused_cleanly(r, r.status_code)
            assert r.status_code < 500, (kind, method, path, r.text)
            found[(method, path)] = r.status_code
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_principal_reaches_only_its_fhir_routes(
    stack: RunningStack, kind: str
) -> None:
    wrong = {}
    for key, status in answers(stack, kind).items():
        ok = status < 400 if kind in ALLOWED[key] else status == 403
        if not ok:
            wrong[f"{key[0]} {key[1]}"] = status
    assert not wrong, wrong

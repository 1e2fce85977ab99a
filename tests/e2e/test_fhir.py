"""The FHIR R4 interface (IHE MHD / ANS PDSm) against the running stack, with a real FHIR
client (fhirpy): a hospital system publishes (ITI-65), finds (ITI-67, ITI-66) and retrieves
(ITI-68) as the REST API would let it, then the patient does; the consent rules hold exactly as
through /v1, errors are OperationOutcomes, and every resource the endpoint emits or accepts
here passes the HAPI FHIR validator (base R4) with zero errors."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome as ClientOutcome

from dmp_stack.fhir_validator import FhirValidator
from dmp_stack.testing import RunningStack, make_rpps, until

FHIR = "application/fhir+json"
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
IDNPS = "urn:oid:1.2.250.1.71.4.2.1"
VISIBILITY = (
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
    "TRE-A07-StatutVisibiliteDocument"
)
PROBLEMS = "https://dmp.localhost/problems/"


@pytest.fixture(scope="module")
def validator() -> Iterator[FhirValidator]:
    with FhirValidator() as v:
        yield v


def valid(validator: FhirValidator, resource: dict[str, Any]) -> dict[str, Any]:
    errors = validator.validate(resource)
    assert errors == [], (resource.get("resourceType"), errors)
    return resource


class World:
    """A patient's open DMP, their GP, an authorised doctor, an outsider, and a hospital's
    system (a facility client with a signed client assertion)."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        admin = stack.admin_token()
        self.patient = stack.create_patient(admin)
        self.ins = self.patient["ins"]
        self.pros = {
            "gp": stack.create_professional(admin, "10"),
            "doctor": stack.create_professional(admin, "10"),
            "outsider": stack.create_professional(admin, "10"),
        }
        self.tokens = {
            "patient": stack.login(
                "patient", self.ins, self.patient["password"], self.patient["email"]
            )["access_token"],
            "hospital": stack.client_token(admin, ["facility"]),
        }
        for name, pro in self.pros.items():
            self.tokens[name] = stack.login(
                "professional", pro["rpps"], pro["password"], pro["email"]
            )["access_token"]
        stack.open_dossier(self.tokens["patient"], self.patient)
        with stack.client(self.tokens["patient"]) as c:
            assert until(
                lambda: c.put(
                    f"/v1/dossiers/{self.ins}/attending-physician",
                    json={"rpps": self.pros["gp"]["rpps"]},
                ).status_code
                == 200
            )
            r = c.put(
                f"/v1/dossiers/{self.ins}/professionals/{self.pros['doctor']['rpps']}",
                json={"status": "authorized"},
            )
            assert r.status_code == 200, r.text

    def fhir(self, who: str) -> SyncFHIRClient:
        return SyncFHIRClient(
            f"{self.stack.url}/fhir/R4", authorization=f"Bearer {self.tokens[who]}"
        )

    def http(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.stack.url}/fhir/R4",
            headers={"authorization": f"Bearer {self.tokens[who]}", "accept": FHIR},
            timeout=30,
        )

    def search(self, who: str, **params: Any) -> dict[str, Any]:
        with self.http(who) as c:
            r = c.get(
                "/DocumentReference",
                params={"patient.identifier": f"{INS_NIR}|{self.ins}", **params},
            )
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def world(stack: RunningStack) -> World:
    return World(stack)


@pytest.fixture
def own_world(stack: RunningStack) -> World:
    """A world of the test's own, for a test that finds exactly what it wrote: the module's
    patient holds what the tests before it wrote, in whatever order they ran."""
    return World(stack)


def sha1_base64(content: bytes) -> str:
    return base64.b64encode(hashlib.sha1(content, usedforsecurity=False).digest()).decode()


def provide_bundle(
    ins: str,
    author_rpps: str,
    documents: list[dict[str, Any]],
    submission_uid: str | None = None,
) -> dict[str, Any]:
    """An ITI-65 Provide Document Bundle as a hospital's software writes it."""
    list_url = f"urn:uuid:{uuid.uuid4()}"
    entries: list[dict[str, Any]] = []
    refs = []
    for doc in documents:
        content = doc["content"].encode()
        binary_url = f"urn:uuid:{uuid.uuid4()}"
        doc_url = f"urn:uuid:{uuid.uuid4()}"
        refs.append({"item": {"reference": doc_url}})
        reference: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "contained": [
                {
                    "resourceType": "Practitioner",
                    "id": "author",
                    "identifier": [{"system": IDNPS, "value": "8" + author_rpps}],
                    "name": [{"family": "Martin", "given": ["Claire"]}],
                }
            ],
            "masterIdentifier": {
                "use": "usual",
                "system": "urn:ietf:rfc:3986",
                "value": doc.get("uid", f"urn:oid:1.2.250.1.999.{uuid.uuid4().int % 10**12}"),
            },
            "status": "current",
            "type": {
                "coding": [{"system": doc.get("system", "http://loinc.org"), "code": doc["type"]}]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument",
                            "code": "10",
                        }
                    ]
                }
            ],
            "subject": {"reference": f"Patient/{ins}"},
            "author": [{"reference": "#author"}],
            "securityLabel": doc.get(
                "labels",
                [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                "code": "N",
                            }
                        ]
                    }
                ],
            ),
            "content": [
                {
                    "attachment": {
                        "contentType": "text/plain",
                        "language": "fr-FR",
                        "url": binary_url,
                        "size": len(content),
                        "hash": sha1_base64(content),
                        "title": doc["title"],
                    },
                    "format": {
                        "system": "https://mos.esante.gouv.fr/NOS/TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode",
                        "code": "urn:ihe:iti:xds-sd:text:2008",
                    },
                }
            ],
            "context": {
                "period": {"start": "2026-11-20T09:00:00Z", "end": "2026-11-22T17:00:00Z"},
                "facilityType": {
                    "coding": [
                        {
                            "system": "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite",
                            "code": "SA01",
                        }
                    ]
                },
                "practiceSetting": {
                    "coding": [
                        {
                            "system": "https://mos.esante.gouv.fr/NOS/TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice",
                            "code": "ETABLISSEMENT",
                        }
                    ]
                },
            },
        }
        if "replaces" in doc:
            reference["relatesTo"] = [
                {
                    "code": "replaces",
                    "target": {"reference": f"DocumentReference/{doc['replaces']}"},
                }
            ]
        entries.append(
            {
                "fullUrl": doc_url,
                "resource": reference,
                "request": {"method": "POST", "url": "DocumentReference"},
            }
        )
        entries.append(
            {
                "fullUrl": binary_url,
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "text/plain",
                    "data": base64.b64encode(content).decode(),
                },
                "request": {"method": "POST", "url": "Binary"},
            }
        )
    submission = {
        "resourceType": "List",
        "extension": [
            {
                "url": "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId",
                "valueIdentifier": {"value": "urn:oid:1.2.250.1.999.1"},
            }
        ],
        "identifier": [
            {
                "use": "usual",
                "system": "urn:ietf:rfc:3986",
                "value": submission_uid or f"urn:oid:1.2.250.1.999.2.{uuid.uuid4().int % 10**12}",
            }
        ],
        "status": "current",
        "mode": "working",
        "code": {
            "coding": [
                {
                    "system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes",
                    "code": "submissionset",
                }
            ]
        },
        "subject": {"reference": f"Patient/{ins}"},
        "date": "2026-11-30T10:00:00Z",
        "entry": refs,
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": list_url,
                "resource": submission,
                "request": {"method": "POST", "url": "List"},
            },
            *entries,
        ],
    }


PATCH = {"content-type": "application/json-patch+json"}


def publish(world: World, author: str, documents: list[dict[str, Any]]) -> list[str]:
    """The hospital's system publishes these documents, written by `author` (ITI-65)."""
    answer = world.fhir("hospital").execute(
        "", method="post", data=provide_bundle(world.ins, world.pros[author]["rpps"], documents)
    )
    return published(answer)


def published(answer: dict[str, Any]) -> list[str]:
    """The DocumentReference ids a transaction-response gives, in order."""
    return [
        e["response"]["location"].split("/")[1]
        for e in answer["entry"]
        if e["response"]["location"].startswith("DocumentReference/")
    ]


def mask(c: httpx.Client, resource_id: str) -> httpx.Response:
    """The patient's mask from professionals (MASQUE_PS), by JSON Patch."""
    label = {"coding": [{"system": VISIBILITY, "code": "MASQUE_PS"}]}
    return c.patch(
        f"/DocumentReference/{resource_id}",
        json=[{"op": "add", "path": "/securityLabel/-", "value": label}],
        headers=PATCH,
    )


def outcome(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(FHIR)
    body = dict(r.json())
    assert body["resourceType"] == "OperationOutcome"
    return body


def test_the_capability_statement_lists_what_is_supported(
    world: World, validator: FhirValidator
) -> None:
    with httpx.Client(base_url=world.stack.url) as c:
        r = c.get("/fhir/R4/metadata")
        assert r.status_code == 200
        statement = valid(validator, r.json())
        assert statement["fhirVersion"] == "4.0.1"
        assert statement["format"] == ["application/fhir+json"]
        kinds = {res["type"] for res in statement["rest"][0]["resource"]}
        assert kinds == {"DocumentReference", "List", "Binary", "Observation", "Patient"}
        params = {p["name"] for p in statement["rest"][0]["resource"][0]["searchParam"]}
        for required in (
            "patient.identifier",
            "status",
            "type",
            "category",
            "date",
            "period",
            "author.given",
            "author.family",
            "setting",
            "facility",
            "event",
            "format",
            "security-label",
            "identifier",
            "related",
        ):
            assert required in params
        # XML is refused as the statement says, with an OperationOutcome
        valid(
            validator,
            outcome(c.get("/fhir/R4/metadata", headers={"accept": "application/fhir+xml"}), 406),
        )


def test_a_hospital_publishes_finds_and_retrieves_then_the_patient_does(
    own_world: World, validator: FhirValidator
) -> None:
    world = own_world
    hospital = world.fhir("hospital")
    gp_rpps = world.pros["gp"]["rpps"]
    bundle = valid(
        validator,
        provide_bundle(
            world.ins,
            gp_rpps,
            [
                {"type": "11490-0", "title": "Lettre de liaison", "content": "Sortie le 22/11"},
                {"type": "11502-2", "title": "Biologie", "content": "Hb 13.2 g/dL"},
            ],
        ),
    )
    # ITI-65 through the real client
    answer = hospital.execute("", method="post", data=bundle)
    valid(validator, answer)
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 5
    locations = [e["response"]["location"] for e in answer["entry"]]
    assert locations[0].startswith(f"List/{world.ins}-")
    doc_ids = [loc.split("/", 1)[1] for loc in locations if loc.startswith("DocumentReference/")]
    assert len(doc_ids) == 2
    # ITI-67 through the real client: the hospital wrote them, so it reads them
    found = (
        hospital.resources("DocumentReference")
        .search(**{"patient.identifier": f"{INS_NIR}|{world.ins}", "status": "current"})
        .fetch_all()
    )
    assert {d["id"] for d in found} == set(doc_ids)
    letter = next(d for d in found if d["type"]["coding"][0]["code"] == "11490-0")
    valid(validator, letter.serialize())
    assert letter["masterIdentifier"]["value"].startswith("urn:oid:1.2.250.1.999.")
    practitioner = next(c for c in letter["contained"] if c["resourceType"] == "Practitioner")
    assert {"system": IDNPS, "value": "8" + gp_rpps} in [
        {"system": i["system"], "value": i["value"]} for i in practitioner["identifier"]
    ]
    attachment = letter["content"][0]["attachment"]
    sent = hashlib.sha1(b"Sortie le 22/11", usedforsecurity=False).digest()
    assert attachment["hash"] == base64.b64encode(sent).decode()
    assert attachment["size"] == len(b"Sortie le 22/11")
    assert letter["context"]["practiceSetting"]["coding"][0]["code"] == "ETABLISSEMENT"
    # ITI-68: the attachment's url gives the bytes, and a Binary when asked
    with world.http("hospital") as c:
        r = c.get(attachment["url"], headers={"accept": "*/*"})
        assert r.status_code == 200 and r.content == b"Sortie le 22/11"
        assert r.headers["content-type"].startswith("text/plain")
        b = c.get(attachment["url"], headers={"accept": FHIR})
        assert base64.b64decode(valid(validator, b.json())["data"]) == b"Sortie le 22/11"
    # the patient finds and reads the same documents with their own token
    patient = world.fhir("patient")
    mine = (
        patient.resources("DocumentReference")
        .search(patient=f"Patient/{world.ins}", status="current")
        .fetch_all()
    )
    assert set(doc_ids) <= {d["id"] for d in mine}
    with world.http("patient") as c:
        assert c.get(attachment["url"], headers={"accept": "*/*"}).content == b"Sortie le 22/11"
        me = valid(validator, c.get(f"/Patient/{world.ins}").json())
        assert (
            me["identifier"][0]["system"] == INS_NIR and me["identifier"][0]["value"] == world.ins
        )
        by_identifier = valid(
            validator, c.get("/Patient", params={"identifier": f"{INS_NIR}|{world.ins}"}).json()
        )
        assert by_identifier["total"] == 1
    # ITI-66: the submission set, with its documents
    with world.http("hospital") as c:
        lists = c.get(
            "/List",
            params={
                "patient.identifier": f"{INS_NIR}|{world.ins}",
                "code": "submissionset",
                "status": "current",
            },
        ).json()
    valid(validator, lists)
    submitted = next(
        e["resource"] for e in lists["entry"] if e["resource"]["id"] == locations[0].split("/")[1]
    )
    assert {e["item"]["reference"] for e in submitted["entry"]} == {
        f"DocumentReference/{i}" for i in doc_ids
    }
    # the trail says the hospital and the patient read them
    with world.stack.client(world.tokens["patient"]) as c:
        log = c.get(f"/v1/dossiers/{world.ins}/access-log").json()
    own = {d.split("-", 1)[1] for d in doc_ids}
    reads = {
        (e["actor"]["kind"], e.get("document_id")) for e in log["entries"] if e["action"] == "read"
    }
    assert any(kind != "patient" and d in own for kind, d in reads)
    assert any(kind == "patient" and d in own for kind, d in reads)


def test_search_parameters_each_narrow_the_result(world: World, validator: FhirValidator) -> None:
    uid = f"urn:oid:1.2.250.1.999.3.{uuid.uuid4().int % 10**12}"
    (scan,) = publish(
        world,
        "doctor",
        [{"type": "18748-4", "title": "Scanner", "content": "RAS", "uid": uid}],
    )

    def ids(**params: Any) -> set[str]:
        page = valid(validator, world.search("hospital", **params))
        return {e["resource"]["id"] for e in page.get("entry", [])}

    assert scan in ids(type="http://loinc.org|18748-4")
    assert scan not in ids(type="http://loinc.org|11490-0")
    assert scan in ids(category="31")
    assert scan in ids(identifier=f"urn:ietf:rfc:3986|{uid}")
    assert ids(identifier=f"urn:ietf:rfc:3986|{uid}") == {scan}
    # the author's names are the directory's, whatever the hospital's software wrote
    assert scan in ids(**{"author.family": "dur"})
    assert scan not in ids(**{"author.family": "Martin"})
    assert scan not in ids(**{"author.family": "Dupont"})
    assert scan in ids(setting="ETABLISSEMENT")
    assert scan in ids(period="ge2026-11-21")
    assert scan not in ids(period="lt2026-11-01")
    assert scan in ids(date="ge2020-01-01")
    assert scan not in ids(date="lt2020-01-01")
    assert scan in ids(format="urn:ihe:iti:xds-sd:text:2008")
    # a replacement, then `related` finds each from the other
    (newer,) = publish(
        world,
        "doctor",
        [{"type": "18748-4", "title": "Scanner v2", "content": "RAS, revu", "replaces": scan}],
    )
    assert scan in ids(status="superseded", related=f"DocumentReference/{newer}")
    assert newer in ids(related=f"DocumentReference/{scan}")
    assert scan not in ids(status="current")
    # paging: _count and the next link, over two current documents of this test's own
    publish(world, "doctor", [{"type": "11488-4", "title": "CR", "content": "vu"}])
    first = world.search("hospital", _count="1")
    assert len(first["entry"]) == 1
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    with world.http("hospital") as c:
        second = c.get(next_url).json()
    assert second["entry"][0]["resource"]["id"] != first["entry"][0]["resource"]["id"]
    # POST _search gives the same
    with world.http("hospital") as c:
        r = c.post(
            "/DocumentReference/_search",
            data={"patient.identifier": f"{INS_NIR}|{world.ins}", "type": "18748-4"},
        )
    assert {e["resource"]["id"] for e in r.json()["entry"]} == {newer}


def test_a_refused_bundle_leaves_nothing_behind(world: World, validator: FhirValidator) -> None:
    hospital = world.fhir("hospital")
    # a document of another author's, for the gp to try to replace below (its own, so that
    # the test holds in any order)
    (other,) = publish(world, "doctor", [{"type": "11488-4", "title": "CR 0", "content": "zéro"}])
    before = world.search("hospital", _count="200")
    three = [
        {"type": "11488-4", "title": "CR 1", "content": "un"},
        {"type": "99999-9", "title": "CR 2", "content": "deux"},
        {"type": "11488-4", "title": "CR 3", "content": "trois"},
    ]
    with world.http("hospital") as c:
        r = c.post(
            "",
            json=provide_bundle(world.ins, world.pros["gp"]["rpps"], three),
            headers={"content-type": FHIR},
        )
    body = valid(validator, outcome(r, 422))
    assert body["issue"][0]["expression"] == ["Bundle.entry[3].resource.type"]
    assert body["issue"][0]["details"]["coding"][0]["code"] == "unknown-type-code"
    # replacing a document someone else wrote: refused by the dossier, after the checks of
    # the first document passed: still nothing written
    bad = [
        {"type": "11488-4", "title": "CR 4", "content": "quatre"},
        {"type": "11488-4", "title": "CR 5", "content": "cinq", "replaces": other},
    ]
    with world.http("gp") as c:
        r = c.post(
            "",
            json=provide_bundle(world.ins, world.pros["gp"]["rpps"], bad),
            headers={"content-type": FHIR},
        )
    body = outcome(r, 403)
    assert body["issue"][0]["expression"] == ["Bundle.entry[3].resource.relatesTo[0].target"]
    after = world.search("hospital", _count="200")
    assert {e["resource"]["id"] for e in after.get("entry", [])} == {
        e["resource"]["id"] for e in before.get("entry", [])
    }
    # a unique id is its submitter's: another hospital's software giving the same one to
    # another document is not told that the dossier holds one
    uid = f"urn:oid:1.2.250.1.999.4.{uuid.uuid4().int % 10**12}"
    first_doc = [{"type": "11488-4", "title": "CR 7", "content": "sept", "uid": uid}]
    other_doc = [{"type": "11488-4", "title": "CR 8", "content": "huit", "uid": uid}]
    hospital.execute(
        "", method="post", data=provide_bundle(world.ins, world.pros["gp"]["rpps"], first_doc)
    )
    other = world.stack.client_token(world.stack.admin_token(), ["facility"])
    with httpx.Client(base_url=f"{world.stack.url}/fhir/R4", timeout=30) as c:
        r = c.post(
            "",
            json=provide_bundle(world.ins, world.pros["gp"]["rpps"], other_doc),
            headers={"content-type": FHIR, "authorization": f"Bearer {other}"},
        )
    assert r.status_code == 200, r.text
    # the same submitter giving it to other content is refused
    with world.http("hospital") as c:
        r = c.post(
            "",
            json=provide_bundle(world.ins, world.pros["gp"]["rpps"], other_doc),
            headers={"content-type": FHIR},
        )
    body = outcome(r, 409)
    assert body["issue"][0]["expression"] == ["Bundle.entry[1].resource.masterIdentifier"]
    # an author the directory does not know is refused, naming the element
    with world.http("hospital") as c:
        r = c.post(
            "",
            json=provide_bundle(
                world.ins, make_rpps(), [{"type": "11488-4", "title": "CR 9", "content": "neuf"}]
            ),
            headers={"content-type": FHIR},
        )
    body = outcome(r, 422)
    assert body["issue"][0]["expression"] == ["Bundle.entry[1].resource.author"]
    # a retried submission writes nothing twice
    once = provide_bundle(
        world.ins,
        world.pros["gp"]["rpps"],
        [{"type": "11488-4", "title": "CR 6", "content": "six"}],
    )
    first = hospital.execute("", method="post", data=once)
    again = hospital.execute("", method="post", data=once)
    assert first["entry"][1]["response"]["location"] == again["entry"][1]["response"]["location"]


def test_the_consent_rules_hold_through_fhir(world: World, validator: FhirValidator) -> None:
    visible, hidden = publish(
        world,
        "gp",
        [
            {"type": "11488-4", "title": "Visible", "content": "a"},
            {
                "type": "11488-4",
                "title": "Annonce",
                "content": "b",
                "labels": [{"coding": [{"system": VISIBILITY, "code": "INVISIBLE_PATIENT"}]}],
            },
        ],
    )
    # hidden from the patient: not found by them, not retrievable, no trace of it
    mine = {e["resource"]["id"] for e in world.search("patient", _count="200").get("entry", [])}
    assert visible in mine and hidden not in mine
    with world.http("patient") as c:
        r = c.get(f"/Binary/{hidden}", headers={"accept": "*/*"})
        body = valid(validator, outcome(r, 403))
        assert "Annonce" not in r.text
        # the same reason as the REST API gives
        rest = world.stack.client(world.tokens["patient"]).get(
            f"/v1/dossiers/{world.ins}/documents/{hidden.split('-', 1)[1]}"
        )
        assert rest.status_code == 403
        assert (
            body["issue"][0]["details"]["coding"][0]["code"]
            == rest.json()["type"].rsplit("/", 1)[1]
        )
        # the patient masks the visible one from professionals, by JSON Patch
        r = mask(c, visible)
        assert r.status_code == 200, r.text
        assert "MASQUE_PS" in {
            c["code"] for s in valid(validator, r.json())["securityLabel"] for c in s["coding"]
        }
        # anything else is refused, with the element at fault
        body = outcome(
            c.patch(
                f"/DocumentReference/{visible}",
                json=[{"op": "replace", "path": "/type/coding/0/code", "value": "11490-0"}],
                headers=PATCH,
            ),
            422,
        )
        assert body["issue"][0]["expression"] == ["DocumentReference.type"]
    # masked: the authorised doctor no longer finds it; the GP still does
    assert visible not in {
        e["resource"]["id"] for e in world.search("doctor", _count="200").get("entry", [])
    }
    assert visible in {
        e["resource"]["id"] for e in world.search("gp", _count="200").get("entry", [])
    }
    # an outsider is refused the search with the REST API's reason
    with world.http("outsider") as c:
        body = outcome(c.get("/DocumentReference", params={"patient": f"Patient/{world.ins}"}), 403)
    rest = world.stack.client(world.tokens["outsider"]).get(f"/v1/dossiers/{world.ins}/documents")
    assert body["issue"][0]["details"]["coding"][0]["code"] == rest.json()["type"].rsplit("/", 1)[1]
    # blocked: refused everything, reading and writing
    with world.stack.client(world.tokens["patient"]) as c:
        assert (
            c.put(
                f"/v1/dossiers/{world.ins}/professionals/{world.pros['doctor']['rpps']}",
                json={"status": "blocked"},
            ).status_code
            == 200
        )
    with world.http("doctor") as c:
        outcome(c.get("/DocumentReference", params={"patient": f"Patient/{world.ins}"}), 403)
        outcome(c.get(f"/Binary/{visible}", headers={"accept": "*/*"}), 403)
        r = c.post(
            "",
            json=provide_bundle(
                world.ins,
                world.pros["doctor"]["rpps"],
                [{"type": "11488-4", "title": "x", "content": "x"}],
            ),
            headers={"content-type": FHIR},
        )
        outcome(r, 403)
    # no token: 401 as an OperationOutcome
    with httpx.Client(base_url=f"{world.stack.url}/fhir/R4") as c:
        valid(
            validator,
            outcome(c.get("/DocumentReference", params={"patient": f"Patient/{world.ins}"}), 401),
        )


def test_bad_input_is_an_operation_outcome_naming_the_element(
    world: World, validator: FhirValidator
) -> None:
    with world.http("hospital") as c:
        body = outcome(
            c.post(
                "", json={"resourceType": "Bundle", "type": "batch"}, headers={"content-type": FHIR}
            ),
            422,
        )
        assert body["issue"][0]["expression"] == ["Bundle.type"]
        body = outcome(
            c.post(
                "",
                json={
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [
                        {"resource": {"resourceType": "DocumentReference", "status": "bogus"}}
                    ],
                },
                headers={"content-type": FHIR},
            ),
            422,
        )
        assert body["issue"][0]["expression"][0].startswith("Bundle.entry")
        # a search without its patient
        body = outcome(c.get("/DocumentReference", params={"status": "current"}), 422)
        assert body["issue"][0]["expression"] == ["patient"]
        valid(validator, body)
        outcome(c.get("/Condition"), 404)
        with pytest.raises(ClientOutcome):
            world.fhir("hospital").resources("DocumentReference").search(
                patient="Patient/bad"
            ).fetch()


# The constraints PDSm and IHE MHD (Comprehensive) add to base R4, which the base validator
# does not check: each named by its profile and element.
DOCUMENT_RULES: list[tuple[str, Any]] = [
    (
        "MHD Comprehensive DocumentReference.masterIdentifier 1..1 (use usual)",
        lambda d: d.get("masterIdentifier", {}).get("use") == "usual"
        and d["masterIdentifier"].get("value", "").startswith(("urn:oid:", "urn:uuid:")),
    ),
    (
        "MHD DocumentReference.identifier entryUUID (urn:uuid:, use official)",
        lambda d: any(
            i.get("use") == "official" and i["value"].startswith("urn:uuid:")
            for i in d.get("identifier", [])
        ),
    ),
    (
        "MHD DocumentReference.status current | superseded (| entered-in-error for deleted)",
        lambda d: d["status"] in ("current", "superseded", "entered-in-error"),
    ),
    ("MHD DocumentReference.docStatus 0..0", lambda d: "docStatus" not in d),
    ("MHD DocumentReference.type 1..1", lambda d: len(d.get("type", {}).get("coding", [])) >= 1),
    ("MHD DocumentReference.category 1..1", lambda d: len(d.get("category", [])) == 1),
    (
        "MHD DocumentReference.subject 1..1",
        lambda d: d.get("subject", {}).get("reference", "").startswith("Patient/"),
    ),
    ("PDSm DocumentReference.date 1..1", lambda d: "date" in d),
    (
        "PDSm DocumentReference.author 1..* (contained)",
        lambda d: len(d.get("author", [])) >= 1
        and all(a["reference"].startswith(("#", "Patient/")) for a in d["author"]),
    ),
    ("PDSm DocumentReference.custodian 1..1", lambda d: "custodian" in d),
    ("MHD DocumentReference.securityLabel 1..*", lambda d: len(d.get("securityLabel", [])) >= 1),
    ("MHD DocumentReference.content 1..1", lambda d: len(d.get("content", [])) == 1),
    (
        "MHD attachment.contentType, language, url, creation 1..1; data 0..0",
        lambda d: all(
            k in d["content"][0]["attachment"]
            for k in ("contentType", "language", "url", "creation")
        )
        and "data" not in d["content"][0]["attachment"],
    ),
    (
        "PDSm attachment.size, hash (SHA-1), title 1..1",
        lambda d: all(k in d["content"][0]["attachment"] for k in ("size", "hash", "title"))
        and len(base64.b64decode(d["content"][0]["attachment"]["hash"])) == 20,
    ),
    (
        "MHD DocumentReference.content.format 1..1",
        lambda d: "code" in d["content"][0].get("format", {}),
    ),
    (
        "MHD DocumentReference.context 1..1; PDSm context.period.start 1..1",
        lambda d: "start" in d.get("context", {}).get("period", {}),
    ),
    (
        "MHD context.facilityType and context.practiceSetting 1..1",
        lambda d: "facilityType" in d["context"] and "practiceSetting" in d["context"],
    ),
    (
        "MHD context.sourcePatientInfo 1..1 (contained)",
        lambda d: d["context"].get("sourcePatientInfo", {}).get("reference", "").startswith("#"),
    ),
    ("MHD DocumentReference.modifierExtension 0..0", lambda d: "modifierExtension" not in d),
]
LIST_RULES: list[tuple[str, Any]] = [
    (
        "MHD SubmissionSet ihe-designationType 1..1",
        lambda s: sum(e["url"].endswith("/ihe-designationType") for e in s.get("extension", []))
        == 1,
    ),
    (
        "MHD SubmissionSet ihe-sourceId 1..1",
        lambda s: sum(e["url"].endswith("/ihe-sourceId") for e in s.get("extension", [])) == 1,
    ),
    (
        "MHD SubmissionSet status current, mode working",
        lambda s: (s["status"], s["mode"]) == ("current", "working"),
    ),
    (
        "MHD SubmissionSet code submissionset",
        lambda s: s["code"]["coding"][0]["code"] == "submissionset",
    ),
    (
        "MHD Comprehensive SubmissionSet subject 1..1, date 1..1",
        lambda s: "subject" in s and "date" in s,
    ),
    ("PDSm SubmissionSet source 1..1", lambda s: "reference" in s.get("source", {})),
    (
        "MHD SubmissionSet entryUUID identifier",
        lambda s: any(i.get("use") == "official" for i in s["identifier"]),
    ),
]


def broken_rules(resource: dict[str, Any]) -> list[str]:
    rules = DOCUMENT_RULES if resource["resourceType"] == "DocumentReference" else LIST_RULES
    return [name for name, holds in rules if not holds(resource)]


def test_emitted_resources_meet_the_profiles_rules(world: World, validator: FhirValidator) -> None:
    """Every DocumentReference a search gives — submitted through FHIR, through /v1 by a
    professional, by the patient — and every SubmissionSet: base R4 by the validator, PDSm and
    MHD's own constraints here."""
    world.stack.client(world.tokens["gp"]).post(
        f"/v1/dossiers/{world.ins}/documents",
        json={
            "type_code": "60591-5",
            "title": "Synthèse",
            "mime_type": "application/pdf",
            "content_base64": base64.b64encode(b"%PDF-1.4 synthese").decode(),
        },
    ).raise_for_status()
    world.stack.client(world.tokens["patient"]).post(
        f"/v1/dossiers/{world.ins}/documents",
        json={
            "type_code": "DOC_PATIENT",
            "title": "Mon carnet",
            "mime_type": "text/plain",
            "content_base64": base64.b64encode(b"notes").decode(),
        },
    ).raise_for_status()
    world.fhir("hospital").execute(
        "",
        method="post",
        data=provide_bundle(
            world.ins,
            world.pros["gp"]["rpps"],
            [{"type": "11488-4", "title": "CR", "content": "c"}],
        ),
    )
    page = valid(validator, world.search("gp", _count="200"))
    docs = [e["resource"] for e in page["entry"]]
    kinds = {d["type"]["coding"][0]["code"] for d in docs}
    assert {"60591-5", "EXPPAT_2", "11488-4"} <= kinds
    for doc in docs:
        assert broken_rules(doc) == [], (doc["id"], broken_rules(doc))
        valid(validator, doc)
    with world.http("patient") as c:
        lists = valid(
            validator,
            c.get(
                "/List",
                params={
                    "patient": f"Patient/{world.ins}",
                    "code": "submissionset",
                    "status": "current",
                },
            ).json(),
        )
    assert lists["entry"]
    for entry in lists["entry"]:
        assert broken_rules(entry["resource"]) == []
    # a Bundle whose SubmissionSet lacks its source system is refused (MHD 1..1)
    bundle = provide_bundle(
        world.ins, world.pros["gp"]["rpps"], [{"type": "11488-4", "title": "x", "content": "x"}]
    )
    del bundle["entry"][0]["resource"]["extension"]
    with world.http("hospital") as c:
        body = outcome(c.post("", json=bundle, headers={"content-type": FHIR}), 422)
    assert body["issue"][0]["expression"] == ["Bundle.entry[0].resource.extension"]


def test_emergency_access_and_a_closed_dossier_through_fhir(stack: RunningStack) -> None:
    """Rule 9 and rule 13 through FHIR: break-glass opens the search to an outsider, masked
    documents stay masked; once the patient closes the dossier nobody but them reads it."""
    w = World(stack)
    shown, masked = publish(
        w,
        "gp",
        [
            {"type": "11488-4", "title": "Ouvert", "content": "o"},
            {"type": "11488-4", "title": "Masqué", "content": "m"},
        ],
    )
    with w.http("patient") as c:
        r = mask(c, masked)
        assert r.status_code == 200, r.text
    with w.http("outsider") as c:
        outcome(c.get("/DocumentReference", params={"patient": f"Patient/{w.ins}"}), 403)
    with w.stack.client(w.tokens["outsider"]) as c:
        r = c.post(
            f"/v1/dossiers/{w.ins}/emergency-access",
            json={"reason": "Patient inconscient aux urgences", "mode": "break_glass"},
        )
        assert r.status_code in (200, 201), r.text
    found = {e["resource"]["id"] for e in w.search("outsider", _count="200").get("entry", [])}
    assert shown in found and masked not in found
    # the trail flags the emergency read
    with w.stack.client(w.tokens["patient"]) as c:
        log = c.get(f"/v1/dossiers/{w.ins}/access-log").json()["entries"]
    assert any(
        e["mode"] == "break_glass" and e["actor"]["id"] == w.pros["outsider"]["rpps"] for e in log
    )
    # closed: the GP and the hospital are refused as /v1 refuses them, the patient still reads
    with w.stack.client(w.tokens["patient"]) as c:
        assert c.post(f"/v1/dossiers/{w.ins}/close").status_code == 200
    rest = w.stack.client(w.tokens["gp"]).get(f"/v1/dossiers/{w.ins}/documents")
    assert rest.status_code in (403, 409)
    with w.http("gp") as c:
        body = outcome(
            c.get("/DocumentReference", params={"patient": f"Patient/{w.ins}"}), rest.status_code
        )
    assert body["issue"][0]["details"]["coding"][0]["code"] == rest.json()["type"].rsplit("/", 1)[1]
    with w.http("hospital") as c:
        assert c.get(f"/Binary/{shown}", headers={"accept": "*/*"}).status_code in (403, 409)
    assert shown in {
        e["resource"]["id"] for e in w.search("patient", _count="200").get("entry", [])
    }


def test_the_readme_bundle_is_accepted_as_written(world: World, validator: FhirValidator) -> None:
    """The README's minimal ITI-65 Bundle, with a real INS, publishes one document."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    after = readme.split("A minimal `bundle.json`", 1)[1]
    text = after.split("```json\n", 1)[1].split("```", 1)[0]
    bundle = json.loads(text.replace("Patient/INS", f"Patient/{world.ins}"))
    suffix = uuid.uuid4().int % 10**9
    # a fresh uniqueId each run: the dossier refuses the same one with other content
    for entry in bundle["entry"]:
        resource = entry["resource"]
        for ident in [*resource.get("identifier", []), resource.get("masterIdentifier", {})]:
            if ident:
                ident["value"] += f".{suffix}"
    valid(validator, bundle)
    with world.http("hospital") as c:
        r = c.post("", json=bundle, headers={"content-type": FHIR})
    assert r.status_code == 200, r.text
    assert [e["response"]["status"] for e in valid(validator, r.json())["entry"]] == [
        "201 Created"
    ] * 3


def test_archive_and_delete_by_json_patch(world: World, validator: FhirValidator) -> None:
    """PDSm's metadata updates: the isArchived extension (the author or the patient), and
    entered-in-error (a logical deletion, the author only)."""
    (rid,) = publish(
        world,
        "gp",
        [{"type": "11488-4", "title": "A archiver", "content": "x"}],
    )
    archived = (
        "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
    )
    with world.http("patient") as c:
        r = c.patch(
            f"/DocumentReference/{rid}",
            json=[
                {
                    "op": "add",
                    "path": "/extension",
                    "value": [{"url": archived, "valueBoolean": True}],
                }
            ],
            headers=PATCH,
        )
        assert r.status_code == 200, r.text
        doc = valid(validator, r.json())
        assert doc["status"] == "current" and doc["extension"][0]["valueBoolean"] is True
        # the REST view agrees
        rest = world.stack.client(world.tokens["patient"]).get(
            f"/v1/dossiers/{world.ins}/documents/{rid.split('-', 1)[1]}"
        )
        assert rest.json()["status"] == "archived"
        # unarchive
        r = c.patch(
            f"/DocumentReference/{rid}",
            json=[{"op": "remove", "path": "/extension"}],
            headers=PATCH,
        )
        assert r.status_code == 200 and "extension" not in r.json()
        # the patient cannot delete what the hospital wrote
        body = outcome(
            c.patch(
                f"/DocumentReference/{rid}",
                json=[{"op": "replace", "path": "/status", "value": "entered-in-error"}],
                headers=PATCH,
            ),
            403,
        )
        valid(validator, body)
        # a patch that is no JSON Patch is refused, naming the body
        outcome(c.patch(f"/DocumentReference/{rid}", content=b"{}", headers=PATCH), 422)
        outcome(c.patch(f"/DocumentReference/{rid}", json=[], headers={"content-type": FHIR}), 415)
    # its author (the hospital's system) deletes it
    with world.http("hospital") as c:
        r = c.patch(
            f"/DocumentReference/{rid}",
            json=[{"op": "replace", "path": "/status", "value": "entered-in-error"}],
            headers=PATCH,
        )
        assert r.status_code == 204, r.text
    assert rid not in {
        e["resource"]["id"] for e in world.search("patient", _count="200").get("entry", [])
    }
    rest = world.stack.client(world.tokens["gp"]).get(
        f"/v1/dossiers/{world.ins}/documents/{rid.split('-', 1)[1]}"
    )
    assert rest.status_code in (403, 404)

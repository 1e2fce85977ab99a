"""Issue 4's story through the gateway: a patient sees who accessed their record, each party
sees what rule 10 allows, and a third party confirms the entries are in the signed log."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dmp_audit import merkle
from dmp_audit.verifier import verify_trace
from dmp_stack.testing import RunningStack, until

PROBLEM = "application/problem+json"


class Cast:
    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        admin = self.admin = stack.admin_token()
        self.patient = stack.create_patient(admin)
        self.ins = self.patient["ins"]
        self.pros = {name: stack.create_professional(admin, code) for name, code in
                     {"gp": "10", "pharmacist": "21", "stranger": "10"}.items()}  # fmt: skip
        self.tokens = {"patient": self.login(self.patient, "patient", "ins")}
        for name, pro in self.pros.items():
            self.tokens[name] = self.login(pro, "professional", "rpps")
        self.tokens["other_patient"] = self.login(stack.create_patient(admin), "patient", "ins")

    def login(self, who: dict[str, Any], kind: str, key: str) -> str:
        return str(self.stack.login(kind, who[key], who["password"], who["email"])["access_token"])

    def client(self, who: str | None) -> Any:
        return self.stack.client(self.tokens[who] if who else None)

    def log(self, who: str, **params: Any) -> Any:
        with self.client(who) as c:
            return c.get(f"/v1/dossiers/{self.ins}/access-log", params=params)


@pytest.fixture(scope="module")
def cast(stack: RunningStack) -> Cast:
    cast = Cast(stack)
    ins = cast.ins
    with cast.client("patient") as c:
        r = c.post(
            "/v1/dossiers",
            json={
                "ins": ins,
                "vitale_serial": cast.patient["vitale_serial"],
                "patient_consent": True,
            },
        )
        assert r.status_code == 201, r.text
        assert until(
            lambda: c.put(
                f"/v1/dossiers/{ins}/attending-physician", json={"rpps": cast.pros["gp"]["rpps"]}
            ).status_code
            == 200
        )
        r = c.put(
            f"/v1/dossiers/{ins}/professionals/{cast.pros['pharmacist']['rpps']}",
            json={"status": "authorized"},
        )
        assert r.status_code == 200, r.text
    with cast.client("gp") as c:
        r = c.post(
            f"/v1/dossiers/{ins}/documents",
            json={
                "type_code": "11488-4",
                "title": "Compte rendu",
                "mime_type": "text/plain",
                "content_base64": base64.b64encode(b"compte rendu").decode(),
            },
        )
        assert r.status_code == 201, r.text
        cast.document_id = r.json()["id"]
    with cast.client("pharmacist") as c:
        assert c.get(f"/v1/dossiers/{ins}/documents").status_code == 200
    with cast.client("stranger") as c:  # not in the care team: refused, and traced as such
        assert c.get(f"/v1/dossiers/{ins}/documents").status_code == 403
    return cast


def full_log(cast: Cast, who: str, page_size: int = 100) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"page_size": page_size, **({"cursor": cursor} if cursor else {})}
        r = cast.log(who, **params)
        assert r.status_code == 200, r.text
        entries += r.json()["entries"]
        cursor = r.json().get("next")
        if not cursor:
            return entries


def test_the_patient_sees_who_accessed_their_record(cast: Cast) -> None:
    pharmacist, stranger = cast.pros["pharmacist"]["rpps"], cast.pros["stranger"]["rpps"]

    def seen() -> list[dict[str, Any]]:
        entries = full_log(cast, "patient")
        return entries if {e["actor"]["id"] for e in entries} >= {pharmacist, stranger} else []

    entries = until(seen)
    assert entries, "the reads reached the trace"
    assert [e["seq"] for e in entries] == sorted((e["seq"] for e in entries), reverse=True)
    read = next(e for e in entries if e["actor"]["id"] == pharmacist)
    assert read["action"] in ("search", "read")
    assert read["actor"] == {
        "kind": "professional",
        "id": pharmacist,
        "name": "Jeanne Durand",  # resolved from the directory
        "profession": "21",
    }
    assert read["mode"] == "normal" and read["outcome"] == "success"
    refused = [e for e in entries if e["actor"]["id"] == stranger]
    assert refused and all(e["outcome"] == "denied" for e in refused)
    created = next(e for e in entries if e.get("document_id") == cast.document_id)
    assert created["action"] == "create" and created["actor"]["id"] == cast.pros["gp"]["rpps"]
    logins = [e for e in entries if e["action"] == "login"]
    assert logins and logins[-1]["actor"]["kind"] == "patient"  # rule 10: login as the patient
    for e in entries:
        assert e["leaf_hash"] == merkle.leaf_hash(e["entry"].encode()).hex()
    # a page at a time, newest first, nothing twice
    assert [e["seq"] for e in full_log(cast, "patient", page_size=2)] == [e["seq"] for e in entries]


def test_a_read_is_in_the_trail_read_right_after_it(cast: Cast) -> None:
    """The audit appender waits a little after a small batch so that reads arriving one by
    one are written together (DMP_APPEND_LINGER_SECONDS, 0.2 s): a read of the trail cuts
    that wait short. The pharmacist's first list starts a linger; the second falls in it; the
    patient, reading the trail at once, must see both."""
    pharmacist = cast.pros["pharmacist"]["rpps"]

    def newest() -> list[dict[str, Any]]:
        with cast.client("patient") as c:
            r = c.get(f"/v1/dossiers/{cast.ins}/access-log", params={"page_size": 20})
        assert r.status_code == 200, r.text
        return list(r.json()["entries"])

    for _ in range(5):
        before = newest()[0]["seq"]
        with cast.client("pharmacist") as c:
            for _ in range(2):
                assert c.get(f"/v1/dossiers/{cast.ins}/documents").status_code == 200
        reads = [e for e in newest() if e["seq"] > before and e["actor"]["id"] == pharmacist]
        assert len(reads) == 2, reads


def test_each_party_sees_what_rule_10_allows(cast: Cast) -> None:
    everything = {e["seq"] for e in full_log(cast, "patient")}
    own = {e["seq"] for e in full_log(cast, "pharmacist")}
    assert own and own < everything
    assert all(e["actor"]["id"] == cast.pros["pharmacist"]["rpps"]
               for e in full_log(cast, "pharmacist"))  # fmt: skip
    # the attending physician reads the whole trace (once audit has heard consent name them)
    assert until(lambda: {e["seq"] for e in full_log(cast, "gp")} >= everything)
    for who, status in (("other_patient", 403), (None, 401)):
        r = cast.log(who) if who else cast.stack.client().get(f"/v1/dossiers/{cast.ins}/access-log")
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == PROBLEM
    with cast.stack.client(cast.admin) as c:
        assert c.get(f"/v1/dossiers/{cast.ins}/access-log").status_code == 403


def test_legal_representatives_read_the_minors_trace_as_the_patient_would(
    stack: RunningStack, cast: Cast
) -> None:
    parent = stack.create_patient(cast.admin)
    minor = stack.create_patient(cast.admin, legal_representatives=[parent["ins"]])
    tokens = {
        name: cast.login(who, "patient", "ins")
        for name, who in (("parent", parent), ("minor", minor))
    }
    stack.open_dossier(tokens["minor"], minor)
    with stack.client(tokens["minor"]) as c:
        assert c.get(f"/v1/dossiers/{minor['ins']}/documents").status_code == 200
    with cast.client("gp") as c:  # someone else's action: the patient would see it
        c.get(f"/v1/dossiers/{minor['ins']}/documents")

    def trace(who: str) -> Any:
        token = tokens[who] if who in tokens else cast.tokens[who]
        with stack.client(token) as c:
            return c.get(f"/v1/dossiers/{minor['ins']}/access-log", params={"page_size": 100})

    # The GP's refused read is the trace's only professional entry: wait until audit holds it.
    assert until(
        lambda: "professional" in {e["actor"]["kind"] for e in trace("minor").json()["entries"]}
    )

    def parent_reads_all() -> bool:
        r = trace("parent")
        return r.status_code == 200 and {e["seq"] for e in r.json()["entries"]} == {
            e["seq"] for e in trace("minor").json()["entries"]
        }

    assert until(parent_reads_all), trace("parent").text
    kinds = {e["actor"]["kind"] for e in trace("parent").json()["entries"]}
    assert {"patient", "professional"} <= kinds, "the whole trace, not the parent's own entries"
    assert trace("other_patient").status_code == 403
    # rule 13: a closed dossier is the patient's alone, trace included
    with stack.client(tokens["minor"]) as c:
        assert c.post(f"/v1/dossiers/{minor['ins']}/close").status_code == 200
    assert until(lambda: trace("parent").status_code == 403)
    assert trace("minor").status_code == 200


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "abc"}, "cursor"),
        ({"page_size": 0}, "page_size"),
        ({"cursor": "99999"}, "cursor"),
    ],
)
def test_bad_access_log_requests_name_the_field(
    cast: Cast, params: dict[str, Any], field: str
) -> None:
    r = cast.log("patient", **params)
    assert r.status_code == 422, r.text
    assert r.json()["field"] in (field, f"query.{field}")


def test_a_malformed_ins_is_refused(cast: Cast) -> None:
    with cast.client("patient") as c:
        r = c.get("/v1/dossiers/12AB/access-log")
    assert r.status_code in (403, 422), r.text
    assert r.headers["content-type"] == PROBLEM


def check_signature(head: dict[str, Any], keys: list[dict[str, Any]]) -> bool:
    key = next((k for k in keys if k["key_id"] == head["key_id"]), None)
    if key is None:
        return False
    message = f"dmp-audit-tree-head/v1\n{head['size']}\n{head['root_hash']}\n{head['timestamp']}\n"
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"])).verify(
            base64.b64decode(head["signature"]), message.encode()
        )
    except InvalidSignature:
        return False
    return True


def test_a_third_party_confirms_the_trace_is_in_the_signed_log(cast: Cast) -> None:
    newest = max(e["seq"] for e in full_log(cast, "patient"))
    with cast.stack.client() as c:  # public: no token
        assert until(lambda: c.get("/v1/audit/checkpoint").json()["size"] > newest)
        earlier = c.get("/v1/audit/checkpoint").json()
    report = verify_trace(
        cast.stack.url,
        cast.tokens["patient"],
        cast.ins,
        check_signature=check_signature,
        previous_checkpoint=earlier,
    )
    assert report.ok, report.problems
    assert report.signature_checked
    assert report.checked >= len(
        [e for e in full_log(cast, "patient") if e["seq"] < earlier["size"]]
    )


def test_the_public_audit_routes_check_their_input(stack: RunningStack) -> None:
    with stack.client() as c:
        head = c.get("/v1/audit/checkpoint").json()
        assert set(head) >= {"size", "root_hash", "signature", "key_id"}
        r = c.get(f"/v1/audit/entries/{head['size'] + 1000}/proof")
        assert r.status_code == 422 and r.json()["field"] == "seq", r.text
        r = c.get("/v1/audit/entries/0/proof", params={"tree_size": 0})
        assert r.status_code == 422 and r.json()["field"].endswith("tree_size"), r.text
        r = c.get("/v1/audit/consistency", params={"from": 2, "to": 1})
        assert r.status_code == 422 and r.json()["field"] == "from", r.text
        r = c.get("/v1/audit/consistency", params={"from": 1})
        assert r.status_code == 422 and r.json()["field"].endswith("to"), r.text
        proof = c.get("/v1/audit/entries/0/proof").json()
        assert proof["leaf_index"] == 0 and proof["tree_size"] >= head["size"]
        keys = c.get("/v1/audit/keys").json()["keys"]
        assert keys and keys[0]["algorithm"] == "Ed25519"


class LyingGateway:
    """A proxy in front of the real gateway that alters its answers the way a compromised
    platform might: the verifier, trusting nothing but the maths, must catch each lie."""

    def __init__(self, upstream: str, lie: Callable[[str, dict[str, Any]], None]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() == "authorization"}
                answer = httpx.get(upstream + self.path, headers=headers, timeout=30)
                body = answer.json()
                lie(self.path, body)
                data = json.dumps(body).encode()
                self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _other_action(path: str, body: dict[str, Any]) -> None:
    if "/access-log" in path and body["entries"]:
        body["entries"][0]["action"] = (
            "create" if body["entries"][0]["action"] != "create" else "read"
        )


def _bent_proof(path: str, body: dict[str, Any]) -> None:
    if path.startswith("/v1/audit/entries/") and body["proof"]:
        body["proof"][0] = "00" * 32


def _other_root(path: str, body: dict[str, Any]) -> None:
    if path.startswith("/v1/audit/checkpoint"):
        body["root_hash"] = "11" * 32


def _dropped_entry(path: str, body: dict[str, Any]) -> None:
    if "/access-log" in path and len(body["entries"]) > 2:
        del body["entries"][1]  # hide one access: the dossier's chain no longer links


@pytest.mark.parametrize(
    ("lie", "caught"),
    [
        (_other_action, "other facts"),
        (_bent_proof, "not in the signed tree"),
        (_other_root, "signature"),
        (_dropped_entry, "chain is broken"),
    ],
)
def test_the_verifier_catches_a_lying_platform(
    cast: Cast, lie: Callable[[str, dict[str, Any]], None], caught: str
) -> None:
    proxy = LyingGateway(cast.stack.url, lie)
    try:
        report = verify_trace(
            proxy.url, cast.tokens["patient"], cast.ins, check_signature=check_signature
        )
    finally:
        proxy.close()
    assert not report.ok
    assert any(caught in problem for problem in report.problems), report.problems

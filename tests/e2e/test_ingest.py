"""Rule 12 through the gateway: the insurer's claims arrive in batches; each open dossier gets
its last 24 months of reimbursed care as a REMB document — without any amount of money."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from dmp_stack.infra import free_port, spawn, wait_port
from dmp_stack.testing import RunningStack, make_rpps, until

HEADER = "claim_id,ins,care_date,kind,code,label,professional_rpps,amount_paid,amount_reimbursed"
AMOUNTS = ("25.00", "17.50", "2.18", "1.42", "99.99", "66.66", "30.00", "20.40")


class Cast:
    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        self.admin = stack.admin_token()
        self.late = stack.create_patient(self.admin)  # opens their DMP after the batch
        self.early = stack.create_patient(self.admin)  # has it open before
        self.tokens = {
            name: stack.login("patient", p["ins"], p["password"], p["email"])["access_token"]
            for name, p in (("late", self.late), ("early", self.early))
        }
        self.insurer = self.client_token(["insurer"])
        self.other_insurer = self.client_token(["insurer"])
        self.rpps = make_rpps()
        self.run = uuid.uuid4().hex[:8]

    def client_token(self, roles: list[str]) -> str:
        return self.stack.client_token(self.admin, roles)

    def open(self, who: str) -> None:
        patient = self.late if who == "late" else self.early
        self.stack.open_dossier(self.tokens[who], patient)

    def batch_csv(self, label: str = "Consultation de médecine générale") -> str:
        today = date.today()
        recent, year_ago, old = ((today - timedelta(days=d)).isoformat() for d in (10, 400, 800))
        a, b, r, k = self.late["ins"], self.early["ins"], self.rpps, self.run
        return (
            "\n".join(
                [
                    HEADER,
                    f"{k}-1,{a},{recent},consultation,G,{label},{r},25.00,17.50",
                    f'{k}-2,{a},{year_ago},drug,340093,"Paracétamol 1 g, boîte",{r},2.18,1.42',
                    f"{k}-3,{a},{old},act,YYYY001,Acte ancien,,99.99,66.66",
                    f"{k}-4,{a},2026-13-01,lab,B,Date impossible,,1.00,1.00",
                    f"{k}-5,{a},only four",
                    f"{k}-6,1234,{recent},consultation,G,INS invalide,,1.00,1.00",
                    f"{k}-7,{b},{recent},imaging,ZBQK002,Radiographie du thorax,{r},30.00,20.40",
                    f"{k}-8,{a},{recent},teleport,X,Nature inconnue,,1.00,1.00",
                ]
            )
            + "\n"
        )

    def submit(self, body: str, token: str | None = None, media: str = "text/csv") -> Any:
        with self.stack.client(token or self.insurer) as c:
            return c.post(
                "/v1/ingest/batches", content=body.encode(), headers={"content-type": media}
            )

    def finished(self, batch_id: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            with self.stack.client(self.insurer) as c:
                r = c.get(f"/v1/ingest/batches/{batch_id}")
            assert r.status_code == 200, r.text
            return r.json() if r.json()["status"] != "running" else None

        result = until(done)
        assert result, "the batch finished"
        return dict(result)

    def remb(self, who: str) -> str | None:
        patient = self.late if who == "late" else self.early
        with self.stack.client(self.tokens[who]) as c:
            r = c.get(f"/v1/dossiers/{patient['ins']}/documents", params={"type_code": "REMB"})
            if r.status_code == 404:
                return None  # no DMP (yet)
            assert r.status_code == 200, r.text
            current = [d for d in r.json()["items"] if d["status"] == "approved"]
            if not current:
                return None
            r = c.get(f"/v1/dossiers/{patient['ins']}/documents/{current[0]['id']}/content")
            assert r.status_code == 200, r.text
            return str(r.content.decode())


@pytest.fixture(scope="module")
def cast(stack: RunningStack) -> Cast:
    cast = Cast(stack)
    cast.open("early")
    return cast


@pytest.fixture
def submitted(stack: RunningStack) -> Cast:
    """A cast of the test's own whose first batch went in before the late patient opened their
    DMP: the history a resubmission changes, whatever ran before."""
    cast = Cast(stack)
    cast.open("early")
    r = cast.submit(cast.batch_csv())
    assert r.status_code == 202, r.text
    assert cast.finished(r.json()["batch_id"])["accepted"] == 4
    cast.open("late")
    return cast


def test_a_batch_is_counted_row_by_row_and_builds_the_history(cast: Cast) -> None:
    r = cast.submit(cast.batch_csv())
    assert r.status_code == 202, r.text
    batch = cast.finished(r.json()["batch_id"])
    assert batch["status"] == "done"
    assert (batch["accepted"], batch["rejected"]) == (4, 4)
    assert [(x["line"], x["reason"].split(" ")[0]) for x in batch["rejects"]] == [
        (5, "care_date"),
        (6, "the"),
        (7, "ins"),
        (9, "kind"),
    ]
    assert "fields" in batch["rejects"][1]["reason"]
    # the dossier open before the batch has its history within seconds
    early = until(lambda: cast.remb("early"))
    assert early and "Radiographie du thorax" in early
    # the one opened after gets it when it opens
    assert cast.remb("late") is None
    cast.open("late")
    late = until(lambda: cast.remb("late"))
    assert late is not None
    lines = late.strip().split("\n")
    assert lines[0].startswith("date;nature")
    assert [line.split(";")[0] for line in lines[1:]] == sorted(
        line.split(";")[0] for line in lines[1:]
    ), "by date"
    assert "Paracétamol 1 g, boîte" in late and "Consultation de médecine générale" in late
    assert "Acte ancien" not in late, "older than 24 months"
    for amount in AMOUNTS:
        assert amount not in late and amount not in early


def test_no_amount_is_stored_anywhere(stack: RunningStack, cast: Cast) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(stack.infra.mongo.url)
    try:
        for name in ("ingest", "dossier"):
            db = client[name]
            for collection in db.list_collection_names():
                text = json.dumps(list(db[collection].find({})), default=str)
                assert "amount" not in text, f"{name}.{collection}"
                for amount in AMOUNTS:
                    # As a number of its own: not the digits of a timestamp ("18:20:01.421").
                    pattern = rf"(?<![\d.:]){re.escape(amount)}(?!\d)"
                    assert not re.search(pattern, text), f"{amount} in {name}.{collection}"
    finally:
        client.close()


def test_a_resubmitted_claim_updates_and_never_doubles(
    stack: RunningStack, submitted: Cast
) -> None:
    cast = submitted
    before = until(lambda: cast.remb("late"))
    r = cast.submit(cast.batch_csv(label="Consultation (corrigée)"))
    assert cast.finished(r.json()["batch_id"])["accepted"] == 4
    client: MongoClient[dict[str, Any]] = MongoClient(stack.infra.mongo.url)
    try:
        ids = [f"{cast.run}-{i}" for i in (1, 2, 3, 7)]
        assert client["ingest"]["claims"].count_documents({"claim_id": {"$in": ids}}) == 4
    finally:
        client.close()
    after = until(lambda: (text := cast.remb("late")) and "corrigée" in text and text)
    assert after and after != before
    assert after.count("\n") == before.count("\n"), "the same claims, one corrected"


def test_json_lines_are_read_too(cast: Cast) -> None:
    today = date.today().isoformat()
    rows = [
        {"claim_id": f"{cast.run}-j1", "ins": cast.early["ins"], "care_date": today,
         "kind": "lab", "code": "B", "label": "Bilan sanguin", "professional_rpps": "",
         "amount_paid": 12.5},
        "not an object",
    ]  # fmt: skip
    body = "\n".join(json.dumps(x) for x in rows) + "\nnot json\n"
    r = cast.submit(body, media="application/x-ndjson")
    assert r.status_code == 202, r.text
    batch = cast.finished(r.json()["batch_id"])
    assert (batch["accepted"], batch["rejected"]) == (1, 2)
    assert [x["line"] for x in batch["rejects"]] == [2, 3]


def test_only_insurers_submit_and_each_sees_its_own(cast: Cast) -> None:
    r = cast.submit(HEADER + "\n", token=cast.tokens["late"])
    assert r.status_code == 403, r.text
    r = cast.submit("a,b\n", media="application/pdf")
    assert r.status_code == 422 and r.json()["field"] == "content-type", r.text
    r = cast.submit("")
    assert r.status_code == 422, r.text
    r = cast.submit(HEADER + "\n")
    batch_id = r.json()["batch_id"]
    with cast.stack.client(cast.other_insurer) as c:
        assert c.get(f"/v1/ingest/batches/{batch_id}").status_code == 404
    with cast.stack.client() as c:
        assert c.get(f"/v1/ingest/batches/{batch_id}").status_code == 401
    assert cast.finished(batch_id)["accepted"] == 0


def test_dmp_ingest_sends_a_file_and_summarises(cast: Cast, tmp_path: Any) -> None:
    path = tmp_path / "claims.csv"
    path.write_text(cast.batch_csv(), encoding="utf-8")
    env = {**os.environ, "DMP_INGEST_TOKEN": cast.insurer}
    argv = [sys.executable, "-m", "dmp_cli", "ingest", str(path), "--gateway", cast.stack.url]
    done = subprocess.run(
        [*argv, "--quiet"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 1, done.stdout + done.stderr  # four rows were refused
    assert "done: 4 claims accepted, 4 refused" in done.stdout
    assert "line 5: care_date" in done.stdout
    no_token = subprocess.run(
        [sys.executable, "-m", "dmp_cli", "ingest", str(path)],
        capture_output=True, text=True, env={**os.environ, "DMP_INGEST_TOKEN": ""}, check=False,
    )  # fmt: skip
    assert no_token.returncode == 2 and "DMP_INGEST_TOKEN" in no_token.stderr


def test_a_batch_over_the_limit_is_refused_and_leaves_nothing(
    stack: RunningStack, cast: Cast, tmp_path: Any
) -> None:
    """A second gateway with a small batch limit, before the same services: the stream is cut
    at the limit, the answer is 413, and ingest keeps no part of it."""
    port = free_port()
    env = {
        **os.environ,
        **stack.state.env,
        "DMP_HTTP_PORT": str(port),
        "DMP_MAX_BATCH_BYTES": str(64 * 1024),
    }
    proc = spawn([sys.executable, "-m", "dmp_gateway"], tmp_path / "gateway.log", env=env)
    try:
        wait_port(port, 30, proc, "gateway", tmp_path / "gateway.log")
        row = f"{uuid.uuid4().hex},{cast.early['ins']},2026-01-05,consultation,C,Consult,,2,1\n"
        body = (HEADER + "\n" + row * 2000).encode()
        with MongoClient(stack.infra.mongo.url) as client:
            batches = client["ingest"]["batches"]
            before = batches.count_documents({})
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/ingest/batches",
                content=iter([body[i : i + 8192] for i in range(0, len(body), 8192)]),
                headers={"authorization": f"Bearer {cast.insurer}", "content-type": "text/csv"},
                timeout=30,
            )
            assert r.status_code == 413, r.text
            assert r.json()["type"].endswith("/payload-too-large")
            assert batches.count_documents({}) == before
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_two_insurers_own_their_claim_ids(stack: RunningStack, cast: Cast) -> None:
    """A claim is the insurer's: another insurer sending the same claim_id adds its own claim
    and overwrites nothing."""
    today = date.today().isoformat()
    claim_id = f"{cast.run}-shared"
    for token, label in ((cast.insurer, "Soin du premier assureur"),
                         (cast.other_insurer, "Soin du second assureur")):  # fmt: skip
        body = f"{HEADER}\n{claim_id},{cast.early['ins']},{today},act,A,{label},,1,1\n"
        r = cast.submit(body, token=token)
        assert r.status_code == 202, r.text
        with stack.client(token) as c:
            assert until(
                lambda c=c, r=r: c.get(f"/v1/ingest/batches/{r.json()['batch_id']}").json()[
                    "status"
                ]
                == "done"
            )
    text = until(lambda: (t := cast.remb("early")) and "second assureur" in t and t)
    assert text and "Soin du premier assureur" in text, "the first insurer's claim is kept"
    with MongoClient(stack.infra.mongo.url) as client:
        assert client["ingest"]["claims"].count_documents({"claim_id": claim_id}) == 2


def test_insurer_text_cannot_become_a_formula_in_the_document(cast: Cast) -> None:
    today = date.today().isoformat()
    evil = ['=HYPERLINK(""http://evil.example"";""ici"")', "+1+1", "-2+3", "@SUM(A1)"]
    body = (
        HEADER
        + "\n"
        + "".join(
            f'{cast.run}-f{i},{cast.early["ins"]},{today},act,=1,"{label}",,1,1\n'
            for i, label in enumerate(evil)
        )
    )
    batch = cast.finished(cast.submit(body).json()["batch_id"])
    assert (batch["accepted"], batch["rejected"]) == (4, 0), batch
    text = until(lambda: (t := cast.remb("early")) and "@SUM" in t and t)
    assert text
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for cell in r)
    labels = {r[3] for r in rows[1:]}
    assert '\'=HYPERLINK("http://evil.example";"ici")' in labels
    assert {"'+1+1", "'-2+3", "'@SUM(A1)"} <= labels
    assert "'=1" in {r[2] for r in rows[1:]}


def test_a_huge_json_line_is_refused_with_its_number_and_the_rest_goes_on(cast: Cast) -> None:
    today = date.today().isoformat()

    def row(n: int) -> str:
        return json.dumps(
            {"claim_id": f"{cast.run}-h{n}", "ins": cast.early["ins"], "care_date": today,
             "kind": "lab", "code": "B", "label": f"Bilan {n}", "professional_rpps": ""}
        )  # fmt: skip

    huge = json.dumps({"claim_id": "x", "label": "x" * 3_000_000})
    body = "\n".join([row(1), huge, row(3)]) + "\n"
    r = cast.submit(body, media="application/x-ndjson")
    assert r.status_code == 202, r.text
    batch = cast.finished(r.json()["batch_id"])
    assert (batch["status"], batch["accepted"], batch["rejected"]) == ("done", 2, 1), batch
    [reject] = batch["rejects"]
    assert reject["line"] == 2 and "longer than" in reject["reason"], reject


def test_a_huge_csv_line_is_refused_with_its_number_and_the_rest_goes_on(cast: Cast) -> None:
    """Read in bounded pieces, a line of any length is one rejected row, not ingest's memory."""
    today = date.today().isoformat()

    def row(n: int) -> str:
        return f"{cast.run}-c{n},{cast.early['ins']},{today},lab,B,Bilan {n},,1,1"

    huge = f'{cast.run}-c2,{cast.early["ins"]},{today},lab,B,"{"x" * 3_000_000}",,1,1'
    body = "\n".join([HEADER, row(1), huge, row(3)]) + "\n"
    r = cast.submit(body)
    assert r.status_code == 202, r.text
    batch = cast.finished(r.json()["batch_id"])
    assert (batch["status"], batch["accepted"], batch["rejected"]) == ("done", 2, 1), batch
    [reject] = batch["rejects"]
    assert reject["line"] == 3 and "longer than" in reject["reason"], reject


def test_a_claim_older_than_24_months_leaves_the_history_within_a_day(
    clock: RunningStack,
) -> None:
    """Rule 12 on the injected clock: no new claim arrives, yet the day a claim is 24 months
    old it leaves the REMB document."""
    stack = clock
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    ins = patient["ins"]

    def token() -> str:  # a fresh one at each moment of the moved clock
        tokens = stack.login("patient", ins, patient["password"], patient["email"])
        return str(tokens["access_token"])

    stack.open_dossier(token(), patient)
    insurer = stack.client_token(admin, ["insurer"])
    today = datetime.now(UTC).date()
    ageing = (today - timedelta(days=725)).isoformat()
    recent = (today - timedelta(days=3)).isoformat()
    body = (
        f"{HEADER}\n"
        f"{uuid.uuid4().hex},{ins},{ageing},act,A,Soin qui vieillit,,1,1\n"
        f"{uuid.uuid4().hex},{ins},{recent},consultation,G,Soin récent,,1,1\n"
    )
    with stack.client(insurer) as c:
        r = c.post(
            "/v1/ingest/batches", content=body.encode(), headers={"content-type": "text/csv"}
        )
        assert r.status_code == 202, r.text

    def remb(access: str) -> str:
        with stack.client(access) as c:
            r = c.get(f"/v1/dossiers/{ins}/documents", params={"type_code": "REMB"})
            assert r.status_code == 200, r.text
            current = [d for d in r.json()["items"] if d["status"] == "approved"]
            if not current:
                return ""
            return str(c.get(f"/v1/dossiers/{ins}/documents/{current[0]['id']}/content").text)

    access = token()
    first = until(lambda: remb(access))
    assert "Soin qui vieillit" in first and "Soin récent" in first
    stack.set_clock_offset(4 * 86_400)  # still within 24 months: nothing changes
    access = token()
    time.sleep(2)
    assert "Soin qui vieillit" in remb(access)
    stack.set_clock_offset(7 * 86_400)  # 732 days old: out
    access = token()
    later = until(lambda: (t := remb(access)) and "Soin qui vieillit" not in t and t)
    assert later and "Soin récent" in later

"""Issue 22 §2: every service serves Prometheus metrics on a port of its own — its RPCs, its
dependencies, its outbox's backlog, its consumers' lag and outcomes, the audit log's size and
newest head — with bounded labels: no patient, document or professional in any of them."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dmp_stack.credentials import SERVICES
from dmp_stack.monitoring import catalogue
from dmp_stack.testing import CareTeam, RunningStack, until


@pytest.fixture(scope="module")
def team(stack: RunningStack) -> CareTeam:
    """A care team whose GP added a document and read the dossier: every service worked."""
    team = CareTeam(stack)
    stack.add_document(team.tokens["gp"], team.ins, "11488-4", "Compte rendu de consultation")
    with team.client("gp") as c:
        assert c.get(f"/v1/dossiers/{team.ins}/documents").status_code == 200
    return team


def test_every_service_serves_its_metrics_on_its_own_port(stack: RunningStack) -> None:
    for service in SERVICES:
        port = stack.stack.ports.metrics[service]
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0)
        assert r.status_code == 200, service
        assert r.headers["content-type"].startswith("text/plain"), service
        # the process's own figures, and its dependencies as it sees them
        assert stack.metric(service, "process_cpu_seconds_total") is not None, service
        up = until(
            lambda s=service: stack.metric(s, "dmp_dependency_up", dependency="mongodb") == 1
            and stack.metric(s, "dmp_dependency_up", dependency="nats") == 1
        )
        assert up, f"{service} does not say its database and NATS are up"


def test_each_rpc_is_counted_with_its_status_and_timed(stack: RunningStack, team: CareTeam) -> None:
    listed = "/dmp.dossier.v1.DossierService/ListDocuments"
    before = stack.metric("dossier", "dmp_rpc_requests_total", method=listed, code="OK") or 0
    with team.client("gp") as c:
        assert c.get(f"/v1/dossiers/{team.ins}/documents").status_code == 200
    with team.client("outsider") as c:  # no relation to the patient: refused by dossier
        assert c.get(f"/v1/dossiers/{team.ins}/documents").status_code == 403
    after = stack.metric("dossier", "dmp_rpc_requests_total", method=listed, code="OK")
    assert after == before + 1
    denied = stack.metric(
        "dossier", "dmp_rpc_requests_total", method=listed, code="PERMISSION_DENIED"
    )
    assert denied and denied >= 1
    timed = stack.metric("dossier", "dmp_rpc_request_duration_seconds_count", method=listed)
    assert timed and timed >= after + denied


def test_events_handled_and_the_audit_log_are_measured(stack: RunningStack, team: CareTeam) -> None:
    durable = "notify-document-added"
    ok = stack.metric("notify", "dmp_events_handled_total", durable=durable, outcome="ok") or 0
    stack.add_document(team.tokens["gp"], team.ins, "11488-4", "Deuxième compte rendu")
    assert until(
        lambda: (
            stack.metric("notify", "dmp_events_handled_total", durable=durable, outcome="ok") or 0
        )
        > ok
    ), "notify's consumer did not count the event it handled"
    # its lag, asked of JetStream every few seconds
    assert until(
        lambda: stack.metric(
            "notify", "dmp_jetstream_consumer_pending_messages", stream="DOSSIER", durable=durable
        )
        == 0,
        timeout=30,
    )

    # the audit log: its size is the newest signed head's, signed just now, by the sequencer
    def audit_caught_up() -> bool:
        with stack.client() as c:
            head = c.get("/v1/audit/checkpoint").json()
        return stack.metric("audit", "dmp_audit_log_entries") == head["size"]

    assert until(audit_caught_up, timeout=30)
    signed = stack.metric("audit", "dmp_audit_last_signed_head_timestamp_seconds")
    assert signed is not None and time.time() - 600 < signed <= time.time() + 1
    assert stack.metric("audit", "dmp_audit_sequencer") == 1


def test_the_outbox_backlog_rises_while_nats_is_paused_and_drains_after(
    stack: RunningStack,
) -> None:
    infra = stack.infra
    admin = stack.admin_token()
    patient = stack.create_patient(admin)

    def backlog() -> float:
        return stack.metric("identity", "dmp_outbox_pending_documents") or 0

    infra.pause(infra.nats)
    try:
        # logging in needs no NATS: its events wait in identity's outbox
        stack.login("patient", patient["ins"], patient["password"], patient["email"])
        assert until(lambda: backlog() >= 1, timeout=30), "the backlog did not show"
        assert until(lambda: stack.metric("identity", "dmp_dependency_up", dependency="nats") == 0)
        oldest = stack.metric("identity", "dmp_outbox_oldest_pending_age_seconds")
        assert oldest is not None and oldest > 0
    finally:
        infra.resume(infra.nats)
    assert until(lambda: backlog() == 0, timeout=60), "the backlog did not drain"
    assert stack.metric("identity", "dmp_outbox_oldest_pending_age_seconds") == 0
    assert until(lambda: stack.metric("identity", "dmp_dependency_up", dependency="nats") == 1)
    published = stack.metric("identity", "dmp_outbox_published_events_total")
    assert published and published >= 2  # the login's two events at least


def test_no_metric_names_a_patient_a_professional_or_a_document(
    stack: RunningStack, team: CareTeam
) -> None:
    with team.client("gp") as c:
        documents = c.get(f"/v1/dossiers/{team.ins}/documents").json()["items"]
    secrets = {team.ins, team.patient["email"], team.patient["vitale_serial"]}
    secrets |= {pro["rpps"] for pro in team.pros.values()}
    secrets |= {pro["email"] for pro in team.pros.values()}
    secrets |= {d["id"] for d in documents}
    secrets |= set(team.tokens.values())
    for service in (*SERVICES, "gateway"):
        port = stack.stack.ports.metrics.get(service)
        url = f"http://127.0.0.1:{port}/metrics" if port else f"{stack.url}/metrics"
        text = httpx.get(url, timeout=10.0).text
        leaked = sorted(s for s in secrets if s in text)
        assert not leaked, f"{service}'s metrics name {len(leaked)} identifiers"


def test_every_metric_of_the_catalogue_is_served_and_every_served_one_is_catalogued(
    stack: RunningStack, team: CareTeam
) -> None:
    """docs/observability.md's catalogue (which the alerts and dashboards are checked against)
    is what the processes serve: each metric there is served by some process, with its type,
    and each dmp_ metric served is there."""
    documented = catalogue((Path(__file__).parents[2] / "docs" / "observability.md").read_text())
    served: dict[str, str] = {}
    for service in (*SERVICES, "gateway"):
        port = stack.stack.ports.metrics.get(service)
        url = f"http://127.0.0.1:{port}/metrics" if port else f"{stack.url}/metrics"
        for family in text_string_to_metric_families(httpx.get(url, timeout=10.0).text):
            if family.name.startswith("dmp_"):
                name = family.name + ("_total" if family.type == "counter" else "")
                served[name] = family.type
    assert documented == served

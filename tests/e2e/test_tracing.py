"""Issue 22 §1 and §5: traces. A stack of its own whose every process appends its spans to one
file (DMP_TRACE_FILE): a consult is one trace from the gateway through dossier and consent to
the audit log's consumer, parented span by span; a document's trace crosses NATS to the audit
log and to notify; and no span holds a patient's identifier, name, e-mail, document content or
a token."""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from dmp_kit.tracing import SAFE_ATTRIBUTES
from dmp_stack.testing import IDENTIFIERS, CareTeam, RunningStack, own_servers, running_stack, until
from dmp_stack.traces import Span, read_spans, roots


class Traced:
    def __init__(self, stack: RunningStack, trace_file: Path) -> None:
        self.stack = stack
        self.file = trace_file

    def spans(self) -> list[Span]:
        return read_spans(self.file)

    def trace(self, trace_id: str, complete: Callable[[list[Span]], bool]) -> list[Span]:
        """The trace's spans, once `complete` says they are all exported (each process exports
        every second)."""
        found: list[Span] = []

        def ready() -> bool:
            found[:] = [s for s in self.spans() if s["trace_id"] == trace_id]
            return complete(found)

        until(ready, timeout=30)
        return found


@pytest.fixture(scope="module")
def traced() -> Iterator[Traced]:
    # Servers of its own: every process of this stack traces, the session's do not.
    with own_servers("dmp-tracing-") as infra:
        trace_file = infra.root / "traces.jsonl"
        try:
            with running_stack(
                infra,
                keep_logs=Path(".dmp") / "test-tracing-logs",
                env={"DMP_TRACE_FILE": str(trace_file), "DMP_TRACE_SAMPLE_RATIO": "1.0"},
            ) as stack:
                yield Traced(stack, trace_file)
        finally:
            # Kept for whoever reads a failure: `dmp-stack traces --file …` prints them.
            kept = Path(".dmp") / "test-traces.jsonl"
            kept.parent.mkdir(exist_ok=True)
            if trace_file.exists():
                shutil.copyfile(trace_file, kept)


@pytest.fixture(scope="module")
def team(traced: Traced) -> CareTeam:
    return CareTeam(traced.stack)


@pytest.fixture
def empty_team(traced: Traced) -> CareTeam:
    """A team of the test's own whose dossier holds no document yet: the listing of an empty
    dossier asks consent's Decide (with documents, FilterDocuments), whatever ran before."""
    return CareTeam(traced.stack)


def new_trace_id() -> str:
    """A random trace id that no log pseudonymises: the logs replace any INS-shaped run of
    characters (dmp_kit.logging), and one in about 1,400 random ids begins with fifteen
    decimal digits. Starting with a letter, none does."""
    return secrets.choice("abcdef") + secrets.token_hex(16)[1:]


def traceparent() -> tuple[str, str]:
    """A trace id of the test's, and the header that makes the gateway continue it."""
    trace_id = new_trace_id()
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def by(spans: list[Span], service: str, name: str | None = None) -> list[Span]:
    return [s for s in spans if s["service"] == service and (name is None or s["name"] == name)]


def holding(*wanted: tuple[str, str]) -> Callable[[list[Span]], bool]:
    """A trace is exported once it holds these (service, name) spans and is one tree: each
    process exports on its own schedule, a child's span may come before its parent's."""

    def complete(spans: list[Span]) -> bool:
        return all(by(spans, *w) for w in wanted) and len(roots(spans)) == 1

    return complete


def assert_one_tree(spans: list[Span], outside_parent: str) -> None:
    """One root (the gateway's span, child of the caller's), every other span's parent in the
    trace."""
    top = roots(spans)
    assert len(top) == 1, [(s["service"], s["name"], s["parent_span_id"]) for s in top]
    assert top[0]["service"] == "gateway"
    assert top[0]["parent_span_id"] == outside_parent
    assert len({s["span_id"] for s in spans}) == len(spans)


def submit(client: httpx.Client, team: CareTeam, traceparent: str, title: str) -> None:
    """A short report added to the team's dossier with this traceparent."""
    r = client.post(
        f"/v1/dossiers/{team.ins}/documents",
        headers={"traceparent": traceparent},
        json={
            "type_code": "11488-4",
            "title": title,
            "mime_type": "text/plain",
            "content_base64": "Q29tcHRlIHJlbmR1",
        },
    )
    assert r.status_code == 201, r.text


def parent_of(spans: list[Span], span: Span) -> Span:
    return next(s for s in spans if s["span_id"] == span["parent_span_id"])


def test_a_consult_is_one_trace_through_dossier_consent_and_the_audit_log(
    traced: Traced, empty_team: CareTeam
) -> None:
    team = empty_team
    trace_id, header = traceparent()
    with team.client("gp") as c:
        r = c.get(f"/v1/dossiers/{team.ins}/documents", headers={"traceparent": header})
    assert r.status_code == 200, r.text
    route = "GET /v1/dossiers/{ins}/documents"
    spans = traced.trace(
        trace_id,
        holding(
            ("gateway", route),
            ("dossier", "/dmp.dossier.v1.DossierService/ListDocuments"),
            ("consent", "/dmp.consent.v1.ConsentService/Decide"),
            ("dossier", "publish audit.dossier"),
            ("audit", "process audit.dossier"),
        ),
    )
    services = {s["service"] for s in spans}
    assert {"gateway", "dossier", "consent", "audit"} <= services, sorted(services)
    assert_one_tree(spans, header.split("-")[2])

    gateway = by(spans, "gateway", route)[0]
    assert gateway["kind"] == "SERVER"
    assert gateway["attributes"]["http.route"] == "/v1/dossiers/{ins}/documents"
    # The gateway's call to the dossier service, served as the child of the gateway's span;
    # the dossier's to consent likewise, one level down.
    served = by(spans, "dossier", "/dmp.dossier.v1.DossierService/ListDocuments")
    assert served and served[0]["kind"] == "SERVER"
    assert parent_of(spans, served[0])["span_id"] == gateway["span_id"]
    decided = by(spans, "consent", "/dmp.consent.v1.ConsentService/Decide")
    assert decided and decided[0]["kind"] == "SERVER"
    assert parent_of(spans, decided[0])["span_id"] == served[0]["span_id"]
    # The dossier's database calls are its children, named by command and collection only.
    reads = [s for s in by(spans, "dossier") if s["attributes"].get("db.system") == "mongodb"]
    assert reads and all(parent_of(spans, s)["service"] == "dossier" for s in reads), reads
    # The read's audit record: published by the dossier's outbox relay in this trace, and
    # appended by the audit log's consumer as the child of that publish.
    appended = by(spans, "audit", "process audit.dossier")[0]
    assert appended["kind"] == "CONSUMER"
    published = parent_of(spans, appended)
    assert (published["service"], published["name"], published["kind"]) == (
        "dossier",
        "publish audit.dossier",
        "PRODUCER",
    )


def test_the_logs_carry_the_trace_id_of_the_spans(traced: Traced, team: CareTeam) -> None:
    """The kit's own trace (logs' trace_id) is the OpenTelemetry trace when tracing is on."""
    trace_id, header = traceparent()
    with team.client("gp") as c:
        r = c.get(f"/v1/dossiers/{team.ins}/documents", headers={"traceparent": header})
    assert r.status_code == 200
    logs = traced.stack.stack.state_dir / "logs" / "dossier.log"
    assert until(lambda: trace_id in logs.read_text(errors="replace"), timeout=10)


def test_a_documents_trace_reaches_the_audit_log_and_notify_across_nats(
    traced: Traced, team: CareTeam
) -> None:
    trace_id, header = traceparent()
    with team.client("gp") as c:
        submit(c, team, header, "Compte rendu de consultation")

    spans = traced.trace(
        trace_id,
        holding(
            ("gateway", "POST /v1/dossiers/{ins}/documents"),
            ("dossier", "/dmp.dossier.v1.DossierService/AddDocument"),
            ("dossier", "publish audit.dossier"),
            ("dossier", "publish document.added"),
            ("audit", "process audit.dossier"),
            ("notify", "process document.added"),
        ),
    )
    assert_one_tree(spans, header.split("-")[2])
    added = by(spans, "dossier", "/dmp.dossier.v1.DossierService/AddDocument")
    assert added, sorted({(s["service"], s["name"]) for s in spans})
    for service, subject in (("notify", "document.added"), ("audit", "audit.dossier")):
        consumed = by(spans, service, f"process {subject}")[0]
        assert consumed["kind"] == "CONSUMER"
        assert consumed["attributes"]["messaging.destination.name"] == subject
        published = parent_of(spans, consumed)
        assert (published["service"], published["name"]) == ("dossier", f"publish {subject}")
        # The publish (by the relay, after the answer) is a child of the request's span that
        # stored the event.
        assert parent_of(spans, published)["span_id"] == added[0]["span_id"]
    # notify's effect (its database writes) is inside its consumer span.
    notified = by(spans, "notify", "process document.added")[0]
    assert any(s["parent_span_id"] == notified["span_id"] for s in by(spans, "notify")), (
        "notify's effect is not in the trace"
    )


def test_no_span_holds_a_patients_identifier_content_or_a_token(
    traced: Traced, team: CareTeam
) -> None:
    """After the tests above and a workload that puts identifiers in paths, queries, bodies
    and database filters, every exported span is scanned (as the logs are)."""
    stack = traced.stack
    secret_words = "Gastrite chronique documentee"
    document = stack.add_document(
        team.tokens["gp"], team.ins, "11488-4", secret_words, description=secret_words
    )
    with team.client("patient") as c:
        assert c.get(f"/v1/dossiers/{team.ins}").status_code == 200
        assert c.get(f"/v1/dossiers/{team.ins}/documents/{document['id']}").status_code == 200
        assert c.get(f"/v1/dossiers/{team.ins}/access-log").status_code == 200
        # A query string with an identifier, and a path that matches no route.
        c.get(f"/v1/dossiers/{team.ins}/documents", params={"author": team.pros["gp"]["rpps"]})
        c.get(f"/v1/nowhere/{team.ins}")
    with team.client("outsider") as c:
        assert c.get(f"/v1/dossiers/{team.ins}/documents").status_code in (403, 404)

    # Everything above exported (each process exports every second, its spans in order): the
    # marker's spans from the gateway and from the audit log's consumer, the last to come.
    # Both, since the requests above take well under the gateway's second between exports.
    marker_id, header = traceparent()
    with team.client("gp") as c:
        c.get(f"/v1/dossiers/{team.ins}/documents", headers={"traceparent": header})
    marker = traced.trace(
        marker_id, lambda spans: bool(by(spans, "audit")) and bool(by(spans, "gateway"))
    )
    assert by(marker, "audit") and by(marker, "gateway"), marker

    spans = traced.spans()
    assert len(spans) > 100
    forbidden = {
        team.ins,
        team.patient["email"],
        team.patient["given_name"],
        team.patient["family_name"],
        secret_words,
        *(pro["rpps"] for pro in team.pros.values()),
        *(pro["email"] for pro in team.pros.values()),
        *(token for token in team.tokens.values()),
        "Q29tcHRlIHJlbmR1",  # the document of the test above, in base64
    }
    leaks: list[str] = []
    for span in spans:
        text = repr(span)
        found = [word for word in forbidden if word in text] + IDENTIFIERS.findall(text)
        if found:
            leaks.append(f"{found}: {text[:300]}")
    assert not leaks, "spans hold identifiers, content or tokens:\n" + "\n".join(leaks[:10])
    # The gateway's spans are named by route templates, never by paths.
    names = {s["name"] for s in by(spans, "gateway") if s["kind"] == "SERVER"}
    assert "GET /v1/dossiers/{ins}/documents" in names
    assert not [n for n in names if re.search(r"\d{6}", n)], names


def test_nothing_outside_the_allowed_attributes_leaves_a_process(
    traced: Traced, team: CareTeam
) -> None:
    # Traffic of its own through every kind of span (HTTP, gRPC, database, bus), followed to
    # the audit log's consumer: whatever ran before, there is something to look at.
    traced.stack.add_document(team.tokens["gp"], team.ins, "11488-4", "Compte rendu")
    marker_id, header = traceparent()
    with team.client("gp") as c:
        c.get(f"/v1/dossiers/{team.ins}/documents", headers={"traceparent": header})
    traced.trace(marker_id, lambda spans: bool(by(spans, "audit")))
    keys: set[str] = set()
    for span in traced.spans():
        keys |= set(span["attributes"])
    assert keys <= SAFE_ATTRIBUTES
    # and the ones an operator follows a request by are there
    assert {"http.route", "rpc.method", "db.system", "messaging.destination.name"} <= keys


def test_a_trace_not_kept_costs_no_span_anywhere_and_keeps_its_ids(
    traced: Traced, team: CareTeam
) -> None:
    """A caller's traceparent that says "not kept" (flags 00) is followed by every process: no
    span from the gateway, the services it calls, the relay or the consumers (each goes around
    its instrumentation), while the trace id still reaches the logs of every hop."""
    skipped = new_trace_id()
    with team.client("patient") as c:
        # consent on the path for certain: the care team is consent's to list (a submission's
        # decision may be one dossier reuses, docs/scaling.md)
        r = c.get(
            f"/v1/dossiers/{team.ins}/professionals",
            headers={"traceparent": f"00-{skipped}-{secrets.token_hex(8)}-00"},
        )
        assert r.status_code == 200, r.text
    with team.client("gp") as c:
        submit(c, team, f"00-{skipped}-{secrets.token_hex(8)}-00", "Compte rendu non tracé")
        # A kept trace after it, followed to its end: by then the first one's events have been
        # published and consumed too, and every process has exported what it had.
        kept, header = traceparent()
        r = c.get(f"/v1/dossiers/{team.ins}/documents", headers={"traceparent": header})
        assert r.status_code == 200, r.text
    traced.trace(kept, holding(("audit", "process audit.dossier")))
    logs = traced.stack.stack.state_dir / "logs"
    for service in ("dossier", "consent"):
        log = logs / f"{service}.log"
        assert until(lambda log=log: skipped in log.read_text(errors="replace"), timeout=10), (
            service
        )
    assert until(lambda: len(traced.spans()) > 0, timeout=5)
    assert [s for s in traced.spans() if s["trace_id"] == skipped] == []

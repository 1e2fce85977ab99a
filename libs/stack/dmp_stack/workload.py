"""A write load through the gateway, recording every acknowledged (2xx) operation, and the
checks that what was acknowledged survived: for the fault-injection tests and the soak.

Three kinds of write, from several threads:
- open: a new insured person, who opens their DMP;
- submit: a patient's attending physician adds a document (a unique title per attempt);
- consent: a patient authorises or blocks a professional.
An operation counts only when the gateway answered 2xx. One that failed or timed out may or may
not have happened; the checks allow for that and nothing more. Every account renews its tokens
as a real client does (refresh, or a new login when the refresh is refused), so a load may
outlive the 15-minute access tokens.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import random
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
from pymongo import MongoClient

from dmp_kit.bus import STREAMS
from dmp_kit.outbox import PENDING
from dmp_stack.testing import ISSUER, RunningStack, until

DOCUMENT_SUBJECT = "Un nouveau document dans votre DMP"


class Session:
    """An account's tokens, renewed two minutes before the access token expires: by the
    refresh route, or by logging in again when the refresh is refused (it may have been used
    by a request whose answer was lost in a fault). A renewal that fails leaves the current
    token in use while it lasts, and is tried again at the next call."""

    def __init__(self, base_url: str, login: Callable[[], dict[str, Any]]) -> None:
        self.base_url = base_url
        self.login = login
        self.lock = threading.Lock()
        self.access = self.refresh = ""
        self.renew_at = self.expires_at = 0.0
        self._take(login())

    def _take(self, tokens: dict[str, Any]) -> None:
        now = time.monotonic()
        lifetime = float(tokens["expires_in"])
        self.access, self.refresh = str(tokens["access_token"]), str(tokens["refresh_token"])
        self.expires_at = now + lifetime
        self.renew_at = now + max(lifetime / 2, lifetime - 120)

    def token(self) -> str:
        with self.lock:
            if time.monotonic() >= self.renew_at:
                try:
                    self._take(self._renewed())
                except (AssertionError, KeyError, ValueError, httpx.HTTPError):
                    if time.monotonic() >= self.expires_at:
                        raise
            return self.access

    def _renewed(self) -> dict[str, Any]:
        r = httpx.post(
            f"{self.base_url}/v1/auth/refresh", json={"refresh_token": self.refresh}, timeout=5.0
        )
        if r.status_code == 200:
            tokens: dict[str, Any] = r.json()
            return tokens
        return self.login()


@dataclass
class Person:
    ins: str
    session: Session
    email: str
    gp_rpps: str
    gp: Session


@dataclass
class Tally:
    """What was attempted and what was acknowledged."""

    attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    acknowledged: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    # answers that mean "not yet" (consent has not yet heard of a new DMP), retried
    opened: list[str] = field(default_factory=list)
    documents: dict[str, tuple[str, str]] = field(default_factory=dict)  # title → (ins, id)
    # (ins, rpps) → the statuses attempted, in order, each with whether it was acknowledged
    consents: dict[tuple[str, str], list[tuple[str, bool]]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def mark(self) -> tuple[collections.Counter[str], collections.Counter[str]]:
        """Where the counts are now, for `since`."""
        return collections.Counter(self.acknowledged), collections.Counter(self.failures)

    def since(
        self, mark: tuple[collections.Counter[str], collections.Counter[str]], cycles: int
    ) -> dict[str, Any]:
        """A fault's figures: what was acknowledged, by kind, and what failed since `mark`."""
        acknowledged = collections.Counter(self.acknowledged)
        acknowledged.subtract(mark[0])
        failed = collections.Counter(self.failures)
        failed.subtract(mark[1])
        return {
            "cycles": cycles,
            "acknowledged": sum(acknowledged.values()),
            "by_kind": dict(acknowledged),
            # requests refused or cut by the fault: may or may not have happened, never counted
            "failed": {kind: n for kind, n in failed.items() if n},
        }


class Workload:
    """`gateways`: the URLs the operations go to, in turn, each thread going round them (the
    scaled stack's gateways, as a load balancer spreads requests); the stack's gateway when
    not given."""

    def __init__(
        self,
        stack: RunningStack,
        patients: int = 6,
        professionals: int = 4,
        gateways: list[str] | None = None,
    ) -> None:
        self.stack = stack
        self.gateways = gateways or [stack.url]
        self.admin = Session(
            stack.url,
            lambda: stack.login("admin", "admin", stack.admin_password, "admin@dmp.localhost"),
        )
        self.tally = Tally()
        self.lock = threading.Lock()
        self.holding = threading.Event()  # set: each thread waits between two operations
        self.local = threading.local()
        self.gps = [self._professional() for _ in range(2)]
        self.others = [self._professional()[0] for _ in range(professionals)]
        self.people: list[Person] = []
        for _ in range(patients):
            person = self._open_new()
            assert person is not None, f"the load cannot start: {dict(self.tally.failures)}"
            self.people.append(person)

    # ------------------------------------------------------------------ setup

    def _professional(self) -> tuple[str, Session]:
        pro = self.stack.create_professional(self.admin.token())
        session = Session(
            self.stack.url,
            lambda: self.stack.login("professional", pro["rpps"], pro["password"], pro["email"]),
        )
        return str(pro["rpps"]), session

    def _open_new(self) -> Person | None:
        """A new insured person opens their DMP and names a GP (one acknowledged `open`)."""
        try:  # registering and logging in are the stage, not the operation measured
            patient = self.stack.create_patient(self.admin.token())
            session = Session(
                self.stack.url,
                lambda: self.stack.login(
                    "patient", patient["ins"], patient["password"], patient["email"]
                ),
            )
        except (AssertionError, KeyError, httpx.HTTPError) as exc:
            with self.lock:
                self.tally.failures[f"register: {type(exc).__name__}"] += 1
            return None
        body = {
            "ins": patient["ins"],
            "vitale_serial": patient["vitale_serial"],
            "patient_consent": True,
        }
        if not self._call("open", "POST", "/v1/dossiers", session, json=body):
            return None
        with self.lock:
            self.tally.opened.append(patient["ins"])
        gp_rpps, gp = random.choice(self.gps)
        # At once: consent asks dossier about a DMP whose opening event it has not yet seen.
        named = self._call(
            "gp",
            "PUT",
            f"/v1/dossiers/{patient['ins']}/attending-physician",
            session,
            json={"rpps": gp_rpps},
        )
        if named is None:
            return None
        return Person(patient["ins"], session, patient["email"], gp_rpps, gp)

    # ------------------------------------------------------------------ operations

    def _client(self) -> httpx.Client:
        """One keep-alive connection per thread and gateway, as a real client keeps; the next
        gateway in turn at each call."""
        clients: list[httpx.Client] | None = getattr(self.local, "clients", None)
        if clients is None:
            clients = self.local.clients = [
                httpx.Client(base_url=url, timeout=5.0) for url in self.gateways
            ]
            self.local.turn = 0
        turn: int = self.local.turn + 1
        self.local.turn = turn
        return clients[turn % len(clients)]

    def _call(
        self, kind: str, method: str, path: str, session: Session, **kwargs: Any
    ) -> dict[str, Any] | None:
        """One request; None unless 2xx (a failure, counted by kind, status and type)."""
        with self.lock:
            self.tally.attempts[kind] += 1
        try:
            token = session.token()
        except (AssertionError, KeyError, ValueError, httpx.HTTPError) as exc:
            with self.lock:
                self.tally.failures[f"{kind}: token renewal {type(exc).__name__}"] += 1
            return None
        started = time.perf_counter()
        try:
            r = self._client().request(
                method, path, headers={"authorization": f"Bearer {token}"}, **kwargs
            )
        except httpx.HTTPError as exc:
            with self.lock:
                self.tally.failures[f"{kind}: {type(exc).__name__}"] += 1
            return None
        with self.lock:
            self.tally.latencies.append(time.perf_counter() - started)
            if r.is_success:
                self.tally.acknowledged[kind] += 1
            else:
                slug = r.json().get("type", "").rsplit("/", 1)[-1] if r.content else ""
                self.tally.failures[f"{kind}: {r.status_code} {slug}".strip()] += 1
        if not r.is_success:
            return None
        return r.json() if r.content else {}

    def submit(self, person: Person) -> None:
        title = f"Compte rendu {secrets.token_hex(6)}"
        body = {
            "type_code": "11488-4",
            "title": title,
            "mime_type": "text/plain",
            "content_base64": base64.b64encode(title.encode()).decode(),
        }
        answer = self._call(
            "submit", "POST", f"/v1/dossiers/{person.ins}/documents", person.gp, json=body
        )
        if answer is not None:
            with self.lock:
                self.tally.documents[title] = (person.ins, str(answer["id"]))

    def consent(self, person: Person) -> None:
        rpps = random.choice(self.others)
        status = random.choice(("authorized", "blocked"))
        key = (person.ins, rpps)
        # One thread at a time per patient (see run): the order of attempts is the order sent.
        answer = self._call(
            "consent",
            "PUT",
            f"/v1/dossiers/{person.ins}/professionals/{rpps}",
            person.session,
            json={"status": status},
        )
        with self.lock:
            self.tally.consents.setdefault(key, []).append((status, answer is not None))

    def open(self) -> None:
        person = self._open_new()
        if person is not None:
            with self.lock:
                self.people.append(person)

    @contextmanager
    def held(self) -> Iterator[None]:
        """The load paused while the block runs (each thread after its operation under way)."""
        self.holding.set()
        try:
            yield
        finally:
            self.holding.clear()

    def run(self, stop: threading.Event, threads: int = 3) -> list[threading.Thread]:
        """Starts the load; it runs until `stop` is set (join the threads it returns)."""

        def worker(n: int) -> None:
            rng = random.Random(n)
            while not stop.is_set():
                if self.holding.is_set():
                    time.sleep(0.05)
                    continue
                with self.lock:
                    # each thread has its own patients, so one patient's writes are in order
                    mine = [p for i, p in enumerate(self.people) if i % threads == n]
                roll = rng.random()
                if roll < 0.1:
                    self.open()
                elif mine and roll < 0.7:
                    self.submit(rng.choice(mine))
                elif mine:
                    self.consent(rng.choice(mine))

        started = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
        for thread in started:
            thread.start()
        return started


def run_for(workload: Workload, seconds: float, during: Callable[[], None] | None = None) -> None:
    """Load for `seconds`; `during`, if given, is done half-way (the fault)."""
    stop = threading.Event()
    threads = workload.run(stop)
    try:
        time.sleep(seconds / 2)
        if during is not None:
            during()
        time.sleep(seconds / 2)
    finally:
        # A fault that raised stops the load too: the next test's check must not race it.
        stop.set()
        for thread in threads:
            thread.join(30)


# --------------------------------------------------------------------------- the checks


@dataclass
class Findings:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.other)


def check(workload: Workload, timeout: float = 90.0) -> Findings:
    """After the faults: what was acknowledged is there, once; every event was consumed; the
    audit log verifies; each document was notified once."""
    stack, tally = workload.stack, workload.tally
    found = Findings()
    drained = until(lambda: outbox_pending(stack) == 0 and consumers_pending(stack) == 0, timeout)
    if not drained:
        found.other.append(
            f"not drained: outbox {outbox_pending(stack)}, consumers {pending_by_consumer(stack)}"
        )
    people = {p.ins: p for p in workload.people}
    # The patients' own tokens may have expired by now (a long load, a slow check): the check
    # reads as each patient with a token of its own.
    tokens = {ins: reader_token(stack, ins) for ins in {*tally.opened, *people}}
    with httpx.Client(base_url=stack.url, timeout=30.0) as c:
        for ins in tally.opened:
            if ins not in people:
                continue  # opened, then naming the GP failed: still must be open (below)
            r = c.get(f"/v1/dossiers/{ins}", headers={"authorization": f"Bearer {tokens[ins]}"})
            if r.status_code != 200 or r.json()["status"] != "open":
                found.lost.append(f"open {ins}: {r.status_code}")
        titles: collections.Counter[str] = collections.Counter()
        for person in workload.people:
            items = all_documents(c, person.ins, tokens[person.ins])
            if items is None:
                found.other.append("a patient's documents could not be listed")
                continue
            mine = [d["title"] for d in items if d["title"].startswith("Compte rendu ")]
            titles.update(mine)
            # Distinct messages: an e-mail sent again for the same delivery (notify killed
            # between its send and its record) carries the same Message-ID.
            mails = len(
                {m["Message-ID"] for m in stack.mailbox.messages_to(person.email, DOCUMENT_SUBJECT)}
            )
            ours = len(mine)
            if mails != ours:
                (found.duplicated if mails > ours else found.lost).append(
                    f"document e-mails: {mails} for {ours} documents"
                )
        for title, (_, document_id) in tally.documents.items():
            if titles[title] == 0:
                found.lost.append(f"document {document_id}")
        found.duplicated += [f"document {t!r} ×{n}" for t, n in titles.items() if n > 1]
        for (ins, rpps), attempts in tally.consents.items():
            r = c.get(
                f"/v1/dossiers/{ins}/professionals",
                headers={"authorization": f"Bearer {tokens[ins]}"},
            )
            if r.status_code != 200:
                found.other.append(f"care team of a patient: {r.status_code}")
                continue
            team = r.json()
            status = {m["rpps"]: m["status"] for m in team["authorized"] + team["blocked"]}.get(
                rpps
            )
            possible = consent_outcomes(attempts)
            if possible is not None and status not in possible:
                found.lost.append(f"consent {rpps}: {status}, expected one of {sorted(possible)}")
    verified = verify_audit(stack)
    if verified.returncode != 0:
        found.other.append(f"dmp audit verify: {verified.stdout[-500:]}{verified.stderr[-500:]}")
    return found


def reader_token(stack: RunningStack, ins: str) -> str:
    """A fresh access token of the patient's, signed with identity's key."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "dmp",
        "sub": f"check:{ins}",
        "kind": "patient",
        "ins": ins,
        "roles": [],
        "iat": now,
        "exp": now + 3600,
    }
    return stack.forge(claims)


def all_documents(c: httpx.Client, ins: str, token: str) -> list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"page_size": 200, **({"cursor": cursor} if cursor else {})}
        r = c.get(
            f"/v1/dossiers/{ins}/documents",
            params=params,
            headers={"authorization": f"Bearer {token}"},
        )
        if r.status_code != 200:
            return None
        page = r.json()
        items += page["items"]
        cursor = page.get("next")
        if not cursor:
            return items


def consent_outcomes(attempts: list[tuple[str, bool]]) -> set[str] | None:
    """What the status may be: the last acknowledged one, or any attempted after it (an
    attempt that failed may have happened). None when nothing was acknowledged."""
    last = max((i for i, (_, ok) in enumerate(attempts) if ok), default=None)
    if last is None:
        return None
    return {status for status, _ in attempts[last:]}


def outbox_pending(stack: RunningStack) -> int:
    client: MongoClient[dict[str, Any]]
    with MongoClient(stack.infra.mongo.url) as client:
        return sum(
            client[db][name].count_documents({PENDING: True})
            for db in ("identity", "dossier", "consent")
            for name in client[db].list_collection_names()
        )


def consumers_pending(stack: RunningStack) -> int:
    """Messages not yet delivered or not yet acknowledged, over every durable consumer."""
    return sum(pending_by_consumer(stack).values())


def pending_by_consumer(stack: RunningStack) -> dict[str, int]:
    """The durable consumers with messages not yet delivered or not yet acknowledged."""

    async def count() -> dict[str, int]:
        nc = await nats.connect(stack.infra.nats.url.split(","))  # a server, or a cluster
        try:
            js = nc.jetstream()
            pending = {}
            for stream in STREAMS:
                for info in await js.consumers_info(stream):
                    n = (info.num_pending or 0) + (info.num_ack_pending or 0)
                    if n:
                        pending[f"{stream}/{info.name}"] = n
            return pending
        finally:
            await nc.close()

    return asyncio.run(count())


def verify_audit(stack: RunningStack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "dmp_cli",
            "audit",
            "verify",
            "--mongo-url",
            stack.infra.mongo.url,
            "--keys-from",
            stack.url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def summary(tallies: Iterable[Tally]) -> dict[str, int]:
    total: collections.Counter[str] = collections.Counter()
    for tally in tallies:
        total.update({f"attempted {k}": v for k, v in tally.attempts.items()})
        total.update({f"acknowledged {k}": v for k, v in tally.acknowledged.items()})
    return dict(total)

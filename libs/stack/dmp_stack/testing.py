"""Pytest fixtures: a real MongoDB-compatible server, NATS, SMTP sink and services, per session."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email
import email.parser
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import policy
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pymongo import MongoClient, monitoring

from dmp.events.v1 import envelope_pb2
from dmp_kit.bus import EventBus, run_consumer
from dmp_kit.crypto import derive_key, unseal
from dmp_kit.identifiers import ins_control_key, luhn_ok
from dmp_kit.service_auth import ASSERTION_TYPE
from dmp_stack.credentials import Credentials
from dmp_stack.fault_proxy import FaultProxy
from dmp_stack.infra import (
    Started,
    free_port,
    spawn,
    start_mongo,
    start_nats,
    start_nats_cluster,
    start_smtp,
    start_toxiproxy,
)
from dmp_stack.stack import (
    Ports,
    Stack,
    StackState,
    document_leases,
    stop_pid,
    stop_started,
)


def make_ins(rng: random.Random | None = None, corsica: str | None = None) -> str:
    """A random INS with a correct control key (optionally born in 2A/2B)."""
    r = rng or random.Random(secrets.randbits(64))
    dept = corsica or f"{r.randint(1, 95):02d}"
    first13 = (
        f"{r.choice('12')}{r.randint(40, 99):02d}{r.randint(1, 12):02d}{dept}"
        f"{r.randint(1, 999):03d}{r.randint(1, 999):03d}"
    )
    return f"{first13}{ins_control_key(first13):02d}"


def make_rpps(rng: random.Random | None = None) -> str:
    r = rng or random.Random(secrets.randbits(64))
    body = "10" + "".join(str(r.randint(0, 9)) for _ in range(8))
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


# The tests' own NATS user, allowed everything: tests publish as any producer would, and as a
# forger would. It exists only in the configuration of a NATS server the harness starts.
TEST_NATS_USER = "dmp-test"


class CommandsSent(monitoring.CommandListener):
    """The commands a client sends (pymongo's command monitoring), for tests that check a
    code path's round trips: give it to a client's `event_listeners`."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def of(self, name: str, collection: str | None = None) -> list[dict[str, Any]]:
        """The commands `name` sent so far, those on `collection` only if given."""
        return [
            command
            for sent, command in self.sent
            if sent == name and (collection is None or command.get(name) == collection)
        ]

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@dataclass
class Infra:
    """Servers for a test session. `nats.url` connects as TEST_NATS_USER; the services
    connect to `nats_service_url` as themselves, with `credentials`. Behind `faults` (unless
    started without it), every URL here is the fault proxy's, and `pause`, `partition` act
    there; the servers' own processes are signalled only to kill or restart them."""

    root: Path
    mongo: Started
    nats: Started
    smtp: Started
    credentials: Credentials
    faults: FaultProxy | None = None

    @property
    def nats_service_url(self) -> str:
        return self.nats.extra.get("service_url", self.nats.url)

    @property
    def maildir(self) -> Path:
        return Path(self.smtp.extra["maildir"])

    def pause(self, dep: Started) -> None:
        """Every byte to and from `dep` held, none lost: to its clients it has stopped."""
        self._faults().hold(dep)

    def resume(self, dep: Started) -> None:
        """What the pause held is delivered, and traffic flows again."""
        self._faults().release(dep)

    def partition(self, dep: Started) -> None:
        """`dep` cut off: its connections reset, new ones refused."""
        self._faults().cut(dep)

    def heal(self, dep: Started) -> None:
        self._faults().restore(dep)

    def _faults(self) -> FaultProxy:
        assert self.faults is not None, "these servers were started without the fault proxy"
        return self.faults


@contextmanager
def own_infra(
    prefix: str = "dmp-test-", nats_nodes: int = 1, fault_proxy: bool = True
) -> Iterator[Infra]:
    """A MongoDB-compatible server, NATS and an SMTP sink, started for the caller alone
    (unless DMP_MONGO_URL / DMP_NATS_URL name servers to use); `nats_nodes` > 1: a JetStream
    cluster of that many servers (always started here). With `fault_proxy` (tests; benchmarks
    measure without it), everything reaches them through a Toxiproxy of this infra's own, in
    front of every server, those named by URL too."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    started: list[Started] = []
    credentials = Credentials()
    password = secrets.token_urlsafe(24)
    faults = None
    try:
        if fault_proxy:
            proxy = start_toxiproxy(root)
            started.append(proxy)
            faults = FaultProxy(proxy.url)

        def through_proxy(dep: Started) -> Started:
            started.append(dep)
            if faults is None:
                return dep
            fronted = faults.front(dep)
            started[-1] = fronted  # the same processes: stopped as they were
            return fronted

        mongo = through_proxy(start_mongo(root))
        superuser = (TEST_NATS_USER, password)
        server = through_proxy(
            start_nats_cluster(root, credentials, nats_nodes, superuser)
            if nats_nodes > 1
            else start_nats(root, credentials=credentials, superuser=superuser)
        )
        nats = with_nats_user(server, TEST_NATS_USER, password)
        # The same object as the session's: a test that restarts the server updates its pid.
        started[-1] = nats
        smtp = through_proxy(start_smtp(root))
        yield Infra(root, mongo, nats, smtp, credentials, faults)
    finally:
        for dep in reversed(started):  # the proxy last
            stop_started(dep)
        if faults is not None:
            faults.close()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def own_servers(prefix: str, nats_nodes: int = 1, fault_proxy: bool = True) -> Iterator[Infra]:
    """Servers started for the caller alone whatever the session uses: `own_infra` with
    DMP_MONGO_URL and DMP_NATS_URL (which name the session's servers) set aside meanwhile."""
    saved = {k: os.environ.pop(k, None) for k in ("DMP_MONGO_URL", "DMP_NATS_URL")}
    try:
        with own_infra(prefix, nats_nodes, fault_proxy) as infra:
            yield infra
    finally:
        for key, value in saved.items():
            if value is not None:
                os.environ[key] = value


def with_nats_user(nats: Started, user: str, password: str) -> Started:
    """The server as `user` sees it; a server given by DMP_NATS_URL is left as it is."""
    if nats.source == "DMP_NATS_URL":
        return nats
    secret = urllib.parse.quote(password, safe="")
    urls = []
    for member in nats.url.split(","):  # one server, or a cluster's members
        url = urllib.parse.urlsplit(member)
        urls.append(url._replace(netloc=f"{user}:{secret}@{url.netloc}").geturl())
    return dataclasses.replace(
        nats, url=",".join(urls), extra={**nats.extra, "service_url": nats.url}
    )


@dataclass
class OwnNats:
    """A NATS server of the caller's own: `url` as the tests' user, `service_url` for the
    services, who connect with `credentials`."""

    url: str
    service_url: str
    credentials: Credentials


@contextmanager
def own_nats(root: Path) -> Iterator[OwnNats]:
    """A NATS server of the caller's own, even when the session's is named in the
    environment (a running stack sets DMP_NATS_URL); stopped after."""
    credentials = Credentials()
    password = secrets.token_urlsafe(24)
    shared = os.environ.pop("DMP_NATS_URL", None)
    try:
        nats = start_nats(root, credentials=credentials, superuser=(TEST_NATS_USER, password))
    finally:
        if shared is not None:
            os.environ["DMP_NATS_URL"] = shared
    try:
        yield OwnNats(with_nats_user(nats, TEST_NATS_USER, password).url, nats.url, credentials)
    finally:
        stop_started(nats)


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with own_infra() as started:
        yield started


CODE_SUBJECT = "Votre code de connexion DMP"
ISSUER = "https://dmp.localhost/identity"  # identity's default DMP_JWT_ISSUER


def until(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy, or `timeout` passes; its last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


class Mailbox:
    """Reads what the SMTP sink really received."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # file name → (To, Subject): each file's headers are read once, however long the run
        self._headers: dict[str, tuple[str, str]] = {}

    def messages_to(
        self, address: str, subject: str | None = None
    ) -> list[email.message.EmailMessage]:
        found = []
        for path in sorted(self.directory.glob("*.eml")):
            if path.name not in self._headers:
                head = email.parser.BytesHeaderParser(policy=policy.default).parsebytes(
                    path.read_bytes()
                )
                self._headers[path.name] = (str(head["To"]).lower(), str(head["Subject"]))
            to, subject_of = self._headers[path.name]
            if address.lower() in to and subject in (None, subject_of):
                found.append(email.message_from_bytes(path.read_bytes(), policy=policy.default))
        return found

    def codes_sent(self, address: str) -> int:
        return len(self.messages_to(address, CODE_SUBJECT))

    def last_code(self, address: str, timeout: float = 10.0, after: int = 0) -> str:
        """The newest one-time code sent to `address` (notifications may arrive in between),
        once more than `after` codes have reached it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.messages_to(address, CODE_SUBJECT)
            if len(messages) > after:
                body = messages[-1].get_body(("plain",))
                assert body is not None
                match = re.search(r"\b([0-9]{6})\b", body.get_content())
                assert match, "no 6-digit code in the e-mail"
                return match.group(1)
            time.sleep(0.05)
        raise AssertionError(f"no e-mail reached {address}")


def scrape(url: str) -> list[Sample]:
    """What the process at `url` (scheme, host and port) shows at /metrics now."""
    text = httpx.get(f"{url}/metrics", timeout=10.0).raise_for_status().text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


@dataclass
class RunningStack:
    stack: Stack
    state: StackState
    url: str
    mailbox: Mailbox
    clock_file: Path
    admin_password: str
    infra: Infra

    @property
    def processes(self) -> dict[str, int]:
        """Each process's pid now: `state` holds those at start, before any restart."""
        current = self.stack.state()
        assert current is not None, "the stack is down"
        return current.processes

    def set_clock_offset(self, seconds: float) -> None:
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(str(seconds))
        tmp.replace(self.clock_file)
        time.sleep(0.05)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def metrics(self, service: str) -> list[Sample]:
        """What a process's /metrics shows now (the gateway's on its HTTP port)."""
        instance = self.stack.instances.get(service)  # `dossier`, `dossier-2`, `gateway-2`…
        port = instance.metrics or instance.port if instance else None
        return scrape(f"http://127.0.0.1:{port}" if port else self.url)

    def metric(self, service: str, name: str, **labels: str) -> float | None:
        """The sum of a metric's samples with these labels (None: no such sample yet)."""
        values = [
            s.value
            for s in self.metrics(service)
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return sum(values) if values else None

    @contextmanager
    def another_gateway(self, name: str, env: dict[str, str]) -> Iterator[str]:
        """A second gateway process in front of this stack's services, with `env` over the
        stack's settings (limits of its own, say); its URL. Its log, `<name>.log`, is kept and
        scanned with the others'; stopped after."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = spawn(
            [sys.executable, "-m", "dmp_gateway"],
            self.stack.state_dir / "logs" / f"{name}.log",
            env={
                **os.environ,
                **self.state.env,
                **self.stack.credentials.env_for("gateway"),
                **env,
                "DMP_HTTP_PORT": str(port),
            },
        )
        try:
            until(lambda: _answers(f"{url}/healthz"), timeout=60, interval=0.1)
            assert _answers(f"{url}/healthz"), f"the gateway {name} did not start"
            yield url
        finally:
            stop_pid(process.pid)

    @contextmanager
    def another_replica(self, service: str) -> Iterator[Path]:
        """Another process of a gRPC service on this stack's database and bus, on a port of
        its own, once it says it is ready; yields its log, `<service>-replica.log` (kept and
        scanned with the others'); stopped after.

        On FerretDB, two writers of one record need the database's leases (DMP_DOCUMENT_LEASES,
        dmp_kit.mongo.DocumentLocks): a stack started with one replica each runs without them,
        so its own replica of `service` is restarted with them for the while, and without after.
        Without, both replicas' changes of one record could land, as they would in production
        so configured (two announcements of one reminder, say)."""
        leases = (
            {} if "DMP_DOCUMENT_LEASES" in self.state.env else document_leases(self.infra.mongo, 2)
        )
        own = [i.name for i in self.stack.replicas_of(service)] if leases else []
        for name in own:
            self.stack.restart(name, kill=False, env=leases)
        log = self.stack.state_dir / "logs" / f"{service}-replica.log"
        log.unlink(missing_ok=True)
        process = spawn(
            [sys.executable, "-m", f"dmp_{service}"],
            log,
            env={
                **os.environ,
                **self.state.env,
                **self.stack.credentials.env_for(service),
                **leases,
                "DMP_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
                "DMP_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
            },
        )
        try:
            ready = until(lambda: '"ready"' in log.read_text(errors="replace"), timeout=60)
            assert ready, f"the second {service} did not start"
            yield log
        finally:
            stop_pid(process.pid)
            for name in own:
                self.stack.restart(name, kill=False, env={"DMP_DOCUMENT_LEASES": "false"})

    def login(self, kind: str, login: str, password: str, address: str) -> dict[str, Any]:
        with self.client() as c:
            sent = self.mailbox.codes_sent(address)  # a second login must wait for its own code
            r = c.post("/v1/auth/login", json={"kind": kind, "login": login, "password": password})
            assert r.status_code == 200, r.text
            code = self.mailbox.last_code(address, after=sent)
            r = c.post(
                "/v1/auth/otp", json={"challenge_id": r.json()["challenge_id"], "code": code}
            )
            assert r.status_code == 200, r.text
            tokens: dict[str, Any] = r.json()
            return tokens

    def serving_again(self, timeout: float = 90.0) -> None:
        """After a fault: until every service is ready again and a login goes through (the
        signing keys the services dropped while the database was away fetched again), so that
        the test running next, whichever it is, finds the stack as a fresh one."""

        def serving() -> bool:
            with self.client() as c:
                if c.get("/readyz").status_code != 200:
                    return False
                answer = c.post(
                    "/v1/auth/login",
                    json={"kind": "admin", "login": "admin", "password": self.admin_password},
                )
            return answer.status_code == 200

        assert until(serving, timeout=timeout, interval=1.0), "the stack did not serve again"

    def admin_token(self) -> str:
        return str(
            self.login("admin", "admin", self.admin_password, "admin@dmp.localhost")["access_token"]
        )

    def create_patient(
        self,
        admin: str,
        password: str | None = "patient password 1",
        legal_representatives: list[str] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A registered patient; a minor when legal representatives (patients) are given;
        `fields` override the registration's (a birth date, say)."""
        ins = make_ins()
        body: dict[str, Any] = {
            "ins": ins,
            "vitale_serial": f"{random.randint(10**7, 10**8 - 1)}",
            "given_name": "Camille",
            "family_name": "Martin",
            "birth_date": "1984-05-17",
            "email": f"patient-{ins}@example.org",
            "phone": "",
            "password": password,
        }
        if legal_representatives:
            body.update(birth_date="2015-03-02", legal_representatives=legal_representatives)
        body.update(fields)
        with self.client(admin) as c:
            r = c.post("/v1/admin/patients", json=body)
        assert r.status_code == 201, r.text
        return {**r.json(), "password": password}

    def open_dossier(self, token: str, patient: dict[str, Any]) -> dict[str, Any]:
        """Opens the patient's DMP (their Vitale serial, their consent) as `token`'s holder."""
        body = {
            "ins": patient["ins"],
            "vitale_serial": patient["vitale_serial"],
            "patient_consent": True,
        }
        with self.client(token) as c:
            r = c.post("/v1/dossiers", json=body)
        assert r.status_code == 201, r.text
        opened: dict[str, Any] = r.json()
        return opened

    def agent_token(self, admin: str) -> str:
        """A new insurance (CPAM) agent's access token."""
        login = f"agent-{secrets.token_hex(4)}"
        with self.client(admin) as c:
            body = {
                "login": login,
                "given_name": "Sam",
                "family_name": "Petit",
                "email": f"{login}@example.org",
                "password": "agent password 1",
            }
            r = c.post("/v1/admin/agents", json=body)
            assert r.status_code == 201, r.text
        tokens = self.login("agent", login, "agent password 1", f"{login}@example.org")
        return str(tokens["access_token"])

    def client_token(self, admin: str, roles: list[str]) -> str:
        """A new OAuth2 client with these roles, and an access token it obtained with a signed
        client assertion (RFC 7523), as an insurer's system does."""
        return self.assertion_token(*self.register_client(admin, roles))

    def register_client(self, admin: str, roles: list[str]) -> tuple[str, Ed25519PrivateKey]:
        """A new OAuth2 client with these roles: its id and private key."""
        key = Ed25519PrivateKey.generate()
        pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        client_id = f"client-{secrets.token_hex(4)}"
        with self.client(admin) as c:
            r = c.post(
                "/v1/admin/clients",
                json={"client_id": client_id, "public_key_pem": pem.decode(), "roles": roles},
            )
            assert r.status_code == 201, r.text
        return client_id, key

    def assertion_token(
        self, client_id: str, key: Ed25519PrivateKey, clock_offset: float = 0.0
    ) -> str:
        """The client's access token, for an assertion dated on the stack's clock (moved by
        `clock_offset` seconds, as `set_clock_offset` moved it)."""
        now = int(time.time() + clock_offset)
        claims = {"iss": client_id, "sub": client_id, "aud": f"{self.url}/v1/auth/token"}
        assertion = jwt.encode(
            {**claims, "iat": now, "exp": now + 120, "jti": secrets.token_hex(16)},
            key,
            algorithm="EdDSA",
        )
        with self.client() as c:
            r = c.post(
                "/v1/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": assertion,
                },
            )
            assert r.status_code == 200, r.text
            return str(r.json()["access_token"])

    def forge(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        """A token signed with identity's real active key: for testing the checks that a good
        signature alone does not pass (audience, issuer, type, expiry)."""
        key = self.stack.credentials.own_keys["identity"]
        return forge_token(self.infra.mongo.url, "identity", key, claims, headers)

    def create_professional(
        self,
        admin: str,
        profession: str = "10",
        password: str | None = "professional pw 1",
        **extra: Any,
    ) -> dict[str, Any]:
        rpps = make_rpps()
        body = {
            "rpps": rpps,
            "profession": profession,
            "given_name": "Jeanne",
            "family_name": "Durand",
            "email": f"ps-{rpps}@example.org",
            "password": password,
            **extra,
        }
        with self.client(admin) as c:
            r = c.post("/v1/admin/professionals", json=body)
        assert r.status_code == 201, r.text
        return {**r.json(), "password": password}

    def token_for(self, person: dict[str, Any], kind: str) -> str:
        """An access token of a patient or professional `create_patient` or
        `create_professional` made (one-time code read from the mailbox)."""
        login = person["ins"] if kind == "patient" else person["rpps"]
        return str(self.login(kind, login, person["password"], person["email"])["access_token"])

    def add_document(
        self, token: str, ins: str, type_code: str, title: str, **extra: Any
    ) -> dict[str, Any]:
        """A text document added to `ins`'s dossier by `token`'s holder: its metadata."""
        body = {
            "type_code": type_code,
            "title": title,
            "mime_type": "text/plain",
            "content_base64": base64.b64encode(title.encode()).decode(),
            **extra,
        }
        with self.client(token) as c:
            r = c.post(f"/v1/dossiers/{ins}/documents", json=body)
        assert r.status_code == 201, r.text
        added: dict[str, Any] = r.json()
        return added


class CareTeam:
    """A patient's open DMP with their GP, an authorised doctor and pharmacist, and an outsider
    (a doctor of no relation to them), each logged in: the story most access tests start from."""

    def __init__(self, stack: RunningStack) -> None:
        self.stack = stack
        admin = stack.admin_token()
        self.patient = stack.create_patient(admin)
        self.ins = self.patient["ins"]
        self.pros = {
            "gp": stack.create_professional(admin, "10"),
            "doctor": stack.create_professional(admin, "10"),
            "pharmacist": stack.create_professional(admin, "21"),
            "outsider": stack.create_professional(admin, "10"),
        }
        patient = self.patient
        self.tokens = {
            "patient": stack.login("patient", self.ins, patient["password"], patient["email"])[
                "access_token"
            ]
        }
        for name, pro in self.pros.items():
            self.tokens[name] = stack.login(
                "professional", pro["rpps"], pro["password"], pro["email"]
            )["access_token"]
        stack.open_dossier(self.tokens["patient"], self.patient)
        with self.client("patient") as c:
            assert until(
                lambda: c.put(
                    f"/v1/dossiers/{self.ins}/attending-physician",
                    json={"rpps": self.pros["gp"]["rpps"]},
                ).status_code
                == 200
            )
        for name in ("doctor", "pharmacist"):
            self.set_pro(name, "authorized")

    def client(self, who: str) -> httpx.Client:
        return self.stack.client(self.tokens[who])

    def set_pro(self, name: str, status: str) -> None:
        """The patient authorises or blocks one of the professionals."""
        with self.client("patient") as c:
            r = c.put(
                f"/v1/dossiers/{self.ins}/professionals/{self.pros[name]['rpps']}",
                json={"status": status},
            )
        assert r.status_code == 200, r.text


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


# What an error body must never show: a trace, a database or gRPC internal, an address.
# Every kind of caller the security sweeps try on every route; the administrator last (the
# REST sweep rotates the token-signing key as its last act).
PRINCIPAL_KINDS = (
    "patient",
    "other-patient",
    "attending-physician",
    "doctor",
    "pharmacist",
    "agent",
    "insurer",
    "facility",
    "admin",
)
INTERNALS = re.compile(
    r"Traceback|File \"|line \d+, in|ObjectId|\"_id\"|grpc\.|StatusCode\.|pymongo|127\.0\.0\.1|"
    r"Exception|Error\("
)


def fill_path(path: str, values: dict[str, str]) -> str:
    """An OpenAPI path template with its `{parameters}` given."""
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def unknown_ids(ins: str | None = None) -> dict[str, str]:
    """Path parameters that name nothing that exists (but a well-formed INS and RPPS)."""
    return {
        "ins": ins or make_ins(),
        "trusted_ins": make_ins(),
        "rpps": make_rpps(),
        "document_id": str(uuid.uuid4()),
        "notification_id": str(uuid.uuid4()),
        "batch_id": str(uuid.uuid4()),
        "conversation_id": str(uuid.uuid4()),
        "attachment_id": str(uuid.uuid4()),
        "measurement_id": str(uuid.uuid4()),
        "appointment_id": str(uuid.uuid4()),
        "reminder_id": "no-such-rule~0",
        "seq": "0",
        "level": "0",
        "index": "x999/x999/999",  # an audit log tile far beyond any test's log
        "key_id": "0000000000000000",
        "session_id": str(uuid.uuid4()),
        "change_id": secrets.token_urlsafe(24),
        "activation_id": secrets.token_urlsafe(24),
        "export_id": str(uuid.uuid4()),
        "client_id": f"app_{secrets.token_hex(8)}",
    }


# What would identify a patient or a professional in a log line: an INS or NIR (15 digits), an
# RPPS (11 digits from 10), an e-mail address of the tests' domain. Logs carry pseudonyms.
IDENTIFIERS = re.compile(
    r"(?<![0-9A-Za-z])(?:[12][0-9]{14}|10[0-9]{9}|[A-Za-z0-9._%+-]+@example\.org)(?![0-9A-Za-z])"
)


def identifiers_in_logs(directory: Path) -> list[str]:
    """Every line of our processes' logs that names a person ("file: line")."""
    found = []
    for log in sorted(directory.glob("*.log")):
        if log.name == "smtp.log":  # the test mail sink's own log, not the platform's
            continue
        for line in log.read_text(errors="replace").splitlines():
            if IDENTIFIERS.search(line):
                found.append(f"{log.name}: {line[:300]}")
    return found


# The witnesses the test stack's log accepts cosignatures from (DMP_AUDIT_WITNESSES): the
# cosignature/v1 verifier keys of the seeds bytes(range(1, 33)) and bytes(range(2, 34)), public,
# for tests only (tests/e2e/test_tlog_go.py cosigns with them).
TEST_WITNESSES = (
    "witness.dmp.localhost/w1+217e5194+BHm1Vi6P5lT5QHixEuipi6eQH4U65pW+1+DjkQutBJZk",
    "witness.dmp.localhost/w2+62465c30+BEPNwCPSLV+eEH0aBpNFfTXR0Q630hxyEZL1b13kBmXT",
)


@contextmanager
def running_stack(
    infra: Infra,
    keep_logs: Path | None = None,
    env: dict[str, str] | None = None,
    replicas: int = 1,
) -> Iterator[RunningStack]:
    """Every service and the gateway as real processes on `infra`, in test mode (a movable
    clock, fast retries, high rate limits; `env` overrides any of it); stopped after, their
    logs scanned for identifiers. `replicas` > 1: the scaled stack (Stack's), on `infra`'s NATS
    cluster when it is one."""
    state_dir = infra.root / "stack"
    clock_file = infra.root / "clock-offset"
    admin_password = secrets.token_urlsafe(18)
    stack = Stack(
        state_dir,
        Ports.free(),
        credentials=dataclasses.replace(infra.credentials, admin_password=admin_password),
        replicas=replicas,
        nats_nodes=infra.nats_service_url.count(",") + 1,
        extra_env={
            "DMP_ENV": "dev",
            "DMP_MONGO_URL": infra.mongo.url,
            "DMP_NATS_URL": infra.nats_service_url,
            "DMP_SMTP_HOST": infra.smtp.extra["host"],
            "DMP_SMTP_PORT": infra.smtp.extra["port"],
            "DMP_CLOCK_OFFSET_FILE": str(clock_file),
            "DMP_LOG_LEVEL": "INFO",
            "DMP_SCHEDULE_INTERVAL_SECONDS": "0.5",
            "DMP_REMB_REFRESH_INTERVAL_SECONDS": "0.5",
            # Every test request comes from 127.0.0.1: the per-address limit is tested alone.
            "DMP_AUTH_RATE_LIMIT": "100000/minute",
            "DMP_ACCOUNT_RATE_LIMIT": "100000/minute",
            "DMP_ADDRESS_RATE_LIMIT": "1000000/minute",
            # Tests send bursts (40 code guesses at once), all from 127.0.0.1, that a gateway at
            # its defaults would partly refuse as overload: here they wait for a slot.
            # Admission is tested alone.
            "DMP_REQUESTS_QUEUED": "100000",
            "DMP_QUEUE_WAIT_SECONDS": "60",
            "DMP_REQUESTS_PER_ADDRESS": "100000",
            # a paused mail relay is noticed in a second; five attempts, then a dead letter
            "DMP_SMTP_TIMEOUT_SECONDS": "1",
            "DMP_MAX_DELIVERY_ATTEMPTS": "5",
            "DMP_AUDIT_WITNESSES": ",".join(TEST_WITNESSES),
            **document_leases(infra.mongo, replicas),
            **(env or {}),
        },
    )
    previous = {k: os.environ.get(k) for k in ("DMP_MONGO_URL", "DMP_NATS_URL")}
    os.environ["DMP_MONGO_URL"] = infra.mongo.url
    os.environ["DMP_NATS_URL"] = infra.nats_service_url
    try:
        state = stack.up(timeout=120)
        yield RunningStack(
            stack,
            state,
            state.gateway_url,
            Mailbox(infra.maildir),
            clock_file,
            admin_password,
            infra,
        )
    finally:
        stack.down()
        kept = keep_logs or infra.root / "kept-logs"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(infra.root / "stack" / "logs", kept, dirs_exist_ok=True)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    # Every process's log names no one (an error here fails the run).
    leaks = identifiers_in_logs(kept)
    assert not leaks, "patient or professional identifiers in the logs:\n" + "\n".join(leaks[:20])


def kept_logs() -> Path:
    """Where a test session keeps its processes' logs for whoever reads a failure (CI prints
    them): .dmp/test-logs, a folder of its own for each pytest-xdist worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    base = Path(".dmp") / "test-logs"
    return base / worker if worker else base


@pytest.fixture(scope="session")
def stack(infra: Infra) -> Iterator[RunningStack]:
    with running_stack(infra, keep_logs=kept_logs()) as running:
        yield running


@pytest.fixture
def clock(stack: RunningStack) -> Iterator[RunningStack]:
    """The session's stack, for a test that moves its injected clock: set back afterwards."""
    try:
        yield stack
    finally:
        stack.set_clock_offset(0)


async def collect_events(
    nats_url: str,
    stream: str,
    subject: str,
    until: Callable[[list[envelope_pb2.Envelope]], bool],
    wait: float = 20,
) -> list[envelope_pb2.Envelope]:
    """Reads a stream from its start with a fresh durable consumer until `until` holds."""
    bus = EventBus(nats_url, "test-reader")
    await bus.connect()
    seen: list[envelope_pb2.Envelope] = []
    stop = asyncio.Event()

    async def handler(event: envelope_pb2.Envelope) -> None:
        seen.append(event)
        if until(seen):
            stop.set()

    task = asyncio.create_task(
        run_consumer(
            bus,
            stream=stream,
            durable=f"test_{secrets.token_hex(4)}",
            subject=subject,
            handler=handler,
            stop=stop,
        )
    )
    try:
        await asyncio.wait_for(stop.wait(), wait)
        await asyncio.sleep(0.3)  # a duplicate would arrive now
    finally:
        stop.set()
        await task
        await bus.close()
    return seen


def forge_token(
    mongo_url: str,
    database: str,
    identity_key: str,
    claims: dict[str, Any],
    headers: dict[str, Any] | None = None,
) -> str:
    """A token signed with identity's active key, read from its database and unsealed with
    identity's own key as identity does."""
    master = base64.b64decode(identity_key)
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongo_url) as client:
        doc = client[database]["signing_keys"].find_one(
            {"status": "active"}, sort=[("created_at", -1)]
        )
    assert doc is not None, "identity has no active signing key"
    kid = str(doc["_id"])
    raw = unseal(
        derive_key(master, "identity-signing-keys"), bytes(doc["private_sealed"]), kid.encode()
    )
    return jwt.encode(
        claims,
        Ed25519PrivateKey.from_private_bytes(raw),
        algorithm="EdDSA",
        headers={"kid": kid, "typ": "at+jwt", **(headers or {})},
    )

"""One service on its own, for its gRPC contract: the service process, its real database (a
database of its own on the session's server) and a NATS server of its own, and nothing else.

A service verifies tokens against identity's keys (GetJwks). Alone, it gets them from a key
server that answers GetJwks only, with a key the test holds, so that the test can give the
service any caller it needs. Every other service is away: what needs one answers UNAVAILABLE.
Identity is its own key server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf import message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dmp.identity.v1 import identity_pb2
from dmp_kit.config import DEFAULT_PORTS
from dmp_kit.rpc.status import DETAILS_KEY
from dmp_stack.infra import free_port, spawn
from dmp_stack.stack import stop_pid
from dmp_stack.testing import (
    ISSUER,
    Infra,
    forge_token,
    make_ins,
    make_rpps,
    own_nats,
)

AUDIENCE = "dmp"
# The callers a test can be: valid identifiers, made once per run.
PATIENT_INS, OTHER_INS = make_ins(), make_ins()
DOCTOR_RPPS, PHARMACIST_RPPS = make_rpps(), make_rpps()
# A doctor who breaks the glass: the access it gains is no other case's (the doctor above is
# the one outside the care team, in whatever order the cases run).
EMERGENCY_DOCTOR_RPPS = make_rpps()
KIND_CLAIMS: dict[str, dict[str, Any]] = {
    "patient": {"kind": "patient", "ins": PATIENT_INS, "roles": []},
    "other patient": {"kind": "patient", "ins": OTHER_INS, "roles": []},
    "doctor": {"kind": "professional", "rpps": DOCTOR_RPPS, "profession": "10", "roles": []},
    "emergency doctor": {
        "kind": "professional",
        "rpps": EMERGENCY_DOCTOR_RPPS,
        "profession": "10",
        "roles": [],
    },
    "pharmacist": {
        "kind": "professional",
        "rpps": PHARMACIST_RPPS,
        "profession": "21",
        "roles": [],
    },
    "admin": {"kind": "admin", "roles": ["admin"]},
    "otp sender": {"kind": "service", "roles": ["otp_sender"]},
    "consent service": {
        "kind": "system",
        "client_id": "service:consent",
        "roles": ["dossier_state_reader", "consent_change_marker"],
    },
    "insurer": {"kind": "system", "client_id": "insurer-1", "roles": ["insurer"]},
    "dossier service": {
        "kind": "system",
        "client_id": "service:dossier",
        "roles": ["export_reader"],
    },
    "agenda service": {
        "kind": "system",
        "client_id": "service:agenda",
        "roles": ["patient_birth_reader"],
    },
}


def claims_of(kind: str, ttl: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """An access token's claims, as identity writes them, for a caller of that kind."""
    now = int(time.time())
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(uuid.uuid4()),
        "iat": now,
        "exp": now + ttl,
        **KIND_CLAIMS[kind],
        **overrides,
    }


class KeyServer:
    """identity's keys (GetJwks), and nothing else: every other call finds identity away
    (UNAVAILABLE), as it would if identity were down."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.kid = "contract-" + secrets.token_hex(4)
        self.jwk = identity_pb2.Jwk(
            kty="OKP",
            crv="Ed25519",
            x=jwt.utils.base64url_encode(raw).decode(),
            kid=self.kid,
            alg="EdDSA",
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((_KeysOnly(self),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def GetJwks(self, request: Any, context: Any) -> identity_pb2.GetJwksResponse:
        return identity_pb2.GetJwksResponse(keys=[self.jwk])

    def token(self, kind: str, ttl: int = 600, **overrides: Any) -> str:
        claims = claims_of(kind, ttl, overrides)
        return jwt.encode(
            claims, self.key, algorithm="EdDSA", headers={"kid": self.kid, "typ": "at+jwt"}
        )


@dataclass
class Alone:
    """The service under test, what it runs on, and a client channel to it."""

    name: str
    address: str
    database: str
    keys: KeyServer | None
    channel: grpc.Channel
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    # Its NATS server, as the tests' own user (allowed everything: to publish as a peer would).
    nats_url: str = ""

    def token(self, kind: str, ttl: int = 600, **overrides: Any) -> str:
        if self.keys is not None:
            return self.keys.token(kind, ttl, **overrides)
        # Identity alone: signed with its own active key, as it signs.
        claims = claims_of(kind, ttl, overrides)
        mongo = self.env["DMP_MONGO_URL"]
        return forge_token(mongo, self.database, self.env["DMP_IDENTITY_KEY"], claims)


@contextmanager
def alone(name: str, mongo_url: str, logs: Path) -> Iterator[Alone]:
    """Starts `dmp_<name>` with a database of its own on `mongo_url` and a NATS server of its
    own (its durable consumers must not share the session stack's); stops them after. The
    service connects to NATS as itself; `Alone.nats_url` connects as the tests' own user."""
    root = Path(tempfile.mkdtemp(prefix=f"dmp-contract-{name}-"))
    try:
        with own_nats(root) as nats:
            env = {"DMP_NATS_URL": nats.service_url, **nats.credentials.env_for(name)}
            with _alone(name, mongo_url, env, logs) as service:
                service.nats_url = nats.url
                yield service
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _alone(name: str, mongo_url: str, secrets_env: dict[str, str], logs: Path) -> Iterator[Alone]:
    keys = None if name == "identity" else KeyServer()
    if keys is not None:
        keys.server.start()
    port = free_port()
    database = f"contract_{name}_{secrets.token_hex(3)}"
    # Every peer is away: a port nothing listens on.
    away = {f"DMP_{peer.upper()}_ADDR": f"127.0.0.1:{free_port()}" for peer in DEFAULT_PORTS}
    env = {
        **away,
        "DMP_ENV": "dev",
        "DMP_MONGO_URL": mongo_url,
        "DMP_MONGO_DB": database,
        "DMP_GRPC_LISTEN": f"127.0.0.1:{port}",
        "DMP_GRPC_DEADLINE_SECONDS": "2",
        **secrets_env,
        "DMP_BOOTSTRAP_ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "DMP_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    if keys is not None:
        env["DMP_IDENTITY_ADDR"] = f"127.0.0.1:{keys.port}"
    else:
        env["DMP_IDENTITY_ADDR"] = f"127.0.0.1:{port}"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"contract-{name}.log"
    proc = spawn([sys.executable, "-m", f"dmp_{name}"], log, env={**os.environ, **env})
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        _wait_serving(channel, proc.pid, log)
        yield Alone(name, f"127.0.0.1:{port}", database, keys, channel, log, env)
    finally:
        channel.close()
        stop_pid(proc.pid)
        if keys is not None:
            keys.server.stop(grace=None)


def _wait_serving(channel: grpc.Channel, pid: int | None, log: Path, timeout: float = 60) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        try:
            if pid is not None:
                os.kill(pid, 0)
        except ProcessLookupError:
            tail = log.read_text()[-3000:]
            raise AssertionError(f"the service exited; its log:\n{tail}") from None
        time.sleep(0.2)
    raise AssertionError(f"the service did not serve within {timeout:.0f}s")


class _KeysOnly(grpc.GenericRpcHandler):
    def __init__(self, keys: KeyServer) -> None:
        self.keys = keys
        self.jwks = "/" + identity_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name
        self.jwks += "/GetJwks"

    def service(self, details: Any) -> Any:
        if details.method == self.jwks:
            return grpc.unary_unary_rpc_method_handler(
                self.keys.GetJwks,
                request_deserializer=identity_pb2.GetJwksRequest.FromString,
                response_serializer=identity_pb2.GetJwksResponse.SerializeToString,
            )

        def away(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAVAILABLE, "identity is away")

        return grpc.unary_unary_rpc_method_handler(away)


def refusal(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, str]:
    """(code, field at fault, problem type) of a refusal; its google.rpc.Status details must
    be there and agree with the code."""
    assert isinstance(error, grpc.Call)
    trailers = dict(error.trailing_metadata() or ())
    raw = trailers.get(DETAILS_KEY)
    assert raw is not None, f"{error.code()} without google.rpc.Status details"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    field_name, problem = "", ""
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            field_name = bad.field_violations[0].field if bad.field_violations else ""
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            problem = info.reason
    return error.code(), field_name, problem


# ------------------------------------------------------------------------------ the cases


@dataclass(frozen=True)
class Case:
    """One call of a method, by one caller, and exactly what must come back."""

    method: str  # the method's name in the service
    why: str
    request: Any
    caller: str | None  # a kind of KIND_CLAIMS (or a token maker for identity); None: no token
    code: grpc.StatusCode
    field: str = ""
    problem: str = ""
    check: Any = None  # for OK: a function of the response that asserts its shape
    # The cases whose effect this one reads, called (and checked) before it: its own set-up,
    # so that a table passes in any order and a case passes alone (`pytest -k`).
    given: tuple[Case, ...] = ()

    def __str__(self) -> str:
        return f"{self.method}: {self.why}"


def call(service: Alone, stub: Any, case: Case, token: str | None, timeout: float = 10) -> Any:
    method = getattr(stub, case.method)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    request = iter(case.request) if isinstance(case.request, list) else case.request  # a stream
    return method(request, metadata=metadata, timeout=timeout)


def check_case(service: Alone, stub: Any, case: Case, token: str | None) -> None:
    """The call answers exactly `case.code`; a refusal carries its details and, when the case
    names them, the field at fault and the problem type; a success has the expected shape."""
    try:
        answer = call(service, stub, case, token)
    except grpc.RpcError as error:
        code, field_name, problem = refusal(error)
        assert code == case.code, f"{case}: {code} ({field_name} {problem}), not {case.code}"
        if case.field:
            assert field_name == case.field, f"{case}: field {field_name!r}"
        if case.problem:
            assert problem == case.problem, f"{case}: problem {problem!r}"
        return
    assert case.code == grpc.StatusCode.OK, f"{case}: answered, where {case.code} was due"
    if case.check is not None:
        case.check(answer)


def methods_of(descriptor: Any) -> set[str]:
    return {m.name for m in descriptor.methods}


# ------------------------------------------------------------------------------ the tests
# Each tests/contract/<service>/ module names SERVICE, DESCRIPTOR (the gRPC service), STUB,
# PUBLIC (methods open to anyone), CASES and SLOW (a case that reads the database), and
# imports the tests below; tests/contract/conftest.py starts the service and hands out cases.


def _module(request: Any) -> Any:
    return request.module


def test_every_method_has_its_cases(request: Any) -> None:
    """A method added to the service fails this until its contract is written."""
    module = _module(request)
    missing = methods_of(module.DESCRIPTOR) - {c.method for c in module.CASES}
    unknown = {c.method for c in module.CASES} - methods_of(module.DESCRIPTOR)
    assert not missing and not unknown, (missing, unknown)


def test_callers_without_a_valid_token_are_unauthenticated(
    alone_service: Alone, request: Any
) -> None:
    module = _module(request)
    stub = module.STUB(alone_service.channel)
    bad_tokens = {
        "no token": None,
        "expired": alone_service.token("admin", ttl=-3600),
        "from another signer": KeyServer().token("admin"),
        "for another audience": alone_service.token("admin", aud="elsewhere"),
    }
    for method in module.DESCRIPTOR.methods:
        if method.name in module.PUBLIC:
            continue
        empty = message_factory.GetMessageClass(method.input_type)()
        request_message: Any = [empty] if method.client_streaming else empty
        for why, token in bad_tokens.items():
            case = Case(method.name, why, request_message, None, grpc.StatusCode.UNAUTHENTICATED)
            check_case(alone_service, stub, case, token)


def test_case(alone_service: Alone, case: Case, request: Any) -> None:
    stub = _module(request).STUB(alone_service.channel)
    for step in (*case.given, case):
        token = None if step.caller is None else alone_service.token(step.caller)
        check_case(alone_service, stub, step, token)


def test_a_database_away_is_a_deadline_not_an_error(
    alone_service: Alone, infra: Infra, request: Any
) -> None:
    """The database paused past the caller's deadline: DEADLINE_EXCEEDED, then service again."""
    module = _module(request)
    stub = module.STUB(alone_service.channel)
    case = module.SLOW
    token = None if case.caller is None else alone_service.token(case.caller)
    infra.pause(infra.mongo)
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            call(alone_service, stub, case, token, timeout=1.0)
        assert time.monotonic() - started < 3
    finally:
        infra.resume(infra.mongo)
    error = raised.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"{case}: {error.code()}"
    # Then the same call is answered again as its contract says.
    _wait_serving(alone_service.channel, None, alone_service.log, timeout=30)
    check_case(alone_service, stub, case, token)
    _wait_serving(alone_service.channel, None, alone_service.log, timeout=30)


# What each tests/contract/<service>/ module takes into its namespace (`globals().update`), so
# that pytest runs these four tests on that module's tables.
TESTS = {
    test.__name__: test
    for test in (
        test_every_method_has_its_cases,
        test_callers_without_a_valid_token_are_unauthenticated,
        test_case,
        test_a_database_away_is_a_deadline_not_an_error,
    )
}

"""Every gRPC method of every service, called as a client would, from the services' own
descriptors (a method added tomorrow is called tomorrow):

- without a token: UNAUTHENTICATED, unless the service declares the method public;
- with a token but an empty request: a refusal of ours (INVALID_ARGUMENT, NOT_FOUND,
  PERMISSION_DENIED, FAILED_PRECONDITION, ALREADY_EXISTS…) with its google.rpc.Status
  details, never UNKNOWN nor INTERNAL;
- with the database paused: an answer within the deadline, DEADLINE_EXCEEDED or UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from google.protobuf import symbol_database
from google.rpc import error_details_pb2, status_pb2

from dmp.audit.v1 import audit_pb2
from dmp.consent.v1 import consent_pb2
from dmp.dossier.v1 import dossier_pb2
from dmp.identity.v1 import identity_pb2
from dmp.ingest.v1 import ingest_pb2
from dmp.notify.v1 import notify_pb2
from dmp_audit.api import PUBLIC_METHODS as AUDIT_PUBLIC
from dmp_identity.api import PUBLIC_METHODS as IDENTITY_PUBLIC
from dmp_kit.rpc.status import DETAILS_KEY
from dmp_notify.__main__ import PUBLIC_METHODS as NOTIFY_PUBLIC
from dmp_stack.testing import RunningStack

SERVICES = {
    "identity": identity_pb2,
    "dossier": dossier_pb2,
    "consent": consent_pb2,
    "audit": audit_pb2,
    "notify": notify_pb2,
    "ingest": ingest_pb2,
}
PUBLIC = IDENTITY_PUBLIC | AUDIT_PUBLIC | NOTIFY_PUBLIC
OUR_REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# Answering an empty request with success is right for these (lists, reads of one's own).
EMPTY_IS_FINE = {
    "/dmp.identity.v1.IdentityService/GetJwks",
    "/dmp.identity.v1.IdentityService/GetMe",
    "/dmp.identity.v1.IdentityService/RotateSigningKey",
    # One's own sessions: the list, and ending all of them
    "/dmp.identity.v1.IdentityService/ListSessions",
    "/dmp.identity.v1.IdentityService/EndSessions",
    # Revoking nothing is not an error (as RFC 7009 has it for token revocation).
    "/dmp.identity.v1.IdentityService/Logout",
    # The catalogue of apps (perhaps empty); the OAuth endpoints, whose errors are answers
    # (RFC 6749 §5.2 and RFC 7009: status and body in the response).
    "/dmp.identity.v1.IdentityService/ListApps",
    "/dmp.identity.v1.IdentityService/AppToken",
    "/dmp.identity.v1.IdentityService/RevokeAppToken",
    "/dmp.audit.v1.AuditService/GetCheckpoint",
    "/dmp.audit.v1.AuditService/ListPublicKeys",
    # seq 0 of the latest tree: the first entry's proof
    "/dmp.audit.v1.AuditService/GetInclusionProof",
    "/dmp.consent.v1.ConsentService/GetHabilitationMatrix",
    "/dmp.dossier.v1.DossierService/CountOpenings",
    "/dmp.notify.v1.NotifyService/GetPreferences",
    "/dmp.notify.v1.NotifyService/ListDevOutbox",
    "/dmp.notify.v1.NotifyService/ListDeadLetters",
}


def methods() -> list[tuple[str, str, Any]]:
    found = []
    for service, module in SERVICES.items():
        for descriptor in module.DESCRIPTOR.services_by_name.values():
            for method in descriptor.methods:
                found.append((service, f"/{descriptor.full_name}/{method.name}", method))
    return found


METHODS = methods()


async def acall(
    stack: RunningStack, service: str, path: str, method: Any, token: str, deadline: float
) -> Any:
    request_class = symbol_database.Default().GetSymbol(method.input_type.full_name)
    response_class = symbol_database.Default().GetSymbol(method.output_type.full_name)
    address = stack.state.env[f"DMP_{service.upper()}_ADDR"]
    metadata = [("authorization", f"Bearer {token}")] if token else []
    async with grpc.aio.insecure_channel(address) as channel:
        if method.client_streaming:
            stub = channel.stream_unary(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )

            async def one() -> Any:
                yield request_class()

            return await stub(one(), metadata=metadata, timeout=deadline)
        stub = channel.unary_unary(
            path,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        return await stub(request_class(), metadata=metadata, timeout=deadline)


async def refused(
    stack: RunningStack, service: str, path: str, method: Any, token: str, deadline: float
) -> grpc.aio.AioRpcError | None:
    try:
        await acall(stack, service, path, method, token, deadline)
    except grpc.aio.AioRpcError as err:
        return err
    return None


def refusal(
    stack: RunningStack, service: str, path: str, method: Any, token: str, timeout: float = 5.0
) -> grpc.aio.AioRpcError | None:
    return asyncio.run(refused(stack, service, path, method, token, deadline=timeout))


def has_details(err: grpc.aio.AioRpcError) -> bool:
    for key, value in err.trailing_metadata() or ():
        if key == DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            return any(d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) for d in status.details)
    return False


def test_every_service_has_methods() -> None:
    assert {s for s, _, _ in METHODS} == set(SERVICES)
    assert len(METHODS) > 40
    assert {path for _, path, _ in METHODS} >= EMPTY_IS_FINE, "a method named here is gone"


@pytest.mark.parametrize(("service", "path", "method"), METHODS, ids=[p for _, p, _ in METHODS])
def test_the_method_keeps_its_error_contract(
    stack: RunningStack, service: str, path: str, method: Any
) -> None:
    if path not in PUBLIC:
        err = refusal(stack, service, path, method, token="")
        assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED, err
        assert has_details(err)
    token = stack.admin_token()
    err = refusal(stack, service, path, method, token)
    if err is None:
        assert path in EMPTY_IS_FINE, f"{path} accepted an empty request"
    else:
        assert err.code() in OUR_REFUSALS, (path, err.code(), err.details())
        assert has_details(err), path


def test_every_method_answers_within_its_deadline_when_the_database_is_away(
    stack: RunningStack,
) -> None:
    """The database paused: each method answers within its 1 s deadline (and a margin),
    DEADLINE_EXCEEDED or UNAVAILABLE, or a refusal of its input that needs no database;
    never a hang, never UNKNOWN nor INTERNAL."""
    token = stack.admin_token()

    async def answer(
        path: str, service: str, method: Any, room: asyncio.Semaphore
    ) -> tuple[str, float, grpc.aio.AioRpcError | None]:
        async with room:
            started = time.monotonic()
            err = await refused(stack, service, path, method, token, deadline=1.0)
            return path, time.monotonic() - started, err

    async def every_method() -> list[tuple[str, float, grpc.aio.AioRpcError | None]]:
        # A few calls at a time at each service, the services side by side: one after the
        # other, the deadlines add up to half a minute (identity alone has 38 methods).
        rooms = {service: asyncio.Semaphore(4) for service in SERVICES}
        return await asyncio.gather(
            *(answer(path, service, method, rooms[service]) for service, path, method in METHODS)
        )

    stack.infra.pause(stack.infra.mongo)
    try:
        answers = asyncio.run(every_method())
        assert len(answers) == len(METHODS)
        for path, took, err in answers:
            assert took < 3.0, (path, took)
            if err is None:
                continue  # answered from what it holds in memory (keys, matrix, tree)
            assert err.code() in OUR_REFUSALS | {
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNAVAILABLE,
            }, (path, err.code(), err.details())
    finally:
        stack.infra.resume(stack.infra.mongo)
        # Paused past the services' key cache: the next test must not find them still fetching.
        stack.serving_again()

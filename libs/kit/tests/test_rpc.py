"""The server interceptors on a real gRPC server: auth, rich error status, deadlines, logging."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dmp.notify.v1 import notify_pb2 as pb
from dmp.notify.v1 import notify_pb2_grpc
from dmp_kit.auth import JwksCache, TokenVerifier, caller
from dmp_kit.clock import SystemClock
from dmp_kit.context import remaining_seconds
from dmp_kit.errors import InvalidArgument, Locked
from dmp_kit.rpc.client import call_options
from dmp_kit.rpc.interceptors import (
    AuthInterceptor,
    ErrorInterceptor,
    RequestContextInterceptor,
    TextInterceptor,
    nul_field,
)
from dmp_kit.rpc.status import error_from_rpc

KEY = Ed25519PrivateKey.generate()
PUBLIC = "/dmp.notify.v1.NotifyService/ListDevOutbox"


async def fetch() -> Iterable[Mapping[str, str]]:
    raw = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return [
        {
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": "k",
            "alg": "EdDSA",
            "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
        }
    ]


def token(kind: str = "admin") -> str:
    now = datetime.now(UTC)
    return jwt.encode(
        {
            "iss": "i",
            "aud": "dmp",
            "sub": "s",
            "kind": kind,
            "roles": [kind],
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(minutes=5)).timestamp()),
        },
        KEY,
        algorithm="EdDSA",
        headers={"kid": "k", "typ": "at+jwt"},
    )


class Probe(notify_pb2_grpc.NotifyServiceServicer):
    async def SendOtp(self, request: Any, context: Any) -> pb.SendOtpResponse:
        raise InvalidArgument("code must be 6 digits", field="code")

    async def GetPreferences(self, request: Any, context: Any) -> pb.GetPreferencesResponse:
        who = caller()
        left = remaining_seconds(100.0)
        return pb.GetPreferencesResponse(
            preferences=[pb.EventPreference(event_type=f"{who.kind}:{left:.1f}")]
        )

    async def ListNotifications(self, request: Any, context: Any) -> pb.ListNotificationsResponse:
        raise RuntimeError("secret internals")

    async def ListDeadLetters(self, request: Any, context: Any) -> pb.ListDeadLettersResponse:
        raise Locked("wait", retry_after=30)

    async def ListDevOutbox(self, request: Any, context: Any) -> pb.ListDevOutboxResponse:
        return pb.ListDevOutboxResponse()


@pytest.fixture
async def stub() -> AsyncIterator[notify_pb2_grpc.NotifyServiceStub]:
    verifier = TokenVerifier(JwksCache(fetch), issuer="i", audience="dmp", clock=SystemClock())
    server = grpc.aio.server(
        interceptors=[
            RequestContextInterceptor(),
            ErrorInterceptor(),
            AuthInterceptor(verifier, frozenset({PUBLIC})),
            TextInterceptor(),
        ]
    )
    notify_pb2_grpc.add_NotifyServiceServicer_to_server(Probe(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield notify_pb2_grpc.NotifyServiceStub(channel)
    await channel.close()
    await server.stop(0)


async def test_deny_by_default_without_a_token(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetPreferences(pb.GetPreferencesRequest(), timeout=5)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_from_rpc(exc.value).http_status == 401


async def test_public_method_needs_no_token(stub: Any) -> None:
    assert (
        await stub.ListDevOutbox(pb.ListDevOutboxRequest(), timeout=5) == pb.ListDevOutboxResponse()
    )


async def test_caller_and_deadline_reach_the_servicer(stub: Any) -> None:
    resp = await stub.GetPreferences(
        pb.GetPreferencesRequest(), **call_options(3.0, token=token("patient"))
    )
    kind, left = resp.preferences[0].event_type.split(":")
    assert kind == "patient"
    assert 0 < float(left) <= 3.0, "the server sees (and passes on) the caller's deadline"


async def test_domain_error_travels_with_its_field(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.SendOtp(pb.SendOtpRequest(), **call_options(3.0, token=token()))
    err = error_from_rpc(exc.value)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.field, err.problem, err.http_status) == ("code", "validation-error", 422)


async def test_status_overrides_and_retry_after_survive(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ListDeadLetters(pb.ListDeadLettersRequest(), **call_options(3.0, token=token()))
    err = error_from_rpc(exc.value)
    assert (err.http_status, err.problem, err.retry_after) == (423, "account-locked", 30)
    assert isinstance(err, Locked)  # its own title, not another error's of the same code
    assert err.title == Locked.title


async def test_text_with_a_nul_character_is_refused_with_its_field(stub: Any) -> None:
    assert await stub.ListDevOutbox(pb.ListDevOutboxRequest(destination="a@b.c"))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ListDevOutbox(pb.ListDevOutboxRequest(destination="a\x00@b.c"))
    err = error_from_rpc(exc.value)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.field, err.http_status) == ("destination", 422)
    prefs = pb.PutPreferencesRequest(
        preferences=[pb.EventPreference(event_type="login"), pb.EventPreference(event_type="x\x00")]
    )
    assert nul_field(prefs) == "preferences.1.event_type"
    assert nul_field(pb.PutPreferencesRequest(preferences=[pb.EventPreference()])) is None


async def test_a_bug_is_internal_and_leaks_nothing(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ListNotifications(
            pb.ListNotificationsRequest(), **call_options(3.0, token=token())
        )
    assert exc.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (exc.value.details() or "")


async def test_each_methods_handler_is_wrapped_once_and_each_call_still_checked() -> None:
    """Calls of one method reuse its handler wrapped at the first (not wrapped again at each
    call), and every call is still checked on its own: its token, its text."""
    verifier = TokenVerifier(JwksCache(fetch), issuer="i", audience="dmp", clock=SystemClock())
    layers = [
        RequestContextInterceptor(),
        ErrorInterceptor(),
        AuthInterceptor(verifier, frozenset()),
        TextInterceptor(),
    ]
    server = grpc.aio.server(interceptors=layers)
    notify_pb2_grpc.add_NotifyServiceServicer_to_server(Probe(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        method = "/dmp.notify.v1.NotifyService/GetPreferences"
        nul = pb.MarkNotificationReadRequest(id="a\x00b")
        seen = []
        for _ in range(3):
            request = pb.GetPreferencesRequest()
            await stub.GetPreferences(request, **call_options(3.0, token=token()))
            seen.append(layers[0]._wrapped[method][1])
        assert seen[0] is seen[1] is seen[2]
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.GetPreferences(pb.GetPreferencesRequest(), timeout=3.0)  # no token
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.MarkNotificationRead(nul, timeout=3.0)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED  # the caller comes first
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.MarkNotificationRead(nul, **call_options(3.0, token=token()))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "NUL" in (exc.value.details() or "")
        assert layers[0]._wrapped[method][1] is seen[0]
    finally:
        await channel.close()
        await server.stop(0)

"""A service account's token: dated by the injected clock, renewed when a peer refuses it."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from dmp_kit.clock import ManualClock
from dmp_kit.errors import Unavailable
from dmp_kit.service_auth import ServiceTokens

KEY = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def refused(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "refused")


@pytest.mark.asyncio
async def test_a_token_the_peer_refuses_is_renewed_once_and_assertions_follow_the_clock() -> None:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    assertions: list[dict[str, object]] = []

    async def exchange(assertion: str) -> tuple[str, int]:
        assertions.append(jwt.decode(assertion, options={"verify_signature": False}))
        return f"token-{len(assertions)}", 300

    tokens = ServiceTokens("ingest", KEY, "https://dmp", exchange, clock)
    seen: list[str] = []

    async def rpc(token: str) -> str:
        seen.append(token)
        if token == "token-1":
            raise refused(grpc.StatusCode.UNAUTHENTICATED)
        return "answer"

    assert await tokens.call(rpc) == "answer"
    assert seen == ["token-1", "token-2"]
    assert assertions[0]["iat"] == int(clock.now().timestamp())

    async def denied(token: str) -> str:
        raise refused(grpc.StatusCode.PERMISSION_DENIED)

    with pytest.raises(grpc.aio.AioRpcError):
        await tokens.call(denied)
    assert len(assertions) == 2, "only an unauthenticated answer renews the token"


@pytest.mark.asyncio
async def test_a_service_that_cannot_authenticate_is_unavailable_not_the_caller_s_401() -> None:
    """A peer that refuses even a new token, or identity refusing the assertion, is a fault
    between services: the person's request gets a 503 to retry, never a 401 about a token
    they did not send."""
    issued: list[str] = []

    async def exchange(assertion: str) -> tuple[str, int]:
        issued.append(assertion)
        return f"token-{len(issued)}", 300

    tokens = ServiceTokens("consent", KEY, "https://dmp", exchange)

    async def never(token: str) -> str:
        raise refused(grpc.StatusCode.UNAUTHENTICATED)

    with pytest.raises(Unavailable) as caught:
        await tokens.call(never)
    assert caught.value.http_status == 503
    assert "token" not in caught.value.detail
    assert len(issued) == 2, "tried once more with a new token first"

    async def refusing_exchange(assertion: str) -> tuple[str, int]:
        raise refused(grpc.StatusCode.UNAUTHENTICATED)

    stranger = ServiceTokens("consent", KEY, "https://dmp", refusing_exchange)

    async def answer(token: str) -> str:
        return "answer"

    with pytest.raises(Unavailable):
        await stranger.call(answer)

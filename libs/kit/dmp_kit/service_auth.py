"""Service accounts: how one service obtains an access token to call another.

Each service that calls others on its own behalf (not forwarding a user's token) is an OAuth2
client of identity, `service:<name>`, authenticating with a client assertion (RFC 7523) signed
by an Ed25519 key of its own (DMP_SERVICE_ACCOUNT_KEY, that service's secret alone). Identity
holds only the public halves (DMP_SERVICE_PUBLIC_KEYS), provisions these clients at start with
them and the roles below, and refuses to let anyone register a client under the `service:`
prefix. A service's key lets it act as itself, never as another.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dmp.identity.v1 import identity_pb2
from dmp_kit.clock import Clock
from dmp_kit.config import dev_key
from dmp_kit.errors import Unavailable
from dmp_kit.logging import get_logger
from dmp_kit.rpc.client import call_options

T = TypeVar("T")
log = get_logger(__name__)
PREFIX = "service:"
# Reads a dossier's status (dossier's GetDossierState), for consent's read-your-writes.
DOSSIER_STATE_READER = "dossier_state_reader"
# Marks a change of a dossier's consent as begun or ended (dossier's MarkConsentChange), for
# consent: what lets it answer from a state it read before (docs/scaling.md).
CONSENT_CHANGE_MARKER = "consent_change_marker"
# Reads a patient's name and account status (identity's LookupPatient, without contact
# details), for consent: a trusted person is another patient with an active account.
PATIENT_NAME_READER = "patient_name_reader"
# Reads a patient's conversations (messaging's ExportConversations) and access log (audit's
# ListAccessLog) as the patient would, for the dossier's export of the patient's data.
EXPORT_READER = "export_reader"
# Reads a patient's birth date and account status (identity's LookupPatient, no name, no
# contact details), for the agenda: prevention reminders by age.
PATIENT_BIRTH_READER = "patient_birth_reader"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# What each service account may do, as roles in its access tokens.
SERVICE_ROLES: dict[str, tuple[str, ...]] = {
    "notify": ("contact_reader",),
    # writes each dossier's REMB document, as the insurer's feed
    "ingest": ("insurer",),
    "consent": (DOSSIER_STATE_READER, CONSENT_CHANGE_MARKER, PATIENT_NAME_READER),
    "dossier": (EXPORT_READER,),
    "agenda": (PATIENT_BIRTH_READER,),
}
ASSERTION_LIFETIME_SECONDS = 120
RENEW_BEFORE_SECONDS = 60


def client_id(service: str) -> str:
    return f"{PREFIX}{service}"


# Published development keys, one per service account: accepted with DMP_ENV=dev only.
DEV_SERVICE_ACCOUNT_KEYS = {name: dev_key(f"service-account/{name}") for name in SERVICE_ROLES}


def public_key_of(private_key: bytes) -> str:
    """The public half (base64 of its 32 raw bytes) of a service account's key."""
    public = Ed25519PrivateKey.from_private_bytes(private_key).public_key()
    return base64.b64encode(public.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


DEV_SERVICE_PUBLIC_KEYS = {
    name: public_key_of(base64.b64decode(key)) for name, key in DEV_SERVICE_ACCOUNT_KEYS.items()
}


def public_pem(public_key: str) -> str:
    """A public key given as base64 of its raw bytes, as PEM (what identity's clients hold)."""
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def client_assertion(
    private_key: bytes, service: str, audience: str, clock: Clock | None = None
) -> str:
    """Dated by the injected clock when given: identity judges it by its own."""
    now = int(clock.now().timestamp() if clock else time.time())
    cid = client_id(service)
    claims = {
        "iss": cid,
        "sub": cid,
        "aud": audience,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECONDS,
        "jti": str(uuid.uuid4()),
    }
    key = Ed25519PrivateKey.from_private_bytes(private_key)
    return jwt.encode(claims, key, algorithm="EdDSA")


Exchange = Callable[[str], Awaitable[tuple[str, int]]]
"""Sends a client assertion to identity; returns (access token, lifetime in seconds)."""


def identity_exchange(identity: Any, deadline: float) -> Exchange:
    """The exchange through identity's IssueClientToken (an IdentityServiceStub)."""

    async def exchange(assertion: str) -> tuple[str, int]:
        answer = await identity.IssueClientToken(
            identity_pb2.IssueClientTokenRequest(
                grant_type="client_credentials",
                client_assertion_type=ASSERTION_TYPE,
                client_assertion=assertion,
            ),
            **call_options(deadline, token=""),
        )
        return str(answer.access_token), int(answer.expires_in)

    return exchange


class ServiceTokens:
    """This service's own access token, fetched when needed and renewed before it expires."""

    def __init__(
        self,
        service: str,
        private_key: bytes,
        audience: str,
        exchange: Exchange,
        clock: Clock | None = None,
    ):
        self._service = service
        self._clock = clock
        self._private_key = private_key
        self._audience = audience
        self._exchange = exchange
        self._token: tuple[str, float] | None = None

    async def token(self, fresh: bool = False) -> str:
        """The token; `fresh`: a new one whatever this process thinks of the old."""
        now = time.monotonic()
        if fresh or self._token is None or self._token[1] - now < RENEW_BEFORE_SECONDS:
            assertion = client_assertion(
                self._private_key, self._service, self._audience, self._clock
            )
            token, lifetime = await self._exchange(assertion)
            self._token = (token, now + lifetime)
        return self._token[0]

    async def call(self, rpc: Callable[[str], Awaitable[T]]) -> T:
        """`rpc` with this service's token, and once more with a new one if the peer refuses
        it as unauthenticated: the peer's clock judges expiry (a moved test clock, skew
        between hosts). Other gRPC errors are left to the caller.

        Refused again, or refused its token by identity, this service cannot authenticate
        (a key, audience or configuration mismatch between services): nothing the person
        behind the request sent or can fix, so not their 401. It is Unavailable (503,
        retried later by a consumer) and an error in this service's log for its operators."""
        try:
            try:
                return await rpc(await self.token())
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
            return await rpc(await self.token(fresh=True))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
            log.error("service_token_refused", service=self._service, grpc_status=exc.code().name)
            raise Unavailable(
                "a service could not authenticate to another; try again in a moment"
            ) from exc

"""Identity's gRPC servicer: translates requests to the rules in `domain` and the `store`."""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from uuid6 import uuid7

from dmp.identity.v1 import identity_pb2 as pb
from dmp.identity.v1 import identity_pb2_grpc
from dmp.notify.v1 import notify_pb2, notify_pb2_grpc
from dmp_identity import domain
from dmp_identity.apps import ConnectedApps
from dmp_identity.config import IdentitySettings
from dmp_identity.events import login_events
from dmp_identity.passwords import Passwords
from dmp_identity.store import REPRESENTATION_ON, REPRESENTED, AppStore, IdentityStore
from dmp_kit.auth import CLIENT_ID_RE, JWKS_MAX_AGE_SECONDS, Principal, caller
from dmp_kit.clock import Clock
from dmp_kit.crypto import derive_key, keyed_digest, seal, unseal
from dmp_kit.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    Locked,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from dmp_kit.identifiers import validate_ins, validate_rpps
from dmp_kit.logging import get_logger
from dmp_kit.outbox import OutboxRelay
from dmp_kit.proto import timestamp
from dmp_kit.rpc.client import call_options
from dmp_kit.service_auth import (
    ASSERTION_TYPE,
    PATIENT_BIRTH_READER,
    PATIENT_NAME_READER,
    SERVICE_ROLES,
    public_pem,
)
from dmp_kit.service_auth import PREFIX as SERVICE_PREFIX
from dmp_kit.service_auth import client_id as service_client_id

log = get_logger(__name__)


def notify_channel(channel: str) -> notify_pb2.Channel.ValueType:
    """Notify's channel for an account's contact kind ("email", else the phone)."""
    return notify_pb2.CHANNEL_EMAIL if channel == "email" else notify_pb2.CHANNEL_SMS


KIND_TO_PB = {
    "patient": pb.ACCOUNT_KIND_PATIENT,
    "professional": pb.ACCOUNT_KIND_PROFESSIONAL,
    "admin": pb.ACCOUNT_KIND_ADMIN,
    "system": pb.ACCOUNT_KIND_SYSTEM,
    "service": pb.ACCOUNT_KIND_SERVICE,
    "agent": pb.ACCOUNT_KIND_AGENT,
}
PB_TO_KIND = {v: k for k, v in KIND_TO_PB.items()}
_CHANNELS = {pb.OTP_CHANNEL_EMAIL: "email", pb.OTP_CHANNEL_SMS: "sms"}
PUBLIC_METHODS = frozenset(
    f"/dmp.identity.v1.IdentityService/{m}"
    for m in (
        "Login",
        "VerifyOtp",
        "Refresh",
        "Logout",
        "IssueClientToken",
        "GetJwks",
        "StartActivation",
        "CompleteActivation",
        "OpposeAccount",
        "ListApps",
        "GetApp",
        "CheckAuthorization",
        "AppToken",
        "RevokeAppToken",
    )
)
DIRECTORY_ROLES = ("admin", "directory_sync")
SIGNING_KEY_RELOAD_SECONDS = 5.0


class KeyRing:
    """Identity's signing keys, kept sealed in its store (statuses: store.PUBLISHED_KEY_STATUSES).

    One key signs; the next one is published ahead of it, at least as long as a verifier keeps
    its copy of the JWKS (JWKS_MAX_AGE_SECONDS), so that a rotation never signs with a key a
    verifier does not hold yet. docs/signing-keys.md tells the whole life of a key.
    """

    def __init__(self, store: IdentityStore, master_key: bytes, clock: Clock) -> None:
        self._store = store
        self._seal_key = derive_key(master_key, "identity-signing-keys")
        self._clock = clock
        self._signing: tuple[str, bytes] | None = None
        self._loaded_at = float("-inf")

    async def ensure_key(self) -> None:
        """A key that signs and the next one, published ahead."""
        statuses = {k["status"] for k in await self._store.published_keys()}
        if "active" not in statuses:
            await self._create("active")
        if "next" not in statuses:
            await self._create("next")

    async def _create(self, status: str) -> str:
        kid, raw, jwk = domain.new_signing_key()
        await self._store.insert_key(
            {
                "_id": kid,
                "private_sealed": seal(self._seal_key, raw, kid.encode()),
                "public_jwk": jwk,
                "status": status,
                "created_at": self._clock.now(),
            }
        )
        return kid

    async def signing_key(self) -> tuple[str, bytes]:
        # Other replicas may rotate or revoke: reload often (a revoked key must stop signing).
        now = asyncio.get_running_loop().time()
        if self._signing is None or now - self._loaded_at > SIGNING_KEY_RELOAD_SECONDS:
            active = [k for k in await self._store.published_keys() if k["status"] == "active"]
            if not active:
                await self.ensure_key()
                active = [k for k in await self._store.published_keys() if k["status"] == "active"]
            newest = active[0]
            kid = str(newest["_id"])
            self._signing = (
                kid,
                unseal(self._seal_key, bytes(newest["private_sealed"]), kid.encode()),
            )
            self._loaded_at = now
        return self._signing

    async def jwks(self) -> list[dict[str, str]]:
        return [dict(k["public_jwk"]) for k in await self._store.published_keys()]

    async def fetch_public(self) -> Iterable[Mapping[str, str]]:
        return await self.jwks()

    async def published_ids(self) -> list[str]:
        return [str(k["kid"]) for k in await self.jwks()]

    async def rotate(self, access_ttl: timedelta) -> str:
        """The next key signs from now on, if every verifier holds it by now; the old one stays
        published until its tokens expire. Returns the new signing key's id."""
        now = self._clock.now()
        upcoming = await self._store.next_key()
        if upcoming is None:  # keys written before next keys existed
            await self._create("next")
            raise _too_soon(0.0)
        published_for = (now - upcoming["created_at"].astimezone(UTC)).total_seconds()
        if published_for < JWKS_MAX_AGE_SECONDS:
            raise _too_soon(published_for)
        kid = str(upcoming["_id"])
        await self._promote(kid, now, access_ttl)
        return kid

    async def revoke(self, kid: str, access_ttl: timedelta) -> str:
        """Withdraws a key from the JWKS for good. When it was signing, the next key signs at
        once (whatever its age: a verifier that does not hold it yet fetches it at its first
        token). Returns the id of the key that signs now."""
        now = self._clock.now()
        revoked = await self._store.revoke_key(kid, now)
        if revoked is None:
            raise NotFound("no published signing key has this id", field="key_id")
        if revoked["status"] == "active":
            upcoming = await self._store.next_key()
            if upcoming is not None:
                await self._promote(str(upcoming["_id"]), now, access_ttl)
        await self.ensure_key()
        self._signing = None
        return (await self.signing_key())[0]

    async def _promote(self, kid: str, now: datetime, access_ttl: timedelta) -> None:
        await self._store.retire_stale(now - access_ttl - timedelta(minutes=5))
        if await self._store.promote_key(kid, now):
            await self._store.retire_keys_except(kid, now)
        await self.ensure_key()
        self._signing = None


def _too_soon(published_for: float) -> Conflict:
    wait = max(1, math.ceil(JWKS_MAX_AGE_SECONDS - published_for))
    return Conflict(
        f"the next key was published {int(published_for)} s ago; verifiers may not all hold it "
        f"yet: rotate again in {wait} s",
        slug="rotation-too-soon",
        retry_after=wait,
    )


class IdentityServicer(ConnectedApps, identity_pb2_grpc.IdentityServiceServicer):
    def __init__(
        self,
        settings: IdentitySettings,
        store: IdentityStore,
        keys: KeyRing,
        clock: Clock,
        relay: OutboxRelay,
        notify: notify_pb2_grpc.NotifyServiceStub,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keys = keys
        self.clock = clock
        self.relay = relay
        self.notify = notify
        self.passwords = Passwords()
        self._pepper = derive_key(settings.identity_key_bytes, "identity-digests")
        self.policy = domain.LockoutPolicy(
            max_password_failures=settings.max_password_failures,
            max_otp_failures=settings.max_otp_failures,
            base=timedelta(seconds=settings.lock_base_seconds),
            cap=timedelta(seconds=settings.lock_max_seconds),
        )
        self._service_token: tuple[str, float, str] | None = None  # token, minted at, kid
        self.apps = AppStore(store)

    # helpers -----------------------------------------------------------------

    def _digest(self, value: str) -> str:
        return keyed_digest(self._pepper, value)

    async def _hash_password(self, password: str) -> str:
        return await self.passwords.hash(password)

    async def _representatives(self, ins: str, given: list[str]) -> list[str]:
        """A minor's legal representatives: registered patients, at most two, not themselves."""
        if len(given) > 2:
            raise InvalidArgument(
                "at most two legal representatives", field="legal_representatives"
            )
        found = []
        for i, raw in enumerate(given):
            rep = validate_ins(raw, field=f"legal_representatives.{i}")
            if rep == ins or await self.store.find_account("patient", rep) is None:
                raise InvalidArgument(
                    "a legal representative is another registered patient",
                    field=f"legal_representatives.{i}",
                )
            found.append(rep)
        return sorted(set(found))

    async def _initial_password_hash(self, password: str, context: list[str]) -> str | None:
        """A registration may come without a password: such an account cannot log in yet.
        `context`: what the person's password may not be built from."""
        if not password:
            return None
        return await self._hash_password(domain.validate_password(password, context))

    async def _password_ok(self, stored: str | None, password: str) -> bool:
        return await self.passwords.ok(stored, password)

    async def _reserve_password_attempt(
        self, throttle_id: str, now: datetime, event: dict[str, Any]
    ) -> str:
        """A place held for a password attempt before it is checked, so that concurrent
        attempts cannot outrun the lockout; the attempt's id. Raises `Locked` when none is
        free."""
        attempt = secrets.token_urlsafe(12)
        granted, throttle = await self.store.reserve_attempt(
            throttle_id, lambda t: t.reserve_password(now, self.policy, attempt)
        )
        if not granted:
            await self._record(throttle_id, _unchanged, outcome="locked", success=False, **event)
            raise Locked(
                "too many failed attempts; try again later", retry_after=throttle.retry_after(now)
            )
        return attempt

    async def _check_password(
        self,
        throttle_id: str,
        attempt: str,
        account: dict[str, Any] | None,
        password: str,
        now: datetime,
        event: dict[str, Any],
    ) -> bool:
        """Checks a password whose place is held, and settles the place with the outcome."""
        # Verify even when the account does not exist: same work, same timing.
        ok = await self._password_ok(account and account.get("password_hash"), password)
        ok = ok and account is not None and bool(account.get("password_hash"))
        await self._record(
            throttle_id,
            (lambda t: t.after_right_password(attempt))
            if ok
            else (lambda t: t.after_wrong_password(now, self.policy, attempt)),
            outcome="password_ok" if ok else "bad_password",
            success=ok,
            **event,
        )
        return ok

    async def _record(
        self,
        throttle_id: str,
        change: Callable[[domain.Throttle], domain.Throttle],
        **event: Any,
    ) -> domain.Throttle:
        """Applies `change` to the login's counters and records the login event, atomically."""
        after = await self.store.record_attempt(
            throttle_id, change, *login_events(clock=self.clock, **event)
        )
        self.relay.kick(self.store.throttles, throttle_id)
        return after

    async def _access_token(
        self, account: dict[str, Any], kind: str, ttl: int, session: str = ""
    ) -> str:
        kid, raw = await self.keys.signing_key()
        claims = domain.access_claims(
            account=account,
            kind=kind,
            issuer=self.settings.jwt_issuer,
            audience=self.settings.jwt_audience,
            now=self.clock.now(),
            ttl=timedelta(seconds=ttl),
            jti=str(uuid7()),
            session=session,
        )
        return domain.sign_access_token(claims, raw, kid)

    async def _token_pair(
        self,
        account: dict[str, Any],
        family: str,
        session_end: datetime,
        session: Mapping[str, Any],
    ) -> pb.TokenPair:
        """`session_end`: the login's absolute end, which no refresh moves; `session`: what the
        person's list of sessions shows of it (when it started, from which client)."""
        access = await self._access_token(
            account, account["kind"], self.settings.access_token_ttl_seconds, session=family
        )
        refresh = secrets.token_urlsafe(32)
        now = self.clock.now()
        await self.store.insert_refresh(
            {
                "_id": self._digest(refresh),
                "family": family,
                "account_id": account["_id"],
                "status": "active",
                "created_at": now,
                "expires_at": min(
                    now + timedelta(seconds=self.settings.refresh_token_ttl_seconds), session_end
                ),
                "session_expires_at": session_end,
                "session_started_at": session.get("session_started_at", now),
                "user_agent": session.get("user_agent", ""),
            }
        )
        return pb.TokenPair(
            access_token=access,
            refresh_token=refresh,
            token_type="Bearer",  # noqa: S106 - the OAuth token type
            expires_in=self.settings.access_token_ttl_seconds,
        )

    async def service_token(self) -> str:
        """Identity's own token for calling notify (a service account, minted locally), signed
        by the key that signs now: a revoked key ends it at once, not at its expiry (notify
        refuses what a revoked key signed, and no code would be sent until then)."""
        now = self.clock.now().timestamp()
        signing, _ = await self.keys.signing_key()
        held = self._service_token
        ttl = self.settings.service_token_ttl_seconds
        # A new one a minute before expiry; and when the one held is dated ahead of now (the
        # clock moved back since): notify would refuse it as not valid yet, until its expiry.
        if held is None or held[1] > now + 5 or now + 60 > held[1] + ttl or held[2] != signing:
            account = {"_id": "service:identity", "roles": ["otp_sender"]}
            token = await self._access_token(account, "service", ttl)
            self._service_token = held = (token, now, jwt.get_unverified_header(token)["kid"])
        return held[0]

    def _require_directory(self) -> None:
        caller().require_role(*DIRECTORY_ROLES)

    # directory -----------------------------------------------------------------

    async def RegisterPatient(
        self, request: pb.RegisterPatientRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterPatientResponse:
        self._require_directory()
        now = self.clock.now()
        today = now.astimezone(domain.PARIS).date()
        reg = domain.PatientRegistration.parse(
            ins=request.ins,
            vitale_serial=request.vitale_serial,
            given_name=request.given_name,
            family_name=request.family_name,
            birth_date=request.birth_date,
            email=request.email,
            phone=request.phone,
            today=today,  # a child born in Paris today
            declared_gp=request.declared_gp,
        )
        if await self.store.opposition(reg.ins) is not None:
            raise Conflict(
                "this person opposed the creation of their account; none can be opened until "
                "they withdraw their opposition",
                field="ins",
                slug="account-opposed",
            )
        if request.provisional and request.password:
            raise InvalidArgument(
                "a provisional account has no password: its person chooses one",
                field="password",
            )
        representatives = await self._representatives(reg.ins, list(request.legal_representatives))
        password_hash = await self._initial_password_hash(
            request.password, personal_context(asdict(reg))
        )
        doc: dict[str, Any] = {
            "_id": str(uuid7()),
            "kind": "patient",
            "login": reg.ins,
            "ins": reg.ins,
            "vitale_serial": reg.vitale_serial,
            "given_name": reg.given_name,
            "family_name": reg.family_name,
            "birth_date": reg.birth_date,
            "email": reg.email,
            "phone": reg.phone,
            "roles": [],
            "legal_representatives": representatives,
            # a minor: the schedule looks at them today, and gives them the day of their next step
            **(
                {REPRESENTED: True, REPRESENTATION_ON: today.isoformat()} if representatives else {}
            ),
            "declared_gp": reg.declared_gp,
            "password_hash": password_hash,
            "created_at": now,
        }
        code = ""
        if request.provisional:
            code = domain.new_provisional_code()
            doc |= {
                "status": "to_activate",
                "activation_due_at": now + timedelta(days=self.settings.activation_delay_days),
                "provisional_digest": self._provisional_digest(doc["_id"], code),
            }
        await self.store.insert_account(doc)
        log.info("patient_registered", account_id=doc["_id"], provisional=request.provisional)
        if code:
            channel = domain.channel_for(reg.email, reg.phone)
            await self._send_code(
                channel=channel,
                destination=reg.email if channel == "email" else reg.phone,
                code=code,
                challenge_id=f"activation:{doc['_id']}",
                valid_minutes=self.settings.activation_delay_days * 24 * 60,
                purpose=notify_pb2.CODE_PURPOSE_ACTIVATION,
            )
        return pb.RegisterPatientResponse(patient=_patient(doc, now))

    async def RegisterProfessional(
        self, request: pb.RegisterProfessionalRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterProfessionalResponse:
        self._require_directory()
        reg = domain.ProfessionalRegistration.parse(
            rpps=request.rpps,
            profession=request.profession,
            specialty=request.specialty,
            given_name=request.given_name,
            family_name=request.family_name,
            email=request.email,
            phone=request.phone,
            roles=list(request.roles),
            practice=request.practice,
        )
        password_hash = await self._initial_password_hash(
            request.password, personal_context(asdict(reg))
        )
        doc = {
            "_id": str(uuid7()),
            "kind": "professional",
            "login": reg.rpps,
            "rpps": reg.rpps,
            "profession": reg.profession,
            "specialty": reg.specialty,
            "given_name": reg.given_name,
            "family_name": reg.family_name,
            "email": reg.email,
            "phone": reg.phone,
            "roles": list(reg.roles),
            "practice": reg.practice,
            "password_hash": password_hash,
            "created_at": self.clock.now(),
        }
        await self.store.insert_account(doc)
        log.info("professional_registered", account_id=doc["_id"])
        return pb.RegisterProfessionalResponse(professional=_professional(doc))

    async def RegisterClient(
        self, request: pb.RegisterClientRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterClientResponse:
        caller().require_role("admin")
        client_id, roles = domain.validate_client(request.client_id, list(request.roles))
        if client_id.startswith(SERVICE_PREFIX):
            raise InvalidArgument(
                f"client ids starting with {SERVICE_PREFIX} are the platform's own services",
                field="client_id",
            )
        try:
            load_pem_public_key(request.public_key_pem.encode())
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InvalidArgument(
                "public_key_pem is not a PEM public key", field="public_key_pem"
            ) from exc
        now = self.clock.now()
        await self.store.insert_client(
            {
                "_id": client_id,
                "public_key_pem": request.public_key_pem,
                "roles": list(roles),
                "created_at": now,
            }
        )
        return pb.RegisterClientResponse(
            client_id=client_id, roles=roles, created_at=timestamp(now)
        )

    async def RegisterAgent(
        self, request: pb.RegisterAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterAgentResponse:
        caller().require_role("admin")
        login = domain.normalise_login("agent", request.login)
        if not domain.ADMIN_NAME_RE.match(login):
            raise InvalidArgument(
                "a login is 2 to 64 lowercase letters, digits or . _ -", field="login"
            )
        phone = domain.validate_phone(request.phone)
        doc: dict[str, Any] = {
            "_id": str(uuid7()),
            "kind": "agent",
            "login": login,
            "given_name": domain.check_name(request.given_name, "given_name"),
            "family_name": domain.check_name(request.family_name, "family_name"),
            "email": domain.validate_email(request.email, required=not phone),
            "phone": phone,
            "roles": list(domain.AGENT_ROLES),
            "created_at": self.clock.now(),
        }
        doc["password_hash"] = await self._initial_password_hash(
            request.password, personal_context(doc)
        )
        await self.store.insert_account(doc)
        return pb.RegisterAgentResponse(
            agent=pb.Agent(
                id=doc["_id"],
                login=login,
                given_name=doc["given_name"],
                family_name=doc["family_name"],
                email=doc["email"],
                phone=phone,
                roles=doc["roles"],
                created_at=timestamp(doc["created_at"]),
            )
        )

    async def LookupPatient(
        self, request: pb.LookupPatientRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupPatientResponse:
        """The patient themselves, administrators and services see the whole record; a
        professional (who finds a patient by INS, e.g. to open their DMP with their Vitale
        card) sees it without the patient's contact details."""
        who = caller()
        ins = validate_ins(request.ins)
        operator = (
            who.kind in ("admin", "service")
            or who.has_role("directory_sync")
            or who.has_role("contact_reader")  # notify, to reach the patient
        )
        full = operator or who.ins == ins
        birth_only = not full and who.has_role(PATIENT_BIRTH_READER)  # agenda, by age
        if not (
            full
            or birth_only
            or who.kind == "professional"
            or who.has_role("insurance_agent")
            or who.has_role(PATIENT_NAME_READER)  # consent, naming a trusted person
        ):
            raise NotFound("no such patient", field="ins")
        doc = await self.store.find_account("patient", ins)
        if doc is None:
            raise NotFound("no such patient", field="ins")
        found = _patient(doc, self.clock.now())
        # An account its person has neither activated nor opposed yet is not open: no one opens
        # a DMP for them meanwhile (they may still refuse it all).
        if found.status == "to_activate" and not operator:
            raise NotFound("no such patient", field="ins")
        if birth_only:
            # A birth reader gets the birth date and the account's status, not even the name.
            return pb.LookupPatientResponse(
                patient=pb.Patient(ins=found.ins, birth_date=found.birth_date, status=found.status)
            )
        if not (full or who.kind == "professional" or who.has_role("insurance_agent")):
            # A name reader gets the name and the account's status, nothing else.
            named = pb.Patient(
                ins=found.ins,
                given_name=found.given_name,
                family_name=found.family_name,
                status=found.status,
            )
            return pb.LookupPatientResponse(patient=named)
        if not full:
            found.ClearField("email")
            found.ClearField("phone")
        return pb.LookupPatientResponse(patient=found)

    async def LookupProfessional(
        self, request: pb.LookupProfessionalRequest, context: grpc.aio.ServicerContext
    ) -> pb.LookupProfessionalResponse:
        caller()  # any authenticated caller may resolve a professional's public identity
        rpps = validate_rpps(request.rpps)
        doc = await self.store.find_account("professional", rpps)
        if doc is None:
            raise NotFound("no such professional", field="rpps")
        found = _professional(doc)
        if not caller().has_role("contact_reader"):  # notify alone reaches professionals
            found.ClearField("email")
            found.ClearField("phone")
        return pb.LookupProfessionalResponse(professional=found)

    # login ---------------------------------------------------------------------------

    async def Login(
        self, request: pb.LoginRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoginResponse:
        kind = domain.validate_login_kind(PB_TO_KIND.get(request.kind, ""))
        login = domain.normalise_login(kind, request.login)
        if not login or len(login) > 64:
            raise InvalidArgument("login is required", field="login")
        if not request.password or len(request.password) > domain.MAX_PASSWORD:
            raise InvalidArgument("password is required", field="password")
        now = self.clock.now()
        throttle_id = self._digest(f"{kind}:{login}")
        account = await self.store.find_account(kind, login)
        event = {"kind": kind, "account": account, "client_ip": request.client_ip}
        attempt = await self._reserve_password_attempt(throttle_id, now, event)
        # Settled even when this call is cancelled meanwhile (the caller's deadline while the
        # hash waits for a thread): the check goes on and its outcome is written.
        ok = await asyncio.shield(
            self._check_password(throttle_id, attempt, account, request.password, now, event)
        )
        if not ok or account is None:
            raise Unauthenticated("wrong login or password", slug="invalid-credentials")

        challenge_id = secrets.token_urlsafe(24)
        channel = domain.channel_for(account.get("email", ""), account.get("phone", ""))
        expires = await self._code_challenge(
            challenge_id,
            "login",
            account,
            channel,
            account["email"] if channel == "email" else account["phone"],
        )
        return pb.LoginResponse(
            challenge_id=challenge_id,
            channel=pb.OTP_CHANNEL_EMAIL if channel == "email" else pb.OTP_CHANNEL_SMS,
            expires_at=timestamp(expires),
        )

    async def _settle_code(
        self, challenge: dict[str, Any], code: str, account: dict[str, Any], now: datetime
    ) -> None:
        """Checks a one-time code under the account's lockout, and uses its challenge up; raises
        `Locked` or `Unauthenticated` (invalid-otp, otp-expired) when it does not pass."""
        throttle_id = challenge["throttle_id"]
        throttle = await self.store.throttle(throttle_id)
        event = {"kind": account["kind"], "account": account}
        if locked := throttle.locked_for(now):
            await self._record(throttle_id, _unchanged, outcome="locked", success=False, **event)
            raise Locked("too many failed attempts; try again later", retry_after=locked)
        if challenge["expires_at"].astimezone(UTC) < now:
            await self.store.consume_challenge(challenge["_id"])
            await self._record(
                throttle_id, _unchanged, outcome="otp_expired", success=False, **event
            )
            raise Unauthenticated("the code has expired; start again", slug="otp-expired")
        # Each guess takes one of the challenge's few before it is checked, whatever the
        # concurrency: guesses sent at once cannot all be checked before one failure is written.
        if not await self.store.claim_guess(
            challenge["_id"], self.policy.max_otp_failures, challenge["expires_at"]
        ):
            await self._record(throttle_id, _unchanged, outcome="locked", success=False, **event)
            locked = (await self.store.throttle(throttle_id)).locked_for(now)
            raise Locked(
                "too many codes tried on this challenge; start again",
                retry_after=locked or int(self.policy.base.total_seconds()),
            )
        expected = challenge["code_digest"]
        if not domain.otp_matches(expected, self._digest(f"{challenge['_id']}:{code}")):
            await self._record(
                throttle_id,
                lambda t: t.after_wrong_code(now, self.policy),
                outcome="bad_otp",
                success=False,
                **event,
            )
            raise Unauthenticated("wrong or used code", slug="invalid-otp")
        if not await self.store.consume_challenge(challenge["_id"]):
            raise Unauthenticated("wrong or used code", slug="invalid-otp")

    async def _as_identity(self) -> dict[str, Any]:
        """Call options for notify: identity's own token, the configured deadline."""
        return call_options(self.settings.grpc_deadline_seconds, token=await self.service_token())

    async def _send_code(
        self,
        *,
        channel: str,
        destination: str,
        code: str,
        challenge_id: str,
        valid_minutes: int,
        purpose: notify_pb2.CodePurpose.ValueType = notify_pb2.CODE_PURPOSE_UNSPECIFIED,
    ) -> None:
        try:
            await self.notify.SendOtp(
                notify_pb2.SendOtpRequest(
                    channel=notify_channel(channel),
                    destination=destination,
                    code=code,
                    valid_minutes=valid_minutes,
                    challenge_id=challenge_id,
                    purpose=purpose,
                ),
                **await self._as_identity(),
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                raise
            # Notify refused identity's own credentials: nothing the person sent, and nothing
            # they can fix, so not a 401 or 403 to them; an operator's alarm instead.
            log.error("notify_refused_identity", grpc_status=exc.code().name)
            raise Unavailable("the code could not be sent; try again in a moment") from exc

    async def VerifyOtp(
        self, request: pb.VerifyOtpRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyOtpResponse:
        if not request.challenge_id or len(request.challenge_id) > 64:
            raise InvalidArgument("challenge_id is required", field="challenge_id")
        if not (len(request.code) == domain.OTP_DIGITS and request.code.isdigit()):
            raise InvalidArgument("the code is 6 digits", field="code")
        now = self.clock.now()
        challenge = await self.store.get_challenge(request.challenge_id)
        # A code sent for anything but a login (a new address, an activation) opens no session.
        if challenge is None or challenge["used"] or challenge.get("purpose", "login") != "login":
            raise Unauthenticated("wrong or used code", slug="invalid-otp")
        account = await self.store.get_account(challenge["account_id"])
        if account is None:
            raise Unauthenticated("wrong or used code", slug="invalid-otp")
        await self._settle_code(challenge, request.code, account, now)
        throttle_id = challenge["throttle_id"]
        event = {"kind": account["kind"], "account": account}
        await self._record(throttle_id, _reset, outcome="otp_ok", success=True, **event)
        session_end = now + timedelta(seconds=self.settings.session_max_seconds)
        started = {"session_started_at": now, "user_agent": request.user_agent[:200]}
        return pb.VerifyOtpResponse(
            tokens=await self._token_pair(account, str(uuid7()), session_end, started)
        )

    async def Refresh(
        self, request: pb.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefreshResponse:
        if not request.refresh_token or len(request.refresh_token) > 128:
            raise InvalidArgument("refresh_token is required", field="refresh_token")
        now = self.clock.now()
        digest = self._digest(request.refresh_token)
        used = await self.store.use_refresh(digest, now)
        if used is None:
            known = await self.store.get_refresh(digest)
            if known is not None and known["status"] == "used":
                # A used token presented again: someone holds a copy. Revoke the whole family.
                await self.store.revoke_family(known["family"], now)
                log.warning("refresh_token_reuse", family=known["family"])
                raise Unauthenticated(
                    "this refresh token was already used; all sessions from it are revoked",
                    slug="refresh-token-reused",
                )
            if known is not None and known["status"] == "active" and _session_end(known) <= now:
                raise Unauthenticated(
                    "the session has reached its maximum lifetime; log in again",
                    slug="session-expired",
                )
            raise Unauthenticated("the refresh token is invalid or expired", slug="invalid-token")
        account = await self.store.get_account(used["account_id"])
        if account is None:
            raise Unauthenticated("the account no longer exists", slug="invalid-token")
        return pb.RefreshResponse(
            tokens=await self._token_pair(account, used["family"], _session_end(used), used)
        )

    async def Logout(
        self, request: pb.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.LogoutResponse:
        known = await self.store.get_refresh(self._digest(request.refresh_token))
        if known is not None:
            await self.store.revoke_family(known["family"], self.clock.now())
        return pb.LogoutResponse()

    async def IssueClientToken(
        self, request: pb.IssueClientTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.IssueClientTokenResponse:
        if request.grant_type != "client_credentials":
            raise InvalidArgument(
                "grant_type must be client_credentials",
                field="grant_type",
                slug="unsupported-grant-type",
            )
        if request.client_assertion_type != ASSERTION_TYPE:
            raise InvalidArgument(
                f"client_assertion_type must be {ASSERTION_TYPE}",
                field="client_assertion_type",
                slug="invalid-client",
            )
        try:
            unverified = jwt.decode(request.client_assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthenticated(
                "the client assertion is not a JWT", slug="invalid-client"
            ) from exc
        client_id = str(unverified.get("iss", ""))
        # A client registered before ids had to start with a letter gets no token: its id could
        # be a person's.
        client = await self.store.get_client(client_id) if CLIENT_ID_RE.match(client_id) else None
        now = self.clock.now()
        throttle_id = self._digest(f"system:{client_id}")
        event = {"kind": "system", "account": client}
        if client is None:
            raise Unauthenticated("unknown client", slug="invalid-client")
        audiences = [
            f"{self.settings.public_base_url.rstrip('/')}/v1/auth/token",
            self.settings.jwt_issuer,
        ]
        try:
            claims = jwt.decode(
                request.client_assertion,
                client["public_key_pem"],
                algorithms=["EdDSA", "ES256", "RS256", "PS256"],
                audience=audiences,
                # Time is judged below against the injected clock, like every token's.
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                },
            )
            jti = domain.check_assertion_claims(claims, client_id, now)
        except (jwt.PyJWTError, InvalidArgument) as exc:
            await self._record(
                throttle_id, _unchanged, outcome="bad_assertion", success=False, **event
            )
            raise Unauthenticated("the client assertion is invalid", slug="invalid-client") from exc
        expires = datetime.fromtimestamp(float(claims["exp"]), UTC)
        if not await self.store.remember_assertion(f"{client_id}:{jti}", expires):
            raise Unauthenticated("this client assertion was already used", slug="invalid-client")
        await self._record(throttle_id, _reset, outcome="client_credentials", success=True, **event)
        account = {"_id": client_id, "client_id": client_id, "roles": client["roles"]}
        ttl = self.settings.access_token_ttl_seconds
        return pb.IssueClientTokenResponse(
            access_token=await self._access_token(account, "system", ttl),
            token_type="Bearer",  # noqa: S106 - the OAuth token type
            expires_in=ttl,
        )

    # keys and the caller ---------------------------------------------------------

    async def GetJwks(
        self, request: pb.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(keys=[pb.Jwk(**k) for k in await self.keys.jwks()])

    async def RotateSigningKey(
        self, request: pb.RotateSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateSigningKeyResponse:
        caller().require_role("admin")
        kid = await self.keys.rotate(timedelta(seconds=self.settings.access_token_ttl_seconds))
        log.info("signing_key_rotated", kid=kid)
        return pb.RotateSigningKeyResponse(
            new_key_id=kid, published_key_ids=await self.keys.published_ids()
        )

    async def RevokeSigningKey(
        self, request: pb.RevokeSigningKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeSigningKeyResponse:
        caller().require_role("admin")
        if not request.key_id or len(request.key_id) > 64:
            raise InvalidArgument("key_id is required", field="key_id")
        signing = await self.keys.revoke(
            request.key_id, timedelta(seconds=self.settings.access_token_ttl_seconds)
        )
        log.warning("signing_key_revoked", kid=request.key_id, signing_kid=signing)
        return pb.RevokeSigningKeyResponse(
            revoked_key_id=request.key_id,
            signing_key_id=signing,
            published_key_ids=await self.keys.published_ids(),
        )

    async def GetMe(
        self, request: pb.GetMeRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetMeResponse:
        who = caller()
        me = pb.GetMeResponse(
            kind=KIND_TO_PB.get(who.kind, pb.ACCOUNT_KIND_UNSPECIFIED),
            id=who.subject,
            ins=who.ins,
            rpps=who.rpps,
            profession=who.profession,
            specialty=who.specialty,
            roles=sorted(who.roles),
            login=who.client_id,
        )
        if who.kind in domain.PERSON_KINDS:
            account = await self.store.get_account(who.subject)
            if account is None:
                raise NotFound("the account no longer exists")
            me.given_name = account.get("given_name", "")
            me.family_name = account.get("family_name", "")
            me.login = account["login"]
        return me

    # self-service -------------------------------------------------------------------

    async def _own_account(self) -> tuple[Principal, dict[str, Any]]:
        """The person calling, and their account: self-service is for people only."""
        who = caller()
        who.require_kind(*domain.PERSON_KINDS)
        account = await self.store.get_account(who.subject)
        if account is None:
            raise NotFound("the account no longer exists")
        return who, account

    async def _check_current_password(
        self, account: dict[str, Any], password: str, client_ip: str
    ) -> None:
        """The person's current password, checked as a login's is: the same counters, the
        same lockout, the same events."""
        if not password or len(password) > domain.MAX_PASSWORD:
            raise InvalidArgument("current_password is required", field="current_password")
        now = self.clock.now()
        kind = account["kind"]
        throttle_id = self._digest(f"{kind}:{account['login']}")
        event = {"kind": kind, "account": account, "client_ip": client_ip}
        attempt = await self._reserve_password_attempt(throttle_id, now, event)
        ok = await asyncio.shield(
            self._check_password(throttle_id, attempt, account, password, now, event)
        )
        if not ok:
            raise InvalidArgument(
                "Le mot de passe actuel n'est pas le bon.",
                field="current_password",
                slug="wrong-password",
            )

    async def ChangePassword(
        self, request: pb.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangePasswordResponse:
        who, account = await self._own_account()
        # The new password first: a refusal of it costs the person none of their attempts.
        new = domain.validate_password(
            request.new_password, personal_context(account), field_name="new_password"
        )
        await self._check_current_password(account, request.current_password, request.client_ip)
        now = self.clock.now()
        await self.store.set_password(account["_id"], await self._hash_password(new), now)
        ended = await self._end_sessions(account["_id"], keep=_session_of(who))
        log.info("password_changed", account_id=account["_id"], sessions_ended=ended)
        return pb.ChangePasswordResponse(sessions_ended=ended)

    async def _end_sessions(self, account_id: str, keep: str = "") -> int:
        """Ends the person's other sessions, and every app connected to their account: a
        password changed or « end all sessions » is what one does when one fears a token was
        taken, and a connection made with it would otherwise outlive both."""
        now = self.clock.now()
        await self.apps.end_connections({"account_id": account_id}, now)
        ended = 0
        for live in await self.store.live_sessions(account_id, now):
            if live["family"] != keep:
                await self.store.revoke_family(live["family"], now)
                ended += 1
        return ended

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        who, account = await self._own_account()
        current = _session_of(who)
        return pb.ListSessionsResponse(
            sessions=[
                pb.Session(
                    id=live["family"],
                    created_at=timestamp(live.get("session_started_at", live["created_at"])),
                    last_used_at=timestamp(live["created_at"]),
                    expires_at=timestamp(live["expires_at"]),
                    user_agent=live.get("user_agent", ""),
                    current=live["family"] == current,
                )
                for live in await self.store.live_sessions(account["_id"], self.clock.now())
            ]
        )

    async def EndSession(
        self, request: pb.EndSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndSessionResponse:
        _, account = await self._own_account()
        now = self.clock.now()
        mine = {live["family"] for live in await self.store.live_sessions(account["_id"], now)}
        if request.session_id not in mine:
            raise NotFound("no such session of yours", field="session_id")
        await self.store.revoke_family(request.session_id, now)
        return pb.EndSessionResponse()

    async def EndSessions(
        self, request: pb.EndSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndSessionsResponse:
        who, account = await self._own_account()
        keep = _session_of(who) if request.keep_current else ""
        return pb.EndSessionsResponse(ended=await self._end_sessions(account["_id"], keep=keep))

    async def _code_challenge(
        self,
        challenge_id: str,
        purpose: str,
        account: dict[str, Any],
        channel: str,
        address: str,
        kept: dict[str, str] | None = None,
    ) -> datetime:
        """A 6-digit code sent to `address`, and the challenge that awaits it: a login's, or one
        for an address the person wants on their account (`kept`: what the change is); when it
        expires. Codes guessed on it count towards the login's lockout."""
        now = self.clock.now()
        code = domain.new_otp()
        expires = now + timedelta(seconds=self.settings.otp_ttl_seconds)
        await self.store.insert_challenge(
            {
                "_id": challenge_id,
                "purpose": purpose,
                "account_id": account["_id"],
                "throttle_id": self._digest(f"{account['kind']}:{account['login']}"),
                "code_digest": self._digest(f"{challenge_id}:{code}"),
                **(kept or {}),
                "expires_at": expires,
                "used": False,
                "created_at": now,
            }
        )
        await self._send_code(
            channel=channel,
            destination=address,
            code=code,
            challenge_id=challenge_id,
            valid_minutes=max(1, self.settings.otp_ttl_seconds // 60),
            purpose=(
                notify_pb2.CODE_PURPOSE_UNSPECIFIED
                if purpose == "login"
                else notify_pb2.CODE_PURPOSE_CONTACT
            ),
        )
        return expires

    async def StartContactChange(
        self, request: pb.StartContactChangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartContactChangeResponse:
        _, account = await self._own_account()
        channel = _CHANNELS.get(request.channel)
        if channel is None:
            raise InvalidArgument("channel is email or sms", field="channel")
        address = domain.validate_contact(channel, request.address)
        change_id = secrets.token_urlsafe(24)
        expires = await self._code_challenge(
            change_id,
            "contact",
            account,
            channel,
            address,
            {"channel": channel, "address": address},
        )
        return pb.StartContactChangeResponse(change_id=change_id, expires_at=timestamp(expires))

    async def ConfirmContactChange(
        self, request: pb.ConfirmContactChangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmContactChangeResponse:
        _, account = await self._own_account()
        if not request.change_id or len(request.change_id) > 64:
            raise InvalidArgument("change_id is required", field="change_id")
        if not (len(request.code) == domain.OTP_DIGITS and request.code.isdigit()):
            raise InvalidArgument("the code is 6 digits", field="code")
        challenge = await self.store.get_challenge(request.change_id)
        # Another person's change, or no change at all: the same answer as a wrong code.
        if (
            challenge is None
            or challenge.get("purpose") != "contact"
            or challenge["account_id"] != account["_id"]
            or challenge["used"]
        ):
            raise InvalidArgument("wrong or used code", field="code", slug="invalid-otp")
        try:
            await self._settle_code(challenge, request.code, account, self.clock.now())
        except Unauthenticated as exc:
            # The person is logged in: their token is fine, the code is not.
            raise InvalidArgument(exc.detail, field="code", slug=exc.problem) from exc
        channel = challenge["channel"]
        key = "email" if channel == "email" else "phone"
        before = account.get(key, "")
        await self.store.set_contact(account["_id"], key, challenge["address"])
        log.info("contact_changed", account_id=account["_id"], contact=key)
        if before and before != challenge["address"]:
            await self._tell_old_address(channel, before, challenge["_id"])
        after = {**account, key: challenge["address"]}
        return pb.ConfirmContactChangeResponse(email=after["email"], phone=after["phone"])

    async def _tell_old_address(self, channel: str, address: str, change_id: str) -> None:
        """The address a change replaced is told of it. The change is made already: a notice
        that cannot be sent now is logged, not a reason to undo it."""
        try:
            await self.notify.SendAccountNotice(
                notify_pb2.SendAccountNoticeRequest(
                    channel=notify_channel(channel),
                    destination=address,
                    notice=(
                        notify_pb2.ACCOUNT_NOTICE_EMAIL_CHANGED
                        if channel == "email"
                        else notify_pb2.ACCOUNT_NOTICE_PHONE_CHANGED
                    ),
                    change_id=change_id,
                ),
                **await self._as_identity(),
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("contact_change_notice_not_sent", code=exc.code().name)

    # activation of the accounts the directory creates ----------------------------------

    def _provisional_digest(self, account_id: str, code: str) -> str:
        return self._digest(f"provisional:{account_id}:{code}")

    async def _provisional_holder(
        self, ins_given: str, serial: str, code_given: str, client_ip: str
    ) -> dict[str, Any]:
        """The account awaiting activation that these prove to be the caller's: checked as a
        login's password is (the same counters and lockout), with one answer for a wrong code,
        a wrong serial, an account that does not exist or awaits nothing."""
        ins = validate_ins(ins_given)
        code = domain.normalise_provisional_code(code_given)
        if not serial.strip() or len(serial) > 32:
            raise InvalidArgument("vitale_serial is required", field="vitale_serial")
        now = self.clock.now()
        throttle_id = self._digest(f"patient:{ins}")
        account = await self.store.find_account("patient", ins)
        event = {"kind": "patient", "account": account, "client_ip": client_ip}
        attempt = await self._reserve_password_attempt(throttle_id, now, event)
        expected = (account or {}).get("provisional_digest") or self._digest("no-account")
        matches = domain.otp_matches(
            expected, self._provisional_digest(str((account or {}).get("_id", "")), code)
        )
        ok = (
            account is not None
            and matches
            and bool(account.get("provisional_digest"))
            and account["vitale_serial"].upper() == serial.strip().upper()
        )
        await self._record(
            throttle_id,
            (lambda t: t.after_right_password(attempt))
            if ok
            else (lambda t: t.after_wrong_password(now, self.policy, attempt)),
            outcome="provisional_ok" if ok else "bad_provisional",
            success=ok,
            **event,
        )
        if not ok or account is None:
            raise Unauthenticated(
                "wrong INS, Vitale card serial or provisional code", slug="invalid-credentials"
            )
        return account

    async def StartActivation(
        self, request: pb.StartActivationRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartActivationResponse:
        email = domain.validate_email(request.email)
        phone = domain.validate_contact("sms", request.phone)
        account = await self._provisional_holder(
            request.ins, request.vitale_serial, request.provisional_code, request.client_ip
        )
        activation_id = secrets.token_urlsafe(24)
        for channel, address in (("email", email), ("sms", phone)):
            expires = await self._code_challenge(
                f"{activation_id}:{channel}",
                "activation",
                account,
                channel,
                address,
                {"email": email, "phone": phone},
            )
        return pb.StartActivationResponse(
            activation_id=activation_id, expires_at=timestamp(expires)
        )

    async def CompleteActivation(
        self, request: pb.CompleteActivationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompleteActivationResponse:
        if not request.activation_id or len(request.activation_id) > 64:
            raise InvalidArgument("activation_id is required", field="activation_id")
        for name, code in (("email_code", request.email_code), ("sms_code", request.sms_code)):
            if not (len(code) == domain.OTP_DIGITS and code.isdigit()):
                raise InvalidArgument("the code is 6 digits", field=name)
        challenges = [
            await self.store.get_challenge(f"{request.activation_id}:{channel}")
            for channel in ("email", "sms")
        ]
        account = (
            await self.store.get_account(challenges[0]["account_id"])
            if challenges[0] is not None
            else None
        )
        if (
            account is None
            or not account.get("provisional_digest")
            or any(
                c is None
                or c.get("purpose") != "activation"
                or c["used"]
                or c["account_id"] != account["_id"]
                for c in challenges
            )
        ):
            raise Unauthenticated("wrong or used code", slug="invalid-otp")
        email_challenge, sms_challenge = challenges
        assert email_challenge is not None and sms_challenge is not None
        email, phone = email_challenge["email"], email_challenge["phone"]
        # The password before the codes: refusing it costs the person none of their guesses.
        password = domain.validate_password(
            request.password, personal_context({**account, "email": email, "phone": phone})
        )
        now = self.clock.now()
        await self._settle_code(email_challenge, request.email_code, account, now)
        await self._settle_code(sms_challenge, request.sms_code, account, now)
        activated = await self.store.activate(
            account["_id"],
            {
                "email": email,
                "phone": phone,
                "password_hash": await self._hash_password(password),
                "status": "active",
                "activated_at": now,
            },
        )
        if not activated:
            raise Unauthenticated("wrong or used code", slug="invalid-otp")
        log.info("account_activated", account_id=account["_id"])
        return pb.CompleteActivationResponse()

    async def OpposeAccount(
        self, request: pb.OpposeAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.OpposeAccountResponse:
        account = await self._provisional_holder(
            request.ins, request.vitale_serial, request.provisional_code, request.client_ip
        )
        now = self.clock.now()
        if domain.account_status(account, now) != "to_activate":
            raise Conflict(
                "the account became active at the end of the legal delay: it can no longer be "
                "opposed, only closed",
                slug="opposition-too-late",
            )
        # The opposition first: past a crash in between, it still keeps the INS closed, and the
        # account goes at the next try.
        await self.store.record_opposition(account["ins"], now)
        await self.store.delete_account(account)
        log.info("account_opposed", account_id=account["_id"])
        return pb.OpposeAccountResponse()

    async def GetAccountStatus(
        self, request: pb.GetAccountStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAccountStatusResponse:
        self._require_directory()
        ins = validate_ins(request.ins)
        account = await self.store.find_account("patient", ins)
        if account is not None:
            found = _patient(account, self.clock.now())
            return pb.GetAccountStatusResponse(
                status=found.status,
                activation_due_at=found.activation_due_at
                if found.HasField("activation_due_at")
                else None,
            )
        if await self.store.opposition(ins) is not None:
            return pb.GetAccountStatusResponse(status="opposed")
        raise NotFound("no such patient", field="ins")

    async def WithdrawOpposition(
        self, request: pb.WithdrawOppositionRequest, context: grpc.aio.ServicerContext
    ) -> pb.WithdrawOppositionResponse:
        self._require_directory()
        ins = validate_ins(request.ins)
        if not await self.store.withdraw_opposition(ins):
            raise NotFound("this person has no opposition on record", field="ins")
        log.info("opposition_withdrawn")
        return pb.WithdrawOppositionResponse()

    # start-up ---------------------------------------------------------------------

    async def provision_service_clients(self) -> None:
        """The platform's own services as OAuth2 clients (dmp_kit.service_auth): their public
        keys come from configuration, so they are (re)written at every start, and a service
        account whose key is no longer configured is removed: its old key (one derived from a
        former shared secret, say) must not still get tokens."""
        configured: list[str] = []
        for service, roles in SERVICE_ROLES.items():
            if (public_key := self.settings.service_public_key(service)) is None:
                continue
            configured.append(service_client_id(service))
            await self.store.put_client(
                {
                    "_id": service_client_id(service),
                    "public_key_pem": public_pem(public_key),
                    "roles": list(roles),
                    "created_at": self.clock.now(),
                }
            )
        removed = await self.store.remove_service_clients_except(SERVICE_PREFIX, configured)
        if removed:
            log.warning("service_clients_removed", count=removed)

    async def bootstrap_admin(self) -> None:
        password = self.settings.admin_password()
        if not password:
            return
        if await self.store.find_account("admin", "admin") is not None:
            return
        # Every replica does this at its start, maybe at once: one id for the one account,
        # so the replica that loses the race finds it there (AlreadyExists) and goes on.
        with contextlib.suppress(AlreadyExists):
            await self._insert_bootstrap_admin(password)

    async def _insert_bootstrap_admin(self, password: str) -> None:
        await self.store.insert_account(
            {
                "_id": str(uuid.uuid5(uuid.NAMESPACE_URL, "dmp:bootstrap-admin")),
                "kind": "admin",
                "login": "admin",
                "email": self.settings.bootstrap_admin_email,
                "phone": "",
                "given_name": "Administrateur",
                "family_name": "DMP",
                "roles": [],
                "password_hash": await self._hash_password(password),
                "created_at": self.clock.now(),
            }
        )
        log.info("bootstrap_admin_created")


def _unchanged(throttle: domain.Throttle) -> domain.Throttle:
    return throttle


def _reset(_: domain.Throttle) -> domain.Throttle:
    return domain.Throttle()


def _session_of(who: Principal) -> str:
    """The session (refresh-token family) the caller's token was issued for: its `sid` claim
    (the token was verified before the call reached the servicer)."""
    claims = jwt.decode(who.token, options={"verify_signature": False})
    return str(claims.get("sid", ""))


def _session_end(refresh: dict[str, Any]) -> datetime:
    # Tokens issued before sessions had an end: theirs is their own expiry.
    end: datetime = refresh.get("session_expires_at", refresh["expires_at"])
    return end.astimezone(UTC)


def personal_context(account: Mapping[str, Any]) -> list[str]:
    """What the person's password may not be built from: their names, identifiers and
    contact details, as an account (or a registration) holds them."""
    return [str(account[key]) for key in domain.CONTEXT_FIELDS if account.get(key)]


def _patient(doc: dict[str, Any], now: datetime) -> pb.Patient:
    status = domain.account_status(doc, now)
    return pb.Patient(
        status=status,
        activation_due_at=(
            timestamp(doc["activation_due_at"]) if status == "to_activate" else None
        ),
        id=doc["_id"],
        ins=doc["ins"],
        vitale_serial=doc["vitale_serial"],
        given_name=doc["given_name"],
        family_name=doc["family_name"],
        birth_date=doc["birth_date"],
        email=doc.get("email", ""),
        phone=doc.get("phone", ""),
        created_at=timestamp(doc["created_at"]),
        legal_representatives=doc.get("legal_representatives", []),
        declared_gp=doc.get("declared_gp", ""),
    )


def _professional(doc: dict[str, Any]) -> pb.Professional:
    return pb.Professional(
        id=doc["_id"],
        rpps=doc["rpps"],
        profession=doc["profession"],
        specialty=doc.get("specialty", ""),
        given_name=doc["given_name"],
        family_name=doc["family_name"],
        email=doc.get("email", ""),
        phone=doc.get("phone", ""),
        roles=doc.get("roles", []),
        created_at=timestamp(doc["created_at"]),
        practice=doc.get("practice", ""),
    )

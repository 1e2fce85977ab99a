"""Identity's rules: registration checks, lockout, one-time codes, token claims. No I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Any, Literal
from zoneinfo import ZoneInfo

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from dmp_kit.auth import ACCESS_TOKEN_TYP, ALGORITHM, CLIENT_ID_RE
from dmp_kit.errors import InvalidArgument
from dmp_kit.identifiers import validate_ins, validate_profession, validate_rpps

# Dates in France are Paris dates: a birth, a coming of age at midnight.
PARIS = ZoneInfo("Europe/Paris")

PersonKind = Literal["patient", "professional", "agent", "admin"]
PERSON_KINDS: tuple[PersonKind, ...] = ("patient", "professional", "agent", "admin")
AGENT_ROLES = ("insurance_agent",)
PROFESSIONAL_ROLES = frozenset({"samu_regulator"})
# mailbox: a health establishment's organisational mailbox in the secure messaging
CLIENT_ROLES = frozenset({"insurer", "facility", "directory_sync", "mailbox"})
ADMIN_NAME_RE = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
_PHONE_RE = re.compile(r"^\+?[0-9]{8,15}$")
_VITALE_RE = re.compile(r"^[0-9A-Za-z]{6,20}$")
MIN_PASSWORD = 12
MAX_PASSWORD = 256
OTP_DIGITS = 6


@dataclass(frozen=True)
class LockoutPolicy:
    max_password_failures: int
    max_otp_failures: int
    base: timedelta
    cap: timedelta
    # How long a password attempt's place is held while it is checked. Past the gateway's
    # deadline nobody can learn the attempt's outcome, so a place held longer protects nothing.
    lease: timedelta = timedelta(seconds=30)

    def lock_duration(self, previous_locks: int) -> timedelta:
        """Each lock lasts twice the one before (base, 2×base, 4×base …), up to the cap."""
        doubled: timedelta = self.base * (2 ** min(previous_locks, 30))
        return min(self.cap, doubled)


@dataclass
class Throttle:
    """Failure counters for one (kind, login), whether or not the login exists.

    A password attempt takes a place before it is checked (`reserve_password`), so that
    concurrent attempts cannot all be checked before the first failure is written: failures
    and places held never exceed `max_password_failures`. A place is a lease: settled by the
    attempt's outcome, or lapsing by itself when the attempt never ends (a crash), so that no
    abandoned attempt holds it for good.
    """

    password_failures: int = 0
    otp_failures: int = 0
    locks: int = 0
    locked_until: datetime | None = None
    leases: dict[str, datetime] = field(default_factory=dict)  # attempt id → when it lapses

    def locked_for(self, now: datetime) -> int:
        if self.locked_until is None or self.locked_until <= now:
            return 0
        return max(1, int((self.locked_until - now).total_seconds()))

    def retry_after(self, now: datetime) -> int:
        """Seconds until an attempt may be checked again: the lock's end, or else the first
        place held to lapse; at least 1."""
        if locked := self.locked_for(now):
            return locked
        live = [until for until in self.leases.values() if until > now]
        return max(1, math.ceil((min(live) - now).total_seconds())) if live else 1

    def reserve_password(
        self, now: datetime, policy: LockoutPolicy, attempt: str
    ) -> tuple[bool, Throttle]:
        """Whether `attempt` may be checked now, and the counters after: a place held for it
        until `policy.lease` has passed, or, when none is free, unchanged or locked."""
        if self.locked_for(now):
            return False, self
        if self.password_failures >= policy.max_password_failures:
            # At the limit without a lock (counts left by older attempts never settled): lock
            # now, as the last failure would have, so that the refusal ends.
            return False, self._locked(now, policy)
        live = {key: until for key, until in self.leases.items() if until > now}
        if self.password_failures + len(live) >= policy.max_password_failures:
            return False, replace(self, leases=live)
        return True, replace(self, leases={**live, attempt: now + policy.lease})

    def after_wrong_password(self, now: datetime, policy: LockoutPolicy, attempt: str) -> Throttle:
        """Its place becomes a failure; locks when failures and the places still held reach
        the limit, as the places were counted as failures. A place already gone (a lock
        settled it, or it lapsed) changes nothing."""
        if attempt not in self.leases:
            return self
        held = {key: until for key, until in self.leases.items() if until > now and key != attempt}
        failures = self.password_failures + 1
        if failures + len(held) >= policy.max_password_failures:
            return self._locked(now, policy)
        return replace(self, password_failures=failures, leases=held)

    def after_right_password(self, attempt: str) -> Throttle:
        """Its place is given back."""
        return replace(
            self, leases={key: until for key, until in self.leases.items() if key != attempt}
        )

    def after_wrong_code(self, now: datetime, policy: LockoutPolicy) -> Throttle:
        if self.otp_failures + 1 >= policy.max_otp_failures:
            return self._locked(now, policy)
        return replace(self, otp_failures=self.otp_failures + 1)

    def _locked(self, now: datetime, policy: LockoutPolicy) -> Throttle:
        return Throttle(0, 0, self.locks + 1, now + policy.lock_duration(self.locks))


def normalise_login(kind: str, login: str) -> str:
    login = login.strip()
    if kind == "patient":
        return login.upper()
    if kind in ("admin", "agent"):
        return login.lower()
    return login


def validate_login_kind(kind: str) -> PersonKind:
    if kind not in PERSON_KINDS:
        raise InvalidArgument("kind must be patient, professional, agent or admin", field="kind")
    return kind  # type: ignore[return-value]


def validate_password(
    password: str, context: Iterable[str] = (), field_name: str = "password"
) -> str:
    """A password a person may choose (NIST SP 800-63B §3.1.1.2): 12 to 256 characters, not
    in the list of common and breached passwords (nor a lightly decorated form of one), not a
    repetition or a sequence, and not built from `context`, the person's own names, numbers
    and addresses. A refusal tells the person why, in French: the portal shows it as it is."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidArgument(
            f"Le mot de passe doit compter entre {MIN_PASSWORD} et {MAX_PASSWORD} caractères.",
            field=field_name,
            slug="weak-password",
        )
    compact = _fold(password)
    spaced = "".join(password.casefold().split())
    if _is_trivial(spaced) or (len(compact) >= MIN_TRIVIAL_CHECK and _is_trivial(compact)):
        raise InvalidArgument(
            "Ce mot de passe est une répétition ou une suite de caractères "
            "(comme « aaaaaaaaaaaa » ou « 123456789012 ») : il se devine trop facilement.",
            field=field_name,
            slug="trivial-password",
        )
    if _is_common(password):
        raise InvalidArgument(
            "Ce mot de passe figure parmi les mots de passe les plus courants ou déjà divulgués "
            "lors de fuites de données : choisissez-en un autre.",
            field=field_name,
            slug="common-password",
        )
    if any(word in compact for word in password_context_words(context)):
        raise InvalidArgument(
            "Ce mot de passe contient une information qui vous concerne (nom, prénom, "
            "identifiant, adresse e-mail, téléphone ou date de naissance) ou le nom du service : "
            "choisissez-en un qui ne se déduise pas de vous.",
            field=field_name,
            slug="personal-password",
        )
    return password


# An account's fields a password may not be built from.
CONTEXT_FIELDS = (
    "login",
    "ins",
    "rpps",
    "given_name",
    "family_name",
    "birth_date",
    "email",
    "phone",
    "vitale_serial",
)
# The service's own names: a password built on them is among the first an attacker tries.
SERVICE_WORDS = ("monespacesante", "espacesante", "dossiermedical")
# A context word shorter than this is too common inside unrelated passwords to refuse them.
MIN_CONTEXT_WORD = 4
# Letters and digits needed for the trivial test to look at them alone ("1-2-3-4-5-6-7-8"):
# fewer, and the symbols carry the password.
MIN_TRIVIAL_CHECK = 8
# At most this many digits or symbols around a common password still make it one
# ("motdepasse2024!"): the list's entries are found under such decorations too.
MAX_DECORATION = 6
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
# Keyboard rows, each layout's rows end to end (azerty, then qwerty), and the alphabet and the
# digits: a password whose every step is to a neighbour on one of them is a sequence.
_RUNS = ("azertyuiopqsdfghjklmwxcvbn", "qwertyuiopasdfghjklzxcvbnm", "abcdefghijklmnopqrstuvwxyz")


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    # zxcvbn's list of the most used passwords, drawn from published breaches.
    return frozenset(FREQUENCY_LISTS["passwords"])


def _fold(value: str) -> str:
    """Lower case, without accents, letters and digits only."""
    decomposed = unicodedata.normalize("NFKD", value.casefold())
    return "".join(c for c in decomposed if c.isalnum() and not unicodedata.combining(c))


def password_context_words(values: Iterable[str]) -> set[str]:
    """The words a person's password may not contain: each value folded (an e-mail address
    also by its local part, a phone number also by its last nine digits, a date also as
    DDMMYYYY and YYYYMMDD), and the service's names."""
    words = set(SERVICE_WORDS)
    for value in values:
        value = value.strip()
        forms = [value]
        if "@" in value:
            forms.append(value.split("@", 1)[0])
        digits = "".join(c for c in value if c.isdigit())
        if value.lstrip("+").replace(" ", "").replace(".", "").isdigit() and len(digits) > 9:
            forms.append(digits[-9:])
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            year, month, day = value.split("-")
            forms += [f"{day}{month}{year}", f"{year}{month}{day}"]
        if "@" not in value and not digits:  # each part of a compound name ("Le Goff")
            forms += re.split(r"[\s-]+", value)
        words |= {folded for form in forms if len(folded := _fold(form)) >= MIN_CONTEXT_WORD}
    return words


def _is_common(password: str) -> bool:
    common = _common_passwords()
    folded = "".join(password.casefold().split())
    for candidate in (folded, folded.translate(_LEET)):
        core = re.sub(r"^[\W\d_]+|[\W\d_]+$", "", candidate)
        if candidate in common or (len(candidate) - len(core) <= MAX_DECORATION and core in common):
            return True
    return False


def _is_trivial(compact: str) -> bool:
    """Few distinct characters, a repeated unit ("abcabcabcabc"), or a run of neighbours on
    the alphabet, the digits or a keyboard ("123456789012", "azertyuiopqs")."""
    if len(set(compact)) < 4:
        return True
    size = len(compact)
    if any(compact == (compact[:p] * (size // p + 1))[:size] for p in range(1, size // 2 + 1)):
        return True
    return all(_neighbours(a, b) for a, b in pairwise(compact))


def _neighbours(a: str, b: str) -> bool:
    if a == b:
        return True
    if a.isdigit() and b.isdigit():
        return (int(a) - int(b)) % 10 in (1, 9)
    return any(
        a in run and b in run and abs(run.index(a) - run.index(b)) in (1, len(run) - 1)
        for run in _RUNS
    )


def check_name(value: str, field_name: str) -> str:
    return _text(value, field_name)


def _text(value: str, field_name: str, max_len: int = 100) -> str:
    value = value.strip()
    if not value or len(value) > max_len:
        raise InvalidArgument(
            f"{field_name} is required (at most {max_len} characters)", field=field_name
        )
    return value


def validate_email(value: str, required: bool = True) -> str:
    value = value.strip()
    if not value and not required:
        return ""
    if not _EMAIL_RE.match(value) or len(value) > 254:
        raise InvalidArgument("not an e-mail address", field="email")
    return value.lower()


def validate_phone(value: str) -> str:
    value = value.replace(" ", "").replace(".", "")
    if value and not _PHONE_RE.match(value):
        raise InvalidArgument("a phone number is 8 to 15 digits, optionally after +", field="phone")
    return value


def validate_birth_date(value: str, today: date) -> str:
    try:
        born = date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidArgument("birth_date is YYYY-MM-DD", field="birth_date") from exc
    if born > today or born.year < 1890:
        raise InvalidArgument("birth_date is not plausible", field="birth_date")
    return born.isoformat()


def validate_contact(channel: str, address: str) -> str:
    """A new address to reach the person: an e-mail address, or a phone number for SMS."""
    if channel == "email":
        return validate_email(address)
    phone = validate_phone(address)
    if not phone:
        raise InvalidArgument("a phone number is required", field="phone")
    return phone


@dataclass(frozen=True)
class PatientRegistration:
    ins: str
    vitale_serial: str
    given_name: str
    family_name: str
    birth_date: str
    email: str
    phone: str
    declared_gp: str = ""

    @classmethod
    def parse(
        cls,
        *,
        ins: str,
        vitale_serial: str,
        given_name: str,
        family_name: str,
        birth_date: str,
        email: str,
        phone: str,
        today: date,
        declared_gp: str = "",
    ) -> PatientRegistration:
        serial = vitale_serial.strip()
        if not _VITALE_RE.match(serial):
            raise InvalidArgument(
                "the Vitale card serial is 6 to 20 letters or digits", field="vitale_serial"
            )
        phone_ok = validate_phone(phone)
        email_ok = validate_email(email, required=not phone_ok)
        return cls(
            ins=validate_ins(ins),
            vitale_serial=serial,
            given_name=_text(given_name, "given_name"),
            family_name=_text(family_name, "family_name"),
            birth_date=validate_birth_date(birth_date, today),
            email=email_ok,
            phone=phone_ok,
            declared_gp=validate_rpps(declared_gp, field="declared_gp") if declared_gp else "",
        )


@dataclass(frozen=True)
class ProfessionalRegistration:
    rpps: str
    profession: str
    specialty: str
    given_name: str
    family_name: str
    email: str
    phone: str
    roles: tuple[str, ...] = field(default=())
    practice: str = ""

    @classmethod
    def parse(
        cls,
        *,
        rpps: str,
        profession: str,
        specialty: str,
        given_name: str,
        family_name: str,
        email: str,
        phone: str,
        roles: list[str],
        practice: str = "",
    ) -> ProfessionalRegistration:
        unknown = set(roles) - PROFESSIONAL_ROLES
        if unknown:
            raise InvalidArgument(f"unknown role(s): {', '.join(sorted(unknown))}", field="roles")
        phone_ok = validate_phone(phone)
        return cls(
            rpps=validate_rpps(rpps),
            profession=validate_profession(profession.strip()),
            specialty=specialty.strip()[:100],
            given_name=_text(given_name, "given_name"),
            family_name=_text(family_name, "family_name"),
            email=validate_email(email, required=not phone_ok),
            phone=phone_ok,
            roles=tuple(sorted(set(roles))),
            practice=validate_practice(practice),
        )


# The RPPS directory's modes of practice ("mode d'exercice"): libéral, salarié, mixte.
PRACTICES = frozenset({"liberal", "salaried", "mixed"})


def validate_practice(practice: str) -> str:
    value = practice.strip().lower()
    if value and value not in PRACTICES:
        raise InvalidArgument(
            "practice is liberal, salaried or mixed (the directory's mode of practice)",
            field="practice",
        )
    return value


def validate_client(client_id: str, roles: list[str]) -> tuple[str, tuple[str, ...]]:
    if not CLIENT_ID_RE.match(client_id):
        raise InvalidArgument(
            "client_id is 3 to 128 letters, digits or . _ : -, and starts with a letter "
            "(never an RPPS or an INS)",
            field="client_id",
        )
    if not roles or set(roles) - CLIENT_ROLES:
        raise InvalidArgument(
            f"roles must be among {', '.join(sorted(CLIENT_ROLES))}", field="roles"
        )
    return client_id, tuple(sorted(set(roles)))


# A provisional code: 10 of the letters and digits no one mistakes for another (no I, O, 0, 1).
PROVISIONAL_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
PROVISIONAL_LENGTH = 10
_PROVISIONAL_RE = re.compile(f"^[{PROVISIONAL_ALPHABET}]{{{PROVISIONAL_LENGTH}}}$")


def new_provisional_code() -> str:
    return "".join(secrets.choice(PROVISIONAL_ALPHABET) for _ in range(PROVISIONAL_LENGTH))


def normalise_provisional_code(code: str) -> str:
    """As the person types it: any case, spaces or dashes between groups."""
    value = re.sub(r"[\s-]", "", code).upper()
    if not _PROVISIONAL_RE.match(value):
        raise InvalidArgument(
            f"the provisional code is {PROVISIONAL_LENGTH} letters and digits",
            field="provisional_code",
        )
    return value


AccountStatus = Literal["to_activate", "active"]


def account_status(account: dict[str, Any], now: datetime) -> AccountStatus:
    """An account the directory created waits for its person to activate it or oppose it;
    at the legal delay's end, neither having come, it is active by itself (its space opened,
    empty: the person may still activate it to log in)."""
    due = account.get("activation_due_at")
    if account.get("status") != "to_activate" or due is None:
        return "active"
    return "active" if now >= due.astimezone(now.tzinfo) else "to_activate"


def new_otp() -> str:
    return f"{secrets.randbelow(10**OTP_DIGITS):0{OTP_DIGITS}d}"


def otp_matches(expected_digest: str, actual_digest: str) -> bool:
    return hmac.compare_digest(expected_digest, actual_digest)


def channel_for(email: str, phone: str) -> Literal["email", "sms"]:
    return "email" if email else "sms"


def roles_for(kind: str, extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    return sorted({kind, *extra})


def access_claims(
    *,
    account: dict[str, Any],
    kind: str,
    issuer: str,
    audience: str,
    now: datetime,
    ttl: timedelta,
    jti: str,
    session: str = "",
) -> dict[str, Any]:
    """The claims a CPS/e-CPS login would vouch for, plus kind and roles; `session`: the
    login's refresh-token family (`sid`), so that the person can tell it among their sessions."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": str(account["_id"]),
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": jti,
        "kind": kind,
        "roles": roles_for(kind, account.get("roles", [])),
    }
    for key in ("ins", "rpps", "profession", "specialty", "practice", "client_id"):
        if account.get(key):
            claims[key] = account[key]
    if session:
        claims["sid"] = session
    return claims


MAX_ASSERTION_LIFETIME = timedelta(minutes=10)


def check_assertion_claims(claims: dict[str, Any], client_id: str, now: datetime) -> str:
    """RFC 7523 §3: iss = sub = client, a jti, and a short lifetime. Returns the jti."""
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise InvalidArgument(
            "the assertion's iss and sub must be the client_id",
            field="client_assertion",
            slug="invalid-client",
        )
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidArgument(
            "the assertion needs a jti", field="client_assertion", slug="invalid-client"
        )
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or datetime.fromtimestamp(exp, now.tzinfo) < now:
        raise InvalidArgument(
            "the assertion has expired", field="client_assertion", slug="invalid-client"
        )
    if datetime.fromtimestamp(exp, now.tzinfo) - now > MAX_ASSERTION_LIFETIME:
        raise InvalidArgument(
            "the assertion lives too long (10 minutes at most)",
            field="client_assertion",
            slug="invalid-client",
        )
    return jti


def new_signing_key() -> tuple[str, bytes, dict[str, str]]:
    """A fresh Ed25519 key: its kid, the raw private key, and its public JWK."""
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = hashlib.sha256(public).hexdigest()[:16]
    jwk = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": base64.urlsafe_b64encode(public).rstrip(b"=").decode(),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }
    return kid, raw, jwk


def sign_access_token(claims: dict[str, Any], private_raw: bytes, kid: str) -> str:
    key = Ed25519PrivateKey.from_private_bytes(private_raw)
    return jwt.encode(
        claims, key, algorithm=ALGORITHM, headers={"kid": kid, "typ": ACCESS_TOKEN_TYP}
    )


# --- a minor's legal representation ends at their majority ---------------------------------

MAJORITY_AGE = 18
RepresentationStep = Literal["notice", "end"]


def majority_date(birth_date: date) -> date:
    """The day a person born on `birth_date` comes of age (Code civil art. 414: "dix-huit
    ans accomplis"): their 18th birthday, which counts whole, from its first moment. Born on
    29 February (18 years after a leap year is never one): 1 March, the day after 28 February,
    since the 18 years are not complete before 28 February has ended.
    """
    year = birth_date.year + MAJORITY_AGE
    try:
        return birth_date.replace(year=year)
    except ValueError:  # 29 February, in a year that has none
        return date(year, 3, 1)


def representation_step(
    birth_date: date, today: date, *, noticed: bool, notice_days: int
) -> RepresentationStep | None:
    """What is due today for a minor's legal representation: its end (on the day of majority
    and after), the notice that it will end (from `notice_days` before, once), or nothing. A
    notice not yet given when the day has come is not given late: the end says it all."""
    majority = majority_date(birth_date)
    if today >= majority:
        return "end"
    if not noticed and today >= majority - timedelta(days=notice_days):
        return "notice"
    return None


def next_representation_day(
    birth_date: date, after: date, *, noticed: bool, notice_days: int
) -> date:
    """The first day from `after` on which `representation_step` has something to do: the
    notice's first day (unless given), else the majority. The schedule looks at the minor then."""
    majority = majority_date(birth_date)
    return max(after, majority if noticed else majority - timedelta(days=notice_days))

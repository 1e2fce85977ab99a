"""The log's signing keys over time: which key may have signed a head, and when.

The current key derives from `DMP_AUDIT_KEY` and signs from `DMP_AUDIT_KEY_NOT_BEFORE` on (or
since the log began); the keys it replaced are given by their PUBLIC halves and validity
periods in `DMP_AUDIT_RETIRED_KEYS`. All of it comes from configuration, none from the
database: whoever holds only the database can neither add a key nor stretch a key's period.
A head verifies only under a key whose period covers the head's timestamp, both bounds
included. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, model_validator

from dmp_audit.entry import TreeHead, key_id, rfc3339, signature_valid
from dmp_audit.note import BadNote, public_key_of, verifier_key


@dataclass(frozen=True)
class LogKey:
    """A key that signs (or signed) the log's heads and checkpoint notes, with its period;
    a bound of None is open."""

    public_key: Ed25519PublicKey
    verifier_key: str  # its signed-note form (c2sp.org/signed-note), for checkpoint notes
    not_before: datetime | None = None
    not_after: datetime | None = None

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def covers(self, timestamp: str) -> bool:
        """Whether a head stamped `timestamp` (RFC 3339) falls within the key's period."""
        try:
            at = datetime.fromisoformat(timestamp)
        except ValueError:
            return False
        if at.tzinfo is None:
            return False
        return (self.not_before is None or self.not_before <= at) and (
            self.not_after is None or at <= self.not_after
        )

    def period(self) -> str:
        start = rfc3339(self.not_before) if self.not_before else "the log's start"
        return f"{start} to {rfc3339(self.not_after) if self.not_after else 'now'}"


def head_problem(head: TreeHead, keys: Mapping[str, LogKey | Ed25519PublicKey]) -> str | None:
    """Why a stored head does not hold under these keys, or None. A bare public key has no
    period (a key given by hand to `dmp audit verify --public-key`)."""
    key = keys.get(head.key_id)
    if key is None:
        return f"the tree head of size {head.size} names an unknown key"
    if isinstance(key, LogKey):
        if not key.covers(head.timestamp):
            return (
                f"the tree head of size {head.size} is dated {head.timestamp or 'nothing'}, "
                f"outside the period of its key {head.key_id} ({key.period()})"
            )
        key = key.public_key
    if not signature_valid(head, key):
        return f"the signature of the tree head of size {head.size} is wrong"
    return None


class RetiredKey(BaseModel):
    """One element of `DMP_AUDIT_RETIRED_KEYS`: a key that no longer signs, by its public half
    (`verifier_key`, as `/v1/audit/keys` published it, or `public_key`, base64 of the raw 32
    bytes) and the period in which it signed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verifier_key: str = ""
    public_key: str = ""
    not_before: AwareDatetime | None = None
    not_after: AwareDatetime

    @model_validator(mode="after")
    def _one_key_and_a_period(self) -> RetiredKey:
        if bool(self.verifier_key) == bool(self.public_key):
            raise ValueError("a retired key gives either verifier_key or public_key")
        self.ed25519()
        if self.not_before is not None and self.not_before >= self.not_after:
            raise ValueError("a retired key's not_before must come before its not_after")
        return self

    def ed25519(self) -> Ed25519PublicKey:
        if self.verifier_key:
            try:
                return public_key_of(self.verifier_key)[1]
            except BadNote as exc:
                raise ValueError(f"a retired key's verifier_key is not valid: {exc}") from exc
        try:
            raw = base64.b64decode(self.public_key, validate=True)
        except binascii.Error as exc:
            raise ValueError("a retired key's public_key must be base64") from exc
        if len(raw) != 32:
            raise ValueError("a retired key's public_key must encode exactly 32 bytes")
        return Ed25519PublicKey.from_public_bytes(raw)


def keyring(
    current: Ed25519PublicKey,
    since: datetime | None,
    retired: Sequence[RetiredKey],
    origin: str,
) -> dict[str, LogKey]:
    """Every key the log may have signed with, by its JSON heads' key id: the current one
    first, then the retired ones, most recently retired first."""
    start = since.astimezone(UTC) if since else None
    keys = {key_id(current): LogKey(current, verifier_key(origin, current), start)}
    for old in sorted(retired, key=lambda k: k.not_after, reverse=True):
        public = old.ed25519()
        log_key = LogKey(
            public,
            old.verifier_key or verifier_key(origin, public),
            old.not_before.astimezone(UTC) if old.not_before else None,
            old.not_after.astimezone(UTC),
        )
        if log_key.key_id in keys:
            raise ValueError(f"the key {log_key.key_id} is given twice (current or retired)")
        keys[log_key.key_id] = log_key
    return keys

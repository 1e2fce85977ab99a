"""Audit entries and signed tree heads as canonical bytes: what the Merkle tree commits to.

Entry bytes, version 1 (docs/audit.md has the full recipe). One JSON object (RFC 8259),
UTF-8, no whitespace, non-ASCII characters as themselves, control characters as lowercase
``\\u00xx`` (or ``\\n``, ``\\t``…), keys in exactly this order, every value present:

    {"v":1,"seq":12,"ins":"…","n":3,"prev":"<hex>","at":"2026-11-23T14:40:20.123456Z",
     "event_id":"…","source":"dossier","request_id":"…",
     "actor":{"kind":"…","id":"…","name":"…","profession":"…"},
     "action":"read","entity":{"document_id":"…","query":"…"},
     "outcome":"success","mode":"normal","reason":"…"}

`seq` is the entry's index in the log (its leaf index). `ins`, `n` and `prev` make the
per-dossier hash chain: `n` counts the dossier's entries from 0 and `prev` is the hex leaf hash
of its entry n-1 ("" for n = 0), so the newest entry of a dossier commits to its whole trace.
Entries about no dossier have ins "" and n = 0, prev "". In Python:
``json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()``; in JavaScript:
``JSON.stringify(obj)`` with the keys inserted in this order.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

VERSION = 1
ACTIONS = frozenset({"create", "read", "update", "delete", "execute", "search", "login"})
OUTCOMES = frozenset({"success", "failure", "denied"})
MODES = frozenset({"normal", "break_glass", "regulator"})
_INS = re.compile(r"[0-9A-Za-z]{0,32}")
TREE_HEAD_LABEL = "dmp-audit-tree-head/v1"
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # one, not one a call


class MalformedEntry(ValueError):
    """Stored bytes that are not a version-1 entry."""


@dataclass(frozen=True)
class Entry:
    seq: int
    ins: str
    n: int
    prev: str
    at: str
    event_id: str
    source: str
    request_id: str
    actor_kind: str
    actor_id: str
    actor_name: str
    actor_profession: str
    action: str
    document_id: str
    query: str
    outcome: str
    mode: str
    reason: str

    def to_bytes(self) -> bytes:
        obj = {
            "v": VERSION,
            "seq": self.seq,
            "ins": self.ins,
            "n": self.n,
            "prev": self.prev,
            "at": self.at,
            "event_id": self.event_id,
            "source": self.source,
            "request_id": self.request_id,
            "actor": {
                "kind": self.actor_kind,
                "id": self.actor_id,
                "name": self.actor_name,
                "profession": self.actor_profession,
            },
            "action": self.action,
            "entity": {"document_id": self.document_id, "query": self.query},
            "outcome": self.outcome,
            "mode": self.mode,
            "reason": self.reason,
        }
        return _CANONICAL.encode(obj).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        """Parse, and insist the bytes are exactly the canonical form of what they say."""
        try:
            obj = json.loads(data)
            actor, entity = obj["actor"], obj["entity"]
            entry = cls(
                seq=obj["seq"],
                ins=obj["ins"],
                n=obj["n"],
                prev=obj["prev"],
                at=obj["at"],
                event_id=obj["event_id"],
                source=obj["source"],
                request_id=obj["request_id"],
                actor_kind=actor["kind"],
                actor_id=actor["id"],
                actor_name=actor["name"],
                actor_profession=actor["profession"],
                action=obj["action"],
                document_id=entity["document_id"],
                query=entity["query"],
                outcome=obj["outcome"],
                mode=obj["mode"],
                reason=obj["reason"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedEntry("not a version-1 audit entry") from exc
        if entry.to_bytes() != data:
            raise MalformedEntry("the bytes are not the entry's canonical form")
        return entry


def clean_ins(value: str) -> str:
    """An INS as the chain may carry it; anything else is kept out of the entry's head."""
    return value if _INS.fullmatch(value) else ""


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_of(seconds: int, nanos: int) -> str:
    """`rfc3339` of a protobuf Timestamp's fields, the same text at half the cost (the
    appender writes one per entry); years before 1970 or after 9999 take the long way."""
    if not 0 <= seconds < _YEAR_10000 or not 0 <= nanos < 1_000_000_000:
        return rfc3339(datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=nanos // 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}Z"


_YEAR_10000 = 253_402_300_800  # 10000-01-01T00:00:00Z in seconds


# --- signed tree heads -------------------------------------------------------------------


@dataclass(frozen=True)
class TreeHead:
    size: int
    root_hash: str  # hex
    timestamp: str  # RFC 3339, UTC
    key_id: str = ""
    signature: str = ""  # base64 of the Ed25519 signature over `message()`

    def message(self) -> bytes:
        """What is signed: four lines, each ending in a newline."""
        return f"{TREE_HEAD_LABEL}\n{self.size}\n{self.root_hash}\n{self.timestamp}\n".encode()


def key_id(public: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 over the raw 32-byte public key."""
    return hashlib.sha256(raw_public_key(public)).hexdigest()[:16]


def raw_public_key(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


class TreeHeadSigner:
    def __init__(self, seed: bytes) -> None:
        # also the checkpoint notes' key (note.py): one log, one key
        self.private_key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self.private_key.public_key()
        self.key_id = key_id(self.public_key)

    def sign(self, size: int, root_hash: bytes, at: datetime) -> TreeHead:
        head = TreeHead(size=size, root_hash=root_hash.hex(), timestamp=rfc3339(at))
        signature = base64.b64encode(self.private_key.sign(head.message())).decode()
        return TreeHead(head.size, head.root_hash, head.timestamp, self.key_id, signature)


def signature_valid(head: TreeHead, public: Ed25519PublicKey) -> bool:
    try:
        public.verify(base64.b64decode(head.signature, validate=True), head.message())
    except (InvalidSignature, ValueError):
        return False
    return True

"""Witness cosignatures of the log's checkpoint: c2sp.org/tlog-cosignature, Ed25519 v1.

A witness that checked a checkpoint extends every earlier one it saw adds one signature line
to the note:

    — <witness name> base64(key id ‖ u64 big-endian timestamp ‖ Ed25519 signature)

over the message `cosignature/v1\\ntime <timestamp>\\n` followed by the checkpoint's text.
key id = SHA-256(witness name ‖ 0x0A ‖ 0x04 ‖ 32-byte public key)[:4]; the witness's verifier
key is `<name>+<hex key id>+<base64(0x04 ‖ public key)>`. No I/O here.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dmp_audit import note
from dmp_audit.note import _NAME, DASH, BadNote

COSIGNATURE_V1 = b"\x04"  # the signature type of an Ed25519 cosignature/v1
MAX_TIMESTAMP = 2**63 - 1


def key_id(name: str, public: Ed25519PublicKey) -> bytes:
    return note.key_id(name, public, COSIGNATURE_V1)


def verifier_key(name: str, public: Ed25519PublicKey) -> str:
    return note.verifier_key(name, public, COSIGNATURE_V1)


def witness_key_of(vkey: str) -> tuple[str, Ed25519PublicKey]:
    """A witness verifier key's name and Ed25519 key, checked against its key id."""
    return note.public_key_of(vkey, COSIGNATURE_V1)


def message(text: bytes, timestamp: int) -> bytes:
    """What the witness signs: the header, the time line, then the checkpoint's whole text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("the cosignature's timestamp is out of range")
    return b"cosignature/v1\ntime %d\n" % timestamp + text


@dataclass(frozen=True)
class Cosignature:
    name: str
    timestamp: int
    line: str  # the note signature line, without its newline


class Cosigner:
    """A witness's key: signs checkpoint texts it has checked."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError("the witness name must be non-empty, without spaces or '+'")
        self.name = name
        self._key = key
        self.public_key = key.public_key()
        self._id = key_id(name, self.public_key)
        self.verifier_key = verifier_key(name, self.public_key)

    def cosign(self, text: bytes, timestamp: int) -> Cosignature:
        signature = self._key.sign(message(text, timestamp))
        blob = base64.b64encode(self._id + struct.pack(">Q", timestamp) + signature).decode()
        return Cosignature(self.name, timestamp, f"{DASH} {self.name} {blob}")


def verify_cosignature(text: bytes, line: str, vkey: str) -> int:
    """The timestamp of a cosignature line by the witness `vkey` over `text`; BadNote if the
    line is not that witness's or its signature does not verify."""
    name, public = witness_key_of(vkey)
    signer, raw = note.signature_line(line.rstrip("\n"))
    if signer != name or raw[:4] != key_id(name, public) or len(raw) != 4 + 8 + 64:
        raise BadNote("not a cosignature by this witness")
    (timestamp,) = struct.unpack(">Q", raw[4:12])
    try:
        public.verify(raw[12:], message(text, timestamp))
    except (InvalidSignature, ValueError) as exc:
        raise BadNote("the witness's cosignature does not verify") from exc
    return int(timestamp)


def cosignatures(signed: bytes, vkeys: list[str]) -> dict[str, int]:
    """Which of the witnesses `vkeys` cosigned the note's text: verifier key → timestamp.
    Lines by other keys are ignored, as the signed-note format requires."""
    text, sep, block = signed.rpartition(b"\n\n")
    if not sep:
        raise BadNote("no signature block")
    text += b"\n"
    found: dict[str, int] = {}
    for line in block.decode().splitlines():
        for vkey in vkeys:
            try:
                found[vkey] = verify_cosignature(text, line, vkey)
            except BadNote:
                continue
    return found

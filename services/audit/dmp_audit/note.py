"""The log's checkpoint as a C2SP signed note (c2sp.org/signed-note, c2sp.org/tlog-checkpoint).

What Go's `golang.org/x/mod/sumdb/note` and every tiled-log tool read:

    <origin>\\n<tree size>\\n<base64 root hash>\\n      the note text (the checkpoint)
    \\n
    — <key name> <base64(key id ‖ Ed25519 signature over the text)>\\n

key id = SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)[:4], and the verifier key that
publishes it is `<key name>+<hex key id>+<base64(0x01 ‖ public key)>`. The key name is the
log's origin. No I/O here: the service signs with it and the tests verify with it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dmp_audit.entry import TREE_HEAD_LABEL, raw_public_key

ED25519 = b"\x01"  # the signature type byte of c2sp.org/signed-note
DASH = "\u2014"
# A key name (and our origin): non-empty, no Unicode space, no plus, no control character.
_NAME = re.compile(r"[^\s+\x00-\x1f\x7f]+")


class BadNote(ValueError):
    """Text that is not a checkpoint note this verifier accepts."""


def check_origin(origin: str) -> str:
    """An origin the note format allows as a key name, and that no tree head could be read as."""
    if not _NAME.fullmatch(origin) or origin == TREE_HEAD_LABEL:
        raise ValueError(
            "the checkpoint origin must be non-empty, without spaces, '+' or control characters"
        )
    return origin


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes

    def text(self) -> bytes:
        """The note text: three lines, each ending in a newline; no extension lines."""
        root = base64.b64encode(self.root_hash).decode()
        return f"{self.origin}\n{self.size}\n{root}\n".encode()

    @classmethod
    def from_text(cls, text: bytes) -> Checkpoint:
        lines = text.decode().split("\n")
        if len(lines) < 4 or lines[-1] != "" or not all(lines[:-1]):
            raise BadNote("a checkpoint is at least three non-empty lines")
        origin, size, root = lines[:3]
        if not re.fullmatch(r"0|[1-9][0-9]{0,18}", size):
            raise BadNote("the tree size is not a decimal number")
        try:
            root_hash = base64.b64decode(root, validate=True)
        except ValueError as exc:
            raise BadNote("the root hash is not base64") from exc
        if len(root_hash) != 32:
            raise BadNote("the root hash is not 32 bytes")
        return cls(origin, int(size), root_hash)


def key_id(name: str, public: Ed25519PublicKey, kind: bytes = ED25519) -> bytes:
    """SHA-256(name ‖ 0x0A ‖ signature type ‖ public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + kind + raw_public_key(public)).digest()[:4]


def verifier_key(name: str, public: Ed25519PublicKey, kind: bytes = ED25519) -> str:
    """The published form of the key (what `note.NewVerifier` takes)."""
    material = base64.b64encode(kind + raw_public_key(public)).decode()
    return f"{name}+{key_id(name, public, kind).hex()}+{material}"


def public_key_of(vkey: str, kind: bytes = ED25519) -> tuple[str, Ed25519PublicKey]:
    """A verifier key's name and Ed25519 key, checked against its key id; `kind` is the
    signature type it must have (0x01 a note signer's, 0x04 a witness's cosignature/v1)."""
    name, _, rest = vkey.strip().partition("+")
    hex_id, _, material = rest.partition("+")
    try:
        raw = base64.b64decode(material, validate=True)
    except ValueError as exc:
        raise BadNote("the verifier key's material is not base64") from exc
    if not _NAME.fullmatch(name) or raw[:1] != kind or len(raw) != 33:
        raise BadNote(f"not an Ed25519 verifier key of type 0x{kind.hex()}")
    public = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_id(name, public, kind).hex() != hex_id:
        raise BadNote("the verifier key's id does not match its key")
    return name, public


class NoteSigner:
    """Signs checkpoint notes under one key name with one Ed25519 key."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        self.name = check_origin(name)
        self._key = key
        self.public_key = key.public_key()
        self._id = key_id(name, self.public_key)
        self.verifier_key = verifier_key(name, self.public_key)

    def sign(self, text: bytes) -> bytes:
        signature = base64.b64encode(self._id + self._key.sign(text)).decode()
        return text + f"\n{DASH} {self.name} {signature}\n".encode()


def signature_line(line: str) -> tuple[str, bytes]:
    """A note signature line's key name and decoded signature (key id first)."""
    dash, _, rest = line.partition(" ")
    signer, _, encoded = rest.partition(" ")
    if dash != DASH or not signer or not encoded:
        raise BadNote("a signature line is malformed")
    try:
        return signer, base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise BadNote("a signature is not base64") from exc


def open_note(note: bytes, vkey: str) -> bytes:
    """The note's text if the key signed it (signatures by other keys are ignored, as the
    format requires); BadNote otherwise."""
    name, public = public_key_of(vkey)
    wanted = key_id(name, public)
    text, sep, signatures = note.rpartition(b"\n\n")
    if not sep or not signatures.endswith(b"\n"):
        raise BadNote("no signature block")
    text += b"\n"
    for line in signatures[:-1].decode().split("\n"):
        signer, raw = signature_line(line)
        if signer != name or raw[:4] != wanted:
            continue
        try:
            public.verify(raw[4:], text)
        except InvalidSignature as exc:
            raise BadNote("the log's signature does not verify") from exc
        return text
    raise BadNote("no signature by the log's key")

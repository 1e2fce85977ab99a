"""The log's side of witnesses: which cosignatures it accepts, and the notes it publishes with them.

A witness hands the log the checkpoint note the log signed, with its cosignature line appended
(c2sp.org/tlog-cosignature). The log keeps the line only if the note is a checkpoint under its
own origin, its own signature holds, and every line by a configured witness verifies, at
least one of them; whether the log really signed that tree (its stored head of that size has
the same root) is the caller's check, against the store. The published note is the log's
signed note followed by the kept lines (c2sp.org/signed-note: extra signature lines, which a
verifier without the witnesses' keys ignores). No I/O here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from dmp_audit.cosign import key_id, verify_cosignature, witness_key_of
from dmp_audit.entry import raw_public_key
from dmp_audit.note import BadNote, Checkpoint, open_note, public_key_of, signature_line

MAX_NOTE_BYTES = 16 * 1024  # a checkpoint and a few dozen signature lines
MAX_SIGNATURES = 64


class CosignatureRefused(ValueError):
    """A submission the log does not keep; `slug` is its stable problem type."""

    def __init__(self, slug: str, message: str) -> None:
        super().__init__(message)
        self.slug = slug


@dataclass(frozen=True)
class Witness:
    vkey: str  # <name>+<hex key id>+<base64(0x04 ‖ key)>
    name: str
    key_id: str  # hex, 4 bytes
    public_key: str  # base64 of the raw 32-byte key

    @classmethod
    def of(cls, vkey: str) -> Witness:
        name, public = witness_key_of(vkey)
        raw = base64.b64encode(raw_public_key(public)).decode()
        return cls(vkey, name, key_id(name, public).hex(), raw)


@dataclass(frozen=True)
class Cosigned:
    """A cosignature line the log checked: by whom, when, over which checkpoint."""

    witness: Witness
    timestamp: int
    line: str


def check_submission(
    note: bytes, log_vkey: str, witnesses: Sequence[Witness]
) -> tuple[Checkpoint, list[Cosigned]]:
    """The checkpoint and the configured witnesses' cosignatures of it; CosignatureRefused
    (nothing to keep) if the note is not the log's or a configured witness's line fails."""
    if len(note) > MAX_NOTE_BYTES:
        raise CosignatureRefused(
            "invalid-checkpoint-note", f"a cosigned note may not exceed {MAX_NOTE_BYTES} bytes"
        )
    text, sep, block = note.rpartition(b"\n\n")
    try:
        if not sep or not block.endswith(b"\n"):
            raise BadNote("no signature block after an empty line")
        checkpoint = Checkpoint.from_text(text + b"\n")
        lines = block[:-1].decode().split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise BadNote(f"more than {MAX_SIGNATURES} signature lines")
        parsed = [(line, *signature_line(line)) for line in lines]
    except (BadNote, UnicodeDecodeError) as exc:
        raise CosignatureRefused(
            "invalid-checkpoint-note",
            f"the body is not a checkpoint note (c2sp.org/tlog-checkpoint): {exc}",
        ) from exc
    origin, _ = public_key_of(log_vkey)
    try:
        if checkpoint.origin != origin:
            raise BadNote(f"the origin is not this log's ({origin})")
        signed = open_note(note, log_vkey)
    except BadNote as exc:
        raise CosignatureRefused(
            "checkpoint-not-signed", f"this log did not sign the checkpoint: {exc}"
        ) from exc
    found: list[Cosigned] = []
    for line, signer, raw in parsed:
        for witness in witnesses:
            if signer != witness.name or raw[:4].hex() != witness.key_id:
                continue
            try:
                timestamp = verify_cosignature(signed, line, witness.vkey)
            except BadNote as exc:
                raise CosignatureRefused(
                    "invalid-cosignature",
                    f"the cosignature of the witness {witness.name} does not verify: {exc}",
                ) from exc
            found.append(Cosigned(witness, timestamp, line))
    if not found:
        raise CosignatureRefused(
            "unknown-witness",
            "no cosignature by a witness this log knows (GET /v1/audit/keys lists them)",
        )
    return checkpoint, found


def published(note: bytes, lines: Sequence[str]) -> bytes:
    """The log's signed note with the witnesses' cosignature lines after its own."""
    return note + b"".join(line.encode() + b"\n" for line in lines)

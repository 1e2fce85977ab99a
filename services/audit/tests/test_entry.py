"""Entry bytes and tree heads: canonical, recomputable, and strict about what they accept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from random import Random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.timestamp_pb2 import Timestamp

from dmp_audit.entry import (
    Entry,
    MalformedEntry,
    TreeHead,
    TreeHeadSigner,
    clean_ins,
    rfc3339,
    rfc3339_of,
    signature_valid,
)
from dmp_audit.verify import HEADS

ENTRY = Entry(
    seq=12,
    ins="180057512345623",
    n=3,
    prev="ab" * 32,
    at="2026-11-23T14:40:20.123456Z",
    event_id="0193f2c1-7a4b-7cde-8f00-1234567890ab",
    source="dossier",
    request_id="req-1",
    actor_kind="professional",
    actor_id="10001234567",
    actor_name="",
    actor_profession="10",
    action="read",
    document_id="doc-1",
    query="",
    outcome="success",
    mode="break_glass",
    reason="Urgence: patient inconscient, allergies?",
)


def test_the_bytes_are_the_documented_form() -> None:
    expected = (
        '{"v":1,"seq":12,"ins":"180057512345623","n":3,"prev":"' + "ab" * 32 + '",'
        '"at":"2026-11-23T14:40:20.123456Z","event_id":"0193f2c1-7a4b-7cde-8f00-1234567890ab",'
        '"source":"dossier","request_id":"req-1",'
        '"actor":{"kind":"professional","id":"10001234567","name":"","profession":"10"},'
        '"action":"read","entity":{"document_id":"doc-1","query":""},'
        '"outcome":"success","mode":"break_glass",'
        '"reason":"Urgence: patient inconscient, allergies?"}'
    )
    assert ENTRY.to_bytes() == expected.encode()
    assert Entry.from_bytes(ENTRY.to_bytes()) == ENTRY
    assert HEADS.match(ENTRY.to_bytes()).groups() == (  # type: ignore[union-attr]
        b"12",
        b"180057512345623",
        b"3",
        b"ab" * 32,
    )


def test_non_ascii_and_control_characters_have_one_spelling() -> None:
    entry = Entry(**{**ENTRY.__dict__, "reason": "allergie à la pénicilline\nsévère\t!"})
    data = entry.to_bytes()
    assert "pénicilline".encode() in data  # UTF-8 as itself, not \u escapes
    assert b"\\n" in data and b"\n" not in data  # never a raw newline: chunks split on it
    assert Entry.from_bytes(data) == entry


@pytest.mark.parametrize(
    "tampered",
    [
        # same meaning, other spelling: not canonical
        json.dumps(json.loads(ENTRY.to_bytes()), separators=(", ", ": ")).encode(),
        json.dumps(json.loads(ENTRY.to_bytes()), sort_keys=True, separators=(",", ":")).encode(),
        ENTRY.to_bytes().replace(b'"v":1', b'"v":2'),
        b"not json",
        b'{"v":1,"seq":1}',
    ],
)
def test_anything_but_the_canonical_form_is_refused(tampered: bytes) -> None:
    with pytest.raises(MalformedEntry):
        Entry.from_bytes(tampered)


@pytest.mark.parametrize(
    "head",
    [
        b'{"v":1,"ins":"1","seq":2,"n":0,"prev":"","at":""}',
        b'{"v":1,"seq":x,"ins":"1","n":0,"prev":"","at":""}',
        b'{"v":2,"seq":1,"ins":"1","n":0,"prev":"","at":""}',
        b'{"v":1,"seq":1,"ins":"1,2","n":0,"prev":"","at":""}',
        b'{"v":1,"seq":1,"ins":"1","n":0,"prev":"XYZ","at":""}',
    ],
)
def test_verification_reads_only_a_well_formed_chain_head(head: bytes) -> None:
    assert HEADS.match(head) is None


def test_only_an_alphanumeric_ins_enters_the_chain() -> None:
    assert clean_ins("180057512345623") == "180057512345623"
    assert clean_ins('1,"x') == ""
    assert clean_ins("") == ""


def test_tree_heads_are_signed_and_checked() -> None:
    signer = TreeHeadSigner(bytes(range(32)))
    head = signer.sign(5, bytes(32), datetime(2026, 11, 23, 14, 0, tzinfo=UTC))
    assert head.message() == (
        b"dmp-audit-tree-head/v1\n5\n" + b"00" * 32 + b"\n2026-11-23T14:00:00.000000Z\n"
    )
    assert signature_valid(head, signer.public_key)
    assert len(head.key_id) == 16
    for forged in (
        TreeHead(6, head.root_hash, head.timestamp, head.key_id, head.signature),
        TreeHead(5, "11" * 32, head.timestamp, head.key_id, head.signature),
        TreeHead(5, head.root_hash, "2026-11-24T00:00:00.000000Z", head.key_id, head.signature),
        TreeHead(5, head.root_hash, head.timestamp, head.key_id, "not base64!"),
    ):
        assert not signature_valid(forged, signer.public_key)
    other = Ed25519PrivateKey.generate().public_key()
    assert not signature_valid(head, other)


def test_timestamp_text_is_the_datetime_text() -> None:
    """The appender's fast `rfc3339_of` writes what `rfc3339` of the Timestamp's datetime
    writes, to the microsecond, in and out of its fast range (an entry's bytes depend on it)."""
    rng = Random(3)
    seconds = [0, 1, -1, -(86_400 * 365 * 100), 253_402_300_799, 1_764_000_000]
    seconds += [rng.randrange(-(2**34), 2**38) for _ in range(3000)]
    for s in seconds:
        for nanos in (0, 999, 1000, 999_999_999, rng.randrange(10**9)):
            moment = Timestamp(seconds=s, nanos=nanos)
            try:
                expected = rfc3339(moment.ToDatetime(tzinfo=UTC))
            except (ValueError, OverflowError) as exc:
                with pytest.raises(type(exc)):
                    rfc3339_of(s, nanos)
                continue
            assert rfc3339_of(s, nanos) == expected, (s, nanos)

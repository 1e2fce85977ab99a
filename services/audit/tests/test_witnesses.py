"""The log's side of witnesses: DMP_AUDIT_WITNESSES read and checked, and which cosigned notes
the log keeps (the stored-head check is the e2e test's, tests/e2e/test_tlog_go.py)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from dmp_audit.config import AuditSettings
from dmp_audit.cosign import Cosigner
from dmp_audit.note import Checkpoint, NoteSigner
from dmp_audit.witnesses import (
    MAX_NOTE_BYTES,
    CosignatureRefused,
    Witness,
    check_submission,
    published,
)

ORIGIN = "dmp.example/v1/audit/log"
LOG = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(32)))
W1 = Cosigner("w.example/1", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
W2 = Cosigner("w.example/2", Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
WITNESSES = [Witness.of(W1.verifier_key), Witness.of(W2.verifier_key)]
TREE = Checkpoint(ORIGIN, 1234, bytes(range(32)))


def settings(value: str) -> AuditSettings:
    return AuditSettings(env="dev", audit_witnesses=value)


def cosigned(*by: Cosigner, text: bytes = TREE.text(), log: NoteSigner = LOG) -> bytes:
    lines = [w.cosign(text, 1_700_000_000 + i).line for i, w in enumerate(by)]
    return published(log.sign(text), lines)


def refusal(note: bytes) -> str:
    with pytest.raises(CosignatureRefused) as refused:
        check_submission(note, LOG.verifier_key, WITNESSES)
    return refused.value.slug


def test_witness_keys_as_a_json_list_or_commas() -> None:
    both = (W1.verifier_key, W2.verifier_key)
    assert settings(",".join(both)).audit_witnesses == both
    assert settings(f" {both[0]} ,\n{both[1]}\n").audit_witnesses == both
    assert settings(json.dumps(list(both))).audit_witnesses == both
    assert settings("").audit_witnesses == ()
    assert AuditSettings(env="dev").audit_witnesses == (), "none by default"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("nope", "witness 1 is not a cosignature/v1 verifier key"),
        (LOG.verifier_key, "witness 1 is not a cosignature/v1 verifier key"),  # a note key
        (W1.verifier_key.replace("+", "+0", 1)[:-1], "witness 1 is not"),
        (f"{W1.verifier_key},{W1.verifier_key}", "is listed twice"),
        ("[1]", "a list of witness verifier keys"),
        ("[", "not a JSON list"),
    ],
)
def test_a_wrong_witness_key_stops_the_start(value: str, said: str) -> None:
    with pytest.raises(ValidationError, match=said):
        settings(value)


def test_a_key_whose_id_does_not_match_is_refused() -> None:
    name, key_id, material = W1.verifier_key.split("+", 2)
    wrong = f"{name}+{int(key_id, 16) ^ 1:08x}+{material}"
    with pytest.raises(ValidationError, match="id does not match"):
        settings(wrong)


def test_the_log_keeps_the_cosignatures_of_its_witnesses() -> None:
    checkpoint, found = check_submission(cosigned(W1, W2), LOG.verifier_key, WITNESSES)
    assert checkpoint == TREE
    assert [(c.witness.name, c.timestamp) for c in found] == [
        ("w.example/1", 1_700_000_000),
        ("w.example/2", 1_700_000_001),
    ]
    # another witness's line, unknown to the log, is ignored beside a known one
    stranger = Cosigner("w.example/3", Ed25519PrivateKey.generate())
    _, found = check_submission(cosigned(stranger, W2), LOG.verifier_key, WITNESSES)
    assert [c.witness.name for c in found] == ["w.example/2"]
    assert WITNESSES[0].key_id == W1.verifier_key.split("+")[1]
    assert base64.b64decode(WITNESSES[0].public_key) == W1.public_key.public_bytes_raw()


def test_what_the_log_refuses() -> None:
    assert refusal(cosigned()) == "unknown-witness"
    assert refusal(cosigned(Cosigner("w.example/1", Ed25519PrivateKey.generate()))) == (
        "unknown-witness"
    )
    line = W1.cosign(TREE.text(), 5).line
    other_tree = Checkpoint(ORIGIN, 1234, bytes(32)).text()
    assert refusal(LOG.sign(TREE.text()) + W1.cosign(other_tree, 5).line.encode() + b"\n") == (
        "invalid-cosignature"
    )
    assert refusal(cosigned(W2) + W1.cosign(other_tree, 5).line.encode() + b"\n") == (
        "invalid-cosignature"
    ), "a good line does not carry a bad one"
    stranger_log = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    assert refusal(cosigned(W1, log=stranger_log)) == "checkpoint-not-signed"
    other_origin = Checkpoint("elsewhere.example/log", 1, bytes(32)).text()
    elsewhere = NoteSigner("elsewhere.example/log", Ed25519PrivateKey.from_private_bytes(bytes(32)))
    assert refusal(cosigned(W1, text=other_origin, log=elsewhere)) == "checkpoint-not-signed"
    assert refusal(b"") == "invalid-checkpoint-note"
    assert refusal(TREE.text() + line.encode() + b"\n") == "invalid-checkpoint-note"
    assert refusal(cosigned(W1)[:-1]) == "invalid-checkpoint-note"
    assert refusal(cosigned(W1) + b"not a line\n") == "invalid-checkpoint-note"
    assert refusal(b"\xff\n\n\xfe\n") == "invalid-checkpoint-note"
    assert refusal(cosigned(W1) + (line.encode() + b"\n") * 100) == "invalid-checkpoint-note"
    assert refusal(cosigned(W1) + b"x" * MAX_NOTE_BYTES) == "invalid-checkpoint-note"


def test_the_published_note_is_the_logs_then_the_lines() -> None:
    note = LOG.sign(TREE.text())
    lines = [W1.cosign(TREE.text(), 7).line, W2.cosign(TREE.text(), 8).line]
    assert published(note, lines) == note + f"{lines[0]}\n{lines[1]}\n".encode()
    assert published(note, []) == note

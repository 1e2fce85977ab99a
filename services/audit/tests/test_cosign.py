"""Witness cosignatures: the bytes of c2sp.org/tlog-cosignature (Ed25519, cosignature/v1),
rebuilt here from the specification's text, and what a verifier accepts."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dmp_audit import cosign
from dmp_audit.note import BadNote, Checkpoint, NoteSigner

SEED = bytes(range(32))
NAME = "witness.example.com/w1"
TEXT = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def test_the_signed_message_is_the_specifications() -> None:
    # The example of the specification's "Ed25519 signed message" section, byte for byte.
    assert cosign.message(TEXT, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\n"
        b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert cosign.message(TEXT, 0).startswith(b"cosignature/v1\ntime 0\n")
    with pytest.raises(ValueError):
        cosign.message(TEXT, 2**63)
    with pytest.raises(ValueError):
        cosign.message(TEXT, -1)


def test_the_line_key_id_and_verifier_key() -> None:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    line = cosign.Cosigner(NAME, key).cosign(TEXT, 1679315147).line

    key_id = hashlib.sha256(NAME.encode() + b"\n\x04" + raw(key)).digest()[:4]
    signature = key.sign(b"cosignature/v1\ntime 1679315147\n" + TEXT)  # Ed25519 is deterministic
    blob = key_id + (1679315147).to_bytes(8, "big") + signature
    assert line == f"\u2014 {NAME} {base64.b64encode(blob).decode()}"
    # the specification's example line starts with the same timestamp, big-endian after the id
    example = base64.b64decode("jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJs")
    assert struct.unpack(">Q", example[4:12]) == (1679315147,)

    vkey = cosign.Cosigner(NAME, key).verifier_key
    material = base64.b64encode(b"\x04" + raw(key)).decode()
    assert vkey == f"{NAME}+{key_id.hex()}+{material}"
    assert cosign.verify_cosignature(TEXT, line, vkey) == 1679315147


def test_what_a_verifier_refuses() -> None:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    witness = cosign.Cosigner(NAME, key)
    line = witness.cosign(TEXT, 1700000000).line
    other = cosign.Cosigner(NAME, Ed25519PrivateKey.generate())

    moved = TEXT.replace(b"20852163", b"20852164")
    with pytest.raises(BadNote, match="does not verify"):
        cosign.verify_cosignature(moved, line, witness.verifier_key)
    with pytest.raises(BadNote, match="not a cosignature by this witness"):
        cosign.verify_cosignature(TEXT, line, other.verifier_key)
    blob = bytearray(base64.b64decode(line.split(" ")[2]))
    blob[11] ^= 1  # another timestamp than the one signed
    forged = f"\u2014 {NAME} {base64.b64encode(bytes(blob)).decode()}"
    with pytest.raises(BadNote, match="does not verify"):
        cosign.verify_cosignature(TEXT, forged, witness.verifier_key)
    # A log's note key (type 0x01) is not a witness key, even over the same Ed25519 key.
    log_vkey = NoteSigner(NAME, key).verifier_key
    with pytest.raises(BadNote, match="type 0x04"):
        cosign.witness_key_of(log_vkey)
    name, _, rest = witness.verifier_key.partition("+")
    with pytest.raises(BadNote, match="id does not match"):
        cosign.witness_key_of(f"{name}x+{rest}")


def test_cosignatures_are_found_among_a_notes_signature_lines() -> None:
    log = NoteSigner("example.com/behind-the-sofa", Ed25519PrivateKey.generate())
    text = Checkpoint("example.com/behind-the-sofa", 20852163, bytes(32)).text()
    first = cosign.Cosigner(NAME, Ed25519PrivateKey.from_private_bytes(SEED))
    second = cosign.Cosigner("witness.example.org/w2", Ed25519PrivateKey.generate())
    absent = cosign.Cosigner("witness.example.net/w3", Ed25519PrivateKey.generate())
    note = log.sign(text) + (first.cosign(text, 1).line + "\n").encode()
    note += (second.cosign(text, 2).line + "\n").encode()
    vkeys = [first.verifier_key, second.verifier_key, absent.verifier_key]
    assert cosign.cosignatures(note, vkeys) == {first.verifier_key: 1, second.verifier_key: 2}
    other_text = Checkpoint("example.com/behind-the-sofa", 1, bytes(32)).text()
    moved = log.sign(other_text) + (first.cosign(text, 1).line + "\n").encode()
    assert cosign.cosignatures(moved, vkeys) == {}, "a cosignature of another tree counts for none"

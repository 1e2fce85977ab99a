"""The portal's check of the witnesses (portal/js/witnesses.js) and its RFC 9162 proofs
(portal/js/merkle.js), run by Node's WebCrypto on notes and proofs made by the audit service's
own code: what it accepts and what it refuses."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dmp_audit.cosign import Cosigner
from dmp_audit.merkle import consistency_proof, inclusion_proof, leaf_hash, root
from dmp_audit.note import Checkpoint, NoteSigner

JS = Path(__file__).resolve().parents[1] / "dmp_gateway" / "portal" / "js"
ORIGIN = "dmp.example/v1/audit/log"
LOG = NoteSigner(ORIGIN, Ed25519PrivateKey.from_private_bytes(bytes(32)))
W1 = Cosigner("w.example/1", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
W2 = Cosigner("w.example/2", Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
KEYS = [{"name": w.name, "verifier_key": w.verifier_key} for w in (W1, W2)]

SCRIPT = """
import { cosignatures, parseNote, signedByLog } from %(witnesses)s;
import { consistent, rootFromInclusion } from %(merkle)s;
const cases = JSON.parse(process.argv[1]);
const bytes = (h) => Uint8Array.from(h.match(/../g) ?? [], (b) => parseInt(b, 16));
const out = [];
for (const c of cases) {
  if (c.kind === "note") {
    const parsed = parseNote(c.note);
    if (!parsed) { out.push(null); continue; }
    out.push({
      size: parsed.size,
      log: await signedByLog(parsed, c.log),
      witnesses: Object.fromEntries(await cosignatures(parsed, c.witnesses)),
    });
  } else if (c.kind === "inclusion") {
    const root = await rootFromInclusion(c.index, c.size, bytes(c.leaf), c.proof.map(bytes));
    out.push(root && Array.from(root, (b) => b.toString(16).padStart(2, "0")).join(""));
  } else {
    out.push(await consistent(c.first, c.second, bytes(c.a), bytes(c.b), c.proof.map(bytes)));
  }
}
console.log(JSON.stringify(out));
"""


def run(cases: list[dict[str, Any]]) -> list[Any]:
    node = shutil.which("node")
    assert node, "Node is needed to run the portal's module"
    script = SCRIPT % {
        "witnesses": json.dumps((JS / "witnesses.js").as_uri()),
        "merkle": json.dumps((JS / "merkle.js").as_uri()),
    }
    done = subprocess.run(
        [node, "--input-type=module", "-e", script, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: list[Any] = json.loads(done.stdout)
    return result


def note_case(note: bytes, log: str = LOG.verifier_key) -> dict[str, Any]:
    return {"kind": "note", "note": note.decode(), "log": log, "witnesses": KEYS}


def cosigned(text: bytes, *lines: str) -> bytes:
    return LOG.sign(text) + b"".join(line.encode() + b"\n" for line in lines)


def test_the_witnesses_cosignatures_as_the_portal_reads_them() -> None:
    text = Checkpoint(ORIGIN, 1234, bytes(range(32))).text()
    other = Checkpoint(ORIGIN, 1234, bytes(32)).text()
    good = W1.cosign(text, 1_700_000_000).line
    blob = bytearray(base64.b64decode(W2.cosign(text, 1_700_000_000).line.split(" ")[2]))
    blob[-1] ^= 1
    forged = f"\u2014 {W2.name} {base64.b64encode(blob).decode()}"
    stranger = Cosigner(W1.name, Ed25519PrivateKey.generate()).cosign(text, 5).line
    big_time = W2.cosign(text, 2**63 - 1).line
    results = run(
        [
            note_case(cosigned(text, good)),
            note_case(cosigned(text, good, W2.cosign(text, 7).line)),
            note_case(cosigned(text, good, forged)),
            note_case(cosigned(text, stranger)),
            note_case(cosigned(text, W1.cosign(other, 5).line)),
            note_case(cosigned(text, big_time)),
            note_case(NoteSigner(ORIGIN, Ed25519PrivateKey.generate()).sign(text) + b""),
            note_case(cosigned(text), log=NoteSigner("elsewhere", LOG._key).verifier_key),
            note_case(b"not a note"),
            note_case(text + good.encode() + b"\n"),
        ]
    )
    ok, absent, bad = "ok", "absent", "bad"
    assert results[0] == {"size": 1234, "log": True, "witnesses": {W1.name: ok, W2.name: absent}}
    assert results[1]["witnesses"] == {W1.name: ok, W2.name: ok}
    assert results[2]["witnesses"] == {W1.name: ok, W2.name: bad}, "a forged line is told"
    assert results[3]["witnesses"] == {W1.name: absent, W2.name: absent}, "another key's line"
    assert results[4]["witnesses"][W1.name] == bad, "a cosignature of another tree"
    assert results[5]["witnesses"][W2.name] == ok, "the largest timestamp the format allows"
    assert results[6]["log"] is False, "not signed by the log's key"
    assert results[7]["log"] is False, "the log's key under another name"
    assert results[8] is None and results[9] is None


@pytest.mark.parametrize(("first", "second"), [(1, 1), (1, 2), (3, 7), (4, 9), (8, 8), (6, 300)])
def test_consistency_proofs_as_the_portal_checks_them(first: int, second: int) -> None:
    leaves = [leaf_hash(b"entry %d" % i) for i in range(second)]
    a, b = root(leaves[:first]), root(leaves)
    proof = [h.hex() for h in consistency_proof(first, leaves)]
    wrong = bytes(32)

    def case(x: bytes, y: bytes, path: list[str]) -> dict[str, Any]:
        sizes = {"first": first, "second": second}
        return {"kind": "proof", **sizes, "a": x.hex(), "b": y.hex(), "proof": path}

    cases = [case(a, b, proof), case(wrong, b, proof), case(a, wrong, proof)]
    if proof:
        cases.append(case(a, b, [wrong.hex(), *proof[1:]]))
    results = run(cases)
    assert results[0] is True
    assert not any(results[1:]), results


@pytest.mark.parametrize("size", [1, 2, 7, 8, 300])
def test_inclusion_proofs_as_the_portal_checks_them(size: int) -> None:
    leaves = [leaf_hash(b"entry %d" % i) for i in range(size)]
    cases = [
        {
            "kind": "inclusion",
            "index": index,
            "size": size,
            "leaf": leaves[index].hex(),
            "proof": [h.hex() for h in inclusion_proof(index, leaves)],
        }
        for index in sorted({0, size // 2, size - 1})
    ]
    wrong = {**cases[0], "leaf": bytes(32).hex()}
    beyond = {**cases[0], "index": size}
    results = run([*cases, wrong, beyond])
    assert results[: len(cases)] == [root(leaves).hex()] * len(cases)
    assert results[-2] != root(leaves).hex() and results[-1] is None

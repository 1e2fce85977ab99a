"""Check a dossier's trace against the signed audit log, from the public HTTP routes only.

Standard library only, so that a patient's software or an auditor can copy this file and
`merkle.py` and run it anywhere:

    from verifier import verify_trace
    report = verify_trace("https://dmp.example", token, "180057512345623")
    assert report.ok, report.problems

For every entry of `GET /v1/dossiers/{ins}/access-log` it checks that the entry's canonical
bytes hash to its leaf hash, that what the page shows is what the bytes say, that the entry is
in the tree of the newest signed head (`GET /v1/audit/checkpoint`, RFC 9162 inclusion proof from
`GET /v1/audit/entries/{seq}/proof`), and that consecutive entries of the dossier are chained
(`prev` is the previous entry's leaf hash) with none missing — the patient sees the whole
trace; a professional, who sees only their own entries, passes `whole_trace=False`. The newest
entry's proof anchors the chain, and so every entry before it. Given a head kept from an
earlier visit it also checks the log only grew since (`GET /v1/audit/consistency`).

Ed25519 is not in the standard library: pass `check_signature` (a function of the head and the
keys of `GET /v1/audit/keys`, e.g. with the `cryptography` package) to check the head's
signature too, under the key its `key_id` names and within that key's `not_before` and
`not_after`; the message signed is documented in docs/audit.md.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

try:  # inside the platform's package, or copied next to merkle.py
    from dmp_audit import merkle
except ImportError:  # pragma: no cover - the copied layout
    import merkle  # type: ignore[no-redef]

Json = dict[str, Any]
SignatureCheck = Callable[[Json, list[Json]], bool]
SHOWN = ("seq", "action", "mode", "outcome")


@dataclass
class Report:
    checkpoint: Json = field(default_factory=dict)
    checked: int = 0  # entries proven in the signed tree
    pending: int = 0  # entries newer than the signed head: prove them after the next one
    signature_checked: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_trace(
    base_url: str,
    token: str,
    ins: str,
    *,
    check_signature: SignatureCheck | None = None,
    previous_checkpoint: Json | None = None,
    whole_trace: bool = True,
    timeout: float = 30.0,
) -> Report:
    def get(path: str, params: dict[str, Any] | None = None, auth: bool = False) -> Json:
        url = base_url.rstrip("/") + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"accept": "application/json"}
        if auth:
            headers["authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - the caller's URL
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body: Json = json.load(response)
            return body

    report = Report()
    head = report.checkpoint = get("/v1/audit/checkpoint")
    size, root = int(head["size"]), bytes.fromhex(head["root_hash"])
    if check_signature is not None:
        published = get("/v1/audit/keys")["keys"]
        # the log's keys only: a witness's key cosigns checkpoints, it never signs a head
        logs = [k for k in published if k.get("role", "log") == "log"]
        report.signature_checked = check_signature(head, logs)
        if not report.signature_checked:
            report.problems.append("the checkpoint's signature does not hold")
    if previous_checkpoint is not None:
        _check_growth(get, previous_checkpoint, head, report)

    entries: list[Json] = []
    cursor: str | None = None
    while True:
        params = {"page_size": 100, **({"cursor": cursor} if cursor else {})}
        page = get(f"/v1/dossiers/{ins}/access-log", params, auth=True)
        entries += page["entries"]
        cursor = page.get("next")
        if not cursor:
            break

    chain: dict[int, tuple[str, str]] = {}  # n -> (prev, own leaf hash)
    for shown in entries:
        data = shown["entry"].encode()
        leaf = merkle.leaf_hash(data)
        said = json.loads(data)
        where = f"entry {shown['seq']}"
        if leaf.hex() != shown["leaf_hash"]:
            report.problems.append(f"{where}: its bytes do not hash to its leaf hash")
            continue
        if any(said[k] != shown[k] for k in SHOWN) or said["actor"]["id"] != shown["actor"]["id"]:
            report.problems.append(f"{where}: the page shows other facts than the entry")
        if said["ins"] != ins:
            report.problems.append(f"{where}: the entry is about another dossier")
        chain[said["n"]] = (said["prev"], leaf.hex())
        seq = int(shown["seq"])
        if seq >= size:
            report.pending += 1
            continue
        proof = get(f"/v1/audit/entries/{seq}/proof", {"tree_size": size})
        path = [bytes.fromhex(h) for h in proof["proof"]]
        if proof["leaf_hash"] != leaf.hex() or not merkle.verify_inclusion(
            seq, size, leaf, path, root
        ):
            report.problems.append(f"{where}: not in the signed tree of size {size}")
            continue
        report.checked += 1
    for n, (prev, _) in sorted(chain.items()):
        before = chain.get(n - 1)
        if before is not None and before[1] != prev:
            report.problems.append(f"the dossier's chain is broken before its entry n={n}")
        elif before is None and n > 0 and whole_trace:
            report.problems.append(f"the dossier's chain is broken: its entry n={n - 1} is missing")
    return report


def _check_growth(get: Callable[..., Json], old: Json, new: Json, report: Report) -> None:
    old_size, new_size = int(old["size"]), int(new["size"])
    if new_size < old_size:
        report.problems.append(f"the log shrank from {old_size} to {new_size} entries")
        return
    if old_size == 0:
        return
    proof = get("/v1/audit/consistency", {"from": old_size, "to": new_size})["proof"]
    if not merkle.verify_consistency(
        old_size,
        new_size,
        bytes.fromhex(old["root_hash"]),
        bytes.fromhex(new["root_hash"]),
        [bytes.fromhex(h) for h in proof],
    ):
        report.problems.append(f"the log of size {new_size} does not extend the one of {old_size}")

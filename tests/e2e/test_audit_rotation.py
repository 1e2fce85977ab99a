"""Issue 21 §5: the log's signing key rotates. A stack of its own (the session's keeps its one
key): the log signed by key A, the audit service restarted under key B with A retired. The
log loads, B signs the current tree at once and every head after, `/v1/audit/keys` lists both
keys with their periods, `dmp audit verify` passes with both and fails when A's period no
longer covers A's heads, and Go's verifier and a witness need B's verifier key from then on
(the witness's state carries over)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dmp_audit.__main__ import SIGNING_PURPOSE
from dmp_audit.entry import TreeHeadSigner
from dmp_kit.crypto import derive_key
from dmp_stack.credentials import new_key
from dmp_stack.testing import RunningStack, own_servers, running_stack, until
from tests.e2e.test_tlog_go import check, saved, tlogcheck, witness  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def rotating() -> Iterator[RunningStack]:
    # Servers of its own, whatever the session uses: the session's log keeps its key.
    with own_servers("dmp-rotation-") as infra, running_stack(infra) as stack:
        yield stack


def key_id(seed: str) -> str:
    return TreeHeadSigner(derive_key(base64.b64decode(seed), SIGNING_PURPOSE)).key_id


def get(stack: RunningStack, path: str) -> Any:
    """The route's answer, once it gives one (audit may still be loading after a restart)."""

    def answer() -> Any:
        with stack.client() as c:
            r = c.get(path)
        return r.json() if r.status_code == 200 else None

    found = until(answer)
    assert found, f"{path} did not answer"
    return found


def log_keys(stack: RunningStack) -> list[dict[str, Any]]:
    """The log's keys among the published ones (the witnesses' are listed too)."""
    return [k for k in get(stack, "/v1/audit/keys")["keys"] if k["role"] == "log"]


def traced_reads(stack: RunningStack, times: int) -> int:
    """Each read of the dossier by its patient is one entry of the log; the size the log has
    once they are all in it (their entries listed in the dossier's access log)."""
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    token = stack.token_for(patient, "patient")
    stack.open_dossier(token, patient)
    path = f"/v1/dossiers/{patient['ins']}"
    with stack.client(token) as c:
        for _ in range(times):
            assert c.get(path).status_code == 200

        def logged() -> list[dict[str, Any]] | None:
            r = c.get(f"{path}/access-log", params={"page_size": 100})
            entries = r.json()["entries"] if r.status_code == 200 else []
            reads = [e for e in entries if e["action"] == "read"]
            return entries if len(reads) >= times else None

        entries = until(logged, timeout=60)
    assert entries, "the reads did not reach the access log"
    return max(e["seq"] for e in entries) + 1


def settled(stack: RunningStack, size: int) -> dict[str, Any]:
    """The newest signed head once it covers `size` entries and the log has stopped growing
    (a head unchanged between two reads; a slow relay alone cannot pass for a settled log)."""
    last: dict[str, Any] = {}

    def unchanged() -> bool:
        nonlocal last
        head = get(stack, "/v1/audit/checkpoint")
        same, last = head == last and head["size"] >= size, head
        return same

    assert until(unchanged, timeout=30, interval=1.5)
    return last


def verify(stack: RunningStack, *args: str, env: dict[str, str] | None = None) -> Any:
    argv = [
        sys.executable, "-m", "dmp_audit.cli", "audit", "verify", "--quiet",
        "--mongo-url", stack.infra.mongo.url, "--database", "audit", *args,
    ]  # fmt: skip
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={**os.environ, "DMP_ENV": "dev", **(env or {})},
        check=False,
        timeout=120,
    )


def test_the_key_rotates_and_the_old_heads_stay_verifiable(
    rotating: RunningStack,
    tlogcheck: Path,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    stack = rotating
    key_a = stack.stack.credentials.own_keys["audit"]
    before = settled(stack, traced_reads(stack, 5))
    assert before["key_id"] == key_id(key_a)
    (published_a,) = log_keys(stack)
    assert "not_after" not in published_a and "not_before" not in published_a
    url = stack.url
    assert check(tlogcheck, url, published_a["verifier_key"]).returncode == 0
    state = tmp_path / "witness.json"  # a witness that pinned A
    assert witness(url, published_a["verifier_key"], state).returncode == 0

    # the operator's rotation: B signs from now, A is retired with its public half and period
    rotated = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    key_b = new_key()
    retired = [{"verifier_key": published_a["verifier_key"], "not_after": rotated.isoformat()}]
    rotation = {
        "DMP_AUDIT_KEY": key_b,
        "DMP_AUDIT_KEY_NOT_BEFORE": rotated.isoformat(),
        "DMP_AUDIT_RETIRED_KEYS": json.dumps(retired),
    }
    until(lambda: datetime.now(UTC) > rotated)
    stack.stack.restart("audit", env=rotation)

    # the log loaded (A's heads verified under A) and B signed the same tree at once (once the
    # killed process's lease has lapsed and the new one appends)
    head = until(
        lambda: (found := get(stack, "/v1/audit/checkpoint"))["key_id"] == key_id(key_b) and found,
        timeout=120,  # a loaded machine: the lease lapses, then the log loads and signs
    )
    assert head, "no head signed by B"
    assert (head["size"], head["root_hash"]) == (before["size"], before["root_hash"])
    assert head["timestamp"] >= rotated.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    keys = log_keys(stack)
    stamp = rotated.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert [k["key_id"] for k in keys] == [key_id(key_b), key_id(key_a)]  # current first
    assert (keys[0]["not_before"], keys[0].get("not_after")) == (stamp, None)
    assert (keys[1].get("not_before"), keys[1]["not_after"]) == (None, stamp)
    assert {k: keys[1][k] for k in published_a} == published_a  # A as it was published

    # new entries: heads signed by B
    after = settled(stack, traced_reads(stack, 3))
    assert after["size"] > before["size"] and after["key_id"] == key_id(key_b)

    # the operator's check, with the published keys and with the configuration
    ok = verify(stack, "--keys-from", url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert verify(stack, env=rotation).returncode == 0
    cut = rotated - timedelta(days=1)  # A's period cut: it no longer covers A's heads
    shortened = [{**retired[0], "not_after": cut.isoformat()}]
    bad = verify(stack, env={**rotation, "DMP_AUDIT_RETIRED_KEYS": json.dumps(shortened)})
    assert bad.returncode == 1 and "outside the period" in bad.stdout, bad.stdout + bad.stderr
    only_b = verify(stack, "--public-key", f"{keys[0]['key_id']}:{keys[0]['public_key']}")
    assert only_b.returncode == 1 and "unknown key" in only_b.stdout, only_b.stdout

    # Go's verifier (and a witness) must be given B's verifier key: the note's key hash changed
    assert check(tlogcheck, url, keys[0]["verifier_key"]).returncode == 0
    assert check(tlogcheck, url, published_a["verifier_key"]).returncode != 0
    # the witness: A's key alone refuses B's checkpoint; given B's, it goes on from its state
    refused = witness(url, published_a["verifier_key"], state)
    assert refused.returncode == 1 and "REFUSED" in refused.stderr, refused.stderr
    assert saved(state).size == before["size"]
    goes_on = witness(url, keys[0]["verifier_key"], state)
    assert goes_on.returncode == 0, goes_on.stderr
    assert saved(state).size == after["size"]

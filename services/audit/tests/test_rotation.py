"""Rotating the log's signing key, on a real MongoDB-compatible server: old heads verify under
the retired key within its period, the new key signs from its start, and no key or period comes
from the database."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dmp_audit.__main__ import log_keys, signer
from dmp_audit.config import AuditSettings
from dmp_audit.entry import TreeHead, TreeHeadSigner, raw_public_key, rfc3339
from dmp_audit.log import AuditLog, LogCorrupted, Record
from dmp_audit.note import NoteSigner, open_note
from dmp_audit.store import AuditStore
from dmp_audit.verify import scan
from dmp_kit.auth import Principal
from dmp_kit.clock import ManualClock
from dmp_kit.events import audit_event
from dmp_stack.testing import Infra, make_ins, make_rpps

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY_A = base64.b64encode(hashlib.sha256(b"rotation key A").digest()).decode()
KEY_B = base64.b64encode(hashlib.sha256(b"rotation key B").digest()).decode()
START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
ROTATED = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)  # A's last day ends, B's begins


def settings(key: str, **more: Any) -> AuditSettings:
    return AuditSettings(env="dev", audit_key=key, **more)


def public_b64(key: str) -> str:
    return base64.b64encode(raw_public_key(signer(settings(key)).public_key)).decode()


def retired_a(not_after: datetime = ROTATED, **more: Any) -> dict[str, Any]:
    return {"public_key": public_b64(KEY_A), "not_after": not_after.isoformat(), **more}


def under_b(a_not_after: datetime = ROTATED) -> AuditSettings:
    """B signs from ROTATED; A is retired, having signed until `a_not_after`."""
    return settings(
        KEY_B, audit_key_not_before=ROTATED, audit_retired_keys=[retired_a(a_not_after)]
    )


def service_log(store: AuditStore, config: AuditSettings, clock: ManualClock) -> AuditLog:
    """The log as the service builds it from its settings (__main__)."""
    own = signer(config)
    return AuditLog(store, own, clock, config, keys=log_keys(config, own))


def records(first: int, n: int, clock: ManualClock) -> list[Record]:
    who = Principal(kind="professional", subject="s", rpps=make_rpps(), profession="10")
    ins = make_ins()
    return [
        Record(
            s,
            audit_event(
                source="dossier", clock=clock, caller=who, patient_ins=ins, action="read",
                outcome="success",
            ),
        )
        for s in range(first, first + n)
    ]  # fmt: skip


async def stored(store: AuditStore) -> list[TreeHead]:
    return [head for _, head in await store.heads()]


async def log_under_a(store: AuditStore) -> tuple[ManualClock, list[TreeHead]]:
    """A log A signed from START: 20 entries, heads at sizes 0, 10 and 20."""
    clock = ManualClock(START)
    log = service_log(store, settings(KEY_A), clock)
    await log.load()
    for first in (1, 11):
        clock.advance(timedelta(days=1))
        await log.append(records(first, 10, clock))
        await log.sign()
    heads = await stored(store)
    assert [h.size for h in heads] == [0, 10, 20]
    assert {h.key_id for h in heads} == {signer(settings(KEY_A)).key_id}
    return clock, heads


async def test_a_log_signed_by_a_loads_under_b_with_a_retired(store: AuditStore) -> None:
    _, old = await log_under_a(store)
    key_a, key_b = signer(settings(KEY_A)), signer(settings(KEY_B))
    clock = ManualClock(ROTATED + timedelta(hours=1))
    log = service_log(store, under_b(), clock)
    await log.load()  # A's heads verify under A, within its period

    # B signed the current tree at once, in place of A's head of the same tree
    head = log.checkpoint()
    assert (head.size, head.key_id) == (20, key_b.key_id)
    assert head.root_hash == old[-1].root_hash and head.timestamp == rfc3339(clock.now())
    heads = await stored(store)
    assert [(h.size, h.key_id) for h in heads] == [
        (0, key_a.key_id),
        (10, key_a.key_id),
        (20, key_b.key_id),
    ]
    # the checkpoint note too: B's verifier key opens it, A's does not
    note = log.checkpoint_note()
    config = under_b()
    open_note(note, NoteSigner(config.origin, key_b.private_key).verifier_key)
    with pytest.raises(ValueError, match="no signature by the log's key"):
        open_note(note, NoteSigner(config.origin, key_a.private_key).verifier_key)

    # new heads are B's
    clock.advance(timedelta(minutes=5))
    await log.append(records(21, 5, clock))
    newer = await log.sign()
    assert (newer.size, newer.key_id) == (25, key_b.key_id)

    # the keys, current first, with their periods
    keys = log.keys
    assert list(keys) == [key_b.key_id, key_a.key_id]
    assert (keys[key_b.key_id].not_before, keys[key_b.key_id].not_after) == (ROTATED, None)
    assert (keys[key_a.key_id].not_before, keys[key_a.key_id].not_after) == (None, ROTATED)
    a_note_key = NoteSigner(config.origin, key_a.private_key).verifier_key
    assert keys[key_a.key_id].verifier_key == a_note_key

    state = await scan(store, keys)
    assert state.problem is None, str(state.problem)
    assert [h.size for h in state.heads] == [0, 10, 20, 25]

    # and the next start, with nothing new, keeps B's head as it is
    again = service_log(store, under_b(), ManualClock(ROTATED + timedelta(hours=2)))
    await again.load()
    assert again.checkpoint() == newer


async def test_a_head_outside_its_keys_period_does_not_verify(store: AuditStore) -> None:
    await log_under_a(store)
    key_a = signer(settings(KEY_A))
    # A's period cut before its newest head (size 20, two days after START): no start under B
    early = START + timedelta(days=1, hours=12)
    with pytest.raises(LogCorrupted, match=r"size 20 .* outside the period"):
        await service_log(store, under_b(early), ManualClock(ROTATED + timedelta(hours=1))).load()
    assert [h.key_id for h in await stored(store)] == [key_a.key_id] * 3  # nothing signed

    log = service_log(store, under_b(), ManualClock(ROTATED + timedelta(hours=1)))
    await log.load()
    # A's period cut before its head of size 10 (a day after START; B's replaced A's at 20): a
    # start reads the newest head only, the whole check (scan, `dmp audit verify`) every head
    cut = START + timedelta(hours=12)
    found = await scan(store, log_keys(under_b(cut), signer(settings(KEY_B))))
    assert found.problem is not None
    assert "size 10" in str(found.problem) and "outside the period" in str(found.problem)
    # A's period starting after its first heads: the same
    late = settings(
        KEY_B,
        audit_key_not_before=ROTATED,
        audit_retired_keys=[retired_a(not_before=(START + timedelta(hours=1)).isoformat())],
    )
    found = await scan(store, log_keys(late, signer(late)))
    assert found.problem is not None and "size 0" in str(found.problem)
    # B's head dated before B's period: B's not_before moved after it
    later_b = settings(
        KEY_B,
        audit_key_not_before=ROTATED + timedelta(days=1),
        audit_retired_keys=[retired_a()],
    )
    found = await scan(store, log_keys(later_b, signer(later_b)))
    assert found.problem is not None and "size 20" in str(found.problem)


async def test_a_head_signed_by_a_key_not_in_configuration_fails(store: AuditStore) -> None:
    await log_under_a(store)
    # B without A retired: A's heads name a key the configuration does not give
    lone = settings(KEY_B)
    with pytest.raises(LogCorrupted, match="unknown key"):
        await service_log(store, lone, ManualClock(ROTATED)).load()
    # a head signed by a key of the database holder's choosing, at a new size
    forger = TreeHeadSigner(hashlib.sha256(b"not configured").digest())
    clock = ManualClock(ROTATED + timedelta(hours=1))
    log = service_log(store, under_b(), clock)
    await log.load()
    head = log.checkpoint()
    await store.checkpoints.delete_one({"_id": head.size})
    await store.save_head(forger.sign(head.size, bytes.fromhex(head.root_hash), clock.now()))
    found = await scan(store, log.keys)
    assert found.problem is not None and "unknown key" in str(found.problem)
    with pytest.raises(LogCorrupted, match="unknown key"):
        await service_log(store, under_b(), clock).load()


async def test_the_current_key_does_not_sign_before_its_period(store: AuditStore) -> None:
    await log_under_a(store)
    log = service_log(store, under_b(), ManualClock(ROTATED - timedelta(minutes=1)))
    with pytest.raises(ValueError, match="does not cover now"):
        await log.load()
    assert [h.size for h in await stored(store)] == [0, 10, 20]  # nothing signed


async def test_dmp_audit_verify_takes_the_keys_and_periods_from_configuration(
    store: AuditStore, infra: Infra
) -> None:
    await log_under_a(store)
    await service_log(store, under_b(), ManualClock(ROTATED + timedelta(hours=1))).load()
    argv = [
        sys.executable, "-m", "dmp_audit.cli", "audit", "verify", "--quiet",
        "--mongo-url", infra.mongo.url, "--database", store.db.name,
    ]  # fmt: skip

    def run(a_not_after: datetime | None) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "DMP_ENV": "dev",
            "DMP_AUDIT_KEY": KEY_B,
            "DMP_AUDIT_KEY_NOT_BEFORE": ROTATED.isoformat(),
        }
        if a_not_after is not None:
            env["DMP_AUDIT_RETIRED_KEYS"] = json.dumps([retired_a(a_not_after)])
        return subprocess.run(argv, capture_output=True, text=True, env=env, check=False)

    ok = await asyncio.to_thread(run, ROTATED)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "20 entries" in ok.stdout and "3 signed tree heads" in ok.stdout
    cut = await asyncio.to_thread(run, START + timedelta(hours=12))
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert "INCONSISTENT" in cut.stdout and "outside the period" in cut.stdout
    without_a = await asyncio.to_thread(run, None)
    assert without_a.returncode == 1 and "unknown key" in without_a.stdout

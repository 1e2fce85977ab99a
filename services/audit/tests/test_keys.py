"""The log's keys and their periods as configuration gives them (keys.py): no I/O."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from dmp_audit.__main__ import log_keys, signer
from dmp_audit.config import AuditSettings
from dmp_audit.entry import TreeHeadSigner, raw_public_key, rfc3339
from dmp_audit.keys import LogKey, RetiredKey, head_problem
from dmp_audit.note import NoteSigner

KEY_A = base64.b64encode(hashlib.sha256(b"rotation key A").digest()).decode()
KEY_B = base64.b64encode(hashlib.sha256(b"rotation key B").digest()).decode()
START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
ROTATED = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def settings(key: str, **more: Any) -> AuditSettings:
    return AuditSettings(env="dev", audit_key=key, **more)


def public_b64(key: str) -> str:
    return base64.b64encode(raw_public_key(signer(settings(key)).public_key)).decode()


def test_retired_keys_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    key_a = signer(settings(KEY_A))
    vkey = NoteSigner("dmp.example/v1/audit/log", key_a.private_key).verifier_key
    monkeypatch.setenv("DMP_ENV", "dev")
    monkeypatch.setenv("DMP_AUDIT_KEY", KEY_B)
    monkeypatch.setenv("DMP_AUDIT_KEY_NOT_BEFORE", "2026-11-20T08:00:00Z")
    monkeypatch.setenv(
        "DMP_AUDIT_RETIRED_KEYS",
        json.dumps(
            [
                {
                    "verifier_key": vkey,
                    "not_before": "2026-11-02T08:00:00Z",
                    "not_after": "2026-11-20T08:00:00+00:00",
                }
            ]
        ),
    )
    config = AuditSettings()
    keys = log_keys(config, signer(config))
    assert list(keys) == [signer(config).key_id, key_a.key_id]
    # a verifier key is published as given (its name is the origin it signed notes under)
    assert keys[key_a.key_id] == LogKey(key_a.public_key, vkey, START, ROTATED)


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"not_after": "2026-11-20T08:00:00Z"}, "either verifier_key or public_key"),
        ({"public_key": "AAAA", "verifier_key": "x+0+AA", "not_after": "2026-11-20T08:00:00Z"},
         "either verifier_key or public_key"),
        ({"public_key": "not base64!", "not_after": "2026-11-20T08:00:00Z"}, "base64"),
        ({"public_key": "AAAA", "not_after": "2026-11-20T08:00:00Z"}, "exactly 32 bytes"),
        ({"verifier_key": "log+00000000+AAAA", "not_after": "2026-11-20T08:00:00Z"},
         "verifier_key is not valid"),
        ({"public_key": base64.b64encode(bytes(32)).decode()}, "not_after"),
        ({"public_key": base64.b64encode(bytes(32)).decode(), "not_after": "2026-11-20T08:00:00"},
         "timezone"),
        ({"public_key": base64.b64encode(bytes(32)).decode(), "not_after": "2026-11-20T08:00:00Z",
          "not_before": "2026-11-21T08:00:00Z"}, "not_before must come before"),
        ({"public_key": base64.b64encode(bytes(32)).decode(), "not_after": "2026-11-20T08:00:00Z",
          "period": "always"}, "Extra inputs"),
    ],
)  # fmt: skip
def test_a_malformed_retired_key_is_refused(given: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        RetiredKey.model_validate(given)


def test_a_key_given_twice_is_refused() -> None:
    twice = settings(
        KEY_B,
        audit_retired_keys=[{"public_key": public_b64(KEY_B), "not_after": ROTATED.isoformat()}],
    )
    with pytest.raises(ValueError, match="given twice"):
        log_keys(twice, signer(twice))


def test_a_period_holds_both_its_bounds_and_nothing_outside() -> None:
    own = TreeHeadSigner(hashlib.sha256(b"period").digest())
    key = LogKey(own.public_key, "", START, ROTATED)
    keys = {own.key_id: key}
    micro = timedelta(microseconds=1)
    for at, holds in (
        (START - micro, False),
        (START, True),
        (ROTATED, True),
        (ROTATED + micro, False),
    ):
        head = own.sign(3, bytes(32), at)
        assert key.covers(head.timestamp) is holds
        assert (head_problem(head, keys) is None) is holds
    assert not key.covers("") and not key.covers("2026-11-10T08:00:00")  # no time, no zone
    signed = own.sign(3, bytes(32), START + timedelta(days=1))
    wrong = dataclasses.replace(signed, root_hash="11" * 32)
    assert "signature" in str(head_problem(wrong, keys))
    # a bare public key (given by hand) has no period
    late = own.sign(3, bytes(32), ROTATED + timedelta(days=9))
    assert head_problem(late, {own.key_id: own.public_key}) is None
    assert rfc3339(START) == "2026-11-02T08:00:00.000000Z"

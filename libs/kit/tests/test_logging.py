"""Logs never carry patient identifiers in clear, nor secrets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from dmp_kit.logging import Redactor, configure, get_logger

KEY = b"k" * 32
INS = "180017512345660"


def test_identifiers_are_pseudonymised_and_secrets_dropped() -> None:
    r = Redactor(KEY)
    out = r(
        None,
        "info",
        {
            "event": f"opened dossier {INS}",
            "ins": INS,
            "password": "hunter2hunter2",
            "nested": {"patient_ins": INS, "email": "a@b.fr"},
            "count": 3,
        },
    )
    text = json.dumps(out)
    assert INS not in text
    assert "hunter2" not in text and "a@b.fr" not in text
    assert out["ins"] == r.pseudonym(INS) == out["nested"]["patient_ins"]
    assert out["event"] == f"opened dossier {r.pseudonym(INS)}"
    assert out["count"] == 3


def test_pseudonyms_depend_on_the_key() -> None:
    assert Redactor(KEY).pseudonym(INS) != Redactor(b"j" * 32).pseudonym(INS)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    handlers = logging.getLogger().handlers[:]
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers


@pytest.mark.usefixtures("restore_logging")
def test_configured_logger_writes_json_without_the_ins(capsys: pytest.CaptureFixture[str]) -> None:
    configure("test", "INFO", KEY)
    structlog.contextvars.bind_contextvars(request_id="r-1")
    get_logger("t").info("dossier_read", ins=INS, token="secret-token")
    structlog.contextvars.unbind_contextvars("request_id")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["event"] == "dossier_read"
    assert record["request_id"] == "r-1"
    assert record["service"] == "test"
    assert INS not in line and "secret-token" not in line

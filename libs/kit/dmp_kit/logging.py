"""Structured JSON logs; patient identifiers and secrets never appear in clear."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from dmp_kit.crypto import keyed_digest

# Values under these keys are replaced by a keyed pseudonym (stable, not reversible).
PSEUDONYMISED_KEYS = frozenset({"ins", "patient_ins", "nir", "login"})
# Values under these keys never reach a log line at all.
REDACTED_KEYS = frozenset(
    {
        "password",
        "code",
        "otp",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "client_assertion",
        "vitale_serial",
        "email",
        "phone",
        "given_name",
        "family_name",
        "birth_date",
        "content",
        "identity_key",
        "dossier_key",
        "audit_key",
        "service_account_key",
        "log_pseudonym_key",
        "nats_password",
    }
)
# An INS-shaped run of characters anywhere in a message.
_INS_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])[1-8][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{8}(?![0-9])")


class Redactor:
    """A structlog processor that pseudonymises identifiers and drops secrets."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def pseudonym(self, value: str) -> str:
        return "p:" + keyed_digest(self._key, value)[:16]

    def _clean(self, key: str, value: Any) -> Any:
        lowered = key.lower()
        if lowered in REDACTED_KEYS:
            return "[redacted]"
        if lowered in PSEUDONYMISED_KEYS and isinstance(value, str):
            return self.pseudonym(value)
        if isinstance(value, str):
            return _INS_IN_TEXT.sub(lambda m: self.pseudonym(m.group(0)), value)
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        return value

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self._clean(key, event_dict[key])
        return event_dict


def configure(service: str, level: str, pseudonym_key: bytes) -> None:
    """JSON lines on stdout for structlog and for the standard library's loggers alike."""
    redactor = Redactor(pseudonym_key)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pymongo", "nats", "asyncio", "grpc", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger

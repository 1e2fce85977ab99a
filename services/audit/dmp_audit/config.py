"""Audit's settings."""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import AwareDatetime, SecretStr, field_validator
from pydantic_settings import NoDecode

from dmp_audit.cosign import witness_key_of
from dmp_audit.keys import RetiredKey
from dmp_audit.note import BadNote, check_origin
from dmp_kit.config import Settings, dev_key

DEV_AUDIT_KEY = dev_key("audit")


class AuditSettings(Settings):
    published_secrets: ClassVar[dict[str, str]] = {
        **Settings.published_secrets,
        "audit_key": DEV_AUDIT_KEY,
    }
    key_settings: ClassVar[tuple[str, ...]] = (*Settings.key_settings, "audit_key")

    # Audit's own secret (base64 of 32 bytes): its tree-head signing key derives from it. No
    # other process holds it.
    audit_key: SecretStr = SecretStr(DEV_AUDIT_KEY)
    # When that key began signing (RFC 3339): heads dated earlier do not verify under it.
    # Unset: since the log began. Set it when rotating (docs/audit.md).
    audit_key_not_before: AwareDatetime | None = None
    # The keys it replaced, public halves only, with the period each signed in (a JSON list
    # of {"verifier_key" or "public_key", "not_before", "not_after"}): their heads still verify.
    audit_retired_keys: tuple[RetiredKey, ...] = ()
    # The sequencer's lease (collection `lease`): the one replica that appends renews it every
    # third of this; when it stops renewing, another replica takes over within this time.
    sequencer_lease_seconds: float = 6.0
    # Entries appended per write (one chunk document each): the larger, the faster the log
    # fills and the faster it is verified.
    append_batch: int = 1000
    # After a batch smaller than that, wait this long before the next fetch, so that entries
    # arriving one by one are appended a few at a time: a write costs the database once per
    # few entries instead of once per entry (0: never wait). A read of an access log does not
    # wait it out: it asks the appender to go on at once (api.py, ListAccessLog).
    append_linger_seconds: float = 0.2
    # A tree head is signed at least this often while entries arrive…
    checkpoint_interval_seconds: float = 1.0
    # …and at least every this many entries.
    checkpoint_every_entries: int = 10_000
    # How long JetStream waits for an acknowledgement before it redelivers.
    ack_wait_seconds: float = 30.0
    # Decompressed chunks kept in memory to answer access-log reads (about 0.4 MB each).
    chunk_cache: int = 32
    # Full hash tiles kept in memory to answer proofs and tile reads (8 KiB each).
    tile_cache: int = 2048
    # A local directory where full hash tiles are also kept as files (one sparse file per
    # level, 32 bytes per entry of the log): a proof that misses the memory cache reads its
    # tile there instead of from the database. Each replica may have its own; a lost or stale
    # file is read again from the database. Empty: no files.
    tile_dir: str = ""
    # What those files may take on disk (MiB); beyond it no more tiles are written to them.
    tile_dir_max_mb: int = 4096
    # Dossiers whose chain head (n, leaf hash of the newest entry) is kept in memory.
    chain_cache: int = 50_000
    access_log_page_max: int = 100
    # The first line of the checkpoint note and its key's name (c2sp.org/tlog-checkpoint): the
    # log's public URL prefix without its scheme. Empty: the issuer's host + /v1/audit/log.
    checkpoint_origin: str = ""
    # The witnesses whose cosignatures the log accepts and publishes (c2sp.org/tlog-cosignature):
    # their verifier keys `<name>+<hex key id>+<base64(0x04 ‖ key)>`, as a JSON list or
    # separated by commas. None by default.
    audit_witnesses: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("sequencer_lease_seconds")
    @classmethod
    def _lease(cls, value: float) -> float:
        if not 1.0 <= value <= 300.0:
            raise ValueError("the sequencer's lease lasts between 1 and 300 seconds")
        return value

    @field_validator("tile_dir_max_mb")
    @classmethod
    def _tile_dir_max(cls, value: int) -> int:
        if value < 1:
            raise ValueError("the tile files take at least 1 MiB")
        return value

    @field_validator("append_linger_seconds")
    @classmethod
    def _linger(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("the append linger lasts between 0 and 1 second")
        return value

    @field_validator("checkpoint_origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        return check_origin(value) if value else value

    @field_validator("audit_witnesses", mode="before")
    @classmethod
    def _witnesses(cls, value: Any) -> tuple[str, ...]:
        return witness_keys(value)

    @property
    def origin(self) -> str:
        host = urlsplit(self.jwt_issuer).netloc or "dmp.localhost"
        return self.checkpoint_origin or f"{host}/v1/audit/log"

    @property
    def audit_key_bytes(self) -> bytes:
        return self.key_bytes("audit_key")


def witness_keys(value: Any) -> tuple[str, ...]:
    """DMP_AUDIT_WITNESSES read and checked: each a cosignature/v1 verifier key whose id matches
    its key, no name twice. ValueError says which one is wrong."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ValueError("DMP_AUDIT_WITNESSES is not a JSON list") from exc
        else:
            value = [part for part in text.replace("\n", ",").split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError("DMP_AUDIT_WITNESSES is a list of witness verifier keys")
    names: set[str] = set()
    keys: list[str] = []
    for number, vkey in enumerate(value, 1):
        try:
            name, _ = witness_key_of(vkey)
        except (BadNote, ValueError) as exc:
            raise ValueError(
                f"DMP_AUDIT_WITNESSES: witness {number} is not a cosignature/v1 verifier key "
                f"<name>+<hex key id>+<base64(0x04 ‖ Ed25519 key)> ({exc})"
            ) from exc
        if name in names:
            raise ValueError(f"DMP_AUDIT_WITNESSES: the witness {name!r} is listed twice")
        names.add(name)
        keys.append(vkey.strip())
    return tuple(keys)

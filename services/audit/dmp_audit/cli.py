"""`dmp audit verify`: re-read the whole stored log and report its first inconsistency
(`dmp audit witness`, which checks and cosigns the checkpoint, is in witness.py).

    dmp audit verify [--mongo-url URL] [--database audit] [--keys-from GATEWAY_URL]
                     [--public-key KEY_ID:BASE64 ...] [--witness SIZE:ROOT_HEX]

The keys that may sign tree heads come from --keys-from (what the platform publishes at
/v1/audit/keys, with each key's validity period) and --public-key (no period), or else from
the platform's configuration as the service reads it: DMP_AUDIT_KEY with
DMP_AUDIT_KEY_NOT_BEFORE, and DMP_AUDIT_RETIRED_KEYS. A head verifies only under the key it
names, within that key's period.
A witness is a tree head kept from `/v1/audit/checkpoint` earlier: with one, a tail cut
together with the heads that covered it is caught too. Exit status: 0 the log verifies,
1 it does not, 2 the command could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
import urllib.request
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError
from tqdm import tqdm

from dmp_audit.config import AuditSettings
from dmp_audit.entry import TreeHead, key_id
from dmp_audit.keys import LogKey
from dmp_audit.store import AuditStore
from dmp_audit.verify import LogState, scan
from dmp_audit.witness import add_command as add_witness
from dmp_kit.config import Settings


def add_commands(areas: Any) -> None:
    """`dmp audit verify`, added to the `dmp` command's areas."""
    audit = areas.add_parser("audit", help="the audit log").add_subparsers(
        dest="command", required=True
    )
    verify = audit.add_parser("verify", help="re-read and check the whole stored log")
    verify.add_argument("--mongo-url", help="default: DMP_MONGO_URL")
    verify.add_argument("--database", help="default: the audit service's (DMP_MONGO_DB or audit)")
    verify.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="KEY_ID:BASE64",
        help="a key that may sign tree heads, at any time (repeatable)",
    )
    verify.add_argument(
        "--keys-from",
        metavar="GATEWAY_URL",
        help="take the keys the platform publishes, with their periods (<url>/v1/audit/keys)",
    )
    verify.add_argument("--witness", metavar="SIZE:ROOT_HEX", help="a tree head seen earlier")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(run=lambda args: asyncio.run(run_verify(args)))
    add_witness(audit)


def keys_from(args: argparse.Namespace) -> dict[str, LogKey | Ed25519PublicKey]:
    if not args.public_key and not args.keys_from:
        from dmp_audit.__main__ import log_keys, signer  # the service's own derivation

        settings = AuditSettings()
        return dict(log_keys(settings, signer(settings)))
    keys: dict[str, LogKey | Ed25519PublicKey] = {}
    if args.keys_from:
        keys.update(published_keys(args.keys_from.rstrip("/") + "/v1/audit/keys"))
    for spec in args.public_key:
        stated, _, b64 = spec.partition(":")
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(b64, validate=True))
        if key_id(key) != stated:
            raise ValueError(f"the key {stated} is not the one given with it")
        keys[stated] = key
    return keys


def published_keys(url: str) -> dict[str, LogKey]:
    """The keys the platform publishes, each with its period, checked against its key id."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - given URL
            published = json.load(answer)["keys"]
        keys = {}
        for k in published:
            if k.get("role", "log") != "log":
                continue  # a witness's key cosigns checkpoints; it never signs a head
            raw = base64.b64decode(k["public_key"], validate=True)
            key = Ed25519PublicKey.from_public_bytes(raw)
            if key_id(key) != k["key_id"]:
                raise ValueError(f"the key {k['key_id']} is not the one given with it")
            keys[k["key_id"]] = LogKey(
                key, k["verifier_key"], _moment(k.get("not_before")), _moment(k.get("not_after"))
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"could not read the published keys at {url} ({exc})") from exc
    return keys


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text} has no time zone")
    return moment


def witness_from(spec: str | None) -> TreeHead | None:
    if not spec:
        return None
    size, _, root = spec.partition(":")
    if not size.isdigit() or len(bytes.fromhex(root)) != 32:
        raise ValueError("--witness is SIZE:ROOT_HEX (64 hex digits)")
    return TreeHead(size=int(size), root_hash=root.lower(), timestamp="")


async def run_verify(args: argparse.Namespace) -> int:
    try:
        keys = keys_from(args)
        witness = witness_from(args.witness)
    except ValueError as exc:
        print(f"dmp audit verify: {exc}", file=sys.stderr)
        return 2
    defaults = Settings.model_fields
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        args.mongo_url or os.environ.get("DMP_MONGO_URL") or defaults["mongo_url"].default,
        serverSelectionTimeoutMS=defaults["mongo_timeout_ms"].default,
    )
    store = AuditStore(client[args.database or os.environ.get("DMP_MONGO_DB") or "audit"])
    started = time.perf_counter()
    try:
        total = await store.chunk_count()
        with tqdm(
            unit=" entries", unit_scale=True, disable=args.quiet, desc="verifying", file=sys.stderr
        ) as bar:
            state = await scan(store, keys, witness=witness, progress=bar.update)
    except PyMongoError as exc:
        print(f"dmp audit verify: the database did not answer ({exc})", file=sys.stderr)
        return 2
    finally:
        await client.close()
    return report(state, time.perf_counter() - started, total)


def report(state: LogState, seconds: float, chunks: int) -> int:
    signed = state.heads[-1].size if state.heads else 0
    print(
        f"{state.size} entries in {chunks} chunks, {len(state.heads)} signed tree heads "
        f"checked, {len(state.chains)} dossier chains; {seconds:.2f} s "
        f"(database {state.db_seconds:.2f} s, hashing and checks {state.cpu_seconds:.2f} s)"
    )
    if state.problem is not None:
        print(f"INCONSISTENT: {state.problem}")
        return 1
    tail = f"; the last {state.unsigned} entries await their tree head" if state.unsigned else ""
    print(f"OK: the log verifies up to the signed head of size {signed}{tail}")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dmp")
    add_commands(parser.add_subparsers(dest="area", required=True))
    args = parser.parse_args(argv)
    sys.exit(args.run(args))


if __name__ == "__main__":
    main()

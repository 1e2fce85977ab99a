"""`dmp audit witness`: check that the log only grows, the same for everyone, and cosign it.

    dmp audit witness --log GATEWAY_URL --log-key VKEY --name NAME --state FILE
                      [--key-file FILE] [--submit] [--once | --interval SECONDS]

The witness's Ed25519 key is a base64 32-byte seed, read from --key-file or from the
DMP_WITNESS_KEY environment variable (never the command line). Each pass fetches
<url>/v1/audit/log/checkpoint, checks the log's signature with its verifier key, then that the
checkpoint extends the last one the witness cosigned (kept in the state file): same size and
root, or a larger tree with a consistency proof from <url>/v1/audit/consistency that verifies.
A smaller tree, a different root at the same size or a proof that fails is a split view or a
rewritten log: the witness refuses and keeps its state. Otherwise it cosigns
(c2sp.org/tlog-cosignature, cosignature/v1), saves the checkpoint with its cosignature in the
state file and prints the cosignature line. With --submit it then hands the cosigned note to
the log (POST <url>/v1/audit/log/cosignatures), which publishes it with its checkpoint. Exit
status: 0 cosigned (and submitted), 1 refused, 2 could not run (or the log refused the
cosignature).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dmp_audit.cosign import Cosigner
from dmp_audit.merkle import verify_consistency
from dmp_audit.note import BadNote, Checkpoint, open_note, public_key_of

KEY_ENV = "DMP_WITNESS_KEY"


class Refused(Exception):
    """The log showed something a witness must not cosign."""


class CannotRun(Exception):
    """The witness could not do its pass (configuration, network)."""


def add_command(audit: Any) -> None:
    witness = audit.add_parser("witness", help="check the log's checkpoint and cosign it")
    witness.add_argument("--log", required=True, metavar="GATEWAY_URL", help="the platform's URL")
    witness.add_argument(
        "--log-key", required=True, metavar="VKEY", help="the log's verifier key (/v1/audit/keys)"
    )
    witness.add_argument("--name", required=True, help="the witness's key name, e.g. a host/path")
    witness.add_argument("--state", required=True, type=Path, help="the witness's state file")
    witness.add_argument(
        "--key-file", type=Path, help=f"file holding the base64 key seed (default: ${KEY_ENV})"
    )
    witness.add_argument(
        "--submit",
        action="store_true",
        help="hand each cosignature to the log (POST /v1/audit/log/cosignatures)",
    )
    mode = witness.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one pass, then exit (the default)")
    mode.add_argument("--interval", type=float, metavar="SECONDS", help="a pass every SECONDS")
    witness.set_defaults(run=run_witness)


def load_key(key_file: Path | None) -> Ed25519PrivateKey:
    encoded = key_file.read_text() if key_file else os.environ.get(KEY_ENV, "")
    try:
        seed = base64.b64decode(encoded.strip(), validate=True)
    except ValueError as exc:
        raise CannotRun("the witness key is not base64") from exc
    if len(seed) != 32:
        raise CannotRun(f"the witness key must be a 32-byte seed (--key-file or ${KEY_ENV})")
    return Ed25519PrivateKey.from_private_bytes(seed)


def _get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - the given URL
            data: bytes = answer.read()
            return data
    except OSError as exc:
        raise CannotRun(f"could not read {url} ({exc})") from exc


def submit(log: str, cosigned: bytes) -> list[str]:
    """Hand the log the note with this witness's cosignature: the names of the witnesses whose
    cosignatures it kept; CannotRun if it refuses."""
    url = f"{log}/v1/audit/log/cosignatures"
    request = urllib.request.Request(  # noqa: S310 - the given URL
        url, data=cosigned, method="POST", headers={"content-type": "text/plain; charset=utf-8"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - the given URL
            kept = json.loads(answer.read())["witnesses"]
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", "")
        except ValueError:
            detail = ""
        raise CannotRun(f"the log refused the cosignature ({exc.code}: {detail})") from exc
    except OSError as exc:
        raise CannotRun(f"could not reach {url} ({exc})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise CannotRun(f"the log's answer to {url} is not readable") from exc
    return [str(name) for name in kept]


def read_state(path: Path) -> Checkpoint | None:
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        return Checkpoint.from_text(saved["checkpoint"].encode())
    except (ValueError, KeyError, TypeError) as exc:
        raise CannotRun(f"the state file {path} is not one this witness wrote") from exc


def write_state(path: Path, text: bytes, note: bytes) -> None:
    """Replace the state in one rename: a crash leaves the old state or the new, never half."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"checkpoint": text.decode(), "cosigned": note.decode()}))
    partial.replace(path)


def check_extends(log: str, old: Checkpoint, new: Checkpoint) -> None:
    """Refused unless `new` is `old` or a tree that provably extends it."""
    if new.origin != old.origin:
        raise Refused(f"the origin changed from {old.origin!r} to {new.origin!r}")
    if new.size < old.size:
        raise Refused(f"the tree shrank from {old.size} to {new.size} entries")
    if new.size == old.size:
        if new.root_hash != old.root_hash:
            raise Refused(
                f"two different trees of size {new.size} were signed (a split view): "
                f"{old.root_hash.hex()} then {new.root_hash.hex()}"
            )
        return
    if old.size == 0:
        return
    query = urllib.parse.urlencode({"from": old.size, "to": new.size})
    try:
        proof = [
            bytes.fromhex(h)
            for h in json.loads(_get(f"{log}/v1/audit/consistency?{query}"))["proof"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise Refused(f"the log gave no readable consistency proof ({exc})") from exc
    if not verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof):
        raise Refused(
            f"the tree of size {new.size} does not extend the one of size {old.size} "
            "this witness cosigned (a split view or a rewritten log)"
        )


def one_pass(args: argparse.Namespace, cosigner: Cosigner) -> str:
    """Check and cosign the log's newest checkpoint; the cosignature line."""
    log = args.log.rstrip("/")
    note = _get(f"{log}/v1/audit/log/checkpoint")
    try:
        name, _ = public_key_of(args.log_key)
        text = open_note(note, args.log_key)
        new = Checkpoint.from_text(text)
    except (BadNote, ValueError) as exc:
        raise Refused(f"the checkpoint is not signed by the log's key ({exc})") from exc
    if new.origin != name:
        raise Refused(f"the checkpoint's origin {new.origin!r} is not the log's ({name!r})")
    old = read_state(args.state)
    if old is not None:
        check_extends(log, old, new)
    cosignature = cosigner.cosign(text, int(time.time()))
    # The log's own signature and this witness's: not the other witnesses' lines it publishes.
    cosigned = signed_by(note, name) + cosignature.line.encode() + b"\n"
    write_state(args.state, text, cosigned)
    if args.submit:
        kept = submit(log, cosigned)
        if cosigner.name not in kept:
            raise CannotRun("the log did not keep the cosignature")
    return cosignature.line


def signed_by(note: bytes, name: str) -> bytes:
    """The note with only the signature lines of the key `name`."""
    text, _, block = note.rpartition(b"\n\n")
    lines = [line for line in block.split(b"\n") if line.split(b" ")[1:2] == [name.encode()]]
    return text + b"\n\n" + b"".join(line + b"\n" for line in lines)


def run_witness(args: argparse.Namespace) -> int:
    if args.interval is not None and not args.interval > 0:
        print("dmp audit witness: --interval is a number of seconds above 0", file=sys.stderr)
        return 2
    try:
        cosigner = Cosigner(args.name, load_key(args.key_file))
    except (CannotRun, ValueError, OSError) as exc:
        print(f"dmp audit witness: {exc}", file=sys.stderr)
        return 2
    while True:
        try:
            line = one_pass(args, cosigner)
        except Refused as exc:
            print(f"dmp audit witness: REFUSED: {exc}", file=sys.stderr)
            return 1
        except CannotRun as exc:
            print(f"dmp audit witness: {exc}", file=sys.stderr)
            if not args.interval:
                return 2
        else:
            print(line, flush=True)
            if not args.interval:
                return 0
        time.sleep(args.interval)

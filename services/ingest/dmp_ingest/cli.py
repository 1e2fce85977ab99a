"""`dmp ingest FILE`: send a claims file to the platform, with a progress bar and a summary.

    DMP_INGEST_TOKEN=<an insurer client's access token> \\
        dmp ingest claims.csv [--gateway URL] [--format csv|jsonl] [--no-wait]

The file is streamed (never read whole), then the batch is followed until it is done. The token
is read from the environment, not the command line, so it shows in no process list. Exit
status: 0 done, 1 the batch failed or had refused rows, 2 it could not be sent.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

CHUNK = 1024 * 1024
MEDIA = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


def add_commands(areas: Any) -> None:
    ingest = areas.add_parser("ingest", help="send a claims file (CSV or JSON Lines)")
    ingest.add_argument("file", type=Path)
    ingest.add_argument(
        "--gateway", default=os.environ.get("DMP_GATEWAY_URL", "http://127.0.0.1:8000")
    )
    ingest.add_argument("--format", choices=sorted(MEDIA), help="default: from the extension")
    ingest.add_argument("--no-wait", action="store_true", help="return once the file is sent")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    token = os.environ.get("DMP_INGEST_TOKEN", "")
    if not token:
        print("dmp ingest: set DMP_INGEST_TOKEN to an insurer client's token", file=sys.stderr)
        return 2
    path: Path = args.file
    fmt = args.format or ("jsonl" if path.suffix in (".jsonl", ".ndjson") else "csv")
    try:
        size = path.stat().st_size
    except OSError as exc:
        print(f"dmp ingest: {exc}", file=sys.stderr)
        return 2
    headers = {"authorization": f"Bearer {token}", "content-type": MEDIA[fmt]}
    with (
        httpx.Client(base_url=args.gateway, headers=headers, timeout=120) as client,
        tqdm(total=size, unit="B", unit_scale=True, desc="sending", disable=args.quiet) as bar,
    ):
        try:
            answer = client.post("/v1/ingest/batches", content=_chunks(path, bar))
        except httpx.HTTPError as exc:
            print(f"dmp ingest: the gateway did not answer ({exc})", file=sys.stderr)
            return 2
        if answer.status_code != 202:
            print(f"dmp ingest: refused ({answer.status_code}): {answer.text}", file=sys.stderr)
            return 2
        batch_id = answer.json()["batch_id"]
        print(f"batch {batch_id} sent ({size} bytes)")
        if args.no_wait:
            return 0
        batch = _follow(client, batch_id, args.quiet)
    print(f"{batch['status']}: {batch['accepted']} claims accepted, {batch['rejected']} refused")
    for reject in batch["rejects"][:20]:
        print(f"  line {reject['line']}: {reject['reason']}")
    if batch["rejected"] > 20:
        print(f"  … and {batch['rejected'] - 20} more (GET /v1/ingest/batches/{batch_id})")
    return 0 if batch["status"] == "done" and not batch["rejected"] else 1


def _chunks(path: Path, bar: Any) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            bar.update(len(chunk))
            yield chunk


def _follow(client: httpx.Client, batch_id: str, quiet: bool) -> dict[str, Any]:
    with tqdm(unit=" rows", desc="checking", disable=quiet) as bar:
        while True:
            batch: dict[str, Any] = client.get(f"/v1/ingest/batches/{batch_id}").json()
            bar.n = batch["accepted"] + batch["rejected"]
            bar.refresh()
            if batch["status"] != "running":
                return batch
            time.sleep(0.5)

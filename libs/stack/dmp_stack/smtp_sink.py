"""A real SMTP server for the local stack and the tests: each message is kept as a .eml file."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

_counter = itertools.count()


class MaildirHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        name = f"{time.time_ns()}-{next(_counter)}.eml"
        tmp = self.directory / f".{name}.tmp"
        data: Any = envelope.original_content or envelope.content
        tmp.write_bytes(data if isinstance(data, bytes) else str(data).encode())
        tmp.rename(self.directory / name)  # readers never see a half-written message
        return "250 Message accepted for delivery"


async def serve(port: int, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    handler = MaildirHandler(directory)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="dmp-smtp-sink"), host="127.0.0.1", port=port
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.dir))


if __name__ == "__main__":
    main()

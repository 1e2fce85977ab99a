"""Starts the ingest service."""

from __future__ import annotations

import asyncio

from dmp.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from dmp_ingest.api import IngestServicer
from dmp_kit.config import Settings
from dmp_kit.runtime import ServiceRuntime


async def serve() -> None:
    runtime = ServiceRuntime("ingest", Settings())
    await runtime.serve(
        ingest_pb2_grpc.add_IngestServiceServicer_to_server,
        IngestServicer(),
        ingest_pb2.DESCRIPTOR.services_by_name["IngestService"],
        verifier=runtime.verifier_from_identity(),
    )


def main() -> None:
    asyncio.run(serve())


if __name__ == "__main__":
    main()

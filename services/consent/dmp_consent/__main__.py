"""Starts the consent service."""

from __future__ import annotations

import asyncio

from dmp.consent.v1 import consent_pb2, consent_pb2_grpc
from dmp_consent.api import ConsentServicer
from dmp_kit.config import Settings
from dmp_kit.runtime import ServiceRuntime


async def serve() -> None:
    runtime = ServiceRuntime("consent", Settings())
    await runtime.serve(
        consent_pb2_grpc.add_ConsentServiceServicer_to_server,
        ConsentServicer(),
        consent_pb2.DESCRIPTOR.services_by_name["ConsentService"],
        verifier=runtime.verifier_from_identity(),
    )


def main() -> None:
    asyncio.run(serve())


if __name__ == "__main__":
    main()

"""Starts the dossier service."""

from __future__ import annotations

import asyncio

from dmp.dossier.v1 import dossier_pb2, dossier_pb2_grpc
from dmp_dossier.api import DossierServicer
from dmp_kit.config import Settings
from dmp_kit.runtime import ServiceRuntime


async def serve() -> None:
    runtime = ServiceRuntime("dossier", Settings())
    await runtime.serve(
        dossier_pb2_grpc.add_DossierServiceServicer_to_server,
        DossierServicer(),
        dossier_pb2.DESCRIPTOR.services_by_name["DossierService"],
        verifier=runtime.verifier_from_identity(),
    )


def main() -> None:
    asyncio.run(serve())


if __name__ == "__main__":
    main()

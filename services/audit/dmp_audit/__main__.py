"""Starts the audit service."""

from __future__ import annotations

import asyncio

from dmp.audit.v1 import audit_pb2, audit_pb2_grpc
from dmp_audit.api import AuditServicer
from dmp_kit.config import Settings
from dmp_kit.runtime import ServiceRuntime


async def serve() -> None:
    runtime = ServiceRuntime("audit", Settings())
    await runtime.serve(
        audit_pb2_grpc.add_AuditServiceServicer_to_server,
        AuditServicer(),
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
        verifier=runtime.verifier_from_identity(),
    )


def main() -> None:
    asyncio.run(serve())


if __name__ == "__main__":
    main()

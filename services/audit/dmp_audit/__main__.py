"""Starts the audit service."""

from __future__ import annotations

import asyncio

from dmp.audit.v1 import audit_pb2, audit_pb2_grpc
from dmp.identity.v1 import identity_pb2_grpc
from dmp_audit.api import PUBLIC_METHODS, AuditServicer
from dmp_audit.config import AuditSettings
from dmp_audit.consumer import (
    SEQUENCER,
    STREAM,
    run_attending_mirror,
    run_dossier_mirror,
    run_representation_mirror,
    run_sequencer,
)
from dmp_audit.entry import TreeHeadSigner
from dmp_audit.keys import LogKey, keyring
from dmp_audit.log import AuditLog
from dmp_audit.metrics import observe
from dmp_audit.store import AuditStore
from dmp_kit.crypto import derive_key
from dmp_kit.lease import Lease
from dmp_kit.runtime import ServiceRuntime, run_service

SIGNING_PURPOSE = "dmp/audit/tree-head-signing/v1"


def signer(settings: AuditSettings) -> TreeHeadSigner:
    """The tree-head key derives from audit's own key: nobody holding only the database can
    sign a head, so nobody holding only the database can rewrite the log unnoticed."""
    return TreeHeadSigner(derive_key(settings.audit_key_bytes, SIGNING_PURPOSE))


def log_keys(settings: AuditSettings, current: TreeHeadSigner) -> dict[str, LogKey]:
    """The current key and the retired ones, all from configuration (never the database)."""
    return keyring(
        current.public_key,
        settings.audit_key_not_before,
        settings.audit_retired_keys,
        settings.origin,
    )


async def serve() -> None:
    settings = AuditSettings()
    runtime = ServiceRuntime("audit", settings)
    store = AuditStore(runtime.db)
    own = signer(settings)
    audit = AuditLog(store, own, runtime.clock, settings, keys=log_keys(settings, own))

    async def stream_end() -> int:
        return int((await runtime.bus.js.stream_info(STREAM)).state.last_seq)

    servicer = AuditServicer(
        audit,
        store,
        identity_pb2_grpc.IdentityServiceStub(runtime.channel(settings.identity_addr)),
        settings.grpc_deadline_seconds,
        stream_end,
    )

    lease = Lease(store.lease, SEQUENCER, settings.sequencer_lease_seconds)
    audit.may_append = lambda: lease.held
    observe(audit, lease)

    async def append(stop: asyncio.Event) -> None:
        await run_sequencer(runtime.bus, audit, lease, stop)

    async def attending(stop: asyncio.Event) -> None:
        await run_attending_mirror(runtime.bus, store, stop)

    async def dossiers(stop: asyncio.Event) -> None:
        await run_dossier_mirror(runtime.bus, store, stop)

    async def representations(stop: asyncio.Event) -> None:
        await run_representation_mirror(runtime.bus, store, stop)

    async def tile_files(stop: asyncio.Event) -> None:
        await audit.fill_tile_files(stop)

    await runtime.serve(
        audit_pb2_grpc.add_AuditServiceServicer_to_server,
        servicer,
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
        verifier=runtime.verifier_from_identity(),
        public_methods=PUBLIC_METHODS,
        stores=[store],
        background=[append, attending, dossiers, representations, tile_files],
        on_ready=audit.follow,
    )


def main() -> None:
    run_service(serve())


if __name__ == "__main__":
    main()

"""Starts the notify service."""

from __future__ import annotations

from dmp.identity.v1 import identity_pb2_grpc
from dmp.notify.v1 import notify_pb2, notify_pb2_grpc
from dmp_kit.runtime import ServiceRuntime, run_service
from dmp_kit.service_auth import ServiceTokens, identity_exchange
from dmp_notify.api import NotifyServicer
from dmp_notify.channels import EmailSender, sms_provider
from dmp_notify.config import NotifySettings
from dmp_notify.deliver import Notifier, consumers
from dmp_notify.retention import DeliveryRetention
from dmp_notify.store import NotifyStore

# The development outbox is open in dev mode only; the method itself refuses otherwise.
PUBLIC_METHODS = frozenset({"/dmp.notify.v1.NotifyService/ListDevOutbox"})


async def serve() -> None:
    settings = NotifySettings()
    runtime = ServiceRuntime("notify", settings)
    store = NotifyStore(runtime.db)
    email, sms = EmailSender(settings), sms_provider(settings.sms_provider)
    servicer = NotifyServicer(settings, store, runtime.clock, email, sms)
    identity = identity_pb2_grpc.IdentityServiceStub(runtime.channel(settings.identity_addr))

    exchange = identity_exchange(identity, settings.grpc_deadline_seconds)

    tokens = ServiceTokens(
        "notify",
        settings.key_bytes("service_account_key"),
        settings.jwt_issuer,
        exchange,
        runtime.clock,
    )
    notifier = Notifier(settings, store, runtime.clock, email, sms, identity, tokens)
    retention = DeliveryRetention(
        store,
        runtime.clock,
        days=settings.delivery_retention_days,
        interval=settings.retention_interval_seconds,
    )

    await runtime.serve(
        notify_pb2_grpc.add_NotifyServiceServicer_to_server,
        servicer,
        notify_pb2.DESCRIPTOR.services_by_name["NotifyService"],
        verifier=runtime.verifier_from_identity(),
        public_methods=PUBLIC_METHODS,
        stores=[store],
        background=[*consumers(runtime.bus, notifier), retention.run],
    )


def main() -> None:
    run_service(serve())


if __name__ == "__main__":
    main()

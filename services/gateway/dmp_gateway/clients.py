"""The gateway's gRPC clients; every call carries the caller's token and a deadline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import grpc
from fastapi import Request
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dmp.agenda.v1 import agenda_pb2_grpc
from dmp.audit.v1 import audit_pb2_grpc
from dmp.consent.v1 import consent_pb2_grpc
from dmp.dossier.v1 import dossier_pb2_grpc
from dmp.identity.v1 import identity_pb2_grpc
from dmp.ingest.v1 import ingest_pb2_grpc
from dmp.messaging.v1 import messaging_pb2_grpc
from dmp.notify.v1 import notify_pb2_grpc
from dmp_gateway.config import GatewaySettings
from dmp_kit.errors import InvalidArgument
from dmp_kit.rpc.client import call_options, open_channel
from dmp_kit.rpc.status import error_from_rpc

T = TypeVar("T")
SERVICES = ("identity", "dossier", "consent", "audit", "notify", "ingest", "messaging", "agenda")


def iso(ts: Timestamp) -> str:
    return ts.ToDatetime().isoformat(timespec="milliseconds") + "Z"


def stamp(target: Timestamp, moment: datetime, field: str) -> None:
    """A request's date into a protobuf Timestamp, or a 422 naming it: a date at the edge of
    the calendar with an offset that moves it off (year 1 at +23:59) has no UTC time."""
    try:
        target.FromDatetime(moment)
    except (OverflowError, ValueError) as exc:
        raise InvalidArgument("this date is out of range", field=field) from exc


def downstream(request: Request) -> Downstream:
    ds: Downstream = request.app.state.downstream
    return ds


class Downstream:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.channels = {name: open_channel(getattr(settings, f"{name}_addr")) for name in SERVICES}
        self.identity = identity_pb2_grpc.IdentityServiceStub(self.channels["identity"])
        self.notify = notify_pb2_grpc.NotifyServiceStub(self.channels["notify"])
        self.dossier = dossier_pb2_grpc.DossierServiceStub(self.channels["dossier"])
        self.consent = consent_pb2_grpc.ConsentServiceStub(self.channels["consent"])
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channels["audit"])
        self.ingest = ingest_pb2_grpc.IngestServiceStub(self.channels["ingest"])
        self.messaging = messaging_pb2_grpc.MessagingServiceStub(self.channels["messaging"])
        self.agenda = agenda_pb2_grpc.AgendaServiceStub(self.channels["agenda"])

    async def call(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        token: str = "",
        fields: Mapping[str, str] | None = None,
    ) -> T:
        """Calls a service; its error comes back as the DmpError it raised. `fields`: the
        service's names of the request's fields → the route's, for the error's `field`."""
        try:
            return await method(request, **call_options(self.settings.grpc_deadline_seconds, token))
        except grpc.aio.AioRpcError as exc:
            err = error_from_rpc(exc)
            if fields and err.field in fields:
                err.field = fields[err.field]
            raise err from exc

    async def health(self) -> dict[str, bool]:
        results: dict[str, bool] = {}
        for name, channel in self.channels.items():
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                resp = await stub.Check(
                    health_pb2.HealthCheckRequest(service=""),
                    timeout=self.settings.readiness_timeout_seconds,
                )
                results[name] = resp.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                results[name] = False
        return results

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()

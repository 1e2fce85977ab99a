"""Asking dossier for a dossier's status, as consent's own service account."""

from __future__ import annotations

import grpc

from dmp.dossier.v1 import dossier_pb2, dossier_pb2_grpc
from dmp_consent.domain import DossierStatus
from dmp_consent.store import DossierLookup
from dmp_kit.rpc.client import call_options
from dmp_kit.rpc.status import error_from_rpc
from dmp_kit.service_auth import ServiceTokens

STATUSES = {
    dossier_pb2.DOSSIER_STATUS_OPEN: DossierStatus.OPEN,
    dossier_pb2.DOSSIER_STATUS_CLOSED: DossierStatus.CLOSED,
    dossier_pb2.DOSSIER_STATUS_DELETION_REQUESTED: DossierStatus.DELETION_REQUESTED,
}


def dossier_lookup(
    dossier: dossier_pb2_grpc.DossierServiceStub, tokens: ServiceTokens, deadline: float
) -> DossierLookup:
    async def lookup(ins: str) -> tuple[DossierStatus, list[str]] | None:
        async def ask(token: str) -> dossier_pb2.GetDossierStateResponse:
            answer: dossier_pb2.GetDossierStateResponse = await dossier.GetDossierState(
                dossier_pb2.GetDossierStateRequest(ins=ins), **call_options(deadline, token=token)
            )
            return answer

        try:
            found = await tokens.call(ask)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise error_from_rpc(exc) from exc
        status = STATUSES.get(found.status)
        if status is None:
            return None
        return status, list(found.legal_representatives)

    return lookup

"""Asking dossier for a dossier's status, as consent's own service account."""

from __future__ import annotations

import grpc

from dmp.dossier.v1 import dossier_pb2, dossier_pb2_grpc
from dmp_consent.domain import DossierStatus
from dmp_consent.store import DossierLookup
from dmp_kit.errors import DmpError
from dmp_kit.logging import get_logger
from dmp_kit.rpc.client import call_options
from dmp_kit.rpc.status import error_from_rpc
from dmp_kit.service_auth import ServiceTokens

STATUSES = {
    dossier_pb2.DOSSIER_STATUS_OPEN: DossierStatus.OPEN,
    dossier_pb2.DOSSIER_STATUS_CLOSED: DossierStatus.CLOSED,
    dossier_pb2.DOSSIER_STATUS_DELETION_REQUESTED: DossierStatus.DELETION_REQUESTED,
}
log = get_logger(__name__)


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


class DossierChangeMarks:
    """`ChangeMarks` kept in the dossier's record, as consent's own service account."""

    def __init__(
        self,
        dossier: dossier_pb2_grpc.DossierServiceStub,
        tokens: ServiceTokens,
        deadline: float,
    ) -> None:
        self._dossier = dossier
        self._tokens = tokens
        self._deadline = deadline

    async def _mark(self, ins: str, change_id: str, done: bool, own_deadline: bool) -> None:
        async def ask(token: str) -> None:
            options = call_options(self._deadline, token=token)
            if own_deadline:  # not what is left of the request's, which a slow write used up
                options["timeout"] = self._deadline
            await self._dossier.MarkConsentChange(
                dossier_pb2.MarkConsentChangeRequest(ins=ins, change_id=change_id, done=done),
                **options,
            )

        await self._tokens.call(ask)

    async def begin(self, ins: str, change_id: str) -> None:
        """Any failure refuses the change, an old dossier's UNIMPLEMENTED included: deny by
        default."""
        try:
            await self._mark(ins, change_id, done=False, own_deadline=False)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc

    async def end(self, ins: str, change_id: str) -> None:
        for attempt in (1, 2):
            try:
                await self._mark(ins, change_id, done=True, own_deadline=True)
                return
            except (grpc.aio.AioRpcError, DmpError) as exc:
                # The change is written; its mark lapses by itself (dossier's
                # CONSENT_CHANGE_SECONDS), and until then dossier gives no epoch.
                log.warning("consent_change_end_unmarked", attempt=attempt, error=str(exc))

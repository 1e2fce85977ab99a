"""Asking identity for a patient's name, as consent's own service account: a trusted person
must be another person with an active patient account."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from dmp.identity.v1 import identity_pb2, identity_pb2_grpc
from dmp_kit.rpc.client import call_options
from dmp_kit.rpc.status import error_from_rpc
from dmp_kit.service_auth import ServiceTokens

PatientLookup = Callable[[str], Awaitable[tuple[str, str] | None]]
"""A patient's (given name, family name) if they have an active account, else None."""


def patient_lookup(
    identity: identity_pb2_grpc.IdentityServiceStub, tokens: ServiceTokens, deadline: float
) -> PatientLookup:
    async def lookup(ins: str) -> tuple[str, str] | None:
        async def ask(token: str) -> identity_pb2.LookupPatientResponse:
            answer: identity_pb2.LookupPatientResponse = await identity.LookupPatient(
                identity_pb2.LookupPatientRequest(ins=ins), **call_options(deadline, token=token)
            )
            return answer

        try:
            found = await tokens.call(ask)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise error_from_rpc(exc) from exc
        if found.patient.status not in ("", "active"):
            return None
        return found.patient.given_name, found.patient.family_name

    return lookup

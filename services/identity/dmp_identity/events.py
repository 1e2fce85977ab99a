"""Identity's events: identity.login, for every attempt, success or failure."""

from __future__ import annotations

from dmp.events.v1 import envelope_pb2, identity_pb2
from dmp_kit.clock import Clock
from dmp_kit.events import new_event

LOGIN = "identity.login"


def login_event(
    *,
    clock: Clock,
    kind: str,
    outcome: str,
    success: bool,
    account: dict[str, object] | None,
    client_ip: str = "",
) -> envelope_pb2.Envelope:
    account_id = str(account["_id"]) if account else ""
    ins = str(account.get("ins", "")) if account else ""
    actor = (
        envelope_pb2.Actor(
            kind=kind, id=str(account.get("ins") or account.get("rpps") or account_id)
        )
        if account
        else None
    )
    return new_event(
        LOGIN,
        identity_pb2.LoginAttempted(
            account_kind=kind,
            account_id=account_id,
            outcome=outcome,
            success=success,
            client_ip=client_ip,
        ),
        source="identity",
        clock=clock,
        actor=actor,
        patient_ins=ins if kind == "patient" else "",
    )

"""Identity's events: identity.login for every attempt, success or failure, and the trace of
every login to a patient's account (audit.identity); the end of a minor's legal representation
at their majority (identity.representation.*), traced too."""

from __future__ import annotations

from datetime import date

from dmp.events.v1 import envelope_pb2, identity_pb2
from dmp_kit.auth import Principal
from dmp_kit.clock import Clock
from dmp_kit.events import actor_of, audit_event, new_event

LOGIN = "identity.login"
# Right first factors: the password, or an account's provisional code (its activation goes on
# with the codes sent to the person's addresses). Traced when they fail, not when they pass.
HALF_STEPS = frozenset({"password_ok", "provisional_ok"})


def login_events(
    *,
    clock: Clock,
    kind: str,
    outcome: str,
    success: bool,
    account: dict[str, object] | None,
    client_ip: str = "",
) -> list[envelope_pb2.Envelope]:
    """The login event (`identity.login`) and, for a patient's account, its trace in the
    dossier's audit log (rule 10: every login as the patient, failed ones included)."""
    account_id = str(account["_id"]) if account else ""
    ins = str(account.get("ins", "")) if account else ""
    actor = (
        envelope_pb2.Actor(
            kind=kind, id=str(account.get("ins") or account.get("rpps") or account_id)
        )
        if account
        else None
    )
    login = new_event(
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
    if kind != "patient" or not ins or outcome in HALF_STEPS:
        return [login]  # half a login (or an activation): a one-time code completes it
    trace = audit_event(
        source="identity",
        clock=clock,
        caller=Principal(kind="patient", subject=account_id, ins=ins),
        patient_ins=ins,
        action="login",
        outcome="success" if success else ("denied" if outcome == "locked" else "failure"),
        query=f"login:{outcome}",
    )
    return [login, trace]


REPRESENTATION_ENDING = "identity.representation.ending"
REPRESENTATION_ENDED = "identity.representation.ended"
SCHEDULER = Principal(kind="service", subject="identity-scheduler", roles=frozenset({"scheduler"}))


def representation_events(
    clock: Clock, step: str, ins: str, representatives: list[str], majority: date
) -> list[envelope_pb2.Envelope]:
    """A step of a minor's legal representation (domain.representation_step): the notice that
    it will end (`notice`), or its end (`end`) with its trace in the now-adult patient's access
    log. The representatives by INS and the date: never a name."""
    fields = {"legal_representatives": representatives, "majority_date": majority.isoformat()}
    ending = step == "notice"
    event = new_event(
        REPRESENTATION_ENDING if ending else REPRESENTATION_ENDED,
        (identity_pb2.RepresentationEnding if ending else identity_pb2.RepresentationEnded)(
            **fields
        ),
        source="identity",
        clock=clock,
        actor=actor_of(SCHEDULER),
        patient_ins=ins,
    )
    if ending:
        return [event]
    trace = audit_event(
        source="identity",
        clock=clock,
        caller=SCHEDULER,
        patient_ins=ins,
        action="update",
        outcome="success",
        query="representation:ended",
    )
    return [event, trace]

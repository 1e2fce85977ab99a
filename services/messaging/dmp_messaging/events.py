"""Messaging's events: message.sent (no content, ever) and its audit records."""

from __future__ import annotations

from dmp.events.v1 import envelope_pb2, messaging_pb2
from dmp_kit.auth import Principal
from dmp_kit.clock import Clock
from dmp_kit.events import actor_of, audit_event, new_event
from dmp_messaging.domain import Party

SOURCE = "messaging"


class MessagingEvents:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def sent(
        self, who: Principal, ins: str, conversation_id: str, message_id: str, to: Party
    ) -> envelope_pb2.Envelope:
        return new_event(
            "message.sent",
            messaging_pb2.MessageSent(
                conversation_id=conversation_id,
                message_id=message_id,
                recipient_kind=to.kind,
                recipient_id=to.id,
            ),
            source=SOURCE,
            clock=self.clock,
            actor=actor_of(who),
            patient_ins=ins,
        )

    def audit(
        self,
        who: Principal,
        ins: str,
        action: str,
        conversation_id: str,
        *,
        to: Party | None = None,
        outcome: str = "success",
        reason: str = "",
        query: str = "",
    ) -> envelope_pb2.Envelope:
        """Who wrote to whom, when, and that something was read: the trail's words, never the
        message's. `query` "list": a page of conversations that showed their subjects."""
        query = f"conversations={query}" if query else f"conversation={conversation_id}"
        if to is not None:
            query += f" to={to.key}"
        return audit_event(
            source=SOURCE,
            clock=self.clock,
            caller=who,
            patient_ins=ins,
            action=action,
            outcome=outcome,
            query=query,
            reason=reason,
        )

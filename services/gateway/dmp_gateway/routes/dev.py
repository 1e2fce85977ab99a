"""Development mode only (DMP_ENV=dev): the messages the stack sent, to read one-time codes."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from dmp.notify.v1 import notify_pb2 as pb
from dmp_gateway.clients import Downstream, iso

router = APIRouter(tags=["development"])


class SentMessage(BaseModel):
    channel: str
    to: str
    subject: str
    body: str
    sent_at: str


class Outbox(BaseModel):
    items: list[SentMessage]


@router.get("/dev/outbox", response_model=Outbox)
async def outbox(request: Request, to: str = Query(min_length=3, max_length=254)) -> Outbox:
    ds: Downstream = request.app.state.downstream
    resp = await ds.call(ds.notify.ListDevOutbox, pb.ListDevOutboxRequest(destination=to))
    return Outbox(
        items=[
            SentMessage(
                channel="email" if m.channel == pb.CHANNEL_EMAIL else "sms",
                to=m.destination,
                subject=m.subject,
                body=m.body,
                sent_at=iso(m.sent_at),
            )
            for m in resp.messages
        ]
    )

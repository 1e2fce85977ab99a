"""The caller's notifications (rule 11): the in-app inbox and the channels chosen per kind."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from dmp.notify.v1 import notify_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso
from dmp_gateway.security import Caller

router = APIRouter(tags=["notifications"])

Kind = Literal[
    "document_added",
    "access_first",
    "emergency_access",
    "reminder",
    "login",
    "message_received",
    "representation_ending",
    "representation_ended",
    "trusted_invitation",
    "prevention_reminder",
]
ChannelName = Literal["email", "sms"]
CHANNELS = {"email": pb.CHANNEL_EMAIL, "sms": pb.CHANNEL_SMS}
NAMES = {v: k for k, v in CHANNELS.items()}


class Notification(BaseModel):
    id: str
    kind: str
    title: str
    body: str
    created_at: str
    read: bool


class Inbox(BaseModel):
    items: list[Notification]
    next: str | None = None


class ReadIn(BaseModel):
    read: bool


class Preferences(BaseModel):
    preferences: dict[Kind, list[ChannelName]] = Field(
        description="for each kind, the channels besides the inbox (which gets everything); "
        "kinds left out keep their default (e-mail). Login codes are always sent."
    )


def _out(n: pb.Notification) -> Notification:
    return Notification(
        id=n.id,
        kind=n.event_type,
        title=n.title,
        body=n.body,
        created_at=iso(n.created_at),
        read=n.read,
    )


def _prefs(items: list[pb.EventPreference]) -> Preferences:
    return Preferences(
        preferences={p.event_type: [NAMES[c] for c in p.channels] for p in items}  # type: ignore[misc]
    )


@router.get(
    "/v1/me/notifications",
    response_model=Inbox,
    response_model_exclude_none=True,
    responses=problems.responses(403),
)
async def inbox(
    request: Request,
    who: Caller,
    unread_only: bool = False,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Inbox:
    ds = downstream(request)
    resp = await ds.call(
        ds.notify.ListNotifications,
        pb.ListNotificationsRequest(
            unread_only=unread_only, cursor=cursor or "", page_size=page_size
        ),
        token=who.token,
    )
    return Inbox(items=[_out(n) for n in resp.items], next=resp.next or None)


@router.patch(
    "/v1/me/notifications/{notification_id}",
    response_model=Notification,
    responses=problems.responses(403, 404),
)
async def mark(notification_id: str, body: ReadIn, request: Request, who: Caller) -> Notification:
    ds = downstream(request)
    resp = await ds.call(
        ds.notify.MarkNotificationRead,
        pb.MarkNotificationReadRequest(id=notification_id, read=body.read),
        token=who.token,
    )
    return _out(resp.notification)


@router.get(
    "/v1/me/notification-preferences", response_model=Preferences, responses=problems.responses(403)
)
async def get_preferences(request: Request, who: Caller) -> Preferences:
    ds = downstream(request)
    resp = await ds.call(ds.notify.GetPreferences, pb.GetPreferencesRequest(), token=who.token)
    return _prefs(list(resp.preferences))


@router.put(
    "/v1/me/notification-preferences", response_model=Preferences, responses=problems.responses(403)
)
async def put_preferences(body: Preferences, request: Request, who: Caller) -> Preferences:
    ds = downstream(request)
    resp = await ds.call(
        ds.notify.PutPreferences,
        pb.PutPreferencesRequest(
            preferences=[
                pb.EventPreference(event_type=kind, channels=[CHANNELS[c] for c in channels])
                for kind, channels in body.preferences.items()
            ]
        ),
        token=who.token,
    )
    return _prefs(list(resp.preferences))


class DeadLetter(BaseModel):
    event_id: str
    event_type: str
    channel: str
    attempts: int
    last_error: str
    failed_at: str


class DeadLetters(BaseModel):
    items: list[DeadLetter]
    next: str | None = None


@router.get(
    "/v1/admin/notifications/dead-letters",
    response_model=DeadLetters,
    response_model_exclude_none=True,
    summary="Notifications given up after their last attempt (administrators)",
    responses=problems.responses(403),
)
async def dead_letters(
    request: Request,
    who: Caller,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> DeadLetters:
    ds = downstream(request)
    resp = await ds.call(
        ds.notify.ListDeadLetters,
        pb.ListDeadLettersRequest(cursor=cursor or "", page_size=page_size),
        token=who.token,
    )
    return DeadLetters(
        items=[
            DeadLetter(
                event_id=d.event_id,
                event_type=d.event_type,
                channel=NAMES.get(d.channel, ""),
                attempts=d.attempts,
                last_error=d.last_error,
                failed_at=iso(d.failed_at),
            )
            for d in resp.items
        ],
        next=resp.next or None,
    )

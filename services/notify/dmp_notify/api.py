"""Notify's gRPC servicer."""

from __future__ import annotations

import re
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from dmp.notify.v1 import notify_pb2 as pb
from dmp.notify.v1 import notify_pb2_grpc
from dmp_kit.auth import caller
from dmp_kit.clock import Clock
from dmp_kit.config import Env
from dmp_kit.errors import InvalidArgument, NotFound, PermissionDenied
from dmp_notify.channels import EmailSender, SmsProvider
from dmp_notify.config import NotifySettings
from dmp_notify.domain import (
    ACCOUNT_NOTICES,
    Message,
    activation_message,
    contact_code_message,
    otp_message,
    sms_text,
    validate_preferences,
)
from dmp_notify.store import NotifyStore

# A provisional activation code: 10 of the letters and digits that are not mistaken for others.
_ACTIVATION_CODE = re.compile(r"[A-HJ-NP-Z2-9]{10}")
_NOTICES = {
    pb.ACCOUNT_NOTICE_EMAIL_CHANGED: "email_changed",
    pb.ACCOUNT_NOTICE_PHONE_CHANGED: "phone_changed",
}


class NotifyServicer(notify_pb2_grpc.NotifyServiceServicer):
    def __init__(
        self,
        settings: NotifySettings,
        store: NotifyStore,
        clock: Clock,
        email: EmailSender,
        sms: SmsProvider,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.email = email
        self.sms = sms

    async def SendOtp(
        self, request: pb.SendOtpRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendOtpResponse:
        caller().require_role("otp_sender")
        activation = request.purpose == pb.CODE_PURPOSE_ACTIVATION
        if not (
            _ACTIVATION_CODE.fullmatch(request.code)
            if activation
            else (len(request.code) == 6 and request.code.isdigit())
        ):
            raise InvalidArgument(
                "code must be 6 digits (10 letters and digits to activate)", field="code"
            )
        if not request.destination:
            raise InvalidArgument("destination is required", field="destination")
        if not request.challenge_id:
            raise InvalidArgument("challenge_id is required", field="challenge_id")
        valid = request.valid_minutes or 5
        if activation:
            message = activation_message(request.code, valid)
        elif request.purpose == pb.CODE_PURPOSE_CONTACT:
            message = contact_code_message(request.code, valid)
        else:
            message = otp_message(request.code, valid)
        key = f"otp:{request.challenge_id}"
        return pb.SendOtpResponse(delivery_id=await self._deliver(key, request, message))

    async def SendAccountNotice(
        self, request: pb.SendAccountNoticeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendAccountNoticeResponse:
        caller().require_role("otp_sender")
        notice = _NOTICES.get(request.notice)
        if notice is None:
            raise InvalidArgument("notice is required", field="notice")
        if not request.destination:
            raise InvalidArgument("destination is required", field="destination")
        if not request.change_id:
            raise InvalidArgument("change_id is required", field="change_id")
        key = f"notice:{request.change_id}:{request.channel}"
        return pb.SendAccountNoticeResponse(
            delivery_id=await self._deliver(key, request, ACCOUNT_NOTICES[notice])
        )

    async def _deliver(
        self,
        key: str,
        request: pb.SendOtpRequest | pb.SendAccountNoticeRequest,
        message: Message,
    ) -> str:
        """Sends `message` once per `key` (a retry of the same sends nothing more)."""
        if request.channel not in (pb.CHANNEL_EMAIL, pb.CHANNEL_SMS):
            raise InvalidArgument("channel must be e-mail or SMS", field="channel")
        now = self.clock.now()
        channel = "email" if request.channel == pb.CHANNEL_EMAIL else "sms"
        if not await self.store.claim_delivery(key, channel, now):
            return key
        try:
            if channel == "email":
                await self.email.send(request.destination, message)
            else:
                await self.sms.send(request.destination, sms_text(message))
        except Exception:
            # Not sent: let a retry of the same challenge try again.
            await self.store.release_delivery(key)
            raise
        if self.settings.env is Env.DEV:
            await self.store.record_dev_message(request.destination, channel, message, now)
        return key

    async def ListDevOutbox(
        self, request: pb.ListDevOutboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDevOutboxResponse:
        if self.settings.env is not Env.DEV:
            raise NotFound("the development outbox exists only in dev mode")
        if not request.destination:
            raise InvalidArgument("destination is required", field="destination")
        messages = []
        for doc in await self.store.dev_messages(request.destination):
            sent = Timestamp()
            sent.FromDatetime(doc["sent_at"])
            messages.append(
                pb.OutboxMessage(
                    channel=pb.CHANNEL_EMAIL if doc["channel"] == "email" else pb.CHANNEL_SMS,
                    destination=doc["destination"],
                    subject=doc["subject"],
                    body=doc["body"],
                    sent_at=sent,
                )
            )
        return pb.ListDevOutboxResponse(messages=messages)

    # the inbox and preferences (rule 11) ---------------------------------------------

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListNotificationsResponse:
        recipient = _recipient()
        size = _page_size(request.page_size)
        if request.cursor and (len(request.cursor) > 200 or ":" not in request.cursor):
            raise InvalidArgument("the cursor is not one this inbox gave", field="cursor")
        docs = await self.store.inbox(
            recipient, request.unread_only, request.cursor or None, size + 1
        )
        items = [_notification(d) for d in docs[:size]]
        more = len(docs) > size
        return pb.ListNotificationsResponse(items=items, next=docs[size - 1]["_id"] if more else "")

    async def MarkNotificationRead(
        self, request: pb.MarkNotificationReadRequest, context: grpc.aio.ServicerContext
    ) -> pb.MarkNotificationReadResponse:
        doc = await self.store.mark_read(_recipient(), request.id, request.read)
        if doc is None:
            raise NotFound("no such notification", field="id")
        return pb.MarkNotificationReadResponse(notification=_notification(doc))

    async def GetPreferences(
        self, request: pb.GetPreferencesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPreferencesResponse:
        chosen = await self.store.get_preferences(_recipient())
        return pb.GetPreferencesResponse(preferences=_preferences(validate_preferences(chosen)))

    async def PutPreferences(
        self, request: pb.PutPreferencesRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutPreferencesResponse:
        recipient = _recipient()
        given: dict[str, list[str]] = {}
        for pref in request.preferences:
            channels = [CHANNEL_NAMES.get(c, "") for c in pref.channels]
            if "" in channels:
                raise InvalidArgument("channels are email or sms", field="channels")
            given[pref.event_type] = sorted(set(channels))
        try:
            merged = validate_preferences(given)
        except ValueError as exc:
            raise InvalidArgument(str(exc), field="preferences") from exc
        await self.store.put_preferences(recipient, {k: sorted(v) for k, v in merged.items()})
        return pb.PutPreferencesResponse(preferences=_preferences(merged))

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeadLettersResponse:
        caller().require_role("admin")
        size = _page_size(request.page_size)
        docs = await self.store.list_dead_letters(request.cursor or None, size + 1)
        items = []
        for doc in docs[:size]:
            failed = Timestamp()
            failed.FromDatetime(doc["failed_at"])
            items.append(
                pb.DeadLetter(
                    event_id=doc["_id"],
                    event_type=doc["event_type"],
                    channel=CHANNEL_VALUES.get(doc["channel"], pb.CHANNEL_UNSPECIFIED),
                    attempts=doc["attempts"],
                    last_error=doc["last_error"],
                    failed_at=failed,
                )
            )
        more = len(docs) > size
        return pb.ListDeadLettersResponse(items=items, next=docs[size - 1]["_id"] if more else "")


DEFAULT_PAGE = 20
MAX_PAGE = 100
CHANNEL_NAMES = {pb.CHANNEL_EMAIL: "email", pb.CHANNEL_SMS: "sms"}
CHANNEL_VALUES = {name: value for value, name in CHANNEL_NAMES.items()}


def _page_size(asked: int) -> int:
    size = asked or DEFAULT_PAGE
    if not 0 < size <= MAX_PAGE:
        raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE}", field="page_size")
    return size


def _recipient() -> str:
    """Whose inbox: patients and professionals have one; nobody else."""
    who = caller()
    if who.kind == "patient" and who.ins:
        return f"patient:{who.ins}"
    if who.kind == "professional" and who.rpps:
        return f"professional:{who.rpps}"
    raise PermissionDenied("notifications are for patients and professionals")


def _notification(doc: dict[str, Any]) -> pb.Notification:
    created = Timestamp()
    created.FromDatetime(doc["created_at"])
    return pb.Notification(
        id=doc["_id"],
        event_type=doc["kind"],
        title=doc["title"],
        body=doc["body"],
        created_at=created,
        read=doc["read"],
    )


def _preferences(prefs: dict[str, frozenset[str]]) -> list[pb.EventPreference]:
    return [
        pb.EventPreference(event_type=kind, channels=[CHANNEL_VALUES[c] for c in sorted(chosen)])
        for kind, chosen in sorted(prefs.items())
    ]

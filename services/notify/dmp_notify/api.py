"""Notify's gRPC servicer."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from dmp.notify.v1 import notify_pb2 as pb
from dmp.notify.v1 import notify_pb2_grpc
from dmp_kit.auth import caller
from dmp_kit.clock import Clock
from dmp_kit.config import Env
from dmp_kit.errors import InvalidArgument, NotFound
from dmp_notify.channels import EmailSender, SmsProvider
from dmp_notify.config import NotifySettings
from dmp_notify.domain import otp_message, sms_text
from dmp_notify.store import NotifyStore


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
        if not (len(request.code) == 6 and request.code.isdigit()):
            raise InvalidArgument("code must be 6 digits", field="code")
        if not request.destination:
            raise InvalidArgument("destination is required", field="destination")
        if not request.challenge_id:
            raise InvalidArgument("challenge_id is required", field="challenge_id")
        if request.channel not in (pb.CHANNEL_EMAIL, pb.CHANNEL_SMS):
            raise InvalidArgument("channel must be e-mail or SMS", field="channel")
        key = f"otp:{request.challenge_id}"
        now = self.clock.now()
        channel = "email" if request.channel == pb.CHANNEL_EMAIL else "sms"
        if not await self.store.claim_delivery(key, channel, now):
            return pb.SendOtpResponse(delivery_id=key)
        message = otp_message(request.code, request.valid_minutes or 5)
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
            await self.store.record_dev_message(
                {
                    "destination": request.destination,
                    "channel": channel,
                    "subject": message.subject,
                    "body": message.body if channel == "email" else sms_text(message),
                    "sent_at": now,
                }
            )
        return pb.SendOtpResponse(delivery_id=key)

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

"""notify's gRPC contract, the service alone (no mail relay: e-mail cannot leave; SMS go to
the development provider)."""

from __future__ import annotations

from typing import Any

from grpc import StatusCode as S

from dmp.notify.v1 import notify_pb2 as pb
from dmp.notify.v1 import notify_pb2_grpc
from dmp_stack.contract import (
    TESTS,
    Case,
)

# The four tests every service has (dmp_stack.contract), run on this module's tables.
globals().update(TESTS)

SERVICE = "notify"
DESCRIPTOR = pb.DESCRIPTOR.services_by_name["NotifyService"]
STUB = notify_pb2_grpc.NotifyServiceStub
PUBLIC = {"ListDevOutbox"}
PHONE = "+33600000000"

# Where the account codes and notices go: the outbox of PHONE holds one message only.
OTHER_PHONE = "+33600000001"


def code(**fields: Any) -> pb.SendOtpRequest:
    base: dict[str, Any] = {
        "channel": pb.CHANNEL_SMS,
        "destination": PHONE,
        "code": "123456",
        "challenge_id": "challenge-1",
    }
    return pb.SendOtpRequest(**{**base, **fields})


def defaults(answer: Any) -> None:
    chosen = {p.event_type: list(p.channels) for p in answer.preferences}
    assert chosen["emergency_access"] and set(chosen) >= {"document_added", "login"}


def sms_kept(answer: Any) -> None:
    (message,) = answer.messages
    assert message.channel == pb.CHANNEL_SMS and message.destination == PHONE
    assert "123456" in message.body


def empty(answer: Any) -> None:
    assert list(answer.items) == [] and answer.next == ""


Pref = pb.EventPreference
SMS_SENT = Case(
    "SendOtp",
    "a code by SMS",
    code(),
    "otp sender",
    S.OK,
    check=lambda a: a.delivery_id == "otp:challenge-1",
)
SENT_AGAIN = Case(
    "SendOtp",
    "the same challenge again: sent once",
    code(),
    "otp sender",
    S.OK,
    check=lambda a: a.delivery_id == "otp:challenge-1",
    given=(SMS_SENT,),
)
CASES = [
    SMS_SENT,
    SENT_AGAIN,
    Case(
        "SendOtp",
        "a code by e-mail, with no mail relay",
        code(channel=pb.CHANNEL_EMAIL, destination="x@example.org", challenge_id="challenge-2"),
        "otp sender",
        S.UNAVAILABLE,
    ),
    Case("SendOtp", "by a patient", code(), "patient", S.PERMISSION_DENIED),
    Case(
        "SendOtp",
        "a provisional activation code by SMS",
        code(
            code="ABCDEFGH23",
            destination=OTHER_PHONE,
            challenge_id="activation-1",
            purpose=pb.CODE_PURPOSE_ACTIVATION,
        ),
        "otp sender",
        S.OK,
    ),
    Case(
        "SendOtp",
        "an activation code that is 6 digits",
        code(
            destination=OTHER_PHONE, challenge_id="activation-2", purpose=pb.CODE_PURPOSE_ACTIVATION
        ),
        "otp sender",
        S.INVALID_ARGUMENT,
        field="code",
    ),
    Case(
        "SendAccountNotice",
        "a changed phone, told by SMS",
        pb.SendAccountNoticeRequest(
            channel=pb.CHANNEL_SMS,
            destination=OTHER_PHONE,
            notice=pb.ACCOUNT_NOTICE_PHONE_CHANGED,
            change_id="change-1",
        ),
        "otp sender",
        S.OK,
        check=lambda a: a.delivery_id.startswith("notice:change-1"),
    ),
    Case(
        "SendAccountNotice",
        "no notice named",
        pb.SendAccountNoticeRequest(channel=pb.CHANNEL_SMS, destination=OTHER_PHONE, change_id="c"),
        "otp sender",
        S.INVALID_ARGUMENT,
        field="notice",
    ),
    Case(
        "SendAccountNotice",
        "by a patient",
        pb.SendAccountNoticeRequest(
            channel=pb.CHANNEL_SMS,
            destination=OTHER_PHONE,
            notice=pb.ACCOUNT_NOTICE_EMAIL_CHANGED,
            change_id="change-2",
        ),
        "patient",
        S.PERMISSION_DENIED,
    ),
    Case(
        "SendOtp",
        "a code that is not 6 digits",
        code(code="12a"),
        "otp sender",
        S.INVALID_ARGUMENT,
        field="code",
    ),
    Case(
        "SendOtp",
        "nowhere to send",
        code(destination=""),
        "otp sender",
        S.INVALID_ARGUMENT,
        field="destination",
    ),
    Case(
        "SendOtp",
        "no challenge",
        code(challenge_id=""),
        "otp sender",
        S.INVALID_ARGUMENT,
        field="challenge_id",
    ),
    Case(
        "SendOtp",
        "no channel",
        code(channel=pb.CHANNEL_UNSPECIFIED),
        "otp sender",
        S.INVALID_ARGUMENT,
        field="channel",
    ),
    Case(
        "ListDevOutbox",
        "what was sent to a phone (dev mode)",
        pb.ListDevOutboxRequest(destination=PHONE),
        None,
        S.OK,
        check=sms_kept,  # one message: the same challenge twice is sent once
        given=(SMS_SENT, SENT_AGAIN),
    ),
    Case(
        "ListDevOutbox",
        "no destination",
        pb.ListDevOutboxRequest(),
        None,
        S.INVALID_ARGUMENT,
        field="destination",
    ),
    Case(
        "ListNotifications",
        "a patient's empty inbox",
        pb.ListNotificationsRequest(),
        "patient",
        S.OK,
        check=empty,
    ),
    Case(
        "ListNotifications",
        "an administrator has no inbox",
        pb.ListNotificationsRequest(),
        "admin",
        S.PERMISSION_DENIED,
    ),
    Case(
        "ListNotifications",
        "a cursor it never gave",
        pb.ListNotificationsRequest(cursor="nope"),
        "patient",
        S.INVALID_ARGUMENT,
        field="cursor",
    ),
    Case(
        "ListNotifications",
        "a page too large",
        pb.ListNotificationsRequest(page_size=101),
        "doctor",
        S.INVALID_ARGUMENT,
        field="page_size",
    ),
    Case(
        "MarkNotificationRead",
        "a notification that is not theirs",
        pb.MarkNotificationReadRequest(id="someone-else", read=True),
        "patient",
        S.NOT_FOUND,
        field="id",
    ),
    Case(
        "MarkNotificationRead",
        "a system",
        pb.MarkNotificationReadRequest(id="x"),
        "insurer",
        S.PERMISSION_DENIED,
    ),
    Case(
        "GetPreferences",
        "the defaults",
        pb.GetPreferencesRequest(),
        "patient",
        S.OK,
        check=defaults,
    ),
    Case("GetPreferences", "a system", pb.GetPreferencesRequest(), "insurer", S.PERMISSION_DENIED),
    Case(
        "PutPreferences",
        "SMS for new documents",
        pb.PutPreferencesRequest(
            preferences=[Pref(event_type="document_added", channels=[pb.CHANNEL_SMS])]
        ),
        "patient",
        S.OK,
        check=lambda a: any(
            p.event_type == "document_added" and list(p.channels) == [pb.CHANNEL_SMS]
            for p in a.preferences
        ),
    ),
    Case(
        "PutPreferences",
        "a channel that does not exist",
        pb.PutPreferencesRequest(
            preferences=[Pref(event_type="login", channels=[pb.CHANNEL_UNSPECIFIED])]
        ),
        "patient",
        S.INVALID_ARGUMENT,
        field="channels",
    ),
    Case(
        "PutPreferences",
        "a kind of notification that does not exist",
        pb.PutPreferencesRequest(preferences=[Pref(event_type="birthday")]),
        "patient",
        S.INVALID_ARGUMENT,
        field="preferences",
    ),
    Case("ListDeadLetters", "none yet", pb.ListDeadLettersRequest(), "admin", S.OK, check=empty),
    Case(
        "ListDeadLetters", "a patient", pb.ListDeadLettersRequest(), "patient", S.PERMISSION_DENIED
    ),
    Case(
        "ListDeadLetters",
        "a page too large",
        pb.ListDeadLettersRequest(page_size=1000),
        "admin",
        S.INVALID_ARGUMENT,
        field="page_size",
    ),
]
SLOW = Case(
    "GetPreferences", "the defaults", pb.GetPreferencesRequest(), "doctor", S.OK, check=defaults
)

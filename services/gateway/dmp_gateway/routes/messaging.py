"""Secure messaging: conversations between a patient and a professional or establishment.

A professional (or an establishment's mailbox) opens a conversation with a patient; the patient
replies while it is open and may open one with a pharmacy that dispensed to them within 12
months. Each call carries the caller's token to the messaging service, which asks consent.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from dmp.messaging.v1 import messaging_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso
from dmp_gateway.routes.dossiers import content_response
from dmp_gateway.security import Caller
from dmp_kit.errors import InvalidArgument

router = APIRouter(tags=["messaging"])

STATUS = {pb.CONVERSATION_STATUS_OPEN: "open", pb.CONVERSATION_STATUS_CLOSED: "closed"}
# What the messaging service may refuse, beyond what every route shares.
REFUSALS = problems.responses(
    403,
    404,
    409,
    422,
    types={
        403: ("forbidden", "access-denied", "conversation-not-allowed"),
        404: ("not-found", "dossier-not-found", "document-not-found"),
        409: ("dossier-closed", "conversation-closed", "conversation-full", "contention"),
        422: ("validation-error", "invalid-ins", "invalid-rpps", "invalid-attachment"),
    },
)
# Reading: a conversation is its two sides'; the professional side is refused once the patient
# blocked them or while the space is closed (rules 5 and 13).
READS = problems.responses(
    403,
    404,
    409,
    types={
        403: ("forbidden", "access-denied"),
        404: ("not-found", "dossier-not-found"),
        409: ("dossier-closed",),
    },
)


class Party(BaseModel):
    kind: Literal["patient", "professional", "system"]
    id: str = Field(description="INS, RPPS or the establishment's client id")
    name: str | None = None
    profession: str | None = None


class Attachment(BaseModel):
    id: str
    filename: str
    mime_type: str
    size: int
    dmp_document_id: str | None = Field(None, description="the DMP document it was copied from")
    filed_document_id: str | None = Field(None, description="the DMP document it was filed as")


class Message(BaseModel):
    id: str
    sender: Party
    sent_at: str
    body: str
    attachments: list[Attachment]
    read_at: str | None = Field(None, description="when the recipient first read it")


class Conversation(BaseModel):
    id: str
    patient: Party
    counterpart: Party = Field(description="the professional or establishment side")
    subject: str
    status: Literal["open", "closed"]
    opened_by: Literal["patient", "counterpart"]
    opened_at: str
    last_message_at: str
    unread: int = Field(description="messages to the caller not yet read")
    message_count: int


class Conversations(BaseModel):
    items: list[Conversation]
    next: str | None = None
    unread_total: int


class Thread(BaseModel):
    conversation: Conversation
    messages: list[Message]


class Opened(BaseModel):
    conversation: Conversation
    message: Message


class NewAttachment(BaseModel):
    """A file uploaded with the message (PDF, PNG or JPEG, judged by its content; 5 MiB at
    most), or a document of the patient's DMP, copied if the sender may read it."""

    filename: str | None = Field(None, max_length=120)
    content_base64: str | None = None
    dmp_document_id: str | None = Field(None, max_length=64)


class MessageIn(BaseModel):
    body: str = Field(max_length=5000)
    attachments: list[NewAttachment] = Field(default_factory=list, max_length=3)


class ConversationIn(MessageIn):
    patient_ins: str | None = Field(None, description="a professional's or establishment's")
    pharmacy_rpps: str | None = Field(
        None, description="a patient's: the pharmacist who dispensed to them within 12 months"
    )
    subject: str = Field(max_length=200)


class FileIn(BaseModel):
    type_code: str = Field(description="the DMP document type (GET /v1/habilitation-matrix)")
    title: str | None = Field(None, max_length=200)


class Filed(BaseModel):
    document_id: str


def _party(p: pb.Party) -> Party:
    return Party(kind=p.kind, id=p.id, name=p.name or None, profession=p.profession or None)  # type: ignore[arg-type]


def _conversation(c: pb.Conversation) -> Conversation:
    return Conversation(
        id=c.id,
        patient=_party(c.patient),
        counterpart=_party(c.counterpart),
        subject=c.subject,
        status=STATUS.get(c.status, "closed"),  # type: ignore[arg-type]
        opened_by=c.opened_by,  # type: ignore[arg-type]
        opened_at=iso(c.opened_at),
        last_message_at=iso(c.last_message_at),
        unread=c.unread,
        message_count=c.message_count,
    )


def _message(m: pb.Message) -> Message:
    return Message(
        id=m.id,
        sender=_party(m.sender),
        sent_at=iso(m.sent_at),
        body=m.body,
        attachments=[
            Attachment(
                id=a.id,
                filename=a.filename,
                mime_type=a.mime_type,
                size=a.size,
                dmp_document_id=a.dmp_document_id or None,
                filed_document_id=a.filed_document_id or None,
            )
            for a in m.attachments
        ],
        read_at=iso(m.read_at) if m.HasField("read_at") else None,
    )


def _attachments(given: list[NewAttachment]) -> list[pb.NewAttachment]:
    out = []
    for i, item in enumerate(given):
        field = f"attachments.{i}"
        if item.dmp_document_id and not item.content_base64:
            out.append(pb.NewAttachment(dmp_document_id=item.dmp_document_id))
            continue
        if not item.content_base64 or item.dmp_document_id:
            raise InvalidArgument(
                "an attachment is either content_base64 (with filename) or dmp_document_id",
                field=field,
            )
        try:
            content = base64.b64decode(item.content_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidArgument(
                "content_base64 is not base64", field=f"{field}.content_base64"
            ) from exc
        out.append(
            pb.NewAttachment(upload=pb.Upload(filename=item.filename or "", content=content))
        )
    return out


@router.get(
    "/v1/conversations",
    response_model=Conversations,
    response_model_exclude_none=True,
    summary="The caller's conversations, newest first, with unread counts",
    responses=problems.responses(403, 422, types={422: ("validation-error",)}),
)
async def list_conversations(
    request: Request,
    who: Caller,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            description="full-text search of one's own conversations (subjects and messages, "
            "case and accents aside), 2 to 100 characters; a page may hold fewer than "
            "`page_size` while `next` goes on",
        ),
    ] = None,
) -> Conversations:
    ds = downstream(request)
    resp = await ds.call(
        ds.messaging.ListConversations,
        pb.ListConversationsRequest(page_size=page_size, cursor=cursor or "", query=q or ""),
        token=who.token,
        fields={"query": "q"},
    )
    return Conversations(
        items=[_conversation(c) for c in resp.items],
        next=resp.next or None,
        unread_total=resp.unread_total,
    )


@router.post(
    "/v1/conversations",
    status_code=201,
    response_model=Opened,
    response_model_exclude_none=True,
    summary="Open a conversation (professionals, establishments; patients with their pharmacy)",
    responses=REFUSALS,
)
async def open_conversation(body: ConversationIn, request: Request, who: Caller) -> Opened:
    ds = downstream(request)
    resp = await ds.call(
        ds.messaging.OpenConversation,
        pb.OpenConversationRequest(
            patient_ins=body.patient_ins or "",
            pharmacy_rpps=body.pharmacy_rpps or "",
            subject=body.subject,
            body=body.body,
            attachments=_attachments(body.attachments),
        ),
        token=who.token,
    )
    return Opened(conversation=_conversation(resp.conversation), message=_message(resp.message))


@router.get(
    "/v1/conversations/{conversation_id}",
    response_model=Thread,
    response_model_exclude_none=True,
    summary="A conversation and its messages (the other side's become read)",
    responses=READS,
)
async def get_conversation(conversation_id: str, request: Request, who: Caller) -> Thread:
    ds = downstream(request)
    resp = await ds.call(
        ds.messaging.GetConversation,
        pb.GetConversationRequest(conversation_id=conversation_id),
        token=who.token,
    )
    return Thread(
        conversation=_conversation(resp.conversation),
        messages=[_message(m) for m in resp.messages],
    )


@router.post(
    "/v1/conversations/{conversation_id}/messages",
    status_code=201,
    response_model=Message,
    response_model_exclude_none=True,
    summary="Reply (while the conversation is open)",
    responses=REFUSALS,
)
async def post_message(
    conversation_id: str, body: MessageIn, request: Request, who: Caller
) -> Message:
    ds = downstream(request)
    resp = await ds.call(
        ds.messaging.PostMessage,
        pb.PostMessageRequest(
            conversation_id=conversation_id,
            body=body.body,
            attachments=_attachments(body.attachments),
        ),
        token=who.token,
    )
    return _message(resp.message)


async def _set_status(
    conversation_id: str, status: int, request: Request, who: Caller
) -> Conversation:
    ds = downstream(request)
    resp = await ds.call(
        ds.messaging.SetConversationStatus,
        pb.SetConversationStatusRequest(conversation_id=conversation_id, status=status),
        token=who.token,
    )
    return _conversation(resp.conversation)


@router.post(
    "/v1/conversations/{conversation_id}/close",
    response_model=Conversation,
    response_model_exclude_none=True,
    summary="Close (the professional side): the patient can no longer reply",
    responses=REFUSALS,
)
async def close_conversation(conversation_id: str, request: Request, who: Caller) -> Conversation:
    return await _set_status(conversation_id, pb.CONVERSATION_STATUS_CLOSED, request, who)


@router.post(
    "/v1/conversations/{conversation_id}/reopen",
    response_model=Conversation,
    response_model_exclude_none=True,
    summary="Reopen (the professional side)",
    responses=REFUSALS,
)
async def reopen_conversation(conversation_id: str, request: Request, who: Caller) -> Conversation:
    return await _set_status(conversation_id, pb.CONVERSATION_STATUS_OPEN, request, who)


@router.post(
    "/v1/conversations/{conversation_id}/block",
    response_model=Conversation,
    response_model_exclude_none=True,
    summary="The patient blocks the professional of this conversation (as in the DMP, rule 5)",
    responses=REFUSALS,
)
async def block_counterpart(conversation_id: str, request: Request, who: Caller) -> Conversation:
    ds = downstream(request)
    resp = await ds.call(
        ds.messaging.BlockCounterpart,
        pb.BlockCounterpartRequest(conversation_id=conversation_id),
        token=who.token,
    )
    return _conversation(resp.conversation)


@router.get(
    "/v1/conversations/{conversation_id}/attachments/{attachment_id}",
    response_class=Response,
    summary="An attachment's bytes",
    responses=READS,
)
async def get_attachment(
    conversation_id: str, attachment_id: str, request: Request, who: Caller
) -> Response:
    ds = downstream(request)
    resp = await ds.call(
        ds.messaging.GetAttachment,
        pb.GetAttachmentRequest(conversation_id=conversation_id, attachment_id=attachment_id),
        token=who.token,
    )
    return content_response(resp.content, resp.attachment.mime_type, resp.attachment.id)


@router.post(
    "/v1/conversations/{conversation_id}/attachments/{attachment_id}/file",
    status_code=201,
    response_model=Filed,
    summary="File an attachment into the patient's DMP (the professional side)",
    responses=problems.responses(
        403,
        404,
        409,
        422,
        types={
            403: ("forbidden", "access-denied", "conversation-not-allowed"),
            404: ("not-found", "dossier-not-found"),
            409: ("dossier-closed",),
            422: ("validation-error", "unknown-type-code"),
        },
    ),
)
async def file_attachment(
    conversation_id: str, attachment_id: str, body: FileIn, request: Request, who: Caller
) -> Filed:
    ds = downstream(request)
    resp = await ds.call(
        ds.messaging.FileAttachment,
        pb.FileAttachmentRequest(
            conversation_id=conversation_id,
            attachment_id=attachment_id,
            type_code=body.type_code,
            title=body.title or "",
        ),
        token=who.token,
    )
    return Filed(document_id=resp.document_id)

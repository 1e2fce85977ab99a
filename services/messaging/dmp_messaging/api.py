"""Messaging's gRPC servicer: proto ⇄ domain, the calls to the services that decide, and the
store. Every call to another service carries the caller's own token: consent decides for them,
dossier applies their rights to the documents they pick or file, ingest answers them alone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from uuid6 import uuid7

from dmp.consent.v1 import consent_pb2, consent_pb2_grpc
from dmp.dossier.v1 import dossier_pb2, dossier_pb2_grpc
from dmp.identity.v1 import identity_pb2, identity_pb2_grpc
from dmp.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from dmp.messaging.v1 import messaging_pb2 as pb
from dmp.messaging.v1 import messaging_pb2_grpc
from dmp_kit.access import raise_if_denied
from dmp_kit.auth import Principal, caller
from dmp_kit.bus import EventBus
from dmp_kit.clock import Clock
from dmp_kit.crypto import seal, unseal
from dmp_kit.errors import InvalidArgument, NotFound, PermissionDenied
from dmp_kit.identifiers import validate_ins, validate_rpps
from dmp_kit.mongo import Document
from dmp_kit.outbox import OutboxRelay, change_document, new_document_with_events
from dmp_kit.proto import timestamp
from dmp_kit.rpc.client import call_options
from dmp_kit.rpc.status import error_from_rpc
from dmp_kit.service_auth import EXPORT_READER
from dmp_messaging import domain
from dmp_messaging.config import MessagingSettings
from dmp_messaging.domain import Party, Side, Status
from dmp_messaging.events import MessagingEvents
from dmp_messaging.store import MessagingStore

T = TypeVar("T")
STATUSES = {Status.OPEN: pb.CONVERSATION_STATUS_OPEN, Status.CLOSED: pb.CONVERSATION_STATUS_CLOSED}
STATUS_NAMES = {v: k for k, v in STATUSES.items()}
MAX_ID = 64


class Downstream:
    """The services messaging asks, each with the caller's token."""

    def __init__(self, settings: MessagingSettings, channel: Callable[[str], Any]) -> None:
        self.deadline = settings.grpc_deadline_seconds
        self.identity = identity_pb2_grpc.IdentityServiceStub(channel(settings.identity_addr))
        self.consent = consent_pb2_grpc.ConsentServiceStub(channel(settings.consent_addr))
        self.dossier = dossier_pb2_grpc.DossierServiceStub(channel(settings.dossier_addr))
        self.ingest = ingest_pb2_grpc.IngestServiceStub(channel(settings.ingest_addr))

    async def call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        try:
            return await method(request, **call_options(self.deadline))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc


class MessagingServicer(messaging_pb2_grpc.MessagingServiceServicer):
    def __init__(
        self,
        settings: MessagingSettings,
        store: MessagingStore,
        clock: Clock,
        relay: OutboxRelay,
        bus: EventBus,
        downstream: Downstream,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.relay = relay
        self.bus = bus
        self.ds = downstream
        self.events = MessagingEvents(clock)
        self.master = settings.key_bytes("messaging_key")

    # opening, writing, closing ---------------------------------------------------------

    async def OpenConversation(
        self, request: pb.OpenConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.OpenConversationResponse:
        who = caller()
        me = domain.caller_party(who)
        subject = domain.subject(request.subject)
        text = domain.body(request.body)
        pending = checked_attachments(request.attachments)
        if me.kind == "patient":
            patient, counterpart = await self._patient_opens(who, request)
        else:
            patient, counterpart = await self._professional_opens(who, me, request)
        ins = patient.id
        key = await self.store.data_key(ins, self.master, self.clock.now())
        conversation_id, message_id = str(uuid7()), str(uuid7())
        attachments = await self._attachments(ins, key, conversation_id, pending)
        side = Side.PATIENT if me.kind == "patient" else Side.COUNTERPART
        now = self.clock.now()
        message = _new_message(message_id, side, _party_of(me, patient, counterpart), now)
        message["body"] = seal(key, text.encode(), f"{conversation_id}:{message_id}".encode())
        message["attachments"] = attachments
        recipient = domain.notice_recipient(side, patient, counterpart)
        doc: Document = {
            "_id": conversation_id,
            "ins": ins,
            "patient": _party_doc(patient),
            "counterpart": _party_doc(counterpart),
            "counterpart_key": counterpart.key,
            "subject": seal(key, subject.encode(), f"{conversation_id}:subject".encode()),
            "status": Status.OPEN.value,
            "opened_by": side.value,
            "opened_at": now,
            "last_message_at": now,
            "unread": {side.value: 0, side.other.value: 1},
            # kept beside the messages, which a list does not read
            "message_count": 1,
            "messages": [message],
        }
        await self.store.conversations.insert_one(
            new_document_with_events(
                doc,
                self.events.sent(who, ins, conversation_id, message_id, recipient),
                self.events.audit(who, ins, "create", conversation_id, to=recipient),
            )
        )
        self.relay.kick(self.store.conversations, conversation_id)
        return pb.OpenConversationResponse(
            conversation=self._conversation(doc, side, key),
            message=self._message(doc, message, key),
        )

    async def _patient_opens(
        self, who: Principal, request: pb.OpenConversationRequest
    ) -> tuple[Party, Party]:
        """The exception: a patient writes first to a pharmacy that dispensed to them."""
        rpps = validate_rpps(request.pharmacy_rpps, field="pharmacy_rpps")
        if request.patient_ins and request.patient_ins != who.ins:
            raise PermissionDenied(
                "a patient writes from their own space only", field="patient_ins"
            )
        found = await self.ds.call(
            self.ds.identity.LookupProfessional, identity_pb2.LookupProfessionalRequest(rpps=rpps)
        )
        pro = found.professional
        dispensed = False
        if pro.profession == domain.PHARMACIST:
            answer = await self.ds.call(
                self.ds.ingest.HasDispensed,
                ingest_pb2.HasDispensedRequest(
                    ins=who.ins, rpps=rpps, months=domain.DISPENSATION_MONTHS
                ),
            )
            dispensed = answer.dispensed
        domain.may_open_with_pharmacy(pro.profession, dispensed)
        await self._may_message(who.ins)
        me = await self._patient_party(who.ins)
        return me, Party("professional", rpps, _name(pro), pro.profession)

    async def _professional_opens(
        self, who: Principal, me: Party, request: pb.OpenConversationRequest
    ) -> tuple[Party, Party]:
        ins = validate_ins(request.patient_ins, field="patient_ins")
        if request.pharmacy_rpps:
            raise InvalidArgument(
                "a professional writes as themselves: leave pharmacy_rpps out",
                field="pharmacy_rpps",
            )
        await self._may_message(ins)
        if me.kind == "professional":
            found = await self.ds.call(
                self.ds.identity.LookupProfessional,
                identity_pb2.LookupProfessionalRequest(rpps=me.id),
            )
            me = Party(me.kind, me.id, _name(found.professional), found.professional.profession)
        else:
            me = Party(me.kind, me.id, me.id)
        return await self._patient_party(ins, named=who.kind != "system"), me

    async def _patient_party(self, ins: str, named: bool = True) -> Party:
        """The patient, with their name when the caller may read it (an establishment's
        software sees the INS only)."""
        if not named:
            return Party("patient", ins)
        found = await self.ds.call(
            self.ds.identity.LookupPatient, identity_pb2.LookupPatientRequest(ins=ins)
        )
        return Party("patient", ins, _name(found.patient))

    async def _verdict(self, ins: str) -> consent_pb2.MayMessageResponse:
        """Consent's word: an open space, a care actor the patient has not blocked."""
        return await self.ds.call(
            self.ds.consent.MayMessage, consent_pb2.MayMessageRequest(ins=ins)
        )

    async def _may_message(self, ins: str) -> None:
        raise_if_denied(await self._verdict(ins))

    async def PostMessage(
        self, request: pb.PostMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.PostMessageResponse:
        who = caller()
        me = domain.caller_party(who)
        text = domain.body(request.body)
        pending = checked_attachments(request.attachments)
        doc, side = await self._participant(request.conversation_id, me)
        domain.may_post(side, Status(doc["status"]), len(doc["messages"]))
        ins = doc["ins"]
        if side is Side.PATIENT:
            await self._may_message(ins)  # their space open
        key = await self.store.data_key(ins, self.master, self.clock.now())
        conversation_id, message_id = doc["_id"], str(uuid7())
        attachments = await self._attachments(ins, key, conversation_id, pending)
        now = self.clock.now()
        sender = _party(doc["patient"]) if side is Side.PATIENT else _party(doc["counterpart"])
        message = _new_message(message_id, side, sender, now)
        message["body"] = seal(key, text.encode(), f"{conversation_id}:{message_id}".encode())
        message["attachments"] = attachments
        recipient = domain.notice_recipient(
            side, _party(doc["patient"]), _party(doc["counterpart"])
        )

        def append(current: Document | None) -> Document | None:
            assert current is not None
            domain.may_post(side, Status(current["status"]), len(current["messages"]))
            unread = dict(current["unread"])
            unread[side.other.value] = unread.get(side.other.value, 0) + 1
            return {
                "messages": [*current["messages"], message],
                "message_count": len(current["messages"]) + 1,
                "last_message_at": now,
                "unread": unread,
            }

        written = await change_document(
            self.store.conversations,
            conversation_id,
            append,
            self.events.sent(who, ins, conversation_id, message_id, recipient),
            self.events.audit(who, ins, "create", conversation_id, to=recipient),
        )
        if written is None:
            raise NotFound("no such conversation", field="conversation_id", slug="not-found")
        self.relay.kick(self.store.conversations, conversation_id)
        return pb.PostMessageResponse(message=self._message(written, message, key))

    async def SetConversationStatus(
        self, request: pb.SetConversationStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetConversationStatusResponse:
        who = caller()
        me = domain.caller_party(who)
        status = STATUS_NAMES.get(request.status)
        if status is None:
            raise InvalidArgument("status is open or closed", field="status")
        doc, side = await self._participant(request.conversation_id, me)
        domain.may_set_status(side)
        written = await change_document(
            self.store.conversations,
            doc["_id"],
            lambda current: None
            if current is None or current["status"] == status.value
            else {"status": status.value},
            self.events.audit(who, doc["ins"], "update", doc["_id"]),
        )
        assert written is not None
        self.relay.kick(self.store.conversations, doc["_id"])  # its trail now, not at a sweep
        key = await self._key(doc["ins"])
        return pb.SetConversationStatusResponse(conversation=self._conversation(written, side, key))

    async def BlockCounterpart(
        self, request: pb.BlockCounterpartRequest, context: grpc.aio.ServicerContext
    ) -> pb.BlockCounterpartResponse:
        """Rule 5 from the conversation itself: the patient blocks the professional, who then
        can neither read their DMP nor write to them; the conversation is closed."""
        who = caller()
        me = domain.caller_party(who)
        doc, side = await self._participant(request.conversation_id, me)
        counterpart = _party(doc["counterpart"])
        if side is not Side.PATIENT or counterpart.kind != "professional":
            raise PermissionDenied(
                "the patient blocks a professional (an establishment's mailbox is not one)",
                slug="conversation-not-allowed",
            )
        await self.ds.call(
            self.ds.consent.SetProfessionalStatus,
            consent_pb2.SetProfessionalStatusRequest(
                ins=doc["ins"], rpps=counterpart.id, status=consent_pb2.PROFESSIONAL_STATUS_BLOCKED
            ),
        )
        written = await change_document(
            self.store.conversations,
            doc["_id"],
            lambda current: {"status": Status.CLOSED.value, "blocked": True},
            self.events.audit(who, doc["ins"], "update", doc["_id"], reason="blocked"),
        )
        assert written is not None
        self.relay.kick(self.store.conversations, doc["_id"])
        key = await self._key(doc["ins"])
        return pb.BlockCounterpartResponse(conversation=self._conversation(written, side, key))

    # reading ---------------------------------------------------------------------------

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConversationsResponse:
        who = caller()
        me = domain.caller_party(who)
        size = request.page_size or self.settings.conversations_page_size
        if not 0 < size <= self.settings.conversations_max_page_size:
            raise InvalidArgument(
                f"page_size is between 1 and {self.settings.conversations_max_page_size}",
                field="page_size",
            )
        after = _cursor(request.cursor)
        terms = domain.check_search(request.query) if request.query else ""
        side = Side.PATIENT if me.kind == "patient" else Side.COUNTERPART
        owner: Document = {"ins": me.id} if side is Side.PATIENT else {"counterpart_key": me.key}
        keys: dict[str, bytes | None] = {}

        async def key_of(ins: str) -> bytes | None:
            if ins not in keys:
                # A professional's list names the conversations they had; the subject of one
                # with a patient who blocked them, or whose space is closed, is not read.
                readable = side is Side.PATIENT or (await self._verdict(ins)).allowed
                keys[ins] = await self._key(ins) if readable else None
            return keys[ins]

        if terms:
            docs, last = await self._search(owner, after, size, terms, key_of)
        else:
            docs = await self.store.page(owner, after, size + 1)
            last = docs[size - 1] if len(docs) > size else None
            docs = docs[:size]
        items = [self._conversation(doc, side, await key_of(doc["ins"])) for doc in docs]
        # Traced before it is answered (fail closed): each patient whose conversations' subjects
        # the page shows, as a search of their messaging.
        shown = sorted(ins for ins, key in keys.items() if key is not None)
        await asyncio.gather(
            *(
                self.bus.publish_event(self.events.audit(who, ins, "search", "", query="list"))
                for ins in shown
            )
        )
        return pb.ListConversationsResponse(
            items=items,
            next=_next_cursor(last),
            unread_total=await self.store.unread_total(owner, side.value),
        )

    async def _search(
        self,
        owner: Document,
        after: tuple[datetime, str] | None,
        size: int,
        terms: str,
        key_of: Callable[[str], Awaitable[bytes | None]],
    ) -> tuple[list[Document], Document | None]:
        """The caller's conversations whose subject or messages hold the search, newest first,
        opened a batch at a time (sealed content is searched where it can be read: nothing of
        a conversation the caller may not read is). Stops at `size` found or after
        `search_scan_limit` conversations; returns them and where to go on from, if anywhere."""
        found: list[Document] = []
        scanned = 0
        batch = 50
        while True:
            docs = await self.store.page(owner, after, batch, with_messages=True)
            for doc in docs:
                scanned += 1
                key = await key_of(doc["ins"])
                if key is not None:
                    texts = [_unseal_text(key, doc["subject"], f"{doc['_id']}:subject")]
                    texts += [
                        _unseal_text(key, m["body"], f"{doc['_id']}:{m['id']}")
                        for m in doc["messages"]
                    ]
                    if domain.found_in(terms, texts):
                        found.append({k: v for k, v in doc.items() if k != "messages"})
                if len(found) == size or scanned >= self.settings.search_scan_limit:
                    more = doc is not docs[-1] or len(docs) == batch
                    return found, doc if more else None
            if len(docs) < batch:
                return found, None
            after = (docs[-1]["last_message_at"], docs[-1]["_id"])

    async def GetConversation(
        self, request: pb.GetConversationRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetConversationResponse:
        """Traced before it is answered (fail closed); the other side's messages become read."""
        who = caller()
        me = domain.caller_party(who)
        doc, side = await self._participant(request.conversation_id, me)
        await self.bus.publish_event(self.events.audit(who, doc["ins"], "read", doc["_id"]))
        now = self.clock.now()

        def mark_read(current: Document | None) -> Document | None:
            if current is None or not current["unread"].get(side.value):
                return None
            messages = [
                {**m, "read_at": now} if m["side"] != side.value and not m.get("read_at") else m
                for m in current["messages"]
            ]
            return {"messages": messages, "unread": {**current["unread"], side.value: 0}}

        written = await change_document(self.store.conversations, doc["_id"], mark_read) or doc
        key = await self._key(doc["ins"])
        return pb.GetConversationResponse(
            conversation=self._conversation(written, side, key),
            messages=[self._message(written, m, key) for m in written["messages"]],
        )

    async def ExportConversations(
        self, request: pb.ExportConversationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportConversationsResponse:
        """The dossier service's account alone, building the patient's export: their
        conversations as they read them. Nothing becomes read; the dossier traces the export."""
        who = caller()
        who.require_kind("system")
        who.require_role(EXPORT_READER)
        ins = validate_ins(request.ins)
        size = request.page_size or self.settings.conversations_page_size
        if not 0 < size <= self.settings.conversations_max_page_size:
            raise InvalidArgument(
                f"page_size is between 1 and {self.settings.conversations_max_page_size}",
                field="page_size",
            )
        docs = await self.store.page(
            {"ins": ins}, _cursor(request.cursor), size + 1, with_messages=True
        )
        key = await self._key(ins)
        items = [
            pb.ExportedConversation(
                conversation=self._conversation(doc, Side.PATIENT, key),
                messages=[self._message(doc, m, key) for m in doc["messages"]],
            )
            for doc in docs[:size]
        ]
        last = docs[size - 1] if len(docs) > size else None
        return pb.ExportConversationsResponse(items=items, next=_next_cursor(last))

    async def GetAttachment(
        self, request: pb.GetAttachmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAttachmentResponse:
        who = caller()
        me = domain.caller_party(who)
        doc, _ = await self._participant(request.conversation_id, me)
        meta, key, content = await self._attachment_content(doc, request.attachment_id)
        await self.bus.publish_event(self.events.audit(who, doc["ins"], "read", doc["_id"]))
        return pb.GetAttachmentResponse(attachment=_attachment(meta, key), content=content)

    async def FileAttachment(
        self, request: pb.FileAttachmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.FileAttachmentResponse:
        """The professional side files an attachment into the DMP, as their own document: the
        dossier applies every document rule to it, with their token."""
        who = caller()
        me = domain.caller_party(who)
        doc, side = await self._participant(request.conversation_id, me)
        if side is not Side.COUNTERPART:
            raise PermissionDenied(
                "the professional side files attachments into the DMP",
                slug="conversation-not-allowed",
            )
        meta, key, content = await self._attachment_content(doc, request.attachment_id)
        title = request.title.strip() or _unseal_text(key, meta["filename"], f"{meta['id']}:name")
        added = await self.ds.call(
            self.ds.dossier.AddDocument,
            dossier_pb2.AddDocumentRequest(
                ins=doc["ins"],
                type_code=request.type_code,
                title=title,
                mime_type=meta["mime_type"],
                content=content,
            ),
        )
        filed = added.document.id

        def note(current: Document | None) -> Document | None:
            assert current is not None
            messages = [
                {
                    **m,
                    "attachments": [
                        {**a, "filed_document_id": filed} if a["id"] == meta["id"] else a
                        for a in m["attachments"]
                    ],
                }
                for m in current["messages"]
            ]
            return {"messages": messages}

        await change_document(self.store.conversations, doc["_id"], note)
        return pb.FileAttachmentResponse(document_id=filed)

    # helpers ---------------------------------------------------------------------------

    async def _participant(self, conversation_id: str, me: Party) -> tuple[Document, Side]:
        """The conversation, if the caller is one of its two sides; to anyone else it does not
        exist."""
        if not conversation_id or len(conversation_id) > MAX_ID:
            raise InvalidArgument("conversation_id is required", field="conversation_id")
        doc = await self.store.conversation(conversation_id)
        side = side_of_doc(doc, me) if doc is not None else None
        if doc is None or side is None:
            raise NotFound("no such conversation", field="conversation_id", slug="not-found")
        if side is Side.COUNTERPART:
            # Rules 5 and 13: a professional the patient blocked, or any while the space is
            # closed, is refused everything of it, their own conversations included.
            await self._may_message(doc["ins"])
        return doc, side

    async def _attachment_content(
        self, doc: Document, attachment_id: str
    ) -> tuple[Document, bytes, bytes]:
        """An attachment of this conversation: its metadata, the patient's key, its bytes."""
        meta = _attachment_in(doc, attachment_id)
        stored = await self.store.attachment(meta["id"])
        key = await self._key(doc["ins"])
        if stored is None or key is None or stored["conversation_id"] != doc["_id"]:
            raise NotFound("no such attachment", field="attachment_id", slug="not-found")
        return meta, key, unseal(key, bytes(stored["content"]), f"{meta['id']}:content".encode())

    async def _key(self, ins: str) -> bytes | None:
        return await self.store.existing_key(ins, self.master)

    async def _attachments(
        self, ins: str, key: bytes, conversation_id: str, given: list[Pending]
    ) -> list[Document]:
        """Each DMP document fetched first, with the sender's token (consent decides whether
        they may read it, and dossier traces the read): a refusal leaves nothing written.
        Then every attachment stored, sealed."""
        ready: list[tuple[str, bytes, str, str]] = []  # name, content, media type, source
        for item in given:
            if not item.dmp_document_id:
                ready.append((item.filename, item.content, item.media_type, ""))
                continue
            found = await self.ds.call(
                self.ds.dossier.GetDocumentContent,
                dossier_pb2.GetDocumentContentRequest(ins=ins, document_id=item.dmp_document_id),
            )
            domain.may_copy(set(found.document.confidentiality), f"{item.field}.dmp_document_id")
            if len(found.content) > domain.MAX_ATTACHMENT_BYTES:
                raise InvalidArgument(
                    "this document is too large to attach",
                    field=f"{item.field}.dmp_document_id",
                    slug="invalid-attachment",
                )
            name = domain.filename(
                found.document.title or item.dmp_document_id, f"{item.field}.dmp_document_id"
            )
            ready.append((name, found.content, found.document.mime_type, item.dmp_document_id))
        out = []
        for name, content, media, source in ready:
            attachment_id = str(uuid7())
            await self.store.add_attachment(
                {
                    "_id": attachment_id,
                    "ins": ins,
                    "conversation_id": conversation_id,
                    "created_at": self.clock.now(),
                    "content": seal(key, content, f"{attachment_id}:content".encode()),
                }
            )
            out.append(
                {
                    "id": attachment_id,
                    "filename": seal(key, name.encode(), f"{attachment_id}:name".encode()),
                    "mime_type": media,
                    "size": len(content),
                    "dmp_document_id": source,
                    "filed_document_id": "",
                }
            )
        return out

    def _conversation(self, doc: Document, side: Side, key: bytes | None) -> pb.Conversation:
        subject = _unseal_text(key, doc["subject"], f"{doc['_id']}:subject")
        return pb.Conversation(
            id=doc["_id"],
            patient=_party_pb(doc["patient"]),
            counterpart=_party_pb(doc["counterpart"]),
            subject=subject,
            status=STATUSES[Status(doc["status"])],
            opened_by=doc["opened_by"],
            opened_at=timestamp(doc["opened_at"]),
            last_message_at=timestamp(doc["last_message_at"]),
            unread=int(doc["unread"].get(side.value, 0)),
            message_count=int(doc["message_count"]),
        )

    def _message(self, doc: Document, message: Document, key: bytes | None) -> pb.Message:
        text = _unseal_text(key, message["body"], f"{doc['_id']}:{message['id']}")
        out = pb.Message(
            id=message["id"],
            sender=_party_pb(message["sender"]),
            sent_at=timestamp(message["sent_at"]),
            body=text,
            attachments=[_attachment(a, key) for a in message["attachments"]],
        )
        if message.get("read_at"):
            out.read_at.CopyFrom(timestamp(message["read_at"]))
        return out


@dataclass(frozen=True)
class Pending:
    """An attachment as given, checked without I/O."""

    field: str
    filename: str = ""
    content: bytes = b""
    media_type: str = ""
    dmp_document_id: str = ""


def checked_attachments(given: Any) -> list[Pending]:
    """Every attachment of a message checked before anything is asked or written: an upload
    by its name and its content (PDF, PNG or JPEG), a DMP document by the form of its id."""
    domain.attachment_count(len(given))
    out = []
    for i, item in enumerate(given):
        field = f"attachments.{i}"
        which = item.WhichOneof("source")
        if which == "upload":
            out.append(
                Pending(
                    field,
                    filename=domain.filename(item.upload.filename, f"{field}.filename"),
                    content=item.upload.content,
                    media_type=domain.attachment_type(item.upload.content, f"{field}.content"),
                )
            )
        elif which == "dmp_document_id" and 0 < len(item.dmp_document_id) <= MAX_ID:
            out.append(Pending(field, dmp_document_id=item.dmp_document_id))
        else:
            raise InvalidArgument("an upload or a DMP document id", field=field)
    return out


def side_of_doc(doc: Document, me: Party) -> Side | None:
    return domain.side_of(me, doc["ins"], doc["counterpart_key"])


def _name(person: Any) -> str:
    return f"{person.given_name} {person.family_name}".strip()


def _party_of(me: Party, patient: Party, counterpart: Party) -> Party:
    return patient if me.kind == "patient" else counterpart


def _party_doc(party: Party) -> Document:
    return {"kind": party.kind, "id": party.id, "name": party.name, "profession": party.profession}


def _party(doc: Document) -> Party:
    return Party(doc["kind"], doc["id"], doc.get("name", ""), doc.get("profession", ""))


def _party_pb(doc: Document) -> pb.Party:
    return pb.Party(
        kind=doc["kind"], id=doc["id"], name=doc.get("name", ""), profession=doc["profession"]
    )


def _new_message(message_id: str, side: Side, sender: Party, now: datetime) -> Document:
    return {
        "id": message_id,
        "side": side.value,
        "sender": _party_doc(sender),
        "sent_at": now,
        "read_at": None,
    }


def _unseal_text(key: bytes | None, sealed: Any, aad: str) -> str:
    if key is None:
        return ""
    return unseal(key, bytes(sealed), aad.encode()).decode()


def _attachment(meta: Document, key: bytes | None) -> pb.Attachment:
    return pb.Attachment(
        id=meta["id"],
        filename=_unseal_text(key, meta["filename"], f"{meta['id']}:name"),
        mime_type=meta["mime_type"],
        size=meta["size"],
        dmp_document_id=meta.get("dmp_document_id", ""),
        filed_document_id=meta.get("filed_document_id", ""),
    )


def _attachment_in(doc: Document, attachment_id: str) -> Document:
    for message in doc["messages"]:
        for meta in message["attachments"]:
            if meta["id"] == attachment_id:
                return dict(meta)
    raise NotFound("no such attachment", field="attachment_id", slug="not-found")


def _next_cursor(last: Document | None) -> str:
    return f"{int(last['last_message_at'].timestamp() * 1000)}:{last['_id']}" if last else ""


def _cursor(value: str) -> tuple[datetime, str] | None:
    if not value:
        return None
    millis, _, last_id = value.partition(":")
    if not (millis.isascii() and millis.isdigit() and len(millis) <= 15) or not last_id:
        raise InvalidArgument("the cursor is not one this list gave", field="cursor")
    if len(value) > 100:
        raise InvalidArgument("the cursor is not one this list gave", field="cursor")
    return datetime.fromtimestamp(int(millis) / 1000, tz=UTC), last_id

"""The dossier gRPC servicer. Who may see what is asked of consent; nothing is decided here."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import grpc
from cachetools import LRUCache
from uuid6 import uuid7

from dmp.consent.v1 import consent_pb2, consent_pb2_grpc
from dmp.dossier.v1 import dossier_pb2 as pb
from dmp.dossier.v1 import dossier_pb2_grpc
from dmp.events.v1 import dossier_pb2 as ev
from dmp.identity.v1 import identity_pb2, identity_pb2_grpc
from dmp_dossier import domain
from dmp_dossier.config import DossierSettings
from dmp_dossier.events import DossierEvents
from dmp_dossier.store import (
    CURRENT,
    DossierStore,
    NewDocument,
    consent_epoch,
    current_documents,
    find_document,
    hidden_from_patient,
    listing_id,
    series_id,
    unique_id,
)
from dmp_kit.access import raise_if_denied
from dmp_kit.auth import Principal, caller
from dmp_kit.bus import EventBus
from dmp_kit.catalogue import Catalogue
from dmp_kit.clock import Clock
from dmp_kit.crypto import derive_key, seal, unseal
from dmp_kit.errors import (
    Conflict,
    DmpError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
)
from dmp_kit.forget import patient_data
from dmp_kit.identifiers import validate_ins, validate_rpps
from dmp_kit.logging import get_logger
from dmp_kit.metrics import Counter
from dmp_kit.mongo import Document
from dmp_kit.outbox import Change, OutboxRelay
from dmp_kit.proto import timestamp
from dmp_kit.rpc.client import call_options
from dmp_kit.rpc.status import error_from_rpc
from dmp_kit.service_auth import CONSENT_CHANGE_MARKER, DOSSIER_STATE_READER

log = get_logger(__name__)
T = TypeVar("T")

STATUS = {
    "open": pb.DOSSIER_STATUS_OPEN,
    "closed": pb.DOSSIER_STATUS_CLOSED,
    "deletion_requested": pb.DOSSIER_STATUS_DELETION_REQUESTED,
}
DOC_STATUS = {
    "approved": pb.DOCUMENT_STATUS_APPROVED,
    "archived": pb.DOCUMENT_STATUS_ARCHIVED,
    "deleted": pb.DOCUMENT_STATUS_DELETED,
    "superseded": pb.DOCUMENT_STATUS_SUPERSEDED,
}
DOC_STATUS_NAME = {v: k for k, v in DOC_STATUS.items()}
# A bare listing: the current documents, no other condition (ListDocuments with no query).
LISTING = domain.Query(statuses=frozenset(CURRENT))
CHANGE_ID = re.compile(r"[0-9a-f]{32}")
# Documents per FilterDocuments call: well under gRPC's 4 MiB message limit.
FILTER_BATCH = 1000
EXPORT_STATUS = {
    "pending": pb.EXPORT_STATUS_PENDING,
    "running": pb.EXPORT_STATUS_RUNNING,
    "ready": pb.EXPORT_STATUS_READY,
    "failed": pb.EXPORT_STATUS_FAILED,
    "expired": pb.EXPORT_STATUS_EXPIRED,
}
MODE_NAME = {
    consent_pb2.ACCESS_MODE_BREAK_GLASS: "break_glass",
    consent_pb2.ACCESS_MODE_REGULATOR: "regulator",
}


# Documents whose metadata message a list keeps made (ListedMetadata; about 1 KB each).
LISTED_HELD = 10_000


def shown_links(doc: Document, links: set[str] | None) -> tuple[str, str]:
    """The versions `doc` replaces and is replaced by, each as shown to a caller who may read
    `links` (None: all): a link to any other is left out (nothing about a document reaches who
    may not read it)."""
    replaces, replaced_by = str(doc.get("replaces", "")), str(doc.get("replaced_by", ""))
    if links is None:
        return replaces, replaced_by
    return (replaces if replaces in links else "", replaced_by if replaced_by in links else "")


def metadata(doc: Document, links: set[str] | None = None) -> pb.DocumentMetadata:
    """A document's metadata; `links`, when given, are the linked versions the caller may
    read (shown_links)."""
    return _metadata(doc, *shown_links(doc, links))


class ListedMetadata:
    """The metadata messages of documents a list shows, made once per document as decoded:
    the store decodes a listing once for every request that reads it unchanged (its
    `shared` documents), and making a message takes about 5 µs, 1 ms for a page of 200.

    Found by the document's identity and the links shown; each entry holds its document, so
    that identity is no other's while it is held (a listing changed is decoded anew: other
    documents, other entries). Bounded, and emptied with the rest of the patient data a
    process holds (dmp_kit.forget). A message served from here is copied into its answer."""

    def __init__(self, size: int = LISTED_HELD) -> None:
        self._made: LRUCache[tuple[int, str, str], tuple[Document, pb.DocumentMetadata]] = (
            patient_data(LRUCache(size))
        )

    def get(self, doc: Document, links: set[str] | None) -> pb.DocumentMetadata:
        shown = shown_links(doc, links)
        key = (id(doc), *shown)
        held = self._made.get(key)
        if held is not None and held[0] is doc:
            return held[1]
        made = _metadata(doc, *shown)
        self._made[key] = (doc, made)
        return made


def _metadata(doc: Document, replaces: str, replaced_by: str) -> pb.DocumentMetadata:
    return pb.DocumentMetadata(
        id=doc["_id"],
        ins=doc["ins"],
        type_code=doc["type_code"],
        section=doc["section"],
        title=doc["title"],
        author=doc["author"],
        created_at=timestamp(doc["created_at"]),
        service_start=timestamp(doc.get("service_start")),
        mime_type=doc["mime_type"],
        size=doc["size"],
        sha256=doc["sha256"],
        confidentiality=doc.get("labels", []),
        status=DOC_STATUS[doc["status"]],
        replaces=replaces,
        replaced_by=replaced_by,
        sha1=doc.get("sha1", ""),
        context=context_message(doc.get("context")),
        submission=submission_message(doc.get("submission")),
    )


CODE_PARTS = ("system", "code", "display")


def searched(query: pb.DocumentQuery) -> str:
    """What a search was on, for the trail: the conditions' names (their values may be
    identifiers; the trail keeps none)."""
    fields = sorted(f.name for f, _ in query.ListFields())
    return f":{','.join(fields)}" if fields else ""


async def _page(
    matching: list[Document],
    limit: int,
    judge: Callable[[list[Document]], Awaitable[dict[str, T]]],
) -> tuple[list[tuple[Document, T]], bool]:
    """A page of `matching` (in order) of what consent keeps, batch after batch until it is
    full: the first batch is sized for a caller who may read the whole page (one more says
    whether there is a next). `judge` answers, for a batch, the ids it keeps and what it said
    of each. Returns the page and whether there is more."""
    page: list[tuple[Document, T]] = []
    more = False
    start, batch = 0, limit + 1
    while start < len(matching) and not more:
        found = matching[start : start + batch]
        kept = await judge(found)
        for d in found:
            if d["_id"] in kept:
                if len(page) == limit:
                    more = True
                    break
                page.append((d, kept[d["_id"]]))
        start, batch = start + len(found), FILTER_BATCH
    return page, more


def check_named_author(who: Principal, named: Document) -> None:
    """Who may name a document's author: a professional names themselves; a facility's
    software names the professional who wrote it; nobody else names anyone."""
    if who.kind == "professional":
        if named.get("rpps") != who.rpps:
            raise PermissionDenied(
                "a professional is the author of what they submit",
                field="context.author_person.rpps",
                slug="author-only",
            )
    elif not (who.kind == "system" and who.has_role("facility")):
        raise PermissionDenied(
            "only a professional or a facility's software names a document's author",
            field="context.author_person",
            slug="author-only",
        )


def code_entry(code: pb.Code) -> dict[str, str]:
    return {part: getattr(code, part) for part in CODE_PARTS}


def code_message(entry: dict[str, str] | None) -> pb.Code | None:
    return pb.Code(**entry) if entry else None


def context_entry(ctx: pb.DocumentContext, now: datetime) -> Document:
    """What a submitter said of a document, checked, as stored (empty parts left out)."""
    events = list(ctx.events)
    if len(events) > domain.MAX_EVENTS:
        raise InvalidArgument(f"at most {domain.MAX_EVENTS} event codes", field="context.events")
    entry: Document = {
        "unique_id": domain.check_unique_id(ctx.unique_id, "context.unique_id"),
        "practice_setting": domain.check_code(
            code_entry(ctx.practice_setting), "context.practice_setting"
        ),
        "facility_type": domain.check_code(code_entry(ctx.facility_type), "context.facility_type"),
        "events": [
            c
            for i, e in enumerate(events)
            if (c := domain.check_code(code_entry(e), f"context.events[{i}]"))
        ],
        "service_stop": (
            ctx.service_stop.ToDatetime(tzinfo=now.tzinfo) if ctx.HasField("service_stop") else None
        ),
        "format": domain.check_code(code_entry(ctx.format), "context.format"),
        "class_code": domain.check_code(code_entry(ctx.class_code), "context.class_code"),
        "language": domain.check_text(ctx.language, 35, "context.language"),
        "description": domain.check_text(
            ctx.description, domain.MAX_DESCRIPTION, "context.description"
        ),
    }
    if ctx.HasField("author_person"):
        person = ctx.author_person
        entry["author_person"] = {
            k: v
            for k, v in {
                "rpps": validate_rpps(person.rpps, "context.author_person.rpps")
                if person.rpps
                else "",
                "given": domain.check_text(
                    person.given, domain.MAX_TEXT, "context.author_person.given"
                ),
                "family": domain.check_text(
                    person.family, domain.MAX_TEXT, "context.author_person.family"
                ),
                "role": domain.check_code(code_entry(person.role), "context.author_person.role"),
            }.items()
            if v
        }
    return {k: v for k, v in entry.items() if v}


def context_message(entry: Document | None) -> pb.DocumentContext | None:
    if not entry:
        return None
    person = entry.get("author_person") or {}
    return pb.DocumentContext(
        unique_id=entry.get("unique_id", ""),
        practice_setting=code_message(entry.get("practice_setting")),
        facility_type=code_message(entry.get("facility_type")),
        events=[pb.Code(**e) for e in entry.get("events", [])],
        service_stop=timestamp(entry.get("service_stop")),
        format=code_message(entry.get("format")),
        author_person=pb.AuthorPerson(
            rpps=person.get("rpps", ""),
            given=person.get("given", ""),
            family=person.get("family", ""),
            role=code_message(person.get("role")),
        )
        if person
        else None,
        class_code=code_message(entry.get("class_code")),
        language=entry.get("language", ""),
        description=entry.get("description", ""),
    )


def submission_message(entry: Document | None) -> pb.SubmissionSet | None:
    if not entry:
        return None
    return pb.SubmissionSet(
        id=entry["id"],
        unique_id=entry.get("unique_id", ""),
        source_id=entry.get("source_id", ""),
        content_type=code_message(entry.get("content_type")),
        submitted_at=timestamp(entry.get("submitted_at")),
        title=entry.get("title", ""),
    )


@dataclass(frozen=True)
class Verdicts:
    """Consent's verdicts for one caller and dossier context, by document facts."""

    allowed: dict[tuple[Any, ...], bool]
    mode: int
    until: datetime


# Callers and dossiers whose verdicts are kept (a few kilobytes each).
VERDICTS_HELD = 10_000
VERDICTS = Counter(
    "dmp_dossier_verdicts_total",
    "Consent verdicts a request used (`of` a list of documents, or a single decision): asked "
    "of consent, or reused",
    ["source", "of"],
)


def _facts(doc: Document) -> tuple[Any, ...]:
    """What of a document consent's verdict depends on: what `_ref` tells it but the id."""
    return (
        doc["type_code"],
        doc["section"],
        doc["author"],
        frozenset(doc.get("labels", ())),
        doc["status"] == "deleted",
    )


def _ref(doc: Document) -> consent_pb2.DocumentRef:
    return consent_pb2.DocumentRef(
        id=doc["_id"],
        type_code=doc["type_code"],
        section=doc["section"],
        author=doc["author"],
        labels=doc.get("labels", []),
        deleted=doc["status"] == "deleted",
    )


class DossierServicer(dossier_pb2_grpc.DossierServiceServicer):
    def __init__(
        self,
        settings: DossierSettings,
        store: DossierStore,
        catalogue: Catalogue,
        clock: Clock,
        relay: OutboxRelay,
        bus: EventBus,
        consent: consent_pb2_grpc.ConsentServiceStub,
        identity: identity_pb2_grpc.IdentityServiceStub,
        exports_asked: Callable[[], None] = lambda: None,
    ) -> None:
        self.exports_asked = exports_asked
        self.settings = settings
        self.store = store
        self.catalogue = catalogue
        self.clock = clock
        self.relay = relay
        self.bus = bus
        self.consent = consent
        self.identity = identity
        self.events = DossierEvents(clock)
        self._key_seal = derive_key(settings.dossier_key_bytes, "dossier-data-keys")
        self._verdicts: LRUCache[Any, Verdicts] = patient_data(LRUCache(VERDICTS_HELD))
        self._listed = ListedMetadata()
        # single decisions (a write, one document's read) and until when they hold
        self._decisions: LRUCache[Any, tuple[consent_pb2.DecideResponse, datetime]] = patient_data(
            LRUCache(VERDICTS_HELD)
        )

    # helpers -----------------------------------------------------------------------------

    def _timeout(self) -> dict[str, Any]:
        return call_options(self.settings.grpc_deadline_seconds)

    def _context(self, dossier: Document | None) -> consent_pb2.DossierContext:
        """The dossier as consent needs it, from its record as this request read it: so the
        consent epoch is one no change acknowledged before the request predates."""
        if dossier is None:
            return consent_pb2.DossierContext(status="absent")
        return consent_pb2.DossierContext(
            status=dossier["status"],
            legal_representatives=dossier.get("legal_representatives", []),
            consent_epoch=consent_epoch(dossier, self.clock.now()),
        )

    async def _decide(
        self,
        ins: str,
        dossier: Document | None,
        action: int,
        document: Document | None = None,
        declared_gp: str = "",
    ) -> consent_pb2.DecideResponse:
        request = consent_pb2.DecideRequest(
            ins=ins,
            action=action,  # type: ignore[arg-type]
            dossier=self._context(dossier),
        )
        request.dossier.declared_gp = declared_gp
        if document is not None:
            request.document.CopyFrom(_ref(document))
        # Reused as the lists' verdicts are (`_readable_ids`): the same caller, context (its
        # epoch included), action, document facts and declared GP, while consent says so.
        key = (
            ins,
            request.dossier.SerializeToString(deterministic=True),
            self._whom(caller()),
            action,
            _facts(document) if document is not None else None,
        )
        now = self.clock.now()
        held = self._decisions.get(key) if request.dossier.consent_epoch else None
        if held is not None and now < held[1]:
            VERDICTS.labels(source="reused", of="decision").inc()
            return held[0]
        VERDICTS.labels(source="asked", of="decision").inc()
        try:
            answer: consent_pb2.DecideResponse = await self.consent.Decide(
                request, **self._timeout()
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        if request.dossier.consent_epoch and answer.HasField("reusable_for"):
            self._decisions[key] = (answer, now + answer.reusable_for.ToTimedelta())
        return answer

    @staticmethod
    def _whom(who: Principal) -> Any:
        """The caller by their token's digest, which names them exactly (the token is kept
        nowhere); a caller with no token, by all it is."""
        return hashlib.sha256(who.token.encode()).digest() if who.token else who

    async def _readable_ids(
        self, ins: str, dossier: Document | None, docs: list[Document]
    ) -> tuple[set[str], int]:
        """Consent's batch verdict: the ids of `docs` the caller may read, and the mode.
        Consent's verdicts are reused while it says they hold (`reusable_for`) for the same
        caller (the same token), dossier context (its consent epoch included: none while a
        consent change is under way) and document facts; anything else is asked again."""
        if not docs:
            return set(), consent_pb2.ACCESS_MODE_NORMAL
        context = self._context(dossier)
        key = (ins, context.SerializeToString(deterministic=True), self._whom(caller()))
        now = self.clock.now()
        held = self._verdicts.get(key) if context.consent_epoch else None
        if held is not None and now < held.until:
            try:
                readable = {d["_id"] for d in docs if held.allowed[_facts(d)]}
            except KeyError:
                pass  # a document of facts not judged under this key yet: ask
            else:
                VERDICTS.labels(source="reused", of="list").inc()
                return readable, held.mode
        VERDICTS.labels(source="asked", of="list").inc()
        try:
            answer = await self.consent.FilterDocuments(
                consent_pb2.FilterDocumentsRequest(
                    ins=ins, dossier=context, documents=[_ref(d) for d in docs]
                ),
                **self._timeout(),
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        visible = set(answer.visible_ids)
        if context.consent_epoch and answer.HasField("reusable_for"):
            until = now + answer.reusable_for.ToTimedelta()  # from before the request left
            allowed = {_facts(d): d["_id"] in visible for d in docs}
            if held is not None and now < held.until and held.mode == answer.mode:
                allowed = {**held.allowed, **allowed}
                until = min(until, held.until)
            self._verdicts[key] = Verdicts(allowed, answer.mode, until)
        return visible, answer.mode

    async def _readable_links(
        self, ins: str, dossier: Document | None, docs: list[Document], listed: list[Document]
    ) -> set[str]:
        """Of the versions `docs` link to (replaces, replaced_by), those the caller may read;
        `listed`, the dossier's documents as the request read them."""
        ids = {d[k] for d in docs for k in ("replaces", "replaced_by") if d.get(k)}
        if not ids:
            return set()
        readable, _ = await self._readable_ids(ins, dossier, [d for d in listed if d["_id"] in ids])
        return readable

    def _record_ref(self, record: str) -> Document:
        """A profile, contacts or directives record, as the document type it counts as."""
        kind = self.catalogue.records[record]
        return {
            "_id": f"record:{record}",
            "type_code": kind.code,
            "section": kind.section,
            "author": "",
            "labels": [],
            "status": "approved",
        }

    async def _trace(
        self,
        who: Principal,
        ins: str,
        action: str,
        *,
        mode: str = "normal",
        document_id: str = "",
        query: str = "",
        outcome: str = "success",
        reason: str = "",
    ) -> None:
        """Rule 10, fail closed: the answer leaves only once JetStream holds its trace."""
        await self.bus.publish_event(
            self.events.audit(
                who,
                ins,
                action,
                outcome=outcome,
                mode=mode,
                document_id=document_id,
                query=query,
                reason=reason,
            )
        )

    async def _allowed_read(
        self, who: Principal, ins: str, dossier: Document | None, document: Document | None = None
    ) -> str:
        """Consent's verdict for a read; a refusal is traced too. Returns the access mode."""
        decision = await self._decide(ins, dossier, consent_pb2.ACTION_READ, document)
        if not decision.allowed:
            try:
                await self._trace(
                    who,
                    ins,
                    "read",
                    outcome="denied",
                    reason=decision.reason,
                    document_id=document["_id"] if document else "",
                )
            except Exception:  # the refusal stands whether or not its trace is stored
                log.warning("denied_read_not_traced")
            raise_if_denied(decision)
        return MODE_NAME.get(decision.mode, "normal")

    async def _first_access(self, who: Principal, ins: str, dossier: Document | None) -> None:
        """A professional's first access to a dossier is recorded once (and the patient
        told); `dossier` as read by the request spares a read when it already names them."""
        if who.kind != "professional" or who.rpps in (dossier or {}).get("accessed_by", []):
            return
        event = self.events.fact(
            "access.first", ev.AccessFirst(rpps=who.rpps, profession=who.profession), who, ins
        )

        def fields(doc: Document | None) -> Document | None:
            seen = (doc or {}).get("accessed_by", [])
            return None if who.rpps in seen else {"accessed_by": [*seen, who.rpps]}

        await self.store.change_dossier(ins, fields, event)
        self.relay.kick(self.store.dossiers, ins)

    async def _visible_counts(
        self, dossier: Document, listed: list[Document] | None = None
    ) -> dict[str, int]:
        """Documents per section, of those the caller may read (rule 4's matrix, masking,
        hiding): a count is as telling as a list. `listed`: the dossier's documents, if read."""
        if listed is None:
            listed = await self.store.documents_of(dossier["_id"])
        refs = current_documents(listed)
        counts: dict[str, int] = {}
        for start in range(0, len(refs), FILTER_BATCH):
            batch = refs[start : start + FILTER_BATCH]
            readable, _ = await self._readable_ids(dossier["_id"], dossier, batch)
            for d in batch:
                if d["_id"] in readable:
                    counts[d["section"]] = counts.get(d["section"], 0) + 1
        return counts

    async def _dossier_message(
        self, dossier: Document, new: bool = False, listed: list[Document] | None = None
    ) -> pb.Dossier:
        """The dossier and its counts per section (a new one has no document: no query).
        `listed`: its documents, if read with it."""
        return pb.Dossier(
            ins=dossier["_id"],
            status=STATUS[dossier["status"]],
            opened_by=dossier["opened_by"],
            opened_at=timestamp(dossier["opened_at"]),
            closed_at=timestamp(dossier.get("closed_at")),
            counts_by_section={} if new else await self._visible_counts(dossier, listed),
        )

    # dossiers ------------------------------------------------------------------------------

    async def OpenDossier(
        self, request: pb.OpenDossierRequest, context: grpc.aio.ServicerContext
    ) -> pb.OpenDossierResponse:
        ins = validate_ins(request.ins)
        domain.require_consent(request.patient_consent)
        who = caller()
        # Who may open at all comes first, as for a patient without a DMP: nothing is said of
        # this INS (not even that a DMP exists) to whoever may not open one.
        raise_if_denied(await self._decide(ins, None, consent_pb2.ACTION_OPEN))
        try:
            found = await self.identity.LookupPatient(
                identity_pb2.LookupPatientRequest(ins=ins), **self._timeout()
            )
        except grpc.aio.AioRpcError as exc:
            err = error_from_rpc(exc)
            if err.grpc_code == grpc.StatusCode.NOT_FOUND:
                raise NotFound(
                    "no insured person has this INS", field="ins", slug="patient-not-found"
                ) from exc
            raise err from exc
        # Rule 1 again with what is now known: a DMP already open, the GP the insurer's
        # registry names.
        existing = await self.store.get_dossier(ins)
        raise_if_denied(
            await self._decide(
                ins, existing, consent_pb2.ACTION_OPEN, declared_gp=found.patient.declared_gp
            )
        )
        domain.check_vitale(request.vitale_serial, found.patient.vitale_serial)
        now = self.clock.now()
        opened = self.events.fact(
            "dossier.opened",
            ev.DossierOpened(
                opened_by=who.actor_id,
                opener_kind=who.kind,
                opener_profession=who.profession,
                legal_representatives=list(found.patient.legal_representatives),
            ),
            who,
            ins,
        )
        doc = {
            "_id": ins,
            "status": "open",
            "opened_by": who.actor_id,
            "opener_kind": who.kind,
            "opener_profession": who.profession,
            "opened_at": now,
            "consent_at": now,
            "legal_representatives": list(found.patient.legal_representatives),
            "accessed_by": [],
        }
        await self.store.insert_dossier(
            doc, opened, self.events.audit(who, ins, "create", query="dossier:open")
        )
        await self.store.record_opening(opened.id, who.actor_id, who.kind, who.profession, now)
        self.relay.kick(self.store.dossiers, ins)
        return pb.OpenDossierResponse(dossier=await self._dossier_message(doc, new=True))

    async def GetDossier(
        self, request: pb.GetDossierRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDossierResponse:
        ins = validate_ins(request.ins)
        who = caller()
        dossier, listed = await self.store.dossier_and_documents(ins, shared=True)
        mode = await self._allowed_read(who, ins, dossier)
        assert dossier is not None
        await self._trace(who, ins, "read", mode=mode, query="dossier")
        await self._first_access(who, ins, dossier)
        return pb.GetDossierResponse(dossier=await self._dossier_message(dossier, listed=listed))

    async def _lifecycle(
        self, ins: str, change: str, event_type: str, payload: Any, next_state: Any
    ) -> pb.Dossier:
        who = caller()
        dossier = await self.store.get_dossier(ins)
        raise_if_denied(await self._decide(ins, dossier, consent_pb2.ACTION_GOVERN))
        now = self.clock.now()

        def fields(doc: Document | None) -> Document:
            assert doc is not None
            return next_state(domain.Status(doc["status"]), now)  # type: ignore[no-any-return]

        updated = await self.store.change_dossier(
            ins,
            fields,
            self.events.fact(event_type, payload, who, ins),
            self.events.audit(who, ins, "update", query=f"dossier:{change}"),
        )
        if updated is None:
            raise NotFound("no DMP for this INS", field="ins", slug="dossier-not-found")
        self.relay.kick(self.store.dossiers, ins)
        return await self._dossier_message(updated)

    async def CloseDossier(
        self, request: pb.CloseDossierRequest, context: grpc.aio.ServicerContext
    ) -> pb.CloseDossierResponse:
        ins = validate_ins(request.ins)

        def closed(status: domain.Status, now: datetime) -> Document:
            state, purge_after = domain.after_close(status, now)
            return {"status": state.value, "closed_at": now, "purge_after": purge_after}

        return pb.CloseDossierResponse(
            dossier=await self._lifecycle(
                ins, "close", "dossier.closed", ev.DossierClosed(), closed
            )
        )

    async def ReopenDossier(
        self, request: pb.ReopenDossierRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReopenDossierResponse:
        ins = validate_ins(request.ins)

        def reopened(status: domain.Status, now: datetime) -> Document:
            return {
                "status": domain.after_reopen(status).value,
                "closed_at": None,
                "purge_after": None,
            }

        return pb.ReopenDossierResponse(
            dossier=await self._lifecycle(
                ins, "reopen", "dossier.reopened", ev.DossierReopened(), reopened
            )
        )

    async def RequestDeletion(
        self, request: pb.RequestDeletionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RequestDeletionResponse:
        ins = validate_ins(request.ins)
        purge: list[datetime] = []

        def requested(status: domain.Status, now: datetime) -> Document:
            state, purge_after = domain.after_deletion_request(status, now)
            purge.append(purge_after)
            return {"status": state.value, "closed_at": now, "purge_after": purge_after}

        dossier = await self._lifecycle(
            ins, "deletion_request", "dossier.deletion_requested", ev.DeletionRequested(), requested
        )
        return pb.RequestDeletionResponse(dossier=dossier, purge_before=timestamp(purge[-1]))

    async def GetDossierState(
        self, request: pb.GetDossierStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDossierStateResponse:
        """For consent's read-your-writes: a status lookup by a service, so not traced."""
        who = caller()
        who.require_kind("system")
        who.require_role(DOSSIER_STATE_READER)
        ins = validate_ins(request.ins)
        dossier = await self.store.get_dossier(ins)
        if dossier is None:
            raise NotFound("no dossier for this INS", field="ins", slug="dossier-not-found")
        return pb.GetDossierStateResponse(
            ins=ins,
            status=STATUS[dossier["status"]],
            legal_representatives=dossier.get("legal_representatives", []),
        )

    async def MarkConsentChange(
        self, request: pb.MarkConsentChangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.MarkConsentChangeResponse:
        """Consent's change of a dossier's consent begins or has ended (see `consent_epoch`):
        a service call, so not traced."""
        who = caller()
        who.require_kind("system")
        who.require_role(CONSENT_CHANGE_MARKER)
        ins = validate_ins(request.ins)
        if not CHANGE_ID.fullmatch(request.change_id):
            raise InvalidArgument("change_id is 32 hexadecimal digits", field="change_id")
        await self.store.mark_consent_change(ins, request.change_id, request.done, self.clock.now())
        return pb.MarkConsentChangeResponse()

    async def CountOpenings(
        self, request: pb.CountOpeningsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountOpeningsResponse:
        caller().require_role("admin")
        rows = await self.store.count_openings(request.opener_kind, request.profession)
        return pb.CountOpeningsResponse(
            counts=[
                pb.OpeningCount(
                    opener=r["_id"]["opener"],
                    opener_kind=r["_id"]["kind"],
                    profession=r["_id"].get("profession", ""),
                    count=int(r["count"]),
                )
                for r in rows
            ]
        )

    # documents ---------------------------------------------------------------------------

    async def AddDocument(
        self, request: pb.AddDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddDocumentResponse:
        ins = validate_ins(request.ins)
        who = caller()
        doc = self._new_document(who, ins, request, self.clock.now())

        async def admitted(dossier: Document | None) -> NewDocument:
            """Admitted on the dossier's record as given (its fields consent and the content
            key need): consent's decision, the content sealed."""
            item = await self._admit(who, dossier, doc, request)
            if dossier is None:  # consent admits nothing to a dossier that is not
                raise NotFound("no DMP for this INS", field="ins", slug="dossier-not-found")
            key = await self.store.data_key(ins, self._key_seal, dossier)
            item.content_sealed = seal(key, request.content, item.doc["_id"].encode())
            return item

        if request.replaces:  # to the listing of the version it replaces, read first
            item = await admitted(await self.store.get_dossier(ins))
            record = await self.store.insert_document(
                item.doc, item.content_sealed, *item.events, supersedes=item.supersedes
            )
        else:
            record = await self.store.add_document(ins, doc, admitted)
        self.relay.kick(self.store.listings, record)
        return pb.AddDocumentResponse(document=metadata({**doc, "chunks": 0}))

    async def AddDocuments(
        self, request: pb.AddDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddDocumentsResponse:
        """A submission: every document is checked (consent included) before any is written,
        then all are written in one update of one listing — unless they replace documents
        held in different listings, then one update per listing. A document whose unique id
        the dossier already holds from the same author with the same content is taken as
        written already (the submission retried); with other content or another author, the
        submission is refused."""
        ins = validate_ins(request.ins)
        who = caller()
        if not 1 <= len(request.documents) <= domain.MAX_SUBMISSION:
            raise InvalidArgument(
                f"a submission holds 1 to {domain.MAX_SUBMISSION} documents", field="documents"
            )
        given = request.submission
        submission_id = str(uuid7())
        now = self.clock.now()
        submission: Document = {
            "id": submission_id,
            "unique_id": domain.check_unique_id(given.unique_id, "submission.unique_id"),
            "source_id": domain.check_unique_id(given.source_id, "submission.source_id"),
            "content_type": domain.check_code(
                code_entry(given.content_type), "submission.content_type"
            ),
            "submitted_at": now,
            "title": domain.check_text(given.title, domain.MAX_TEXT, "submission.title"),
        }
        submission = {k: v for k, v in submission.items() if v}
        dossier, listed = await self.store.dossier_and_documents(ins)
        # A unique id is the submitter's: unique among its author's documents (a clash with
        # anyone else's would tell a writer what the dossier holds).
        held = {unique_id(d): d for d in listed if unique_id(d) and d["author"] == who.actor_id}
        # First every document's fields (no I/O), then consent and the versions they replace:
        # a submission is refused for its first fault before anything is asked or written.
        seen: set[str] = set()
        replaced: set[str] = set()
        planned: list[tuple[str, pb.AddDocumentRequest, Document]] = []
        for i, doc_request in enumerate(request.documents):
            where = f"documents[{i}]"
            if doc_request.ins and doc_request.ins != ins:
                raise InvalidArgument(
                    "every document is of the submission's patient", field=f"{where}.ins"
                )
            uid = doc_request.context.unique_id
            if uid and uid in seen:
                raise InvalidArgument(
                    "two documents with one unique id", field=f"{where}.context.unique_id"
                )
            seen.add(uid)
            if doc_request.replaces and doc_request.replaces in replaced:
                raise InvalidArgument(
                    "two documents replace the same one", field=f"{where}.replaces"
                )
            replaced.add(doc_request.replaces)
            same = held.get(uid) if uid else None
            try:
                doc = same or self._new_document(who, ins, doc_request, now, submission)
            except DmpError as refused:
                refused.field = f"{where}.{refused.field}" if refused.field else where
                raise
            planned.append((where, doc_request, doc))
        answer: list[Document] = []
        new: list[NewDocument] = []
        for where, doc_request, doc in planned:
            if doc is held.get(doc_request.context.unique_id):
                # already written (the submission retried): the same content
                raise_if_denied(await self._decide(ins, dossier, consent_pb2.ACTION_WRITE, doc))
                if doc["sha256"] != hashlib.sha256(doc_request.content).hexdigest():
                    raise Conflict(
                        "you already gave this unique id to another document of this dossier",
                        field=f"{where}.context.unique_id",
                        slug="duplicate-unique-id",
                    )
                answer.append(doc)
                continue
            try:
                item = await self._admit(who, dossier, doc, doc_request, listed)
            except DmpError as refused:
                refused.field = f"{where}.{refused.field}" if refused.field else where
                raise
            item.content_sealed = doc_request.content  # sealed below, once the key is known
            new.append(item)
            answer.append(doc)
        if new:
            key = await self.store.data_key(ins, self._key_seal, dossier)
            for item in new:
                item.content_sealed = seal(key, item.content_sealed, item.doc["_id"].encode())
            for record in await self.store.insert_documents(new):
                self.relay.kick(self.store.listings, record)
        else:
            submission = answer[0].get("submission", submission)
        return pb.AddDocumentsResponse(
            documents=[metadata({**d, "chunks": 0}) for d in answer],
            submission=submission_message(submission),
        )

    async def _directory_names(self, named: Document) -> None:
        """A professional named as author is one the directory knows, under the directory's
        names (not those the submitting software wrote)."""
        try:
            found = await self.identity.LookupProfessional(
                identity_pb2.LookupProfessionalRequest(rpps=named["rpps"]), **self._timeout()
            )
        except grpc.aio.AioRpcError as exc:
            err = error_from_rpc(exc)
            if err.grpc_code == grpc.StatusCode.NOT_FOUND:
                raise InvalidArgument(
                    "no professional in the directory has this RPPS",
                    field="context.author_person.rpps",
                    slug="invalid-rpps",
                ) from exc
            raise err from exc
        named["given"] = found.professional.given_name
        named["family"] = found.professional.family_name

    def _new_document(
        self,
        who: Principal,
        ins: str,
        request: pb.AddDocumentRequest,
        now: datetime,
        submission: Document | None = None,
    ) -> Document:
        """A new document's entry, its fields checked (no I/O)."""
        doc_type = self.catalogue.type(request.type_code)
        title = domain.check_title(request.title)
        mime = domain.check_mime_type(request.mime_type)
        domain.check_size(len(request.content), self.settings.max_document_bytes)
        doc_id = str(uuid7())
        author = who.actor_id
        doc: Document = {
            "_id": doc_id,
            "ins": ins,
            "type_code": doc_type.code,
            "section": doc_type.section,
            "title": title,
            "author": author,
            "author_kind": who.kind,
            "created_at": now,
            "service_start": (
                request.service_start.ToDatetime(tzinfo=now.tzinfo)
                if request.HasField("service_start")
                else None
            ),
            "mime_type": mime,
            "size": len(request.content),
            "sha256": hashlib.sha256(request.content).hexdigest(),
            "sha1": hashlib.sha1(request.content, usedforsecurity=False).hexdigest(),
            "labels": domain.initial_labels(
                request.hidden_from_patient,
                request.hidden_from_legal_representatives,
                author_is_patient=who.kind == "patient",
            ),
            "status": "approved",
            "reminded": False,
        }
        if request.HasField("context"):
            doc["context"] = context_entry(request.context, now)
            named = doc["context"].get("author_person")
            if named is not None:
                check_named_author(who, named)
        if submission:
            doc["submission"] = submission
        return doc

    async def _admit(
        self,
        who: Principal,
        dossier: Document | None,
        doc: Document,
        request: pb.AddDocumentRequest,
        listed: list[Document] | None = None,
    ) -> NewDocument:
        """A new document admitted: consent's decision, the version it replaces (found in
        `listed`, the dossier's documents, when the caller has read them), its events (its
        content still to seal)."""
        ins, doc_id, author = doc["ins"], doc["_id"], doc["author"]
        doc_type = self.catalogue.type(doc["type_code"])
        raise_if_denied(await self._decide(ins, dossier, consent_pb2.ACTION_WRITE, doc))
        named = (doc.get("context") or {}).get("author_person")
        if named:
            await self._directory_names(named)
        facts = [
            self.events.fact(
                "document.added",
                ev.DocumentAdded(
                    document_id=doc_id,
                    type_code=doc_type.code,
                    section=doc_type.section,
                    author=author,
                    hidden_from_patient=request.hidden_from_patient,
                    hidden_from_legal_representatives=(
                        domain.HIDDEN_FROM_REPRESENTATIVES in doc["labels"]
                    ),
                ),
                who,
                ins,
            )
        ]
        old = None
        if request.replaces:
            old = (
                find_document(listed, request.replaces)
                if listed is not None
                else await self.store.get_document(ins, request.replaces)
            )
            if old is None or old["status"] in ("deleted", "superseded"):
                raise NotFound("no current document to replace", field="replaces")
            if old["author"] != author:
                raise PermissionDenied(
                    "only the author replaces a document", field="replaces", slug="author-only"
                )
            if old["type_code"] != doc_type.code:
                raise InvalidArgument("a new version keeps the type_code", field="type_code")
            doc["replaces"] = old["_id"]
            if domain.MASKED in old.get("labels", []):
                doc["labels"].append(domain.MASKED)  # the patient's mask holds for every version
            facts.append(
                self.events.fact(
                    "document.replaced",
                    ev.DocumentReplaced(
                        document_id=doc_id, replaced_id=old["_id"], type_code=doc_type.code
                    ),
                    who,
                    ins,
                )
            )
        facts.append(self.events.audit(who, ins, "create", document_id=doc_id))
        return NewDocument(doc, b"", tuple(facts), old)

    async def _readable(
        self, ins: str, doc_id: str
    ) -> tuple[Principal, Document | None, Document, str, set[str]]:
        """The caller, the dossier, the document if the caller may read it, the access mode,
        and the linked versions the caller may read."""
        who = caller()
        dossier = await self.store.get_dossier(ins)
        listed = await self.store.documents_of(ins) if doc_id else []
        doc = find_document(listed, doc_id)
        if doc is None:
            if dossier is None:
                raise NotFound("no DMP for this INS", field="ins", slug="dossier-not-found")
            raise NotFound("no such document", field="document_id", slug="document-not-found")
        mode = await self._allowed_read(who, ins, dossier, doc)
        links = await self._readable_links(ins, dossier, [doc], listed)
        return who, dossier, doc, mode, links

    async def GetDocument(
        self, request: pb.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDocumentResponse:
        ins = validate_ins(request.ins)
        who, dossier, doc, mode, links = await self._readable(ins, request.document_id)
        await self._trace(who, ins, "read", mode=mode, document_id=doc["_id"], query="metadata")
        await self._first_access(who, ins, dossier)
        return pb.GetDocumentResponse(document=metadata(doc, links))

    async def GetDocumentContent(
        self, request: pb.GetDocumentContentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDocumentContentResponse:
        ins = validate_ins(request.ins)
        who, dossier, doc, mode, links = await self._readable(ins, request.document_id)
        key = await self.store.data_key(ins, self._key_seal, dossier)
        content = unseal(key, await self.store.read_content(doc), doc["_id"].encode())
        if hashlib.sha256(content).hexdigest() != doc["sha256"]:
            raise AssertionError("stored content does not match its hash")
        await self._trace(who, ins, "read", mode=mode, document_id=doc["_id"], query="content")
        await self._first_access(who, ins, dossier)
        return pb.GetDocumentContentResponse(document=metadata(doc, links), content=content)

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDocumentsResponse:
        ins = validate_ins(request.ins)
        who = caller()
        limit = self._page_size(request.page_size)
        query = self._query(request)
        after = domain.decode_cursor(request.cursor) if request.cursor else None
        # The dossier's record and listing, one read, newest first; then consent filters the
        # matching documents batch after batch until the page is full. The first batch is sized
        # for a caller who may read the whole page (one more says whether there is a next). The
        # cursor names the last document returned: never one the caller may not read.
        dossier, listed = await self.store.dossier_and_documents(ins, shared=True)
        if dossier is None:
            raise NotFound("no DMP for this INS", field="ins", slug="dossier-not-found")
        matching = [
            d
            for d in listed
            if (after is None or (d["created_at"], d["_id"]) < after) and domain.matches(d, query)
        ]
        mode = consent_pb2.ACCESS_MODE_NORMAL

        async def readable(found: list[Document]) -> dict[str, bool]:
            nonlocal mode
            ids, mode = await self._readable_ids(ins, dossier, found)
            return dict.fromkeys(ids, True)

        kept, more = await _page(matching, limit, readable)
        page = [d for d, _ in kept]
        next_cursor = domain.encode_cursor(page[-1]["created_at"], page[-1]["_id"]) if more else ""
        if not page and not request.cursor:
            await self._allowed_read(who, ins, dossier)  # a refusal says why
        await self._trace(
            who,
            ins,
            "search",
            mode=MODE_NAME.get(mode, "normal"),
            query=f"list:{request.section}:{request.type_code}" + searched(request.query),
        )
        if page:
            await self._first_access(who, ins, dossier)
        pending = 0
        if who.kind == "patient" and (
            who.ins == ins or who.ins in dossier.get("legal_representatives", [])
        ):
            pending = hidden_from_patient(listed)
        links = await self._readable_links(ins, dossier, page, listed)
        return pb.ListDocumentsResponse(
            # (the documents as decoded for every request: their messages made once)
            items=[self._listed.get(d, links) for d in page],
            next=next_cursor,
            pending=pending,
        )

    def _page_size(self, asked: int) -> int:
        limit = asked or self.settings.page_size
        if not 1 <= limit <= self.settings.max_page_size:
            raise InvalidArgument(
                f"page_size is 1 to {self.settings.max_page_size}", field="page_size"
            )
        return limit

    def _query(self, request: pb.ListDocumentsRequest) -> domain.Query:
        """The list's conditions, checked: its own fields and the search's."""
        q = request.query
        tz = self.clock.now().tzinfo

        def when(ts: Any, present: bool) -> datetime | None:
            return ts.ToDatetime(tzinfo=tz) if present else None

        def codes(values: Any) -> tuple[tuple[str, str], ...]:
            return tuple((c.system, c.code) for c in values)

        sections = {self.catalogue.section(s) for s in q.sections}
        if request.section:
            sections.add(self.catalogue.section(request.section))
        type_codes = {self.catalogue.type(t).code for t in q.type_codes}
        if request.type_code:
            type_codes.add(self.catalogue.type(request.type_code).code)
        statuses = {DOC_STATUS_NAME[s] for s in q.statuses if s in DOC_STATUS_NAME}
        if request.status:
            statuses.add(DOC_STATUS_NAME[request.status])
        created_from = when(q.created_from, q.HasField("created_from"))
        since = when(request.since, request.HasField("since"))
        if since and (created_from is None or since > created_from):
            created_from = since
        return domain.Query(
            type_codes=frozenset(type_codes),
            sections=frozenset(sections),
            statuses=frozenset(statuses or CURRENT),
            created_from=created_from,
            created_before=when(q.created_before, q.HasField("created_before")),
            period_from=when(q.period_from, q.HasField("period_from")),
            period_before=when(q.period_before, q.HasField("period_before")),
            author_given=tuple(q.author_given),
            author_family=tuple(q.author_family),
            practice_settings=codes(q.practice_settings),
            facility_types=codes(q.facility_types),
            events=codes(q.events),
            formats=codes(q.formats),
            labels=frozenset(q.labels),
            identifiers=frozenset(q.identifiers),
            related=frozenset(q.related),
            submission_sets=frozenset(q.submission_sets),
            mime_types=frozenset(q.mime_types),
            authors=frozenset(q.authors),
        )

    async def ReadableDocuments(
        self, request: pb.ReadableDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReadableDocumentsResponse:
        """Not a read of any document, so not traced: it tells no more than a read would
        (an unknown id and one the caller may not read look the same)."""
        ins = validate_ins(request.ins)
        caller()
        ids = sorted(set(request.document_ids))
        if len(ids) > FILTER_BATCH:
            raise InvalidArgument(f"at most {FILTER_BATCH} document ids", field="document_ids")
        dossier = await self.store.get_dossier(ins)
        wanted = set(ids)
        docs = (
            [d for d in await self.store.documents_of(ins) if d["_id"] in wanted]
            if ids and dossier
            else []
        )
        readable, _ = await self._readable_ids(ins, dossier, docs)
        return pb.ReadableDocumentsResponse(document_ids=sorted(readable))

    async def PreviewDocuments(
        self, request: pb.PreviewDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewDocumentsResponse:
        """The listing a bare `ListDocuments` gives, as consent says the viewer would get it
        today: the same documents, each with its verdict. Traced as the caller's search (the
        patient's or a representative's), never as the viewer's access."""
        ins = validate_ins(request.ins)
        who = caller()
        limit = self._page_size(request.page_size)
        after = domain.decode_cursor(request.cursor) if request.cursor else None
        dossier = await self.store.get_dossier(ins)
        if dossier is None:
            raise NotFound("no DMP for this INS", field="ins", slug="dossier-not-found")
        listed = await self.store.documents_of(ins)
        current = [d for d in listed if domain.matches(d, LISTING)]
        answer = pb.PreviewDocumentsResponse()
        if after is None:
            # What awaits its announcement is told as two counts only, on the first page.
            pending = [d for d in current if set(d.get("labels", [])) & set(domain.HIDING_LABELS)]
            verdicts = await self._previewed(ins, dossier, request.viewer, pending)
            answer.viewer.CopyFrom(verdicts.viewer)
            answer.pending_visible = verdicts.withheld_visible
            answer.pending_hidden = verdicts.withheld_hidden
        matching = [d for d in current if after is None or (d["created_at"], d["_id"]) < after]

        async def judged(found: list[Document]) -> dict[str, consent_pb2.Verdict]:
            verdicts = await self._previewed(ins, dossier, request.viewer, found)
            answer.viewer.CopyFrom(verdicts.viewer)
            return {v.document_id: v.verdict for v in verdicts.verdicts}

        page, more = await _page(matching, limit, judged)
        if not answer.HasField("viewer"):  # an empty dossier: consent still says who it is
            answer.viewer.CopyFrom((await self._previewed(ins, dossier, request.viewer, [])).viewer)
        await self._trace(
            who, ins, "search", query=f"preview:{request.viewer.WhichOneof('viewer')}"
        )
        links = await self._readable_links(ins, dossier, [d for d, _ in page], listed)
        answer.documents.extend(
            pb.PreviewedDocument(document=metadata(d, links), verdict=v) for d, v in page
        )
        if more:
            answer.next = domain.encode_cursor(page[-1][0]["created_at"], page[-1][0]["_id"])
        return answer

    async def _previewed(
        self,
        ins: str,
        dossier: Document,
        viewer: consent_pb2.ViewerRef,
        docs: list[Document],
    ) -> consent_pb2.PreviewDocumentsResponse:
        try:
            answer: consent_pb2.PreviewDocumentsResponse = await self.consent.PreviewDocuments(
                consent_pb2.PreviewDocumentsRequest(
                    ins=ins,
                    dossier=self._context(dossier),
                    viewer=viewer,
                    documents=[_ref(d) for d in docs],
                ),
                **self._timeout(),
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        return answer

    async def UpdateDocument(
        self, request: pb.UpdateDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateDocumentResponse:
        ins = validate_ins(request.ins)
        who = caller()
        dossier = await self.store.get_dossier(ins)
        listed = await self.store.documents_of(ins)
        doc = find_document(listed, request.document_id)
        if doc is None or doc["status"] in ("deleted", "superseded"):
            raise NotFound("no such document", field="document_id", slug="document-not-found")
        # Refused as a read of it would be: nothing of a document reaches who may not read it.
        await self._allowed_read(who, ins, dossier, doc)
        is_author = doc["author"] == who.actor_id
        if is_author:
            # The author acts as a writer of the dossier: blocked (rule 5) or a closed
            # dossier (rule 13) refuses them like a new document would be.
            raise_if_denied(await self._decide(ins, dossier, consent_pb2.ACTION_WRITE, doc))
        manage = await self._decide(ins, dossier, consent_pb2.ACTION_MANAGE)
        if request.HasField("hidden_from_trusted_persons"):
            # The patient's own choice about the people they trust: never a trusted person's.
            manage = await self._decide(ins, dossier, consent_pb2.ACTION_GOVERN)
            raise_if_denied(manage)
        if dossier is None or dossier["status"] != "open":
            raise_if_denied(
                manage
                if not manage.allowed
                else consent_pb2.DecideResponse(allowed=False, reason="dossier_closed")
            )
        change = domain.VisibilityChange(
            masked_from_professionals=(
                request.masked_from_professionals
                if request.HasField("masked_from_professionals")
                else None
            ),
            hidden_from_trusted_persons=(
                request.hidden_from_trusted_persons
                if request.HasField("hidden_from_trusted_persons")
                else None
            ),
            hidden_from_patient=(
                request.hidden_from_patient if request.HasField("hidden_from_patient") else None
            ),
            hidden_from_legal_representatives=(
                request.hidden_from_legal_representatives
                if request.HasField("hidden_from_legal_representatives")
                else None
            ),
        )
        status = DOC_STATUS_NAME.get(request.status, "")
        if status and status not in ("archived", "approved"):
            raise InvalidArgument("status may only become archived or approved", field="status")
        if status and not (is_author or manage.allowed):
            raise PermissionDenied("only the author or the patient archives", slug="access-denied")
        if not (is_author or manage.allowed):
            raise_if_denied(manage)
        facts = []

        def fields(current: Document | None) -> Document:
            assert current is not None
            labels = domain.apply_visibility(
                current.get("labels", []), change, is_patient=manage.allowed, is_author=is_author
            )
            new: Document = {"labels": labels}
            if status:
                new["status"] = status
            return new

        if change != domain.VisibilityChange():
            facts.append("visibility")
        if status:
            facts.append("status")
        if not facts:
            raise InvalidArgument("nothing to change", field="body")
        preview = fields(doc)
        events = []
        if "visibility" in facts:
            events.append(
                self.events.fact(
                    "document.visibility_changed",
                    ev.DocumentVisibilityChanged(
                        document_id=doc["_id"], confidentiality=preview["labels"]
                    ),
                    who,
                    ins,
                )
            )
        if "status" in facts:
            events.append(
                self.events.fact(
                    "document.status_changed",
                    ev.DocumentStatusChanged(document_id=doc["_id"], status=status),
                    who,
                    ins,
                )
            )
        updated = await self.store.change_document_record(
            doc,
            fields,
            *events,
            self.events.audit(who, ins, "update", document_id=doc["_id"]),
        )
        if updated is None:  # purged meanwhile
            raise NotFound("no such document", field="document_id", slug="document-not-found")
        self.relay.kick(self.store.listings, listing_id(ins, doc["listing"]))
        links = await self._readable_links(ins, dossier, [updated], listed)
        return pb.UpdateDocumentResponse(document=metadata(updated, links))

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentResponse:
        ins = validate_ins(request.ins)
        who = caller()
        dossier = await self.store.get_dossier(ins)
        doc = await self.store.get_document(ins, request.document_id)
        if doc is None or doc["status"] == "deleted":
            raise NotFound("no such document", field="document_id", slug="document-not-found")
        await self._allowed_read(who, ins, dossier, doc)
        if doc["author"] != who.actor_id:
            raise PermissionDenied("only the author deletes a document", slug="author-only")
        # Blocked (rule 5) or a closed dossier (rule 13): refused like a new document.
        raise_if_denied(await self._decide(ins, dossier, consent_pb2.ACTION_WRITE, doc))
        await self.store.change_document_record(
            doc,
            lambda _: {"status": "deleted"},
            self.events.fact(
                "document.status_changed",
                ev.DocumentStatusChanged(document_id=doc["_id"], status="deleted"),
                who,
                ins,
            ),
            self.events.audit(who, ins, "delete", document_id=doc["_id"]),
        )
        self.relay.kick(self.store.listings, listing_id(ins, doc["listing"]))
        return pb.DeleteDocumentResponse()

    # profile, emergency contacts, advance directives ----------------------------------------

    async def _record_read(self, ins: str, what: str) -> Document:
        """A record is read like a document of the type it counts as (matrix, rule 5)."""
        who = caller()
        dossier = await self.store.get_dossier(ins)
        mode = await self._allowed_read(who, ins, dossier, self._record_ref(what))
        assert dossier is not None
        await self._trace(who, ins, "read", mode=mode, query=what)
        await self._first_access(who, ins, dossier)
        return dossier

    async def _record_write(
        self, ins: str, what: str, fields: Change, patient_only: bool
    ) -> Document:
        """The patient writes these; a member of the care team may also keep the medical
        profile, if the matrix lets their profession read it and they are not blocked."""
        who = await self._may_write_record(ins, what, patient_only)
        updated = await self.store.change_dossier(
            ins,
            fields,
            self.events.fact("dossier.record_updated", ev.RecordUpdated(record=what), who, ins),
            self.events.audit(who, ins, "update", query=what),
        )
        if updated is None:
            raise NotFound("no DMP for this INS", field="ins", slug="dossier-not-found")
        self.relay.kick(self.store.dossiers, ins)
        return updated

    async def _may_write_record(self, ins: str, what: str, patient_only: bool) -> Principal:
        """Who may write the record `what` (see _record_write); returns the caller."""
        who = caller()
        dossier = await self.store.get_dossier(ins)
        manage = await self._decide(ins, dossier, consent_pb2.ACTION_MANAGE)
        if not manage.allowed:
            read = (
                None
                if patient_only
                else await self._decide(
                    ins, dossier, consent_pb2.ACTION_READ, self._record_ref(what)
                )
            )
            if read is None or not read.allowed or read.mode != consent_pb2.ACCESS_MODE_NORMAL:
                raise_if_denied(manage if read is None or read.allowed else read)
        elif dossier is not None and dossier["status"] != "open":
            # Rule 13: a closed dossier changes only by the patient reopening it.
            raise_if_denied(consent_pb2.DecideResponse(allowed=False, reason="dossier_closed"))
        if dossier is None:
            raise NotFound("no DMP for this INS", field="ins", slug="dossier-not-found")
        return who

    async def GetProfile(
        self, request: pb.GetProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProfileResponse:
        dossier = await self._record_read(validate_ins(request.ins), "profile")
        return pb.GetProfileResponse(profile=_profile(dossier.get("profile")))

    async def PutProfile(
        self, request: pb.PutProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutProfileResponse:
        ins = validate_ins(request.ins)
        p = request.profile
        now = self.clock.now()
        measurements = [
            domain.check_measurement(
                domain.Measurement(
                    m.kind, m.value, m.unit, m.measured_at.ToDatetime(tzinfo=now.tzinfo)
                ),
                i,
                now,
            )
            for i, m in enumerate(p.measurements)
        ]
        if len(measurements) > domain.MAX_ITEMS * 10:
            raise InvalidArgument("too many measurements", field="measurements")
        profile = {
            "allergies": domain.check_entries(list(p.allergies), "allergies"),
            "history": domain.check_entries(list(p.history), "history"),
            "chronic_conditions": domain.check_entries(
                list(p.chronic_conditions), "chronic_conditions"
            ),
            "ongoing_treatments": domain.check_entries(
                list(p.ongoing_treatments), "ongoing_treatments"
            ),
            "measurements": [
                {"kind": m.kind, "value": m.value, "unit": m.unit, "measured_at": m.measured_at}
                for m in measurements
            ],
            "updated_at": now,
        }
        dossier = await self._record_write(
            ins, "profile", lambda _: {"profile": profile}, patient_only=False
        )
        return pb.PutProfileResponse(profile=_profile(dossier.get("profile")))

    async def GetEmergencyContacts(
        self, request: pb.GetEmergencyContactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEmergencyContactsResponse:
        dossier = await self._record_read(validate_ins(request.ins), "emergency_contacts")
        return pb.GetEmergencyContactsResponse(contacts=_contacts(dossier))

    async def PutEmergencyContacts(
        self, request: pb.PutEmergencyContactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutEmergencyContactsResponse:
        ins = validate_ins(request.ins)
        if len(request.contacts) > 10:
            raise InvalidArgument("at most 10 emergency contacts", field="contacts")
        for i, c in enumerate(request.contacts):
            domain.check_contact(c.name, c.phone, c.email, i)
        contacts = [
            {
                "name": c.name.strip(),
                "relationship": c.relationship.strip()[:50],
                "phone": c.phone.strip(),
                "email": c.email.strip(),
            }
            for c in request.contacts
        ]
        dossier = await self._record_write(
            ins, "emergency_contacts", lambda _: {"emergency_contacts": contacts}, patient_only=True
        )
        return pb.PutEmergencyContactsResponse(contacts=_contacts(dossier))

    async def GetAdvanceDirectives(
        self, request: pb.GetAdvanceDirectivesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAdvanceDirectivesResponse:
        dossier = await self._record_read(validate_ins(request.ins), "advance_directives")
        return pb.GetAdvanceDirectivesResponse(directives=_directives(dossier))

    async def PutAdvanceDirectives(
        self, request: pb.PutAdvanceDirectivesRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutAdvanceDirectivesResponse:
        ins = validate_ins(request.ins)
        text = domain.check_directives(request.text)
        now = self.clock.now()

        def fields(current: Document | None) -> Document:
            previous = (current or {}).get("directives")
            history = (current or {}).get("directives_history", [])
            version = (previous or {}).get("version", 0) + 1
            return {
                "directives": {"text": text, "version": version, "updated_at": now},
                # One current version; the ones it replaced are kept.
                "directives_history": [*history, previous] if previous else history,
            }

        dossier = await self._record_write(ins, "advance_directives", fields, patient_only=True)
        return pb.PutAdvanceDirectivesResponse(directives=_directives(dossier))

    # health measurements ---------------------------------------------------------------------

    async def ListMeasurements(
        self, request: pb.ListMeasurementsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMeasurementsResponse:
        ins = validate_ins(request.ins)
        kind = request.kind
        known = [*domain.MEASUREMENT_KINDS, domain.BMI.name]
        if kind and kind not in known:
            raise InvalidArgument(f"kind is one of {', '.join(known)}", field="kind")
        await self._record_read(ins, "measurements")
        wanted = [kind] if kind else list(domain.MEASUREMENT_KINDS)
        if domain.BMI.name in wanted:
            wanted = [k for k in wanted if k != domain.BMI.name]
            wanted += [k for k in ("weight", "height") if k not in wanted]
        series = await self.store.measurement_series(ins, wanted)
        points = [p for k, found in series.items() if not kind or k == kind for p in found]
        if kind in ("", domain.BMI.name):
            points += domain.bmi_points(series["weight"], series["height"])
        utc = self.clock.now().tzinfo
        since = (
            request.measured_from.ToDatetime(tzinfo=utc)
            if request.HasField("measured_from")
            else None
        )
        until = (
            request.measured_to.ToDatetime(tzinfo=utc) if request.HasField("measured_to") else None
        )
        return pb.ListMeasurementsResponse(
            measurements=[_measurement(p) for p in domain.measurement_window(points, since, until)]
        )

    async def AddMeasurement(
        self, request: pb.AddMeasurementRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddMeasurementResponse:
        ins = validate_ins(request.ins)
        now = self.clock.now()
        if not request.HasField("measured_at"):
            raise InvalidArgument("measured_at is required", field="measured_at")
        point = domain.check_new_measurement(
            domain.NewMeasurement(
                kind=request.kind,
                unit=request.unit,
                measured_at=request.measured_at.ToDatetime(tzinfo=now.tzinfo),
                value=request.value,
                systolic=request.systolic,
                diastolic=request.diastolic,
                note=request.note,
            ),
            now,
        )
        who = await self._may_write_record(ins, "measurements", patient_only=False)
        point |= {
            "id": str(uuid7()),
            "source": _measurement_source(who),
            "author": who.actor_id,
            "recorded_at": now,
        }
        if who.app:
            point["app"] = who.app  # the connected app that sent it (source "device")

        def added(current: Document | None) -> Document:
            points = (current or {}).get("points", [])
            if len(points) >= domain.MAX_POINTS:
                raise Conflict(
                    f"a series holds at most {domain.MAX_POINTS} measurements",
                    field="kind",
                    slug="series-full",
                )
            return {"ins": ins, "points": [*points, point]}

        await self._write_series(ins, point["kind"], added, who, "create")
        return pb.AddMeasurementResponse(measurement=_measurement(point))

    async def DeleteMeasurement(
        self, request: pb.DeleteMeasurementRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteMeasurementResponse:
        ins = validate_ins(request.ins)
        wanted = request.measurement_id
        who = await self._may_write_record(ins, "measurements", patient_only=False)
        series = await self.store.measurement_series(ins, list(domain.MEASUREMENT_KINDS))
        found = next(
            ((k, p) for k, points in series.items() for p in points if p["id"] == wanted), None
        )
        if found is None:
            raise NotFound(
                "no such measurement in this dossier",
                field="measurement_id",
                slug="measurement-not-found",
            )
        kind, point = found
        if point["author"] != who.actor_id or (who.app and point.get("app") != who.app):
            raise PermissionDenied(
                "only its author deletes a measurement",
                field="measurement_id",
                slug="not-your-measurement",
            )

        def removed(current: Document | None) -> Document | None:
            points = (current or {}).get("points", [])
            kept = [p for p in points if p["id"] != wanted]
            return None if len(kept) == len(points) else {"ins": ins, "points": kept}

        await self._write_series(ins, kind, removed, who, "delete")
        return pb.DeleteMeasurementResponse()

    async def _write_series(
        self, ins: str, kind: str, change: Change, who: Principal, action: str
    ) -> None:
        """A change of one series, with its event (no value in it) and its trace."""
        await self.store.change_series(
            ins,
            kind,
            change,
            self.events.fact(
                "dossier.record_updated", ev.RecordUpdated(record="measurements"), who, ins
            ),
            self.events.audit(who, ins, action, query=f"measurements:{kind}"),
        )
        self.relay.kick(self.store.measurements, series_id(ins, kind))

    # exports of one's data ------------------------------------------------------------------

    def _exporter(self) -> Principal:
        """Exports are the patient's own, for themselves only."""
        who = caller()
        if who.kind != "patient" or not who.ins:
            raise PermissionDenied(
                "only a patient exports their data, for themselves", slug="patient-only"
            )
        return who

    async def _own_export(self, export_id: str) -> Document:
        """The caller's export; anyone else's, or none, is not found (nor told of)."""
        who = self._exporter()
        doc = await self.store.get_export(export_id) if export_id and len(export_id) <= 64 else None
        if doc is None or doc["ins"] != who.ins:
            raise NotFound("no such export", field="id", slug="export-not-found")
        return doc

    async def CreateExport(
        self, request: pb.CreateExportRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateExportResponse:
        """What goes in is decided now, by consent and identity, for the patient's own token:
        the documents they may read (those hidden from them until an announcement are only
        counted), their identity as they see it. The build comes later, in the background."""
        who = self._exporter()
        ins = who.ins
        now = self.clock.now()
        dossier = await self.store.get_dossier(ins)
        if dossier is None:
            raise NotFound("no DMP for this INS", field="ins", slug="dossier-not-found")
        await self._allowed_read(who, ins, dossier)
        recent = [
            e for e in await self.store.exports_of(ins) if e["created_at"] > now - timedelta(days=1)
        ]
        if any(e["status"] in ("pending", "running") for e in recent):
            raise Conflict("an export of this dossier is under way", slug="export-running")
        if len(recent) >= self.settings.exports_per_day:
            raise RateLimited(
                f"at most {self.settings.exports_per_day} exports a day",
                slug="export-rate-limited",
            )
        listed = await self.store.documents_of(ins)
        readable: set[str] = set()
        for start in range(0, len(listed), FILTER_BATCH):
            batch = listed[start : start + FILTER_BATCH]
            readable |= (await self._readable_ids(ins, dossier, batch))[0]
        try:
            found = await self.identity.LookupPatient(
                identity_pb2.LookupPatientRequest(ins=ins), **self._timeout()
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        person = found.patient
        identity = {
            "ins": person.ins,
            "given_name": person.given_name,
            "family_name": person.family_name,
            "birth_date": person.birth_date or None,
            "email": person.email or None,
            "phone": person.phone or None,
        }
        export_id = str(uuid7())
        key = await self.store.data_key(ins, self._key_seal, dossier)
        doc: Document = {
            "_id": export_id,
            "ins": ins,
            "status": "pending",
            "progress": 0,
            "created_at": now,
            "opened_at": dossier["opened_at"],
            "attempt": 0,
            "pending": hidden_from_patient(listed),
            "documents": [d["_id"] for d in current_documents(listed) if d["_id"] in readable],
            "readable": sorted(readable),
            "identity": seal(key, json.dumps(identity).encode(), f"{export_id}:identity".encode()),
        }
        if not await self.store.take_export_slot(ins, export_id):
            raise Conflict("an export of this dossier is under way", slug="export-running")
        await self.store.insert_export(doc, self.events.audit(who, ins, "execute", query="export"))
        self.relay.kick(self.store.exports, export_id)
        self.exports_asked()
        return pb.CreateExportResponse(export=_export(doc))

    async def ListExports(
        self, request: pb.ListExportsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExportsResponse:
        who = self._exporter()
        return pb.ListExportsResponse(
            items=[_export(e) for e in await self.store.exports_of(who.ins)]
        )

    async def GetExport(
        self, request: pb.GetExportRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetExportResponse:
        return pb.GetExportResponse(export=_export(await self._own_export(request.id)))

    async def GetExportContent(
        self, request: pb.GetExportContentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetExportContentResponse:
        """A part of a ready archive; the first part's read is traced (fail closed) as the
        download."""
        doc = await self._own_export(request.id)
        if doc["status"] == "expired":
            raise NotFound(
                "this export's archive was deleted after its keeping time",
                field="id",
                slug="export-expired",
            )
        if doc["status"] != "ready":
            raise Conflict("this export is not ready", field="id", slug="export-not-ready")
        if not 0 <= request.part < int(doc["parts"]):
            raise InvalidArgument(f"part is 0 to {int(doc['parts']) - 1}", field="part")
        dossier = await self.store.get_dossier(doc["ins"])
        sealed = await self.store.export_part(doc["_id"], int(doc["attempt"]), request.part)
        if dossier is None or sealed is None:
            raise NotFound("no such export", field="id", slug="export-not-found")
        key = await self.store.data_key(doc["ins"], self._key_seal, dossier)
        aad = f"{doc['_id']}:{doc['attempt']}:{request.part}".encode()
        content = unseal(key, sealed, aad)
        if request.part == 0:
            await self._trace(caller(), doc["ins"], "read", query="export")
        return pb.GetExportContentResponse(export=_export(doc), content=content)


def _measurement(point: Document) -> pb.HealthMeasurement:
    return pb.HealthMeasurement(
        id=point["id"],
        kind=point["kind"],
        value=point.get("value", 0.0),
        systolic=point.get("systolic", 0.0),
        diastolic=point.get("diastolic", 0.0),
        unit=point["unit"],
        measured_at=timestamp(point["measured_at"]),
        source=point["source"],
        author=point.get("author", ""),
        note=point.get("note", ""),
        recorded_at=timestamp(point["recorded_at"]),
        computed=point.get("computed", False),
    )


def _measurement_source(who: Principal) -> str:
    """Where a measurement comes from, by who writes it: the patient (or who acts for them),
    a professional, or an app the patient connected ("device")."""
    if who.app:
        return "device"
    return "professional" if who.kind == "professional" else "patient"


def _export(doc: Document) -> pb.Export:
    return pb.Export(
        id=doc["_id"],
        status=EXPORT_STATUS[doc["status"]],
        progress=int(doc.get("progress", 0)),
        created_at=timestamp(doc["created_at"]),
        ready_at=timestamp(doc.get("ready_at")),
        expires_at=timestamp(doc.get("expires_at")),
        size=int(doc.get("size") or 0),
        parts=int(doc.get("parts") or 0),
    )


def _profile(p: Document | None) -> pb.Profile:
    p = p or {}
    return pb.Profile(
        allergies=p.get("allergies", []),
        history=p.get("history", []),
        chronic_conditions=p.get("chronic_conditions", []),
        ongoing_treatments=p.get("ongoing_treatments", []),
        measurements=[
            pb.Measurement(
                kind=m["kind"],
                value=m["value"],
                unit=m["unit"],
                measured_at=timestamp(m["measured_at"]),
            )
            for m in p.get("measurements", [])
        ],
        updated_at=timestamp(p.get("updated_at")),
    )


def _contacts(dossier: Document) -> list[pb.EmergencyContact]:
    return [pb.EmergencyContact(**c) for c in dossier.get("emergency_contacts", [])]


def _directives(dossier: Document) -> pb.AdvanceDirectives | None:
    d = dossier.get("directives")
    if not d:
        return None
    return pb.AdvanceDirectives(
        text=d["text"], version=d["version"], updated_at=timestamp(d["updated_at"])
    )

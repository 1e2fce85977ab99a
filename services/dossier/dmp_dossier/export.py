"""A patient's export of their data: a ZIP of their documents, profile, messages and access log,
built in the background, sealed under their content key, kept a few days.

What goes in is decided when the patient asks, with their own token: consent says which
documents they may read, identity gives their identity as they see it. The build runs later
(the token has expired by then): it reads the dossier's own records, and the patient's
messages and access log with this service's own account (role export_reader), which messaging
and audit answer as the patient would read them. One replica builds an export at a time: it
claims it with a lease (the version guard), and a build whose lease ran out is taken up again
by another, up to a few attempts, then marked failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import re
import unicodedata
import zipfile
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from pymongo.errors import PyMongoError
from uuid6 import uuid7

from dmp.audit.v1 import audit_pb2, audit_pb2_grpc
from dmp.messaging.v1 import messaging_pb2, messaging_pb2_grpc
from dmp_dossier import domain
from dmp_dossier.config import DossierSettings
from dmp_dossier.store import CURRENT, DossierStore
from dmp_kit.clock import Clock
from dmp_kit.crypto import derive_key, seal, unseal
from dmp_kit.errors import DmpError
from dmp_kit.logging import get_logger
from dmp_kit.mongo import Document
from dmp_kit.rpc.client import call_options
from dmp_kit.service_auth import ServiceTokens

log = get_logger(__name__)

PART_BYTES = 2 * 1024 * 1024  # the archive is stored and read in parts of this size
WRITE_SLICE = 1024 * 1024  # a document is written into the archive a slice at a time
TITLE_CHARS = 60
PAGE = 100
# Progress (0-100) after each stage: identity and records, then documents n/N, messages,
# access log, and the archive sealed.
AFTER_RECORDS, AFTER_DOCUMENTS, AFTER_MESSAGES, AFTER_LOG = 5, 85, 92, 98
# How long a build waits for audit to record the request it answers, polling.
TRAIL_WAIT_SECONDS, TRAIL_POLL_SECONDS = 10.0, 0.2
UNSAFE = re.compile(r'[/\\:*?"<>|]+')
DOTS = re.compile(r"\.{2,}")
SPACES = re.compile(r"\s+")
EXTENSIONS = {
    "application/pdf": "pdf",
    "text/plain": "txt",
    "image/jpeg": "jpg",
    "image/png": "png",
    "application/json": "json",
    "application/fhir+json": "json",
    "application/xml": "xml",
    "text/xml": "xml",
    "application/hl7-v3+xml": "xml",
}

README = """\
Mon espace santé — vos données
==============================

Cette archive contient les données de votre espace santé, telles que vous pouvez les
consulter, à la date du {date}.

LISEZMOI.txt
    Ce fichier.

profil.json
    Votre identité (nom, prénom, date de naissance, adresse électronique, téléphone),
    votre profil médical (allergies, antécédents, maladies chroniques, traitements en
    cours, mesures), vos contacts d'urgence et vos directives anticipées.

constantes.json
    Vos mesures (poids, taille, tension, fréquence cardiaque, glycémie, tour de taille),
    avec leur unité, leur date et leur source, et l'IMC calculé à partir du poids et de
    la taille.

documents/index.json
    La description de chacun de vos documents : type, rubrique, titre, auteur, date,
    format, taille, empreinte SHA-256, et le fichier qui le contient dans l'archive.
    « pending » compte les documents qu'un professionnel vous présentera lors d'une
    consultation d'annonce : ils ne figurent pas dans l'archive.

documents/<rubrique>/
    Le contenu de chaque document, rangé par rubrique ; le nom du fichier commence
    par la date du document, suivie de son titre.

messages.json
    Vos conversations avec les professionnels de santé et leurs messages ; pour chaque
    pièce jointe, son nom, son format et sa taille.

journal-des-acces.json
    Le journal des accès à votre dossier : qui a fait quoi, quand et comment. Une ligne
    « withheld » concerne un document qui ne vous a pas encore été présenté.

Ces données sont personnelles et confidentielles : conservez cette archive en lieu sûr.
"""


# pure parts ----------------------------------------------------------------------------------


def safe_title(title: str) -> str:
    """A document's title as a file name's part: accents kept; no path separator, no
    character a file system refuses, no control character, no leading dot; bounded."""
    text = unicodedata.normalize("NFC", title)
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    text = DOTS.sub(".", UNSAFE.sub("_", text))
    text = SPACES.sub(" ", text).strip(" ._-")
    text = text[:TITLE_CHARS].rstrip(" ._-")
    return text or "document"


def extension(mime_type: str) -> str:
    known = EXTENSIONS.get(mime_type.split(";")[0].strip().lower())
    if known:
        return known
    guessed = mimetypes.guess_extension(mime_type) or ".bin"
    return guessed.lstrip(".")


def document_path(doc: Document) -> str:
    """Where a document's content lies in the archive: by section, its date, title, id."""
    created: datetime = doc["created_at"]
    section = re.sub(r"[^a-z0-9_]", "_", str(doc["section"]).lower()) or "autres"
    short = re.sub(r"[^A-Za-z0-9]", "", str(doc["_id"]))[-8:] or "0"
    return (
        f"documents/{section}/{created.date().isoformat()}-{safe_title(str(doc['title']))}"
        f"-{short}.{extension(str(doc['mime_type']))}"
    )


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def document_entry(doc: Document, path: str) -> Document:
    """A document's metadata, as the API lists it, and where the archive holds its content."""
    labels = list(doc.get("labels", []))
    return {
        "id": doc["_id"],
        "ins": doc["ins"],
        "type_code": doc["type_code"],
        "section": doc["section"],
        "title": doc["title"],
        "author": doc["author"],
        "created_at": iso(doc["created_at"]),
        "service_start": iso(doc.get("service_start")),
        "mime_type": doc["mime_type"],
        "size": doc["size"],
        "sha256": doc["sha256"],
        "confidentiality": labels,
        "masked_from_professionals": domain.MASKED in labels,
        "status": doc["status"],
        "replaces": doc.get("replaces") or None,
        "replaced_by": doc.get("replaced_by") or None,
        "file": path,
    }


def records_entry(identity: Document, dossier: Document) -> Document:
    """profil.json: identity, medical profile, emergency contacts, advance directives."""
    profile = dict(dossier.get("profile") or {})
    if profile:
        profile["measurements"] = [
            {**m, "measured_at": iso(m["measured_at"])} for m in profile.get("measurements", [])
        ]
        profile["updated_at"] = iso(profile.get("updated_at"))
    directives = dossier.get("directives")
    return {
        "identity": identity,
        "profile": profile or None,
        "emergency_contacts": list(dossier.get("emergency_contacts", [])),
        "advance_directives": (
            {
                "text": directives["text"],
                "version": directives["version"],
                "updated_at": iso(directives["updated_at"]),
            }
            if directives
            else None
        ),
    }


def measurements_entry(series: dict[str, list[Document]]) -> Document:
    """constantes.json: each series oldest first, and the BMI computed from weight and height,
    as the patient reads them."""

    def shown(point: Document) -> Document:
        out = {k: v for k, v in point.items() if not isinstance(v, datetime)}
        return out | {k: iso(v) for k, v in point.items() if isinstance(v, datetime)}

    by_kind = {
        kind: [shown(p) for p in sorted(points, key=lambda p: p["measured_at"])]
        for kind, points in series.items()
    }
    bmi = domain.bmi_points(series.get("weight", []), series.get("height", []))
    by_kind[domain.BMI.name] = [shown(p) for p in sorted(bmi, key=lambda p: p["measured_at"])]
    return {"series": by_kind}


def log_entry(entry: audit_pb2.AccessLogEntry, readable: set[str]) -> Document:
    """An access-log entry as the patient reads it: one naming a document they may not read
    is withheld (its position and hash only)."""
    if entry.document_id and entry.document_id not in readable:
        return {"seq": entry.seq, "leaf_hash": entry.leaf_hash, "withheld": True}
    shown = as_dict(entry)
    shown.pop("entry", None)
    return shown


def as_dict(message: Message) -> Document:
    found: Document = MessageToDict(message, preserving_proto_field_name=True)
    return found


def unique_paths(docs: list[Document]) -> list[str]:
    """Each document's path; two that would share one get the rest of their id."""
    paths: list[str] = []
    seen: set[str] = set()
    for doc in docs:
        path = document_path(doc)
        if path in seen:
            stem, dot, ext = path.rpartition(".")
            path = f"{stem}-{re.sub(r'[^A-Za-z0-9]', '', str(doc['_id']))}{dot}{ext}"
        seen.add(path)
        paths.append(path)
    return paths


class PartSink:
    """What zipfile writes into, handed out in parts of PART_BYTES (a stream: no seek)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        return None

    def parts(self, final: bool = False) -> Iterator[bytes]:
        """The full parts written so far (and, when final, the rest)."""
        while len(self._buffer) >= PART_BYTES or (final and self._buffer):
            part = bytes(self._buffer[:PART_BYTES])
            del self._buffer[:PART_BYTES]
            yield part


def new_archive(sink: PartSink) -> zipfile.ZipFile:
    return zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED)  # type: ignore[arg-type]


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=2).encode()


# the build -----------------------------------------------------------------------------------


class Lost(Exception):
    """This replica's claim on an export is gone (taken up by another, or the export is)."""


class ExportBuilder:
    def __init__(
        self,
        settings: DossierSettings,
        store: DossierStore,
        clock: Clock,
        tokens: ServiceTokens,
        messaging: messaging_pb2_grpc.MessagingServiceStub,
        audit: audit_pb2_grpc.AuditServiceStub,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.tokens = tokens
        self.messaging = messaging
        self.audit = audit
        self._key_seal = derive_key(settings.dossier_key_bytes, "dossier-data-keys")
        self._kicked = asyncio.Event()
        self.worker = str(uuid7())

    def kick(self) -> None:
        """An export was asked for: look now rather than at the next interval."""
        self._kicked.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.once()
            except (PyMongoError, DmpError, grpc.aio.AioRpcError) as exc:
                log.warning("export_retry", error=type(exc).__name__)
            self._kicked.clear()
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._kicked.wait())]
            await asyncio.wait(
                waits,
                timeout=self.settings.schedule_interval_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for waiting in waits:
                waiting.cancel()

    async def once(self) -> None:
        now = self.clock.now()
        await self.expire(now)
        for status in ("pending", "running"):
            for doc in await self.store.exports_in(status):
                claimed = await self.claim(doc["_id"], now)
                if claimed is not None:
                    await self.build(claimed)

    async def expire(self, now: datetime) -> None:
        """Ready archives past their keeping time are deleted; the record says so."""
        for doc in await self.store.exports_in("ready"):
            if doc.get("expires_at") and doc["expires_at"] <= now:
                await self.store.drop_export_parts(doc["_id"])
                await self.store.change_export(
                    doc["_id"],
                    lambda cur: {"status": "expired"} if cur and cur["status"] == "ready" else None,
                )
                log.info("export_expired")

    async def claim(self, export_id: str, now: datetime) -> Document | None:
        """The export, claimed for this replica (version guard): a pending one, or a running
        one whose lease ran out (a replica died mid-build); after the last attempt, failed."""
        lease = timedelta(seconds=self.settings.export_lease_seconds)

        def fields(current: Document | None) -> Document | None:
            if current is None:
                return None
            if current["status"] == "running" and current.get("lease_until", now) > now:
                return None
            if current["status"] not in ("pending", "running"):
                return None
            attempt = int(current.get("attempt", 0))
            if attempt >= self.settings.export_attempts:
                return {"status": "failed", "lease_until": None, "worker": self.worker}
            return {
                "status": "running",
                "attempt": attempt + 1,
                "worker": self.worker,
                "lease_until": now + lease,
            }

        written = await self.store.change_export(export_id, fields)
        if written is None or written.get("worker") != self.worker:
            return None
        if written["status"] == "failed":
            await self.failed(written)
            return None
        if written["status"] != "running" or written.get("lease_until") != now + lease:
            return None  # another replica's claim, seen as written
        return written

    async def failed(self, doc: Document) -> None:
        await self.store.drop_export_parts(doc["_id"])
        await self.store.free_export_slot(doc["ins"], doc["_id"])
        log.warning("export_failed")

    async def release(self, doc: Document) -> None:
        """This replica's claim given up at once: the next pass takes the export up again."""

        def fields(current: Document | None) -> Document | None:
            if current is None or current.get("attempt") != doc["attempt"]:
                return None
            return {"lease_until": self.clock.now()} if current["status"] == "running" else None

        with contextlib.suppress(PyMongoError):
            await self.store.change_export(doc["_id"], fields)

    async def progress(self, doc: Document, value: int, **extra: Any) -> None:
        """Progress written, and the lease renewed; Lost if the claim is no longer ours."""
        lease_until = self.clock.now() + timedelta(seconds=self.settings.export_lease_seconds)

        def fields(current: Document | None) -> Document | None:
            if (
                current is None
                or current["status"] != "running"
                or current.get("worker") != doc["worker"]
                or current.get("attempt") != doc["attempt"]
            ):
                raise Lost
            return {"progress": value, "lease_until": lease_until, **extra}

        if await self.store.change_export(doc["_id"], fields) is None:
            raise Lost

    async def build(self, doc: Document) -> None:
        export_id, ins, attempt = doc["_id"], doc["ins"], int(doc["attempt"])
        try:
            await self.store.drop_export_parts(export_id, keep_attempt=attempt)
            dossier = await self.store.get_dossier(ins)
            if dossier is None or dossier.get("opened_at") != doc["opened_at"]:
                raise Lost  # purged meanwhile: the purge removes the export too
            key = await self.store.data_key(ins, self._key_seal, dossier)
            size, parts = await self._write(doc, dossier, key)
        except Lost:
            log.info("export_taken_up_elsewhere")
            return
        except Exception as exc:  # this attempt is over; the next one starts from scratch
            log.warning("export_attempt_failed", error=type(exc).__name__, attempt=attempt)
            await self.release(doc)
            return
        now = self.clock.now()
        retention = timedelta(days=self.settings.export_retention_days)
        try:
            await self.progress(
                doc,
                100,
                status="ready",
                ready_at=now,
                expires_at=now + retention,
                size=size,
                parts=parts,
                lease_until=None,
                identity=None,
                documents=[],
                readable=[],
            )
        except Lost:
            return
        await self.store.free_export_slot(ins, export_id)
        log.info("export_ready", size=size)

    async def _write(self, doc: Document, dossier: Document, key: bytes) -> tuple[int, int]:
        """The archive, written part after part as zipfile produces it (a document at most
        in memory); returns its size and number of parts."""
        export_id, attempt = doc["_id"], int(doc["attempt"])
        sink = PartSink()
        stored = 0

        async def store_parts(final: bool = False) -> None:
            nonlocal stored
            for part in list(sink.parts(final)):
                aad = f"{export_id}:{attempt}:{stored}".encode()
                await self.store.put_export_part(export_id, attempt, stored, seal(key, part, aad))
                stored += 1

        identity = json.loads(unseal(key, bytes(doc["identity"]), f"{export_id}:identity".encode()))
        archive = new_archive(sink)
        archive.writestr(
            "LISEZMOI.txt", README.format(date=self.clock.now().strftime("%d/%m/%Y")).encode()
        )
        archive.writestr("profil.json", json_bytes(records_entry(identity, dossier)))
        series = await self.store.measurement_series(dossier["_id"], list(domain.MEASUREMENT_KINDS))
        archive.writestr("constantes.json", json_bytes(measurements_entry(series)))
        await self.progress(doc, AFTER_RECORDS)

        wanted = set(doc.get("documents", []))
        listed = [
            d
            for d in await self.store.documents_of(doc["ins"])
            if d["_id"] in wanted and d["status"] in CURRENT
        ]
        paths = unique_paths(listed)
        entries = []
        for n, (d, path) in enumerate(zip(listed, paths, strict=True)):
            content = unseal(key, await self.store.read_content(d), d["_id"].encode())
            with archive.open(path, "w", force_zip64=True) as out:
                for start in range(0, len(content), WRITE_SLICE):
                    out.write(content[start : start + WRITE_SLICE])
                    await store_parts()
            del content
            entries.append(document_entry(d, path))
            done = AFTER_RECORDS + (AFTER_DOCUMENTS - AFTER_RECORDS) * (n + 1) // len(listed)
            if done != doc.get("progress"):
                await self.progress(doc, done)
                doc["progress"] = done
        archive.writestr(
            "documents/index.json",
            json_bytes({"items": entries, "pending": int(doc.get("pending", 0))}),
        )
        await self.progress(doc, AFTER_DOCUMENTS)

        conversations = await self._conversations(doc["ins"])
        archive.writestr("messages.json", json_bytes({"conversations": conversations}))
        await store_parts()
        await self.progress(doc, AFTER_MESSAGES)

        readable = set(doc.get("readable", []))
        await self._trail_reaches(doc["ins"], doc["created_at"])
        entries_log = await self._access_log(doc["ins"], readable)
        archive.writestr("journal-des-acces.json", json_bytes({"entries": entries_log}))
        archive.close()
        await store_parts(final=True)
        await self.progress(doc, AFTER_LOG)
        return sink.size, stored

    async def _paged(self, ask: Callable[[str, str], Awaitable[Any]]) -> list[Any]:
        """Every page of a service's list, with this service's token."""
        pages, cursor = [], ""
        while True:

            async def call(token: str, cursor: str = cursor) -> Any:
                return await ask(cursor, token)

            page = await self.tokens.call(call)
            pages.append(page)
            cursor = page.next
            if not cursor:
                return pages

    async def _conversations(self, ins: str) -> list[Document]:
        deadline = self.settings.grpc_deadline_seconds

        async def ask(cursor: str, token: str) -> messaging_pb2.ExportConversationsResponse:
            answer: messaging_pb2.ExportConversationsResponse = (
                await self.messaging.ExportConversations(
                    messaging_pb2.ExportConversationsRequest(
                        ins=ins, cursor=cursor, page_size=PAGE
                    ),
                    **call_options(deadline, token=token),
                )
            )
            return answer

        return [
            {**as_dict(item.conversation), "messages": [as_dict(m) for m in item.messages]}
            for page in await self._paged(ask)
            for item in page.items
        ]

    async def _trail_reaches(self, ins: str, asked_at: datetime) -> None:
        """Until the access log holds the patient's request of this export (its event goes
        through the bus to audit, which may not have written it yet): the archive's trail
        then runs up to the request itself. After TRAIL_WAIT_SECONDS it goes with what audit
        has, and says so in the service's log."""
        since = int(asked_at.timestamp())
        waited = 0.0
        while waited < TRAIL_WAIT_SECONDS:
            page = await self.tokens.call(lambda token: self._log_page(ins, "", token))
            if any(
                e.action == "execute" and e.query == "export" and e.at.seconds >= since
                for e in page.entries
            ):
                return
            await asyncio.sleep(TRAIL_POLL_SECONDS)
            waited += TRAIL_POLL_SECONDS
        log.warning("export_trail_behind", waited_seconds=waited)

    async def _log_page(self, ins: str, cursor: str, token: str) -> audit_pb2.ListAccessLogResponse:
        """A page of the dossier's access log, newest first, as the patient reads it."""
        answer: audit_pb2.ListAccessLogResponse = await self.audit.ListAccessLog(
            audit_pb2.ListAccessLogRequest(ins=ins, cursor=cursor, page_size=PAGE),
            **call_options(self.settings.grpc_deadline_seconds, token=token),
        )
        return answer

    async def _access_log(self, ins: str, readable: set[str]) -> list[Document]:
        def ask(cursor: str, token: str) -> Awaitable[audit_pb2.ListAccessLogResponse]:
            return self._log_page(ins, cursor, token)

        return [log_entry(e, readable) for page in await self._paged(ask) for e in page.entries]

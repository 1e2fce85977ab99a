"""Ingest's background work: a spooled batch read, checked and written; REMB documents kept.

A batch's body is spooled to disk as it arrives (never held in memory), then read line by
line: claims are written in bulk, refused rows counted with their line and reason, progress
saved as it goes. A batch interrupted by a restart is read again from its spool: claims are
keyed by `claim_id`, so nothing doubles. Once done, every open dossier it touched gets its
REMB document rebuilt — through the dossier service's API, as ingest's own service account
(an `insurer` system), never by writing the dossier's database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import structlog
from pymongo.errors import PyMongoError

from dmp.dossier.v1 import dossier_pb2, dossier_pb2_grpc
from dmp.events.v1 import envelope_pb2
from dmp_ingest import domain
from dmp_ingest.config import IngestSettings
from dmp_ingest.store import IngestStore
from dmp_kit.bus import EventBus, run_consumer
from dmp_kit.clock import Clock
from dmp_kit.errors import DmpError, NotFound, Unavailable
from dmp_kit.metrics import Counter, Gauge
from dmp_kit.rpc.client import call_options
from dmp_kit.rpc.status import error_from_rpc
from dmp_kit.service_auth import ServiceTokens

log = structlog.get_logger("dmp.ingest")

ROWS = Counter(
    "dmp_ingest_rows_total", "Rows of insurer batches, accepted or rejected", ["outcome"]
)
BATCHES_RUNNING = Gauge("dmp_ingest_batches_running", "Insurer batches being processed")
AddDocument = dossier_pb2.AddDocumentRequest
REMB_TITLE = "Historique des remboursements (24 derniers mois)"


class Worker:
    def __init__(
        self,
        settings: IngestSettings,
        store: IngestStore,
        clock: Clock,
        dossier: dossier_pb2_grpc.DossierServiceStub,
        tokens: ServiceTokens,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.dossier = dossier
        self.tokens = tokens
        self.tasks: set[asyncio.Task[None]] = set()
        BATCHES_RUNNING.set_function(lambda: len(self.tasks))

    def spool(self, batch_id: str) -> Path:
        return Path(self.settings.spool_dir) / f"{batch_id}.spool"

    def start(self, batch_id: str, fmt: str, insurer: str) -> None:
        task = asyncio.create_task(self.process(batch_id, fmt, insurer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def resume(self) -> None:
        """Batches a restart interrupted: read again from their spool, or failed if it is gone."""
        for batch in await self.store.running_batches():
            if self.spool(batch["_id"]).exists():
                self.start(batch["_id"], batch["format"], batch["client"])
            else:
                await self.store.update_batch(
                    batch["_id"], {"status": "failed", "finished_at": self.clock.now()}
                )

    async def process(self, batch_id: str, fmt: str, insurer: str) -> None:
        path = self.spool(batch_id)
        accepted = rejected = 0
        rejects: list[dict[str, object]] = []
        touched: set[str] = set()
        pending: list[domain.Claim] = []
        try:
            for line, row in _rows(path, fmt):
                if isinstance(row, str):
                    rejected += 1
                    ROWS.labels("rejected").inc()
                    if len(rejects) < self.settings.max_rejects_kept:
                        rejects.append({"line": line, "reason": row})
                    continue
                pending.append(row)
                touched.add(row.ins)
                if len(pending) >= self.settings.write_batch:
                    await self.store.write_claims(pending, insurer, batch_id, self.clock.now())
                    accepted += len(pending)
                    ROWS.labels("accepted").inc(len(pending))
                    pending = []
                    await self.store.update_batch(
                        batch_id, {"accepted": accepted, "rejected": rejected, "rejects": rejects}
                    )
            await self.store.write_claims(pending, insurer, batch_id, self.clock.now())
            accepted += len(pending)
            ROWS.labels("accepted").inc(len(pending))
        except Exception as exc:
            log.error("batch_failed", batch_id=batch_id, error=type(exc).__name__)
            await self.store.update_batch(
                batch_id,
                {
                    "status": "failed",
                    "accepted": accepted,
                    "rejected": rejected,
                    "rejects": rejects,
                    "finished_at": self.clock.now(),
                },
            )
            return
        await self.store.update_batch(
            batch_id,
            {
                "status": "done",
                "accepted": accepted,
                "rejected": rejected,
                "rejects": rejects,
                "finished_at": self.clock.now(),
            },
        )
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log.info("batch_done", batch_id=batch_id, accepted=accepted, rejected=rejected)
        for ins in touched & await self.store.open_dossiers():
            await self.refresh(ins)

    # the REMB document -------------------------------------------------------------------

    async def refresh(self, ins: str) -> None:
        """Write the dossier's REMB document anew from its claims of the last 24 months, and
        note the day its history next changes by time alone."""
        async with self.store.locks.hold("remb", ins):
            stored = await self.store.claims_of(ins)
            today = self.clock.now().date()
            claims = domain.history(stored, today)
            due = domain.history_changes_on(stored, today)
            previous = await self.store.remb_id(ins)
            if not claims and not previous:
                await self.store.set_remb(ins, "", due)
                return
            request = dossier_pb2.AddDocumentRequest(
                ins=ins,
                type_code="REMB",
                title=REMB_TITLE,
                mime_type="text/csv",
                content=domain.remb_document(claims),
                replaces=previous,
            )
            try:
                added = await self._add(request)
            except NotFound:
                if not previous:
                    raise
                request.replaces = ""  # the previous one is gone (purged, deleted): start anew
                added = await self._add(request)
            await self.store.set_remb(ins, added.document.id, due)

    async def run_daily(self, stop: asyncio.Event) -> None:
        """Every `remb_refresh_interval_seconds`: the dossiers whose history is due to change today
        (on the injected clock) get their REMB document rebuilt."""
        while not stop.is_set():
            try:
                await self.refresh_due()
            except (PyMongoError, Unavailable) as exc:
                log.warning("remb_pass_retry", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), timeout=self.settings.remb_refresh_interval_seconds
                )

    async def refresh_due(self) -> None:
        today = self.clock.now().date().isoformat()
        for ins in await self.store.remb_due(today, self.settings.remb_pass_size):
            try:
                await self.refresh(ins)
            except DmpError as exc:
                # One dossier refused (closed meanwhile, say) does not hold up the others.
                log.warning("remb_refresh_failed", error=type(exc).__name__)

    async def _add(
        self, request: dossier_pb2.AddDocumentRequest
    ) -> dossier_pb2.AddDocumentResponse:
        deadline = self.settings.grpc_deadline_seconds

        async def add(token: str) -> dossier_pb2.AddDocumentResponse:
            answer: dossier_pb2.AddDocumentResponse = await self.dossier.AddDocument(
                request, **call_options(deadline, token=token)
            )
            return answer

        try:
            return await self.tokens.call(add)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc

    async def on_dossier_event(self, event: envelope_pb2.Envelope) -> None:
        kind = event.WhichOneof("payload")
        order = event.occurred_at.seconds * 1_000_000 + event.occurred_at.nanos // 1000
        if kind in ("dossier_opened", "dossier_reopened"):
            await self.store.set_open(event.patient_ins, True, order)
            await self.refresh(event.patient_ins)
        elif kind in ("dossier_closed", "deletion_requested", "dossier_purged"):
            await self.store.set_open(event.patient_ins, False, order)

    async def run_dossier_consumer(self, bus: EventBus, stop: asyncio.Event) -> None:
        await run_consumer(
            bus,
            stream="DOSSIER",
            durable="ingest-dossier-lifecycle",
            subject="dossier.>",
            handler=self.on_dossier_event,
            stop=stop,
        )


def _rows(path: Path, fmt: str) -> Iterator[domain.Row]:
    with path.open(encoding="utf-8", errors="replace", newline="") as file:
        # Bounded lines: a batch line of any length is refused without being held in memory.
        lines = domain.bounded_lines(file.readline)
        yield from domain.read_csv(lines) if fmt == "csv" else domain.read_json_lines(lines)

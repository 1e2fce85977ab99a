"""The ingest gRPC servicer: batches of claims from insurer systems (rule 12)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from uuid6 import uuid7

from dmp.ingest.v1 import ingest_pb2 as pb
from dmp.ingest.v1 import ingest_pb2_grpc
from dmp_ingest.domain import months_before
from dmp_ingest.store import IngestStore
from dmp_ingest.work import Worker
from dmp_kit.auth import caller
from dmp_kit.clock import Clock
from dmp_kit.errors import InvalidArgument, NotFound, PermissionDenied
from dmp_kit.identifiers import validate_ins, validate_rpps
from dmp_kit.proto import timestamp

FORMATS = {pb.BATCH_FORMAT_CSV: "csv", pb.BATCH_FORMAT_JSON_LINES: "jsonl"}
STATUS = {"running": pb.BATCH_STATUS_RUNNING, "done": pb.BATCH_STATUS_DONE}


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, store: IngestStore, worker: Worker, clock: Clock) -> None:
        self.store = store
        self.worker = worker
        self.clock = clock

    async def SubmitBatch(
        self,
        request_iterator: AsyncIterator[pb.SubmitBatchRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.SubmitBatchResponse:
        who = caller()
        who.require_role("insurer")
        batch_id = str(uuid7())
        path = self.worker.spool(batch_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = ""
        received = 0
        try:
            with path.open("wb") as spool:
                async for part in request_iterator:
                    if not fmt:
                        fmt = FORMATS.get(part.format, "")
                        if not fmt:
                            raise InvalidArgument(
                                "the first message names the format: CSV or JSON Lines",
                                field="format",
                            )
                    spool.write(part.chunk)
                    received += len(part.chunk)
            if not received:
                raise InvalidArgument("the batch is empty", field="body")
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
        await self.store.new_batch(
            {
                "_id": batch_id,
                "client": who.actor_id,
                "format": fmt,
                "status": "running",
                "bytes_received": received,
                "accepted": 0,
                "rejected": 0,
                "rejects": [],
                "submitted_at": self.clock.now(),
            }
        )
        self.worker.start(batch_id, fmt, who.actor_id)
        return pb.SubmitBatchResponse(batch_id=batch_id)

    async def GetBatch(
        self, request: pb.GetBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBatchResponse:
        who = caller()
        if not request.batch_id or len(request.batch_id) > 64:
            raise InvalidArgument("batch_id is required", field="batch_id")
        doc = await self.store.batch(request.batch_id)
        # a batch is its sender's business (and administrators'); others learn nothing of it
        if doc is None or not (who.kind == "admin" or doc["client"] == who.actor_id):
            raise NotFound("no such batch", field="batch_id")
        answer = pb.GetBatchResponse(
            batch_id=doc["_id"],
            status=STATUS.get(doc["status"], pb.BATCH_STATUS_FAILED),
            accepted=doc["accepted"],
            rejected=doc["rejected"],
            rejects=[pb.Reject(line=r["line"], reason=r["reason"]) for r in doc["rejects"]],
            bytes_received=doc["bytes_received"],
            submitted_at=timestamp(doc["submitted_at"]),
        )
        if doc.get("finished_at"):
            answer.finished_at.CopyFrom(timestamp(doc["finished_at"]))
        return answer

    async def HasDispensed(
        self, request: pb.HasDispensedRequest, context: grpc.aio.ServicerContext
    ) -> pb.HasDispensedResponse:
        """Asked with the patient's own token (by messaging, on their behalf): the answer is
        about them alone, and is only a yes or no."""
        who = caller()
        ins = validate_ins(request.ins)
        rpps = validate_rpps(request.rpps)
        if who.kind != "patient" or who.ins != ins:
            raise PermissionDenied("only the patient may ask about their own dispensations")
        months = request.months or 12
        if not 1 <= months <= 24:
            raise InvalidArgument("months is between 1 and 24", field="months")
        since = months_before(self.clock.now().date(), months)
        found = await self.store.dispensed(ins, rpps, since.isoformat())
        return pb.HasDispensedResponse(dispensed=found)

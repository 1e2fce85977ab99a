"""Ingest (insurer systems only): claims batches, streamed through to the ingest service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from dmp.ingest.v1 import ingest_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso
from dmp_gateway.security import Caller
from dmp_kit.errors import DmpError, InvalidArgument, PayloadTooLarge

router = APIRouter(tags=["ingest"])

CHUNK = 256 * 1024
FORMATS = {
    "text/csv": pb.BATCH_FORMAT_CSV,
    "application/x-ndjson": pb.BATCH_FORMAT_JSON_LINES,
    "application/jsonl": pb.BATCH_FORMAT_JSON_LINES,
    "application/json-lines": pb.BATCH_FORMAT_JSON_LINES,
}
STATUS = {
    pb.BATCH_STATUS_RUNNING: "running",
    pb.BATCH_STATUS_DONE: "done",
    pb.BATCH_STATUS_FAILED: "failed",
}


class BatchAccepted(BaseModel):
    batch_id: str


class Reject(BaseModel):
    line: int
    reason: str


class Batch(BaseModel):
    batch_id: str
    status: Literal["running", "done", "failed"]
    accepted: int
    rejected: int
    rejects: list[Reject]
    bytes_received: int
    submitted_at: str
    finished_at: str | None = None


@router.post(
    "/v1/ingest/batches",
    status_code=202,
    response_model=BatchAccepted,
    summary="A claims batch (text/csv or application/x-ndjson), streamed; processed after",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
    responses=problems.responses(403),
)
async def submit(request: Request, who: Caller) -> JSONResponse:
    # Refused before a byte is streamed (ingest checks again): a gRPC server that answers while
    # its client still sends leaves the client with a cut stream and no reason.
    who.require_role("insurer")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = FORMATS.get(media)
    if fmt is None:
        raise InvalidArgument(
            "the body is text/csv or application/x-ndjson (JSON Lines)", field="content-type"
        )
    ds = downstream(request)
    limit = ds.settings.max_batch_bytes

    # What stopped the body on this side: gRPC reports only that the stream was cut short.
    stopped: list[DmpError] = []

    async def parts() -> AsyncIterator[pb.SubmitBatchRequest]:
        sent = 0
        first = True
        buffer = bytearray()
        async for data in request.stream():
            sent += len(data)
            if sent > limit:
                stopped.append(PayloadTooLarge(f"a batch may not exceed {limit} bytes"))
                raise stopped[-1]
            buffer += data
            while len(buffer) >= CHUNK:
                yield pb.SubmitBatchRequest(format=fmt if first else 0, chunk=bytes(buffer[:CHUNK]))
                del buffer[:CHUNK]
                first = False
        if buffer or first:
            yield pb.SubmitBatchRequest(format=fmt if first else 0, chunk=bytes(buffer))

    if int(request.headers.get("content-length") or 0) > limit:
        raise PayloadTooLarge(f"a batch may not exceed {limit} bytes")
    try:
        resp = await ds.call(ds.ingest.SubmitBatch, parts(), token=who.token)
    except (DmpError, asyncio.CancelledError):
        # grpc cancels the call when its request stream fails: if that was our limit, say so.
        # Ingest dropped the cut stream's spool: nothing of the batch remains.
        if stopped:
            raise stopped[-1] from None
        raise
    return JSONResponse(BatchAccepted(batch_id=resp.batch_id).model_dump(), status_code=202)


@router.get(
    "/v1/ingest/batches/{batch_id}",
    response_model=Batch,
    response_model_exclude_none=True,
    responses=problems.responses(403, 404),
)
async def batch(batch_id: str, request: Request, who: Caller) -> Batch:
    ds = downstream(request)
    resp = await ds.call(ds.ingest.GetBatch, pb.GetBatchRequest(batch_id=batch_id), token=who.token)
    return Batch(
        batch_id=resp.batch_id,
        status=STATUS.get(resp.status, "failed"),  # type: ignore[arg-type]
        accepted=resp.accepted,
        rejected=resp.rejected,
        rejects=[Reject(line=r.line, reason=r.reason) for r in resp.rejects],
        bytes_received=resp.bytes_received,
        submitted_at=iso(resp.submitted_at),
        finished_at=iso(resp.finished_at) if resp.HasField("finished_at") else None,
    )

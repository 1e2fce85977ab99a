"""Downloading all of one's data: a patient asks for an export (a ZIP of their documents,
profile, messages and access log), follows its progress, and downloads it once it is ready."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from dmp.dossier.v1 import dossier_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso
from dmp_gateway.security import Caller

router = APIRouter(tags=["account"])

STATUS_NAMES: dict[int, str] = {
    pb.EXPORT_STATUS_PENDING: "pending",
    pb.EXPORT_STATUS_RUNNING: "running",
    pb.EXPORT_STATUS_READY: "ready",
    pb.EXPORT_STATUS_FAILED: "failed",
    pb.EXPORT_STATUS_EXPIRED: "expired",
}
ExportId = Annotated[str, Path(min_length=1, max_length=64)]
# What a call about one's exports meets: a caller who is not a patient, no dossier, no such
# export (someone else's is not told of).
FORBIDDEN = ("patient-only", "forbidden")
UNKNOWN = ("export-not-found",)


class ExportOut(BaseModel):
    id: str
    status: Literal["pending", "running", "ready", "failed", "expired"] = Field(
        description="expired: the archive was deleted after its keeping time"
    )
    progress: int = Field(ge=0, le=100)
    created_at: str
    ready_at: str | None = None
    expires_at: str | None = Field(None, description="when the archive is deleted")
    size: int | None = Field(None, description="the archive's size in bytes")


class Exports(BaseModel):
    items: list[ExportOut]


def export_out(e: pb.Export) -> ExportOut:
    ready = e.HasField("ready_at")
    return ExportOut(
        id=e.id,
        status=STATUS_NAMES[e.status],  # type: ignore[arg-type]
        progress=e.progress,
        created_at=iso(e.created_at),
        ready_at=iso(e.ready_at) if ready else None,
        expires_at=iso(e.expires_at) if e.HasField("expires_at") else None,
        size=e.size if ready else None,
    )


@router.post(
    "/v1/me/exports",
    status_code=202,
    response_model=ExportOut,
    response_model_exclude_none=True,
    summary="Ask for a ZIP of all one's data (documents, profile, messages, access log), "
    "built in the background; one at a time, a few a day",
    responses=problems.responses(
        types={
            403: (*FORBIDDEN, "access-denied"),
            404: ("dossier-not-found",),
            409: ("export-running", "dossier-closed"),
            429: ("export-rate-limited",),
        }
    ),
)
async def create_export(request: Request, who: Caller) -> ExportOut:
    ds = downstream(request)
    resp = await ds.call(ds.dossier.CreateExport, pb.CreateExportRequest(), token=who.token)
    return export_out(resp.export)


@router.get(
    "/v1/me/exports",
    response_model=Exports,
    response_model_exclude_none=True,
    summary="One's exports, newest first, with their progress",
    responses=problems.responses(types={403: FORBIDDEN}),
)
async def list_exports(request: Request, who: Caller) -> Exports:
    ds = downstream(request)
    resp = await ds.call(ds.dossier.ListExports, pb.ListExportsRequest(), token=who.token)
    return Exports(items=[export_out(e) for e in resp.items])


@router.get(
    "/v1/me/exports/{export_id}",
    response_model=ExportOut,
    response_model_exclude_none=True,
    summary="One of one's exports and its progress",
    responses=problems.responses(types={403: FORBIDDEN, 404: UNKNOWN}),
)
async def get_export(export_id: ExportId, request: Request, who: Caller) -> ExportOut:
    ds = downstream(request)
    resp = await ds.call(ds.dossier.GetExport, pb.GetExportRequest(id=export_id), token=who.token)
    return export_out(resp.export)


@router.get(
    "/v1/me/exports/{export_id}/content",
    response_class=StreamingResponse,
    summary="The export's ZIP, once it is ready (traced in the access log)",
    responses={
        200: {"content": {"application/zip": {}}, "description": "the archive"},
        **problems.responses(
            types={
                403: FORBIDDEN,
                404: (*UNKNOWN, "export-expired"),
                409: ("export-not-ready",),
            }
        ),
    },
)
async def get_export_content(
    export_id: ExportId, request: Request, who: Caller
) -> StreamingResponse:
    ds = downstream(request)
    # The first part is read before answering: a refusal is a problem, not a broken download.
    first = await ds.call(
        ds.dossier.GetExportContent,
        pb.GetExportContentRequest(id=export_id, part=0),
        token=who.token,
    )

    async def parts() -> AsyncIterator[bytes]:
        yield first.content
        for n in range(1, first.export.parts):
            part = await ds.call(
                ds.dossier.GetExportContent,
                pb.GetExportContentRequest(id=export_id, part=n),
                token=who.token,
            )
            yield part.content

    day = iso(first.export.created_at)[:10]
    return StreamingResponse(
        parts(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="mon-espace-sante-{day}.zip"',
            "Content-Length": str(first.export.size),
            "Cache-Control": "no-store",
        },
    )

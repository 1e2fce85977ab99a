"""The patient's preview of a professional's view ("que voit le Dr X ?"): consent's verdicts."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from pydantic_core import to_json

from dmp.consent.v1 import consent_pb2
from dmp.dossier.v1 import dossier_pb2 as pb
from dmp_gateway import problems
from dmp_gateway.clients import downstream, iso
from dmp_gateway.routes.dossiers import DocumentOut, document_json
from dmp_gateway.security import Caller
from dmp_kit.errors import DmpError, InvalidArgument

router = APIRouter(tags=["consent"])

RELATIONS = {
    consent_pb2.VIEWER_RELATION_NONE: "none",
    consent_pb2.VIEWER_RELATION_ATTENDING_PHYSICIAN: "attending_physician",
    consent_pb2.VIEWER_RELATION_AUTHORIZED: "authorized",
    consent_pb2.VIEWER_RELATION_BLOCKED: "blocked",
}
MODES = {
    consent_pb2.ACCESS_MODE_NORMAL: "normal",
    consent_pb2.ACCESS_MODE_BREAK_GLASS: "break_glass",
    consent_pb2.ACCESS_MODE_REGULATOR: "regulator",
}
REASON = (
    "stable code of the rule that decides: attending_physician, care_team, author, "
    "break_glass, regulator (seen); blocked, not_in_care_team, masked, not_habilitated, "
    "dossier_closed (not seen)"
)


class Access(BaseModel):
    allowed: bool
    mode: Literal["normal", "break_glass", "regulator"]
    reason: str = Field(description=REASON)
    explanation: str = Field(description="the rule, in French, for the patient")


class Viewer(BaseModel):
    rpps: str | None = Field(None, description="absent when a profession alone is previewed")
    profession: str = Field(description="profession code of the RPPS directory")
    profession_label: str
    given_name: str | None = None
    family_name: str | None = None
    relation: Literal["none", "attending_physician", "authorized", "blocked"] = Field(
        description="where the dossier's consent places them"
    )
    access: Access = Field(description="whether they may open the dossier at all")


class VisibleDocument(DocumentOut):
    reason: str = Field(description=REASON)
    explanation: str
    mode: Literal["normal", "break_glass", "regulator"]


class HiddenDocument(BaseModel):
    document_id: str
    title: str
    type_code: str
    section: str
    created_at: str
    reason: str = Field(description=REASON)
    explanation: str = Field(description="the rule that hides it, in French")


class Pending(BaseModel):
    visible: int = Field(description="of them, how many the viewer reads today")
    hidden: int


class Preview(BaseModel):
    viewer: Viewer
    visible: list[VisibleDocument] = Field(
        description="exactly the documents of this page the viewer's own listing holds today"
    )
    hidden: list[HiddenDocument]
    pending: Pending | None = Field(
        None,
        description="first page only: documents not yet announced to the caller, counted, "
        "nothing else about them told",
    )
    next: str | None = None


def access_json(v: consent_pb2.Verdict) -> dict[str, Any]:
    return {
        "allowed": v.allowed,
        "mode": MODES.get(v.mode, "normal"),
        "reason": v.reason,
        "explanation": v.explanation,
    }


def viewer_json(v: consent_pb2.Viewer) -> dict[str, Any]:
    out: dict[str, Any] = {
        "profession": v.profession,
        "profession_label": v.profession_label,
        "relation": RELATIONS.get(v.relation, "none"),
        "access": access_json(v.access),
    }
    for name in ("rpps", "given_name", "family_name"):
        if value := getattr(v, name):
            out[name] = value
    return out


@router.get(
    "/v1/dossiers/{ins}/preview",
    response_model=Preview,
    response_model_exclude_none=True,
    summary="What a professional, or any professional of a profession, would see today",
    description="For the patient and a minor's legal representatives only; professionals get "
    "403. Name one professional by `rpps` (authorised, blocked or any in the directory), or a "
    "`profession` (code or French name: `infirmier`, `pharmacien`) for one with no "
    "authorisation. Every verdict comes from the same decision as the viewer's own listing "
    "(`GET /v1/dossiers/{ins}/documents`); the preview is traced as the caller's search, "
    "never as the viewer's access.",
    responses=problems.responses(403, 404, 422, types={409: ("dossier-closed",)}),
)
async def preview(
    ins: str,
    request: Request,
    who: Caller,
    rpps: Annotated[str | None, Query(max_length=32)] = None,
    profession: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    if rpps is not None and profession is not None:
        raise InvalidArgument("name one professional (rpps) or one profession", field="rpps")
    # Naming nobody is refused by consent, after it has checked who asks (deny by default).
    viewer = consent_pb2.ViewerRef()
    if rpps is not None:
        viewer.rpps = rpps
    elif profession is not None:
        viewer.profession = profession
    ds = downstream(request)
    req = pb.PreviewDocumentsRequest(
        ins=ins, viewer=viewer, cursor=cursor or "", page_size=page_size
    )
    try:
        resp = await ds.call(ds.dossier.PreviewDocuments, req, token=who.token)
    except DmpError as err:
        # Consent names the viewer's fields as its request does; here they are parameters.
        if err.field == "viewer":
            err.field = "rpps"
        elif err.field and err.field.startswith("viewer."):
            err.field = err.field.removeprefix("viewer.")
        raise
    visible, hidden = [], []
    for entry in resp.documents:
        doc, verdict = entry.document, entry.verdict
        if verdict.allowed:
            visible.append(
                {
                    **document_json(doc),
                    "reason": verdict.reason,
                    "explanation": verdict.explanation,
                    "mode": MODES.get(verdict.mode, "normal"),
                }
            )
        else:
            hidden.append(
                {
                    "document_id": doc.id,
                    "title": doc.title,
                    "type_code": doc.type_code,
                    "section": doc.section,
                    "created_at": iso(doc.created_at),
                    "reason": verdict.reason,
                    "explanation": verdict.explanation,
                }
            )
    page: dict[str, Any] = {"viewer": viewer_json(resp.viewer), "visible": visible}
    page["hidden"] = hidden
    if not cursor:
        page["pending"] = {"visible": resp.pending_visible, "hidden": resp.pending_hidden}
    if resp.next:
        page["next"] = resp.next
    return Response(to_json(page), media_type="application/json")

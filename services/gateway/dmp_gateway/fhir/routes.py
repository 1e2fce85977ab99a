"""The FHIR R4 endpoint, /fhir/R4: IHE MHD ITI-65/66/67/68 and metadata updates as PDSm
profiles them, Patient read and search. Each operation is one or two of the gateway's own
calls with the caller's token: consent decides and audit records exactly as for /v1."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jsonpatch  # type: ignore[import-untyped]
from fastapi import APIRouter, Request, Response

from dmp.dossier.v1 import dossier_pb2 as pb
from dmp.identity.v1 import identity_pb2
from dmp_gateway.clients import downstream, stamp
from dmp_gateway.fhir import codes, observations, translate
from dmp_gateway.fhir.capability import statement
from dmp_gateway.fhir.resources import (
    MEDIA_TYPE,
    Rendered,
    binary,
    bundle,
    doc_id,
    dump,
    patient,
    split_id,
    submission_list,
)
from dmp_gateway.routes.dossiers import content_response
from dmp_gateway.security import Caller
from dmp_kit.auth import Principal
from dmp_kit.catalogue import load_catalogue
from dmp_kit.errors import (
    DmpError,
    InvalidArgument,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PermissionDenied,
    UnsupportedMediaType,
)

router = APIRouter(prefix="/fhir/R4", include_in_schema=False)
CATALOGUE = load_catalogue()
RENDERED = Rendered(CATALOGUE)
# RPPS → (given, family, profession), the directory's public names, and when they were read
NAMES: dict[str, tuple[float, tuple[str, str, str]]] = {}
MAX_NAMES = 50_000
NAMES_FOR_SECONDS = 3600.0
NOBODY = ("", "", "")


def fhir(text: str) -> Response:
    return Response(text, media_type=MEDIA_TYPE)


def media_type(request: Request) -> str:
    """The body's declared media type, without its parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip()


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir/R4"


def wants_json(request: Request) -> None:
    """JSON only: XML (asked by _format or Accept) is refused as the statement says."""
    fmt = request.query_params.get("_format", "")
    accept = request.headers.get("accept", "")
    if "xml" in fmt or ("xml" in accept and "json" not in accept and "*/*" not in accept):
        raise NotAcceptable("only application/fhir+json is served", field="_format")


async def names_of(request: Request, who: Principal, items: Any) -> dict[str, tuple[str, str, str]]:
    """The public names of the professionals who wrote these documents (identity's
    directory), kept an hour by RPPS."""
    ds = downstream(request)
    now = time.monotonic()
    out: dict[str, tuple[str, str, str]] = {}
    for m in items:
        rpps = m.author
        if not (rpps.isdigit() and len(rpps) == 11) or rpps in out:
            continue
        held = NAMES.get(rpps)
        if held is None or now - held[0] > NAMES_FOR_SECONDS:
            try:
                found = await ds.call(
                    ds.identity.LookupProfessional,
                    identity_pb2.LookupProfessionalRequest(rpps=rpps),
                    token=who.token,
                )
                p = found.professional
                names = (p.given_name, p.family_name, p.profession)
            except NotFound:
                names = NOBODY
            if len(NAMES) >= MAX_NAMES:
                NAMES.clear()
            held = NAMES[rpps] = (now, names)
        out[rpps] = held[1]
    return out


def searchset(
    entries: list[tuple[str, str]], self_link: str, next_link: str, total: int | None
) -> str:
    """A searchset Bundle around resources already serialised (fullUrl, JSON)."""
    links = [{"relation": "self", "url": self_link}]
    if next_link:
        links.append({"relation": "next", "url": next_link})
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        head["total"] = total
    head["link"] = links
    body = ",".join(
        f'{{"fullUrl":{json.dumps(url)},"resource":{text},"search":{{"mode":"match"}}}}'
        for url, text in entries
    )
    if not entries:
        return json.dumps(head)  # no empty array in FHIR JSON
    return json.dumps(head)[:-1] + f',"entry":[{body}]}}'


async def search_params(request: Request) -> list[tuple[str, str]]:
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        if media_type(request) != "application/x-www-form-urlencoded":
            raise InvalidArgument(
                "a POST search is a form (application/x-www-form-urlencoded)",
                field="Content-Type",
            )
        try:
            form = (await request.body()).decode()
        except UnicodeDecodeError as exc:
            raise InvalidArgument("the form is not UTF-8", field="body") from exc
        params += parse_qsl(form, keep_blank_values=False)
    return [(k, v) for k, v in params if k != "_format"]


@router.get("/metadata")
async def metadata(request: Request) -> Response:
    wants_json(request)
    return fhir(statement(base_url(request)))


@router.get("/DocumentReference")
@router.get("/DocumentReference/_search")
@router.post("/DocumentReference/_search")
async def find_documents(request: Request, who: Caller) -> Response:
    """ITI-67 Find Document References."""
    wants_json(request)
    base = base_url(request)
    search = translate.document_search(await search_params(request), CATALOGUE)
    self_link = f"{base}/DocumentReference?{urlencode(search.kept)}"
    if search.empty:
        await _dossier_readable(request, who, search.ins)
        return fhir(searchset([], self_link, "", 0))
    ds = downstream(request)
    resp = await ds.call(
        ds.dossier.ListDocuments,
        pb.ListDocumentsRequest(
            ins=search.ins, query=search.query, page_size=search.count, cursor=search.cursor
        ),
        token=who.token,
    )
    names = await names_of(request, who, resp.items)
    entries = [
        (
            f"{base}/DocumentReference/{doc_id(m.ins, m.id)}",
            RENDERED.document(m, base, names.get(m.author, NOBODY)),
        )
        for m in resp.items
    ]
    next_link = (
        f"{base}/DocumentReference?{urlencode([*search.kept, ('_cursor', resp.next)])}"
        if resp.next
        else ""
    )
    total = len(entries) if not resp.next and not search.cursor else None
    return fhir(searchset(entries, self_link, next_link, total))


async def _dossier_readable(request: Request, who: Principal, ins: str) -> None:
    """An empty answer still says whether the caller may search this dossier at all."""
    ds = downstream(request)
    await ds.call(
        ds.dossier.ListDocuments,
        pb.ListDocumentsRequest(ins=ins, page_size=1),
        token=who.token,
    )


@router.get("/DocumentReference/{resource_id}")
async def read_document(resource_id: str, request: Request, who: Caller) -> Response:
    wants_json(request)
    _, _, text, _ = await _read(request, who, resource_id)
    return fhir(text)


async def _read(
    request: Request, who: Principal, resource_id: str
) -> tuple[str, str, str, tuple[str, str, str]]:
    """A document read (consent decides, the read is traced): its INS, its own id, its
    DocumentReference as JSON, and its author's names."""
    ins, own = _ids(resource_id, "DocumentReference")
    ds = downstream(request)
    resp = await ds.call(
        ds.dossier.GetDocument, pb.GetDocumentRequest(ins=ins, document_id=own), token=who.token
    )
    names = (await names_of(request, who, [resp.document])).get(resp.document.author, NOBODY)
    return ins, own, RENDERED.document(resp.document, base_url(request), names), names


@router.get("/Binary/{resource_id}")
async def retrieve_document(resource_id: str, request: Request, who: Caller) -> Response:
    """ITI-68 Retrieve Document: the bytes, or a Binary when FHIR JSON is asked for."""
    ins, own = _ids(resource_id, "Binary")
    ds = downstream(request)
    resp = await ds.call(
        ds.dossier.GetDocumentContent,
        pb.GetDocumentContentRequest(ins=ins, document_id=own),
        token=who.token,
    )
    mime = resp.document.mime_type
    if MEDIA_TYPE in request.headers.get("accept", "") or request.query_params.get(
        "_format", ""
    ).endswith("json"):
        return fhir(dump(binary(mime, resp.content, resource_id)))
    return content_response(resp.content, mime, own)


@router.patch("/DocumentReference/{resource_id}")
async def update_document(resource_id: str, request: Request, who: Caller) -> Response:
    """Metadata updates as PDSm allows them, by JSON Patch: the status (entered-in-error:
    deleted by its author), the isArchived extension, and the visibility labels
    (MASQUE_PS by the patient; INVISIBLE_PATIENT / INVISIBLE_REPRESENTANTS_LEGAUX lifted by
    the author). Any other change is refused."""
    wants_json(request)
    if media_type(request) != "application/json-patch+json":
        raise UnsupportedMediaType("a patch is application/json-patch+json", field="Content-Type")
    ins, own, text, author_names = await _read(request, who, resource_id)
    before = json.loads(text)
    ds = downstream(request)
    try:
        operations = _patch_operations(json.loads(await request.body()))
        after = jsonpatch.apply_patch(before, operations)
    except (
        TypeError,
        ValueError,
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
    ) as exc:
        raise InvalidArgument(f"not an applicable JSON Patch: {exc}", field="body") from exc
    for key in sorted(set(before) | set(after)):
        if key not in ("status", "securityLabel", "extension") and before.get(key) != after.get(
            key
        ):
            raise InvalidArgument(
                "only status, securityLabel and the isArchived extension change",
                field=f"DocumentReference.{key}",
            )
    if after.get("status") != before.get("status"):
        if after.get("status") != "entered-in-error":
            raise InvalidArgument(
                "status changes only to entered-in-error", field="DocumentReference.status"
            )
        await ds.call(
            ds.dossier.DeleteDocument,
            pb.DeleteDocumentRequest(ins=ins, document_id=own),
            token=who.token,
        )
        return Response(status_code=204)
    change = pb.UpdateDocumentRequest(ins=ins, document_id=own)
    labels_before, labels_after = _labels(before), _labels(after)
    if "MASQUE_PS" in labels_before ^ labels_after:
        change.masked_from_professionals = "MASQUE_PS" in labels_after
    for label, attribute in (
        ("INVISIBLE_PATIENT", "hidden_from_patient"),
        ("INVISIBLE_REPRESENTANTS_LEGAUX", "hidden_from_legal_representatives"),
    ):
        if label in labels_before ^ labels_after:
            setattr(change, attribute, label in labels_after)
    archived_before, archived_after = _archived(before), _archived(after)
    if archived_before != archived_after:
        change.status = (
            pb.DOCUMENT_STATUS_ARCHIVED if archived_after else pb.DOCUMENT_STATUS_APPROVED
        )
    resp = await ds.call(ds.dossier.UpdateDocument, change, token=who.token)
    return fhir(RENDERED.document(resp.document, base_url(request), author_names))


PATCHABLE = ("/status", "/securityLabel", "/extension")
PATCH_OPERATIONS = ("add", "remove", "replace", "test")
MAX_PATCH_OPERATIONS = 20


def _patch_operations(operations: Any) -> list[dict[str, Any]]:
    """The patch, checked before anything is applied: a few add/remove/replace/test
    operations on the elements that may change (a `copy` or `move` could grow the resource
    without bound)."""
    if not isinstance(operations, list) or not 1 <= len(operations) <= MAX_PATCH_OPERATIONS:
        raise InvalidArgument(
            f"a JSON Patch is an array of 1 to {MAX_PATCH_OPERATIONS} operations", field="body"
        )
    for n, op in enumerate(operations):
        path = op.get("path") if isinstance(op, dict) else None
        if not isinstance(op, dict) or op.get("op") not in PATCH_OPERATIONS or not path:
            raise InvalidArgument(
                "each operation is add, remove, replace or test, with its path",
                field=f"body[{n}]",
            )
        if not (path in PATCHABLE or str(path).startswith(tuple(p + "/" for p in PATCHABLE))):
            raise InvalidArgument(
                "only status, securityLabel and the isArchived extension change",
                field=f"DocumentReference.{str(path).strip('/').split('/')[0]}",
            )
    return operations


def _labels(resource: dict[str, Any]) -> set[str]:
    return {
        c.get("code", "")
        for label in resource.get("securityLabel", [])
        for c in label.get("coding", [])
        if c.get("system") == codes.VISIBILITY
    }


def _archived(resource: dict[str, Any]) -> bool:
    return any(
        e.get("url") == codes.IS_ARCHIVED and e.get("valueBoolean") is True
        for e in resource.get("extension", [])
    )


def _ids(resource_id: str, kind: str) -> tuple[str, str]:
    ins, own = split_id(resource_id)
    if not own:
        raise NotFound(f"no such {kind}", field="id", slug="document-not-found")
    return ins, own


@router.post("")
@router.post("/")
async def transaction(request: Request, who: Caller) -> Response:
    """ITI-65 Provide Document Bundle: every document checked before any is written, then
    written together (see AddDocuments); answered with a transaction-response."""
    wants_json(request)
    parsed = translate.parse_bundle(await request.body())
    sub = translate.submission(parsed, who, CATALOGUE)
    ds = downstream(request)
    try:
        resp = await ds.call(ds.dossier.AddDocuments, sub.request, token=who.token)
    except DmpError as refused:
        if refused.field:
            refused.field = translate.fhir_field(refused.field, sub)
        raise
    list_id = f"{sub.ins}-{resp.submission.id}"
    out: list[dict[str, Any]] = []
    for kind, n in sub.entries:
        if kind == "List":
            location = f"List/{list_id}"
        else:
            m = resp.documents[n or 0]
            location = f"{kind}/{doc_id(m.ins, m.id)}"
        out.append({"response": {"status": "201 Created", "location": location}})
    answer = bundle({"resourceType": "Bundle", "type": "transaction-response", "entry": out})
    return fhir(dump(answer))


@router.get("/List")
@router.get("/List/_search")
@router.post("/List/_search")
async def find_lists(request: Request, who: Caller) -> Response:
    """ITI-66 Find Lists: the submission sets of a patient, each holding the documents of
    it the caller may read (a set with none is not shown)."""
    wants_json(request)
    base = base_url(request)
    search = translate.document_search(await search_params(request), CATALOGUE, lists=True)
    self_link = f"{base}/List?{urlencode(search.kept)}"
    ds = downstream(request)
    if search.empty:
        await _dossier_readable(request, who, search.ins)
        return fhir(searchset([], self_link, "", 0))
    sets: dict[str, tuple[pb.DocumentMetadata, list[str]]] = {}
    cursor = ""
    for _ in range(translate.MAX_LIST_PAGES):
        resp = await ds.call(
            ds.dossier.ListDocuments,
            pb.ListDocumentsRequest(
                ins=search.ins, query=search.query, page_size=translate.MAX_COUNT, cursor=cursor
            ),
            token=who.token,
        )
        for m in resp.items:
            if m.HasField("submission"):
                held = sets.setdefault(m.submission.id, (m, []))
                held[1].append(doc_id(m.ins, m.id))
        cursor = resp.next
        if not cursor:
            break
    wanted = search.list_filters
    chosen = [
        (first, docs)
        for first, docs in sets.values()
        if ("sourceId" not in wanted or first.submission.source_id in wanted["sourceId"])
        and (
            "designationType" not in wanted
            or first.submission.content_type.code in wanted["designationType"]
        )
    ][: search.count]
    names = await names_of(request, who, [first for first, _ in chosen])
    entries = []
    for first, docs in chosen:
        resource = submission_list(first, docs, names.get(first.author, NOBODY))
        entries.append((f"{base}/List/{resource.id}", dump(resource)))
    return fhir(searchset(entries, self_link, "", len(entries)))


async def _patient(request: Request, who: Principal, ins: str) -> identity_pb2.Patient:
    """A patient as whoever may read their dossier sees them: the dossier's rules first
    (consent decides, the read is traced), then identity's record."""
    if who.kind == "system":
        # a facility's software reads back its own documents, never a patient's identity
        raise PermissionDenied("not allowed: systems_do_not_read", slug="access-denied")
    ds = downstream(request)
    await ds.call(ds.dossier.GetDossier, pb.GetDossierRequest(ins=ins), token=who.token)
    resp = await ds.call(
        ds.identity.LookupPatient, identity_pb2.LookupPatientRequest(ins=ins), token=who.token
    )
    return resp.patient


@router.get("/Patient/{ins}")
async def read_patient(ins: str, request: Request, who: Caller) -> Response:
    wants_json(request)
    return fhir(dump(patient(await _patient(request, who, ins))))


@router.get("/Patient")
@router.post("/Patient/_search")
async def find_patients(request: Request, who: Caller) -> Response:
    """Patient search by INS (identifier or _id): the patient, or an empty searchset when
    there is no such patient or DMP; refused as a read of their dossier is."""
    wants_json(request)
    base = base_url(request)
    params = dict(await search_params(request))
    if "identifier" in params:
        ins = translate.patient_ins(params["identifier"], "identifier")
    elif "_id" in params:
        ins = params["_id"]
    else:
        raise InvalidArgument("search patients by identifier (INS) or _id", field="identifier")
    try:
        found = [(f"{base}/Patient/{ins}", dump(patient(await _patient(request, who, ins))))]
    except NotFound:
        found = []
    kept = [(k, v) for k, v in params.items() if k in ("identifier", "_id")]
    return fhir(searchset(found, f"{base}/Patient?{urlencode(kept)}", "", len(found)))


@router.get("/Observation")
@router.get("/Observation/_search")
@router.post("/Observation/_search")
async def find_observations(request: Request, who: Caller) -> Response:
    """The patient's health measurements (vital signs and glycaemia), read as /v1 reads them:
    consent decides, the read is traced."""
    wants_json(request)
    base = base_url(request)
    search = observations.observation_search(await search_params(request))
    query = pb.ListMeasurementsRequest(
        ins=search.ins, kind=search.kinds[0] if len(search.kinds) == 1 else ""
    )
    if search.since is not None:
        stamp(query.measured_from, search.since, "date")
    if search.before is not None:
        stamp(query.measured_to, search.before - timedelta(microseconds=1), "date")
    ds = downstream(request)
    resp = await ds.call(ds.dossier.ListMeasurements, query, token=who.token)
    found = [m for m in resp.measurements if search.wants(m.kind)]
    entries = [
        (
            f"{base}/Observation/{observations.observation_id(search.ins, m.id)}",
            dump(observations.observation(search.ins, m)),
        )
        for m in found
    ]
    self_link = f"{base}/Observation?{urlencode(search.kept)}"
    return fhir(searchset(entries, self_link, "", len(entries)))


@router.api_route(
    "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def unsupported(path: str, request: Request) -> Response:
    detail = f"{request.method} {path} is not supported here: see /fhir/R4/metadata"
    if request.method == "GET":
        raise NotFound(detail, slug="not-supported")
    raise MethodNotAllowed(detail, slug="not-supported")

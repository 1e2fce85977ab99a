"""FHIR requests into the platform's: search parameters into a DocumentQuery, an ITI-65
transaction Bundle into one AddDocuments request. Errors name the FHIR element at fault."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from dmp.dossier.v1 import dossier_pb2 as pb
from dmp_gateway.clients import stamp
from dmp_gateway.fhir import codes
from dmp_gateway.fhir.resources import split_id
from dmp_kit.auth import Principal
from dmp_kit.catalogue import Catalogue
from dmp_kit.errors import InvalidArgument, PermissionDenied
from dmp_kit.identifiers import is_valid_ins

Json = dict[str, Any]
MAX_COUNT = 200
MAX_LIST_PAGES = 20  # ITI-66 reads at most this many pages of documents to group
DEFAULT_COUNT = 50
STATUSES = {
    "current": (pb.DOCUMENT_STATUS_APPROVED, pb.DOCUMENT_STATUS_ARCHIVED),
    "superseded": (pb.DOCUMENT_STATUS_SUPERSEDED,),
    "entered-in-error": (pb.DOCUMENT_STATUS_DELETED,),
}
_DATE = re.compile(
    r"^(?P<prefix>eq|ne|gt|lt|ge|le|sa|eb|ap)?"
    r"(?P<value>\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?)$"
)


def patient_ins(value: str, param: str) -> str:
    """The INS a `patient` reference or a `patient.identifier` token names."""
    if param.endswith(".identifier") or "|" in value:
        system, _, ins = value.rpartition("|")
        if system and system not in codes.INS_SYSTEMS:
            raise InvalidArgument(
                "an INS system is one of " + ", ".join(codes.INS_SYSTEMS), field=param
            )
    else:
        ins = value.rsplit("Patient/", 1)[-1]
    if not is_valid_ins(ins):
        raise InvalidArgument("not a valid INS", field=param)
    return ins


def _range(value: str, param: str) -> tuple[str, datetime, datetime]:
    """A date parameter: its prefix and the [start, end) its precision spans."""
    found = _DATE.match(value)
    if not found:
        raise InvalidArgument(f"not a FHIR date: {value!r}", field=param)
    prefix, text = found["prefix"] or "eq", found["value"]
    if prefix in ("ne", "sa", "eb", "ap"):
        raise InvalidArgument(f"the prefix {prefix!r} is not supported", field=param)
    parts = len(text)
    try:
        if parts == 4:
            start = datetime(int(text), 1, 1, tzinfo=UTC)
            end = start.replace(year=start.year + 1)
        elif parts == 7:
            start = datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
            end = (start + timedelta(days=32)).replace(day=1)
        elif parts == 10:
            start = datetime.fromisoformat(text).replace(tzinfo=UTC)
            end = start + timedelta(days=1)
        else:
            start = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if start.tzinfo is None:
                start = start.replace(tzinfo=UTC)
            end = start + timedelta(seconds=1)
    except (ValueError, OverflowError) as exc:  # 2026-13, 2026-02-30, year 9999 + 1
        raise InvalidArgument(f"not a FHIR date: {value!r}", field=param) from exc
    return prefix, start, end


def _bounds(values: list[str], param: str) -> tuple[datetime | None, datetime | None]:
    """Date parameters (all of which hold) as one [from, before)."""
    low: datetime | None = None
    high: datetime | None = None
    for value in values:
        prefix, start, end = _range(value, param)
        lo, hi = {
            "eq": (start, end),
            "ge": (start, None),
            "gt": (end, None),
            "le": (None, end),
            "lt": (None, start),
        }[prefix]
        if lo is not None and (low is None or lo > low):
            low = lo
        if hi is not None and (high is None or hi < high):
            high = hi
    return low, high


def _token(value: str) -> tuple[str, str]:
    system, bar, code = value.partition("|")
    return (system, code) if bar else ("", value)


def _reference_id(value: str) -> str:
    """A document's own id from a DocumentReference reference, an entryUUID or an id."""
    tail = value.rsplit("/", 1)[-1]
    if tail.startswith("urn:uuid:"):
        return tail.removeprefix("urn:uuid:")
    return split_id(tail)[1] or tail


@dataclass
class Search:
    ins: str
    query: pb.DocumentQuery
    count: int
    cursor: str
    empty: bool  # a condition no document can meet (an unknown code)
    kept: list[tuple[str, str]] = field(default_factory=list)  # for the self and next links
    list_filters: dict[str, list[str]] = field(default_factory=dict)  # ITI-66's own


def document_search(
    params: list[tuple[str, str]], catalogue: Catalogue, *, lists: bool = False
) -> Search:
    """ITI-67's parameters (ITI-66's when `lists`) as one query. Unknown parameters are
    ignored, as FHIR lets a server do, and left out of the self link."""
    q = pb.DocumentQuery()
    ins = ""
    count = DEFAULT_COUNT
    cursor = ""
    empty = False
    kept: list[tuple[str, str]] = []
    dates: dict[str, list[str]] = {}
    list_filters: dict[str, list[str]] = {}
    for name, value in params:
        known = True
        values = [v for v in value.split(",") if v]
        if name in ("patient", "patient.identifier", "subject", "subject.identifier"):
            found = patient_ins(value, name)
            if ins and found != ins:
                raise InvalidArgument("one patient per search", field=name)
            ins = found
        elif name == "status":
            for v in values:
                if lists:
                    if v != "current":
                        empty = True
                    continue
                if v not in STATUSES:
                    raise InvalidArgument(
                        "status is current, superseded or entered-in-error", field=name
                    )
                q.statuses.extend(STATUSES[v])
        elif name == "_count":
            if not value.isdigit() or not 1 <= int(value) <= MAX_COUNT:
                raise InvalidArgument(f"_count is 1 to {MAX_COUNT}", field=name)
            count = int(value)
        elif name == "_cursor":
            cursor = value
        elif name in ("date", "creation", "period"):
            dates.setdefault("period" if name == "period" else "date", []).append(value)
        elif name == "code" and lists:
            if any(_token(v)[1] != "submissionset" for v in values):
                empty = True  # folders are not kept
        elif name == "identifier":
            for v in values:
                token = _token(v)[1]
                if lists:
                    q.submission_sets.append(token.removeprefix("urn:uuid:"))
                    q.submission_sets.append(token)
                else:
                    q.identifiers.append(token.removeprefix("urn:uuid:"))
                    q.identifiers.append(token)
        elif lists:
            known = name in ("designationType", "sourceId", "source.given", "source.family")
            if name == "source.given":
                q.author_given.extend(values)
            elif name == "source.family":
                q.author_family.extend(values)
            elif known:  # matched on the lists themselves
                list_filters.setdefault(name, []).extend(_token(v)[1] for v in values)
        elif name == "type":
            wanted = {_type_code(v) for v in values} - {""}
            q.type_codes.extend(sorted(c for c in wanted if c in catalogue.types))
            empty = empty or not q.type_codes
        elif name == "category":
            sections = {
                s
                for v in values
                for s, (code, _) in codes.SECTION_CLASS.items()
                if _token(v)[1] == code and _token(v)[0] in ("", codes.CLASS)
            }
            q.sections.extend(sorted(sections))
            empty = empty or not sections
        elif name == "author.given":
            q.author_given.extend(values)
        elif name == "author.family":
            q.author_family.extend(values)
        elif name in ("setting", "facility", "event", "format"):
            target = {
                "setting": q.practice_settings,
                "facility": q.facility_types,
                "event": q.events,
                "format": q.formats,
            }[name]
            target.extend(pb.Code(system=s, code=c) for s, c in map(_token, values))
        elif name == "security-label":
            tokens = [_token(v)[1] for v in values]
            if "N" not in tokens:  # every document is N: the others filter
                labels = [t for t in tokens if t in codes.VISIBILITY_DISPLAY]
                q.labels.extend(labels)
                empty = empty or not labels
        elif name == "related":
            q.related.extend(_reference_id(v) for v in values)
        elif name == "contenttype":
            q.mime_types.extend(values)
        else:
            known = False
        if known and name != "_cursor":
            kept.append((name, value))
    if not ins:
        raise InvalidArgument(
            "a search names its patient: patient or patient.identifier", field="patient"
        )
    for name, values in dates.items():
        low, high = _bounds(values, name)
        if name == "date":
            if low:
                stamp(q.created_from, low, name)
            if high:
                stamp(q.created_before, high, name)
        else:
            if low:
                stamp(q.period_from, low, name)
            if high:
                stamp(q.period_before, high, name)
    return Search(ins, q, count, cursor, empty, kept, list_filters)


def _type_code(value: str) -> str:
    """Our type code for a FHIR type token (LOINC, or TRE_A05 for the French ones)."""
    system, code = _token(value)
    if system in ("", codes.TYPE_FR) and code in codes.FROM_FR_TYPE:
        return codes.FROM_FR_TYPE[code]
    if system in ("", codes.LOINC):
        return code
    return ""


# ---------------------------------------------------------------------------------- ITI-65


@dataclass
class Submission:
    ins: str
    request: pb.AddDocumentsRequest
    # per Bundle entry: ("List", None) or (type, index of its document in the request)
    entries: list[tuple[str, int | None]]
    # the Bundle entry index of each document of the request
    document_entries: list[int]


def _where(i: int, path: str = "") -> str:
    return f"Bundle.entry[{i}].resource" + (f".{path}" if path else "")


def parse_bundle(raw: bytes) -> Bundle:
    """The body as a Bundle, checked by the model library (FHIR's types and cardinalities)."""
    try:
        return Bundle.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = "Bundle" + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"] if p != "__root__"
        )
        raise InvalidArgument(f"not a valid Bundle: {first['msg']}", field=path) from exc


def _subject_ins(subject: Any, where: str) -> str:
    if subject is None:
        raise InvalidArgument("the patient is required", field=where)
    if subject.identifier is not None and subject.identifier.value:
        system = subject.identifier.system or ""
        if system and system not in codes.INS_SYSTEMS:
            raise InvalidArgument("the patient is named by their INS", field=where)
        ins = subject.identifier.value
    else:
        ref = subject.reference or ""
        ins = (
            ref.split("?identifier=")[-1].rpartition("|")[2]
            if "?" in ref
            else ref.rsplit("Patient/", 1)[-1]
        )
    if not is_valid_ins(ins):
        raise InvalidArgument("the patient is named by a valid INS", field=where)
    return str(ins)


def _first_code(concept: Any) -> pb.Code | None:
    if concept is None or not concept.coding:
        return None
    c = concept.coding[0]
    return pb.Code(system=c.system or "", code=c.code or "", display=c.display or "")


def _author(resource: Any, who: Principal, i: int) -> pb.AuthorPerson | None:
    """The person the submitting software names as author: a contained Practitioner (or a
    PractitionerRole pointing at one) identified by their RPPS."""
    contained = {c.id: c for c in resource.contained or []}
    for n, author in enumerate(resource.author or []):
        target = contained.get((author.reference or "").removeprefix("#"))
        if target is None:
            continue
        role = None
        if target.get_resource_type() == "PractitionerRole":
            role = target
            target = contained.get(
                ((target.practitioner.reference if target.practitioner else "") or "").removeprefix(
                    "#"
                )
            )
        if target is None or target.get_resource_type() != "Practitioner":
            continue
        rpps = ""
        for ident in target.identifier or []:
            if ident.system == codes.IDNPS and (ident.value or "").startswith("8"):
                rpps = ident.value[1:]
            elif ident.system == codes.RPPS:
                rpps = ident.value or ""
        if not rpps:
            raise InvalidArgument(
                "an author is identified by their RPPS (idNatPs 8…)",
                field=_where(i, f"author[{n}]"),
            )
        if who.kind == "professional" and rpps != who.rpps:
            raise PermissionDenied(
                "a professional submits documents as their own author",
                field=_where(i, f"author[{n}]"),
                slug="author-only",
            )
        name = (target.name or [None])[0]
        person = pb.AuthorPerson(
            rpps=rpps,
            given=(name.given or [""])[0] if name else "",
            family=(name.family or "") if name else "",
        )
        profession = _first_code(role.code[0]) if role is not None and role.code else None
        if profession is not None:
            person.role.CopyFrom(profession)
        return person
    return None


def submission(bundle: Bundle, who: Principal, catalogue: Catalogue) -> Submission:
    """An ITI-65 Provide Document Bundle as one AddDocuments request."""
    if bundle.type != "transaction":
        raise InvalidArgument("ITI-65 takes a transaction Bundle", field="Bundle.type")
    entries = bundle.entry or []
    binaries: dict[str, tuple[int, Any]] = {}
    lists: list[tuple[int, Any]] = []
    documents: list[tuple[int, Any]] = []
    for i, entry in enumerate(entries):
        resource = entry.resource
        kind = resource.get_resource_type() if resource is not None else ""
        if entry.request is None or entry.request.method != "POST":
            raise InvalidArgument(
                "each entry is created (request.method POST)", field=f"Bundle.entry[{i}].request"
            )
        if kind == "Binary":
            binaries[entry.fullUrl or ""] = (i, resource)
        elif kind == "List":
            lists.append((i, resource))
        elif kind == "DocumentReference":
            documents.append((i, resource))
        else:
            raise InvalidArgument(
                f"a Provide Document Bundle holds List, DocumentReference and Binary, not {kind}",
                field=_where(i),
            )
    if len(lists) != 1:
        raise InvalidArgument("one SubmissionSet List per Bundle", field="Bundle.entry")
    if not documents:
        raise InvalidArgument("at least one DocumentReference", field="Bundle.entry")
    li, listed = lists[0]
    ins = _subject_ins(listed.subject, _where(li, "subject"))
    request = pb.AddDocumentsRequest(ins=ins)
    for ident in listed.identifier or []:
        if ident.use == "usual" and ident.value:
            request.submission.unique_id = ident.value
    for ext in listed.extension or []:
        if ext.url.endswith("/ihe-sourceId") and ext.valueIdentifier is not None:
            request.submission.source_id = ext.valueIdentifier.value or ""
        elif ext.url.endswith("/ihe-designationType"):
            found = _first_code(ext.valueCodeableConcept)
            if found:
                request.submission.content_type.CopyFrom(found)
    if not request.submission.source_id:
        raise InvalidArgument(
            "the SubmissionSet names its source system (the ihe-sourceId extension, an OID; "
            "MHD Comprehensive SubmissionSet 1..1)",
            field=_where(li, "extension"),
        )
    request.submission.title = listed.title or ""
    shape: list[tuple[str, int | None]] = [("", None)] * len(entries)
    shape[li] = ("List", None)
    document_entries: list[int] = []
    for n, (i, doc) in enumerate(documents):
        document_entries.append(i)
        shape[i] = ("DocumentReference", n)
        add = request.documents.add()
        add.ins = _subject_ins(doc.subject, _where(i, "subject"))
        if add.ins != ins:
            raise InvalidArgument(
                "every document is of the SubmissionSet's patient", field=_where(i, "subject")
            )
        add.type_code = _type_code(
            f"{doc.type.coding[0].system or ''}|{doc.type.coding[0].code or ''}"
            if doc.type is not None and doc.type.coding
            else ""
        )
        if add.type_code not in catalogue.types:
            raise InvalidArgument(
                "a type from the platform's catalogue (LOINC or TRE_A05)",
                field=_where(i, "type"),
                slug="unknown-type-code",
            )
        if len(doc.content) != 1:
            raise InvalidArgument("one content per DocumentReference", field=_where(i, "content"))
        attachment = doc.content[0].attachment
        if attachment.data is not None:
            content = _base64(attachment.data, _where(i, "content[0].attachment.data"))
        else:
            named = binaries.get(attachment.url or "")
            if named is None:
                raise InvalidArgument(
                    "attachment.url names a Binary of this Bundle by its fullUrl",
                    field=_where(i, "content[0].attachment.url"),
                )
            bi, binary = named
            shape[bi] = ("Binary", n)
            content = _base64(binary.data or "", _where(bi, "data"))
        add.content = content
        add.mime_type = attachment.contentType or ""
        if not add.mime_type:
            raise InvalidArgument(
                "contentType is required", field=_where(i, "content[0].attachment.contentType")
            )
        if attachment.size is not None and attachment.size != len(content):
            raise InvalidArgument(
                "size is not the content's", field=_where(i, "content[0].attachment.size")
            )
        if attachment.hash is not None:
            given = _base64(attachment.hash, _where(i, "content[0].attachment.hash"))
            if given != hashlib.sha1(content, usedforsecurity=False).digest():
                raise InvalidArgument(
                    "hash is not the content's SHA-1", field=_where(i, "content[0].attachment.hash")
                )
        add.title = attachment.title or doc.description or ""
        if not add.title:
            raise InvalidArgument(
                "a title is required", field=_where(i, "content[0].attachment.title")
            )
        ctx = add.context
        if doc.masterIdentifier is not None:
            ctx.unique_id = doc.masterIdentifier.value or ""
        ctx.description = doc.description or ""
        ctx.language = attachment.language or ""
        fmt = doc.content[0].format
        if fmt is not None and fmt.code:
            ctx.format.CopyFrom(
                pb.Code(system=fmt.system or "", code=fmt.code, display=fmt.display or "")
            )
        if doc.category:
            found_class = _first_code(doc.category[0])
            if found_class:
                ctx.class_code.CopyFrom(found_class)
        for label in doc.securityLabel or []:
            for c in label.coding or []:
                if c.code == "INVISIBLE_PATIENT":
                    add.hidden_from_patient = True
                elif c.code == "INVISIBLE_REPRESENTANTS_LEGAUX":
                    add.hidden_from_legal_representatives = True
                elif c.code == "MASQUE_PS":
                    raise InvalidArgument(
                        "masking from professionals is the patient's choice, made afterwards",
                        field=_where(i, "securityLabel"),
                    )
        for r, relation in enumerate(doc.relatesTo or []):
            if relation.code != "replaces":
                raise InvalidArgument(
                    "only replacement (replaces) is supported",
                    field=_where(i, f"relatesTo[{r}].code"),
                )
            target = relation.target.reference or "" if relation.target else ""
            target_ins, own = split_id(target.rsplit("/", 1)[-1])
            if target_ins != ins or not own:
                raise InvalidArgument(
                    "replaces a DocumentReference of this patient",
                    field=_where(i, f"relatesTo[{r}].target"),
                )
            add.replaces = own
        context = doc.context
        if context is not None:
            if context.period is not None:
                if context.period.start is not None:
                    add.service_start.FromDatetime(
                        _utc(context.period.start, _where(i, "context.period.start"))
                    )
                if context.period.end is not None:
                    ctx.service_stop.FromDatetime(
                        _utc(context.period.end, _where(i, "context.period.end"))
                    )
            for target, value in (
                (ctx.practice_setting, context.practiceSetting),
                (ctx.facility_type, context.facilityType),
            ):
                stated = _first_code(value)
                if stated:
                    target.CopyFrom(stated)
            for event in context.event or []:
                found_event = _first_code(event)
                if found_event:
                    ctx.events.append(found_event)
        person = _author(doc, who, i)
        if person is not None:
            ctx.author_person.CopyFrom(person)
    for i, (kind, _) in enumerate(shape):
        if not kind:
            raise InvalidArgument("a Binary no DocumentReference names", field=_where(i))
    return Submission(ins, request, shape, document_entries)


def _utc(value: Any, where: str) -> datetime:
    """An instant; a date alone (FHIR lets a period be partial) is its midnight UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value)
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidArgument("not a FHIR dateTime", field=where) from exc


def _base64(value: Any, where: str) -> bytes:
    """A base64Binary element's bytes (the model library may have decoded it already)."""
    if isinstance(value, bytes):
        return value
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument("not base64", field=where) from exc


# The dossier's field names for a submitted document → the FHIR element they came from.
DOCUMENT_FIELDS = {
    "type_code": "type",
    "title": "content[0].attachment.title",
    "mime_type": "content[0].attachment.contentType",
    "content": "content[0].attachment",
    "replaces": "relatesTo[0].target",
    "service_start": "context.period.start",
    "context.unique_id": "masterIdentifier",
    "context.service_stop": "context.period.end",
    "context.practice_setting": "context.practiceSetting",
    "context.facility_type": "context.facilityType",
    "context.events": "context.event",
    "context.format": "content[0].format",
    "context.class_code": "category",
    "context.language": "content[0].attachment.language",
    "context.description": "description",
    "context.author_person": "author",
}


def fhir_field(dossier_field: str, sub: Submission) -> str:
    """Where in the Bundle a field the dossier refused came from."""
    found = re.match(r"^documents\[(\d+)\]\.?(.*)$", dossier_field)
    if found:
        entry = sub.document_entries[int(found[1])]
        rest = found[2]
        for ours, theirs in DOCUMENT_FIELDS.items():
            if rest == ours or rest.startswith(ours + ".") or rest.startswith(ours + "["):
                return _where(entry, theirs)
        return _where(entry)
    if dossier_field.startswith("submission"):
        return _where(sub.entries.index(("List", None)))
    if dossier_field == "ins":
        return _where(sub.entries.index(("List", None)), "subject")
    return "Bundle"

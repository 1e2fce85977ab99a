"""The dossier's rules that are not about access (those live in consent): lifecycle,
visibility labels, document checks, scheduled dates. No I/O."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from dmp_kit.errors import Conflict, InvalidArgument, PayloadTooLarge, PermissionDenied

Document = dict[str, Any]

MASKED = "MASQUE_PS"
HIDDEN_FROM_PATIENT = "INVISIBLE_PATIENT"
HIDDEN_FROM_REPRESENTATIVES = "INVISIBLE_REPRESENTANTS_LEGAUX"
HIDDEN_FROM_TRUSTED = "MASQUE_PROCHES"  # the patient keeps it from their trusted persons
REMINDER_AFTER = timedelta(weeks=2)  # rule 8: the patient is told after 2 weeks
AUTO_REVEAL_AFTER = timedelta(days=30)  # rule 8: visible after 1 month
ARCHIVE_YEARS = 10  # rule 13: a closed dossier is purged after 10 years
DELETION_GRACE = timedelta(days=30)  # rule 13: an express deletion purges within 3 months
_MIME_RE = re.compile(r"^[a-z]+/[a-z0-9.+-]{1,100}$")


class Status(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    DELETION_REQUESTED = "deletion_requested"


class DocStatus(StrEnum):
    APPROVED = "approved"
    ARCHIVED = "archived"
    DELETED = "deleted"
    SUPERSEDED = "superseded"


def require_consent(patient_consent: bool) -> None:
    if not patient_consent:
        raise InvalidArgument(
            "opening a DMP requires the patient's consent",
            field="patient_consent",
            slug="consent-required",
        )


def check_vitale(given: str, registered: str) -> None:
    if given.strip().upper() != registered.strip().upper():
        raise InvalidArgument(
            "the Vitale card serial does not match the patient's",
            field="vitale_serial",
            slug="vitale-mismatch",
        )


def years_later(moment: datetime, years: int) -> datetime:
    """The same day `years` later; 29 February becomes 28 February in a common year."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def after_close(status: Status, now: datetime) -> tuple[Status, datetime]:
    if status is not Status.OPEN:
        raise Conflict("the dossier is not open", slug="dossier-closed")
    return Status.CLOSED, years_later(now, ARCHIVE_YEARS)


def after_reopen(status: Status) -> Status:
    if status is Status.OPEN:
        raise Conflict("the dossier is already open", slug="dossier-open")
    return Status.OPEN


def after_deletion_request(status: Status, now: datetime) -> tuple[Status, datetime]:
    if status is Status.DELETION_REQUESTED:
        raise Conflict("deletion is already requested", slug="deletion-requested")
    return Status.DELETION_REQUESTED, now + DELETION_GRACE


def check_title(title: str) -> str:
    title = title.strip()
    if not 1 <= len(title) <= 200:
        raise InvalidArgument("a title has 1 to 200 characters", field="title")
    return title


def check_mime_type(mime: str) -> str:
    mime = mime.strip().lower()
    if not _MIME_RE.match(mime):
        raise InvalidArgument("not a MIME type (e.g. application/pdf)", field="mime_type")
    return mime


def check_size(size: int, limit: int) -> None:
    if size == 0:
        raise InvalidArgument("the document is empty", field="content_base64")
    if size > limit:
        raise PayloadTooLarge(f"a document may not exceed {limit} bytes", field="content_base64")


def initial_labels(
    hidden_from_patient: bool, hidden_from_representatives: bool, author_is_patient: bool
) -> list[str]:
    if author_is_patient and (hidden_from_patient or hidden_from_representatives):
        raise InvalidArgument(
            "a patient cannot hide a document from themselves", field="hidden_from_patient"
        )
    labels = []
    if hidden_from_patient:
        labels.append(HIDDEN_FROM_PATIENT)
    if hidden_from_representatives:
        labels.append(HIDDEN_FROM_REPRESENTATIVES)
    return labels


HIDING_LABELS = (HIDDEN_FROM_PATIENT, HIDDEN_FROM_REPRESENTATIVES)


@dataclass(frozen=True)
class VisibilityChange:
    masked_from_professionals: bool | None = None
    hidden_from_trusted_persons: bool | None = None
    hidden_from_patient: bool | None = None
    hidden_from_legal_representatives: bool | None = None


def apply_visibility(
    labels: list[str], change: VisibilityChange, *, is_patient: bool, is_author: bool
) -> list[str]:
    """Rules 7 and 8: the patient masks and unmasks; the author reveals; nobody re-hides."""
    result = list(labels)
    if change.masked_from_professionals is not None:
        if not is_patient:
            raise PermissionDenied(
                "only the patient masks or unmasks a document", slug="patient-only"
            )
        result = [x for x in result if x != MASKED]
        if change.masked_from_professionals:
            result.append(MASKED)
    if change.hidden_from_trusted_persons is not None:
        if not is_patient:
            raise PermissionDenied(
                "only the patient keeps a document from their trusted persons",
                slug="patient-only",
            )
        result = [x for x in result if x != HIDDEN_FROM_TRUSTED]
        if change.hidden_from_trusted_persons:
            result.append(HIDDEN_FROM_TRUSTED)
    for label, wanted, name in (
        (HIDDEN_FROM_PATIENT, change.hidden_from_patient, "hidden_from_patient"),
        (
            HIDDEN_FROM_REPRESENTATIVES,
            change.hidden_from_legal_representatives,
            "hidden_from_legal_representatives",
        ),
    ):
        if wanted is None:
            continue
        if wanted:
            if label not in labels:
                raise Conflict(
                    "a document once visible cannot be hidden again",
                    field=name,
                    slug="cannot-rehide",
                )
            continue
        if not is_author:
            raise PermissionDenied("only the author reveals a document", slug="author-only")
        # Each label is revealed on its own: the patient's announcement is not the
        # representatives' (rule 8).
        result = [x for x in result if x != label]
    return result


def reminders_due(created_at: datetime, labels: list[str], now: datetime) -> list[str]:
    """The hiding labels whose 2-week reminder is due (rule 8): one reminder each."""
    if now - created_at < REMINDER_AFTER:
        return []
    return [x for x in HIDING_LABELS if x in labels]


def revealed(created_at: datetime, labels: list[str], now: datetime) -> list[str] | None:
    """The labels once a month has passed (rule 8: visible automatically), or None if the
    document keeps them all."""
    if now - created_at < AUTO_REVEAL_AFTER or not set(HIDING_LABELS) & set(labels):
        return None
    return [x for x in labels if x not in HIDING_LABELS]


def encode_cursor(created_at: datetime, doc_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), doc_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, doc_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(at), str(doc_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidArgument("the cursor is invalid", field="cursor") from exc


MAX_ITEMS = 100
MAX_TEXT = 200
MAX_DIRECTIVES = 20_000


def check_entries(values: list[str], field: str) -> list[str]:
    if len(values) > MAX_ITEMS:
        raise InvalidArgument(f"at most {MAX_ITEMS} entries", field=field)
    cleaned = [v.strip() for v in values]
    for i, value in enumerate(cleaned):
        if not 1 <= len(value) <= MAX_TEXT:
            raise InvalidArgument(
                f"each entry has 1 to {MAX_TEXT} characters", field=f"{field}.{i}"
            )
    return cleaned


@dataclass(frozen=True)
class Measurement:
    kind: str
    value: str
    unit: str
    measured_at: datetime


def check_measurement(m: Measurement, index: int, now: datetime) -> Measurement:
    where = f"measurements.{index}"
    if not 1 <= len(m.kind.strip()) <= 50:
        raise InvalidArgument(
            "kind is 1 to 50 characters (e.g. blood_pressure)", field=f"{where}.kind"
        )
    if not 1 <= len(m.value.strip()) <= 50:
        raise InvalidArgument("value is 1 to 50 characters", field=f"{where}.value")
    if not 1 <= len(m.unit.strip()) <= 20:
        raise InvalidArgument("a measurement has a unit (e.g. mmHg, g/L)", field=f"{where}.unit")
    if m.measured_at > now:
        raise InvalidArgument("measured_at is in the future", field=f"{where}.measured_at")
    return Measurement(m.kind.strip(), m.value.strip(), m.unit.strip(), m.measured_at)


# Health measurements ------------------------------------------------------------------------
#
# Each kind is a series in one UCUM unit. The plausible ranges catch a typing or unit mistake
# (70 entered in grams, a height in metres), not an abnormal value: they hold every measurement
# a living person can have, from a premature newborn to the extremes on record, e.g. a
# birth weight of about 0.3 kg to the heaviest people weighed (about 600 kg); 25 cm at birth
# to 272 cm; a heart rate from deep bradycardia (20/min) to supraventricular tachycardia in an
# infant (300/min); systolic pressure 40 (shock) to 300 mm[Hg] and diastolic 20 to 200
# (hypertensive emergencies stay well below); a glycaemia of 0.1 g/L (severe hypoglycaemia)
# to 10 g/L (hyperosmolar state; meters stop at 6 g/L); a waist of 20 to 300 cm.
# Glycaemia is written in g/L, as French patients and labs write it; mg/dL (100 mg/dL = 1 g/L)
# and mmol/L (molar mass of glucose 180.16 g/mol: 1 mmol/L = 0.18016 g/L) are converted.


@dataclass(frozen=True)
class MeasurementKind:
    name: str
    unit: str  # UCUM
    low: float
    high: float
    # other UCUM units accepted, and the factor to the kind's unit
    converted: tuple[tuple[str, float], ...] = ()


MEASUREMENT_KINDS = {
    k.name: k
    for k in (
        MeasurementKind("weight", "kg", 0.2, 650),
        MeasurementKind("height", "cm", 20, 275),
        MeasurementKind("blood_pressure", "mm[Hg]", 20, 300),
        MeasurementKind("heart_rate", "/min", 20, 300),
        MeasurementKind("glycaemia", "g/L", 0.1, 10, (("mg/dL", 0.01), ("mmol/L", 0.18016))),
        MeasurementKind("waist", "cm", 20, 300),
    )
}
BMI = MeasurementKind("bmi", "kg/m2", 5, 300)  # computed from weight and height, never entered
SYSTOLIC = (40.0, 300.0)
DIASTOLIC = (20.0, 200.0)
MAX_NOTE = 500
MAX_POINTS = 5000  # per series: one record of at most ~1 MB
EARLIEST_MEASUREMENT = datetime(1900, 1, 1, tzinfo=UTC)
MEASUREMENT_SOURCES = ("patient", "professional", "device")


@dataclass(frozen=True)
class NewMeasurement:
    """A measurement as given (any unit the kind accepts)."""

    kind: str
    unit: str
    measured_at: datetime
    value: float = 0.0
    systolic: float = 0.0
    diastolic: float = 0.0
    note: str = ""


def _in_range(value: float, low: float, high: float, field: str, unit: str) -> None:
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidArgument(
            f"{field} must be between {low:g} and {high:g} {unit}",
            field=field,
            slug="measurement-out-of-range",
        )


def check_new_measurement(m: NewMeasurement, now: datetime) -> Document:
    """A measurement checked and in its kind's unit, as stored (without id, author, source)."""
    kind = MEASUREMENT_KINDS.get(m.kind)
    if kind is None:
        if m.kind == BMI.name:
            raise InvalidArgument("the BMI is computed from weight and height", field="kind")
        raise InvalidArgument(f"kind is one of {', '.join(MEASUREMENT_KINDS)}", field="kind")
    factors = {kind.unit: 1.0, **dict(kind.converted)}
    if m.unit not in factors:
        units = ", ".join(factors)
        raise InvalidArgument(f"the unit of {kind.name} is one of {units}", field="unit")
    if m.measured_at > now:
        raise InvalidArgument("measured_at is in the future", field="measured_at")
    if m.measured_at < EARLIEST_MEASUREMENT:
        raise InvalidArgument("measured_at is before 1900", field="measured_at")
    note = m.note.strip()
    if len(note) > MAX_NOTE:
        raise InvalidArgument(f"a note has at most {MAX_NOTE} characters", field="note")
    point: Document = {"kind": kind.name, "unit": kind.unit, "measured_at": m.measured_at}
    if kind.name == "blood_pressure":
        if m.value:
            raise InvalidArgument("blood pressure is systolic and diastolic", field="value")
        _in_range(m.systolic, *SYSTOLIC, "systolic", kind.unit)
        _in_range(m.diastolic, *DIASTOLIC, "diastolic", kind.unit)
        if m.systolic <= m.diastolic:
            raise InvalidArgument(
                "systolic is above diastolic", field="systolic", slug="measurement-out-of-range"
            )
        point |= {"systolic": round(m.systolic, 1), "diastolic": round(m.diastolic, 1)}
    else:
        if m.systolic or m.diastolic:
            raise InvalidArgument(f"{kind.name} has one value", field="systolic")
        value = m.value * factors[m.unit]
        _in_range(value, kind.low, kind.high, "value", kind.unit)
        point["value"] = round(value, 3)
    if note:
        point["note"] = note
    return point


def bmi_points(weights: list[Document], heights: list[Document]) -> list[Document]:
    """A BMI for each weight: weight / height² with the height measured last at or before it
    (or, with none before, the first one after: an adult's height barely changes). Nothing
    without a height; a value outside BMI's plausible range (a height or weight of someone
    else, a child's old height) is left out rather than shown."""
    ordered = sorted(heights, key=lambda h: h["measured_at"])
    points = []
    for w in weights:
        before = [h for h in ordered if h["measured_at"] <= w["measured_at"]]
        height = before[-1] if before else (ordered[0] if ordered else None)
        if height is None:
            continue
        bmi = round(w["value"] / (height["value"] / 100) ** 2, 1)
        if BMI.low <= bmi <= BMI.high:
            points.append(
                {
                    "id": f"bmi-{w['id']}",
                    "kind": BMI.name,
                    "unit": BMI.unit,
                    "value": bmi,
                    "measured_at": w["measured_at"],
                    "source": w["source"],
                    "recorded_at": w["recorded_at"],
                    "computed": True,
                }
            )
    return points


def measurement_window(
    points: list[Document], since: datetime | None, until: datetime | None
) -> list[Document]:
    """The points measured within [since, until] (either open), oldest first."""
    kept = [
        p
        for p in points
        if (since is None or p["measured_at"] >= since)
        and (until is None or p["measured_at"] <= until)
    ]
    return sorted(kept, key=lambda p: (p["measured_at"], p["id"]))


def check_contact(name: str, phone: str, email: str, index: int) -> None:
    if not 1 <= len(name.strip()) <= 100:
        raise InvalidArgument("a contact has a name", field=f"contacts.{index}.name")
    if not (phone.strip() or email.strip()):
        raise InvalidArgument(
            "a contact has a phone number or an e-mail address", field=f"contacts.{index}.phone"
        )


def check_directives(text: str) -> str:
    if not 1 <= len(text.strip()) <= MAX_DIRECTIVES:
        raise InvalidArgument(f"directives have 1 to {MAX_DIRECTIVES} characters", field="text")
    return text.strip()


# IHE XDS metadata a submitter may give (IHE MHD through the FHIR interface).
UNIQUE_ID_RE = re.compile(
    r"^(urn:oid:[0-2](\.(0|[1-9][0-9]*))+"
    r"|urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
MAX_CODE_TEXT = 256
MAX_EVENTS = 20
MAX_DESCRIPTION = 1000
MAX_SUBMISSION = 100  # documents in one submission


def check_unique_id(value: str, field: str) -> str:
    if value and (len(value) > 128 or not UNIQUE_ID_RE.match(value)):
        raise InvalidArgument("a unique id is urn:oid:… or urn:uuid:…", field=field)
    return value


def check_code(code: dict[str, str], field: str) -> dict[str, str] | None:
    """A coded value as stored (its empty parts left out), or None when it has no code."""
    if not code.get("code"):
        if code.get("system") or code.get("display"):
            raise InvalidArgument("a coded value needs its code", field=f"{field}.code")
        return None
    for part, value in code.items():
        if len(value) > MAX_CODE_TEXT:
            raise InvalidArgument(f"at most {MAX_CODE_TEXT} characters", field=f"{field}.{part}")
    return {part: value for part, value in code.items() if value}


def check_text(value: str, limit: int, field: str) -> str:
    if len(value) > limit:
        raise InvalidArgument(f"at most {limit} characters", field=field)
    return value


@dataclass(frozen=True)
class Query:
    """A search over a dossier's document metadata: every given condition holds, each
    set by any of its values. Times are [from, before)."""

    type_codes: frozenset[str] = frozenset()
    sections: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    created_from: datetime | None = None
    created_before: datetime | None = None
    period_from: datetime | None = None
    period_before: datetime | None = None
    author_given: tuple[str, ...] = ()
    author_family: tuple[str, ...] = ()
    practice_settings: tuple[tuple[str, str], ...] = ()
    facility_types: tuple[tuple[str, str], ...] = ()
    events: tuple[tuple[str, str], ...] = ()
    formats: tuple[tuple[str, str], ...] = ()
    labels: frozenset[str] = frozenset()
    identifiers: frozenset[str] = frozenset()
    related: frozenset[str] = frozenset()
    submission_sets: frozenset[str] = frozenset()
    mime_types: frozenset[str] = frozenset()
    authors: frozenset[str] = frozenset()


def _code_in(code: dict[str, str] | None, wanted: tuple[tuple[str, str], ...]) -> bool:
    """(system, code) pairs; an empty system matches any."""
    if not code:
        return False
    return any(code.get("code") == c and (not s or code.get("system") == s) for s, c in wanted)


def _prefix_in(value: str, prefixes: tuple[str, ...]) -> bool:
    folded = value.casefold()
    return bool(value) and any(folded.startswith(p.casefold()) for p in prefixes)


def matches(doc: dict, q: Query) -> bool:  # type: ignore[type-arg]
    """Whether a document entry meets the query (consent is asked afterwards)."""
    ctx = doc.get("context") or {}
    person = ctx.get("author_person") or {}
    submission = doc.get("submission") or {}
    start = doc.get("service_start")
    stop = ctx.get("service_stop") or start
    return (
        (not q.type_codes or doc["type_code"] in q.type_codes)
        and (not q.sections or doc["section"] in q.sections)
        and (not q.statuses or doc["status"] in q.statuses)
        and (q.created_from is None or doc["created_at"] >= q.created_from)
        and (q.created_before is None or doc["created_at"] < q.created_before)
        and (q.period_from is None or (stop is not None and stop >= q.period_from))
        and (q.period_before is None or (start is not None and start < q.period_before))
        and (not q.author_given or _prefix_in(person.get("given", ""), q.author_given))
        and (not q.author_family or _prefix_in(person.get("family", ""), q.author_family))
        and (not q.practice_settings or _code_in(ctx.get("practice_setting"), q.practice_settings))
        and (not q.facility_types or _code_in(ctx.get("facility_type"), q.facility_types))
        and (not q.events or any(_code_in(e, q.events) for e in ctx.get("events", [])))
        and (not q.formats or _code_in(ctx.get("format"), q.formats))
        and (not q.labels or not q.labels.isdisjoint(doc.get("labels", [])))
        and (
            not q.identifiers
            or doc["_id"] in q.identifiers
            or ctx.get("unique_id", "") in q.identifiers
        )
        and (
            not q.related or doc.get("replaces") in q.related or doc.get("replaced_by") in q.related
        )
        and (
            not q.submission_sets
            or submission.get("id") in q.submission_sets
            or submission.get("unique_id") in q.submission_sets
        )
        and (not q.mime_types or doc["mime_type"] in q.mime_types)
        and (not q.authors or doc["author"] in q.authors or person.get("rpps") in q.authors)
    )

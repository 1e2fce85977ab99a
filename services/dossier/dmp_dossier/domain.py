"""The dossier's rules that are not about access (those live in consent): lifecycle,
visibility labels, document checks, scheduled dates. No I/O."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from dmp_kit.errors import Conflict, InvalidArgument, PayloadTooLarge, PermissionDenied

MASKED = "MASQUE_PS"
HIDDEN_FROM_PATIENT = "INVISIBLE_PATIENT"
HIDDEN_FROM_REPRESENTATIVES = "INVISIBLE_REPRESENTANTS_LEGAUX"
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

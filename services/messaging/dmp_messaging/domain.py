"""Messaging's rules: who may open, reply, close; what a message and an attachment may be.
Pure functions and types, no I/O.

The real service's rules: a conversation is opened by a professional (or a health
establishment's mailbox) with a patient, who replies while it is open; the professional side
closes and reopens it. The one exception: a patient opens a conversation with a pharmacist who
dispensed reimbursed drugs to them within the last 12 months. Whether the professional may
write to this patient at all (an open space, not blocked) is consent's decision.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import puremagic

from dmp_kit.auth import Principal
from dmp_kit.errors import Conflict, InvalidArgument, PermissionDenied

PHARMACIST = "21"
DISPENSATION_MONTHS = 12
MAX_SUBJECT = 200
MAX_BODY = 5_000
MAX_ATTACHMENTS = 3
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
MAX_FILENAME = 120
# A conversation is one database document: past this many messages, open another.
MAX_MESSAGES = 500
# The role of a health establishment's organisational mailbox (a system client).
MAILBOX_ROLE = "mailbox"
# What an attachment may be, by its content (never by its name): what is sniffed → media type.
ACCEPTED_TYPES = {"application/pdf": "application/pdf", "image/png": "image/png"}
ACCEPTED_TYPES |= {"image/jpeg": "image/jpeg"}


class Side(StrEnum):
    """The two sides of a conversation: the patient, and the professional or establishment."""

    PATIENT = "patient"
    COUNTERPART = "counterpart"

    @property
    def other(self) -> Side:
        return Side.COUNTERPART if self is Side.PATIENT else Side.PATIENT


class Status(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class Party:
    kind: str  # patient | professional | system
    id: str  # INS, RPPS or client id
    name: str = ""
    profession: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


def caller_party(who: Principal) -> Party:
    """The caller as a conversation names them; only patients, professionals and
    establishments' mailboxes (systems with the mailbox role) write."""
    if who.kind == "patient" and who.ins:
        return Party("patient", who.ins)
    if who.kind == "professional" and who.rpps:
        return Party("professional", who.rpps, profession=who.profession)
    if who.kind == "system" and who.has_role(MAILBOX_ROLE) and who.client_id:
        return Party("system", who.client_id)
    raise PermissionDenied("messaging is for patients, professionals and establishments")


def side_of(who: Party, patient_ins: str, counterpart_key: str) -> Side | None:
    """Which side of this conversation the caller is on, if any."""
    if who.kind == "patient" and who.id == patient_ins:
        return Side.PATIENT
    if who.key == counterpart_key:
        return Side.COUNTERPART
    return None


def may_open_with_pharmacy(profession: str, dispensed: bool) -> None:
    """The patient's one way to open a conversation."""
    if profession != PHARMACIST:
        raise PermissionDenied(
            "a patient opens a conversation only with a pharmacy; a professional writes first",
            field="pharmacy_rpps",
            slug="conversation-not-allowed",
        )
    if not dispensed:
        raise PermissionDenied(
            f"this pharmacy dispensed nothing reimbursed to you in the last "
            f"{DISPENSATION_MONTHS} months",
            field="pharmacy_rpps",
            slug="conversation-not-allowed",
        )


def may_post(side: Side, status: Status, messages: int) -> None:
    """A reply: either side while the conversation is open (the professional side reopens it
    first when closed)."""
    if status is Status.CLOSED:
        raise Conflict(
            "the conversation is closed: only the professional can reopen it",
            slug="conversation-closed",
        )
    if messages >= MAX_MESSAGES:
        raise Conflict(
            f"a conversation holds {MAX_MESSAGES} messages: open another",
            slug="conversation-full",
        )


def may_set_status(side: Side) -> None:
    if side is not Side.COUNTERPART:
        raise PermissionDenied(
            "only the professional side closes or reopens a conversation",
            slug="conversation-not-allowed",
        )


def subject(value: str) -> str:
    text = value.strip()
    if not text:
        raise InvalidArgument("a conversation needs a subject", field="subject")
    if len(text) > MAX_SUBJECT:
        raise InvalidArgument(f"the subject is at most {MAX_SUBJECT} characters", field="subject")
    return text


def body(value: str, field: str = "body") -> str:
    text = value.strip()
    if not text:
        raise InvalidArgument("a message needs some text", field=field)
    if len(text) > MAX_BODY:
        raise InvalidArgument(f"a message is at most {MAX_BODY} characters", field=field)
    return text


def attachment_count(count: int) -> None:
    if count > MAX_ATTACHMENTS:
        raise InvalidArgument(
            f"at most {MAX_ATTACHMENTS} attachments per message", field="attachments"
        )


def filename(value: str, field: str) -> str:
    """A name for people to read: no path, no control characters, bounded."""
    name = value.replace("\\", "/").rsplit("/", 1)[-1].strip()
    # no control, format (bidirectional overrides: "facture\u202efdp.exe") or line characters
    if not name or any(unicodedata.category(c) in UNSEEN for c in name):
        raise InvalidArgument("the attachment needs a file name", field=field)
    if len(name) > MAX_FILENAME:
        raise InvalidArgument(f"a file name is at most {MAX_FILENAME} characters", field=field)
    return name


UNSEEN = frozenset({"Cc", "Cf", "Zl", "Zp"})
HIDING_LABELS = frozenset({"INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"})


def may_copy(labels: set[str], field: str) -> None:
    """A DMP document hidden from the patient (until its announcement, rule 8) or from their
    legal representatives is not sent to them by message either."""
    if labels & HIDING_LABELS:
        raise PermissionDenied(
            "this document is hidden from the patient until it is announced: it is not sent",
            field=field,
            slug="conversation-not-allowed",
        )


def attachment_type(content: bytes, field: str) -> str:
    """The media type of an attachment, from its first bytes: PDF, PNG or JPEG only."""
    if not content:
        raise InvalidArgument("the attachment is empty", field=field, slug="invalid-attachment")
    if len(content) > MAX_ATTACHMENT_BYTES:
        raise InvalidArgument(
            f"an attachment is at most {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MiB",
            field=field,
            slug="invalid-attachment",
        )
    try:
        sniffed = puremagic.from_string(content[:4096], mime=True)
    except puremagic.PureError:
        sniffed = ""
    if sniffed not in ACCEPTED_TYPES:
        raise InvalidArgument(
            "an attachment is a PDF, PNG or JPEG file (judged by its content, not its name)",
            field=field,
            slug="invalid-attachment",
        )
    return ACCEPTED_TYPES[sniffed]


def notice_recipient(sender: Side, patient: Party, counterpart: Party) -> Party:
    return counterpart if sender is Side.PATIENT else patient


SEARCH_MIN, SEARCH_MAX = 2, 100


def search_terms(query: str) -> str:
    """A search as it is matched: case and accents aside, spaces folded."""
    folded = unicodedata.normalize("NFKD", " ".join(query.split()).casefold())
    return "".join(c for c in folded if not unicodedata.combining(c))


def check_search(query: str) -> str:
    terms = search_terms(query)
    if not SEARCH_MIN <= len(terms) <= SEARCH_MAX:
        raise InvalidArgument(f"a search is {SEARCH_MIN} to {SEARCH_MAX} characters", field="query")
    return terms


def found_in(terms: str, texts: Iterable[str]) -> bool:
    """Whether the folded search stands in any of these texts (a subject, the messages)."""
    return any(terms in search_terms(text) for text in texts)

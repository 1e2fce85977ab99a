"""The insurer's claims: reading a batch row by row, and the dossier's REMB document. No I/O.

A claim row has `claim_id, ins, care_date (YYYY-MM-DD), kind, code, label, professional_rpps,
amount_paid, amount_reimbursed`. The money columns are dropped the moment a row is read: they
are never part of a `Claim`, so they cannot be stored, logged or shown.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from dmp_kit.errors import InvalidArgument
from dmp_kit.identifiers import validate_ins, validate_rpps

KINDS = frozenset({"consultation", "act", "drug", "lab", "imaging", "hospital"})
KIND_LABELS = {
    "consultation": "Consultation",
    "act": "Acte",
    "drug": "Médicament délivré",
    "lab": "Biologie",
    "imaging": "Imagerie",
    "hospital": "Hospitalisation",
}
COLUMNS = ("claim_id", "ins", "care_date", "kind", "code", "label", "professional_rpps")
MONEY = frozenset({"amount_paid", "amount_reimbursed"})
HISTORY_DAYS = 730  # the last 24 months
MAX_FIELD = {"claim_id": 64, "code": 32, "label": 200}


@dataclass(frozen=True, slots=True)
class Claim:
    claim_id: str
    ins: str
    care_date: str  # YYYY-MM-DD
    kind: str
    code: str
    label: str
    professional_rpps: str


Row = tuple[int, Claim | str]  # (line number, the claim or why it was refused)


def claim_of(fields: dict[str, str | None]) -> Claim | str:
    """A claim from one row's fields, or the reason it is refused. Money is ignored."""
    try:
        claim_id = (fields.get("claim_id") or "").strip()
        if not claim_id or len(claim_id) > MAX_FIELD["claim_id"]:
            return "claim_id is missing or longer than 64 characters"
        try:
            ins = validate_ins((fields.get("ins") or "").strip())
        except InvalidArgument:
            return "ins is not a valid INS"
        care_date = (fields.get("care_date") or "").strip()
        try:
            if len(care_date) != 10:
                raise ValueError(care_date)
            date.fromisoformat(care_date)
        except ValueError:
            return "care_date is not a date (YYYY-MM-DD)"
        kind = (fields.get("kind") or "").strip()
        if kind not in KINDS:
            return f"kind must be one of {', '.join(sorted(KINDS))}"
        code = (fields.get("code") or "").strip()
        label = (fields.get("label") or "").strip()
        if len(code) > MAX_FIELD["code"] or len(label) > MAX_FIELD["label"]:
            return "code or label is too long"
        rpps = (fields.get("professional_rpps") or "").strip()
        if rpps:
            try:
                rpps = validate_rpps(rpps)
            except InvalidArgument:
                return "professional_rpps is not a valid RPPS"
    except (AttributeError, TypeError):
        return "the row's values must be text"
    return Claim(claim_id, ins, care_date, kind, code, label, rpps)


def read_csv(lines: Iterable[str]) -> Iterator[Row]:
    """Rows of a CSV batch (header first), numbered as lines of the file from 1."""
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error:
        yield 1, "the header is not CSV"
        return
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        yield 1, f"the header lacks {', '.join(missing)}"
        return
    at = {name: header.index(name) for name in COLUMNS}
    width = len(header)
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield reader.line_num, "the line is not valid CSV"
            continue
        if not values:
            continue
        if len(values) != width:
            yield reader.line_num, f"the line has {len(values)} fields, the header {width}"
            continue
        yield reader.line_num, claim_of({name: values[i] for name, i in at.items()})


def read_json_lines(lines: Iterable[str]) -> Iterator[Row]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            yield number, "the line is not JSON"
            continue
        if not isinstance(obj, dict):
            yield number, "the line is not a JSON object"
            continue
        yield number, claim_of({k: obj.get(k) for k in COLUMNS})


def history(claims: Iterable[Claim], today: date) -> list[Claim]:
    """The claims of the last 24 months, oldest first (rule 12)."""
    since = (today - timedelta(days=HISTORY_DAYS)).isoformat()
    until = today.isoformat()
    return sorted(
        (c for c in claims if since <= c.care_date <= until),
        key=lambda c: (c.care_date, c.claim_id),
    )


def remb_document(claims: list[Claim]) -> bytes:
    """The REMB document: one CSV line per claim, by date — never any amount."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    writer.writerow(["date", "nature", "code", "libellé", "professionnel (RPPS)"])
    for c in claims:
        writer.writerow([c.care_date, KIND_LABELS[c.kind], c.code, c.label, c.professional_rpps])
    return out.getvalue().encode()

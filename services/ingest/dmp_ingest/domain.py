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
from datetime import date, timedelta
from functools import lru_cache
from typing import NamedTuple

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
MAX_CLAIM_ID, MAX_CODE, MAX_LABEL = 64, 32, 200


class Claim(NamedTuple):
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
    values = [fields.get(name) for name in COLUMNS]
    if not all(v is None or isinstance(v, str) for v in values):
        return "the row's values must be text"
    return _claim(*[v or "" for v in values])


def _claim(
    claim_id: str, ins: str, care_date: str, kind: str, code: str, label: str, rpps: str
) -> Claim | str:
    """The hot path (hundreds of thousands of rows a second): checks in order of cost."""
    claim_id, code, label, rpps = claim_id.strip(), code.strip(), label.strip(), rpps.strip()
    if not claim_id or len(claim_id) > MAX_CLAIM_ID:
        return "claim_id is missing or longer than 64 characters"
    ins = _valid_ins(ins.strip())
    if not ins:
        return "ins is not a valid INS"
    care_date = care_date.strip()
    if not _valid_date(care_date):
        return "care_date is not a date (YYYY-MM-DD)"
    kind = kind.strip()
    if kind not in KINDS:
        return f"kind must be one of {', '.join(sorted(KINDS))}"
    if len(code) > MAX_CODE or len(label) > MAX_LABEL:
        return "code or label is too long"
    if rpps and not _valid_rpps(rpps):
        return "professional_rpps is not a valid RPPS"
    return Claim(claim_id, ins, care_date, kind, code, label, rpps)


# Patients and professionals recur across claims: each identifier is checked once.
@lru_cache(maxsize=1 << 17)
def _valid_ins(value: str) -> str:
    try:
        return validate_ins(value)
    except InvalidArgument:
        return ""


@lru_cache(maxsize=1 << 14)
def _valid_rpps(value: str) -> bool:
    try:
        validate_rpps(value)
    except InvalidArgument:
        return False
    return True


def _valid_date(value: str) -> bool:
    if len(value) != 10:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


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
    at = [header.index(name) for name in COLUMNS]
    width = len(header)
    (i_id, i_ins, i_date, i_kind, i_code, i_label, i_rpps) = at
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
        yield (
            reader.line_num,
            _claim(
                values[i_id],
                values[i_ins],
                values[i_date],
                values[i_kind],
                values[i_code],
                values[i_label],
                values[i_rpps],
            ),
        )


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

"""The insurer's claims: reading a batch row by row, and the dossier's REMB document. No I/O.

A claim row has `claim_id, ins, care_date (YYYY-MM-DD), kind, code, label, professional_rpps,
amount_paid, amount_reimbursed`. The money columns are dropped the moment a row is read: they
are never part of a `Claim`, so they cannot be stored, logged or shown.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
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
# A claim's line is a few hundred characters; anything far longer is refused unread.
MAX_LINE = 16_384
# A spreadsheet takes a cell starting with one of these for a formula (OWASP, CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


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


class _OneLine:
    """The CSV reader's input, one line at a time: a quoted field cannot run on to the next
    line, so a row is never larger than one bounded line."""

    __slots__ = ("line",)

    def __init__(self) -> None:
        self.line: str | None = None

    def __iter__(self) -> _OneLine:
        return self

    def __next__(self) -> str:
        line, self.line = self.line, None
        if line is None:
            raise StopIteration
        return line


def read_csv(lines: Iterable[str | None]) -> Iterator[Row]:
    """Rows of a CSV batch (header first), numbered as lines of the file from 1; None stands
    for a line too long to be read. A quoted field ends on the line it starts on."""
    feed = _OneLine()
    # Strict: a quote left open at the end of its line is an error, not a field that swallows
    # the following lines.
    reader = csv.reader(feed, strict=True)
    numbered = enumerate(lines, 1)
    for number, line in numbered:
        if line is None:
            yield number, f"the header is longer than {MAX_LINE} characters"
            return
        feed.line = line
        try:
            header = [h.strip() for h in next(reader)]
        except csv.Error:
            yield number, "the header is not CSV"
            return
        break
    else:
        return
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        yield number, f"the header lacks {', '.join(missing)}"
        return
    at = [header.index(name) for name in COLUMNS]
    width = len(header)
    (i_id, i_ins, i_date, i_kind, i_code, i_label, i_rpps) = at
    for number, line in numbered:
        if line is None:
            yield number, f"the line is longer than {MAX_LINE} characters"
            continue
        feed.line = line
        try:
            values = next(reader)
        except csv.Error:
            yield number, "the line is not valid CSV (a quoted field must end on its line)"
            continue
        if not values:
            continue
        if len(values) != width:
            yield number, f"the line has {len(values)} fields, the header {width}"
            continue
        yield (
            number,
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


ENDS = ("\n", "\r")


def bounded_lines(readline: Callable[[int], str], limit: int = MAX_LINE) -> Iterator[str | None]:
    """Each line of a text stream, read `limit` characters at most at a time: a longer line is
    None, its rest read and dropped piecemeal, so no line is ever held whole in memory."""
    while line := readline(limit + 1):
        if len(line) <= limit or line.endswith(ENDS):
            yield line
            continue
        while (rest := readline(limit)) and not rest.endswith(ENDS):
            pass
        yield None


def read_json_lines(lines: Iterable[str | None]) -> Iterator[Row]:
    """Rows of a JSON Lines batch; None stands for a line too long to be read."""
    for number, line in enumerate(lines, 1):
        if line is None:
            yield number, f"the line is longer than {MAX_LINE} characters"
            continue
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


def months_before(today: date, months: int) -> date:
    """The same day `months` calendar months earlier (the month's last day when it is shorter):
    12 months before 29 February 2028 is 28 February 2027."""
    index = today.year * 12 + today.month - 1 - months
    year, month = divmod(index, 12)
    first_of_next = date(year + (month == 11), (month + 1) % 12 + 1, 1)
    return date(year, month + 1, min(today.day, (first_of_next - timedelta(days=1)).day))


def history(claims: Iterable[Claim], today: date) -> list[Claim]:
    """The claims of the last 24 months, oldest first (rule 12)."""
    since = (today - timedelta(days=HISTORY_DAYS)).isoformat()
    until = today.isoformat()
    return sorted(
        (c for c in claims if since <= c.care_date <= until),
        key=lambda c: (c.care_date, c.claim_id),
    )


def history_changes_on(claims: Iterable[Claim], today: date) -> str | None:
    """The first day after `today` on which the history changes by time alone (YYYY-MM-DD):
    the oldest listed claim leaves it, or a claim dated later enters it; None if never."""
    until = today.isoformat()
    since = (today - timedelta(days=HISTORY_DAYS)).isoformat()
    days: list[str] = []
    for c in claims:
        if c.care_date > until:
            days.append(c.care_date)
        elif c.care_date >= since:
            leaves = date.fromisoformat(c.care_date) + timedelta(days=HISTORY_DAYS + 1)
            days.append(leaves.isoformat())
    return min(days, default=None)


def spreadsheet_safe(cell: str) -> str:
    """A cell no spreadsheet evaluates and no reader splits: on one line (a carriage return
    is not quoted by the csv module), and quoted when it would start a formula (OWASP), even
    after leading spaces, which some spreadsheets trim."""
    if any(ch in cell for ch in "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029"):
        cell = " ".join(cell.splitlines())
    return "'" + cell if cell.lstrip(" ").startswith(FORMULA_STARTS) else cell


def remb_document(claims: list[Claim]) -> bytes:
    """The REMB document: one CSV line per claim, by date — never any amount. The insurer's
    text goes through the csv module (separators and quotes escaped) and is neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    writer.writerow(["date", "nature", "code", "libellé", "professionnel (RPPS)"])
    for c in claims:
        cells = [c.care_date, KIND_LABELS[c.kind], c.code, c.label, c.professional_rpps]
        writer.writerow([spreadsheet_safe(cell) for cell in cells])
    return out.getvalue().encode()

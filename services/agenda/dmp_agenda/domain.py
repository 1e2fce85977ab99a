"""The agenda's rules, without I/O: the prevention rules file and when each reminder is due for
a person of a birth date and a sex; who may see and change an appointment; what an appointment
may hold."""

from __future__ import annotations

import calendar
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum

from dmp_kit.errors import Conflict, InvalidArgument, NotFound, PermissionDenied
from dmp_kit.identifiers import validate_rpps

CATEGORIES = ("vaccination", "examen_enfant", "dentaire", "depistage")
SEXES = ("any", "F", "M")
RULE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
AGE_RE = re.compile(r"^([0-9]{1,4})([dmy])$")
# A reminder's id: the rule's and the occurrence's number (no dot: it is a key in MongoDB).
SEPARATOR = "~"
VACCINATION_TYPE_CODE = "87273-9"

MAX_TITLE = 200
MAX_LOCATION = 200
MAX_NOTES = 2000
MAX_SHARED = 20
MAX_DURATION = timedelta(days=7)


# --- prevention rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class Age:
    """An age as the calendars say it: a number of days, months or years."""

    amount: int
    unit: str  # d | m | y

    @classmethod
    def parse(cls, text: str, where: str) -> Age:
        found = AGE_RE.match(str(text))
        if found is None:
            raise ValueError(f"{where}: an age is a number and d, m or y, not {text!r}")
        return cls(int(found.group(1)), found.group(2))

    def months(self) -> int:
        return self.amount * 12 if self.unit == "y" else self.amount if self.unit == "m" else 0

    def after(self, birth: date) -> date:
        """The date one reaches this age (a 29 February birthday falls on 28 February)."""
        if self.unit == "d":
            return birth + timedelta(days=self.amount)
        return add_months(birth, self.months())

    def times(self, n: int) -> Age:
        return Age(self.amount * n, self.unit)

    def plus(self, other: Age) -> Age:
        if self.unit == other.unit:
            return Age(self.amount + other.amount, self.unit)
        if "d" in (self.unit, other.unit):
            raise ValueError("days and months do not add up")
        return Age(self.months() + other.months(), "m")

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


def add_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class Rule:
    id: str
    act: str
    category: str
    sex: str
    start: Age
    until: Age
    reason: str
    source: str
    every: Age | None = None
    window: Age | None = None

    def applies_to(self, sex: str) -> bool:
        return self.sex == "any" or self.sex == sex


@dataclass(frozen=True)
class PreventionRules:
    version: str
    rules: tuple[Rule, ...]

    @classmethod
    def parse(cls, text: str) -> PreventionRules:
        data = tomllib.loads(text)
        version = str(data.get("version", "")).strip()
        if not version:
            raise ValueError("the rules file has no version")
        rules = []
        seen: set[str] = set()
        for i, entry in enumerate(data.get("rules", [])):
            where = f"rules[{i}]"
            rule_id = str(entry.get("id", ""))
            if not RULE_ID_RE.match(rule_id):
                raise ValueError(f"{where}: id is lower-case letters, digits and dashes")
            if rule_id in seen:
                raise ValueError(f"{where}: id {rule_id!r} is given twice")
            seen.add(rule_id)
            where = f"rule {rule_id}"
            for name in ("act", "reason", "source"):
                if not str(entry.get(name, "")).strip():
                    raise ValueError(f"{where}: {name} is required")
            if entry.get("category") not in CATEGORIES:
                raise ValueError(f"{where}: category is one of {', '.join(CATEGORIES)}")
            if entry.get("sex", "any") not in SEXES:
                raise ValueError(f"{where}: sex is any, F or M")
            start = Age.parse(entry.get("from", ""), f"{where}.from")
            until = Age.parse(entry.get("until", ""), f"{where}.until")
            every = Age.parse(entry["every"], f"{where}.every") if "every" in entry else None
            window = Age.parse(entry["window"], f"{where}.window") if "window" in entry else None
            reference = date(2000, 1, 31)
            if until.after(reference) <= start.after(reference):
                raise ValueError(f"{where}: until comes after from")
            if every is not None and every.after(reference) <= reference:
                raise ValueError(f"{where}: every is more than nothing")
            if window is not None and (every is None or window.after(reference) <= reference):
                raise ValueError(f"{where}: window goes with every, and is more than nothing")
            rules.append(
                Rule(
                    rule_id,
                    str(entry["act"]).strip(),
                    str(entry["category"]),
                    str(entry.get("sex", "any")),
                    start,
                    until,
                    str(entry["reason"]).strip(),
                    str(entry["source"]).strip(),
                    every,
                    window,
                )
            )
        if not rules:
            raise ValueError("the rules file holds no rule")
        return cls(version, tuple(rules))

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


@dataclass(frozen=True)
class Occurrence:
    """One time a rule is due for one person: from `due_from` to `due_until`, both included."""

    rule: Rule
    number: int
    due_from: date
    due_until: date

    @property
    def id(self) -> str:
        return f"{self.rule.id}{SEPARATOR}{self.number}"


def occurrences(rule: Rule, birth: date) -> Iterator[Occurrence]:
    end = rule.until.after(birth)
    if rule.every is None:
        yield Occurrence(rule, 0, rule.start.after(birth), end - timedelta(days=1))
        return
    window = rule.window or rule.every
    n = 0
    while True:
        offset = rule.start.plus(rule.every.times(n)) if n else rule.start
        begins = offset.after(birth)
        if begins >= end:
            return
        ends = min(offset.plus(window).after(birth), end)
        yield Occurrence(rule, n, begins, ends - timedelta(days=1))
        n += 1


def current_occurrence(rule: Rule, birth: date, today: date) -> Occurrence | None:
    """The occurrence due now, or else the next one; None once the rule is over for them (a
    window that has passed is not brought back: the next occurrence is what matters)."""
    return next((o for o in occurrences(rule, birth) if o.due_until >= today), None)


def occurrence_by_id(rules: PreventionRules, birth: date, reminder_id: str) -> Occurrence:
    rule_id, _, number = reminder_id.partition(SEPARATOR)
    rule = rules.rule(rule_id)
    if rule is not None and number.isascii() and number.isdigit() and len(number) <= 3:
        for occurrence in occurrences(rule, birth):
            if occurrence.number == int(number):
                return occurrence
    raise NotFound("no such reminder", field="id", slug="reminder-not-found")


def sex_of_ins(ins: str) -> str:
    """The sex the INS (NIR) says: 1, 3, 7 a man; 2, 4, 8 a woman; otherwise unknown."""
    first = ins[:1]
    return "M" if first in "137" and first else "F" if first and first in "248" else ""


@dataclass(frozen=True)
class Person:
    birth_date: date
    sex: str


@dataclass(frozen=True)
class Mark:
    """What the patient said of one occurrence."""

    done_on: date | None = None
    document_id: str = ""
    postponed_until: date | None = None


class ReminderStatus(str, Enum):
    UPCOMING = "upcoming"
    DUE = "due"
    DONE = "done"
    POSTPONED = "postponed"


def status_of(occurrence: Occurrence, mark: Mark | None, today: date) -> ReminderStatus:
    if mark is not None and mark.done_on is not None:
        return ReminderStatus.DONE
    if mark is not None and mark.postponed_until is not None and mark.postponed_until > today:
        return ReminderStatus.POSTPONED
    if occurrence.due_from > today:
        return ReminderStatus.UPCOMING
    return ReminderStatus.DUE


def reminders(
    rules: PreventionRules, person: Person, today: date, horizon_days: int
) -> list[Occurrence]:
    """The occurrences the person's agenda shows today: for each rule of their sex, the one due
    now or the next, if it begins within the horizon. A person of unknown sex gets only the
    rules for everyone."""
    shown = []
    horizon = today + timedelta(days=horizon_days)
    for rule in rules.rules:
        if not rule.applies_to(person.sex):
            continue
        occurrence = current_occurrence(rule, person.birth_date, today)
        if occurrence is not None and occurrence.due_from <= horizon:
            shown.append(occurrence)
    return sorted(shown, key=lambda o: (o.due_from, o.rule.id))


def to_notify(
    rules: PreventionRules,
    person: Person,
    today: date,
    marks: dict[str, Mark],
    notified: set[str],
    *,
    dossier_open: bool = True,
    messages_wanted: bool = True,
) -> list[Occurrence]:
    """The occurrences due today that no message announced yet; none while the dossier is not
    open or the patient turned prevention messages off (the reminders stay in the agenda)."""
    if not (dossier_open and messages_wanted):
        return []
    return [
        o
        for o in reminders(rules, person, today, 0)
        if o.id not in notified and status_of(o, marks.get(o.id), today) is ReminderStatus.DUE
    ]


def next_announcement(
    rules: PreventionRules,
    person: Person,
    marks: dict[str, Mark],
    notified: set[str],
    after: date,
) -> date | None:
    """The first day from `after` on which `to_notify` (dossier open, messages wanted) will list
    something, given what is marked and announced now; None if never. The schedule looks at a
    patient again on that day only.

    An occurrence is shown from the day after the rule's previous one ends to its own last
    day (`current_occurrence`); it is announced on the first of those days on which it is due
    and no longer postponed, unless it is done or already announced."""
    first: date | None = None
    for rule in rules.rules:
        if not rule.applies_to(person.sex):
            continue
        shown_from = date.min
        for occurrence in occurrences(rule, person.birth_date):
            if first is not None and occurrence.due_from >= first:
                break  # nothing of this rule can come earlier
            mark = marks.get(occurrence.id)
            if occurrence.id not in notified and (mark is None or mark.done_on is None):
                day = max(occurrence.due_from, shown_from, after)
                if mark is not None and mark.postponed_until is not None:
                    day = max(day, mark.postponed_until)
                if day <= occurrence.due_until:
                    first = day if first is None else min(first, day)
                    break  # a later occurrence of the rule is shown later
            shown_from = max(shown_from, occurrence.due_until + timedelta(days=1))
    return first


def done_by_vaccination(
    rules: PreventionRules, person: Person, on: date, marks: dict[str, Mark]
) -> list[Occurrence]:
    """The reminders a vaccination note marks done: the vaccinations due (or postponed) on the
    day it was added. The note does not say which vaccine; the visit it records is taken to be
    the one these reminders asked for."""
    return [
        o
        for o in reminders(rules, person, on, 0)
        if o.rule.category == "vaccination"
        and status_of(o, marks.get(o.id), on) in (ReminderStatus.DUE, ReminderStatus.POSTPONED)
    ]


def postpone_date(text: str, today: date, latest: date) -> date:
    try:
        until = date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidArgument("until is a date, YYYY-MM-DD", field="until") from exc
    if until <= today:
        raise InvalidArgument("until is after today", field="until")
    if until > latest:
        raise InvalidArgument("a reminder is postponed by a year at most", field="until")
    return until


# --- appointments ---------------------------------------------------------------------------


class Status(str, Enum):
    CONFIRMED = "confirmed"
    PROPOSED = "proposed"
    DECLINED = "declined"
    CANCELLED = "cancelled"


OPEN_STATUSES = (Status.CONFIRMED, Status.PROPOSED)


class Side(str, Enum):
    """How the caller stands to the patient's agenda."""

    OWNER = "owner"  # the patient, a legal representative, a trusted person who manages
    READER = "reader"  # a trusted person who reads
    PROFESSIONAL = "professional"


class Change(str, Enum):
    ACCEPT = "accept"
    DECLINE = "decline"
    CANCEL = "cancel"


def may_see(side: Side, rpps: str, shared_with: list[str]) -> bool:
    return side is not Side.PROFESSIONAL or rpps in shared_with


def may_write(side: Side) -> None:
    if side is Side.READER:
        raise PermissionDenied(
            "this trusted person may read the patient's space, not change it", slug="read-only"
        )
    if side is Side.PROFESSIONAL:
        raise PermissionDenied(
            "the patient keeps their agenda; a professional proposes", slug="access-denied"
        )


def new_status(current: Status, change: Change, side: Side, rpps: str, proposed_by: str) -> Status:
    """Accept or decline: the patient side, of a proposal. Cancel: the patient side, or the
    professional who proposed it, of an appointment not already over."""
    if side is Side.PROFESSIONAL:
        if change is not Change.CANCEL or proposed_by != rpps:
            raise PermissionDenied(
                "a professional cancels the appointments they proposed, nothing else",
                slug="access-denied",
            )
    else:
        may_write(side)
    if change is Change.CANCEL:
        if current not in OPEN_STATUSES:
            raise Conflict("this appointment is already over", slug="appointment-closed")
        return Status.CANCELLED
    if current is not Status.PROPOSED:
        raise Conflict("only a proposal is accepted or declined", slug="appointment-closed")
    return Status.CONFIRMED if change is Change.ACCEPT else Status.DECLINED


def may_update(current: Status) -> None:
    if current not in OPEN_STATUSES:
        raise Conflict(
            "a cancelled or declined appointment is not changed", slug="appointment-closed"
        )


def title(text: str) -> str:
    value = text.strip()
    if not value:
        raise InvalidArgument("title is required", field="title")
    if len(value) > MAX_TITLE:
        raise InvalidArgument(f"title is {MAX_TITLE} characters at most", field="title")
    return value


def free_text(text: str, name: str, limit: int) -> str:
    value = text.strip()
    if len(value) > limit:
        raise InvalidArgument(f"{name} is {limit} characters at most", field=name)
    return value


def period(starts_at: datetime, ends_at: datetime, now: datetime, years_ahead: int) -> None:
    """An appointment ends after it starts, lasts a week at most, and is not set further ahead
    than the agenda plans."""
    if ends_at <= starts_at:
        raise InvalidArgument("ends_at comes after starts_at", field="ends_at")
    if ends_at - starts_at > MAX_DURATION:
        raise InvalidArgument("an appointment lasts a week at most", field="ends_at")
    if starts_at > now + timedelta(days=366 * years_ahead):
        raise InvalidArgument(
            f"an appointment is at most {years_ahead} years ahead", field="starts_at"
        )


def sharing(given: list[str]) -> list[str]:
    """Distinct, well-formed RPPS numbers (whether they name a professional is asked apart)."""
    if len(given) > MAX_SHARED:
        raise InvalidArgument(
            f"an appointment is shared with {MAX_SHARED} professionals at most",
            field="shared_with",
        )
    out: list[str] = []
    for i, rpps in enumerate(given):
        checked = validate_rpps(rpps, field=f"shared_with.{i}")
        if checked not in out:
            out.append(checked)
    return out

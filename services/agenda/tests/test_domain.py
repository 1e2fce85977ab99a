"""The agenda's rules alone (no I/O): the shipped rules file, when each reminder is due for a
birth date and a sex, what is announced, and what an appointment may be."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmp_agenda import domain
from dmp_agenda.domain import (
    Change,
    Mark,
    Person,
    PreventionRules,
    ReminderStatus,
    Side,
    Status,
)
from dmp_kit.errors import Conflict, InvalidArgument, NotFound, PermissionDenied

RULES = PreventionRules.parse(
    (resources.files("dmp_agenda") / "data" / "prevention.toml").read_text("utf-8")
)
TODAY = date(2026, 3, 10)


def years_ago(n: int, today: date = TODAY) -> date:
    return today.replace(year=today.year - n)


def due_ids(person: Person, today: date = TODAY) -> set[str]:
    return {
        o.rule.id
        for o in domain.reminders(RULES, person, today, 0)
        if domain.status_of(o, None, today) is ReminderStatus.DUE
    }


def test_the_shipped_rules_are_versioned_sourced_and_cover_every_category() -> None:
    assert RULES.version
    assert {r.category for r in RULES.rules} == set(domain.CATEGORIES)
    assert all(r.source and r.reason and r.act for r in RULES.rules)
    children = [r for r in RULES.rules if r.category == "examen_enfant"]
    assert len(children) == 20  # the 20 compulsory examinations, R2132-1


def test_a_newborn_is_due_the_examination_of_the_first_8_days_only() -> None:
    assert due_ids(Person(TODAY, "F")) == {"examen-8-jours"}


def test_at_two_months_the_first_infant_vaccines_and_the_3rd_month_examination() -> None:
    birth = domain.add_months(TODAY, -2)
    assert due_ids(Person(birth, "M")) == {"hexavalent-1", "pneumocoque-1", "examen-3-mois"}


def test_a_16_year_old_is_due_the_examination_of_15_16_and_m_t_dents_is_not() -> None:
    # 15 and 18 are M'T dents years; 16 is not
    assert due_ids(Person(years_ago(16), "M")) == {"examen-15-16-ans"}


def test_a_50_year_old_woman_is_due_both_screenings_and_the_hpv_test() -> None:
    assert due_ids(Person(years_ago(50), "F")) == {
        "depistage-sein",
        "depistage-colorectal",
        "depistage-col-hpv",
    }


def test_a_50_year_old_man_is_due_the_colorectal_screening_only() -> None:
    assert due_ids(Person(years_ago(50), "M")) == {"depistage-colorectal"}


def test_a_70_year_old_man() -> None:
    assert due_ids(Person(years_ago(70), "M")) == {
        "depistage-colorectal",
        "grippe",
        "pneumocoque-65-ans",
        "zona",
    }


def test_repeating_rules_give_one_occurrence_per_interval_within_the_ages() -> None:
    rule = RULES.rule("mt-dents")
    assert rule is not None
    birth = date(2010, 6, 15)
    starts = [o.due_from for o in domain.occurrences(rule, birth)]
    assert starts == [date(2010 + age, 6, 15) for age in (3, 6, 9, 12, 15, 18, 21, 24)]
    first = next(domain.occurrences(rule, birth))
    assert first.due_until == date(2014, 6, 14)  # a one-year window
    breast = RULES.rule("depistage-sein")
    assert breast is not None
    ages = [o.due_from.year - 1970 for o in domain.occurrences(breast, date(1970, 1, 1))]
    assert ages == list(range(50, 75, 2))


def test_a_29_february_birthday_counts_from_28_february() -> None:
    assert domain.Age(1, "y").after(date(2024, 2, 29)) == date(2025, 2, 28)
    assert domain.Age(1, "m").after(date(2025, 1, 31)) == date(2025, 2, 28)


def test_sex_from_the_ins() -> None:
    assert domain.sex_of_ins("180057512345623") == "M"
    assert domain.sex_of_ins("280057512345623") == "F"
    assert domain.sex_of_ins("780057512345623") == "M"
    assert domain.sex_of_ins("880057512345623") == "F"
    assert domain.sex_of_ins("") == ""


def test_a_person_of_unknown_sex_gets_the_rules_for_everyone() -> None:
    assert due_ids(Person(years_ago(50), "")) == {"depistage-colorectal"}


def test_status_done_postponed_and_back_to_due() -> None:
    [occurrence] = [o for o in domain.reminders(RULES, Person(TODAY, "F"), TODAY, 0) if o.rule.id]
    assert domain.status_of(occurrence, None, TODAY) is ReminderStatus.DUE
    assert domain.status_of(occurrence, Mark(done_on=TODAY), TODAY) is ReminderStatus.DONE
    later = TODAY + timedelta(days=3)
    postponed = Mark(postponed_until=later)
    assert domain.status_of(occurrence, postponed, TODAY) is ReminderStatus.POSTPONED
    assert domain.status_of(occurrence, postponed, later) is ReminderStatus.DUE


def test_what_is_announced_excludes_the_announced_the_done_and_the_postponed() -> None:
    person = Person(years_ago(70), "M")
    every = {o.id for o in domain.to_notify(RULES, person, TODAY, {}, set())}
    assert {i.split("~")[0] for i in every} == due_ids(person)
    grippe = next(i for i in every if i.startswith("grippe~"))
    zona = next(i for i in every if i.startswith("zona~"))
    pneumo = next(i for i in every if i.startswith("pneumocoque-65-ans~"))
    marks = {zona: Mark(done_on=TODAY), pneumo: Mark(postponed_until=TODAY + timedelta(1))}
    left = {o.id for o in domain.to_notify(RULES, person, TODAY, marks, {grippe})}
    assert left == every - {grippe, zona, pneumo}


# Windows longer than the interval: an occurrence is shown only once the one before it ends.
OVERLAPPING = PreventionRules.parse(
    """
version = "test"
[[rules]]
id = "chevauchant"
act = "Acte"
category = "depistage"
from = "1y"
until = "12y"
every = "1y"
window = "20m"
reason = "r"
source = "s"
"""
)
History = tuple[PreventionRules, Person, dict[str, Mark], set[str], date]


def first_announcement_by_hand(
    rules: PreventionRules,
    person: Person,
    marks: dict[str, Mark],
    notified: set[str],
    after: date,
    days: int,
) -> date | None:
    """The first of `days` days from `after` on which something is announced, asked day by
    day."""
    for n in range(days):
        day = after + timedelta(days=n)
        if domain.to_notify(rules, person, day, marks, notified):
            return day
    return None


@st.composite
def histories(draw: st.DrawFn) -> History:
    """A person of any age and sex, with some of their occurrences announced, done or
    postponed, looked at on some day of their life."""
    rules = draw(st.sampled_from([RULES, OVERLAPPING]))
    birth = TODAY - timedelta(days=draw(st.integers(0, 90 * 365)))
    person = Person(birth, draw(st.sampled_from(["F", "M", ""])))
    lifetime = 90 * 365 if rules is RULES else 13 * 365
    after = birth + timedelta(days=draw(st.integers(0, lifetime)))
    ids = sorted(
        o.id
        for rule in rules.rules
        if rule.applies_to(person.sex)
        for o in domain.occurrences(rule, birth)
        if o.due_until >= after - timedelta(days=400) and o.due_from <= after + timedelta(400)
    )
    chosen = draw(st.lists(st.sampled_from(ids), unique=True) if ids else st.just([]))
    marks: dict[str, Mark] = {}
    notified: set[str] = set()
    for reminder_id in chosen:
        what = draw(st.sampled_from(["notified", "done", "postponed"]))
        if what == "notified":
            notified.add(reminder_id)
        elif what == "done":
            marks[reminder_id] = Mark(done_on=after)
        else:
            marks[reminder_id] = Mark(
                postponed_until=after + timedelta(days=draw(st.integers(-30, 366)))
            )
    return rules, person, marks, notified, after


@settings(max_examples=60, deadline=None)
@given(histories())
def test_the_next_announcement_is_the_first_day_to_notify_lists_something(
    history: History,
) -> None:
    rules, person, marks, notified, after = history
    days = 800
    expected = first_announcement_by_hand(rules, person, marks, notified, after, days)
    found = domain.next_announcement(rules, person, marks, notified, after)
    if expected is not None:
        assert found == expected
    else:
        assert found is None or found >= after + timedelta(days=days)


def test_the_next_announcement_skips_the_announced_and_the_done_and_waits_a_postponement() -> None:
    newborn = Person(TODAY, "F")
    assert domain.next_announcement(RULES, newborn, {}, set(), TODAY) == TODAY
    [eight_days] = domain.to_notify(RULES, newborn, TODAY, {}, set())
    # announced today: next, the 2-week examination, on its first day
    two_weeks = next(
        o for o in domain.reminders(RULES, newborn, TODAY, 60) if o.rule.id == "examen-2-semaines"
    )
    after = domain.next_announcement(RULES, newborn, {}, {eight_days.id}, TODAY)
    assert after == two_weeks.due_from
    postponed = {two_weeks.id: Mark(postponed_until=two_weeks.due_from + timedelta(days=3))}
    assert domain.next_announcement(
        RULES, newborn, postponed, {eight_days.id}, TODAY
    ) == two_weeks.due_from + timedelta(days=3)
    done = {two_weeks.id: Mark(done_on=TODAY)}
    assert domain.next_announcement(RULES, newborn, done, {eight_days.id}, TODAY) > (
        two_weeks.due_from
    )
    # every occurrence of their life announced: never again
    old = Person(years_ago(80), "M")
    every = {o.id for rule in RULES.rules for o in domain.occurrences(rule, old.birth_date)}
    assert domain.next_announcement(RULES, old, {}, every, TODAY) is None


def test_nothing_is_announced_for_a_closed_dossier_or_after_an_opt_out() -> None:
    person = Person(years_ago(70), "M")
    assert domain.to_notify(RULES, person, TODAY, {}, set())
    assert domain.to_notify(RULES, person, TODAY, {}, set(), dossier_open=False) == []
    assert domain.to_notify(RULES, person, TODAY, {}, set(), messages_wanted=False) == []


def test_the_upcoming_are_shown_within_the_horizon_only() -> None:
    person = Person(TODAY, "F")
    soon = {o.rule.id for o in domain.reminders(RULES, person, TODAY, 40)}
    assert {"examen-8-jours", "examen-2-semaines", "examen-2-mois"} <= soon
    assert "hexavalent-1" not in soon  # at 2 months, beyond 40 days
    assert "hexavalent-1" in {o.rule.id for o in domain.reminders(RULES, person, TODAY, 70)}


def test_a_vaccination_note_marks_the_due_vaccinations_done() -> None:
    birth = domain.add_months(TODAY, -2)
    done = domain.done_by_vaccination(RULES, Person(birth, "F"), TODAY, {})
    assert {o.rule.id for o in done} == {"hexavalent-1", "pneumocoque-1"}


def test_occurrence_by_id() -> None:
    birth = years_ago(70)
    assert domain.occurrence_by_id(RULES, birth, "grippe~5").due_from == years_ago(0)
    for bad in ("grippe~x", "nothing~0", "grippe", "grippe~999"):
        with pytest.raises(NotFound):
            domain.occurrence_by_id(RULES, birth, bad)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[[rules]]\nid="a"', "no version"),
        ('version="1"', "no rule"),
        (
            'version="1"\n[[rules]]\nid="A.b"\nact="x"\ncategory="dentaire"\nfrom="1y"\n'
            'until="2y"\nreason="r"\nsource="s"',
            "id is",
        ),
        (
            'version="1"\n[[rules]]\nid="a"\nact="x"\ncategory="other"\nfrom="1y"\n'
            'until="2y"\nreason="r"\nsource="s"',
            "category",
        ),
        (
            'version="1"\n[[rules]]\nid="a"\nact="x"\ncategory="dentaire"\nfrom="3y"\n'
            'until="2y"\nreason="r"\nsource="s"',
            "until comes after",
        ),
        (
            'version="1"\n[[rules]]\nid="a"\nact="x"\ncategory="dentaire"\nfrom="1w"\n'
            'until="2y"\nreason="r"\nsource="s"',
            "an age",
        ),
        (
            'version="1"\n[[rules]]\nid="a"\nact="x"\ncategory="dentaire"\nfrom="1y"\n'
            'until="2y"\nreason="r"',
            "source is required",
        ),
    ],
)
def test_a_bad_rules_file_is_refused_with_where(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        PreventionRules.parse(text)


# --- appointments ---------------------------------------------------------------------------

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def test_an_appointment_ends_after_it_starts_and_not_too_far_ahead() -> None:
    domain.period(NOW, NOW + timedelta(hours=1), NOW, 5)
    with pytest.raises(InvalidArgument) as caught:
        domain.period(NOW, NOW, NOW, 5)
    assert caught.value.field == "ends_at"
    with pytest.raises(InvalidArgument) as caught:
        domain.period(NOW + timedelta(days=6 * 366), NOW + timedelta(days=6 * 366, hours=1), NOW, 5)
    assert caught.value.field == "starts_at"
    with pytest.raises(InvalidArgument):
        domain.period(NOW, NOW + timedelta(days=8), NOW, 5)


def test_titles_and_sharing() -> None:
    assert domain.title("  Dentiste ") == "Dentiste"
    for bad in ("", "   ", "x" * 201):
        with pytest.raises(InvalidArgument):
            domain.title(bad)
    with pytest.raises(InvalidArgument) as caught:
        domain.sharing(["10000000009", "123"])
    assert caught.value.field == "shared_with.1"


@pytest.mark.parametrize(
    ("current", "change", "side", "rpps", "proposed_by", "expected"),
    [
        (Status.PROPOSED, Change.ACCEPT, Side.OWNER, "", "10000000009", Status.CONFIRMED),
        (Status.PROPOSED, Change.DECLINE, Side.OWNER, "", "10000000009", Status.DECLINED),
        (Status.CONFIRMED, Change.CANCEL, Side.OWNER, "", "patient", Status.CANCELLED),
        (Status.PROPOSED, Change.CANCEL, Side.PROFESSIONAL, "1", "1", Status.CANCELLED),
        (Status.CONFIRMED, Change.ACCEPT, Side.OWNER, "", "patient", Conflict),
        (Status.CANCELLED, Change.CANCEL, Side.OWNER, "", "patient", Conflict),
        (Status.PROPOSED, Change.ACCEPT, Side.PROFESSIONAL, "1", "1", PermissionDenied),
        (Status.PROPOSED, Change.CANCEL, Side.PROFESSIONAL, "2", "1", PermissionDenied),
        (Status.PROPOSED, Change.ACCEPT, Side.READER, "", "1", PermissionDenied),
    ],
)
def test_who_changes_an_appointments_status(
    current: Status,
    change: Change,
    side: Side,
    rpps: str,
    proposed_by: str,
    expected: Status | type[Exception],
) -> None:
    if isinstance(expected, Status):
        assert domain.new_status(current, change, side, rpps, proposed_by) is expected
    else:
        with pytest.raises(expected):
            domain.new_status(current, change, side, rpps, proposed_by)


def test_a_professional_sees_what_is_shared_with_them_only() -> None:
    assert domain.may_see(Side.OWNER, "", [])
    assert domain.may_see(Side.READER, "", [])
    assert domain.may_see(Side.PROFESSIONAL, "1", ["1", "2"])
    assert not domain.may_see(Side.PROFESSIONAL, "3", ["1", "2"])

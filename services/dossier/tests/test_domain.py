"""The dossier's domain rules (lifecycle, labels, scheduled dates, checks), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmp_dossier import domain
from dmp_dossier.domain import (
    HIDDEN_FROM_PATIENT,
    HIDDEN_FROM_REPRESENTATIVES,
    MASKED,
    Status,
    VisibilityChange,
)
from dmp_kit.errors import Conflict, InvalidArgument, PayloadTooLarge, PermissionDenied

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
BOTH = [HIDDEN_FROM_PATIENT, HIDDEN_FROM_REPRESENTATIVES]


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2028, 2, 29, 10, tzinfo=UTC), datetime(2038, 2, 28, 10, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), datetime(2034, 2, 28, tzinfo=UTC)),
        (datetime(2026, 11, 29, tzinfo=UTC), datetime(2036, 11, 29, tzinfo=UTC)),
    ],
)
def test_closing_archives_ten_years_even_from_a_leap_day(
    moment: datetime, expected: datetime
) -> None:
    assert domain.after_close(Status.OPEN, moment) == (Status.CLOSED, expected)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1)))
def test_ten_years_later_is_always_a_date_ten_years_on(moment: datetime) -> None:
    later = domain.years_later(moment, 10)
    assert later.year == moment.year + 10
    assert (later.month, later.day) in ((moment.month, moment.day), (2, 28))


def test_lifecycle_transitions() -> None:
    with pytest.raises(Conflict):
        domain.after_close(Status.CLOSED, NOW)
    with pytest.raises(Conflict):
        domain.after_reopen(Status.OPEN)
    assert domain.after_reopen(Status.CLOSED) is Status.OPEN
    assert domain.after_reopen(Status.DELETION_REQUESTED) is Status.OPEN
    state, purge = domain.after_deletion_request(Status.OPEN, NOW)
    assert state is Status.DELETION_REQUESTED
    assert NOW < purge <= NOW + timedelta(days=90)  # rule 13: within 3 months
    assert domain.after_deletion_request(Status.CLOSED, NOW)[0] is Status.DELETION_REQUESTED
    with pytest.raises(Conflict):
        domain.after_deletion_request(Status.DELETION_REQUESTED, NOW)


def test_consent_and_vitale() -> None:
    with pytest.raises(InvalidArgument) as err:
        domain.require_consent(False)
    assert err.value.field == "patient_consent"
    domain.require_consent(True)
    domain.check_vitale(" ab123 ", "AB123")
    with pytest.raises(InvalidArgument):
        domain.check_vitale("AB124", "AB123")


def test_a_patient_hides_nothing_from_themselves() -> None:
    with pytest.raises(InvalidArgument):
        domain.initial_labels(True, False, author_is_patient=True)
    assert domain.initial_labels(True, True, author_is_patient=False) == BOTH
    assert domain.initial_labels(False, False, author_is_patient=True) == []


def test_masking_is_the_patients() -> None:
    change = VisibilityChange(masked_from_professionals=True)
    assert domain.apply_visibility([], change, is_patient=True, is_author=False) == [MASKED]
    with pytest.raises(PermissionDenied):
        domain.apply_visibility([], change, is_patient=False, is_author=True)
    unmask = VisibilityChange(masked_from_professionals=False)
    assert domain.apply_visibility([MASKED], unmask, is_patient=True, is_author=False) == []


def test_each_hiding_label_is_revealed_on_its_own_by_the_author() -> None:
    to_patient = VisibilityChange(hidden_from_patient=False)
    to_representatives = VisibilityChange(hidden_from_legal_representatives=False)
    assert domain.apply_visibility(BOTH, to_patient, is_patient=False, is_author=True) == [
        HIDDEN_FROM_REPRESENTATIVES
    ]
    assert domain.apply_visibility(BOTH, to_representatives, is_patient=False, is_author=True) == [
        HIDDEN_FROM_PATIENT
    ]
    with pytest.raises(PermissionDenied):
        domain.apply_visibility(BOTH, to_patient, is_patient=True, is_author=False)


def test_a_visible_document_is_never_hidden_again() -> None:
    for change in (
        VisibilityChange(hidden_from_patient=True),
        VisibilityChange(hidden_from_legal_representatives=True),
    ):
        with pytest.raises(Conflict):
            domain.apply_visibility([], change, is_patient=False, is_author=True)
    # Still hidden: saying so again changes nothing.
    same = VisibilityChange(hidden_from_patient=True)
    assert domain.apply_visibility(BOTH, same, is_patient=False, is_author=True) == BOTH


def test_reminders_after_two_weeks_for_each_hiding_label() -> None:
    created = NOW - timedelta(days=14)
    assert domain.reminders_due(created, BOTH, NOW) == BOTH
    assert domain.reminders_due(created, [HIDDEN_FROM_REPRESENTATIVES], NOW) == [
        HIDDEN_FROM_REPRESENTATIVES
    ]
    assert domain.reminders_due(created + timedelta(seconds=1), BOTH, NOW) == []
    assert domain.reminders_due(created, [MASKED], NOW) == []


def test_automatic_reveal_after_a_month_keeps_other_labels() -> None:
    created = NOW - timedelta(days=30)
    assert domain.revealed(created, [MASKED, *BOTH], NOW) == [MASKED]
    assert domain.revealed(created, [HIDDEN_FROM_REPRESENTATIVES], NOW) == []
    assert domain.revealed(created + timedelta(seconds=1), BOTH, NOW) is None
    assert domain.revealed(created, [MASKED], NOW) is None


@given(st.datetimes(timezones=st.just(UTC)), st.uuids())
def test_cursor_round_trip(at: datetime, doc_id: object) -> None:
    assert domain.decode_cursor(domain.encode_cursor(at, str(doc_id))) == (at, str(doc_id))


@pytest.mark.parametrize("cursor", ["", "%%%", "bm90IGpzb24", "WzEsMiwzXQ"])
def test_a_bad_cursor_is_invalid_argument(cursor: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        domain.decode_cursor(cursor)
    assert err.value.field == "cursor"


def test_document_checks() -> None:
    assert domain.check_title("  Compte rendu ") == "Compte rendu"
    for bad in ("", " ", "x" * 201):
        with pytest.raises(InvalidArgument):
            domain.check_title(bad)
    assert domain.check_mime_type("Application/PDF") == "application/pdf"
    with pytest.raises(InvalidArgument):
        domain.check_mime_type("pdf")
    with pytest.raises(InvalidArgument):
        domain.check_size(0, 10)
    with pytest.raises(PayloadTooLarge):
        domain.check_size(11, 10)
    domain.check_size(10, 10)


def test_record_checks() -> None:
    assert domain.check_entries([" a "], "allergies") == ["a"]
    with pytest.raises(InvalidArgument) as err:
        domain.check_entries(["ok", ""], "allergies")
    assert err.value.field == "allergies.1"
    with pytest.raises(InvalidArgument):
        domain.check_entries(["x"] * (domain.MAX_ITEMS + 1), "history")
    m = domain.Measurement(" blood_pressure ", "12/8", "cmHg", NOW)
    assert domain.check_measurement(m, 0, NOW).kind == "blood_pressure"
    future = domain.Measurement("glycaemia", "1.0", "g/L", NOW + timedelta(minutes=1))
    with pytest.raises(InvalidArgument) as err:
        domain.check_measurement(future, 3, NOW)
    assert err.value.field == "measurements.3.measured_at"
    with pytest.raises(InvalidArgument):
        domain.check_contact("Paul", "", "", 0)
    domain.check_contact("Paul", "", "paul@example.org", 0)
    with pytest.raises(InvalidArgument):
        domain.check_directives(" ")

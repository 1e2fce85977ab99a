"""Health measurements' checks, units and computed BMI, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dmp_dossier import domain
from dmp_dossier.domain import NewMeasurement, check_new_measurement
from dmp_kit.errors import InvalidArgument

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
AN_HOUR_AGO = NOW - timedelta(hours=1)


def check(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"kind": "weight", "unit": "kg", "measured_at": AN_HOUR_AGO}
    return check_new_measurement(NewMeasurement(**{**base, **fields}), NOW)  # type: ignore[arg-type]


def refused(field: str, slug: str = "validation-error", **fields: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check(**fields)
    assert caught.value.field == field
    assert caught.value.problem == slug


@pytest.mark.parametrize(
    ("kind", "unit", "value"),
    [
        ("weight", "kg", 72.5),
        ("height", "cm", 176),
        ("heart_rate", "/min", 64),
        ("glycaemia", "g/L", 0.95),
        ("waist", "cm", 88),
    ],
)
def test_each_kind_in_its_unit(kind: str, unit: str, value: float) -> None:
    point = check(kind=kind, unit=unit, value=value)
    assert point == {"kind": kind, "unit": unit, "measured_at": AN_HOUR_AGO, "value": value}


def test_blood_pressure_is_two_values() -> None:
    point = check(kind="blood_pressure", unit="mm[Hg]", systolic=128, diastolic=82, note=" assis ")
    assert point["systolic"] == 128 and point["diastolic"] == 82
    assert "value" not in point and point["note"] == "assis"
    refused("systolic", "measurement-out-of-range", kind="blood_pressure", unit="mm[Hg]",
            systolic=80, diastolic=80)  # fmt: skip
    refused("systolic", "measurement-out-of-range", kind="blood_pressure", unit="mm[Hg]",
            systolic=70, diastolic=90)  # fmt: skip
    refused("diastolic", "measurement-out-of-range", kind="blood_pressure", unit="mm[Hg]",
            systolic=120, diastolic=0)  # fmt: skip
    refused("value", kind="blood_pressure", unit="mm[Hg]", value=120, systolic=120, diastolic=80)


@pytest.mark.parametrize(
    ("unit", "value", "stored"),
    [("g/L", 1.05, 1.05), ("mg/dL", 105, 1.05), ("mmol/L", 5.5, 0.991)],
)
def test_glycaemia_is_stored_in_grams_per_litre(unit: str, value: float, stored: float) -> None:
    point = check(kind="glycaemia", unit=unit, value=value)
    assert point["unit"] == "g/L" and point["value"] == stored


@pytest.mark.parametrize(
    ("kind", "unit", "value"),
    [
        ("weight", "kg", 0.1),
        ("weight", "kg", 70_000),  # grams typed as kilograms
        ("height", "cm", 1.76),  # metres typed as centimetres
        ("height", "cm", 300),
        ("heart_rate", "/min", 0),
        ("heart_rate", "/min", 400),
        ("glycaemia", "mg/dL", 2000),
        ("waist", "cm", 5),
        ("weight", "kg", float("nan")),
        ("weight", "kg", float("inf")),
    ],
)
def test_implausible_values_name_the_field(kind: str, unit: str, value: float) -> None:
    refused("value", "measurement-out-of-range", kind=kind, unit=unit, value=value)


def test_kind_unit_date_and_note() -> None:
    refused("kind", kind="temperature", value=37)
    refused("kind", kind="bmi", unit="kg/m2", value=22)  # computed, never entered
    refused("unit", unit="lb", value=150)
    refused("unit", kind="glycaemia", unit="mmol", value=5)
    refused("measured_at", value=70, measured_at=NOW + timedelta(seconds=1))
    refused("measured_at", value=70, measured_at=datetime(1899, 12, 31, tzinfo=UTC))
    refused("note", value=70, note="x" * (domain.MAX_NOTE + 1))
    refused("systolic", value=70, systolic=120)
    assert check(value=70, measured_at=NOW)["measured_at"] == NOW


def point(kind: str, value: float, day: int, pid: str) -> dict[str, object]:
    return {
        "id": pid,
        "kind": kind,
        "value": value,
        "measured_at": datetime(2026, 1, day, tzinfo=UTC),
        "source": "patient",
        "recorded_at": NOW,
    }


def test_bmi_uses_the_height_measured_last_before_each_weight() -> None:
    heights = [point("height", 180, 10, "h2"), point("height", 160, 1, "h1")]
    weights = [point("weight", 64, 5, "w1"), point("weight", 81, 20, "w2")]
    bmi = domain.bmi_points(weights, heights)
    assert [(b["id"], b["value"], b["unit"], b["computed"]) for b in bmi] == [
        ("bmi-w1", 25.0, "kg/m2", True),
        ("bmi-w2", 25.0, "kg/m2", True),
    ]
    # no height before the weight: the first one after
    assert domain.bmi_points([point("weight", 81, 2, "w")], [heights[0]])[0]["value"] == 25.0
    assert domain.bmi_points(weights, []) == []


def test_a_window_is_inclusive_and_oldest_first() -> None:
    points = [point("weight", 70, d, f"w{d}") for d in (9, 1, 5)]
    found = domain.measurement_window(
        points, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 5, tzinfo=UTC)
    )
    assert [p["id"] for p in found] == ["w1", "w5"]
    assert [p["id"] for p in domain.measurement_window(points, None, None)] == ["w1", "w5", "w9"]

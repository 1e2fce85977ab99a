"""INS control keys (Corsica included) and RPPS Luhn digits."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmp_kit.errors import InvalidArgument
from dmp_kit.identifiers import (
    ins_control_key,
    is_valid_ins,
    is_valid_rpps,
    luhn_ok,
    validate_ins,
    validate_rpps,
)
from dmp_stack.testing import make_ins, make_rpps


def test_ins_key_known_answer() -> None:
    # 1 80 01 75 123 456 → 97 − (1800175123456 mod 97)
    assert ins_control_key("1800175123456") == 97 - 1800175123456 % 97 == 60
    assert is_valid_ins("180017512345660")
    assert not is_valid_ins("180017512345661")


@pytest.mark.parametrize(("dept", "substitute"), [("2A", "19"), ("2B", "18")])
def test_ins_corsica_counts_as_19_and_18(dept: str, substitute: str) -> None:
    first13 = f"27505{dept}123456"
    expected = 97 - int(first13.replace(dept, substitute)) % 97
    assert ins_control_key(first13) == expected
    assert validate_ins(f"{first13}{expected:02d}") == f"{first13}{expected:02d}"
    assert validate_ins(f"27505{dept.lower()}123456{expected:02d}") == f"{first13}{expected:02d}"


@given(st.integers(min_value=0, max_value=2**32))
def test_generated_ins_are_valid_and_any_digit_change_is_caught(seed: int) -> None:
    rng = random.Random(seed)
    ins = make_ins(rng)
    assert is_valid_ins(ins)
    pos = rng.choice([i for i in range(15) if ins[i].isdigit()])
    changed = ins[:pos] + str((int(ins[pos]) + rng.randint(1, 9)) % 10) + ins[pos + 1 :]
    assert not is_valid_ins(changed) or changed[:1] not in "12345678"


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("", "13 characters"),
        ("18001751234566", "13 characters"),
        ("x80017512345660", "13 characters"),
        ("180017512345661", "control key"),
    ],
)
def test_validate_ins_names_the_field(value: str, detail: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_ins(value)
    assert exc.value.field == "ins"
    assert exc.value.problem == "invalid-ins"
    assert detail in exc.value.detail


@given(st.text(max_size=40))
def test_validate_ins_never_crashes_on_any_text(text: str) -> None:
    if is_valid_ins(text.strip().upper()):
        assert validate_ins(text) == text.strip().upper()
    else:
        with pytest.raises(InvalidArgument) as exc:
            validate_ins(text)
        assert exc.value.field == "ins"


def test_luhn_known_answers() -> None:
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")


@given(st.integers(min_value=0, max_value=2**32))
def test_rpps_single_digit_errors_are_caught(seed: int) -> None:
    rng = random.Random(seed)
    rpps = make_rpps(rng)
    assert is_valid_rpps(rpps)
    pos = rng.randrange(11)
    changed = rpps[:pos] + str((int(rpps[pos]) + rng.randint(1, 9)) % 10) + rpps[pos + 1 :]
    assert not is_valid_rpps(changed)


@pytest.mark.parametrize("value", ["", "1000000000", "100000000081", "1000000000a", "10000000008"])
def test_validate_rpps_refuses(value: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        validate_rpps(value)
    assert exc.value.field == "rpps"

"""Patient and professional identifiers: INS (NIR + control key) and RPPS (Luhn)."""

from __future__ import annotations

import re

from dmp_kit.errors import InvalidArgument

_INS_RE = re.compile(r"^[1-8][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{6}[0-9]{2}$")
_RPPS_RE = re.compile(r"^[0-9]{11}$")

# Profession codes of the RPPS directory (the subset the platform knows).
PROFESSIONS: dict[str, str] = {
    "10": "Médecin",
    "21": "Pharmacien",
    "26": "Audioprothésiste",
    "28": "Opticien-lunetier",
    "40": "Chirurgien-dentiste",
    "50": "Sage-femme",
    "60": "Infirmier",
    "70": "Masseur-kinésithérapeute",
    "80": "Pédicure-podologue",
    "91": "Orthophoniste",
    "92": "Orthoptiste",
    "94": "Ergothérapeute",
    "96": "Psychomotricien",
}


def ins_control_key(first13: str) -> int:
    """97 − (the first 13 characters mod 97); Corsica's 2A/2B count as 19/18."""
    digits = first13.replace("2A", "19", 1) if first13[5:7] == "2A" else first13
    digits = digits.replace("2B", "18", 1) if first13[5:7] == "2B" else digits
    return 97 - int(digits) % 97


def is_valid_ins(value: str) -> bool:
    if not _INS_RE.match(value):
        return False
    return ins_control_key(value[:13]) == int(value[13:])


def validate_ins(value: str, field: str = "ins") -> str:
    value = value.strip().upper()
    if not _INS_RE.match(value):
        raise InvalidArgument(
            "an INS is 13 characters (the NIR) followed by its 2-digit control key",
            field=field,
            slug="invalid-ins",
        )
    if ins_control_key(value[:13]) != int(value[13:]):
        raise InvalidArgument("the INS control key does not match", field=field, slug="invalid-ins")
    return value


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_valid_rpps(value: str) -> bool:
    return bool(_RPPS_RE.match(value)) and luhn_ok(value)


def validate_rpps(value: str, field: str = "rpps") -> str:
    value = value.strip()
    if not _RPPS_RE.match(value):
        raise InvalidArgument("an RPPS number is 11 digits", field=field, slug="invalid-rpps")
    if not luhn_ok(value):
        raise InvalidArgument("the RPPS check digit is wrong", field=field, slug="invalid-rpps")
    return value


def validate_profession(code: str, field: str = "profession") -> str:
    if code not in PROFESSIONS:
        raise InvalidArgument(
            f"unknown profession code; known: {', '.join(sorted(PROFESSIONS))}",
            field=field,
            slug="invalid-profession",
        )
    return code

"""Property-based fuzzing of the parsers of outside input (pure functions, called directly):
whatever they are given, they answer with a value or the platform's own refusal, never another
exception. (INS and RPPS: libs/kit/tests/test_identifiers.py.)"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import csv
import io
import json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from dmp_dossier import domain as dossier
from dmp_ingest import domain as ingest
from dmp_kit.auth import JwksCache, TokenVerifier
from dmp_kit.clock import SystemClock
from dmp_kit.errors import DmpError, Unauthenticated
from dmp_stack.testing import make_ins, make_rpps

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
lines = st.lists(text, max_size=12)


# --------------------------------------------------------------------------- claims batches


def refused_or_claim(rows: Iterable[ingest.Row]) -> list[ingest.Row]:
    found = list(rows)
    for number, row in found:
        assert number >= 1
        assert isinstance(row, ingest.Claim | str)
        if isinstance(row, ingest.Claim):
            # What is accepted is valid: a checked INS, a real date, no amount.
            assert ingest._valid_ins(row.ins) == row.ins
            assert ingest._valid_date(row.care_date)
            assert not hasattr(row, "amount_paid")
    return found


@settings(max_examples=400, deadline=None)
@given(
    header=st.sampled_from(["", ",".join(ingest.COLUMNS), ",".join(ingest.COLUMNS) + ",amount"]),
    body=lines,
)
def test_any_csv_is_read_without_crashing(header: str, body: list[str]) -> None:
    refused_or_claim(ingest.read_csv(io.StringIO("\n".join([header, *body]))))


@settings(max_examples=400, deadline=None)
@given(
    body=st.lists(
        text
        | st.dictionaries(
            st.sampled_from([*ingest.COLUMNS, "amount"]), st.none() | st.integers() | text
        ).map(json.dumps),
        max_size=12,
    )
)
def test_any_json_lines_are_read_without_crashing(body: list[str]) -> None:
    refused_or_claim(ingest.read_json_lines(body))


@settings(max_examples=200, deadline=None)
@given(
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2030, 12, 31)),
    code=st.text(alphabet="ABCDEFGHIJ0123456789", min_size=1, max_size=8),
    label=st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00"),
        min_size=1,
        max_size=80,
    ),
    kind=st.sampled_from(["consultation", "pharmacie", "biologie", "hospitalisation", "imagerie"]),
)
def test_a_valid_claim_survives_the_trip_through_csv(
    day: date, code: str, label: str, kind: str
) -> None:
    ins, rpps = make_ins(), make_rpps()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*ingest.COLUMNS, "amount_paid"])
    writer.writerow(["c-1", ins, day.isoformat(), kind, code, label, rpps, "12.50"])
    ((_, row),) = list(ingest.read_csv(io.StringIO(out.getvalue())))
    if isinstance(row, str):
        # refused only for a label or code the rules refuse, never for the CSV itself
        assert "CSV" not in row and "fields" not in row, row
        return
    assert (row.ins, row.care_date, row.code) == (ins, day.isoformat(), code)


# --------------------------------------------------------------------------- document metadata


def refusal_only(call: Callable[[], object]) -> None:
    with contextlib.suppress(DmpError):
        call()


@settings(max_examples=500, deadline=None)
@given(value=text, number=st.integers(min_value=-(2**40), max_value=2**40))
def test_document_metadata_is_checked_never_crashes(value: str, number: int) -> None:
    refusal_only(lambda: dossier.check_title(value))
    refusal_only(lambda: dossier.check_mime_type(value))
    refusal_only(lambda: dossier.check_size(number, 20 * 1024 * 1024))
    refusal_only(lambda: dossier.check_directives(value))
    refusal_only(lambda: dossier.check_entries([value, value], "allergies"))
    refusal_only(lambda: dossier.check_contact(value, value, value, 0))
    refusal_only(lambda: dossier.decode_cursor(value))


@settings(max_examples=300, deadline=None)
@given(
    payload=st.recursive(
        st.none() | st.integers() | text, lambda c: st.lists(c, max_size=3), max_leaves=6
    )
)
def test_a_forged_cursor_is_refused(payload: object) -> None:
    cursor = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    refusal_only(lambda: dossier.decode_cursor(cursor))


# --------------------------------------------------------------------------- tokens

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
JWK = {
    "kty": "OKP",
    "crv": "Ed25519",
    "kid": "k1",
    "x": base64.urlsafe_b64encode(PUBLIC).rstrip(b"=").decode(),
}


def verifier() -> TokenVerifier:
    async def fetch() -> Iterable[Mapping[str, str]]:
        return [JWK]

    return TokenVerifier(
        JwksCache(fetch, min_refresh_interval=0), issuer="iss", audience="dmp", clock=SystemClock()
    )


def good_token(**extra: object) -> str:
    now = int(time.time())
    claims = {
        "iss": "iss",
        "aud": "dmp",
        "sub": "u1",
        "iat": now,
        "exp": now + 600,
        "kind": "patient",
        "roles": ["patient"],
        "ins": make_ins(),
        **extra,
    }
    return jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "k1", "typ": "at+jwt"})


def outcome(token: str) -> str:
    try:
        asyncio.run(verifier().verify(token))
    except Unauthenticated:
        return "refused"
    return "accepted"


def test_the_good_token_is_accepted() -> None:
    assert outcome(good_token()) == "accepted"


@settings(max_examples=400, deadline=None)
@given(token=text)
def test_any_string_as_a_token_is_refused(token: str) -> None:
    assert outcome(token) == "refused"


def same_signature(a: str, b: str) -> bool:
    try:
        return base64.urlsafe_b64decode(a.split(".")[-1] + "==") == base64.urlsafe_b64decode(
            b.split(".")[-1] + "=="
        )
    except (binascii.Error, ValueError):
        return False


@settings(max_examples=400, deadline=None)
@given(position=st.integers(min_value=0), replacement=st.characters(codec="ascii"))
def test_any_altered_character_of_a_token_is_refused(position: int, replacement: str) -> None:
    token = good_token()
    at = position % len(token)
    if token[at] == replacement:
        return
    altered = token[:at] + replacement + token[at + 1 :]
    # base64url's last character carries unused bits: a change there may decode to the same
    # signature, which is then rightly valid (the header and payload are signed as text).
    if at > token.rindex(".") and same_signature(altered, token):
        return
    assert outcome(altered) == "refused", (at, replacement)


@settings(max_examples=300, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "crit", "jku", "x5u"]),
        st.none() | st.integers() | text,
    ),
    claims=st.dictionaries(text, st.none() | st.integers() | text, max_size=5),
)
def test_a_token_with_any_header_and_claims_but_no_valid_signature_is_refused(
    header: dict[str, object], claims: dict[str, object]
) -> None:
    def part(data: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    assert outcome(f"{part(header)}.{part(claims)}.{part('sig')}") == "refused"

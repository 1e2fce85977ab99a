"""Identity's pure rules: lockout, registration, one-time codes, token claims, assertions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dmp_identity import domain
from dmp_kit.auth import public_key_from_jwk
from dmp_kit.errors import InvalidArgument

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
POLICY = domain.LockoutPolicy(10, 5, timedelta(minutes=1), timedelta(hours=24))


def test_lock_durations_double_up_to_the_cap() -> None:
    assert [POLICY.lock_duration(n) for n in range(4)] == [
        timedelta(minutes=m) for m in (1, 2, 4, 8)
    ]
    assert POLICY.lock_duration(50) == timedelta(hours=24)


def reserve(t: domain.Throttle, attempt: str = "a", now: datetime = NOW) -> domain.Throttle:
    granted, reserved = t.reserve_password(now, POLICY, attempt)
    assert granted
    return reserved


def refused(t: domain.Throttle, now: datetime = NOW) -> domain.Throttle:
    granted, after = t.reserve_password(now, POLICY, "refused")
    assert not granted and "refused" not in after.leases
    return after


def wrong_password(t: domain.Throttle) -> domain.Throttle:
    return reserve(t).after_wrong_password(NOW, POLICY, "a")


def test_ten_password_failures_lock() -> None:
    t = domain.Throttle()
    for _ in range(9):
        t = wrong_password(t)
        assert t.locked_for(NOW) == 0 and t.leases == {}
    t = wrong_password(t)
    assert t.locked_for(NOW) == 60 and t.locks == 1 and t.password_failures == 0
    assert refused(t) == t, "locked: no password is checked"
    assert t.locked_for(NOW + timedelta(seconds=61)) == 0
    reserve(t, now=NOW + timedelta(seconds=61))


def test_password_attempts_are_counted_before_they_are_checked() -> None:
    """Ten attempts in flight at once take every place: the eleventh is not checked, and the
    first wrong one to finish locks."""
    t = domain.Throttle()
    for n in range(10):
        t = reserve(t, str(n))
    refused(t)
    t = t.after_wrong_password(NOW, POLICY, "0")
    assert t.locks == 1 and t.locked_for(NOW) == 60
    finishing_later = t.after_wrong_password(NOW, POLICY, "1")
    assert finishing_later == t, "the others, finishing later, change nothing"


def test_a_right_password_gives_its_place_back() -> None:
    t = reserve(domain.Throttle(password_failures=9))
    refused(t)
    assert t.after_right_password("a") == domain.Throttle(password_failures=9)
    assert domain.Throttle().after_right_password("a") == domain.Throttle()


def test_places_never_settled_lapse_and_free_the_login() -> None:
    """Attempts abandoned after taking their place (a crash, a cancelled call) hold it no
    longer than the lease: the refusal says when to come back, and then a check is made."""
    t = domain.Throttle(password_failures=4)
    for n in range(6):
        t = reserve(t, str(n), NOW + timedelta(seconds=n))
    assert refused(t).retry_after(NOW) == 30
    assert refused(t, NOW + timedelta(seconds=29)).retry_after(NOW + timedelta(seconds=29)) == 1
    later = NOW + timedelta(seconds=30.5)
    after = reserve(t, "late", later)
    assert set(after.leases) == {"1", "2", "3", "4", "5", "late"}, "the lapsed place is dropped"
    assert after.after_wrong_password(later, POLICY, "0") == after, "a lapsed place counts no more"


def test_a_count_at_the_limit_without_a_lock_locks_for_a_while() -> None:
    """Counters left at the limit with no lock (by attempts counted and never settled) once
    refused every login for good: they lock now, with the usual backoff, and the lock ends."""
    stuck = domain.Throttle(password_failures=10, locks=2)
    after = refused(stuck)
    assert after.locks == 3 and after.locked_for(NOW) == 240 and after.password_failures == 0
    assert after.retry_after(NOW) == 240
    reserve(after, now=NOW + timedelta(seconds=241))


def test_five_code_failures_lock_and_the_next_lock_is_longer() -> None:
    t = domain.Throttle(locks=1)
    for _ in range(4):
        t = t.after_wrong_code(NOW, POLICY)
        assert t.locked_for(NOW) == 0
    t = t.after_wrong_code(NOW, POLICY)
    assert t.locks == 2 and t.locked_for(NOW) == 120


@pytest.mark.parametrize(
    "client_id",
    ["10000000009", "180017512345660", "2750519123456 85".replace(" ", ""), "1-insurer", "ab"],
)
def test_a_client_id_is_never_a_person_s_identifier(client_id: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        domain.validate_client(client_id, ["insurer"])
    assert exc.value.field == "client_id"


def test_client_ids_start_with_a_letter() -> None:
    assert domain.validate_client("cpam-75", ["insurer"]) == ("cpam-75", ("insurer",))


def test_patient_registration_is_normalised_and_checked() -> None:
    reg = domain.PatientRegistration.parse(
        ins="2750519123456 85".replace(" ", ""),
        vitale_serial="ab123456",
        given_name=" Léa ",
        family_name="Rossi",
        birth_date="2001-02-03",
        email="Lea@Example.org",
        phone="",
        today=date(2026, 1, 1),
    )
    assert (reg.given_name, reg.email) == ("Léa", "lea@example.org")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vitale_serial": "!"}, "vitale_serial"),
        ({"given_name": " "}, "given_name"),
        ({"birth_date": "2030-01-01"}, "birth_date"),
        ({"birth_date": "03/02/2001"}, "birth_date"),
        ({"email": "", "phone": ""}, "email"),
        ({"phone": "12"}, "phone"),
        ({"ins": "123"}, "ins"),
    ],
)
def test_patient_registration_names_the_field_at_fault(change: dict[str, str], field: str) -> None:
    good = {
        "ins": "180017512345660",
        "vitale_serial": "12345678",
        "given_name": "A",
        "family_name": "B",
        "birth_date": "2001-02-03",
        "email": "a@example.org",
        "phone": "",
    }
    with pytest.raises(InvalidArgument) as exc:
        domain.PatientRegistration.parse(**{**good, **change}, today=date(2026, 1, 1))
    assert exc.value.field == field


def test_professional_roles_are_a_closed_list() -> None:
    with pytest.raises(InvalidArgument) as exc:
        domain.ProfessionalRegistration.parse(
            rpps="10000000009",
            profession="10",
            specialty="",
            given_name="A",
            family_name="B",
            email="a@b.fr",
            phone="",
            roles=["admin"],
        )
    assert exc.value.field == "roles"


@pytest.mark.parametrize("password", ["short", "x" * 257])
def test_password_length_bounds(password: str) -> None:
    with pytest.raises(InvalidArgument, match="caractères"):
        domain.validate_password(password)


def test_codes_are_six_digits_and_vary() -> None:
    codes = {domain.new_otp() for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert len(codes) > 150


def test_access_token_round_trip_with_the_published_key() -> None:
    kid, raw, jwk = domain.new_signing_key()
    claims = domain.access_claims(
        account={
            "_id": "a1",
            "rpps": "10000000009",
            "profession": "10",
            "roles": ["samu_regulator"],
        },
        kind="professional",
        issuer="iss",
        audience="dmp",
        now=NOW,
        ttl=timedelta(minutes=15),
        jti="j1",
    )
    token = domain.sign_access_token(claims, raw, kid)
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": kid, "typ": "at+jwt"}
    key = public_key_from_jwk(jwk)
    assert isinstance(key, Ed25519PublicKey)
    decoded = jwt.decode(
        token, key, algorithms=["EdDSA"], audience="dmp", options={"verify_exp": False}
    )
    assert decoded["roles"] == ["professional", "samu_regulator"]
    assert decoded["exp"] - decoded["iat"] == 900
    assert "ins" not in decoded


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"iss": "other", "sub": "c1"}, "iss and sub"),
        ({"iss": "c1", "sub": "c1"}, "jti"),
        ({"iss": "c1", "sub": "c1", "jti": "j", "exp": NOW.timestamp() - 1}, "expired"),
        (
            {"iss": "c1", "sub": "c1", "jti": "j", "exp": (NOW + timedelta(hours=1)).timestamp()},
            "too long",
        ),
    ],
)
def test_client_assertion_claims(claims: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        domain.check_assertion_claims(claims, "c1", NOW)
    ok = {"iss": "c1", "sub": "c1", "jti": "j", "exp": (NOW + timedelta(minutes=2)).timestamp()}
    assert domain.check_assertion_claims(ok, "c1", NOW) == "j"

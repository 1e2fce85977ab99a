"""The password policy (NIST SP 800-63B §3.1.1.2): what it refuses, why, and what it lets by;
and the provisional accounts' codes and legal delay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dmp_identity import domain
from dmp_kit.errors import InvalidArgument

CONTEXT = [
    "Camille",
    "Le Goff",
    "180017512345660",
    "camille.legoff@example.org",
    "+33612345678",
    "1984-05-17",
    "10101234567",
]


def refusal(password: str, context: list[str] | None = None) -> str | None:
    try:
        domain.validate_password(password, CONTEXT if context is None else context)
    except InvalidArgument as exc:
        return f"{exc.problem}" if exc.field == "password" else f"field {exc.field}"
    return None


@pytest.mark.parametrize("password", ["", "short", "elevenchars", "x" * (domain.MAX_PASSWORD + 1)])
def test_length(password: str) -> None:
    assert refusal(password) == "weak-password"


@pytest.mark.parametrize(
    "password",
    [
        "aaaaaaaaaaaa",
        "AAAAAAAAAAAAAAAAAAAA",
        "aaaaaaaaaaab",
        "abababababab",
        "abcabcabcabc",
        "tigretigretigre",
        "123123123123",
        "123456789012",
        "987654321098",
        "abcdefghijklm",
        "zyxwvutsrqpo",
        "azertyuiopqsdf",
        "qwertyuiopasd",
        "1-2-3-4-5-6-7-8",
        "............",
    ],
)
def test_repetitions_and_sequences(password: str) -> None:
    assert refusal(password) == "trivial-password"


@pytest.mark.parametrize(
    "password",
    [
        "password1234",
        "Password1234",
        "p@ssw0rd1234",
        "iloveyou1234",
        "motdepasse2024!",
        "Mot De Passe 2024",
        "soleil123456",
        "qwertyuiop12",
        "123456789qwe",
        "leavemealone",
    ],
)
def test_common_and_breached(password: str) -> None:
    assert refusal(password) == "common-password"


@pytest.mark.parametrize(
    "password",
    [
        "camille et moi",
        "zz legoff zz9",
        "Le Goff du 29 !",
        "mon 180017512345660",
        "camille.legoff!!",
        "appel 0612345678",
        "né le 17051984 !",
        "19840517 xyzw!",
        "rpps 10101234567",
        "mon espace santé 1",
        "MonEspaceSante!",
    ],
)
def test_built_from_the_person(password: str) -> None:
    assert refusal(password) == "personal-password"


@pytest.mark.parametrize(
    "password",
    [
        "patient password 1",
        "correct horse battery staple",
        "Xy#$%^&*()!@",
        "#$%^&*()!@#$",
        "7Rk!pz2Qw9vL",
        "la mer est calme ce soir",
        "1984 était un roman",
        "camomille du jardin",
    ],
)
def test_good_passwords_pass(password: str) -> None:
    assert refusal(password) is None


def test_short_context_words_do_not_refuse_unrelated_passwords() -> None:
    """A name of three letters is inside too many passwords to refuse them all."""
    assert refusal("pleasant tulips", ["Léa", "Lea"]) is None
    assert refusal("julie julie julie", ["Julie"]) == "trivial-password"


def test_context_is_folded_like_the_password() -> None:
    assert refusal("hélène et les garçons", ["Hélène"]) == "personal-password"
    assert refusal("HELENE et les garcons", ["hélène"]) == "personal-password"


def test_refusals_explain_in_french() -> None:
    for password in ("short", "aaaaaaaaaaaa", "password1234", "camille et moi"):
        with pytest.raises(InvalidArgument) as caught:
            domain.validate_password(password, CONTEXT)
        assert "mot de passe" in caught.value.detail.lower()


def test_the_list_is_the_packaged_one() -> None:
    assert len(domain._common_passwords()) >= 30_000


# ------------------------------------------- provisional accounts (the directory creates them)


def test_provisional_codes_are_ten_unambiguous_characters() -> None:
    codes = {domain.new_provisional_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(len(c) == 10 and set(c) <= set(domain.PROVISIONAL_ALPHABET) for c in codes)
    assert not set(domain.PROVISIONAL_ALPHABET) & set("IO01")


@pytest.mark.parametrize("typed", ["abcde fghjk", "ABCDE-FGHJK", " abcdefghjk "])
def test_a_provisional_code_is_read_as_people_type_it(typed: str) -> None:
    assert domain.normalise_provisional_code(typed) == "ABCDEFGHJK"


@pytest.mark.parametrize("typed", ["", "123456", "ABCDEFGHJ", "ABCDEFGHJKL", "ABCDEFGHJ0"])
def test_a_provisional_code_of_another_shape_is_refused(typed: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.normalise_provisional_code(typed)
    assert caught.value.field == "provisional_code"


def test_an_account_to_activate_is_active_by_itself_at_the_legal_delay() -> None:
    created = datetime(2026, 1, 5, 9, tzinfo=UTC)
    due = created + timedelta(weeks=6)
    account = {"status": "to_activate", "activation_due_at": due}
    assert domain.account_status(account, created) == "to_activate"
    assert domain.account_status(account, due - timedelta(seconds=1)) == "to_activate"
    assert domain.account_status(account, due) == "active"
    assert domain.account_status({}, created) == "active", "registered by an administrator"
    assert domain.account_status({"status": "active"}, created) == "active"

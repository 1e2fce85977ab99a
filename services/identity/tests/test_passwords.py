"""An unknown login does the work a known one does: exactly one Argon2 verification, against
a hash of the same parameters. Counted, not timed: a timing of a few logins on a shared
machine says more about the machine than about the code."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher, extract_parameters

from dmp_identity.passwords import Passwords


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__()
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


@pytest.fixture
def counted() -> tuple[Passwords, CountingHasher, str]:
    hasher = CountingHasher()
    passwords = Passwords(hasher)
    return passwords, hasher, hasher.hash("the right password")


@pytest.mark.parametrize(
    ("stored", "password", "accepted"),
    [
        ("known", "the right password", True),
        ("known", "a wrong password", False),
        (None, "the right password", False),
        (None, "a wrong password", False),
        ("", "a wrong password", False),
    ],
)
async def test_every_login_costs_one_verification(
    counted: tuple[Passwords, CountingHasher, str],
    stored: str | None,
    password: str,
    accepted: bool,
) -> None:
    passwords, hasher, known = counted
    held = known if stored == "known" else stored
    assert await passwords.ok(held, password) is accepted
    assert len(hasher.verified) == 1
    assert hasher.verified[0] == (known if held else passwords.dummy)


def test_the_stand_in_hash_costs_what_an_account_hash_costs(
    counted: tuple[Passwords, CountingHasher, str],
) -> None:
    passwords, _, known = counted
    assert extract_parameters(passwords.dummy) == extract_parameters(known)
    assert passwords.dummy != known

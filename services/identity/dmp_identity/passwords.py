"""Passwords hashed and checked with Argon2id, an unknown login costing what a known one does."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Passwords:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        # Unknown logins are checked against this, so they take as long as known ones:
        # one verification against a hash of the same parameters.
        self.dummy = self.hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    def ok_now(self, stored: str | None, password: str) -> bool:
        """Whether `password` is the one `stored` holds; with nothing stored, still one
        verification (against `dummy`), and False."""
        try:
            return self.hasher.verify(stored or self.dummy, password) and bool(stored)
        except (VerificationError, InvalidHashError):
            return False

    async def ok(self, stored: str | None, password: str) -> bool:
        return await asyncio.to_thread(self.ok_now, stored, password)

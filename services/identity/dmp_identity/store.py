"""All of identity's database access."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from dmp.events.v1 import envelope_pb2
from dmp_identity.domain import Throttle
from dmp_kit.errors import AlreadyExists
from dmp_kit.mongo import Document, Store, upsert
from dmp_kit.outbox import VERSION, Change, change_document
from dmp_kit.periodic import DailyReads

# "next": published ahead of signing; "active": signs; "retiring": its tokens still live.
# Out of the JWKS: "retired" (its tokens have expired) and "revoked" (withdrawn for good).
PUBLISHED_KEY_STATUSES = ("next", "active", "retiring")
# A session's refresh tokens are kept this long after the session's absolute end (no token of
# it can refresh by then): a replay of one of them meanwhile is still recognised as reuse.
ENDED_SESSIONS_KEPT = timedelta(days=7)
# A patient's legal representatives still act for them (a minor, until their majority).
REPRESENTED = "represented"
MAJORITY_NOTICED = "majority_noticed"
# The Paris day (YYYY-MM-DD) the schedule looks at a represented minor again: the next step's,
# as computed with the notice period in REPRESENTATION_NOTICE_DAYS, or the day of their
# registration. Read by equality, day by day, from an index every server answers from.
REPRESENTATION_ON = "representation_on"
REPRESENTATION_NOTICE_DAYS = "representation_notice_days"


class IdentityStore(Store):
    @cached_property
    def accounts(self) -> Any:
        return self.db["accounts"]

    @cached_property
    def logins(self) -> Any:
        """`kind:login` → account id: finding an account by its login is a key lookup on
        every server (FerretDB scans a collection for any filter but one on `_id`)."""
        return self.db["logins"]

    @cached_property
    def throttles(self) -> Any:
        return self.db["throttles"]

    @cached_property
    def challenges(self) -> Any:
        return self.db["challenges"]

    @cached_property
    def code_guesses(self) -> Any:
        """One row per guess allowed on a challenge, taken before the guess is checked."""
        return self.db["code_guesses"]

    @cached_property
    def refresh_tokens(self) -> Any:
        return self.db["refresh_tokens"]

    @cached_property
    def signing_keys(self) -> Any:
        return self.db["signing_keys"]

    @cached_property
    def clients(self) -> Any:
        return self.db["clients"]

    @cached_property
    def assertion_ids(self) -> Any:
        return self.db["assertion_ids"]

    async def ensure_indexes(self) -> None:
        await self.accounts.create_index([("kind", ASCENDING), ("login", ASCENDING)], unique=True)
        await self._index_logins()
        await self.refresh_tokens.create_index("family")
        await self.refresh_tokens.create_index("account_id")
        await self.refresh_tokens.create_index("session_expires_at")
        await self.signing_keys.create_index("status")
        await self.challenges.create_index("expires_at")
        await self.code_guesses.create_index("expires_at")
        await self.assertion_ids.create_index("expires_at")
        await self.accounts.create_index(REPRESENTED, sparse=True)
        await self.accounts.create_index(REPRESENTATION_ON, sparse=True)
        await AppStore(self).ensure_indexes()
        await self._mark_represented()

    # accounts ---------------------------------------------------------------

    async def _index_logins(self) -> None:
        """Accounts registered before the login keys existed get theirs (once, at start)."""
        if await self.logins.estimated_document_count() >= (
            await self.accounts.estimated_document_count()
        ):
            return
        async for doc in self.accounts.find({}, {"kind": 1, "login": 1}):
            if doc.get("kind") and doc.get("login"):
                key = _login_key(doc["kind"], doc["login"])
                await upsert(
                    lambda key=key, doc=doc: self.logins.update_one(
                        {"_id": key}, {"$setOnInsert": {"account_id": doc["_id"]}}, upsert=True
                    )
                )

    async def _mark_represented(self) -> None:
        """Minors registered before their representation was scheduled get the mark the
        schedule finds them by (once: the marked ones are not matched again)."""
        await self.accounts.update_many(
            {
                "kind": "patient",
                REPRESENTED: {"$exists": False},
                "legal_representatives.0": {"$exists": True},
            },
            {"$set": {REPRESENTED: True}},
        )

    async def represented(self, reads: DailyReads, today: date) -> list[Document]:
        """The minors to look at today, read by REPRESENTATION_ON (see DailyReads), with what
        the schedule needs."""
        fields = ["ins", "birth_date", "legal_representatives", REPRESENTED, MAJORITY_NOTICED]
        return await reads.find(self.accounts, {REPRESENTED: True}, today, fields)

    async def look_again_under(self, notice_days: int, today: date) -> int:
        """Minors whose notice day was computed with another notice period (the end's day does
        not depend on it), and those registered by an older version (no day), are looked at
        again today; how many. Run once a day."""
        registered = await self.accounts.update_many(
            {REPRESENTED: True, REPRESENTATION_ON: {"$exists": False}},
            {"$set": {REPRESENTATION_ON: today.isoformat()}, "$inc": {VERSION: 1}},
        )
        result = await self.accounts.update_many(
            {
                REPRESENTED: True,
                MAJORITY_NOTICED: {"$ne": True},
                REPRESENTATION_NOTICE_DAYS: {"$ne": notice_days},
                REPRESENTATION_ON: {"$gt": today.isoformat()},
            },
            {"$set": {REPRESENTATION_ON: today.isoformat()}, "$inc": {VERSION: 1}},
        )
        return int(registered.modified_count) + int(result.modified_count)

    async def change_account(
        self, account_id: str, fields: Change, *events: envelope_pb2.Envelope
    ) -> Document | None:
        """One change of an account, decided on it as it is now, with its events (outbox)."""
        return await change_document(self.accounts, account_id, fields, *events)

    async def insert_account(self, doc: Document) -> None:
        """The login key first (unique: two registrations of one login race on it), then the
        account. A key left without its account by a crash in between is taken over."""
        key = _login_key(doc["kind"], doc["login"])
        taken = AlreadyExists(
            f"this {doc['kind']} is already registered", field=_login_field(doc["kind"])
        )
        try:
            await self.logins.insert_one({"_id": key, "account_id": doc["_id"]})
        except DuplicateKeyError as exc:
            held = await self.logins.find_one({"_id": key})
            if held is None or await self.get_account(held["account_id"]) is not None:
                raise taken from exc
            orphan = await self.logins.update_one(
                {"_id": key, "account_id": held["account_id"]},
                {"$set": {"account_id": doc["_id"]}},
            )
            if orphan.modified_count != 1:
                raise taken from exc
        try:
            await self.accounts.insert_one(doc)
        except DuplicateKeyError as exc:
            raise taken from exc

    async def find_account(self, kind: str, login: str) -> Document | None:
        key = await self.logins.find_one({"_id": _login_key(kind, login)})
        if key is None:
            return None
        doc = await self.get_account(key["account_id"])
        if doc is None or doc.get("kind") != kind or doc.get("login") != login:
            return None  # a key whose account's insert never happened
        return doc

    async def get_account(self, account_id: str) -> Document | None:
        doc: Document | None = await self.accounts.find_one({"_id": account_id})
        return doc

    async def activate(self, account_id: str, fields: Document) -> bool:
        """An account awaiting activation becomes its person's; False if it awaits none (an
        activation raced by another, or an opposition)."""
        result = await self.accounts.update_one(
            {"_id": account_id, "provisional_digest": {"$exists": True}},
            {"$set": fields, "$unset": {"provisional_digest": "", "activation_due_at": ""}},
        )
        return bool(result.modified_count == 1)

    async def delete_account(self, account: Document) -> None:
        """The account, then its login key (a key left alone is taken over, see insert_account)."""
        await self.accounts.delete_one({"_id": account["_id"]})
        await self.logins.delete_one(
            {"_id": _login_key(account["kind"], account["login"]), "account_id": account["_id"]}
        )

    # oppositions: the INS of the people who refused an account ----------------------

    @cached_property
    def oppositions(self) -> Any:
        return self.db["oppositions"]

    async def opposition(self, ins: str) -> Document | None:
        doc: Document | None = await self.oppositions.find_one({"_id": ins})
        return doc

    async def record_opposition(self, ins: str, now: datetime) -> None:
        await self.oppositions.update_one(
            {"_id": ins}, {"$setOnInsert": {"opposed_at": now}}, upsert=True
        )

    async def withdraw_opposition(self, ins: str) -> bool:
        result = await self.oppositions.delete_one({"_id": ins})
        return bool(result.deleted_count == 1)

    async def set_contact(self, account_id: str, key: str, address: str) -> None:
        """`key`: email or phone."""
        await self.accounts.update_one({"_id": account_id}, {"$set": {key: address}})

    async def set_password(self, account_id: str, password_hash: str, now: datetime) -> None:
        await self.accounts.update_one(
            {"_id": account_id},
            {"$set": {"password_hash": password_hash, "password_changed_at": now}},
        )

    # throttles: failure counters, and the outbox of identity.login events --------------

    async def throttle(self, throttle_id: str) -> Throttle:
        return _throttle(await self.throttles.find_one({"_id": throttle_id}))

    async def record_attempt(
        self,
        throttle_id: str,
        change: Callable[[Throttle], Throttle],
        *events: envelope_pb2.Envelope,
    ) -> Throttle:
        """Counters and the login's events change together, in one document; concurrent
        attempts on one login are each counted (no lost update)."""

        def fields(doc: Document | None) -> Document:
            return _fields(change(_throttle(doc)))

        written = await change_document(self.throttles, throttle_id, fields, *events, create=True)
        return _throttle(written)

    async def reserve_attempt(
        self, throttle_id: str, reserve: Callable[[Throttle], tuple[bool, Throttle]]
    ) -> tuple[bool, Throttle]:
        """Holds a place for an attempt before it is checked, or refuses it: whether it was
        granted, and the counters after (a refusal may lock them)."""
        decided: list[tuple[bool, Throttle]] = []

        def fields(doc: Document | None) -> Document | None:
            before = _throttle(doc)
            decided[:] = [reserve(before)]
            after = decided[0][1]
            return _fields(after) if after != before else None

        await change_document(self.throttles, throttle_id, fields, create=True)
        return decided[0]

    # one-time code challenges ------------------------------------------------

    async def insert_challenge(self, doc: Document) -> None:
        await self.challenges.insert_one(doc)

    async def get_challenge(self, challenge_id: str) -> Document | None:
        doc: Document | None = await self.challenges.find_one({"_id": challenge_id})
        return doc

    async def claim_guess(self, challenge_id: str, allowed: int, expires_at: datetime) -> bool:
        """Takes one of the `allowed` guesses of a challenge, before the guess is checked; False
        when all are taken. Each is a row inserted under a unique key: whatever the
        concurrency, on any number of replicas and on FerretDB too (where an update is a read
        then a write, not atomic across processes), no more than `allowed` are ever granted."""
        for n in range(allowed):
            try:
                await self.code_guesses.insert_one(
                    {"_id": f"{challenge_id}:{n}", "expires_at": expires_at}
                )
            except DuplicateKeyError:
                continue
            return True
        return False

    async def consume_challenge(self, challenge_id: str) -> bool:
        """Marks the challenge used; False if it already was (a replay or a race)."""
        async with self.locks.hold("challenges", challenge_id):
            doc = await self.challenges.find_one_and_update(
                {"_id": challenge_id, "used": False}, {"$set": {"used": True}}
            )
        return doc is not None

    async def purge_expired(self, now: datetime) -> None:
        # No TTL indexes (FerretDB): expired rows are removed by the service itself.
        await self.challenges.delete_many({"expires_at": {"$lt": now}})
        await self.code_guesses.delete_many({"expires_at": {"$lt": now}})
        await self.assertion_ids.delete_many({"expires_at": {"$lt": now}})
        await AppStore(self).purge_codes(now)
        # Without this, every refresh a login ever made stays: a row per access token's life.
        ended = now - ENDED_SESSIONS_KEPT
        await self.refresh_tokens.delete_many({"session_expires_at": {"$lt": ended}})
        await self.refresh_tokens.delete_many(  # rows written before sessions had an end
            {"session_expires_at": {"$exists": False}, "expires_at": {"$lt": ended}}
        )

    # refresh tokens ------------------------------------------------------------

    async def insert_refresh(self, doc: Document) -> None:
        await self.refresh_tokens.insert_one(doc)

    async def use_refresh(self, token_hash: str, now: datetime) -> Document | None:
        """Atomically turns an active, unexpired token into a used one."""
        async with self.locks.hold("refresh_tokens", token_hash):
            doc: Document | None = await self.refresh_tokens.find_one_and_update(
                {"_id": token_hash, "status": "active", "expires_at": {"$gt": now}},
                {"$set": {"status": "used", "used_at": now}},
                return_document=ReturnDocument.AFTER,
            )
        return doc

    async def get_refresh(self, token_hash: str) -> Document | None:
        doc: Document | None = await self.refresh_tokens.find_one({"_id": token_hash})
        return doc

    async def live_sessions(self, account_id: str, now: datetime) -> list[Document]:
        """The active, unexpired refresh token of each of an account's sessions, newest first
        (a rotation leaves one active token per family)."""
        cursor = self.refresh_tokens.find(
            {"account_id": account_id, "status": "active", "expires_at": {"$gt": now}}
        )
        found: list[Document] = [doc async for doc in cursor.sort("created_at", -1)]
        return found

    async def revoke_family(self, family: str, now: datetime) -> None:
        await self.refresh_tokens.update_many(
            {"family": family, "status": {"$ne": "revoked"}},
            {"$set": {"status": "revoked", "revoked_at": now}},
        )

    # signing keys ---------------------------------------------------------------

    async def published_keys(self) -> list[Document]:
        """The keys in the JWKS: the next one, the signing one, those whose tokens live on."""
        cursor = self.signing_keys.find({"status": {"$in": list(PUBLISHED_KEY_STATUSES)}})
        return [doc async for doc in cursor.sort("created_at", -1)]

    async def insert_key(self, doc: Document) -> None:
        await self.signing_keys.insert_one(doc)

    async def next_key(self) -> Document | None:
        """The oldest key published ahead of signing."""
        cursor = self.signing_keys.find({"status": "next"}).sort("created_at", 1).limit(1)
        found = [doc async for doc in cursor]
        return found[0] if found else None

    async def promote_key(self, kid: str, now: datetime) -> bool:
        """The next key signs from now on: False if it is no longer the next key."""
        async with self.locks.hold("signing_keys", kid):
            result = await self.signing_keys.update_one(
                {"_id": kid, "status": "next"}, {"$set": {"status": "active", "signing_since": now}}
            )
        return bool(result.modified_count == 1)

    async def retire_keys_except(self, kid: str, now: datetime) -> None:
        await self.signing_keys.update_many(
            {"_id": {"$ne": kid}, "status": "active"},
            {"$set": {"status": "retiring", "retiring_since": now}},
        )

    async def retire_stale(self, before: datetime) -> None:
        await self.signing_keys.update_many(
            {"status": "retiring", "retiring_since": {"$lt": before}},
            {"$set": {"status": "retired"}},
        )

    async def revoke_key(self, kid: str, now: datetime) -> Document | None:
        """Withdraws a published key for good; the key as it was, or None if none such."""
        async with self.locks.hold("signing_keys", kid):
            doc: Document | None = await self.signing_keys.find_one_and_update(
                {"_id": kid, "status": {"$in": list(PUBLISHED_KEY_STATUSES)}},
                {"$set": {"status": "revoked", "revoked_at": now}},
            )
        return doc

    # system clients ---------------------------------------------------------------

    async def insert_client(self, doc: Document) -> None:
        try:
            await self.clients.insert_one(doc)
        except DuplicateKeyError as exc:
            raise AlreadyExists("this client_id is already registered", field="client_id") from exc

    async def put_client(self, doc: Document) -> None:
        # every replica registers the service clients at its start, at once
        await upsert(lambda: self.clients.replace_one({"_id": doc["_id"]}, doc, upsert=True))

    async def remove_service_clients_except(self, prefix: str, kept: list[str]) -> int:
        """Deletes the clients whose id starts with `prefix` but for `kept`: how many."""
        result = await self.clients.delete_many(
            {"_id": {"$regex": f"^{re.escape(prefix)}", "$nin": kept}}
        )
        return int(result.deleted_count)

    async def get_client(self, client_id: str) -> Document | None:
        doc: Document | None = await self.clients.find_one({"_id": client_id})
        return doc

    async def remember_assertion(self, key: str, expires_at: datetime) -> bool:
        """False when this assertion id was seen before (a replay)."""
        try:
            await self.assertion_ids.insert_one({"_id": key, "expires_at": expires_at})
        except DuplicateKeyError:
            return False
        return True


def _fields(throttle: Throttle) -> Document:
    return {
        "password_failures": throttle.password_failures,
        "otp_failures": throttle.otp_failures,
        "locks": throttle.locks,
        "locked_until": throttle.locked_until,
        "leases": throttle.leases,
    }


def _throttle(doc: Document | None) -> Throttle:
    doc = doc or {}
    return Throttle(
        password_failures=doc.get("password_failures", 0),
        otp_failures=doc.get("otp_failures", 0),
        locks=doc.get("locks", 0),
        locked_until=doc.get("locked_until"),
        leases=dict(doc.get("leases") or {}),
    )


def _login_key(kind: str, login: str) -> str:
    return f"{kind}:{login}"


def _login_field(kind: str) -> str:
    return {"patient": "ins", "professional": "rpps"}.get(kind, "login")


class AppStore:
    """The apps a patient connects (OAuth 2.0): the catalogue, authorization codes, connections
    and their refresh tokens. Codes and tokens are kept as keyed digests, never as such."""

    def __init__(self, store: IdentityStore) -> None:
        self.store = store
        self.apps = store.db["apps"]
        self.codes = store.db["app_codes"]
        self.connections = store.db["app_connections"]
        self.tokens = store.db["app_refresh_tokens"]

    async def ensure_indexes(self) -> None:
        await self.connections.create_index("account_id")
        await self.connections.create_index("client_id")
        await self.tokens.create_index("connection")
        await self.codes.create_index("expires_at")

    async def insert_app(self, doc: Document) -> None:
        await self.apps.insert_one(doc)

    async def replace_app(self, doc: Document) -> bool:
        result = await self.apps.replace_one({"_id": doc["_id"], "listed": True}, doc)
        return bool(result.matched_count)

    async def get_app(self, client_id: str) -> Document | None:
        doc: Document | None = await self.apps.find_one({"_id": client_id})
        return doc

    async def listed_apps(self) -> list[Document]:
        return [doc async for doc in self.apps.find({"listed": True}).sort("name", ASCENDING)]

    async def delist(self, client_id: str, now: datetime) -> bool:
        result = await self.apps.update_one(
            {"_id": client_id, "listed": True}, {"$set": {"listed": False, "delisted_at": now}}
        )
        return bool(result.matched_count)

    async def insert_code(self, doc: Document) -> None:
        await self.codes.insert_one(doc)

    async def get_code(self, digest: str) -> Document | None:
        doc: Document | None = await self.codes.find_one({"_id": digest})
        return doc

    async def use_code(self, digest: str, connection: str, now: datetime) -> bool:
        """Atomically spends an unused, unexpired code on the connection it opens; False when
        it was spent before (or has expired)."""
        async with self.store.locks.hold("app_codes", digest):
            doc = await self.codes.find_one_and_update(
                {"_id": digest, "used": False, "expires_at": {"$gt": now}},
                {"$set": {"used": True, "used_at": now, "connection": connection}},
            )
        return doc is not None

    async def purge_codes(self, now: datetime) -> None:
        """Codes and refresh tokens past their time (a used one is kept until then, to know
        it if it comes back), and connections ended more than 90 days ago."""
        await self.codes.delete_many({"expires_at": {"$lt": now}})
        await self.tokens.delete_many({"expires_at": {"$lt": now}})
        await self.connections.delete_many(
            {"status": "revoked", "revoked_at": {"$lt": now - timedelta(days=90)}}
        )

    async def insert_connection(self, doc: Document) -> None:
        await self.connections.insert_one(doc)

    async def get_connection(self, connection: str) -> Document | None:
        doc: Document | None = await self.connections.find_one({"_id": connection})
        return doc

    async def live_connections(self, account_id: str) -> list[Document]:
        cursor = self.connections.find({"account_id": account_id, "status": "active"})
        return [doc async for doc in cursor.sort("connected_at", -1)]

    async def end_connections(self, query: Document, now: datetime) -> int:
        """Ends the active connections `query` finds (by `_id`, `account_id`, `client_id`) and
        every refresh token of theirs, by the same query: no list of them is ever held."""
        result = await self.connections.update_many(
            {**query, "status": "active"}, {"$set": {"status": "revoked", "revoked_at": now}}
        )
        tokens = {("connection" if k == "_id" else k): v for k, v in query.items()}
        await self.tokens.update_many(
            {**tokens, "status": {"$ne": "revoked"}},
            {"$set": {"status": "revoked", "revoked_at": now}},
        )
        return int(result.modified_count)

    async def drop_codes(self, client_id: str) -> None:
        await self.codes.delete_many({"client_id": client_id, "used": False})

    async def note_use(self, connection: str, now: datetime, every: timedelta) -> None:
        """When the app last acted, written at most once per `every`."""
        await self.connections.update_one(
            {
                "_id": connection,
                "$or": [{"last_used_at": {"$lt": now - every}}, {"last_used_at": None}],
            },
            {"$set": {"last_used_at": now}},
        )

    async def insert_token(self, doc: Document) -> None:
        await self.tokens.insert_one(doc)

    async def get_token(self, digest: str) -> Document | None:
        doc: Document | None = await self.tokens.find_one({"_id": digest})
        return doc

    async def use_token(self, digest: str, now: datetime) -> bool:
        """Atomically turns an active, unexpired refresh token into a used one."""
        async with self.store.locks.hold("app_refresh_tokens", digest):
            doc = await self.tokens.find_one_and_update(
                {"_id": digest, "status": "active", "expires_at": {"$gt": now}},
                {"$set": {"status": "used", "used_at": now}},
            )
        return doc is not None

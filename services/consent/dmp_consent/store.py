"""All of consent's database access: one document per dossier, so each change is atomic."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol

from cachetools import LRUCache

from dmp.events.v1 import envelope_pb2
from dmp_consent.domain import (
    ConsentState,
    DossierState,
    DossierStatus,
    EmergencyGrant,
    Mode,
    TrustScope,
)
from dmp_kit.forget import patient_data
from dmp_kit.metrics import Counter
from dmp_kit.mongo import Document, Store
from dmp_kit.outbox import Change, change_document

INVITED, ACTIVE = "invited", "active"  # a trust's status

DossierLookup = Callable[[str], Awaitable[tuple[DossierStatus, list[str]] | None]]
"""A dossier's status and legal representatives, asked of dossier; None when it has none."""
# A minor's legal representatives whose part ended at the minor's majority.
FORMER_REPRESENTATIVES = "former_representatives"
# Consent states held in memory, the dossiers most recently read (a few hundred bytes each).
STATES_HELD = 10_000
# A change's mark is renewed before a write attempt this long after it was made: well within
# the minute after which dossier lets a mark lapse (CONSENT_CHANGE_SECONDS).
REMARK_SECONDS = 20.0
STATES = Counter(
    "dmp_consent_states_total",
    "Consent states a decision used: read from the database, or reused",
    ["source"],
)


class ChangeMarks(Protocol):
    """Where a change of a dossier's consent is marked as begun and ended: dossier's record,
    which every request reads, then gives consent the epoch of a state no change acknowledged
    before that request predates (see `ConsentStore.consent_of`)."""

    async def begin(self, ins: str, change_id: str) -> None:
        """Before the change is written; raises if it could not be marked."""

    async def end(self, ins: str, change_id: str) -> None:
        """After it is written; never raises (a change never ended stops holding the epoch
        back a minute after it began)."""


class ConsentStore(Store):
    """`marks` None: every write unmarked, so every state is read again (tests of the store
    alone)."""

    def __init__(self, db: Any, marks: ChangeMarks | None = None) -> None:
        super().__init__(db)
        self.marks = marks
        self._states: LRUCache[str, tuple[str, ConsentState]] = patient_data(LRUCache(STATES_HELD))

    @cached_property
    def consents(self) -> Any:
        return self.db["consents"]

    async def ensure_indexes(self) -> None:
        await self.consents.create_index("dossier_status")
        await self.consents.create_index("legal_representatives")
        await self.consents.create_index("trusted_ins")

    async def trusting(self, ins: str) -> list[Document]:
        """The consent records whose patient trusts this person or invited them, and those of
        the open dossiers they legally represent."""
        # Two equalities, not an `$or`: FerretDB hands each to PostgreSQL and its index.
        found: dict[str, Document] = {}
        for field in ("trusted_ins", "legal_representatives"):
            async for doc in self.consents.find({field: ins}, {"outbox": 0}):
                found[doc["_id"]] = doc
        return list(found.values())

    async def get(self, ins: str) -> Document | None:
        doc: Document | None = await self.consents.find_one({"_id": ins}, {"outbox": 0})
        return doc

    async def consent_of(self, ins: str, epoch: str) -> ConsentState:
        """The dossier's consent state for a decision. Read again unless this process read it
        under the same `epoch`, as dossier's record gave it to the request: every write here
        marks its change begun (a new epoch, none given while under way) before it lands and
        ended after, so a state read under an epoch includes every change acknowledged before
        a request that is given that epoch, whichever replica made it."""
        usable = bool(epoch) and self.marks is not None
        held = self._states.get(ins) if usable else None
        if held is not None and held[0] == epoch:
            STATES.labels(source="reused").inc()
            return held[1]
        STATES.labels(source="read").inc()
        state = consent_state(await self.get(ins))
        if usable:
            self._states[ins] = (epoch, state)
        return state

    async def _write(
        self,
        ins: str,
        fields: Change,
        *events: envelope_pb2.Envelope,
        create: bool = False,
        changes_state: bool = True,
    ) -> Document | None:
        """`change_document` on `ins`'s consent record. A write that may change the consent
        state (`consent_state`) a decision reuses lands between the marks of its change: begun
        before the first attempt to write (a change refused, or with nothing to write, is not
        marked), ended after."""
        if self.marks is None or not changes_state:
            return await change_document(self.consents, ins, fields, *events, create=create)
        marks, change_id = self.marks, os.urandom(16).hex()
        marked_at: float | None = None  # when the change was last marked begun

        async def begin() -> None:
            # Before each attempt to write: marked once, and again (a new lapse) if the first
            # mark is old, so no write lands after its mark has lapsed (a slow database).
            nonlocal marked_at
            if marked_at is None or time.monotonic() - marked_at > REMARK_SECONDS:
                await marks.begin(ins, change_id)
                marked_at = time.monotonic()
                self._states.pop(ins, None)

        try:
            return await change_document(
                self.consents, ins, fields, *events, create=create, before_write=begin
            )
        finally:
            if marked_at is not None:
                await marks.end(ins, change_id)

    async def record_dossier_status(
        self, ins: str, status: DossierStatus, at: datetime, legal_representatives: list[str]
    ) -> None:
        """The replica of the dossier's status; an older event never overwrites a newer one."""

        def fields(doc: Document | None) -> Document | None:
            if doc is not None and doc.get("status_at") is not None and doc["status_at"] >= at:
                return None
            if doc is None or status is DossierStatus.ABSENT:
                # A purge (rule 13) leaves nothing that grants anything: the care team, the
                # GP, blocks, emergency grants and settings go with the dossier; a DMP opened
                # again for this INS starts as a new one would.
                return _new_record(status, at, legal_representatives)
            new: Document = {"dossier_status": status.value, "status_at": at}
            if status is DossierStatus.OPEN:
                new["legal_representatives"] = legal_representatives
            return new

        # Of the dossier's statuses, only a purge changes a consent state (it forgets every
        # grant); the others change what `dossier_state` reads, never `consent_state`, so they
        # need no mark, and consent learns of them with dossier away.
        await self._write(ins, fields, create=True, changes_state=status is DossierStatus.ABSENT)

    async def adopt_dossier_status(
        self, ins: str, status: DossierStatus, legal_representatives: list[str]
    ) -> None:
        """A status learnt from dossier itself, before its event: recorded only if no event
        has been (or the last said the dossier was purged), keeping the time of that event,
        so that every later event, when it comes, still applies."""

        def fields(doc: Document | None) -> Document | None:
            if doc is None:
                return _new_record(status, None, legal_representatives)
            if doc.get("dossier_status") != DossierStatus.ABSENT.value:
                return None
            return _new_record(status, doc.get("status_at"), legal_representatives)

        # Unmarked: a new record's consent state is the default, as is a purged one's.
        await self._write(ins, fields, create=True, changes_state=False)

    async def drop_representatives(self, ins: str, former: list[str]) -> None:
        """A minor came of age: `former` no longer act for them. Remembered as former, so that
        an older event naming them (a dossier.opened delivered late) gives them nothing back."""

        def fields(doc: Document | None) -> Document | None:
            if doc is None:
                return None  # no dossier known: its opening, later, names nobody
            known = doc.get(FORMER_REPRESENTATIVES, [])
            held = doc.get("legal_representatives", [])
            kept = [rep for rep in held if rep not in former]
            if kept == held and set(former) <= set(known):
                return None
            return {
                "legal_representatives": kept,
                FORMER_REPRESENTATIVES: sorted({*known, *former}),
            }

        # Unmarked: legal representatives are the dossier's state, not the consent state.
        await self._write(ins, fields, changes_state=False)

    async def change(
        self, ins: str, fields: Change, *events: envelope_pb2.Envelope
    ) -> Document | None:
        """One change of a dossier's consent, from its current state, with its events;
        None if the dossier is unknown."""
        return await self._write(ins, fields, *events)


def _new_record(
    status: DossierStatus, at: datetime | None, legal_representatives: list[str]
) -> Document:
    return {
        "dossier_status": status.value,
        "status_at": at,
        "settings": {"allow_emergency_access": True, "allow_regulator_access": True},
        "authorized": [],
        "blocked": [],
        "attending_physician": None,
        "grants": [],
        "legal_representatives": legal_representatives if status is DossierStatus.OPEN else [],
        # Trusted persons: [{ins, scope, status, given_name, family_name, invited_at,
        # accepted_at}], and their INS alone, for the trusted person's own list.
        "trusts": [],
        "trusted_ins": [],
    }


def dossier_state(ins: str, doc: Document | None) -> DossierState:
    if doc is None:
        return DossierState(ins, DossierStatus.ABSENT)
    return DossierState(
        ins,
        DossierStatus(doc.get("dossier_status", "absent")),
        frozenset(doc.get("legal_representatives", []))
        - frozenset(doc.get(FORMER_REPRESENTATIVES, [])),
    )


def consent_state(doc: Document | None) -> ConsentState:
    if doc is None:
        return ConsentState()
    settings = doc.get("settings", {})
    gp = doc.get("attending_physician")
    return ConsentState(
        allow_emergency_access=bool(settings.get("allow_emergency_access", True)),
        allow_regulator_access=bool(settings.get("allow_regulator_access", True)),
        authorized=frozenset(m["rpps"] for m in doc.get("authorized", [])),
        blocked=frozenset(m["rpps"] for m in doc.get("blocked", [])),
        attending_physician=gp["rpps"] if gp else None,
        grants=tuple(
            EmergencyGrant(g["rpps"], Mode(g["mode"]), g["expires_at"])
            for g in doc.get("grants", [])
        ),
        trusted={
            t["ins"]: TrustScope(t["scope"])
            for t in doc.get("trusts", [])
            if t.get("status") == ACTIVE
        },
    )

"""All of consent's database access: one document per dossier, so each change is atomic."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from dmp.events.v1 import envelope_pb2
from dmp_consent.domain import (
    ConsentState,
    DossierState,
    DossierStatus,
    EmergencyGrant,
    Mode,
    TrustScope,
)
from dmp_kit.mongo import Document, Store
from dmp_kit.outbox import Change, change_document

INVITED, ACTIVE = "invited", "active"  # a trust's status

DossierLookup = Callable[[str], Awaitable[tuple[DossierStatus, list[str]] | None]]
"""A dossier's status and legal representatives, asked of dossier; None when it has none."""
# A minor's legal representatives whose part ended at the minor's majority.
FORMER_REPRESENTATIVES = "former_representatives"


class ConsentStore(Store):
    @property
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

        await change_document(self.consents, ins, fields, create=True)

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

        await change_document(self.consents, ins, fields, create=True)

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

        await change_document(self.consents, ins, fields)

    async def change(
        self, ins: str, fields: Change, *events: envelope_pb2.Envelope
    ) -> Document | None:
        """One change of a dossier's consent, from its current state, with its events;
        None if the dossier is unknown."""
        return await change_document(self.consents, ins, fields, *events)


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

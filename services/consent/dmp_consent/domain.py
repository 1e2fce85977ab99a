"""Who may do what on a dossier: rules 4–10 and 13 of DESIGN.md §1, in one pure function.

`decide` is the only place these rules live. The consent service evaluates it for single
decisions and, in batch, to filter document lists; the dossier service never re-implements it.
"""

from __future__ import annotations

import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from dmp_kit.auth import Principal
from dmp_kit.identifiers import PROFESSIONS

ALL_TYPES = "*"
REGULATOR_ROLE = "samu_regulator"
INSURANCE_AGENT_ROLE = "insurance_agent"
DOCTOR, PHARMACIST, NURSE = "10", "21", "60"
# Professions that may open a DMP for a patient (rule 1): the GP (a doctor), a pharmacist, a
# self-employed nurse.
OPENING_PROFESSIONS = frozenset({DOCTOR, PHARMACIST, NURSE})
# A nurse's modes of practice (the RPPS directory's "mode d'exercice") that are self-employed.
SELF_EMPLOYED = frozenset({"liberal", "mixed"})
# Sections a patient fills themselves, and what the insurer's feed writes.
PATIENT_SECTIONS = frozenset({"espace_personnel"})
INSURER_SECTIONS = frozenset({"remboursements"})


class Action(StrEnum):
    OPEN = "open"  # open a DMP for this patient (rule 1)
    READ = "read"  # the dossier itself (status, counts) or one document
    WRITE = "write"  # add a document (rule 4: no read authorisation needed)
    MANAGE = "manage"  # consent settings, care team, masking, profile (patient's choices)
    # The space itself: close, reopen, delete it, name trusted persons, hide a document from
    # them. The patient (or a minor's legal representatives), never a trusted person.
    GOVERN = "govern"


class Mode(StrEnum):
    NORMAL = "normal"
    BREAK_GLASS = "break_glass"
    REGULATOR = "regulator"


class Label(StrEnum):
    MASKED = "MASQUE_PS"
    HIDDEN_FROM_PATIENT = "INVISIBLE_PATIENT"
    HIDDEN_FROM_REPRESENTATIVES = "INVISIBLE_REPRESENTANTS_LEGAUX"
    # The patient keeps a document from their trusted persons.
    HIDDEN_FROM_TRUSTED = "MASQUE_PROCHES"


class TrustScope(StrEnum):
    READ = "read"
    MANAGE = "manage"


class DossierStatus(StrEnum):
    ABSENT = "absent"
    OPEN = "open"
    CLOSED = "closed"
    DELETION_REQUESTED = "deletion_requested"


@dataclass(frozen=True)
class DossierState:
    ins: str
    status: DossierStatus
    legal_representatives: frozenset[str] = frozenset()
    # At opening, the attending physician the insurer's registry says the patient declared
    # (RPPS), when it says one: only they open among doctors.
    declared_gp: str = ""


@dataclass(frozen=True)
class EmergencyGrant:
    rpps: str
    mode: Mode
    expires_at: datetime


@dataclass(frozen=True)
class ConsentState:
    allow_emergency_access: bool = True
    allow_regulator_access: bool = True
    authorized: frozenset[str] = frozenset()
    blocked: frozenset[str] = frozenset()
    attending_physician: str | None = None
    grants: tuple[EmergencyGrant, ...] = ()
    # The trusted persons who accepted: patient INS → scope. Filled for the caller alone.
    trusted: Mapping[str, TrustScope] = field(default_factory=dict)

    def active_grant(self, rpps: str, mode: Mode, now: datetime) -> bool:
        return any(g.rpps == rpps and g.mode is mode and g.expires_at > now for g in self.grants)


@dataclass(frozen=True)
class DocumentFacts:
    type_code: str
    section: str
    author: str  # RPPS, patient INS or client id
    labels: frozenset[Label] = frozenset()
    deleted: bool = False


@dataclass(frozen=True)
class HabilitationMatrix:
    """profession code → document types it may read ("*": every type)."""

    readable: Mapping[str, frozenset[str]] = field(default_factory=dict)
    provenance: str = ""

    def may_read(self, profession: str, type_code: str) -> bool:
        types = self.readable.get(profession, frozenset())
        return ALL_TYPES in types or type_code in types

    @classmethod
    def parse(cls, text: str, known_types: Iterable[str]) -> HabilitationMatrix:
        data = tomllib.loads(text)
        known = set(known_types) | {ALL_TYPES}
        readable: dict[str, frozenset[str]] = {}
        for profession, entry in data.get("professions", {}).items():
            types = frozenset(str(t) for t in entry.get("read", []))
            if unknown := types - known:
                raise ValueError(f"profession {profession}: unknown types {sorted(unknown)}")
            readable[str(profession)] = types
        provenance = "\n".join(
            line.removeprefix("#").strip() for line in text.splitlines() if line.startswith("#")
        ).strip()
        return cls(readable, provenance)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    mode: Mode = Mode.NORMAL


def permit(reason: str, mode: Mode = Mode.NORMAL) -> Decision:
    return Decision(True, reason, mode)


def deny(reason: str) -> Decision:
    return Decision(False, reason)


def decide(
    caller: Principal,
    dossier: DossierState,
    consent: ConsentState,
    matrix: HabilitationMatrix,
    action: Action,
    now: datetime,
    document: DocumentFacts | None = None,
) -> Decision:
    """Permit or deny, with a stable reason and the access mode (for the trace)."""
    if caller.app:
        return _as_app(caller, dossier, action, document)
    if action is Action.OPEN:
        return _open(caller, dossier)
    if dossier.status is DossierStatus.ABSENT:
        return deny("no_dossier")
    is_patient = caller.kind == "patient" and caller.ins == dossier.ins
    if caller.kind == "patient" and not is_patient:
        if caller.ins in dossier.legal_representatives:
            return _as_patient(
                dossier, action, document, Label.HIDDEN_FROM_REPRESENTATIVES, representative=True
            )
        scope = consent.trusted.get(caller.ins)
        if scope is not None:
            return _as_trusted(dossier, action, document, scope)
        return deny("not_your_dossier")
    if is_patient:
        return _as_patient(
            dossier, action, document, Label.HIDDEN_FROM_PATIENT, representative=False
        )
    if dossier.status is not DossierStatus.OPEN:
        # Rule 13: a closed dossier is readable by nobody but the patient.
        return deny("dossier_closed")
    if caller.kind == "professional":
        return _as_professional(caller, consent, matrix, action, now, document)
    if caller.kind == "system":
        return _as_system(caller, action, document)
    return deny("not_a_care_actor")


def may_message(caller: Principal, dossier: DossierState, consent: ConsentState) -> Decision:
    """Secure messaging: any professional the patient has not blocked (rule 5), or a health
    establishment's mailbox, writes to a patient whose space is open; the patient writes in
    their own. Who may open a conversation with whom is messaging's rule; this is consent's."""
    if dossier.status is DossierStatus.ABSENT:
        return deny("no_dossier")
    if dossier.status is not DossierStatus.OPEN:
        return deny("dossier_closed")
    if caller.kind == "patient":
        return permit("patient") if caller.ins == dossier.ins else deny("not_your_dossier")
    if caller.kind == "professional":
        return deny("blocked") if caller.rpps in consent.blocked else permit("professional")
    if caller.kind == "system" and caller.has_role("mailbox"):
        return permit("mailbox")  # an establishment's organisational mailbox
    return deny("not_a_care_actor")


def _open(caller: Principal, dossier: DossierState) -> Decision:
    # Who may open comes first: whether a DMP exists is not told to anyone who may not open it.
    if caller.kind == "patient":
        if caller.ins != dossier.ins:
            return deny("not_your_dossier")
        mode = "patient"
    elif caller.kind == "professional" and caller.profession in OPENING_PROFESSIONS:
        if caller.profession == NURSE and caller.practice not in SELF_EMPLOYED:
            return deny("not_self_employed")
        if caller.profession == DOCTOR and dossier.declared_gp not in ("", caller.rpps):
            return deny("not_attending_physician")
        mode = "opening_professional"
    elif caller.has_role(INSURANCE_AGENT_ROLE):
        mode = "insurance_agent"
    else:
        return deny("may_not_open")
    if dossier.status is not DossierStatus.ABSENT:
        return deny("already_open")
    return permit(mode)


def _as_patient(
    dossier: DossierState,
    action: Action,
    document: DocumentFacts | None,
    hiding_label: Label,
    *,
    representative: bool,
) -> Decision:
    is_open = dossier.status is DossierStatus.OPEN
    if representative and not is_open:
        return deny("dossier_closed")
    if action in (Action.MANAGE, Action.GOVERN):
        return permit("patient")
    if action is Action.WRITE:
        if not is_open:
            return deny("dossier_closed")
        if document is not None and document.section not in PATIENT_SECTIONS:
            return deny("type_not_writable")
        return permit("patient")
    if document is None:
        return permit("patient")
    if document.deleted:
        return deny("deleted")
    hidden = {hiding_label}
    if representative:
        # Representatives see what the patient sees, less what is hidden from them.
        hidden.add(Label.HIDDEN_FROM_PATIENT)
    if document.labels & hidden:
        return deny("hidden_from_patient" if not representative else "hidden_from_representatives")
    return permit("patient")


def _as_app(
    caller: Principal,
    dossier: DossierState,
    action: Action,
    document: DocumentFacts | None,
) -> Decision:
    """An app the patient connected: never more than the patient may do, in the patient's own
    space only (not in the spaces they act for), and never the patient's choices nor the space
    itself. Its scopes (which routes it calls) are the gateway's to check."""
    if caller.kind != "patient" or caller.ins != dossier.ins:
        return deny("not_your_dossier")  # whether another's space exists is not told either
    if dossier.status is DossierStatus.ABSENT:
        return deny("no_dossier")
    if action is Action.OPEN:
        return deny("not_for_apps")
    if dossier.status is not DossierStatus.OPEN:
        return deny("dossier_closed")  # rule 13: the patient alone, to reopen it
    if action in (Action.MANAGE, Action.GOVERN):
        return deny("not_for_apps")
    return _as_patient(dossier, action, document, Label.HIDDEN_FROM_PATIENT, representative=False)


def _as_trusted(
    dossier: DossierState, action: Action, document: DocumentFacts | None, scope: TrustScope
) -> Decision:
    """A trusted person acts for the patient within their scope, while the space is open: they
    read what the patient reads, less what the patient keeps from them (and what is kept from
    a minor's representatives); with "manage", they also make the patient's choices. The space
    itself (closing it, naming trusted persons) stays the patient's."""
    if dossier.status is not DossierStatus.OPEN:
        return deny("dossier_closed")
    if action is Action.GOVERN:
        return deny("not_for_trusted_persons")
    if action in (Action.MANAGE, Action.WRITE):
        if scope is not TrustScope.MANAGE:
            return deny("read_only")
        writes_elsewhere = document is not None and document.section not in PATIENT_SECTIONS
        if action is Action.WRITE and writes_elsewhere:
            return deny("type_not_writable")
        return permit("trusted_person")
    if document is None:
        return permit("trusted_person")
    if document.deleted:
        return deny("deleted")
    hidden = {
        Label.HIDDEN_FROM_PATIENT,
        Label.HIDDEN_FROM_REPRESENTATIVES,
        Label.HIDDEN_FROM_TRUSTED,
    }
    if document.labels & hidden:
        return deny("hidden_from_trusted_persons")
    return permit("trusted_person")


def _as_professional(
    caller: Principal,
    consent: ConsentState,
    matrix: HabilitationMatrix,
    action: Action,
    now: datetime,
    document: DocumentFacts | None,
) -> Decision:
    rpps = caller.rpps
    if rpps in consent.blocked:
        return deny("blocked")  # rule 5: whatever else applies
    if action in (Action.MANAGE, Action.GOVERN):
        return deny("patient_only")
    if action is Action.WRITE:
        if document is not None and document.section in PATIENT_SECTIONS | INSURER_SECTIONS:
            return deny("type_not_writable")
        return permit("professional")
    is_gp = rpps == consent.attending_physician
    if is_gp or rpps in consent.authorized:
        mode, reason = Mode.NORMAL, "attending_physician" if is_gp else "care_team"
    elif consent.allow_emergency_access and consent.active_grant(rpps, Mode.BREAK_GLASS, now):
        mode, reason = Mode.BREAK_GLASS, "break_glass"
    elif (
        caller.has_role(REGULATOR_ROLE)
        and consent.allow_regulator_access
        and consent.active_grant(rpps, Mode.REGULATOR, now)
    ):
        mode, reason = Mode.REGULATOR, "regulator"
    elif document is not None and document.author == rpps and not document.deleted:
        return permit("author")
    else:
        return deny("not_in_care_team")
    if document is None:
        return permit(reason, mode)
    if document.deleted:
        return deny("deleted")
    if document.author == rpps:
        return permit("author", mode)
    if is_gp:
        return permit("attending_physician", mode)  # rule 6: masked ones included
    if Label.MASKED in document.labels:
        return deny("masked")  # rule 7, in every mode (rule 9)
    if not matrix.may_read(caller.profession, document.type_code):
        return deny("not_habilitated")
    return permit(reason, mode)


def _as_system(caller: Principal, action: Action, document: DocumentFacts | None) -> Decision:
    """Systems write; a facility's software also reads back the documents it wrote (rule 4:
    an author always sees what they wrote) unless the patient masked them, and nothing else.
    A client's roles add up."""
    if action is Action.READ and caller.has_role("facility"):
        if document is None:
            return permit("facility_own_documents")  # each document is then decided alone
        if document.author != caller.client_id or document.deleted:
            return deny("not_the_author")
        # The patient's mask holds: the software is not the person who wrote it (rule 7).
        if Label.MASKED in document.labels:
            return deny("masked")
        return permit("author")
    if action is not Action.WRITE:
        return deny("systems_do_not_read")
    section = document.section if document is not None else None
    if caller.has_role("facility") and section not in PATIENT_SECTIONS | INSURER_SECTIONS:
        return permit("facility")
    if caller.has_role("insurer") and (section is None or section in INSURER_SECTIONS):
        return permit("insurer_feed")
    if caller.has_role("facility") or caller.has_role("insurer"):
        return deny("type_not_writable")
    return deny("not_a_care_actor")


# The preview ("que voit le Dr X ?") -------------------------------------------------------

PREVIEW_SUBJECT = "preview"

# What each reason a professional gets from `decide` means, told to the patient in French.
EXPLANATIONS: Mapping[str, str] = {
    "attending_physician": "Votre médecin traitant voit tous vos documents, même ceux que vous "
    "avez masqués.",
    "care_team": "Vous avez autorisé ce professionnel : il voit les types de documents que sa "
    "profession peut lire.",
    "author": "Ce professionnel est l'auteur de ce document : il le voit toujours.",
    "break_glass": "Ce professionnel a un accès d'urgence (bris de glace) en cours.",
    "regulator": "Ce médecin régulateur du SAMU a un accès en cours pour un appel au 15.",
    "blocked": "Vous avez bloqué ce professionnel : il ne peut rien consulter dans votre "
    "dossier, quoi que disent les autres règles.",
    "not_in_care_team": "Ce professionnel n'est ni votre médecin traitant ni un professionnel "
    "que vous avez autorisé, et il n'a pas d'accès d'urgence en cours.",
    "masked": "Vous avez masqué ce document aux professionnels : seuls son auteur et votre "
    "médecin traitant le voient.",
    "not_habilitated": "La matrice d'habilitation ne permet pas à sa profession de lire ce "
    "type de document.",
    "deleted": "Ce document a été supprimé.",
    "dossier_closed": "Votre dossier est fermé : aucun professionnel ne peut le consulter.",
    "no_dossier": "Il n'y a pas de dossier pour ce patient.",
}


def explain(reason: str) -> str:
    return EXPLANATIONS.get(reason, "")


def profession_code(given: str) -> str | None:
    """The profession a person means: a code of the RPPS directory, or its French name with
    accents and case aside ("infirmier", "masseur-kinesitherapeute")."""
    if given in PROFESSIONS:
        return given
    wanted = _plain(given)
    return next((code for code, name in PROFESSIONS.items() if _plain(name) == wanted), None)


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.strip().casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def viewer(rpps: str, profession: str, roles: Iterable[str] = ()) -> Principal:
    """The professional whose view a patient previews, as `decide` would see them calling:
    a profession alone has no RPPS, so nothing names it (no authorisation, no block, no
    grant, no document of its own)."""
    return Principal(
        kind="professional",
        subject=PREVIEW_SUBJECT,
        roles=frozenset(roles),
        rpps=rpps,
        profession=profession,
    )

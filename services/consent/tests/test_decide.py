"""The decision function: a table of every rule and the combinations that matter, and a
property test against a naive reference written from the rules' text (DESIGN.md §1)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmp_consent.domain import (
    EXPLANATIONS,
    Action,
    ConsentState,
    DocumentFacts,
    DossierState,
    DossierStatus,
    EmergencyGrant,
    HabilitationMatrix,
    Label,
    Mode,
    TrustScope,
    decide,
    explain,
    profession_code,
    viewer,
)
from dmp_kit.auth import Principal
from dmp_kit.catalogue import load_catalogue
from dmp_kit.identifiers import PROFESSIONS

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
CATALOGUE = load_catalogue()
MATRIX = HabilitationMatrix.parse(
    (resources.files("dmp_consent") / "data" / "habilitation.toml").read_text(), CATALOGUE.types
)
PAT, OTHER, REP = "180017512345660", "275052A12345603", "160017512345621"
GP, PHARMA, NURSE, KINE, DOCTOR, STRANGER = "GP", "PH", "NU", "KI", "DR", "ST"


def patient(ins: str = PAT) -> Principal:
    return Principal(kind="patient", subject=ins, ins=ins, roles=frozenset({"patient"}))


def pro(rpps: str, profession: str = "10", *roles: str, practice: str = "liberal") -> Principal:
    return Principal(
        kind="professional",
        subject=rpps,
        rpps=rpps,
        profession=profession,
        practice=practice,
        roles=frozenset({"professional", *roles}),
    )


def app(ins: str = PAT, *scopes: str) -> Principal:
    """An app the patient `ins` connected: their token, narrowed."""
    return Principal(
        kind="patient",
        subject=ins,
        ins=ins,
        roles=frozenset({"patient"}),
        app="app_0123456789abcdef",
        app_name="Carnet",
        scopes=frozenset(scopes),
        connection="c1",
    )


def system(*roles: str) -> Principal:
    return Principal(kind="system", subject="client", client_id="client", roles=frozenset(roles))


def doc(
    type_code: str = "11502-2", author: str = DOCTOR, *labels: Label, deleted: bool = False
) -> DocumentFacts:
    return DocumentFacts(
        type_code, CATALOGUE.types[type_code].section, author, frozenset(labels), deleted
    )


OPEN = DossierState(PAT, DossierStatus.OPEN, frozenset({REP}))
CLOSED = replace(OPEN, status=DossierStatus.CLOSED)
ABSENT = DossierState(PAT, DossierStatus.ABSENT)
TEAM = ConsentState(authorized=frozenset({PHARMA, NURSE, KINE}), attending_physician=GP)
glass = EmergencyGrant(STRANGER, Mode.BREAK_GLASS, NOW + timedelta(hours=1))
regulator = EmergencyGrant(STRANGER, Mode.REGULATOR, NOW + timedelta(hours=1))

CASES = [
    # rule 1: opening
    ("patient opens own", patient(), ABSENT, TEAM, Action.OPEN, None, True, "patient"),
    (
        "patient opens another's",
        patient(OTHER),
        ABSENT,
        TEAM,
        Action.OPEN,
        None,
        False,
        "not_your_dossier",
    ),
    (
        "pharmacist opens",
        pro(PHARMA, "21"),
        ABSENT,
        TEAM,
        Action.OPEN,
        None,
        True,
        "opening_professional",
    ),
    (
        "nurse opens",
        pro(NURSE, "60"),
        ABSENT,
        TEAM,
        Action.OPEN,
        None,
        True,
        "opening_professional",
    ),
    (
        "salaried nurse may not open",
        pro(NURSE, "60", practice="salaried"),
        ABSENT,
        TEAM,
        Action.OPEN,
        None,
        False,
        "not_self_employed",
    ),
    (
        "nurse whose practice the directory does not say may not open",
        pro(NURSE, "60", practice=""),
        ABSENT,
        TEAM,
        Action.OPEN,
        None,
        False,
        "not_self_employed",
    ),
    (
        "any doctor opens when no GP is declared",
        pro(DOCTOR, "10"),
        ABSENT,
        TEAM,
        Action.OPEN,
        None,
        True,
        "opening_professional",
    ),
    (
        "the declared GP opens",
        pro(GP, "10"),
        replace(ABSENT, declared_gp=GP),
        TEAM,
        Action.OPEN,
        None,
        True,
        "opening_professional",
    ),
    (
        "another doctor than the declared GP may not open",
        pro(DOCTOR, "10"),
        replace(ABSENT, declared_gp=GP),
        TEAM,
        Action.OPEN,
        None,
        False,
        "not_attending_physician",
    ),
    (
        "a pharmacist opens whoever the declared GP",
        pro(PHARMA, "21", practice="salaried"),
        replace(ABSENT, declared_gp=GP),
        TEAM,
        Action.OPEN,
        None,
        True,
        "opening_professional",
    ),
    (
        "physio may not open",
        pro(KINE, "70"),
        ABSENT,
        TEAM,
        Action.OPEN,
        None,
        False,
        "may_not_open",
    ),
    (
        "insurance agent opens",
        Principal(kind="admin", subject="a", roles=frozenset({"insurance_agent"})),
        ABSENT,
        TEAM,
        Action.OPEN,
        None,
        True,
        "insurance_agent",
    ),
    ("opening twice", patient(), OPEN, TEAM, Action.OPEN, None, False, "already_open"),
    # Whether someone has a DMP is not told to whoever may not open one.
    (
        "another's open DMP",
        patient("190017512345635"),
        OPEN,
        TEAM,
        Action.OPEN,
        None,
        False,
        "not_your_dossier",
    ),
    ("no dossier", pro(GP), ABSENT, TEAM, Action.READ, None, False, "no_dossier"),
    # rule 4: care team and matrix
    (
        "team pharmacist reads biology",
        pro(PHARMA, "21"),
        OPEN,
        TEAM,
        Action.READ,
        doc("11502-2"),
        True,
        "care_team",
    ),
    (
        "team pharmacist may not read imaging",
        pro(PHARMA, "21"),
        OPEN,
        TEAM,
        Action.READ,
        doc("18748-4"),
        False,
        "not_habilitated",
    ),
    (
        "team nurse reads discharge letter",
        pro(NURSE, "60"),
        OPEN,
        TEAM,
        Action.READ,
        doc("11490-0"),
        True,
        "care_team",
    ),
    (
        "stranger doctor",
        pro(DOCTOR),
        OPEN,
        TEAM,
        Action.READ,
        doc("11502-2", GP),
        False,
        "not_in_care_team",
    ),
    (
        "author outside team reads own",
        pro(DOCTOR),
        OPEN,
        TEAM,
        Action.READ,
        doc("18748-4", DOCTOR),
        True,
        "author",
    ),
    (
        "author outside team cannot read dossier",
        pro(DOCTOR),
        OPEN,
        TEAM,
        Action.READ,
        None,
        False,
        "not_in_care_team",
    ),
    ("anyone may add", pro(DOCTOR), OPEN, TEAM, Action.WRITE, doc("11488-4"), True, "professional"),
    (
        "professional may not write patient space",
        pro(DOCTOR),
        OPEN,
        TEAM,
        Action.WRITE,
        doc("DOC_PATIENT"),
        False,
        "type_not_writable",
    ),
    # rule 5: blocking wins
    (
        "blocked GP",
        pro(GP),
        OPEN,
        replace(TEAM, blocked=frozenset({GP})),
        Action.READ,
        doc(),
        False,
        "blocked",
    ),
    (
        "blocked author",
        pro(DOCTOR),
        OPEN,
        replace(TEAM, blocked=frozenset({DOCTOR})),
        Action.READ,
        doc(author=DOCTOR),
        False,
        "blocked",
    ),
    (
        "blocked cannot write",
        pro(DOCTOR),
        OPEN,
        replace(TEAM, blocked=frozenset({DOCTOR})),
        Action.WRITE,
        doc("11488-4"),
        False,
        "blocked",
    ),
    (
        "blocked + break glass",
        pro(STRANGER),
        OPEN,
        replace(TEAM, blocked=frozenset({STRANGER}), grants=(glass,)),
        Action.READ,
        doc(),
        False,
        "blocked",
    ),
    # rules 6 and 7: GP and masking
    (
        "GP reads masked",
        pro(GP),
        OPEN,
        TEAM,
        Action.READ,
        doc("11502-2", DOCTOR, Label.MASKED),
        True,
        "attending_physician",
    ),
    (
        "team doctor does not read masked",
        pro(DOCTOR),
        OPEN,
        replace(TEAM, authorized=frozenset({DOCTOR})),
        Action.READ,
        doc("11502-2", GP, Label.MASKED),
        False,
        "masked",
    ),
    (
        "author reads own masked",
        pro(PHARMA, "21"),
        OPEN,
        TEAM,
        Action.READ,
        doc("60593-1", PHARMA, Label.MASKED),
        True,
        "author",
    ),
    (
        "patient reads own masked",
        patient(),
        OPEN,
        TEAM,
        Action.READ,
        doc("11502-2", GP, Label.MASKED),
        True,
        "patient",
    ),
    # rule 8: hidden from the patient / representatives
    (
        "hidden from patient",
        patient(),
        OPEN,
        TEAM,
        Action.READ,
        doc("11502-2", GP, Label.HIDDEN_FROM_PATIENT),
        False,
        "hidden_from_patient",
    ),
    (
        "hidden from patient, author sees",
        pro(GP),
        OPEN,
        TEAM,
        Action.READ,
        doc("11502-2", GP, Label.HIDDEN_FROM_PATIENT),
        True,
        "author",
    ),
    (
        "hidden from patient, team sees",
        pro(PHARMA, "21"),
        OPEN,
        TEAM,
        Action.READ,
        doc("11502-2", GP, Label.HIDDEN_FROM_PATIENT),
        True,
        "care_team",
    ),
    ("representative reads", patient(REP), OPEN, TEAM, Action.READ, doc(), True, "patient"),
    (
        "hidden from representatives",
        patient(REP),
        OPEN,
        TEAM,
        Action.READ,
        doc("11502-2", GP, Label.HIDDEN_FROM_REPRESENTATIVES),
        False,
        "hidden_from_representatives",
    ),
    (
        "hidden from representatives, patient sees",
        patient(),
        OPEN,
        TEAM,
        Action.READ,
        doc("11502-2", GP, Label.HIDDEN_FROM_REPRESENTATIVES),
        True,
        "patient",
    ),
    (
        "hidden from patient hides from representative too",
        patient(REP),
        OPEN,
        TEAM,
        Action.READ,
        doc("11502-2", GP, Label.HIDDEN_FROM_PATIENT),
        False,
        "hidden_from_representatives",
    ),
    ("another patient", patient(OTHER), OPEN, TEAM, Action.READ, None, False, "not_your_dossier"),
    # rule 9: emergency and regulator
    (
        "break glass reads",
        pro(STRANGER),
        OPEN,
        replace(TEAM, grants=(glass,)),
        Action.READ,
        doc(),
        True,
        "break_glass",
    ),
    (
        "break glass refused in advance",
        pro(STRANGER),
        OPEN,
        replace(TEAM, grants=(glass,), allow_emergency_access=False),
        Action.READ,
        doc(),
        False,
        "not_in_care_team",
    ),
    (
        "break glass expired",
        pro(STRANGER),
        OPEN,
        replace(TEAM, grants=(replace(glass, expires_at=NOW),)),
        Action.READ,
        doc(),
        False,
        "not_in_care_team",
    ),
    (
        "masked stays masked in break glass",
        pro(STRANGER),
        OPEN,
        replace(TEAM, grants=(glass,)),
        Action.READ,
        doc("11502-2", GP, Label.MASKED),
        False,
        "masked",
    ),
    (
        "regulator reads",
        pro(STRANGER, "10", "samu_regulator"),
        OPEN,
        replace(TEAM, grants=(regulator,)),
        Action.READ,
        doc(),
        True,
        "regulator",
    ),
    (
        "regulator with setting off",
        pro(STRANGER, "10", "samu_regulator"),
        OPEN,
        replace(TEAM, grants=(regulator,), allow_regulator_access=False),
        Action.READ,
        doc(),
        False,
        "not_in_care_team",
    ),
    (
        "regulator grant without the role",
        pro(STRANGER),
        OPEN,
        replace(TEAM, grants=(regulator,)),
        Action.READ,
        doc(),
        False,
        "not_in_care_team",
    ),
    (
        "masked stays masked for the regulator",
        pro(STRANGER, "10", "samu_regulator"),
        OPEN,
        replace(TEAM, grants=(regulator,)),
        Action.READ,
        doc("11502-2", GP, Label.MASKED),
        False,
        "masked",
    ),
    # rule 13: closed dossier
    ("closed: patient reads", patient(), CLOSED, TEAM, Action.READ, doc(), True, "patient"),
    ("closed: patient reopens", patient(), CLOSED, TEAM, Action.MANAGE, None, True, "patient"),
    (
        "closed: patient cannot add",
        patient(),
        CLOSED,
        TEAM,
        Action.WRITE,
        doc("DOC_PATIENT", PAT),
        False,
        "dossier_closed",
    ),
    ("closed: GP refused", pro(GP), CLOSED, TEAM, Action.READ, None, False, "dossier_closed"),
    (
        "closed: author refused",
        pro(DOCTOR),
        CLOSED,
        TEAM,
        Action.READ,
        doc(author=DOCTOR),
        False,
        "dossier_closed",
    ),
    (
        "closed: representative refused",
        patient(REP),
        CLOSED,
        TEAM,
        Action.READ,
        None,
        False,
        "dossier_closed",
    ),
    # patient's choices and others
    ("patient manages", patient(), OPEN, TEAM, Action.MANAGE, None, True, "patient"),
    ("GP may not manage", pro(GP), OPEN, TEAM, Action.MANAGE, None, False, "patient_only"),
    (
        "patient adds personal document",
        patient(),
        OPEN,
        TEAM,
        Action.WRITE,
        doc("DOC_PATIENT", PAT),
        True,
        "patient",
    ),
    (
        "patient may not add a lab report",
        patient(),
        OPEN,
        TEAM,
        Action.WRITE,
        doc("11502-2", PAT),
        False,
        "type_not_writable",
    ),
    ("deleted document", pro(GP), OPEN, TEAM, Action.READ, doc(deleted=True), False, "deleted"),
    (
        "deleted own document",
        pro(DOCTOR),
        OPEN,
        TEAM,
        Action.READ,
        doc(author=DOCTOR, deleted=True),
        False,
        "not_in_care_team",
    ),
    (
        "insurer writes history",
        system("insurer"),
        OPEN,
        TEAM,
        Action.WRITE,
        doc("REMB", "client"),
        True,
        "insurer_feed",
    ),
    (
        "insurer writes nothing else",
        system("insurer"),
        OPEN,
        TEAM,
        Action.WRITE,
        doc("11502-2", "client"),
        False,
        "type_not_writable",
    ),
    (
        "insurer never reads",
        system("insurer"),
        OPEN,
        TEAM,
        Action.READ,
        doc("REMB", "client"),
        False,
        "systems_do_not_read",
    ),
    (
        "a facility reads back what it wrote",
        system("facility"),
        OPEN,
        TEAM,
        Action.READ,
        doc("11490-0", "client"),
        True,
        "author",
    ),
    (
        "a facility does not read back what the patient masked",
        system("facility"),
        OPEN,
        TEAM,
        Action.READ,
        doc("11490-0", "client", Label.MASKED),
        False,
        "masked",
    ),
    (
        "a facility reads nothing else",
        system("facility"),
        OPEN,
        TEAM,
        Action.READ,
        doc("11490-0", "someone-else"),
        False,
        "not_the_author",
    ),
    (
        "facility submits",
        system("facility"),
        OPEN,
        TEAM,
        Action.WRITE,
        doc("11490-0", "client"),
        True,
        "facility",
    ),
    (
        "a client's roles add up: history",
        system("facility", "insurer"),
        OPEN,
        TEAM,
        Action.WRITE,
        doc("REMB", "client"),
        True,
        "insurer_feed",
    ),
    (
        "a client's roles add up: letter",
        system("facility", "insurer"),
        OPEN,
        TEAM,
        Action.WRITE,
        doc("11490-0", "client"),
        True,
        "facility",
    ),
    (
        "a trusted reader reads the dossier",
        patient(OTHER),
        OPEN,
        replace(TEAM, trusted={OTHER: TrustScope.READ}),
        Action.READ,
        doc("11502-2", GP),
        True,
        "trusted_person",
    ),
    (
        "a trusted person never sees what is kept from them",
        patient(OTHER),
        OPEN,
        replace(TEAM, trusted={OTHER: TrustScope.MANAGE}),
        Action.READ,
        doc("11502-2", GP, Label.HIDDEN_FROM_TRUSTED),
        False,
        "hidden_from_trusted_persons",
    ),
    (
        "a trusted person never sees what is hidden from the patient",
        patient(OTHER),
        OPEN,
        replace(TEAM, trusted={OTHER: TrustScope.MANAGE}),
        Action.READ,
        doc("11488-4", GP, Label.HIDDEN_FROM_PATIENT),
        False,
        "hidden_from_trusted_persons",
    ),
    (
        "a trusted reader changes nothing",
        patient(OTHER),
        OPEN,
        replace(TEAM, trusted={OTHER: TrustScope.READ}),
        Action.MANAGE,
        None,
        False,
        "read_only",
    ),
    (
        "a trusted manager makes the patient's choices",
        patient(OTHER),
        OPEN,
        replace(TEAM, trusted={OTHER: TrustScope.MANAGE}),
        Action.MANAGE,
        None,
        True,
        "trusted_person",
    ),
    (
        "a trusted manager does not govern the space",
        patient(OTHER),
        OPEN,
        replace(TEAM, trusted={OTHER: TrustScope.MANAGE}),
        Action.GOVERN,
        None,
        False,
        "not_for_trusted_persons",
    ),
    (
        "a trusted person is refused a closed space",
        patient(OTHER),
        CLOSED,
        replace(TEAM, trusted={OTHER: TrustScope.MANAGE}),
        Action.READ,
        None,
        False,
        "dossier_closed",
    ),
    (
        "a professional never governs",
        pro(GP),
        OPEN,
        TEAM,
        Action.GOVERN,
        None,
        False,
        "patient_only",
    ),
    (
        "administrator reads nothing",
        Principal(kind="admin", subject="a", roles=frozenset({"admin"})),
        OPEN,
        TEAM,
        Action.READ,
        None,
        False,
        "not_a_care_actor",
    ),
]


@pytest.mark.parametrize(
    ("caller", "dossier", "consent", "action", "document", "allowed", "reason"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_rules(
    caller: Principal,
    dossier: DossierState,
    consent: ConsentState,
    action: Action,
    document: DocumentFacts | None,
    allowed: bool,
    reason: str,
) -> None:
    decision = decide(caller, dossier, consent, MATRIX, action, NOW, document)
    assert (decision.allowed, decision.reason) == (allowed, reason)


def test_modes_are_reported_for_the_trace() -> None:
    consent = replace(TEAM, grants=(glass, regulator))
    assert decide(pro(STRANGER), OPEN, consent, MATRIX, Action.READ, NOW).mode is Mode.BREAK_GLASS
    assert (
        decide(
            pro(STRANGER, "10", "samu_regulator"),
            OPEN,
            replace(consent, grants=(regulator,)),
            MATRIX,
            Action.READ,
            NOW,
        ).mode
        is Mode.REGULATOR
    )
    assert decide(pro(GP), OPEN, consent, MATRIX, Action.READ, NOW).mode is Mode.NORMAL


def test_matrix_file_has_provenance_and_the_defaults_of_the_design() -> None:
    assert "Provenance" in MATRIX.provenance
    assert all(MATRIX.may_read("10", code) for code in CATALOGUE.types)
    pharmacist = {c for c in CATALOGUE.types if MATRIX.may_read("21", c)}
    assert pharmacist == {"60591-5", "57833-6", "60593-1", "87273-9", "11502-2", "REMB"}
    assert {c for c in CATALOGUE.types if MATRIX.may_read("60", c)} == pharmacist | {"11490-0"}
    assert not MATRIX.may_read("99", "60591-5")


def test_matrix_refuses_unknown_types() -> None:
    with pytest.raises(ValueError, match="unknown types"):
        HabilitationMatrix.parse('[professions."10"]\nread = ["NOPE"]\n', CATALOGUE.types)


# --- a naive reference, written again from the rules' text --------------------------------


def reference(
    caller: Principal,
    dossier: DossierState,
    consent: ConsentState,
    action: Action,
    document: DocumentFacts | None,
) -> tuple[bool, Mode]:
    """Each sentence of DESIGN.md §1 as a check; returns (allowed, mode)."""
    normal = Mode.NORMAL
    if caller.app:
        # Issue 20 §3: "consent applies to it as to the patient (never more than the patient
        # may see …)"; the app's tokens are "limited to that patient": their own space, open,
        # read and write only (the patient's choices and the space itself stay theirs).
        own = caller.ins == dossier.ins and dossier.status == DossierStatus.OPEN
        if not own or action not in (Action.READ, Action.WRITE):
            return False, normal
        as_patient = Principal(kind="patient", subject=caller.ins, ins=caller.ins)
        return reference(as_patient, dossier, consent, action, document)
    if action == Action.OPEN:  # rule 1
        if dossier.status != DossierStatus.ABSENT:
            return False, normal
        if caller.kind == "patient":
            return caller.ins == dossier.ins, normal
        if caller.kind == "professional" and caller.profession == "60":  # self-employed nurse
            return caller.practice in ("liberal", "mixed"), normal
        if caller.kind == "professional" and caller.profession == "10":  # their GP
            return dossier.declared_gp in ("", caller.rpps), normal
        if caller.kind == "professional" and caller.profession == "21":
            return True, normal
        return "insurance_agent" in caller.roles, normal
    if dossier.status == DossierStatus.ABSENT:
        return False, normal
    is_patient = caller.kind == "patient" and caller.ins == dossier.ins
    is_rep = (
        caller.kind == "patient" and not is_patient and caller.ins in dossier.legal_representatives
    )
    # "A patient may name trusted persons … with read or read-and-manage access"
    trust = (
        consent.trusted.get(caller.ins)
        if caller.kind == "patient" and not is_patient and not is_rep
        else None
    )
    is_pro = caller.kind == "professional"
    dossier_open = dossier.status == DossierStatus.OPEN
    section = document.section if document else None
    labels = document.labels if document else frozenset()
    # "A closed dossier is readable by nobody but the patient."
    if not dossier_open and not is_patient:
        return False, normal
    # "A blocked professional is refused everything, whatever else applies."
    if is_pro and caller.rpps in consent.blocked:
        return False, normal
    if action == Action.GOVERN:  # the space itself is the patient's
        return is_patient or is_rep, normal
    if action == Action.MANAGE:
        return is_patient or is_rep or trust == TrustScope.MANAGE, normal
    if action == Action.WRITE:
        if not dossier_open:
            return False, normal
        if is_patient or is_rep or trust == TrustScope.MANAGE:
            return section in (None, "espace_personnel"), normal
        if is_pro:
            return section not in ("espace_personnel", "remboursements"), normal
        if caller.kind == "system":  # a client's roles add up
            as_facility = "facility" in caller.roles and section not in (
                "espace_personnel",
                "remboursements",
            )
            as_insurer = "insurer" in caller.roles and section in (None, "remboursements")
            return as_facility or as_insurer, normal
        return False, normal
    if is_patient or is_rep:
        if document is None:
            return True, normal
        hidden_for_me = {Label.HIDDEN_FROM_PATIENT}
        if is_rep:
            hidden_for_me.add(Label.HIDDEN_FROM_REPRESENTATIVES)
        return not document.deleted and not (labels & hidden_for_me), normal
    if trust is not None:
        # "What a trusted person never sees: documents hidden from the patient, and anything
        # the patient marks as not shared with trusted persons."
        if document is None:
            return True, normal
        never = {
            Label.HIDDEN_FROM_PATIENT,
            Label.HIDDEN_FROM_REPRESENTATIVES,
            Label.HIDDEN_FROM_TRUSTED,
        }
        return not document.deleted and not (labels & never), normal
    if caller.kind == "system" and "facility" in caller.roles and action == Action.READ:
        # a facility's software reads back what it wrote, nothing else
        return document is None or (
            document.author == caller.client_id
            and not document.deleted
            and Label.MASKED not in labels
        ), normal
    if not is_pro:
        return False, normal
    rpps = caller.rpps
    gp = consent.attending_physician == rpps
    in_team = gp or rpps in consent.authorized
    glass = consent.allow_emergency_access and any(
        g.rpps == rpps and g.mode == Mode.BREAK_GLASS and g.expires_at > NOW for g in consent.grants
    )
    regulating = (
        "samu_regulator" in caller.roles
        and consent.allow_regulator_access
        and any(
            g.rpps == rpps and g.mode == Mode.REGULATOR and g.expires_at > NOW
            for g in consent.grants
        )
    )
    mode = (
        normal
        if in_team
        else Mode.BREAK_GLASS
        if glass
        else Mode.REGULATOR
        if regulating
        else normal
    )
    has_access = in_team or glass or regulating
    if document is None:
        return has_access, mode
    if document.deleted:
        return False, mode
    if document.author == rpps:  # "An author always sees the documents they wrote."
        return True, mode
    if not has_access:
        return False, mode
    if gp:  # "The GP sees every document, masked ones included."
        return True, mode
    if Label.MASKED in labels:  # "Masked documents stay masked in both modes."
        return False, mode
    return MATRIX.may_read(caller.profession, document.type_code), mode


INS_POOL = [PAT, OTHER, REP]
RPPS_POOL = [GP, PHARMA, NURSE, KINE, DOCTOR, STRANGER]

callers = st.one_of(
    st.builds(patient, st.sampled_from(INS_POOL)),
    st.builds(app, st.sampled_from(INS_POOL)),
    st.builds(
        lambda r, p, reg, practice: pro(
            r, p, *(["samu_regulator"] if reg else []), practice=practice
        ),
        st.sampled_from(RPPS_POOL),
        st.sampled_from(["10", "21", "60", "70", "26", "99"]),
        st.booleans(),
        st.sampled_from(["liberal", "salaried", "mixed", ""]),
    ),
    st.builds(lambda roles: system(*roles), st.sets(st.sampled_from(["insurer", "facility"]))),
    st.builds(
        lambda roles: Principal(kind="admin", subject="a", roles=frozenset(roles)),
        st.sets(st.sampled_from(["admin", "insurance_agent"])),
    ),
)
grants = st.builds(
    EmergencyGrant,
    st.sampled_from(RPPS_POOL),
    st.sampled_from([Mode.BREAK_GLASS, Mode.REGULATOR]),
    st.sampled_from([NOW - timedelta(minutes=1), NOW, NOW + timedelta(hours=2)]),
)
consents = st.builds(
    ConsentState,
    allow_emergency_access=st.booleans(),
    allow_regulator_access=st.booleans(),
    authorized=st.frozensets(st.sampled_from(RPPS_POOL)),
    blocked=st.frozensets(st.sampled_from(RPPS_POOL), max_size=2),
    attending_physician=st.one_of(st.none(), st.sampled_from(RPPS_POOL)),
    grants=st.lists(grants, max_size=3).map(tuple),
    trusted=st.dictionaries(st.sampled_from([OTHER, REP]), st.sampled_from(list(TrustScope))),
)
dossiers = st.builds(
    DossierState,
    st.just(PAT),
    st.sampled_from(list(DossierStatus)),
    st.frozensets(st.sampled_from([REP, OTHER])),
    st.sampled_from(["", GP, DOCTOR]),
)
documents = st.one_of(
    st.none(),
    st.builds(
        lambda code, author, labels, deleted: doc(code, author, *labels, deleted=deleted),
        st.sampled_from(sorted(CATALOGUE.types)),
        st.sampled_from([*RPPS_POOL, PAT, "client"]),
        st.frozensets(st.sampled_from(list(Label))),
        st.booleans(),
    ),
)


@settings(max_examples=10_000, deadline=None)
@given(callers, dossiers, consents, st.sampled_from(list(Action)), documents)
def test_decide_agrees_with_the_naive_reference(
    caller: Principal,
    dossier: DossierState,
    consent: ConsentState,
    action: Action,
    document: DocumentFacts | None,
) -> None:
    decision = decide(caller, dossier, consent, MATRIX, action, NOW, document)
    allowed, mode = reference(caller, dossier, consent, action, document)
    assert decision.allowed == allowed
    if allowed:
        assert decision.mode == mode


# --- the preview ("que voit le Dr X ?"): the viewer is decided as their own token is ------

professions = st.sampled_from(sorted(PROFESSIONS))


def test_a_profession_is_named_by_its_code_or_its_french_name() -> None:
    assert profession_code("60") == "60"
    assert profession_code("infirmier") == "60"
    assert profession_code(" Pharmacien ") == "21"
    assert profession_code("masseur-kinesitherapeute") == "70"
    assert profession_code("MASSEUR-KINÉSITHÉRAPEUTE") == "70"
    assert profession_code("astronaute") is None
    assert profession_code("") is None
    assert profession_code("99") is None


@settings(max_examples=1_000, deadline=None)
@given(
    st.sampled_from(RPPS_POOL),
    professions,
    st.booleans(),
    dossiers,
    consents,
    documents,
)
def test_the_viewer_is_decided_as_their_own_token_is(
    rpps: str,
    profession: str,
    regulator: bool,
    dossier: DossierState,
    consent: ConsentState,
    document: DocumentFacts | None,
) -> None:
    roles = ["samu_regulator"] if regulator else []
    seen = decide(
        viewer(rpps, profession, roles), dossier, consent, MATRIX, Action.READ, NOW, document
    )
    real = decide(
        pro(rpps, profession, *roles), dossier, consent, MATRIX, Action.READ, NOW, document
    )
    assert seen == real
    assert explain(seen.reason), seen.reason


@settings(max_examples=1_000, deadline=None)
@given(professions, dossiers, consents, documents)
def test_a_profession_alone_is_as_a_professional_nobody_named(
    profession: str,
    dossier: DossierState,
    consent: ConsentState,
    document: DocumentFacts | None,
) -> None:
    """No authorisation, block, grant or authorship names it: it is decided as any RPPS the
    consent and the document never mention."""
    seen = decide(viewer("", profession), dossier, consent, MATRIX, Action.READ, NOW, document)
    nobody = decide(pro("NOBODY", profession), dossier, consent, MATRIX, Action.READ, NOW, document)
    assert seen == nobody
    assert not seen.allowed
    assert explain(seen.reason)


@pytest.mark.parametrize(
    ("name", "caller", "status", "action", "labels", "allowed"),
    [
        ("an app reads what its patient reads", app(), DossierStatus.OPEN, Action.READ, (), True),
        (
            "nothing hidden from the patient",
            app(),
            DossierStatus.OPEN,
            Action.READ,
            (Label.HIDDEN_FROM_PATIENT,),
            False,
        ),
        (
            "masked from professionals is not from the patient",
            app(),
            DossierStatus.OPEN,
            Action.READ,
            (Label.MASKED,),
            True,
        ),
        (
            "not in a space its patient acts for",
            app(REP),
            DossierStatus.OPEN,
            Action.READ,
            (),
            False,
        ),
        ("not the patient's choices", app(), DossierStatus.OPEN, Action.MANAGE, (), False),
        ("not the space itself", app(), DossierStatus.OPEN, Action.GOVERN, (), False),
        ("nothing of a closed space", app(), DossierStatus.CLOSED, Action.READ, (), False),
        ("never opens one", app(), DossierStatus.ABSENT, Action.OPEN, (), False),
    ],
)
def test_apps(
    name: str,
    caller: Principal,
    status: DossierStatus,
    action: Action,
    labels: tuple[Label, ...],
    allowed: bool,
) -> None:
    dossier = DossierState(PAT, status, frozenset({REP}), "")
    consent = ConsentState(trusted={REP: TrustScope.MANAGE})
    document = doc("11488-4", GP, *labels) if action is Action.READ else None
    assert decide(caller, dossier, consent, MATRIX, action, NOW, document).allowed is allowed, name


def test_every_explanation_is_french_and_for_a_reason_decide_gives() -> None:
    assert all(text.endswith(".") and text[0].isupper() for text in EXPLANATIONS.values())
    assert explain("unheard_of") == ""

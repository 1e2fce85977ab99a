"""What notify says, in French, and what it never says (no medical content). No I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    subject: str
    body: str


def otp_message(code: str, valid_minutes: int) -> Message:
    return Message(
        subject="Votre code de connexion DMP",
        body=(
            f"Votre code de connexion est : {code}\n"
            f"Il est valable {valid_minutes} minutes.\n"
            "Ne le communiquez à personne : aucun agent ne vous le demandera.\n"
            "Si vous n'êtes pas à l'origine de cette connexion, changez votre mot de passe."
        ),
    )


def contact_code_message(code: str, valid_minutes: int) -> Message:
    return Message(
        subject="Votre code de vérification DMP",
        body=(
            f"Votre code pour confirmer cette adresse est : {code}\n"
            f"Il est valable {valid_minutes} minutes.\n"
            "Ne le communiquez à personne : aucun agent ne vous le demandera.\n"
            "Si vous n'avez rien demandé, ignorez ce message : votre compte ne change pas."
        ),
    )


def activation_message(code: str, valid_minutes: int) -> Message:
    days = max(1, valid_minutes // (24 * 60))
    return Message(
        subject="Votre code provisoire pour activer votre espace DMP",
        body=(
            f"Votre code provisoire est : {code}\n"
            f"Il vous permet pendant {days} jours d'activer votre espace, ou de vous opposer à "
            "sa création, avec votre numéro de sécurité sociale (INS) et le numéro de série "
            "de votre carte Vitale.\n"
            "Sans réponse de votre part, votre espace sera ouvert, vide, à la fin de ce délai.\n"
            "Ne communiquez ce code à personne : aucun agent ne vous le demandera."
        ),
    )


ACCOUNT_NOTICES = {
    "email_changed": Message(
        subject="L'adresse e-mail de votre compte DMP a changé",
        body=(
            "L'adresse e-mail de votre compte DMP vient d'être remplacée : les messages du "
            "service n'arriveront plus à cette adresse.\n"
            "Si vous n'êtes pas à l'origine de ce changement, changez votre mot de passe et "
            "mettez fin à vos sessions depuis votre compte.\n"
            "L'équipe DMP"
        ),
    ),
    "phone_changed": Message(
        subject="Le téléphone de votre compte DMP a changé",
        body=(
            "Le numéro de téléphone de votre compte DMP vient d'être remplacé.\n"
            "Si vous n'êtes pas à l'origine de ce changement, changez votre mot de passe et "
            "mettez fin à vos sessions depuis votre compte.\n"
            "L'équipe DMP"
        ),
    ),
}


def sms_text(message: Message) -> str:
    return message.body.split("\n", 2)[0] + " " + message.body.split("\n", 2)[1]


# --- notifications from events (rule 11) ----------------------------------------------

KINDS = (
    "document_added",
    "access_first",
    "emergency_access",
    "reminder",
    "login",
    "message_received",
    "representation_ending",
    "representation_ended",
    "trusted_invitation",
    "prevention_reminder",
)
CHANNELS = ("email", "sms")  # the in-app inbox always receives every notification
DEFAULT_PREFERENCES: dict[str, frozenset[str]] = {kind: frozenset({"email"}) for kind in KINDS}
PROFESSIONS = {"10": "un médecin", "21": "un pharmacien", "60": "un infirmier ou une infirmière"}
SIGNATURE = "\n\nConnectez-vous à votre espace DMP pour en savoir plus.\nL'équipe DMP"


@dataclass(frozen=True)
class Notice:
    """One thing to tell one person: who (`patient:<INS>` or `professional:<RPPS>`), what
    kind (for preferences), and the words. Never medical content: only that something
    happened and where to look."""

    recipient: str
    kind: str
    message: Message


def validate_preferences(prefs: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    """A patient's choice: for each kind, the channels (besides the inbox). Unknown kinds or
    channels are errors, not silently dropped; kinds not given keep their default."""
    unknown_kinds = set(prefs) - set(KINDS)
    if unknown_kinds:
        raise ValueError(f"unknown notification kind {sorted(unknown_kinds)[0]!r}")
    out = dict(DEFAULT_PREFERENCES)
    for kind, channels in prefs.items():
        unknown = set(channels) - set(CHANNELS)
        if unknown:
            raise ValueError(f"unknown channel {sorted(unknown)[0]!r} for {kind}")
        out[kind] = frozenset(channels)
    return out


def document_added(ins: str, hidden_from_patient: bool) -> list[Notice]:
    if hidden_from_patient:
        return []  # rule 8: the patient learns of it at the announcement consultation
    return [
        Notice(
            f"patient:{ins}",
            "document_added",
            Message(
                "Un nouveau document dans votre DMP",
                "Un nouveau document a été ajouté à votre Dossier Médical Partagé." + SIGNATURE,
            ),
        )
    ]


def access_first(ins: str, profession: str) -> list[Notice]:
    who = PROFESSIONS.get(profession, "un professionnel de santé")
    return [
        Notice(
            f"patient:{ins}",
            "access_first",
            Message(
                "Un professionnel de santé a accédé à votre DMP",
                f"Pour la première fois, {who} a accédé à votre Dossier Médical Partagé. "
                "Vous pouvez voir qui a consulté votre dossier dans l'historique des accès."
                + SIGNATURE,
            ),
        )
    ]


def emergency_access(ins: str, mode: str, attending_rpps: str) -> list[Notice]:
    what = (
        "le médecin régulateur du SAMU a consulté"
        if mode == "regulator"
        else "un professionnel de santé a ouvert en urgence"
    )
    patient = Notice(
        f"patient:{ins}",
        "emergency_access",
        Message(
            "Accès en urgence à votre DMP",
            f"Dans le cadre d'une urgence, {what} votre Dossier Médical Partagé. "
            "Cet accès est tracé dans l'historique des accès." + SIGNATURE,
        ),
    )
    if not attending_rpps:
        return [patient]
    physician = Notice(
        f"professional:{attending_rpps}",
        "emergency_access",
        Message(
            "Accès en urgence au DMP d'un de vos patients",
            f"Dans le cadre d'une urgence, {what} le DMP d'un patient dont vous êtes le "
            "médecin traitant. Le détail figure dans l'historique des accès de ce dossier."
            + SIGNATURE,
        ),
    )
    return [patient, physician]


def reminder(ins: str) -> list[Notice]:
    return [
        Notice(
            f"patient:{ins}",
            "reminder",
            Message(
                "Votre DMP a été mis à jour",
                "Un professionnel de santé a ajouté à votre Dossier Médical Partagé un document "
                "qu'il souhaite vous présenter lors d'une consultation. Nous vous invitons à "
                "prendre rendez-vous avec lui." + SIGNATURE,
            ),
        )
    ]


def login(ins: str, when: str) -> list[Notice]:
    return [
        Notice(
            f"patient:{ins}",
            "login",
            Message(
                "Connexion à votre DMP",
                f"Une connexion à votre compte DMP a eu lieu le {when}. Si ce n'est pas vous, "
                "changez votre mot de passe sans attendre." + SIGNATURE,
            ),
        )
    ]


def prevention_reminder(ins: str, act: str) -> list[Notice]:
    """A prevention reminder from the agenda: the act's name and nothing else (no name, no
    INS, no date of birth), to the patient (and a minor's legal representatives)."""
    if not act.strip():
        return []
    text = f"Rappel de prévention : {act.strip()}"
    return [Notice(f"patient:{ins}", "prevention_reminder", Message(text, text + SIGNATURE))]


def message_received(recipient_kind: str, recipient_id: str) -> list[Notice]:
    """A new message in the secure messaging: that one came, never what it says or who sent
    it. Establishments' mailboxes read theirs in their own software."""
    if recipient_kind not in ("patient", "professional") or not recipient_id:
        return []
    return [
        Notice(
            f"{recipient_kind}:{recipient_id}",
            "message_received",
            Message(
                "Vous avez reçu un nouveau message",
                "Vous avez reçu un nouveau message dans votre messagerie sécurisée de santé."
                + SIGNATURE,
            ),
        )
    ]


def trusted_invitation(trusted_ins: str) -> list[Notice]:
    """A patient invites this person to be their trusted person: that an invitation waits,
    never who sent it nor anything of their space (they see it once logged in)."""
    if not trusted_ins:
        return []
    return [
        Notice(
            f"patient:{trusted_ins}",
            "trusted_invitation",
            Message(
                "Invitation à devenir personne de confiance dans le DMP",
                "Une personne vous invite à devenir sa personne de confiance dans son espace "
                "de santé. Connectez-vous à votre espace DMP, rubrique « Mes proches », pour "
                "voir l'invitation, l'accepter ou la refuser." + SIGNATURE,
            ),
        )
    ]


HIDDEN_FROM_REPRESENTATIVES = "INVISIBLE_REPRESENTANTS_LEGAUX"


def audience(
    kind: str, hidden_from_representatives: bool, reminder_label: str
) -> tuple[bool, bool]:
    """Who is told of a patient's notice: (the patient, their legal representatives). The
    representatives are told what the patient would be (rule 11) of what happens in the dossier,
    but not the minor's own logins nor a document hidden from them; a 2-week reminder goes to
    those the document is hidden from (rule 8)."""
    if kind in ("login", "message_received"):
        return True, False  # the minor's own logins and correspondence are theirs
    if kind in REPRESENTATION_KINDS:
        return True, False  # the event names the representatives: each has their own words
    if kind == "reminder":
        for_representatives = reminder_label == HIDDEN_FROM_REPRESENTATIVES
        return not for_representatives, for_representatives
    if kind == "document_added":
        return True, not hidden_from_representatives
    return True, True


REPRESENTATIVE_INTRO = (
    "Vous recevez ce message en tant que représentant légal : il concerne le Dossier Médical "
    "Partagé de la personne que vous représentez.\n\n"
)


def for_representatives(
    notices: list[Notice], ins: str, representatives: list[str]
) -> list[Notice]:
    """The patient's notices, told to each legal representative in their own inbox."""
    told = [n for n in notices if n.recipient == f"patient:{ins}"]
    return [
        Notice(
            f"patient:{rep}",
            n.kind,
            Message(
                f"[Représentant légal] {n.message.subject}",
                REPRESENTATIVE_INTRO + n.message.body,
            ),
        )
        for n in told
        for rep in representatives
        if rep != ins
    ]


REPRESENTATION_KINDS = ("representation_ending", "representation_ended")


def representation(
    kind: str, ins: str, representatives: list[str], majority_date: str
) -> list[Notice]:
    """The end of a minor's legal representation at their majority (`majority_date`,
    YYYY-MM-DD): announced beforehand (`representation_ending`) and when it has come
    (`representation_ended`), to the minor and to each representative. Like every notice, no
    name: a representative reads "la personne que vous représentez"."""
    if kind not in REPRESENTATION_KINDS:
        return []
    year, month, day = majority_date.split("-")
    on = f"{day}/{month}/{year}"
    if kind == "representation_ending":
        to_minor = Message(
            "Votre majorité approche : votre DMP sera le vôtre seul",
            f"À votre majorité, le {on}, vos représentants légaux cesseront d'agir pour vous "
            "dans votre Dossier Médical Partagé : vous seul y aurez accès et le gérerez."
            + SIGNATURE,
        )
        to_representative = Message(
            "Fin prochaine de votre représentation légale dans le DMP",
            f"La représentation légale de la personne que vous représentez prend fin le {on}, "
            "à sa majorité : à partir de cette date, vous n'aurez plus accès à son Dossier "
            "Médical Partagé." + SIGNATURE,
        )
    else:
        to_minor = Message(
            "Votre majorité : votre DMP est désormais le vôtre seul",
            f"Depuis votre majorité, le {on}, vos représentants légaux n'agissent plus pour "
            "vous dans votre Dossier Médical Partagé." + SIGNATURE,
        )
        to_representative = Message(
            "Fin de votre représentation légale dans le DMP",
            f"La représentation légale de la personne que vous représentiez a pris fin le {on}, "
            "à sa majorité : vous n'avez plus accès à son Dossier Médical Partagé." + SIGNATURE,
        )
    others = [rep for rep in representatives if rep != ins]
    told = [Notice(f"patient:{rep}", kind, to_representative) for rep in others]
    return [Notice(f"patient:{ins}", kind, to_minor), *told]

// What a refusal means, in French, for the person using the portal: one sentence per problem
// type the API can return (services/gateway/dmp_gateway/problems.py lists them; a test checks
// that each has one here). The API's own `detail` is for developers: it is kept on the message's
// element (data-detail) and in the console, never shown as the message.

export const MESSAGES = {
  "bad-request": "La demande n'a pas pu être lue. Rechargez la page et réessayez.",
  unauthenticated: "Votre session a pris fin. Reconnectez-vous.",
  "invalid-token": "Votre session n'est plus valable. Reconnectez-vous.",
  "token-expired": "Votre session a expiré. Reconnectez-vous.",
  "invalid-credentials": "Identifiant ou mot de passe incorrect.",
  "invalid-otp": "Code incorrect ou déjà utilisé. Saisissez le dernier code reçu.",
  "otp-expired": "Ce code a expiré. Reconnectez-vous pour en recevoir un nouveau.",
  "refresh-token-reused": "Par sécurité, votre session a été fermée. Reconnectez-vous.",
  "session-expired": "Votre session a atteint sa durée maximale. Reconnectez-vous.",
  "invalid-client": "Ce logiciel n'est pas reconnu par le DMP.",
  forbidden: "Vous n'avez pas le droit de faire cette action.",
  "access-denied": "Vous n'êtes pas autorisé à consulter ces informations.",
  "author-only": "Seul l'auteur du document peut faire cette action.",
  "patient-only": "Seul le patient (ou le représentant légal d'un mineur) peut faire cette action.",
  "read-only": "Votre accès à ce dossier est en lecture seule : vous ne pouvez rien y modifier.",
  "emergency-access-refused": "L'accès en urgence n'est pas possible : le patient l'a refusé ou vous a bloqué.",
  "not-your-trace": "Cet historique ne vous concerne pas.",
  "conversation-not-allowed":
    "Cette action n'est pas permise dans la messagerie : un patient n'écrit en premier qu'à une pharmacie qui lui a délivré des médicaments remboursés dans les 12 derniers mois.",
  "not-found": "Introuvable : cette information n'existe pas, ou ne vous est pas accessible.",
  "dossier-not-found": "Aucun dossier médical partagé n'est ouvert pour ce patient.",
  "document-not-found": "Ce document est introuvable, ou ne vous est pas accessible.",
  "appointment-not-found": "Ce rendez-vous est introuvable, ou ne vous est pas accessible.",
  "appointment-closed": "Ce rendez-vous est annulé ou refusé : il ne peut plus être modifié.",
  "reminder-not-found": "Ce rappel de prévention est introuvable.",
  "unknown-professional": "Aucun professionnel de santé ne correspond à ce numéro RPPS.",
  "invalid-checkpoint-note": "Ce texte n'est pas un point de contrôle signé du journal d'audit.",
  "checkpoint-not-signed": "Le journal d'audit n'a jamais signé ce point de contrôle.",
  "unknown-witness": "Aucune contre-signature d'un témoin connu du journal d'audit.",
  "invalid-cosignature": "La contre-signature du témoin n'est pas valide.",
  "measurement-not-found": "Cette mesure est introuvable : elle a peut-être déjà été supprimée.",
  "not-your-measurement": "Seule la personne qui a saisi cette mesure peut la supprimer.",
  "measurement-out-of-range":
    "Cette valeur n'est pas plausible : vérifiez le chiffre saisi et son unité.",
  "series-full": "Cette série a atteint le nombre maximal de mesures.",
  "insufficient-scope": "Cette application n'a pas reçu l'autorisation de faire cela.",
  "app-not-found": "Cette application ne figure pas, ou plus, au catalogue des services référencés.",
  "app-not-connected": "Cette application n'est pas, ou plus, connectée à votre compte.",
  "invalid-authorization-request":
    "Cette demande d'autorisation n'est pas valide : l'application est inconnue, ou l'adresse de retour n'est pas celle qu'elle a déclarée. Par prudence, vous n'êtes redirigé nulle part.",
  "invalid-redirect-uri": "Adresse de retour refusée : https, une adresse locale, ou un schéma propre à l'application.",
  "invalid-scope": "Cette autorisation n'existe pas.",
  "invalid-logo": "Le logo doit être une image PNG ou JPEG de 256 Kio au plus.",
  "patient-not-found": "Aucun patient ne correspond à ce numéro.",
  "trusted-person-not-found": "Cette personne ne fait pas, ou plus, partie des personnes de confiance de ce dossier.",
  "invitation-not-found": "Cette invitation n'existe plus : elle a pu être retirée par la personne qui vous l'avait envoyée.",
  "not-supported": "Cette opération n'est pas proposée.",
  "method-not-allowed": "Cette opération n'est pas proposée.",
  "not-acceptable": "Ce format de réponse n'est pas proposé.",
  "not-implemented": "Cette opération n'est pas encore proposée.",
  conflict: "Cette action n'est pas possible dans l'état actuel. Rechargez la page et réessayez.",
  "already-exists": "Cet élément existe déjà.",
  "already-trusted": "Cette personne est déjà l'une de vos personnes de confiance, ou son invitation attend sa réponse.",
  "too-many-trusted-persons": "Vous avez déjà désigné 5 personnes de confiance, le plus possible : retirez-en une pour en inviter une autre.",
  "dossier-exists": "Le dossier médical partagé de ce patient est déjà ouvert.",
  "dossier-closed": "Ce dossier est fermé : rien ne peut y être consulté ni ajouté tant qu'il n'est pas rouvert.",
  "dossier-open": "Ce dossier est déjà ouvert.",
  "deletion-requested": "La suppression de ce dossier a été demandée : il ne peut plus être modifié.",
  "cannot-rehide": "Ce document est déjà visible par le patient : il ne peut plus lui être caché.",
  contention: "Une autre modification est en cours. Réessayez dans un instant.",
  "dossier-full": "Ce dossier a atteint le nombre maximal de documents.",
  "duplicate-unique-id": "Ce document a déjà été déposé.",
  "rotation-too-soon": "La clé vient d'être renouvelée. Réessayez plus tard.",
  "conversation-closed": "Cette conversation est close : seul le professionnel peut la rouvrir.",
  "conversation-full": "Cette conversation a atteint le nombre maximal de messages : ouvrez-en une nouvelle.",
  "payload-too-large": "Le fichier est trop volumineux.",
  "unsupported-media-type": "Ce type de contenu n'est pas accepté.",
  "validation-error": "Une information saisie n'est pas valide.",
  "invalid-ins": "Ce numéro INS n'est pas valide : vérifiez ses 15 chiffres (le NIR et sa clé, sur la carte Vitale).",
  "invalid-rpps": "Ce numéro RPPS n'est pas valide : vérifiez ses 11 chiffres.",
  "invalid-profession": "Cette profession n'est pas reconnue.",
  "unsupported-grant-type": "Ce mode de connexion n'est pas proposé.",
  "unknown-section": "Cette rubrique du dossier n'existe pas.",
  "unknown-type-code": "Ce type de document n'est pas reconnu.",
  "consent-required": "Votre accord est nécessaire : cochez la case qui le donne.",
  "not-a-patient":
    "Aucun compte patient actif ne correspond à ce numéro INS : la personne doit d'abord ouvrir son propre compte.",
  "invalid-trusted-person": "Vous ne pouvez pas vous désigner vous-même comme personne de confiance.",
  "not-a-doctor": "Seul un médecin peut être désigné médecin traitant.",
  "vitale-mismatch": "Ce numéro de série ne correspond pas à la carte Vitale du patient.",
  "invalid-attachment": "Cette pièce jointe n'est pas acceptée : un fichier PDF, PNG ou JPEG, non vide et pas trop volumineux.",
  "weak-password":
    "Ce mot de passe est trop simple ou trop répandu. Choisissez-en un plus long, difficile à deviner.",
  "trivial-password":
    "Ce mot de passe est une répétition ou une suite (aaaa, 1234, azerty…) : choisissez-en un moins prévisible.",
  "common-password":
    "Ce mot de passe figure parmi les plus utilisés ou déjà divulgués : choisissez-en un autre.",
  "personal-password":
    "Ce mot de passe contient vos nom, prénom, numéros ou coordonnées : choisissez-en un sans rapport avec vous.",
  "wrong-password": "Le mot de passe actuel saisi n'est pas le bon.",
  "account-opposed":
    "Vous vous êtes opposé à la création de ce compte : rien ne peut être ouvert tant que vous ne revenez pas sur cette opposition.",
  "opposition-too-late":
    "Le délai pour s'opposer à la création de ce compte est dépassé.",
  "account-locked": "Trop de tentatives infructueuses : le compte est temporairement bloqué.",
  "too-many-requests": "Trop de demandes : patientez un instant avant de réessayer.",
  "export-running":
    "Une archive de vos données est déjà en préparation : attendez qu'elle soit prête.",
  "export-rate-limited":
    "Vous avez déjà demandé plusieurs archives aujourd'hui : réessayez demain.",
  "export-not-ready": "Cette archive n'est pas encore prête : patientez un instant.",
  "export-not-found": "Cette archive n'existe pas.",
  "export-expired":
    "Cette archive a été supprimée après son délai de conservation : demandez-en une nouvelle.",
  "internal-error": "Une erreur inattendue est survenue. Réessayez plus tard.",
  "service-unavailable": "Le service est momentanément indisponible. Réessayez dans un instant.",
  overloaded: "Le service est très sollicité. Réessayez dans quelques instants.",
  "not-ready": "Le service démarre. Réessayez dans un instant.",
};

// A type this portal does not know yet: what its HTTP status means.
export const BY_STATUS = {
  400: "La demande n'a pas pu être traitée.",
  401: "Votre session a pris fin. Reconnectez-vous.",
  403: "Vous n'avez pas le droit de faire cette action.",
  404: "Introuvable : cette information n'existe pas, ou ne vous est pas accessible.",
  405: "Cette opération n'est pas proposée.",
  406: "Ce format de réponse n'est pas proposé.",
  409: "Cette action n'est pas possible dans l'état actuel. Rechargez la page et réessayez.",
  410: "Cette information n'existe plus.",
  413: "Le contenu envoyé est trop volumineux.",
  415: "Ce type de contenu n'est pas accepté.",
  422: "Une information saisie n'est pas valide.",
  423: "Trop de tentatives infructueuses : le compte est temporairement bloqué.",
  429: "Trop de demandes : patientez un instant avant de réessayer.",
  500: "Une erreur inattendue est survenue. Réessayez plus tard.",
  503: "Le service est momentanément indisponible. Réessayez dans un instant.",
};
const OTHERWISE = "La demande n'a pas abouti.";
const SERVER = "Le service a rencontré un problème. Réessayez plus tard.";

function wait(seconds) {
  if (seconds < 60) return `${seconds} seconde${seconds > 1 ? "s" : ""}`;
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minute${minutes > 1 ? "s" : ""}`;
}

// The sentence for a refusal: its type's, else its status's; how long to wait when it says.
export function sentence({ type, status, retryAfter }) {
  let text = MESSAGES[type] || BY_STATUS[status] || (status >= 500 ? SERVER : OTHERWISE);
  if (retryAfter > 0) text += ` Réessayez dans ${wait(retryAfter)}.`;
  return text;
}

// An account the insurer's directory created, before its person signs in: they activate it
// (their e-mail address and phone confirmed by a code each, then their password) or oppose it
// (it is deleted, and none is opened for them until they change their mind). Both prove who they
// are with their INS, their Vitale card's serial and the provisional code they received.

import * as api from "./api.js";
import { field, h, notice, replace } from "./dom.js";
import { failure, onSubmit } from "./shell.js";

// The proof is refused with one answer whichever part is wrong (and whether the account exists):
// said here in the words of these pages, not the login's.
const WRONG_PROOF =
  "Ces informations ne correspondent à aucun compte en attente : vérifiez votre numéro INS, le numéro de série de votre carte Vitale et le code provisoire reçu.";
const CODES_EXPIRED =
  "Ces codes ont expiré : recommencez l'activation pour en recevoir de nouveaux.";
const SAYS = { "invalid-credentials": WRONG_PROOF, "otp-expired": CODES_EXPIRED };

// Runs a form's call; a refusal these pages word their own way is shown here, any other goes to
// onSubmit (which highlights the field at fault).
async function said(status, call) {
  try {
    return await call();
  } catch (error) {
    if (!(error instanceof api.Problem && SAYS[error.type])) throw error;
    status.replaceChildren(failure(error, SAYS[error.type]));
    return null;
  }
}

function proofFields() {
  return [
    field(
      "Numéro INS",
      h("input", { name: "ins", required: true, inputmode: "numeric", autocomplete: "off", maxlength: 32 }),
      "Votre numéro de sécurité sociale : 15 chiffres, sur votre carte Vitale.",
    ),
    field(
      "Numéro de série de la carte Vitale",
      h("input", { name: "vitale_serial", required: true, autocomplete: "off", maxlength: 32 }),
      "Imprimé au dos de votre carte Vitale.",
    ),
    field(
      "Code provisoire",
      h("input", {
        name: "provisional_code",
        required: true,
        autocomplete: "one-time-code",
        autocapitalize: "characters",
        spellcheck: "false",
        maxlength: 32,
      }),
      "Les 10 lettres et chiffres reçus par e-mail ou par SMS (majuscules ou minuscules, avec ou sans espaces).",
    ),
  ];
}

const proofOf = (data) => ({
  ins: String(data.get("ins")).trim(),
  vitale_serial: String(data.get("vitale_serial")).trim(),
  provisional_code: String(data.get("provisional_code")).trim(),
});

const back = () => h("p", {}, h("a", { href: "#/connexion" }, "Retour à la connexion"));

// ------------------------------------------------------------------ activation

export function activationView(main) {
  const status = h("div", { class: "status" });
  const form = h(
    "form",
    { class: "card narrow" },
    h("h2", {}, "1. Vos informations"),
    proofFields(),
    field(
      "Adresse e-mail",
      h("input", { name: "email", type: "email", required: true, autocomplete: "email", maxlength: 254 }),
      "Par exemple : prenom.nom@exemple.fr. Vos codes de connexion et vos notifications y seront envoyés.",
    ),
    field(
      "Téléphone mobile",
      h("input", { name: "phone", type: "tel", required: true, autocomplete: "tel", maxlength: 32 }),
      "Par exemple : 06 12 34 56 78. Un code vous y sera envoyé par SMS.",
    ),
    h("button", { type: "submit" }, "Recevoir mes codes de confirmation"),
    status,
  );
  onSubmit(form, status, async (data) => {
    const contacts = { email: String(data.get("email")).trim(), phone: String(data.get("phone")).trim() };
    const started = await said(status, () => api.post("/v1/accounts/activation", { ...proofOf(data), ...contacts }));
    if (started) codesStep(main, started, contacts);
  });
  replace(
    main,
    h("h1", {}, "Activer mon espace santé"),
    h(
      "p",
      { class: "lead" },
      "Votre caisse d'assurance maladie a créé votre espace santé et vous a envoyé un code provisoire, par e-mail ou par SMS. ",
      "L'activer, c'est choisir l'adresse e-mail, le téléphone et le mot de passe avec lesquels vous vous connecterez : ",
      "vous pourrez alors consulter votre dossier médical partagé et décider qui peut le voir.",
    ),
    h(
      "p",
      {},
      "Munissez-vous de votre carte Vitale et du code provisoire. Un code de confirmation sera envoyé à l'adresse e-mail et un autre au téléphone que vous indiquez. ",
      "Sans réponse de votre part, votre espace est ouvert à la fin du délai indiqué dans le message qui vous a apporté le code.",
    ),
    h(
      "p",
      {},
      "La création de cet espace n'est pas obligatoire et n'a aucun impact sur vos remboursements. ",
      h("a", { href: "#/opposition" }, "Je ne souhaite pas de compte (opposition)"),
    ),
    form,
    back(),
  );
}

// What a password must be (the policy of docs/accounts.md), before it is refused.
const PASSWORD_RULES = [
  "au moins 12 caractères : une phrase de plusieurs mots se retient facilement et se devine mal ;",
  "ni une répétition ni une suite (« aaaa », « 1234 », « azerty ») ;",
  "pas un mot de passe courant ou déjà divulgué, même entouré de chiffres ou de symboles (« motdepasse2024! ») ;",
  "rien de personnel : ni vos nom et prénom, ni votre date de naissance, ni vos numéros (INS, carte Vitale, téléphone), ni votre adresse e-mail.",
];

function codesStep(main, started, contacts) {
  const status = h("div", { class: "status" });
  const code = (name, label, hint) =>
    field(
      label,
      h("input", { name, required: true, inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9]{6}", maxlength: 6 }),
      hint,
    );
  const password = h("input", { name: "password", type: "password", required: true, minlength: 12, autocomplete: "new-password" });
  const again = h("input", { name: "password_again", type: "password", required: true, autocomplete: "new-password" });
  const form = h(
    "form",
    { class: "card narrow" },
    h("h2", {}, "2. Vos codes et votre mot de passe"),
    h("p", {}, `Un code à 6 chiffres a été envoyé à ${contacts.email}, et un autre par SMS au ${contacts.phone}. Ils sont valables quelques minutes.`),
    code("email_code", "Code reçu par e-mail", "Les 6 chiffres du message « Votre code de vérification DMP »."),
    code("sms_code", "Code reçu par SMS", "Les 6 chiffres du SMS."),
    field("Mot de passe", password, "Au moins 12 caractères, sans rapport avec vous (voir ci-dessous)."),
    h("div", { class: "rules" }, h("p", {}, "Votre mot de passe doit être :"), h("ul", {}, PASSWORD_RULES.map((rule) => h("li", {}, rule)))),
    field("Confirmez le mot de passe", again),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit" }, "Activer mon compte"),
      h("button", { type: "button", class: "secondary", onclick: () => activationView(main) }, "Recommencer"),
    ),
    status,
  );
  onSubmit(form, status, async (data) => {
    for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
    if (data.get("password") !== data.get("password_again")) {
      again.setAttribute("aria-invalid", "true");
      again.focus();
      throw new Error("Les deux mots de passe saisis ne sont pas identiques.");
    }
    const done = await said(status, () =>
      api.post(`/v1/accounts/activation/${api.q(started.activation_id)}`, {
        email_code: String(data.get("email_code")).trim(),
        sms_code: String(data.get("sms_code")).trim(),
        password: data.get("password"),
      }),
    );
    if (done) activated(main, contacts);
  });
  replace(main, h("h1", {}, "Activer mon espace santé"), form);
  form.querySelector("input").focus();
}

function activated(main, contacts) {
  replace(
    main,
    h("h1", {}, "Votre espace santé est activé"),
    notice(
      `Votre compte est prêt. Connectez-vous avec votre numéro INS et le mot de passe que vous venez de choisir : à chaque connexion, un code vous sera envoyé à ${contacts.email}.`,
      "success",
    ),
    h("p", {}, "Vous pouvez désormais consulter votre dossier médical partagé, choisir qui peut le voir et suivre chaque accès."),
    h("p", {}, h("a", { class: "button", href: "#/connexion" }, "Me connecter")),
  );
}

// ------------------------------------------------------------------ opposition

export function oppositionView(main) {
  const status = h("div", { class: "status" });
  const inputs = () => form.querySelectorAll("input");
  const next = h("button", { type: "submit" }, "Continuer");
  const confirm = h(
    "div",
    { class: "confirm notice warning", role: "group", "aria-label": "Confirmer l'opposition" },
    h("p", {}, h("strong", {}, "Confirmez-vous votre opposition ?"), " Votre compte et votre espace santé seront supprimés. Aucun espace ne pourra être ouvert pour vous tant que vous ne reviendrez pas sur votre décision."),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit", class: "danger" }, "Confirmer mon opposition"),
      h("button", { type: "button", class: "secondary", onclick: () => edit(true) }, "Annuler"),
    ),
  );
  const proceed = h("div", { class: "actions" }, next);
  const actions = h("div", {}, proceed);
  // Back to the fields (after a cancel or a refusal), or on to the confirmation.
  const edit = (focus) => {
    for (const input of inputs()) input.readOnly = false;
    actions.replaceChildren(proceed);
    if (focus) next.focus();
  };
  const form = h("form", { class: "card narrow" }, proofFields(), actions, status);
  onSubmit(form, status, async (data) => {
    if (!actions.contains(confirm)) {
      for (const input of inputs()) input.readOnly = true;
      actions.replaceChildren(confirm);
      confirm.querySelector("button").focus();
      return;
    }
    let done = null;
    try {
      done = await said(status, () => api.post("/v1/accounts/opposition", proofOf(data)));
    } finally {
      if (!done) edit(false);
    }
    if (done) opposed(main);
  });
  replace(
    main,
    h("h1", {}, "M'opposer à la création de mon espace santé"),
    h(
      "p",
      { class: "lead" },
      "Votre caisse d'assurance maladie a créé votre espace santé. Vous pouvez le refuser : sa création n'est pas obligatoire et n'a aucun impact sur vos remboursements.",
    ),
    h(
      "div",
      { class: "card narrow" },
      h("h2", {}, "Ce que signifie s'opposer"),
      h(
        "ul",
        {},
        h("li", {}, "Votre compte et votre espace santé sont supprimés."),
        h("li", {}, "Aucun espace santé ni dossier médical partagé ne peut être ouvert pour vous, ni par vous ni par un professionnel, tant que vous ne changez pas d'avis."),
        h("li", {}, "Pour changer d'avis, adressez-vous à votre caisse d'assurance maladie : elle lève votre opposition, et un espace peut de nouveau être créé pour vous."),
        h("li", {}, "L'opposition n'est possible que pendant le délai indiqué dans le message qui vous a apporté le code provisoire : passé ce délai, votre espace est ouvert."),
      ),
      h("p", {}, "Vous préférez l'utiliser ? ", h("a", { href: "#/activation" }, "Activer mon compte")),
    ),
    form,
    back(),
  );
}

function opposed(main) {
  replace(
    main,
    h("h1", {}, "Votre opposition est enregistrée"),
    notice(
      "Votre compte et votre espace santé ont été supprimés. Aucun espace ne sera ouvert pour vous tant que vous ne reviendrez pas sur votre décision.",
      "success",
    ),
    h("p", {}, "Si vous changez d'avis, adressez-vous à votre caisse d'assurance maladie : elle lèvera votre opposition."),
    back(),
  );
}

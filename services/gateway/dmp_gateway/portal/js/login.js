// Signing in: identifier and password, then the one-time code sent by e-mail or SMS.

import * as api from "./api.js";
import { field, h, replace } from "./dom.js";
import { onSubmit } from "./shell.js";

const KINDS = {
  patient: ["Patient", "Numéro INS (15 chiffres, sur votre carte Vitale)"],
  professional: ["Professionnel de santé", "Numéro RPPS (11 chiffres)"],
};

export function loginView(main, signedIn) {
  const status = h("div", { class: "status" });
  const identifier = h("input", {
    name: "login",
    required: true,
    inputmode: "numeric",
    autocomplete: "username",
    maxlength: 32,
  });
  const identifierLabel = h("label", {}, KINDS.patient[1]);
  const kinds = h(
    "fieldset",
    { class: "kinds" },
    h("legend", {}, "Je suis"),
    Object.entries(KINDS).map(([kind, [label]], i) => {
      const id = `kind-${kind}`;
      return h(
        "span",
        { class: "choice" },
        h("input", {
          type: "radio",
          name: "kind",
          value: kind,
          id,
          checked: i === 0,
          onchange: () => {
            identifierLabel.textContent = KINDS[kind][1];
          },
        }),
        h("label", { for: id }, label),
      );
    }),
  );
  identifier.id = "login-identifiant";
  identifierLabel.setAttribute("for", identifier.id);
  const form = h(
    "form",
    { class: "card narrow", novalidate: true },
    kinds,
    h("div", { class: "field" }, identifierLabel, identifier),
    field(
      "Mot de passe",
      h("input", { name: "password", type: "password", required: true, autocomplete: "current-password" }),
    ),
    h("button", { type: "submit" }, "Continuer"),
    status,
  );
  onSubmit(form, status, async (data) => {
    const kind = data.get("kind");
    const challenge = await api.login(kind, String(data.get("login")).trim(), data.get("password"));
    codeStep(main, challenge, signedIn);
  });
  replace(
    main,
    h("h1", {}, "Connexion à votre espace santé"),
    h(
      "p",
      { class: "lead" },
      "Votre dossier médical partagé réunit vos comptes rendus, analyses, traitements et vaccinations. ",
      "Vous décidez qui peut le consulter.",
    ),
    form,
    h(
      "section",
      { class: "card narrow first-time", "aria-labelledby": "premiere-fois" },
      h("h2", { id: "premiere-fois" }, "Vous avez reçu un code provisoire ?"),
      h(
        "p",
        {},
        "Votre caisse d'assurance maladie a créé votre espace santé. Activez-le pour vous connecter, ou refusez-le : ",
        "sa création n'est pas obligatoire et n'a aucun impact sur vos remboursements.",
      ),
      h(
        "div",
        { class: "actions" },
        h("a", { class: "button secondary", href: "#/activation" }, "Activer mon compte"),
        h("a", { href: "#/opposition" }, "Je ne souhaite pas de compte (opposition)"),
      ),
    ),
  );
}

function codeStep(main, challenge, signedIn) {
  const status = h("div", { class: "status" });
  const where = challenge.channel === "sms" ? "par SMS" : "par e-mail";
  const form = h(
    "form",
    { class: "card narrow" },
    field(
      "Code à usage unique",
      h("input", {
        name: "code",
        required: true,
        inputmode: "numeric",
        autocomplete: "one-time-code",
        pattern: "[0-9]{6}",
        maxlength: 6,
      }),
      `Le code à 6 chiffres vous a été envoyé ${where}. Il est valable quelques minutes.`,
    ),
    h("button", { type: "submit" }, "Se connecter"),
    status,
  );
  onSubmit(form, status, async (data) => {
    await api.verifyCode(challenge.challenge_id, String(data.get("code")).trim());
    await signedIn();
  });
  replace(main, h("h1", {}, "Vérification en deux étapes"), form);
  form.querySelector("input").focus();
}

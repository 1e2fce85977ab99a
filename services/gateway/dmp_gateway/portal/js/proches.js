// « Mes proches »: the trusted persons a patient names (read, or read and manage), and the people
// who trust them, whose invitations they accept or decline and for whom they then act.

import * as api from "./api.js";
import { confirmation, date, field, h, notice, replace } from "./dom.js";
import { failure, fullName, loadRepresented, onSubmit, SCOPES, state } from "./shell.js";

const MOST = 5;
const trustedPath = (ins) => `/v1/dossiers/${api.q(ins)}/trusted-persons`;
const STATUSES = { invited: "Invitation envoyée", active: "Actif" };
// What the signed-in person is to someone who trusts them.
const RELATIONS = {
  trusted_person: "Vous êtes sa personne de confiance",
  legal_representative: "Vous êtes son représentant légal",
};

const SCOPE_HINTS = {
  read: "Consulte votre dossier comme vous le voyez, sans rien pouvoir y changer.",
  manage:
    "Consulte votre dossier et fait vos choix à votre place : professionnels autorisés ou bloqués, documents masqués, profil médical, documents personnels. Jamais la fermeture de votre dossier, ni le choix de vos proches.",
};

function scopeChoice(name, chosen) {
  return h(
    "fieldset",
    { class: "scopes" },
    h("legend", {}, "Ce que cette personne peut faire"),
    Object.entries(SCOPES).map(([value, label]) => {
      const id = `${name}-${value}`;
      return h(
        "div",
        { class: "field check" },
        h("input", { type: "radio", id, name, value, checked: value === chosen, "aria-describedby": `${id}-aide` }),
        h("label", { for: id }, label),
        h("p", { class: "hint", id: `${id}-aide` }, SCOPE_HINTS[value]),
      );
    }),
  );
}

// ------------------------------------------------------------------ whom I trust

function trustedItem(me, person, status) {
  const name = fullName(person) || `INS ${person.ins}`;
  const change = h(
    "form",
    { class: "scope-change" },
    field(
      `Accès de ${name}`,
      h(
        "select",
        { name: "scope" },
        Object.entries(SCOPES).map(([value, label]) => h("option", { value, selected: value === person.scope }, label)),
      ),
    ),
    h("button", { type: "submit", class: "secondary small" }, "Modifier l'accès"),
  );
  onSubmit(change, status, async (data) => {
    await api.patch(`${trustedPath(me.ins)}/${api.q(person.ins)}`, { scope: data.get("scope") });
    await reload();
    said(`L'accès de ${name} est désormais : ${SCOPES[data.get("scope")].toLowerCase()}.`);
  });
  const [ask, group] = confirmation({
    ask: person.status === "invited" ? "Retirer l'invitation" : "Retirer l'accès",
    question:
      person.status === "invited"
        ? `Retirer l'invitation envoyée à ${name} ? Elle ne pourra plus l'accepter.`
        : `Retirer l'accès de ${name} ? Cette personne ne pourra plus consulter votre dossier ni agir pour vous.`,
    confirm: "Confirmer le retrait",
    small: true,
    action: async () => {
      status.replaceChildren();
      try {
        await api.del(`${trustedPath(me.ins)}/${api.q(person.ins)}`);
        await reload();
        said(`${name} n'a plus accès à votre dossier.`);
      } catch (error) {
        status.replaceChildren(failure(error));
      }
    },
  });
  return h(
    "li",
    { class: person.status },
    h(
      "div",
      { class: "who" },
      h("p", { class: "title" }, name, h("span", { class: `badge ${person.status}` }, STATUSES[person.status] || person.status)),
      h("p", { class: "meta" }, `INS ${person.ins} · ${SCOPES[person.scope] || person.scope}`),
      h(
        "p",
        { class: "meta" },
        person.accepted_at ? `Invitation acceptée le ${date(person.accepted_at)}` : `Invitée le ${date(person.invited_at)}`,
      ),
    ),
    h("div", { class: "controls" }, change, ask),
    group,
  );
}

// A success said at the top of the page just shown.
function said(text) {
  document.querySelector("#contenu .outcome")?.replaceChildren(notice(text, "success"));
}

function trustedCard(me, items) {
  const status = h("div", { class: "status" });
  const inviteStatus = h("div", { class: "status" });
  const invite = h(
    "form",
    { class: "invite" },
    h("h3", {}, "Inviter une personne de confiance"),
    field(
      "Numéro INS de la personne",
      h("input", { name: "ins", required: true, inputmode: "numeric", maxlength: 15, pattern: "[0-9]{15}", autocomplete: "off" }),
      "15 chiffres, sur sa carte Vitale ou dans son espace « Mes proches ». Elle doit avoir un compte patient.",
    ),
    scopeChoice("scope", "read"),
    h("button", { type: "submit" }, "Inviter"),
    inviteStatus,
  );
  onSubmit(invite, inviteStatus, async (data) => {
    const created = await api.post(trustedPath(me.ins), {
      ins: String(data.get("ins")).replace(/\s+/g, ""),
      scope: data.get("scope"),
    });
    await reload();
    said(`Invitation envoyée à ${fullName(created) || `INS ${created.ins}`} : elle aura accès à votre dossier dès qu'elle l'aura acceptée.`);
  });
  return h(
    "section",
    { class: "card", "aria-labelledby": "confiance-titre" },
    h("h2", { id: "confiance-titre" }, "Mes personnes de confiance"),
    items.length ? h("ul", { class: "trusted" }, items.map((p) => trustedItem(me, p, status))) : h("p", {}, "Vous n'avez désigné personne."),
    status,
    items.length < MOST
      ? invite
      : h("p", { class: "hint" }, `Vous avez désigné ${MOST} personnes, le plus possible : retirez-en une pour en inviter une autre.`),
  );
}

// ------------------------------------------------------------------ who trusts me

function representedItem(me, person, status) {
  const name = fullName(person) || `INS ${person.ins}`;
  const answer = (act, done) => async () => {
    status.replaceChildren();
    try {
      await act();
      await reload();
      said(done);
    } catch (error) {
      status.replaceChildren(failure(error));
    }
  };
  const controls = h("div", { class: "controls" });
  let group = "";
  if (person.status === "invited") {
    controls.append(
      h(
        "button",
        { type: "button", onclick: answer(() => api.post(`/v1/me/represented/${api.q(person.ins)}/accept`), `Vous êtes désormais personne de confiance de ${name}.`) },
        "Accepter",
      ),
      h(
        "button",
        { type: "button", class: "secondary", onclick: answer(() => api.del(`${trustedPath(person.ins)}/${api.q(me.ins)}`), `Vous avez refusé l'invitation de ${name}.`) },
        "Refuser",
      ),
    );
  } else {
    controls.append(h("a", { class: "button", href: `#/dossier/${person.ins}` }, `Agir pour ${name}`));
    if (person.relation === "trusted_person") {
      let ask;
      [ask, group] = confirmation({
        ask: "Ne plus être personne de confiance",
        question: `Ne plus être personne de confiance de ${name} ? Vous ne pourrez plus consulter son dossier ; ${name} pourra vous inviter de nouveau.`,
        confirm: "Confirmer le retrait",
        small: true,
        action: answer(() => api.del(`${trustedPath(person.ins)}/${api.q(me.ins)}`), `Vous n'êtes plus personne de confiance de ${name}.`),
      });
      controls.append(ask);
    }
  }
  return h(
    "li",
    { class: person.status },
    h(
      "div",
      { class: "who" },
      h(
        "p",
        { class: "title" },
        name,
        h("span", { class: `badge ${person.status}` }, person.status === "invited" ? "Invitation reçue" : "Actif"),
      ),
      h(
        "p",
        { class: "meta" },
        `${RELATIONS[person.relation] || person.relation} · ${SCOPES[person.scope] || person.scope}`,
        person.status === "invited" && person.invited_at ? ` · invitation du ${date(person.invited_at)}` : "",
      ),
    ),
    controls,
    group,
  );
}

function representedCard(me, items) {
  const status = h("div", { class: "status" });
  return h(
    "section",
    { class: "card", "aria-labelledby": "ils-titre" },
    h("h2", { id: "ils-titre" }, "Ils vous font confiance"),
    h(
      "p",
      {},
      "Les personnes qui vous ont désigné comme personne de confiance, et les enfants mineurs dont vous êtes le représentant légal. ",
      "Une fois l'invitation acceptée, « Agir pour » ouvre leur dossier ; chaque consultation y est tracée à votre nom, pour leur compte.",
    ),
    items.length ? h("ul", { class: "trusted" }, items.map((p) => representedItem(me, p, status))) : h("p", {}, "Personne pour l'instant."),
    status,
  );
}

// The page again, after a change: the lists as the API now says them.
const reload = () => view(document.getElementById("contenu"));

export async function view(main) {
  const me = state.me;
  const [trusted, represented] = await Promise.all([api.get(trustedPath(me.ins)), loadRepresented()]);
  replace(
    main,
    h("h1", {}, "Mes proches"),
    h(
      "p",
      { class: "lead" },
      "Une personne de confiance, qui a elle-même un compte patient, peut consulter votre dossier et, si vous le lui permettez, gérer vos choix. ",
      "Elle accepte d'abord votre invitation ; vous pouvez lui retirer cet accès à tout moment. ",
      "Elle ne voit jamais les documents qui vous sont encore cachés, ni ceux que vous marquez « Ne pas partager avec mes proches ».",
    ),
    h("p", {}, `Votre numéro INS, à donner à qui veut vous inviter : ${me.ins}.`),
    h("div", { class: "outcome" }),
    trustedCard(me, trusted.items),
    representedCard(me, represented),
  );
  // The menu's « Agir pour » follows the answers given here.
  window.dispatchEvent(new CustomEvent("dmp:represented"));
}

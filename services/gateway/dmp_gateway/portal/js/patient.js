// The patient's own pages: who may see the record, the access history and its proof,
// the medical profile, notifications.

import * as api from "./api.js";
import { verifyTrace } from "./audit.js";
import { checkbox, dateTime, field, h, notice, replace } from "./dom.js";
import { actingFor, failure, fullName, go, onSubmit, PROFESSIONS } from "./shell.js";

const base = (ins) => `/v1/dossiers/${api.q(ins)}`;

// ------------------------------------------------------------------ who may see the record

// A page's title: the patient's own, or the one of whom the viewer acts for.
function title(ins, own, theirs) {
  const other = actingFor(ins);
  return h("h1", {}, other ? `${theirs} — ${fullName(other)}` : own);
}

export async function access(main, { ins }) {
  const [settings, team] = await Promise.all([
    api.get(`${base(ins)}/consent-settings`),
    api.get(`${base(ins)}/professionals`),
  ]);
  const settingsStatus = h("div", { class: "status" });
  const settingsForm = h(
    "form",
    { class: "card" },
    h("h2", {}, "En cas d'urgence"),
    checkbox(
      "Autoriser l'accès en urgence (« bris de glace »)",
      settings.allow_emergency_access,
      "Si votre état présente un risque immédiat et que vous ne pouvez pas donner votre accord, un professionnel pourra consulter votre dossier. Chaque accès est tracé, motivé par écrit, et vous en êtes informé.",
      { name: "allow_emergency_access" },
    ),
    checkbox(
      "Autoriser le médecin régulateur du SAMU-Centre 15",
      settings.allow_regulator_access,
      "Lors d'un appel au 15, le médecin régulateur pourra lire votre dossier pour décider de l'aide à vous envoyer.",
      { name: "allow_regulator_access" },
    ),
    h("button", { type: "submit" }, "Enregistrer mes choix"),
    settingsStatus,
  );
  onSubmit(settingsForm, settingsStatus, async (data) => {
    await api.put(`${base(ins)}/consent-settings`, {
      allow_emergency_access: data.get("allow_emergency_access") === "on",
      allow_regulator_access: data.get("allow_regulator_access") === "on",
    });
    settingsStatus.replaceChildren(notice("Vos choix sont enregistrés."));
  });

  const gp = team.authorized.find((m) => m.attending_physician);
  const gpStatus = h("div", { class: "status" });
  const gpForm = h(
    "form",
    { class: "card" },
    h("h2", {}, "Mon médecin traitant"),
    h(
      "p",
      {},
      gp ? `Votre médecin traitant : RPPS ${gp.rpps}.` : "Vous n'avez pas désigné de médecin traitant.",
      " Il peut consulter tout votre dossier, y compris les documents que vous masquez aux autres professionnels.",
    ),
    field("Numéro RPPS du médecin", h("input", { name: "rpps", required: true, inputmode: "numeric", maxlength: 11 })),
    h("button", { type: "submit" }, gp ? "Changer de médecin traitant" : "Désigner"),
    gpStatus,
  );
  onSubmit(gpForm, gpStatus, async (data) => {
    await api.put(`${base(ins)}/attending-physician`, { rpps: String(data.get("rpps")).trim() });
    go(`/dossier/${ins}/acces`);
  });

  const teamStatus = h("div", { class: "status" });
  const member = (m) =>
    h(
      "li",
      {},
      h("span", {}, `RPPS ${m.rpps}`, m.attending_physician ? " — médecin traitant" : ""),
      h(
        "button",
        {
          type: "button",
          class: "link",
          onclick: async () => {
            try {
              await api.del(`${base(ins)}/professionals/${api.q(m.rpps)}`);
              go(`/dossier/${ins}/acces`);
            } catch (error) {
              teamStatus.replaceChildren(failure(error));
            }
          },
        },
        m.status === "blocked" ? "Débloquer" : "Retirer l'autorisation",
      ),
    );
  const teamForm = h(
    "form",
    { class: "card" },
    h("h2", {}, "Professionnels autorisés et bloqués"),
    h(
      "p",
      {},
      "Un professionnel autorisé peut consulter les documents que sa profession permet de lire. ",
      "Un professionnel bloqué ne peut plus rien consulter, même en urgence.",
    ),
    h("h3", {}, "Autorisés"),
    team.authorized.length ? h("ul", { class: "team" }, team.authorized.map(member)) : h("p", {}, "Aucun."),
    h("h3", {}, "Bloqués"),
    team.blocked.length ? h("ul", { class: "team" }, team.blocked.map(member)) : h("p", {}, "Aucun."),
    field("Numéro RPPS du professionnel", h("input", { name: "rpps", required: true, inputmode: "numeric", maxlength: 11 })),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit", name: "status", value: "authorized" }, "Autoriser"),
      h("button", { type: "submit", name: "status", value: "blocked", class: "danger" }, "Bloquer"),
    ),
    teamStatus,
  );
  let choice = "authorized";
  teamForm.addEventListener("click", (event) => {
    if (event.target.name === "status") choice = event.target.value;
  });
  onSubmit(teamForm, teamStatus, async (data) => {
    await api.put(`${base(ins)}/professionals/${api.q(String(data.get("rpps")).trim())}`, { status: choice });
    go(`/dossier/${ins}/acces`);
  });

  replace(
    main,
    title(ins, "Qui peut voir mon dossier", "Qui peut voir son dossier"),
    h(
      "p",
      { class: "lead" },
      h("a", { href: `#/dossier/${ins}/apercu` }, "Vérifier ce que voit un professionnel"),
      " : les documents qu'il verrait aujourd'hui, et pourquoi les autres lui restent cachés.",
    ),
    gpForm,
    teamForm,
    settingsForm,
  );
}

// ------------------------------------------------------------------ access history

const ACTIONS = {
  read: ["Consultation du dossier", "Consultation d'un document"],
  search: ["Consultation de la liste des documents", "Consultation de la liste des documents"],
  create: ["Création", "Ajout d'un document"],
  update: ["Modification du dossier", "Modification d'un document"],
  delete: ["Suppression", "Suppression d'un document"],
  execute: ["Action", "Action sur un document"],
};
const MODES = { break_glass: "Accès en urgence", regulator: "Régulation SAMU" };
const REFUSALS = {
  blocked: "vous l'avez bloqué",
  not_in_care_team: "il ne fait pas partie de vos professionnels autorisés",
  not_habilitated: "sa profession ne permet pas de lire ce type de document",
  masked: "vous avez masqué ce document",
  dossier_closed: "le dossier était fermé",
  not_a_care_actor: "il n'est pas un professionnel de santé",
};

const TRUST_CHANGES = {
  "consent:trusted_person_invited": "Invitation d'une personne de confiance",
  "consent:trusted_person_changed": "Changement de l'accès d'une personne de confiance",
  "consent:trusted_person_removed": "Retrait d'une personne de confiance",
  "consent:trusted_person_accepted": "Invitation acceptée par une personne de confiance",
};

// The agenda's entries: what they were about (never the appointment's title or place).
const AGENDA = {
  appointments: "Consultation de l'agenda",
  calendar: "Export de l'agenda (.ics)",
  reminders: "Consultation des rappels de prévention",
  prevention: "Choix des messages de prévention",
};

// What happened, in words: the entry's action and what it was about.
// What the witnesses said of the log, in a sentence.
function vouching({ vouched, size }) {
  if (!vouched.length) return "Aucun témoin indépendant n'a encore contre-signé le journal.";
  const names = vouched.join(", ");
  return vouched.length > 1
    ? `Les témoins indépendants ${names} ont contre-signé le journal (${size} entrées), qui depuis n'a fait que s'allonger.`
    : `Le témoin indépendant ${names} a contre-signé le journal (${size} entrées), qui depuis n'a fait que s'allonger.`;
}

function what(e) {
  const query = e.query || "";
  const change = { close: "Fermeture du dossier", reopen: "Réouverture du dossier", open: "Ouverture du dossier" };
  if (e.action === "login") return "Connexion au compte";
  if (query === "emergency_access") return "Déclenchement d'un accès en urgence";
  if (query.startsWith("dossier:")) return change[query.slice(8)] || "Modification du dossier";
  if (TRUST_CHANGES[query]) return TRUST_CHANGES[query];
  if (query.startsWith("consent:")) return "Modification des droits d'accès";
  if (query === "auto_reveal") return "Document rendu visible (délai d'un mois écoulé)";
  if (query === "representation:ended") return "Fin de la représentation légale (majorité)";
  if (AGENDA[query]) return AGENDA[query];
  if (query.startsWith("appointment=")) return e.action === "create" ? "Ajout d'un rendez-vous" : "Modification d'un rendez-vous";
  if (query.startsWith("reminder=")) return "Rappel de prévention marqué fait ou reporté";
  const [whole, one] = ACTIONS[e.action] || [e.action, e.action];
  return e.document_id ? one : whole;
}

// Who acted. A person acting for the patient is named with them: « Alex Durand (pour le compte
// de Camille Martin) », from the names the viewer knows (`people`: INS → name).
function actorName(e, ins, me, people) {
  const actor = e.actor;
  if (actor.kind === "patient") {
    const who =
      actor.id === me.ins ? "Vous" : people.get(actor.id) || actor.name || (actor.id === ins ? "Le patient" : "Un proche");
    // Accepting an invitation is the trusted person's own act, not one for the patient.
    const forWhom = e.query === "consent:trusted_person_accepted" ? null : e.on_behalf_of;
    if (!forWhom) return who;
    return `${who} (pour le compte de ${people.get(forWhom) || (forWhom === me.ins ? "vous" : `INS ${forWhom}`)})`;
  }
  if (actor.kind === "professional") {
    const who = actor.name || `RPPS ${actor.id}`;
    return actor.profession ? `${who}, ${PROFESSIONS[actor.profession] || actor.profession}` : who;
  }
  if (actor.kind === "system") return "Système (Assurance Maladie)";
  // An app the patient connected, acting with the access they gave it.
  if (actor.kind === "app") return `${actor.name || actor.id} (application connectée)`;
  return actor.name || actor.id;
}

async function allEntries(ins) {
  const entries = [];
  let cursor = "";
  do {
    const page = await api.get(`${base(ins)}/access-log?page_size=100${cursor ? `&cursor=${api.q(cursor)}` : ""}`);
    entries.push(...page.entries);
    cursor = page.next || "";
  } while (cursor);
  return entries;
}

// The names the viewer knows for a dossier's trace: themself, the patient they act for, or
// their own trusted persons.
async function knownPeople(ins, me) {
  const people = new Map([[me.ins, fullName(me)]]);
  const other = actingFor(ins);
  if (other) return people.set(other.ins, fullName(other));
  if (me.ins !== ins) return people;
  try {
    const { items } = await api.get(`${base(ins)}/trusted-persons`);
    for (const person of items) people.set(person.ins, fullName(person));
  } catch (error) {
    if (error instanceof api.Problem && error.status === 401) throw error;
  }
  return people;
}

export async function history(main, { ins }, state) {
  const [entries, people] = await Promise.all([allEntries(ins), knownPeople(ins, state.me)]);
  const own = state.me.ins === ins;
  const verdicts = new Map();
  const rows = entries.map((e) => {
    const verdict = h("td", { class: "verdict" }, "");
    verdicts.set(e.seq, verdict);
    if (e.withheld) {
      return h(
        "tr",
        {},
        h("td", {}, "—"),
        h("td", {}, "—"),
        h("td", {}, "Entrée réservée : elle concerne un document qui ne vous est pas encore accessible"),
        verdict,
      );
    }
    const emergency = MODES[e.mode];
    return h(
      "tr",
      { class: emergency ? "emergency" : e.outcome === "denied" ? "denied" : "" },
      h("td", {}, dateTime(e.at)),
      h("td", {}, actorName(e, ins, state.me, people)),
      h(
        "td",
        {},
        what(e),
        e.outcome === "denied" ? " — refusé" : "",
        emergency ? h("strong", { class: "badge emergency" }, emergency) : "",
        e.reason && emergency ? h("p", { class: "reason" }, `Motif : ${e.reason}`) : "",
        e.outcome === "denied" && REFUSALS[e.reason] ? h("p", { class: "reason" }, `Refusé car ${REFUSALS[e.reason]}.`) : "",
      ),
      verdict,
    );
  });
  const result = h("div", { class: "status", "aria-live": "polite" });
  const button = h("button", { type: "button" }, "Vérifier l'historique");
  button.addEventListener("click", async () => {
    button.disabled = true;
    result.replaceChildren(notice("Vérification en cours…"));
    try {
      const report = await verifyTrace(ins, entries, { wholeTrace: own });
      for (const [seq, cell] of verdicts) {
        const v = report.verdicts.get(seq);
        cell.textContent = v === "ok" ? "✓ vérifiée" : v === "pending" ? "en attente de signature" : v ? `✗ ${v}` : "";
        cell.className = `verdict ${v === "ok" ? "ok" : v === "pending" ? "" : "bad"}`;
      }
      result.replaceChildren(
        report.problems.length
          ? notice(`Vérification échouée : ${report.problems.join(" ; ")}`, "error")
          : notice(
              `Historique vérifié : ${report.checked} entrée${report.checked > 1 ? "s" : ""} figure${report.checked > 1 ? "nt" : ""} dans le journal signé (${report.size} entrées), signature valide, aucune entrée manquante.` +
                (report.pending ? ` ${report.pending} entrée(s) récente(s) seront vérifiables à la prochaine signature.` : "") +
                (report.witnesses.known ? ` ${vouching(report.witnesses)}` : ""),
              "success",
            ),
      );
    } catch (error) {
      result.replaceChildren(failure(error));
    } finally {
      button.disabled = false;
    }
  });
  replace(
    main,
    title(ins, "Historique des accès", "Historique des accès"),
    h(
      "p",
      {},
      "Chaque consultation, ajout ou modification de votre dossier est inscrit dans un journal que personne ne peut modifier sans que cela se voie. ",
      "Le bouton « Vérifier » contrôle, dans votre navigateur, que chaque ligne figure bien dans ce journal signé.",
    ),
    h("div", { class: "actions" }, button),
    result,
    entries.length
      ? h(
          "table",
          { class: "log" },
          h("caption", {}, `${entries.length} accès, du plus récent au plus ancien. Les accès en urgence sont signalés.`),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Date"), h("th", { scope: "col" }, "Qui"), h("th", { scope: "col" }, "Quoi"), h("th", { scope: "col" }, "Preuve"))),
          h("tbody", {}, rows),
        )
      : h("p", {}, "Aucun accès pour l'instant."),
  );
}

// ------------------------------------------------------------------ medical profile

const LISTS = [
  ["allergies", "Allergies"],
  ["chronic_conditions", "Maladies chroniques"],
  ["ongoing_treatments", "Traitements en cours"],
  ["history", "Antécédents"],
];
const lines = (text) => String(text).split("\n").map((s) => s.trim()).filter(Boolean);

export async function profile(main, { ins }) {
  const [prof, contacts, written] = await Promise.all([
    api.get(`${base(ins)}/profile`),
    api.get(`${base(ins)}/emergency-contacts`),
    api.get(`${base(ins)}/advance-directives`),
  ]);
  const directives = written || { text: "", version: 0 }; // none written yet
  const profStatus = h("div", { class: "status" });
  const profForm = h(
    "form",
    { class: "card" },
    h("h2", {}, "Profil médical"),
    LISTS.map(([name, label]) =>
      field(label, h("textarea", { name, rows: 3 }, (prof[name] || []).join("\n")), "Une ligne par élément."),
    ),
    h("button", { type: "submit" }, "Enregistrer le profil"),
    profStatus,
  );
  onSubmit(profForm, profStatus, async (data) => {
    const body = { measurements: prof.measurements || [] };
    for (const [name] of LISTS) body[name] = lines(data.get(name));
    await api.put(`${base(ins)}/profile`, body);
    profStatus.replaceChildren(notice("Profil enregistré."));
  });

  const contactStatus = h("div", { class: "status" });
  const rows = [...contacts.contacts, { name: "", relationship: "", phone: "", email: "" }];
  const contactForm = h(
    "form",
    { class: "card" },
    h("h2", {}, "Personnes à prévenir"),
    rows.map((c, i) =>
      h(
        "fieldset",
        { class: "contact" },
        h("legend", {}, c.name ? c.name : "Ajouter une personne"),
        field("Nom", h("input", { name: `name-${i}`, value: c.name, maxlength: 100 })),
        field("Lien", h("input", { name: `relationship-${i}`, value: c.relationship, maxlength: 50 })),
        field("Téléphone", h("input", { name: `phone-${i}`, value: c.phone, type: "tel", maxlength: 32 })),
        field("E-mail", h("input", { name: `email-${i}`, value: c.email, type: "email", maxlength: 254 })),
      ),
    ),
    h("p", { class: "hint" }, "Pour retirer une personne, effacez son nom."),
    h("button", { type: "submit" }, "Enregistrer les contacts"),
    contactStatus,
  );
  onSubmit(contactForm, contactStatus, async (data) => {
    const list = rows
      .map((_, i) => ({
        name: String(data.get(`name-${i}`)).trim(),
        relationship: String(data.get(`relationship-${i}`)).trim(),
        phone: String(data.get(`phone-${i}`)).trim(),
        email: String(data.get(`email-${i}`)).trim(),
      }))
      .filter((c) => c.name);
    await api.put(`${base(ins)}/emergency-contacts`, { contacts: list });
    go(`/dossier/${ins}/profil`);
  });

  const dirStatus = h("div", { class: "status" });
  const dirForm = h(
    "form",
    { class: "card" },
    h("h2", {}, "Directives anticipées"),
    h("p", {}, "Vos volontés sur les soins en fin de vie, si un jour vous ne pouvez plus les exprimer. Vous pouvez les modifier à tout moment."),
    field("Mes directives", h("textarea", { name: "text", rows: 6, maxlength: 20000 }, directives.text || "")),
    directives.version ? h("p", { class: "hint" }, `Version ${directives.version}, du ${dateTime(directives.updated_at)}.`) : "",
    h("button", { type: "submit" }, "Enregistrer mes directives"),
    dirStatus,
  );
  onSubmit(dirForm, dirStatus, async (data) => {
    const saved = await api.put(`${base(ins)}/advance-directives`, { text: String(data.get("text")) });
    dirStatus.replaceChildren(notice(`Directives enregistrées (version ${saved.version}).`));
  });

  replace(main, title(ins, "Mon profil médical", "Profil médical"), profForm, contactForm, dirForm);
}

// ------------------------------------------------------------------ notifications

const KINDS = {
  document_added: "Nouveau document dans mon dossier",
  access_first: "Premier accès d'un professionnel",
  emergency_access: "Accès en urgence",
  reminder: "Rappels",
  login: "Connexion à mon compte",
  message_received: "Nouveau message dans ma messagerie",
  representation_ending: "Fin prochaine d'une représentation légale (majorité)",
  representation_ended: "Fin d'une représentation légale (majorité)",
  trusted_invitation: "Invitation à devenir personne de confiance",
  prevention_reminder: "Rappels de prévention (vaccins, examens, dépistages)",
};

export async function notifications(main) {
  const [inbox, prefs] = await Promise.all([
    api.get("/v1/me/notifications"),
    api.get("/v1/me/notification-preferences"),
  ]);
  const list = inbox.items.length
    ? h(
        "ul",
        { class: "inbox" },
        inbox.items.map((n) =>
          h(
            "li",
            { class: n.read ? "read" : "unread" },
            h("p", { class: "title" }, n.title, n.read ? "" : h("span", { class: "badge" }, "Nouveau")),
            h("p", {}, n.body),
            h("p", { class: "meta" }, dateTime(n.created_at)),
            n.read
              ? ""
              : h(
                  "button",
                  {
                    type: "button",
                    class: "link",
                    onclick: async () => {
                      await api.patch(`/v1/me/notifications/${api.q(n.id)}`, { read: true });
                      go("/notifications");
                    },
                  },
                  "Marquer comme lue",
                ),
          ),
        ),
      )
    : h("p", {}, "Aucune notification.");
  const status = h("div", { class: "status" });
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Comment être prévenu"),
    h(
      "table",
      { class: "prefs" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Événement"), h("th", { scope: "col" }, "E-mail"), h("th", { scope: "col" }, "SMS"))),
      h(
        "tbody",
        {},
        Object.entries(KINDS).map(([kind, label]) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, label),
            ["email", "sms"].map((channel) =>
              h(
                "td",
                {},
                h("input", {
                  type: "checkbox",
                  name: `${kind}:${channel}`,
                  checked: (prefs.preferences[kind] || []).includes(channel),
                  "aria-label": `${label} par ${channel === "sms" ? "SMS" : "e-mail"}`,
                }),
              ),
            ),
          ),
        ),
      ),
    ),
    h("button", { type: "submit" }, "Enregistrer"),
    status,
  );
  onSubmit(form, status, async (data) => {
    const preferences = {};
    for (const kind of Object.keys(KINDS)) {
      preferences[kind] = ["email", "sms"].filter((c) => data.get(`${kind}:${c}`) === "on");
    }
    await api.put("/v1/me/notification-preferences", { preferences });
    status.replaceChildren(notice("Préférences enregistrées."));
  });
  replace(main, h("h1", {}, "Notifications"), list, form);
}

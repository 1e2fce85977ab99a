// « Mon agenda » and « Prévention »: the patient's appointments (shared with the professionals they
// choose, proposals from professionals to accept or decline, an iCalendar export), and the
// prevention reminders computed from their age and sex. Times are read and typed in Paris time,
// whatever the device's time zone. A professional sees the appointments shared with them and
// proposes one.

import * as api from "./api.js";
import { checkbox, confirmation, field, h, notice, replace } from "./dom.js";
import { actingFor, failure, fullName, onSubmit, state } from "./shell.js";

const ZONE = "Europe/Paris";
const base = (ins) => `/v1/dossiers/${api.q(ins)}`;
const DAY_FORMAT = new Intl.DateTimeFormat("fr-FR", { timeZone: ZONE, weekday: "long", day: "numeric", month: "long", year: "numeric" });
const TIME_FORMAT = new Intl.DateTimeFormat("fr-FR", { timeZone: ZONE, hour: "2-digit", minute: "2-digit" });
const PARTS = new Intl.DateTimeFormat("en-GB", {
  timeZone: ZONE,
  hourCycle: "h23",
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
});
// A reminder's dates are calendar days (YYYY-MM-DD), read as such: no time zone moves them.
const CALENDAR_DAY = new Intl.DateTimeFormat("fr-FR", { timeZone: "UTC", day: "numeric", month: "long", year: "numeric" });

const STATUSES = {
  confirmed: "Confirmé",
  proposed: "Proposé, en attente de réponse",
  declined: "Refusé",
  cancelled: "Annulé",
};
const CATEGORIES = {
  vaccination: "Vaccination",
  examen_enfant: "Examen de l'enfant",
  dentaire: "Examen bucco-dentaire",
  depistage: "Dépistage",
};

// ------------------------------------------------------------------ Paris time

// The wall-clock fields of an instant in Paris.
function parisParts(instant) {
  const out = {};
  for (const p of PARTS.formatToParts(instant)) out[p.type] = p.value;
  return out;
}

// "YYYY-MM-DD" and "HH:MM" of an ISO instant, in Paris (for the form's fields).
function parisFields(iso) {
  const p = parisParts(new Date(iso));
  return { day: `${p.year}-${p.month}-${p.day}`, time: `${p.hour}:${p.minute}` };
}

// The instant (ISO, UTC) of a Paris wall-clock day and time; null when either is not given.
export function parisInstant(day, time) {
  const d = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day || "");
  const t = /^(\d{2}):(\d{2})$/.exec(time || "");
  if (!d || !t) return null;
  const wall = Date.UTC(+d[1], +d[2] - 1, +d[3], +t[1], +t[2]);
  // Paris's offset at that moment (twice: the first guess may sit across a change of hour).
  let instant = wall;
  for (let i = 0; i < 2; i++) {
    const p = parisParts(new Date(instant));
    const shown = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
    instant = wall - (shown - instant);
  }
  return new Date(instant).toISOString();
}

function todayInParis() {
  return parisFields(new Date().toISOString()).day;
}

function addDays(day, days) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

// « mardi 8 décembre 2026, 09:30 – 10:00 » (the end's day too when it is another day).
export function when(a) {
  const start = new Date(a.starts_at);
  const end = new Date(a.ends_at);
  const sameDay = DAY_FORMAT.format(start) === DAY_FORMAT.format(end);
  const first = `${DAY_FORMAT.format(start)}, ${TIME_FORMAT.format(start)}`;
  return sameDay
    ? `${first} – ${TIME_FORMAT.format(end)}`
    : `${first} – ${DAY_FORMAT.format(end)}, ${TIME_FORMAT.format(end)}`;
}

const calendarDay = (day) => CALENDAR_DAY.format(new Date(`${day}T00:00:00Z`));
const capitalised = (text) => text.charAt(0).toUpperCase() + text.slice(1);

// ------------------------------------------------------------------ shared pieces

// Who is looking: the patient, someone acting for them (and whether they may change things), or
// a professional.
function viewer(ins) {
  const me = state.me;
  if (me.kind === "patient") {
    const other = actingFor(ins);
    return { patientSide: true, own: me.ins === ins, other, writes: !other || other.scope === "manage" };
  }
  return { patientSide: false, own: false, other: null, writes: me.kind === "professional", rpps: me.rpps };
}

function pageTitle(ins, who, own, theirs) {
  if (who.own) return h("h1", {}, own);
  if (who.other) return h("h1", {}, `${theirs} — ${fullName(who.other)}`);
  return h("h1", {}, `${theirs} — patient ${ins}`);
}

// The two pages of the patient side, reached from each other.
function tabs(ins, here) {
  const pages = [
    ["agenda", "Rendez-vous"],
    ["prevention", "Prévention"],
  ];
  return h(
    "nav",
    { class: "tabs", "aria-label": "Agenda" },
    h(
      "ul",
      {},
      pages.map(([page, label]) =>
        h("li", {}, h("a", { href: `#/dossier/${ins}/${page}`, "aria-current": page === here ? "page" : null }, label)),
      ),
    ),
  );
}

// A success said at the top of the page just shown.
function said(text) {
  document.querySelector("#contenu .outcome")?.replaceChildren(notice(text, "success"));
}

// ------------------------------------------------------------------ appointments

// The form of an appointment: to add one (empty), to move one (filled), to propose one (a
// professional: no sharing to choose, it is shared with them).
function appointmentForm({ ins, team, who, current, onDone, onCancel }) {
  const status = h("div", { class: "status" });
  const start = current ? parisFields(current.starts_at) : null;
  const end = current ? parisFields(current.ends_at) : null;
  const shared = new Set(current?.shared_with || []);
  // The care team, and whoever the appointment is shared with already (a professional no longer
  // authorised stays checked until unchecked).
  const choices = [...team, ...[...shared].filter((r) => !team.some((m) => m.rpps === r)).map((rpps) => ({ rpps }))];
  const legend = current ? "Modifier le rendez-vous" : who.patientSide ? "Ajouter un rendez-vous" : "Proposer un rendez-vous";
  const sharing =
    who.patientSide && choices.length
      ? h(
          "fieldset",
          { class: "share" },
          h("legend", {}, "Partager avec"),
          h("p", { class: "hint" }, "Les professionnels cochés verront ce rendez-vous (et lui seul, pas votre dossier)."),
          choices.map((m) =>
            checkbox(`RPPS ${m.rpps}${m.attending_physician ? " (médecin traitant)" : ""}`, shared.has(m.rpps), null, {
              name: "shared_with",
              value: m.rpps,
            }),
          ),
        )
      : who.patientSide
        ? h("p", { class: "hint" }, "Pour partager un rendez-vous avec un professionnel, autorisez-le d'abord dans « Qui peut voir mon dossier ».")
        : "";
  const form = h(
    "form",
    { class: current ? "edit" : "card" },
    h("h2", {}, legend),
    field("Objet", h("input", { name: "title", required: true, maxlength: 200, value: current?.title || "" }), "Par exemple : consultation de cardiologie."),
    h(
      "div",
      { class: "when" },
      field("Date", h("input", { name: "day", type: "date", required: true, value: start?.day || "" })),
      field("Heure de début", h("input", { name: "start", type: "time", required: true, value: start?.time || "" })),
      field("Heure de fin", h("input", { name: "end", type: "time", required: true, value: end?.time || "" })),
    ),
    field("Lieu (facultatif)", h("input", { name: "location", maxlength: 200, value: current?.location || "" })),
    field("Remarque (facultative)", h("textarea", { name: "notes", rows: 2, maxlength: 2000 }, current?.notes || "")),
    sharing,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit" }, current ? "Enregistrer les modifications" : who.patientSide ? "Ajouter le rendez-vous" : "Proposer le rendez-vous"),
      onCancel ? h("button", { type: "button", class: "secondary", onclick: onCancel }, "Annuler") : "",
    ),
    status,
  );
  onSubmit(form, status, async (data) => {
    const day = String(data.get("day") || "");
    const startsAt = parisInstant(day, String(data.get("start") || ""));
    const endsAt = parisInstant(day, String(data.get("end") || ""));
    if (!String(data.get("title") || "").trim()) throw new Error("Indiquez l'objet du rendez-vous.");
    if (!startsAt || !endsAt) throw new Error("Indiquez la date, l'heure de début et l'heure de fin.");
    if (endsAt <= startsAt) throw new Error("L'heure de fin doit venir après l'heure de début.");
    const body = {
      title: String(data.get("title")).trim(),
      starts_at: startsAt,
      ends_at: endsAt,
      location: String(data.get("location") || "").trim(),
      notes: String(data.get("notes") || "").trim(),
    };
    if (who.patientSide) body.shared_with = data.getAll("shared_with").map(String);
    if (current) {
      await api.patch(`${base(ins)}/appointments/${api.q(current.id)}`, body);
    } else {
      if (!body.location) delete body.location;
      if (!body.notes) delete body.notes;
      await api.post(`${base(ins)}/appointments`, body);
    }
    await onDone(current ? `Rendez-vous modifié : ${body.title}.` : who.patientSide ? `Rendez-vous ajouté : ${body.title}.` : `Rendez-vous proposé au patient : ${body.title}.`);
  });
  return form;
}

function proposer(a, who) {
  if (a.proposed_by === "patient") return "";
  return a.proposed_by === who.rpps ? "Proposé par vous" : `Proposé par le professionnel RPPS ${a.proposed_by}`;
}

// One appointment, with what the viewer may do with it.
function appointmentItem(a, { ins, team, who, reload, status }) {
  const act = (path, done) => async () => {
    status.replaceChildren();
    try {
      await api.post(`${base(ins)}/appointments/${api.q(a.id)}/${path}`);
      await reload(done);
    } catch (error) {
      status.replaceChildren(failure(error));
    }
  };
  const item = h("li", { class: `appointment ${a.status}` });
  const open = a.status === "confirmed" || a.status === "proposed";
  const controls = h("div", { class: "controls" });
  let group = "";
  if (open && who.patientSide && who.writes) {
    if (a.status === "proposed") {
      controls.append(
        h("button", { type: "button", class: "small", "aria-label": `Accepter : ${a.title}`, onclick: act("accept", `Rendez-vous accepté : ${a.title}.`) }, "Accepter"),
        h("button", { type: "button", class: "secondary small", "aria-label": `Refuser : ${a.title}`, onclick: act("decline", `Proposition refusée : ${a.title}.`) }, "Refuser"),
      );
    } else {
      const edit = h("button", { type: "button", class: "secondary small", "aria-label": `Modifier : ${a.title}` }, "Modifier");
      edit.addEventListener("click", () => {
        const form = appointmentForm({
          ins,
          team,
          who,
          current: a,
          onDone: reload,
          onCancel: () => form.replaceWith(controls),
        });
        controls.replaceWith(form);
        form.querySelector("input").focus();
      });
      controls.append(edit);
    }
  }
  // The patient side cancels what is confirmed (a proposal, it declines); the professional who
  // proposed one withdraws it, or cancels it once accepted.
  const mayCancel =
    open && ((a.status === "confirmed" && who.patientSide && who.writes) || (!who.patientSide && a.proposed_by === who.rpps));
  if (mayCancel) {
    const [ask, question] = confirmation({
      ask: a.status === "proposed" ? "Retirer ma proposition" : "Annuler le rendez-vous",
      question: `Annuler « ${a.title} » du ${when(a)} ? ${a.shared_with.length ? "Les professionnels avec qui il est partagé le verront annulé." : ""}`,
      confirm: "Confirmer l'annulation",
      small: true,
      action: act("cancel", `Rendez-vous annulé : ${a.title}.`),
    });
    controls.append(ask);
    group = question;
  }
  item.append(
    h(
      "div",
      { class: "what" },
      h("p", { class: "title" }, h("span", {}, a.title), h("span", { class: `badge ${a.status}` }, STATUSES[a.status] || a.status)),
      h("p", { class: "when" }, capitalised(when(a))),
      a.location ? h("p", { class: "meta" }, `Lieu : ${a.location}`) : "",
      a.notes ? h("p", { class: "meta" }, `Remarque : ${a.notes}`) : "",
      proposer(a, who) ? h("p", { class: "meta" }, proposer(a, who)) : "",
      who.patientSide && a.shared_with.length
        ? h("p", { class: "meta" }, `Partagé avec : ${a.shared_with.map((r) => `RPPS ${r}`).join(", ")}`)
        : who.patientSide
          ? h("p", { class: "meta" }, "Partagé avec personne")
          : "",
    ),
    controls,
    group,
  );
  return item;
}

// The agenda as an .ics file, fetched with the session's token and saved by the browser.
async function exportCalendar(ins) {
  const response = await api.call("GET", `${base(ins)}/agenda.ics`, undefined, { raw: true });
  const blob = new Blob([await response.arrayBuffer()], { type: "text/calendar" });
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: "agenda.ics", hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

async function careTeam(ins, who) {
  if (!who.patientSide) return [];
  try {
    return (await api.get(`${base(ins)}/professionals`)).authorized;
  } catch (error) {
    if (error instanceof api.Problem && error.status === 401) throw error;
    return [];
  }
}

export async function agenda(main, { ins }) {
  const who = viewer(ins);
  const since = new Date(Date.now() - 365 * 86_400_000).toISOString();
  const [{ items }, team] = await Promise.all([
    api.get(`${base(ins)}/appointments?from=${api.q(since)}`),
    careTeam(ins, who),
  ]);
  const reload = async (text) => {
    await agenda(main, { ins });
    if (text) said(text);
  };
  const status = h("div", { class: "status", "aria-live": "polite" });
  const context = { ins, team, who, reload, status };
  const now = Date.now();
  const live = (a) => Date.parse(a.ends_at) > now && (a.status === "confirmed" || a.status === "proposed");
  const proposals = items.filter((a) => live(a) && a.status === "proposed");
  const upcoming = items.filter((a) => live(a) && (a.status === "confirmed" || !who.patientSide));
  // The past, newest first, with what was cancelled or declined.
  const past = items.filter((a) => !live(a)).reverse();
  const list = (shown) => h("ul", { class: "appointments" }, shown.map((a) => appointmentItem(a, context)));
  const exportStatus = h("div", { class: "status" });
  const exportButton = h("button", { type: "button", class: "secondary" }, "Exporter (.ics)");
  exportButton.addEventListener("click", async () => {
    exportStatus.replaceChildren();
    try {
      await exportCalendar(ins);
    } catch (error) {
      exportStatus.replaceChildren(failure(error));
    }
  });
  const parts = [pageTitle(ins, who, "Mon agenda", who.patientSide ? "Son agenda" : "Rendez-vous partagés")];
  if (who.patientSide) {
    parts.push(
      tabs(ins, "agenda"),
      h(
        "p",
        { class: "lead" },
        "Vos rendez-vous médicaux, partagés avec les professionnels de santé que vous choisissez. Les heures sont celles de Paris.",
      ),
    );
  } else {
    parts.push(
      h("p", { class: "crumbs" }, h("a", { href: `#/dossier/${ins}` }, "Dossier"), " › Rendez-vous partagés"),
      h(
        "p",
        { class: "lead" },
        "Les rendez-vous que le patient partage avec vous, et ceux que vous lui proposez : il les accepte ou les refuse. Les heures sont celles de Paris.",
      ),
    );
  }
  parts.push(h("div", { class: "outcome", "aria-live": "polite" }), status);
  if (who.patientSide && proposals.length) {
    parts.push(
      h(
        "section",
        { class: "card proposals", "aria-labelledby": "propositions" },
        h("h2", { id: "propositions" }, `Propositions de rendez-vous (${proposals.length})`),
        h("p", { class: "hint" }, "Un professionnel de santé vous propose ces rendez-vous : acceptez-les pour les ajouter à votre agenda."),
        list(proposals),
      ),
    );
  }
  parts.push(
    h(
      "section",
      { class: "card", "aria-labelledby": "a-venir" },
      h("h2", { id: "a-venir" }, "Rendez-vous à venir"),
      upcoming.length ? list(upcoming) : h("p", {}, "Aucun rendez-vous à venir."),
      who.patientSide ? h("div", { class: "actions" }, exportButton) : "",
      exportStatus,
    ),
  );
  if (who.writes) {
    parts.push(appointmentForm({ ins, team, who, onDone: reload }));
  }
  if (past.length) {
    parts.push(
      h(
        "details",
        { class: "card past" },
        h("summary", {}, `Rendez-vous passés, annulés ou refusés (${past.length})`),
        list(past),
      ),
    );
  }
  replace(main, ...parts);
}

// ------------------------------------------------------------------ prevention reminders

const GROUPS = [
  ["due", "À faire maintenant", (r) => r.status === "due"],
  ["upcoming", "À venir", (r) => r.status === "upcoming" || r.status === "postponed"],
  ["done", "Faits", (r) => r.status === "done"],
];

function windowOf(r) {
  if (r.due_from === r.due_until) return `Le ${calendarDay(r.due_from)}`;
  return `Du ${calendarDay(r.due_from)} au ${calendarDay(r.due_until)}`;
}

// The documents a reminder may be linked to: the prevention section's (vaccination notes) and
// the patient's own space (a scanned certificate). Read when first asked (each read is traced in
// the patient's history), once per page.
function linkable(ins) {
  let found = null;
  return async () => {
    found ??= (async () => {
      const documents = [];
      for (const section of ["prevention", "espace_personnel"]) {
        const page = await api.get(`${base(ins)}/documents?section=${section}&page_size=100`);
        documents.push(...page.items);
      }
      return documents;
    })().catch((error) => {
      found = null; // asked again next time
      throw error;
    });
    return found;
  };
}

function reminderItem(r, { ins, who, documents, reload, status }) {
  const act = async (path, body, done) => {
    status.replaceChildren();
    await api.post(`${base(ins)}/reminders/${api.q(r.id)}/${path}`, body);
    await reload(done);
  };
  const item = h("li", { class: `reminder ${r.status}` });
  const controls = h("div", { class: "controls" });
  const forms = h("div", { class: "reminder-forms" });
  if (who.writes && r.status !== "done") {
    // A small form in place of the buttons: its field, its confirmation, and « Annuler ».
    const inline = (label, control, submit, action) => {
      const formStatus = h("div", { class: "status" });
      const form = h(
        "form",
        { class: "inline", hidden: true, "aria-label": label },
        control,
        h(
          "div",
          { class: "actions" },
          h("button", { type: "submit", class: "small" }, submit),
          h("button", { type: "button", class: "secondary small", onclick: () => { form.hidden = true; controls.hidden = false; } }, "Annuler"),
        ),
        formStatus,
      );
      onSubmit(form, formStatus, action);
      return form;
    };
    // « C'est fait », with a document of the dossier if the patient wants.
    const choice = h("select", { name: "document_id" }, h("option", { value: "" }, "Aucun document"));
    const doneForm = inline(
      `Marquer comme fait : ${r.act}`,
      field(
        "Document justificatif (facultatif)",
        choice,
        "Un document de votre dossier (rubrique Prévention ou espace personnel), par exemple une note de vaccination.",
      ),
      "Confirmer",
      async (data) => {
        const documentId = String(data.get("document_id") || "");
        await act("done", documentId ? { document_id: documentId } : {}, `C'est noté : ${r.act}, fait.`);
      },
    );
    // « Reporter », to a date (tomorrow at the earliest, a year at most).
    const today = todayInParis();
    const laterForm = inline(
      `Reporter : ${r.act}`,
      field(
        "Me le rappeler le",
        h("input", { name: "until", type: "date", required: true, min: addDays(today, 1), max: addDays(today, 365), value: addDays(today, 30) }),
        "Une date dans l'année qui vient.",
      ),
      "Confirmer le report",
      async (data) => {
        const until = String(data.get("until") || "");
        if (!until) throw new Error("Choisissez la date du rappel.");
        await act("postpone", { until }, `Rappel reporté au ${calendarDay(until)} : ${r.act}.`);
      },
    );
    const reveal = (form) => () => {
      controls.hidden = true;
      form.hidden = false;
      form.querySelector("select, input").focus();
    };
    const revealDone = async () => {
      status.replaceChildren();
      try {
        if (choice.options.length === 1) {
          for (const d of await documents()) choice.append(h("option", { value: d.id }, d.title));
        }
      } catch (error) {
        status.replaceChildren(failure(error));
        return;
      }
      reveal(doneForm)();
    };
    controls.append(
      h("button", { type: "button", class: "small", "aria-label": `C'est fait : ${r.act}`, onclick: revealDone }, "C'est fait"),
      h("button", { type: "button", class: "secondary small", "aria-label": `Reporter : ${r.act}`, onclick: reveal(laterForm) }, "Reporter"),
    );
    forms.append(doneForm, laterForm);
  }
  item.append(
    h(
      "div",
      { class: "what" },
      h("p", { class: "title" }, h("span", {}, r.act), h("span", { class: "badge" }, CATEGORIES[r.category] || r.category)),
      h("p", { class: "meta" }, windowOf(r)),
      r.status === "postponed" && r.postponed_until ? h("p", { class: "meta" }, `Reporté au ${calendarDay(r.postponed_until)}`) : "",
      r.document_id
        ? h("p", { class: "meta" }, h("a", { href: `#/dossier/${ins}/document/${r.document_id}` }, "Voir le justificatif"))
        : "",
      h("details", { class: "why" }, h("summary", {}, "Pourquoi ?"), h("p", {}, r.reason), h("p", { class: "meta" }, `Source : ${r.source}`)),
    ),
    controls,
    forms,
  );
  return item;
}

function optOut(ins, who, messages, reload) {
  const status = h("div", { class: "status" });
  const box = checkbox(
    "Ne plus recevoir de rappels de prévention",
    !messages,
    "Plus aucun message (e-mail, SMS ou notification) ne vous sera envoyé pour ces rappels. Ils restent visibles ici, et vous pouvez changer d'avis à tout moment.",
    { name: "opt_out", role: "switch", disabled: !who.writes },
  );
  box.querySelector("input").addEventListener("change", async (event) => {
    const off = event.target.checked;
    status.replaceChildren();
    try {
      await api.put(`${base(ins)}/prevention`, { messages: !off });
      await reload(off ? "Vous ne recevrez plus de rappels de prévention. Ils restent visibles sur cette page." : "Vous recevrez de nouveau les rappels de prévention.");
    } catch (error) {
      event.target.checked = !off;
      status.replaceChildren(failure(error));
    }
  });
  return h("section", { class: "card", "aria-labelledby": "messages-prevention" }, h("h2", { id: "messages-prevention" }, "Messages de prévention"), box, status);
}

export async function prevention(main, { ins }) {
  const who = viewer(ins);
  const listing = await api.get(`${base(ins)}/reminders`);
  const documents = linkable(ins);
  const reload = async (text) => {
    await prevention(main, { ins });
    if (text) said(text);
  };
  const status = h("div", { class: "status", "aria-live": "polite" });
  const context = { ins, who, documents, reload, status };
  const groups = GROUPS.map(([key, label, test]) => {
    const shown = listing.items.filter(test);
    return h(
      "section",
      { class: `card reminders ${key}`, "aria-labelledby": `rappels-${key}` },
      h("h2", { id: `rappels-${key}` }, `${label} (${shown.length})`),
      shown.length ? h("ul", { class: "reminders" }, shown.map((r) => reminderItem(r, context))) : h("p", {}, "Aucun rappel."),
    );
  });
  replace(
    main,
    pageTitle(ins, who, "Prévention", "Prévention"),
    tabs(ins, "prevention"),
    h(
      "p",
      { class: "lead" },
      "Les vaccinations, examens et dépistages recommandés pour votre âge, d'après les calendriers officiels (ministère chargé de la santé, HAS, Assurance Maladie). Chaque rappel dit pourquoi il vous est proposé.",
    ),
    h("div", { class: "outcome", "aria-live": "polite" }),
    status,
    groups,
    optOut(ins, who, listing.prevention_messages, reload),
    h("p", { class: "hint" }, `Règles de prévention : version ${listing.rules_version}.`),
  );
}

// "Que voit un professionnel ?": the patient previews what one professional, or any professional
// of a profession, would see of their dossier today, and why each other document stays hidden.

import * as api from "./api.js";
import { date, field, h, notice, replace } from "./dom.js";
import { catalogue, failure, go, onSubmit, PROFESSIONS } from "./shell.js";

const base = (ins) => `/v1/dossiers/${api.q(ins)}`;

const RELATIONS = {
  attending_physician: "Votre médecin traitant",
  authorized: "Autorisé par vous",
  blocked: "Bloqué par vous",
  none: "Ni autorisé ni bloqué par vous",
};

// Every page of the preview, as one.
async function wholePreview(ins, by, value) {
  const out = { visible: [], hidden: [] };
  let cursor = "";
  do {
    const page = await api.get(
      `${base(ins)}/preview?${by}=${api.q(value)}&page_size=200${cursor ? `&cursor=${api.q(cursor)}` : ""}`,
    );
    out.viewer ??= page.viewer;
    out.pending ??= page.pending;
    out.visible.push(...page.visible);
    out.hidden.push(...page.hidden);
    cursor = page.next || "";
  } while (cursor);
  return out;
}

function viewerName(v) {
  const name = [v.given_name, v.family_name].filter(Boolean).join(" ");
  if (!v.rpps) return `Un professionnel « ${v.profession_label} » que vous n'avez pas autorisé`;
  return `${name || "Professionnel"}, ${v.profession_label} (RPPS ${v.rpps})`;
}

function result(ins, seen, sections) {
  const v = seen.viewer;
  const doc = (d, hidden) =>
    h(
      "li",
      { class: hidden ? "not-seen" : "seen" },
      h("a", { href: `#/dossier/${ins}/document/${d.document_id ?? d.id}` }, d.title),
      h("p", { class: "meta" }, `${sections[d.section] || d.section} · ${date(d.created_at)}`),
      h("p", { class: "reason" }, hidden ? "Pourquoi : " : "", d.explanation),
    );
  const pending = seen.pending && seen.pending.visible + seen.pending.hidden;
  return h(
    "section",
    { class: "preview", "aria-labelledby": "apercu-titre" },
    h("h2", { id: "apercu-titre" }, viewerName(v)),
    h("p", { class: "meta" }, RELATIONS[v.relation] || ""),
    notice(
      v.access.allowed
        ? `Peut ouvrir votre dossier : ${v.access.explanation}`
        : `Ne peut pas ouvrir votre dossier : ${v.access.explanation}`,
      v.access.allowed ? "success" : "warning",
    ),
    h("h3", {}, `Documents qu'il verrait (${seen.visible.length})`),
    seen.visible.length ? h("ul", { class: "documents" }, seen.visible.map((d) => doc(d, false))) : h("p", {}, "Aucun."),
    h("h3", {}, `Documents qu'il ne verrait pas (${seen.hidden.length})`),
    seen.hidden.length ? h("ul", { class: "documents" }, seen.hidden.map((d) => doc(d, true))) : h("p", {}, "Aucun."),
    pending
      ? notice(
          `${pending} document${pending > 1 ? "s" : ""} vous ${pending > 1 ? "seront annoncés" : "sera annoncé"} lors d'une consultation : ce professionnel en verrait ${seen.pending.visible}.`,
          "pending",
        )
      : "",
  );
}

export async function view(main, { ins, by, value }) {
  const [team, cat] = await Promise.all([api.get(`${base(ins)}/professionals`), catalogue()]);
  const members = [...team.authorized, ...team.blocked];

  const rppsStatus = h("div", { class: "status" });
  const rppsForm = h(
    "form",
    { class: "card" },
    h("h2", {}, "Un professionnel précis"),
    members.length
      ? h(
          "ul",
          { class: "team" },
          members.map((m) =>
            h(
              "li",
              {},
              h(
                "span",
                {},
                `RPPS ${m.rpps}`,
                m.attending_physician ? " — médecin traitant" : m.status === "blocked" ? " — bloqué" : "",
              ),
              h("a", { href: `#/dossier/${ins}/apercu/rpps/${m.rpps}` }, `Voir ce que voit RPPS ${m.rpps}`),
            ),
          ),
        )
      : "",
    field(
      "Numéro RPPS du professionnel",
      h("input", { name: "rpps", required: true, inputmode: "numeric", maxlength: 11, value: by === "rpps" ? value : "" }),
    ),
    h("button", { type: "submit" }, "Voir ce qu'il voit"),
    rppsStatus,
  );
  onSubmit(rppsForm, rppsStatus, async (data) => go(`/dossier/${ins}/apercu/rpps/${api.q(String(data.get("rpps")).trim())}`));

  const professionForm = h(
    "form",
    { class: "card" },
    h("h2", {}, "N'importe quel professionnel d'une profession"),
    h("p", { class: "hint" }, "Un professionnel que vous n'avez ni autorisé ni bloqué : un infirmier à domicile, un pharmacien…"),
    field(
      "Profession",
      h(
        "select",
        { name: "profession" },
        Object.entries(PROFESSIONS).map(([code, label]) =>
          h("option", { value: code, selected: by === "profession" && value === code }, label),
        ),
      ),
    ),
    h("button", { type: "submit" }, "Voir ce que verrait cette profession"),
  );
  onSubmit(professionForm, h("div"), async (data) => go(`/dossier/${ins}/apercu/profession/${api.q(data.get("profession"))}`));

  const outcome = h("div", { class: "outcome" });
  if (by === "rpps" || by === "profession") {
    try {
      outcome.append(result(ins, await wholePreview(ins, by, value), cat.sections));
    } catch (error) {
      if (!(error instanceof api.Problem) || error.status === 401) throw error;
      const form = by === "rpps" ? rppsForm : professionForm;
      const status = by === "rpps" ? rppsStatus : outcome;
      status.append(failure(error));
      if (by === "rpps") form.elements.rpps.setAttribute("aria-invalid", "true");
    }
  }

  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: `#/dossier/${ins}/acces` }, "Qui peut voir mon dossier")),
    h("h1", {}, "Que voit un professionnel ?"),
    h(
      "p",
      { class: "lead" },
      "Vérifiez ce qu'un professionnel verrait de votre dossier aujourd'hui, et pourquoi les autres documents lui restent cachés. ",
      "Cette vérification ne lui donne aucun accès et n'est pas enregistrée comme une consultation de sa part.",
    ),
    outcome,
    h("div", { class: "preview-choices" }, rppsForm, professionForm),
  );
}

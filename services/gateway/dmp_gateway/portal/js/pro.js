// A professional's pages: finding a patient, emergency access and its banner.

import * as api from "./api.js";
import { dateTime, field, h, notice, replace } from "./dom.js";
import { go, onSubmit, state } from "./shell.js";

const GRANTS = "dmp.grants";

function grants() {
  try {
    return JSON.parse(sessionStorage.getItem(GRANTS)) || {};
  } catch {
    return {};
  }
}

function liveGrants() {
  const now = Date.now();
  return Object.entries(grants()).filter(([, g]) => Date.parse(g.expires_at) > now);
}

// While an emergency access lasts, every page says so.
export function banner(el) {
  const live = state.me && state.me.kind === "professional" ? liveGrants() : [];
  replace(
    el,
    live.map(([ins, g]) =>
      h(
        "p",
        { class: "emergency-banner", role: "alert" },
        h("strong", {}, g.mode === "regulator" ? "Accès de régulation actif" : "Accès en urgence actif"),
        ` — dossier ${ins}, jusqu'au ${dateTime(g.expires_at)}. Chaque consultation est tracée avec votre motif et le patient en est informé. `,
        h("a", { href: `#/dossier/${ins}` }, "Ouvrir le dossier"),
      ),
    ),
  );
}

export async function search(main) {
  const status = h("div", { class: "status" });
  const form = h(
    "form",
    { class: "card narrow", role: "search" },
    field(
      "Numéro INS du patient",
      h("input", { name: "ins", required: true, inputmode: "numeric", maxlength: 15, pattern: "[0-9]{15}" }),
      "15 chiffres : le NIR du patient et sa clé, lus sur sa carte Vitale.",
    ),
    h("button", { type: "submit" }, "Rechercher"),
    status,
  );
  onSubmit(form, status, async (data) => {
    const ins = String(data.get("ins")).replace(/\s+/g, "");
    if (!/^[0-9]{15}$/.test(ins)) throw new Error("Un INS compte 15 chiffres.");
    go(`/dossier/${ins}`);
  });
  replace(main, h("h1", {}, "Rechercher un patient"), form);
}

export async function emergency(main, { ins }) {
  const regulator = (state.me.roles || []).includes("samu_regulator");
  const status = h("div", { class: "status" });
  const form = h(
    "form",
    { class: "card narrow" },
    field(
      "Motif de l'accès",
      h("textarea", { name: "reason", required: true, minlength: 10, maxlength: 500, rows: 3 }),
      "Obligatoire : décrivez la situation d'urgence (10 caractères au moins). Il est inscrit au journal et communiqué au patient.",
    ),
    regulator
      ? field(
          "Cadre",
          h(
            "select",
            { name: "mode" },
            h("option", { value: "break_glass" }, "Urgence vitale (bris de glace)"),
            h("option", { value: "regulator" }, "Régulation SAMU-Centre 15"),
          ),
        )
      : h("input", { type: "hidden", name: "mode", value: "break_glass" }),
    h("button", { type: "submit", class: "danger" }, "Accéder en urgence"),
    status,
  );
  onSubmit(form, status, async (data) => {
    const grant = await api.post(`/v1/dossiers/${api.q(ins)}/emergency-access`, {
      reason: String(data.get("reason")).trim(),
      mode: data.get("mode"),
    });
    sessionStorage.setItem(GRANTS, JSON.stringify({ ...grants(), [ins]: grant }));
    go(`/dossier/${ins}`);
  });
  replace(
    main,
    h("h1", {}, `Accès en urgence — patient ${ins}`),
    notice(
      "À n'utiliser que si l'état du patient présente un risque immédiat et qu'il ne peut pas donner son accord. " +
        "Le patient peut avoir refusé ce type d'accès : vous en serez alors informé.",
      "warning",
    ),
    form,
  );
}

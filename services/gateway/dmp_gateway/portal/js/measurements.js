// « Mes constantes »: the patient's health measurements, one chart per kind drawn here as SVG
// (no library), each with the table of its values beside it for who does not see the chart.
// The patient adds and deletes their own entries; the care team reads them.

import * as api from "./api.js";
import { dateTime, field, h, notice, replace } from "./dom.js";
import { failure, onSubmit, state } from "./shell.js";

// The API's kinds, in the order shown; `unit` is the API's (UCUM), `shown` the one people read.
const KINDS = [
  { kind: "weight", label: "Poids", unit: "kg", shown: "kg" },
  { kind: "height", label: "Taille", unit: "cm", shown: "cm" },
  { kind: "bmi", label: "Indice de masse corporelle (IMC)", unit: "kg/m2", shown: "kg/m²", computed: true },
  { kind: "blood_pressure", label: "Tension artérielle", unit: "mm[Hg]", shown: "mmHg" },
  { kind: "heart_rate", label: "Fréquence cardiaque", unit: "/min", shown: "battements/min" },
  { kind: "glycaemia", label: "Glycémie", unit: "g/L", shown: "g/L" },
  { kind: "waist", label: "Tour de taille", unit: "cm", shown: "cm" },
];
const GLYCAEMIA_UNITS = [
  ["g/L", "g/L"],
  ["mg/dL", "mg/dL"],
  ["mmol/L", "mmol/L"],
];
const NUMBER = new Intl.NumberFormat("fr-FR", { maximumFractionDigits: 2 });
const SHORT_DATE = new Intl.DateTimeFormat("fr-FR", { day: "numeric", month: "short", year: "2-digit" });
const SVG = "http://www.w3.org/2000/svg";
const SOURCES = {
  patient: "Le patient",
  professional: "Un professionnel de santé",
  device: "Un appareil ou une application",
};
// The chart's drawing box (the SVG scales to its container's width).
const WIDTH = 420;
const HEIGHT = 230;
const PAD = { left: 48, right: 14, top: 14, bottom: 34 };

const base = (ins) => `/v1/dossiers/${api.q(ins)}/measurements`;

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

function said(point, spec) {
  if (point.kind === "blood_pressure") return `${NUMBER.format(point.systolic)} / ${NUMBER.format(point.diastolic)} ${spec.shown}`;
  return `${NUMBER.format(point.value)} ${spec.shown}`;
}

function source(point) {
  if (point.computed) return "Calculé (poids et taille)";
  if (point.own) return "Vous";
  return SOURCES[point.source] || point.source;
}

// The lines of a kind: blood pressure has two (systolic, diastolic), the others one.
function lines(points, kind) {
  if (kind === "blood_pressure") {
    return [
      { name: "Systolique", colour: "#a4161a", values: points.map((p) => p.systolic), dash: "" },
      { name: "Diastolique", colour: "#0b3d91", values: points.map((p) => p.diastolic), dash: "6 4" },
    ];
  }
  return [{ name: "", colour: "#0b3d91", values: points.map((p) => p.value), dash: "" }];
}

// One series as a line chart: time across, values up, the extremes labelled on each axis.
export function chart(points, spec, titleId) {
  const times = points.map((p) => Date.parse(p.measured_at));
  const series = lines(points, spec.kind);
  const all = series.flatMap((s) => s.values);
  let low = Math.min(...all);
  let high = Math.max(...all);
  const margin = (high - low) * 0.1 || Math.abs(high) * 0.05 || 1;
  low -= margin;
  high += margin;
  const first = Math.min(...times);
  const last = Math.max(...times);
  const x = (t) => (last === first ? (PAD.left + WIDTH - PAD.right) / 2 : PAD.left + ((t - first) / (last - first)) * (WIDTH - PAD.left - PAD.right));
  const y = (v) => PAD.top + (1 - (v - low) / (high - low)) * (HEIGHT - PAD.top - PAD.bottom);
  const latest = points[points.length - 1];
  const summary = `${spec.label} : ${points.length} mesure${points.length > 1 ? "s" : ""} du ${SHORT_DATE.format(first)} au ${SHORT_DATE.format(last)}, dernière valeur ${said(latest, spec)}.`;
  const descId = `${titleId}-desc`;
  const figure = svg(
    "svg",
    {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      "aria-labelledby": `${titleId} ${descId}`,
      class: "chart",
      preserveAspectRatio: "xMidYMid meet",
    },
    svg("title", { id: titleId }, `Courbe : ${spec.label}`),
    svg("desc", { id: descId }, summary),
  );
  const axis = { stroke: "#767685", "stroke-width": 1 };
  figure.append(
    svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: HEIGHT - PAD.bottom, ...axis }),
    svg("line", { x1: PAD.left, y1: HEIGHT - PAD.bottom, x2: WIDTH - PAD.right, y2: HEIGHT - PAD.bottom, ...axis }),
  );
  const label = { fill: "#4a4a55", "font-size": 13 };
  for (const v of [low + margin, high - margin]) {
    figure.append(
      svg("line", { x1: PAD.left, y1: y(v), x2: WIDTH - PAD.right, y2: y(v), stroke: "#c9ccd6", "stroke-dasharray": "2 4" }),
      svg("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", ...label }, NUMBER.format(v)),
    );
  }
  figure.append(svg("text", { x: PAD.left, y: HEIGHT - 12, "text-anchor": "start", ...label }, SHORT_DATE.format(first)));
  if (last !== first) figure.append(svg("text", { x: WIDTH - PAD.right, y: HEIGHT - 12, "text-anchor": "end", ...label }, SHORT_DATE.format(last)));
  for (const line of series) {
    const at = line.values.map((v, i) => `${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`);
    if (at.length > 1) {
      figure.append(svg("polyline", { points: at.join(" "), fill: "none", stroke: line.colour, "stroke-width": 2.5, "stroke-dasharray": line.dash || "none" }));
    }
    for (const point of at) {
      const [cx, cy] = point.split(",");
      figure.append(svg("circle", { cx, cy, r: 4, fill: line.colour }));
    }
  }
  return figure;
}

function table(points, spec, ins, status) {
  const pressure = spec.kind === "blood_pressure";
  const newestFirst = [...points].reverse();
  return h(
    "table",
    { class: "values" },
    h("caption", {}, `${spec.label} : les valeurs, de la plus récente à la plus ancienne`),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Date"),
        h("th", { scope: "col" }, pressure ? "Systolique / diastolique" : "Valeur"),
        h("th", { scope: "col" }, "Saisie par"),
        h("th", { scope: "col" }, h("span", { class: "sr-only" }, "Action")),
      ),
    ),
    h(
      "tbody",
      {},
      newestFirst.map((p) =>
        h(
          "tr",
          {},
          h("td", {}, dateTime(p.measured_at), p.note ? h("p", { class: "hint" }, p.note) : ""),
          h("td", {}, said(p, spec)),
          h("td", {}, source(p)),
          h(
            "td",
            {},
            p.own
              ? h(
                  "button",
                  {
                    type: "button",
                    class: "link",
                    "aria-label": `Supprimer la mesure du ${dateTime(p.measured_at)} (${said(p, spec)})`,
                    onclick: async () => {
                      try {
                        await api.del(`${base(ins)}/${api.q(p.id)}`);
                        await show(document.getElementById("contenu"), ins, notice("Mesure supprimée.", "success"));
                      } catch (error) {
                        status.replaceChildren(failure(error));
                      }
                    },
                  },
                  "Supprimer",
                )
              : "",
          ),
        ),
      ),
    ),
  );
}

// A decimal as people type it in French (a comma or a point); empty stays empty.
function decimal(text) {
  const cleaned = String(text ?? "").trim().replace(",", ".");
  return cleaned === "" ? null : Number(cleaned);
}

// Now, as a datetime-local input wants it (local time, to the minute).
function localNow() {
  const now = new Date();
  now.setMinutes(now.getMinutes() - now.getTimezoneOffset());
  return now.toISOString().slice(0, 16);
}

function addForm(ins) {
  const status = h("div", { class: "status" });
  const kind = h(
    "select",
    { name: "kind", required: true },
    KINDS.filter((k) => !k.computed).map((k) => h("option", { value: k.kind }, k.label)),
  );
  const number = (name) => h("input", { name, inputmode: "decimal", autocomplete: "off", maxlength: 10 });
  const single = field("Valeur", number("value"), "Par exemple 72,5 (en kg pour le poids, en cm pour la taille et le tour de taille, en battements par minute pour le pouls).");
  const unit = field("Unité de la glycémie", h("select", { name: "unit" }, GLYCAEMIA_UNITS.map(([v, l]) => h("option", { value: v }, l))));
  const pressure = h(
    "fieldset",
    { class: "pressure" },
    h("legend", {}, "Tension (en mmHg)"),
    field("Systolique (le chiffre le plus haut)", number("systolic"), "Par exemple 125."),
    field("Diastolique (le chiffre le plus bas)", number("diastolic"), "Par exemple 80."),
  );
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Ajouter une mesure"),
    field("Mesure", kind),
    single,
    unit,
    pressure,
    field("Date et heure de la mesure", h("input", { name: "measured_at", type: "datetime-local", value: localNow(), required: true })),
    field("Remarque (facultative)", h("input", { name: "note", maxlength: 500 }), "Par exemple : à jeun, après un effort."),
    h("button", { type: "submit" }, "Enregistrer la mesure"),
    status,
  );
  const chosen = () => {
    const bp = kind.value === "blood_pressure";
    single.hidden = bp;
    pressure.hidden = !bp;
    unit.hidden = kind.value !== "glycaemia";
  };
  kind.addEventListener("change", chosen);
  chosen();
  onSubmit(form, status, async (data) => {
    const spec = KINDS.find((k) => k.kind === data.get("kind"));
    const when = String(data.get("measured_at") || "");
    if (!when) throw new Error("Indiquez la date et l'heure de la mesure.");
    const body = { kind: spec.kind, unit: spec.unit, measured_at: new Date(when).toISOString() };
    if (spec.kind === "blood_pressure") {
      body.systolic = decimal(data.get("systolic"));
      body.diastolic = decimal(data.get("diastolic"));
      if (body.systolic === null || body.diastolic === null || Number.isNaN(body.systolic + body.diastolic)) {
        throw new Error("Saisissez les deux chiffres de la tension, en mmHg (par exemple 125 et 80).");
      }
    } else {
      body.value = decimal(data.get("value"));
      if (body.value === null || Number.isNaN(body.value)) throw new Error("Saisissez la valeur mesurée, en chiffres.");
      if (spec.kind === "glycaemia") body.unit = String(data.get("unit"));
    }
    const note = String(data.get("note") || "").trim();
    if (note) body.note = note;
    await api.post(base(ins), body);
    await show(document.getElementById("contenu"), ins, notice(`Mesure enregistrée : ${spec.label.toLowerCase()}.`, "success"));
  });
  return form;
}

async function show(main, ins, message) {
  const { items } = await api.get(base(ins));
  // The patient in their own space; anyone else (the care team, someone acting for them) reads.
  const patient = state.me?.kind === "patient" && state.me.ins === ins;
  const status = h("div", { class: "status", "aria-live": "polite" });
  const sections = KINDS.map((spec) => {
    const points = items.filter((p) => p.kind === spec.kind);
    if (!points.length) return "";
    const titleId = `courbe-${spec.kind}`;
    return h(
      "section",
      { class: "card series", "aria-labelledby": `${titleId}-h` },
      h("h2", { id: `${titleId}-h` }, `${spec.label} (${spec.shown})`),
      spec.computed ? h("p", { class: "hint" }, "Calculé à partir de chaque poids et de la dernière taille mesurée : il ne se saisit pas.") : "",
      h("div", { class: "series-body" }, h("div", { class: "chart-box" }, chart(points, spec, titleId)), h("div", { class: "table-box" }, table(points, spec, ins, status))),
    );
  });
  replace(
    main,
    h("h1", {}, patient ? "Mes constantes" : "Constantes du patient"),
    h(
      "p",
      { class: "lead" },
      patient
        ? "Suivez votre poids, votre tension, votre glycémie… Les professionnels de santé qui peuvent consulter votre profil médical les voient aussi."
        : "Les mesures saisies par le patient et par les professionnels de santé.",
    ),
    message || "",
    status,
    patient ? addForm(ins) : "",
    items.length ? sections : h("p", {}, "Aucune mesure pour l'instant."),
  );
}

export async function view(main, { ins }) {
  await show(main, ins);
}

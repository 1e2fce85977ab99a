// What every view shares: who is signed in, moving between views, the catalogue, errors.

import * as api from "./api.js";
import { notice } from "./dom.js";
import { sentence } from "./problems.js";

// `represented`: whom the signed-in patient may act for (and the invitations they received).
export const state = { me: null, catalogue: null, represented: [] };

export function go(path) {
  if (location.hash === `#${path}`) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = path;
}

// The catalogue (sections, document types) comes with the habilitation matrix.
export async function catalogue() {
  state.catalogue ??= await api.get("/v1/habilitation-matrix");
  return state.catalogue;
}

export const fullName = (person) => [person.given_name, person.family_name].filter(Boolean).join(" ");

// Whom a patient may act for, and the invitations waiting for their answer (none for anyone else,
// nor when the list cannot be read: the portal then shows one's own space only).
export async function loadRepresented() {
  state.represented = [];
  if (state.me?.kind !== "patient") return state.represented;
  try {
    state.represented = (await api.get("/v1/me/represented")).items;
  } catch (error) {
    if (error instanceof api.Problem && error.status === 401) throw error;
  }
  return state.represented;
}

// The person the signed-in patient acts for on this dossier's pages, if they act for its
// patient: someone who trusts them (invitation accepted), or a minor they legally represent.
export function actingFor(ins) {
  if (state.me?.kind !== "patient" || state.me.ins === ins) return null;
  return state.represented.find((r) => r.ins === ins && r.status === "active") || null;
}

export const SCOPES = { read: "Lecture", manage: "Lecture et gestion" };

export const PROFESSIONS = {
  10: "Médecin",
  21: "Pharmacien",
  26: "Audioprothésiste",
  28: "Opticien-lunetier",
  40: "Chirurgien-dentiste",
  50: "Sage-femme",
  60: "Infirmier",
  70: "Masseur-kinésithérapeute",
  80: "Pédicure-podologue",
  91: "Orthophoniste",
  92: "Orthoptiste",
  94: "Ergothérapeute",
  96: "Psychomotricien",
};

// What went wrong, in French: the sentence for a refusal's type; the portal's own checks
// already speak French.
export function explain(error) {
  if (error instanceof api.Problem) return sentence(error);
  if (error instanceof TypeError) return "Le service ne répond pas. Réessayez dans un instant.";
  if (error.constructor === Error && error.message) return error.message;
  return "Une erreur est survenue.";
}

// A refusal shown in the page; the API's type and detail stay on the element, for developers.
export function failure(error, text = explain(error)) {
  const el = notice(text, "error");
  if (error instanceof api.Problem) {
    console.info(`API ${error.status} ${error.type}: ${error.message}`);
    el.dataset.problem = error.type;
    el.dataset.detail = error.message;
  }
  return el;
}

// A refused input, named by its label, and what it expects (from its constraints or its hint).
function fieldAdvice(control) {
  const label = control.labels?.[0]?.textContent || control.getAttribute("aria-label") || "";
  const value = String(control.value ?? "").trim();
  const hint = document.getElementById(control.getAttribute("aria-describedby") || "");
  let advice = "vérifiez ce que vous avez saisi.";
  if (control.required && !value) advice = "ce champ est obligatoire.";
  else if (control.minLength > 0 && value.length < control.minLength) {
    advice = `saisissez au moins ${control.minLength} caractères.`;
  } else if (hint?.textContent) advice = hint.textContent;
  return label ? `Le champ «\u00a0${label}\u00a0» n'est pas valide : ${advice}` : "";
}

// A form's submit: runs `action`, shows its error next to the form, keeps what was typed.
// The browser's own checks are off: every refusal is said the same way, in the page, in French
// (the fields keep `required` and `pattern` for assistive technologies).
export function onSubmit(form, status, action) {
  form.noValidate = true;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    status.replaceChildren();
    try {
      await action(new FormData(form));
    } catch (error) {
      const wrong = error instanceof api.Problem && error.field && form.elements[error.field];
      const advice = wrong && error.type === "validation-error" ? fieldAdvice(wrong) : "";
      status.replaceChildren(failure(error, advice || explain(error)));
      if (wrong && wrong.focus) {
        wrong.setAttribute("aria-invalid", "true");
        wrong.focus();
      }
    } finally {
      if (button) button.disabled = false;
    }
  });
}

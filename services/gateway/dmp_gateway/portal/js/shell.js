// What every view shares: who is signed in, moving between views, the catalogue, errors.

import * as api from "./api.js";

export const state = { me: null, catalogue: null };

export function go(path) {
  if (location.hash === `#${path}`) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = path;
}

// The catalogue (sections, document types) comes with the habilitation matrix.
export async function catalogue() {
  state.catalogue ??= await api.get("/v1/habilitation-matrix");
  return state.catalogue;
}

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

// What went wrong, in plain words: the API's own explanation when it gave one.
export function explain(error) {
  if (error instanceof api.Problem) {
    if (error.status === 429) return "Trop de demandes : patientez un instant avant de réessayer.";
    return error.message;
  }
  if (error instanceof TypeError) return "Le service ne répond pas. Réessayez dans un instant.";
  return error.message || "Une erreur est survenue.";
}

// A form's submit: runs `action`, shows its error next to the form, keeps what was typed.
// The browser's own checks are off: every refusal is said the same way, in the page, with
// the API's reason (the fields keep `required` and `pattern` for assistive technologies).
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
      const p = document.createElement("p");
      p.className = "notice error";
      p.setAttribute("role", "alert");
      p.textContent = explain(error);
      status.replaceChildren(p);
      const wrong = error instanceof api.Problem && error.field && form.elements[error.field];
      if (wrong && wrong.focus) {
        wrong.setAttribute("aria-invalid", "true");
        wrong.focus();
      }
    } finally {
      if (button) button.disabled = false;
    }
  });
}

// The portal's shell: who is signed in, the menu, and which view a location shows.

import { account } from "./account.js";
import { activationView, oppositionView } from "./activation.js";
import * as agenda from "./agenda.js";
import * as api from "./api.js";
import * as apps from "./apps.js";
import { h, notice, replace } from "./dom.js";
import * as dossier from "./dossier.js";
import { loginView } from "./login.js";
import * as measurements from "./measurements.js";
import * as messaging from "./messaging.js";
import * as patient from "./patient.js";
import * as preview from "./preview.js";
import * as pro from "./pro.js";
import * as proches from "./proches.js";
import { actingFor, failure, fullName, go, loadRepresented, state } from "./shell.js";

const main = document.getElementById("contenu");
const nav = document.getElementById("nav");
// On a phone the menu folds behind one button (style.css); each page shown folds it again.
const menuToggle = document.querySelector(".menu-toggle");
menuToggle.addEventListener("click", () => {
  menuToggle.setAttribute("aria-expanded", String(menuToggle.getAttribute("aria-expanded") !== "true"));
});

// "#/dossier/1234/documents/analyses" → handler with params, first match wins.
const ROUTES = [
  ["/connexion", login],
  ["/activation", activationView],
  ["/opposition", oppositionView],
  ["/dossier/:ins", dossier.overview],
  ["/dossier/:ins/documents/:section", dossier.list],
  ["/dossier/:ins/document/:id", dossier.detail],
  ["/dossier/:ins/ajouter", dossier.add],
  ["/dossier/:ins/acces", patient.access],
  ["/dossier/:ins/apercu", preview.view],
  ["/dossier/:ins/apercu/:by/:value", preview.view],
  ["/dossier/:ins/historique", patient.history],
  ["/dossier/:ins/profil", patient.profile],
  ["/dossier/:ins/constantes", measurements.view],
  ["/dossier/:ins/agenda", agenda.agenda],
  ["/dossier/:ins/prevention", agenda.prevention],
  ["/dossier/:ins/urgence", pro.emergency],
  ["/dossier/:ins/ecrire", messaging.writeToPatient],
  ["/messagerie", messaging.inbox],
  ["/messagerie/pharmacie", messaging.writeToPharmacy],
  ["/messagerie/:id", messaging.conversationView],
  ["/notifications", patient.notifications],
  ["/compte", account],
  ["/proches", proches.view],
  [apps.CONSENT, (el, params) => apps.authorize(el, params, { signInFirst, signInAsAnother })],
  [apps.PAGE, apps.view],
  ["/recherche", pro.search],
];

// "#/autoriser?client_id=…": the query after the route goes to the view as is (params.query).
function match(address) {
  const at = address.indexOf("?");
  const path = at < 0 ? address : address.slice(0, at);
  const parts = path.split("/").filter(Boolean);
  for (const [pattern, view] of ROUTES) {
    const want = pattern.split("/").filter(Boolean);
    if (want.length !== parts.length) continue;
    const params = {};
    if (
      want.every((p, i) => {
        if (p.startsWith(":")) {
          params[p.slice(1)] = decodeURIComponent(parts[i]);
          return true;
        }
        return p === parts[i];
      })
    ) {
      if (at >= 0) params.query = address.slice(at + 1);
      return [view, params];
    }
  }
  return [null, {}];
}

function home() {
  if (!state.me) return "/connexion";
  return state.me.kind === "patient" ? `/dossier/${state.me.ins}` : "/recherche";
}

// The dossier a patient's page is about, when it is someone they act for (from the location:
// acting for someone is being on their pages; "revenir à mon espace" leaves them).
function actingHere() {
  const shown = /^\/dossier\/([^/]+)/.exec(location.hash.slice(1));
  return shown ? actingFor(decodeURIComponent(shown[1])) : null;
}

function patientLinks(me, other) {
  if (other) {
    // Acting for someone: their space only; one's own pages (messaging, account, trusted
    // persons, notifications) wait until one is back in one's own space.
    return [
      [`/dossier/${other.ins}`, `Dossier de ${fullName(other)}`],
      [`/dossier/${other.ins}/acces`, "Qui peut voir son dossier"],
      [`/dossier/${other.ins}/historique`, "Historique des accès"],
      [`/dossier/${other.ins}/profil`, "Son profil médical"],
      [`/dossier/${other.ins}/agenda`, "Son agenda"],
    ];
  }
  return [
    [`/dossier/${me.ins}`, "Mon dossier"],
    [`/dossier/${me.ins}/acces`, "Qui peut voir mon dossier"],
    [`/dossier/${me.ins}/historique`, "Historique des accès"],
    [`/dossier/${me.ins}/profil`, "Mon profil médical"],
    [`/dossier/${me.ins}/constantes`, "Mes constantes"],
    [`/dossier/${me.ins}/agenda`, "Mon agenda"],
    ["/proches", "Mes proches"],
    [apps.PAGE, "Mes applications"],
    ["/messagerie", "Messagerie"],
    ["/notifications", "Notifications"],
    ["/compte", "Mon compte"],
  ];
}

const RELATION_AS = {
  trusted_person: "personne de confiance",
  legal_representative: "représentant légal",
};

// « Agir pour … »: oneself, or each person one may act for; the chosen one's space opens when
// asked (not on each move through the list, which a keyboard makes one option at a time).
function actingSwitch(me, other) {
  const people = state.represented.filter((r) => r.status === "active");
  if (!people.length) return "";
  const select = h(
    "select",
    { id: "agir-pour", name: "ins" },
    h("option", { value: me.ins, selected: !other }, `Moi-même (${fullName(me)})`),
    people.map((r) =>
      h("option", { value: r.ins, selected: other?.ins === r.ins }, `${fullName(r)} (${RELATION_AS[r.relation] || r.relation})`),
    ),
  );
  const form = h(
    "form",
    { class: "acting-switch" },
    h("label", { for: "agir-pour" }, "Agir pour"),
    select,
    h("button", { type: "submit", class: "small" }, "Ouvrir"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go(`/dossier/${select.value}`);
  });
  return form;
}

// A menu entry is current on its page; the agenda's on its prevention page too.
const isCurrent = (path, here) =>
  here === path || (path.endsWith("/agenda") && here === path.replace(/\/agenda$/, "/prevention"));

// The menu of the signed-in person; returns whom they act for on this page (or null).
function menu() {
  const me = state.me;
  menuToggle.hidden = !me;
  menuToggle.setAttribute("aria-expanded", "false");
  if (!me) {
    replace(nav);
    return null;
  }
  const other = me.kind === "patient" ? actingHere() : null;
  const links =
    me.kind === "patient"
      ? patientLinks(me, other)
      : [
          ["/recherche", "Rechercher un patient"],
          ...(me.kind === "professional" ? [["/messagerie", "Messagerie"]] : []),
          ["/notifications", "Notifications"],
          ["/compte", "Mon compte"],
        ];
  const here = location.hash.slice(1);
  const name = fullName(me);
  replace(
    nav,
    h(
      "ul",
      {},
      links.map(([path, label]) =>
        h(
          "li",
          {},
          h(
            "a",
            { href: `#${path}`, "aria-current": isCurrent(path, here) ? "page" : null },
            label,
            path === "/messagerie" ? h("span", { class: "unread-count", hidden: true }) : "",
          ),
        ),
      ),
    ),
    me.kind === "patient" ? actingSwitch(me, other) : "",
    h(
      "p",
      { class: "who" },
      h("span", {}, name || me.id),
      h("button", { type: "button", class: "link", onclick: signOut }, "Se déconnecter"),
    ),
  );
  return other;
}

// While acting for someone, every page says so, and how to come back.
function actingBanner(other) {
  return h(
    "p",
    { class: "acting-banner" },
    "Vous agissez pour ",
    h("strong", {}, fullName(other)),
    other.scope === "read" ? " (lecture seule)" : "",
    " — ",
    h("a", { href: `#/dossier/${state.me.ins}` }, "revenir à mon espace"),
  );
}

// The menu's messaging link shows how many messages wait, once the page (which may have read
// some) is shown.
// On a phone, the folded menu's button shows it too.
async function showUnread() {
  const onToggle = menuToggle.querySelector(".unread-count");
  const inMenu = nav.querySelector(".unread-count");
  const count = inMenu ? await messaging.unreadTotal() : 0;
  for (const badge of inMenu ? [inMenu, onToggle] : [onToggle]) {
    badge.hidden = count === 0;
    replace(
      badge,
      h("span", { "aria-hidden": "true" }, String(count)),
      h("span", { class: "sr-only" }, ` (${count} message${count > 1 ? "s" : ""} non lu${count > 1 ? "s" : ""})`),
    );
  }
}

async function signOut() {
  await api.logout();
  state.me = null;
  state.represented = [];
  go("/connexion");
}

// Signed in with the wrong account for this page: out, and back here with the right one.
async function signInAsAnother() {
  await api.logout();
  state.me = null;
  state.represented = [];
  signInFirst();
}

// A page one must sign in for, reached signed out (an app's authorization request): kept for
// this tab, shown again once signed in (if that is soon).
const RESUME = "dmp.resume";
const RESUMABLE = [apps.CONSENT];
const RESUME_WITHIN_MS = 30 * 60 * 1000;

function resumable(path) {
  return RESUMABLE.some((route) => path === route || path.startsWith(`${route}?`));
}

function signInFirst() {
  const path = location.hash.replace(/^#/, "");
  if (resumable(path)) sessionStorage.setItem(RESUME, JSON.stringify({ path, at: Date.now() }));
  go("/connexion");
}

function pendingPage({ take = false } = {}) {
  let pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(RESUME));
  } catch {
    pending = null;
  }
  if (take) sessionStorage.removeItem(RESUME);
  const fresh = pending && typeof pending.path === "string" && Date.now() - pending.at < RESUME_WITHIN_MS;
  return fresh && resumable(pending.path) ? pending.path : null;
}

function login(el) {
  loginView(el, signedIn);
  if (pendingPage()) {
    el.querySelector("h1").after(
      notice("Une application demande à accéder à votre espace santé : connectez-vous avec votre compte patient pour lire sa demande et y répondre."),
    );
  }
}

async function signedIn() {
  state.me = await api.get("/v1/me");
  await loadRepresented();
  go(pendingPage({ take: true }) || home());
}

async function ensureIdentity() {
  if (state.me || !api.session.get()) return;
  try {
    state.me = await api.get("/v1/me");
    await loadRepresented();
  } catch {
    state.me = null;
  }
}

// A dossier of someone else's, opened by a patient: perhaps someone whose invitation they have
// just accepted (elsewhere); the list says.
async function knowWhoseDossier(path) {
  const shown = /^\/dossier\/([^/]+)/.exec(path);
  if (state.me?.kind !== "patient" || !shown) return;
  const ins = decodeURIComponent(shown[1]);
  if (ins !== state.me.ins && !actingFor(ins)) await loadRepresented();
}

async function render() {
  await ensureIdentity();
  const path = location.hash.replace(/^#/, "");
  if (!path || path === "/") return go(home());
  // The consent page checks the app's request first, and asks to sign in itself.
  if (!state.me && !["/connexion", "/activation", "/opposition"].includes(path) && !resumable(path)) return go("/connexion");
  const [view, params] = match(path);
  await knowWhoseDossier(path);
  const other = menu();
  const banner = document.getElementById("banner");
  pro.banner(banner);
  if (other) banner.append(actingBanner(other));
  if (!view) {
    replace(main, h("h1", {}, "Page introuvable"), h("p", {}, h("a", { href: `#${home()}` }, "Retour à l'accueil")));
    return;
  }
  replace(main, h("p", { class: "loading" }, "Chargement…"));
  try {
    await view(main, params, state);
  } catch (error) {
    if (error instanceof api.Problem && error.status === 401) return signInFirst();
    if (!(error instanceof api.Problem)) console.error(error);
    replace(main, h("h1", {}, "Une erreur est survenue"), failure(error));
  }
  showUnread();
  const title = main.querySelector("h1");
  document.title = title ? `${title.textContent} — DMP` : "DMP";
  // After a move within the portal, a screen reader starts at the new content; on the first
  // page, focus stays at the top, where the skip link is.
  if (rendered) main.focus({ preventScroll: false });
  rendered = true;
}

let rendered = false;

// The skip link moves the focus, not the route (the location's hash is the route).
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener("hashchange", render);
// An invitation accepted or declined: the menu's « Agir pour » lists whom one now acts for.
window.addEventListener("dmp:represented", () => {
  menu();
  showUnread();
});
window.addEventListener("dmp:signed-out", () => {
  state.me = null;
  state.represented = [];
});
render();

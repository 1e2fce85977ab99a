// The portal's shell: who is signed in, the menu, and which view a location shows.

import { account } from "./account.js";
import { activationView, oppositionView } from "./activation.js";
import * as api from "./api.js";
import { h, replace } from "./dom.js";
import * as dossier from "./dossier.js";
import { loginView } from "./login.js";
import * as messaging from "./messaging.js";
import * as patient from "./patient.js";
import * as preview from "./preview.js";
import * as pro from "./pro.js";
import { failure, go, state } from "./shell.js";

const main = document.getElementById("contenu");
const nav = document.getElementById("nav");
// On a phone the menu folds behind one button (style.css); each page shown folds it again.
const menuToggle = document.querySelector(".menu-toggle");
menuToggle.addEventListener("click", () => {
  menuToggle.setAttribute("aria-expanded", String(menuToggle.getAttribute("aria-expanded") !== "true"));
});

// "#/dossier/1234/documents/analyses" → handler with params, first match wins.
const ROUTES = [
  ["/connexion", (el) => loginView(el, signedIn)],
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
  ["/dossier/:ins/urgence", pro.emergency],
  ["/dossier/:ins/ecrire", messaging.writeToPatient],
  ["/messagerie", messaging.inbox],
  ["/messagerie/pharmacie", messaging.writeToPharmacy],
  ["/messagerie/:id", messaging.conversationView],
  ["/notifications", patient.notifications],
  ["/compte", account],
  ["/recherche", pro.search],
];

function match(path) {
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
      return [view, params];
    }
  }
  return [null, {}];
}

function home() {
  if (!state.me) return "/connexion";
  return state.me.kind === "patient" ? `/dossier/${state.me.ins}` : "/recherche";
}

function menu() {
  const me = state.me;
  menuToggle.hidden = !me;
  menuToggle.setAttribute("aria-expanded", "false");
  if (!me) return replace(nav);
  const links =
    me.kind === "patient"
      ? [
          [`/dossier/${me.ins}`, "Mon dossier"],
          [`/dossier/${me.ins}/acces`, "Qui peut voir mon dossier"],
          [`/dossier/${me.ins}/historique`, "Historique des accès"],
          [`/dossier/${me.ins}/profil`, "Mon profil médical"],
          ["/messagerie", "Messagerie"],
          ["/notifications", "Notifications"],
          ["/compte", "Mon compte"],
        ]
      : [
          ["/recherche", "Rechercher un patient"],
          ...(me.kind === "professional" ? [["/messagerie", "Messagerie"]] : []),
          ["/notifications", "Notifications"],
          ["/compte", "Mon compte"],
        ];
  const here = location.hash.slice(1);
  const name = [me.given_name, me.family_name].filter(Boolean).join(" ");
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
            { href: `#${path}`, "aria-current": here === path ? "page" : null },
            label,
            path === "/messagerie" ? h("span", { class: "unread-count", hidden: true }) : "",
          ),
        ),
      ),
    ),
    h(
      "p",
      { class: "who" },
      h("span", {}, name || me.id),
      h("button", { type: "button", class: "link", onclick: signOut }, "Se déconnecter"),
    ),
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
  go("/connexion");
}

async function signedIn() {
  state.me = await api.get("/v1/me");
  go(home());
}

async function ensureIdentity() {
  if (state.me || !api.session.get()) return;
  try {
    state.me = await api.get("/v1/me");
  } catch {
    state.me = null;
  }
}

async function render() {
  await ensureIdentity();
  const path = location.hash.replace(/^#/, "");
  if (!path || path === "/") return go(home());
  if (!state.me && !["/connexion", "/activation", "/opposition"].includes(path)) return go("/connexion");
  const [view, params] = match(path);
  menu();
  pro.banner(document.getElementById("banner"));
  if (!view) {
    replace(main, h("h1", {}, "Page introuvable"), h("p", {}, h("a", { href: `#${home()}` }, "Retour à l'accueil")));
    return;
  }
  replace(main, h("p", { class: "loading" }, "Chargement…"));
  try {
    await view(main, params, state);
  } catch (error) {
    if (error instanceof api.Problem && error.status === 401) return go("/connexion");
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
window.addEventListener("dmp:signed-out", () => {
  state.me = null;
});
render();

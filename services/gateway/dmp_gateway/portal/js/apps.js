// Apps the patient connects (docs/connected-apps.md): the consent page an app's authorization
// request lands on (« Autoriser une application »), and « Mes applications connectées », with
// the catalogue of referenced services below.

import * as api from "./api.js";
import { confirmation, date, dateTime, h, notice, replace } from "./dom.js";
import { failure, state } from "./shell.js";

// The route the consent page lives on; the gateway sends the browser to `#/autoriser?<query>`.
export const CONSENT = "/autoriser";
export const PAGE = "/applications";

// A logo only from this API (the catalogue's own address for it), beside the app's name: the
// name says who it is, so the image is decoration.
function logo(app) {
  if (!app.logo_url || !app.logo_url.startsWith("/v1/apps/")) return h("span", { class: "app-logo none", "aria-hidden": "true" }, app.name.slice(0, 1));
  return h("img", { class: "app-logo", src: app.logo_url, alt: "", width: 48, height: 48 });
}

// Where the code goes back to, as a person can recognise it: the address's host, or the
// application's own scheme (com.example.app:/callback) on a phone.
export function returnsTo(uri) {
  try {
    const url = new URL(uri);
    return url.host || url.protocol.replace(/:$/, "");
  } catch {
    return uri;
  }
}

// An app's logo, name (a heading) and publisher, as every list here shows it.
function identity(app, title) {
  return h("div", { class: "app-head" }, logo(app), h("div", {}, title, h("p", { class: "meta" }, `Éditeur : ${app.publisher}`)));
}

const labels = (scopes, cls = "app-scopes") => h("ul", { class: cls }, scopes.map((s) => h("li", {}, s.label)));

// ------------------------------------------------------------------ consent

function leave(url) {
  location.assign(url);
}

function notPatient(main, app, shell) {
  replace(
    main,
    h("h1", {}, "Autoriser une application"),
    notice(
      `${app.name} demande à accéder à un espace santé. Seul un patient peut connecter une application au sien : vous êtes connecté avec ${
        state.me.kind === "professional" ? "un compte de professionnel de santé" : "un compte qui n'est pas celui d'un patient"
      }.`,
      "warning",
    ),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", onclick: shell.signInAsAnother }, "Me connecter avec mon compte patient"),
      h("a", { class: "button secondary", href: "#/" }, "Revenir à mon espace"),
    ),
  );
}

function consent(main, query, check, shell) {
  const { app, scopes, redirect_uri: redirectUri } = check;
  const status = h("div", { class: "status" });
  const buttons = [];
  const answer = (allow) => async () => {
    status.replaceChildren();
    for (const b of buttons) b.disabled = true;
    try {
      const { redirect_to: next } = await api.post("/v1/oauth/authorization", { query, allow });
      status.replaceChildren(notice(allow ? `Autorisation donnée : retour vers ${app.name}…` : `Demande refusée : retour vers ${app.name}…`, "success"));
      leave(next);
    } catch (error) {
      // The session ended meanwhile: signing in again comes back to this request.
      if (error instanceof api.Problem && error.status === 401) return shell.signInFirst();
      for (const b of buttons) b.disabled = false;
      status.replaceChildren(failure(error));
    }
  };
  buttons.push(
    h("button", { type: "button", onclick: answer(true) }, "Autoriser"),
    h("button", { type: "button", class: "secondary", onclick: answer(false) }, "Refuser"),
  );
  replace(
    main,
    h("h1", {}, "Autoriser une application"),
    h(
      "section",
      { class: "card consent", "aria-labelledby": "app-nom" },
      identity(app, h("h2", { id: "app-nom" }, app.name)),
      app.description ? h("p", { class: "app-description" }, app.description) : "",
      h("p", { class: "asks" }, h("strong", {}, app.name), " souhaite accéder à votre espace santé pour :"),
      labels(scopes),
      h(
        "p",
        { class: "hint" },
        "Elle n'aura jamais accès à plus que ce que vous voyez vous-même, ni aux documents qui vous sont encore cachés, ni au dossier des personnes pour qui vous agissez. Chacun de ses accès est tracé dans votre historique des accès.",
      ),
      h(
        "p",
        { class: "returns" },
        "Après votre réponse, vous serez renvoyé vers ",
        h("strong", { class: "return-host" }, returnsTo(redirectUri)),
        ".",
      ),
      h("p", {}, "Vous pourrez la déconnecter à tout moment depuis « Mes applications connectées » (menu « Mes applications »)."),
      h("div", { class: "actions" }, buttons),
      status,
    ),
  );
}

// The authorization request as the app sent it (the query after `#/autoriser?`), checked by the
// API before anything is shown; signing in comes after, if needed, and brings one back here.
export async function authorize(main, params, shell) {
  const query = params.query || "";
  let check;
  try {
    check = await api.get(`/v1/oauth/authorization?${query}`);
  } catch (error) {
    if (!(error instanceof api.Problem) || error.status !== 422) throw error;
    // Not an app's request to trust (unknown app, or an address it did not declare): said
    // here, and the browser is sent nowhere.
    replace(
      main,
      h("h1", {}, "Autoriser une application"),
      failure(error),
      h("p", {}, h("a", { href: "#/" }, "Retour à mon espace santé")),
    );
    return;
  }
  if (check.error_redirect) {
    replace(main, h("h1", {}, "Autoriser une application"), h("p", { class: "loading" }, "Retour vers l'application…"));
    leave(check.error_redirect);
    return;
  }
  if (!state.me) {
    shell.signInFirst();
    return;
  }
  if (state.me.kind !== "patient") {
    notPatient(main, check.app, shell);
    return;
  }
  consent(main, query, check, shell);
}

// ------------------------------------------------------------------ connected apps, catalogue

// A success said at the top of the page just shown.
function said(text) {
  document.querySelector("#contenu .outcome")?.replaceChildren(notice(text, "success"));
}

function connectedItem(app, status) {
  const [ask, group] = confirmation({
    ask: "Déconnecter",
    question: `Déconnecter ${app.name} ? Elle perd aussitôt tout accès à votre espace santé ; pour l'utiliser de nouveau, il faudra l'autoriser une nouvelle fois.`,
    confirm: "Confirmer la déconnexion",
    small: true,
    action: async () => {
      status.replaceChildren();
      try {
        await api.del(`/v1/me/connected-apps/${api.q(app.client_id)}`);
        await reload();
        said(`${app.name} est déconnectée : elle n'a plus accès à votre espace santé.`);
      } catch (error) {
        status.replaceChildren(failure(error));
      }
    },
  });
  ask.setAttribute("aria-label", `Déconnecter ${app.name}`);
  return h(
    "li",
    {},
    identity(app, h("h3", { class: "title" }, app.name)),
    h("p", { class: "may" }, "Peut :"),
    labels(app.scopes),
    h("p", { class: "meta" }, `Connectée depuis le ${date(app.connected_at)}`),
    h("p", { class: "meta last-used" }, app.last_used_at ? `Dernière utilisation le ${dateTime(app.last_used_at)}` : "Jamais utilisée"),
    h("div", { class: "controls" }, ask),
    group,
  );
}

function connectedCard(items) {
  const status = h("div", { class: "status" });
  return h(
    "section",
    { class: "card", "aria-labelledby": "connectees-titre" },
    h("h2", { id: "connectees-titre" }, "Applications que vous avez autorisées"),
    items.length
      ? h("ul", { class: "apps connected" }, items.map((a) => connectedItem(a, status)))
      : h("p", {}, "Aucune application n'est connectée à votre espace santé."),
    status,
  );
}

// A publisher's website, only if it is a web address (never a script's).
function website(app) {
  if (!app.website || !/^https?:\/\//i.test(app.website)) return "";
  return h(
    "p",
    { class: "meta" },
    h(
      "a",
      { href: app.website, rel: "noopener noreferrer", target: "_blank" },
      `Site de ${app.name}`,
      h("span", { class: "sr-only" }, " (nouvelle fenêtre)"),
    ),
  );
}

function catalogueItem(app, connected) {
  return h(
    "li",
    { "data-client-id": app.client_id },
    identity(app, h("h3", { class: "title" }, app.name, connected ? h("span", { class: "badge active" }, "Connectée") : "")),
    app.description ? h("p", { class: "app-description" }, app.description) : "",
    h("p", { class: "may" }, "Peut demander :"),
    labels(app.scopes),
    website(app),
  );
}

function catalogueCard(apps, connected) {
  return h(
    "section",
    { class: "card", "aria-labelledby": "catalogue-titre" },
    h("h2", { id: "catalogue-titre" }, "Catalogue des services référencés"),
    h(
      "p",
      {},
      "Ces applications sont référencées pour se connecter à votre espace santé. Pour en connecter une, ouvrez-la : elle vous enverra ici, où vous lirez ce qu'elle demande avant de l'autoriser ou de refuser.",
    ),
    apps.length
      ? h("ul", { class: "apps catalogue" }, apps.map((a) => catalogueItem(a, connected.has(a.client_id))))
      : h("p", {}, "Aucun service n'est référencé pour l'instant."),
  );
}

// The page again, after a change: the lists as the API now says them.
const reload = () => view(document.getElementById("contenu"));

export async function view(main) {
  const patient = state.me?.kind === "patient";
  const [catalogue, mine] = await Promise.all([
    api.get("/v1/apps"),
    patient ? api.get("/v1/me/connected-apps") : Promise.resolve({ items: [] }),
  ]);
  const connected = new Set(mine.items.map((a) => a.client_id));
  replace(
    main,
    h("h1", {}, patient ? "Mes applications connectées" : "Applications connectées"),
    h(
      "p",
      { class: "lead" },
      "Les applications que vous autorisez accèdent à votre espace santé, et seulement pour ce que vous leur avez permis. ",
      "Chacun de leurs accès est tracé dans votre historique ; déconnectez-en une, et elle perd aussitôt tout accès.",
    ),
    h("div", { class: "outcome" }),
    patient ? connectedCard(mine.items) : notice("Seul un patient connecte des applications à son espace santé.", "info"),
    catalogueCard(catalogue.items, connected),
  );
}

// The person's own account ("Mon compte"): password, open sessions, e-mail address and phone;
// for a patient, the download of all their data.

import * as api from "./api.js";
import { dateTime, field, h, notice, replace, size } from "./dom.js";
import { failure, onSubmit } from "./shell.js";

// A session's device, in a few words, from what its browser said when it signed in.
const BROWSERS = [
  [/Edg\//, "Edge"],
  [/OPR\//, "Opera"],
  [/Firefox\//, "Firefox"],
  [/Chrom(e|ium)\//, "Chrome"],
  [/Safari\//, "Safari"],
];
const SYSTEMS = [
  [/Android/, "Android"],
  [/iPhone|iPad/, "iPhone ou iPad"],
  [/Windows/, "Windows"],
  [/Mac OS X|Macintosh/, "Mac"],
  [/Linux|X11/, "Linux"],
];

export function device(userAgent) {
  if (!userAgent) return "Appareil non identifié";
  const browser = BROWSERS.find(([re]) => re.test(userAgent))?.[1];
  const system = SYSTEMS.find(([re]) => re.test(userAgent))?.[1];
  if (browser && system) return `${browser} sur ${system}`;
  return browser || system || "Logiciel non identifié";
}

const plural = (n, one, many) => `${n} ${n > 1 ? many : one}`;

// ------------------------------------------------------------------ password

function passwordCard(sessions) {
  const status = h("div", { class: "status" });
  const form = h(
    "form",
    { class: "card narrow" },
    h("h2", {}, "Mon mot de passe"),
    field(
      "Mot de passe actuel",
      h("input", { type: "password", name: "current_password", required: true, autocomplete: "current-password" }),
    ),
    field(
      "Nouveau mot de passe",
      h("input", { type: "password", name: "new_password", required: true, minlength: 12, autocomplete: "new-password" }),
      "Au moins 12 caractères. Une phrase de plusieurs mots se retient facilement et se devine mal ; évitez vos nom, prénom, dates et numéros, et les mots de passe courants.",
    ),
    h("button", { type: "submit" }, "Changer mon mot de passe"),
    status,
  );
  onSubmit(form, status, async (data) => {
    const done = await api.post("/v1/me/password", {
      current_password: data.get("current_password"),
      new_password: data.get("new_password"),
    });
    form.reset();
    for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
    const ended = done.sessions_ended
      ? ` ${plural(done.sessions_ended, "session ouverte sur un autre appareil a été fermée", "sessions ouvertes sur d'autres appareils ont été fermées")}.`
      : "";
    status.replaceChildren(notice(`Votre mot de passe est changé.${ended}`, "success"));
    await sessions.refresh();
  });
  return form;
}

// ------------------------------------------------------------------ sessions

function sessionsCard() {
  const status = h("div", { class: "status" });
  const list = h("ul", { class: "sessions" });
  const othersButton = h(
    "button",
    {
      type: "button",
      class: "secondary",
      onclick: async () => {
        status.replaceChildren();
        try {
          const { ended } = await api.del("/v1/me/sessions?keep_current=true");
          status.replaceChildren(
            notice(ended ? `${plural(ended, "autre appareil déconnecté", "autres appareils déconnectés")}.` : "Aucun autre appareil n'était connecté.", "success"),
          );
          await refresh();
        } catch (error) {
          status.replaceChildren(failure(error));
        }
      },
    },
    "Déconnecter mes autres appareils",
  );
  const others = h("div", { class: "actions" }, othersButton);

  const end = async (session) => {
    status.replaceChildren();
    try {
      await api.del(`/v1/me/sessions/${api.q(session.id)}`);
      status.replaceChildren(notice(`La session « ${device(session.user_agent)} » est fermée.`, "success"));
      await refresh();
    } catch (error) {
      status.replaceChildren(failure(error));
    }
  };

  const item = (s) =>
    h(
      "li",
      { class: s.current ? "current" : "" },
      h(
        "div",
        {},
        h("p", { class: "title" }, device(s.user_agent), s.current ? h("span", { class: "badge current" }, "Cet appareil") : ""),
        h("p", { class: "meta" }, `Connexion le ${dateTime(s.created_at)} · dernière activité le ${dateTime(s.last_used_at)}`),
        h("p", { class: "meta" }, `Expire le ${dateTime(s.expires_at)}`),
      ),
      s.current
        ? ""
        : h(
            "button",
            {
              type: "button",
              class: "small secondary",
              "aria-label": `Mettre fin à la session ${device(s.user_agent)} ouverte le ${dateTime(s.created_at)}`,
              onclick: () => end(s),
            },
            "Mettre fin",
          ),
    );

  async function refresh() {
    const { items } = await api.get("/v1/me/sessions");
    replace(list, items.map(item));
    others.hidden = !items.some((s) => !s.current);
  }

  const card = h(
    "section",
    { class: "card", "aria-labelledby": "sessions-titre" },
    h("h2", { id: "sessions-titre" }, "Mes appareils connectés"),
    h(
      "p",
      {},
      "Chaque connexion ouvre une session, valable jusqu'à ce que vous vous déconnectiez ou qu'elle expire. ",
      "Si vous ne reconnaissez pas un appareil, mettez-y fin et changez votre mot de passe.",
    ),
    list,
    others,
    status,
  );
  return { card, refresh };
}

// ------------------------------------------------------------------ e-mail address and phone

const CONTACTS = {
  email: {
    label: "Nouvelle adresse e-mail",
    input: { type: "email", autocomplete: "email", maxlength: 254 },
    hint: "Par exemple : prenom.nom@exemple.fr",
    where: "à cette adresse",
    done: (c) => `Votre adresse e-mail est désormais ${c.email}.`,
  },
  phone: {
    label: "Nouveau numéro de téléphone portable",
    input: { type: "tel", autocomplete: "tel", maxlength: 32 },
    hint: "Un numéro de portable, par exemple 06 12 34 56 78 ou +33 6 12 34 56 78.",
    where: "par SMS à ce numéro",
    done: (c) => `Votre numéro de téléphone est désormais ${c.phone}.`,
  },
};

// One contact's change: its new value, then the code sent to it.
function contactForm(kind) {
  const spec = CONTACTS[kind];
  const status = h("div", { class: "status" });
  const form = h("form", { class: "contact" });

  function ask() {
    replace(
      form,
      field(spec.label, h("input", { name: kind, required: true, ...spec.input }), spec.hint),
      h("button", { type: "submit", class: "secondary" }, "Recevoir un code de confirmation"),
      status,
    );
  }

  let change = null;
  let address = "";
  onSubmit(form, status, async (data) => {
    if (!change) {
      address = String(data.get(kind)).trim();
      change = await api.post("/v1/me/contact-changes", { [kind]: address });
      replace(
        form,
        h("p", {}, `Un code à 6 chiffres vous a été envoyé ${spec.where} : ${address}. Saisissez-le pour confirmer le changement.`),
        field(
          "Code de confirmation",
          h("input", { name: "code", required: true, inputmode: "numeric", autocomplete: "one-time-code", maxlength: 6, pattern: "[0-9]{6}" }),
          `Valable jusqu'au ${dateTime(change.expires_at)}.`,
        ),
        h(
          "div",
          { class: "actions" },
          h("button", { type: "submit" }, "Confirmer"),
          h(
            "button",
            {
              type: "button",
              class: "link",
              onclick: () => {
                change = null;
                ask();
              },
            },
            "Annuler",
          ),
        ),
        status,
      );
      form.elements.code.focus();
      return;
    }
    const contacts = await api.post(`/v1/me/contact-changes/${api.q(change.change_id)}/confirm`, {
      code: String(data.get("code")).trim(),
    });
    change = null;
    ask();
    status.replaceChildren(notice(`${spec.done(contacts)} L'ancienne coordonnée a été prévenue.`, "success"));
  });
  ask();
  return form;
}

function contactsCard() {
  return h(
    "section",
    { class: "card narrow", "aria-labelledby": "coordonnees-titre" },
    h("h2", { id: "coordonnees-titre" }, "Mon adresse e-mail et mon téléphone"),
    h(
      "p",
      {},
      "Vos codes de connexion et vos notifications y sont envoyés. Un code de confirmation part vers la nouvelle coordonnée ; l'ancienne est prévenue du changement.",
    ),
    contactForm("email"),
    contactForm("phone"),
  );
}

// ------------------------------------------------------------------ download of all one's data

const EXPORT_STATES = {
  pending: "En attente",
  running: "En préparation",
  ready: "Prête",
  failed: "Échec de la préparation",
  expired: "Supprimée (délai de conservation dépassé)",
};
const EXPORT_POLL_MS = 1500;

// The archive's bytes, fetched with the session's token, saved under the server's name.
async function saveExport(exp) {
  const response = await api.call("GET", `/v1/me/exports/${api.q(exp.id)}/content`, undefined, { raw: true });
  const named = /filename="([^"]+)"/.exec(response.headers.get("content-disposition") || "");
  const blob = new Blob([await response.arrayBuffer()], { type: "application/zip" });
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: named ? named[1] : "mon-espace-sante.zip", hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function exportCard() {
  const status = h("div", { class: "status" });
  const list = h("ul", { class: "exports" });
  let timer = null;
  let preparing = false; // asked from this page: its end is said when it comes

  const download = async (exp) => {
    status.replaceChildren();
    try {
      await saveExport(exp);
    } catch (error) {
      status.replaceChildren(failure(error));
    }
  };

  const item = (e) => {
    const busy = e.status === "pending" || e.status === "running";
    return h(
      "li",
      {},
      h(
        "div",
        {},
        h("p", { class: "title" }, `Demande du ${dateTime(e.created_at)}`, h("span", { class: `badge export-${e.status}` }, EXPORT_STATES[e.status] || e.status)),
        busy
          ? h(
              "p",
              { class: "meta" },
              h("progress", { max: 100, value: e.progress, "aria-label": `Préparation de l'archive : ${e.progress} %` }),
              ` ${e.progress} %`,
            )
          : "",
        e.status === "ready" ? h("p", { class: "meta" }, `${size(e.size)} · disponible jusqu'au ${dateTime(e.expires_at)}`) : "",
      ),
      e.status === "ready"
        ? h(
            "button",
            {
              type: "button",
              class: "small",
              "aria-label": `Télécharger l'archive demandée le ${dateTime(e.created_at)}`,
              onclick: () => download(e),
            },
            "Télécharger",
          )
        : "",
    );
  };

  async function refresh() {
    clearTimeout(timer);
    const { items } = await api.get("/v1/me/exports");
    replace(list, items.map(item));
    const busy = items.some((e) => e.status === "pending" || e.status === "running");
    askButton.disabled = busy;
    if (preparing && !busy) {
      preparing = false;
      const done = items[0]?.status === "ready";
      status.replaceChildren(
        done
          ? notice("Votre archive est prête : vous pouvez la télécharger.", "success")
          : notice("La préparation de votre archive a échoué. Réessayez plus tard.", "error"),
      );
    }
    // Followed while it is prepared, as long as the card is on the page.
    if (busy) timer = setTimeout(() => list.isConnected && refresh().catch(() => {}), EXPORT_POLL_MS);
  }

  const askButton = h(
    "button",
    {
      type: "button",
      onclick: async () => {
        status.replaceChildren();
        try {
          await api.post("/v1/me/exports");
          preparing = true;
          status.replaceChildren(notice("Votre archive est en préparation : vous pourrez la télécharger ici dès qu'elle sera prête.", "success"));
          await refresh();
        } catch (error) {
          status.replaceChildren(failure(error));
        }
      },
    },
    "Préparer mon archive",
  );

  const card = h(
    "section",
    { class: "card", "aria-labelledby": "export-titre" },
    h("h2", { id: "export-titre" }, "Télécharger mes données"),
    h(
      "p",
      {},
      "Obtenez une archive ZIP de votre espace santé : vos documents, votre profil médical, vos messages et le journal des accès à votre dossier. ",
      "Elle est préparée en quelques instants, puis conservée 7 jours.",
    ),
    h("div", { class: "actions" }, askButton),
    list,
    status,
  );
  return { card, refresh, status };
}

export async function account(main, _params, state) {
  const sessions = sessionsCard();
  await sessions.refresh();
  const me = state.me;
  const exports = me.kind === "patient" ? exportCard() : null;
  if (exports) await exports.refresh().catch((error) => exports.status.replaceChildren(failure(error)));
  const who = me.kind === "patient" ? `INS ${me.ins}` : me.rpps ? `RPPS ${me.rpps}` : me.login || me.id;
  replace(
    main,
    h("h1", {}, "Mon compte"),
    h("p", { class: "lead" }, [me.given_name, me.family_name].filter(Boolean).join(" ") || who, " — ", who),
    passwordCard(sessions),
    sessions.card,
    contactsCard(),
    exports ? exports.card : "",
  );
}

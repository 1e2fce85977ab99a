// Secure messaging: the conversations of a patient with their professionals and pharmacy,
// and of a professional with their patients. The rules (who opens, who replies, who closes)
// are the API's; these pages say them and show its refusals in French.

import * as api from "./api.js";
import { base64Of } from "./dossier.js";
import { confirmation, dateTime, field, h, notice, replace, size } from "./dom.js";
import { catalogue, failure, go, onSubmit, PROFESSIONS } from "./shell.js";

const MAX_BYTES = 5 * 1024 * 1024;
const ACCEPT = "application/pdf,image/png,image/jpeg,.pdf,.png,.jpg,.jpeg";
const conversationPath = (id) => `/v1/conversations/${api.q(id)}`;
const isPatient = (state) => state.me.kind === "patient";

// How many messages wait for the signed-in person, for the menu's badge (0 if it cannot say).
export async function unreadTotal() {
  try {
    return (await api.get("/v1/conversations?page_size=1")).unread_total || 0;
  } catch {
    return 0;
  }
}

function partyName(party) {
  if (party.kind === "system") return "Établissement";
  const profession = party.profession ? PROFESSIONS[party.profession] || party.profession : "";
  const who = party.name || (party.kind === "patient" ? `Patient ${party.id}` : `RPPS ${party.id}`);
  return profession ? `${who}, ${profession}` : who;
}

// Who the viewer talks with in this conversation.
const otherSide = (conversation, state) =>
  isPatient(state) ? partyName(conversation.counterpart) : `${partyName(conversation.patient)} (INS ${conversation.patient.id})`;

// Whether the viewer wrote this message (their side of the conversation).
const sentByViewer = (message, state) => (message.sender.kind === "patient") === isPatient(state);

const unreadBadge = (count) =>
  count > 0 ? h("span", { class: "badge unread" }, `${count} non lu${count > 1 ? "s" : ""}`) : "";

const closedBadge = (conversation) =>
  conversation.status === "closed" ? h("span", { class: "badge" }, "Close") : "";

// ------------------------------------------------------------------ the list

export async function inbox(main, _params, state) {
  const items = h("ul", { class: "conversations" });
  const more = h("div", {});
  const found = h("p", { class: "meta", role: "status" });
  let search = "";
  const load = async (cursor) => {
    const query = `${cursor ? `&cursor=${api.q(cursor)}` : ""}${search ? `&q=${api.q(search)}` : ""}`;
    const page = await api.get(`/v1/conversations?page_size=20${query}`);
    for (const c of page.items) {
      items.append(
        h(
          "li",
          { class: c.unread > 0 ? "unread" : "" },
          h("a", { href: `#/messagerie/${c.id}` }, c.subject),
          unreadBadge(c.unread),
          closedBadge(c),
          h("p", { class: "meta" }, `${otherSide(c, state)} · dernier message le ${dateTime(c.last_message_at)}`),
        ),
      );
    }
    more.replaceChildren(
      page.next ? h("button", { type: "button", class: "secondary", onclick: () => load(page.next) }, "Voir plus") : "",
    );
    return page;
  };
  const first = await load();
  const total = first.unread_total;
  const searchField = h("input", { type: "search", name: "q", minlength: "2", maxlength: "100", "aria-label": "Rechercher dans mes messages" });
  const searchForm = h(
    "form",
    {
      class: "search",
      role: "search",
      onsubmit: async (event) => {
        event.preventDefault();
        search = searchField.value.trim();
        items.replaceChildren();
        try {
          const page = await load();
          found.textContent = search
            ? page.items.length || page.next
              ? `Conversations contenant « ${search} » :`
              : `Aucune conversation ne contient « ${search} ».`
            : "";
        } catch (err) {
          found.replaceChildren(failure(err));
        }
      },
    },
    searchField,
    h("button", { type: "submit", class: "secondary" }, "Rechercher"),
  );
  replace(
    main,
    h("h1", {}, "Messagerie"),
    h(
      "p",
      { class: "lead" },
      isPatient(state)
        ? "Les échanges sécurisés avec les professionnels qui vous suivent. Un professionnel vous écrit en premier ; vous pouvez écrire en premier à une pharmacie qui vous a délivré des médicaments."
        : "Les échanges sécurisés avec vos patients.",
    ),
    isPatient(state)
      ? h("div", { class: "actions" }, h("a", { class: "button", href: "#/messagerie/pharmacie" }, "Écrire à ma pharmacie"))
      : "",
    h("p", {}, total > 0 ? `${total} message${total > 1 ? "s" : ""} non lu${total > 1 ? "s" : ""}.` : "Aucun message non lu."),
    first.items.length ? searchForm : "",
    found,
    first.items.length ? items : h("p", {}, "Aucune conversation pour l'instant."),
    more,
  );
}

// ------------------------------------------------------------------ attachments given

// What a form attaches: an uploaded file, a document of the DMP, or both.
async function attachmentsOf(data) {
  const out = [];
  const file = data.get("file");
  if (file instanceof File && file.size > 0) {
    if (file.size > MAX_BYTES) throw new Error("La pièce jointe dépasse 5 Mo : choisissez un fichier plus léger.");
    out.push({ filename: file.name, content_base64: await base64Of(file) });
  }
  const documentId = data.get("dmp_document_id");
  if (documentId) out.push({ dmp_document_id: String(documentId) });
  return out;
}

// The attachment fields: a file to upload, or a document of the patient's DMP. The DMP's list
// is read only when asked for: each reading is traced in the patient's access history.
function attachmentFields(ins, own) {
  const upload = field(
    "Joindre un fichier",
    h("input", { name: "file", type: "file", accept: ACCEPT }),
    "Facultatif : un PDF ou une image PNG ou JPEG, 5 Mo au plus.",
  );
  const label = own ? "Joindre un document de mon dossier" : "Joindre un document du dossier du patient";
  const slot = h("div", { class: "pick" });
  const ask = h(
    "button",
    {
      type: "button",
      class: "secondary small",
      onclick: async () => {
        ask.disabled = true;
        try {
          const { items } = await api.get(`/v1/dossiers/${api.q(ins)}/documents?page_size=200`);
          if (!items.length) return slot.replaceChildren(notice("Aucun document du dossier ne vous est accessible."));
          const select = h(
            "select",
            { name: "dmp_document_id" },
            h("option", { value: "" }, "Aucun"),
            items.map((d) => h("option", { value: d.id }, `${d.title} (${dateTime(d.created_at)})`)),
          );
          slot.replaceChildren(field(label, select, "Une copie du document est jointe au message."));
          select.focus();
        } catch (error) {
          slot.replaceChildren(failure(error));
        }
      },
    },
    `${label}…`,
  );
  slot.append(ask);
  return h("fieldset", { class: "attach" }, h("legend", {}, "Pièce jointe"), upload, slot);
}

function required(data, name, label) {
  const value = String(data.get(name) || "").trim();
  if (!value) throw new Error(`Le champ « ${label} » est obligatoire.`);
  return value;
}

// ------------------------------------------------------------------ opening a conversation

// The form that opens a conversation: `first` are the fields naming the recipient, whom
// `recipient` reads from the form's data (a patient's INS or a pharmacist's RPPS).
function openingForm(ins, own, first, recipient) {
  const status = h("div", { class: "status" });
  const form = h(
    "form",
    { class: "card" },
    first,
    field("Objet", h("input", { name: "subject", required: true, maxlength: 200 })),
    field("Message", h("textarea", { name: "body", required: true, maxlength: 5000, rows: 5 })),
    attachmentFields(ins, own),
    h("button", { type: "submit" }, "Envoyer"),
    status,
  );
  onSubmit(form, status, async (data) => {
    const opened = await api.post("/v1/conversations", {
      ...recipient(data),
      subject: required(data, "subject", "Objet"),
      body: required(data, "body", "Message"),
      attachments: await attachmentsOf(data),
    });
    go(`/messagerie/${opened.conversation.id}`);
  });
  return form;
}

// A professional writes to a patient, from the patient's dossier.
export async function writeToPatient(main, { ins }) {
  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: `#/dossier/${ins}` }, "Dossier"), " › Écrire au patient"),
    h("h1", {}, `Écrire au patient — ${ins}`),
    h("p", {}, "Le patient est prévenu qu'un message l'attend, sans son contenu. Il peut vous répondre tant que vous ne fermez pas la conversation."),
    openingForm(ins, false, "", () => ({ patient_ins: ins })),
  );
}

// A patient writes first to a pharmacy that dispensed to them within 12 months.
export async function writeToPharmacy(main, _params, state) {
  const pharmacy = field(
    "Numéro RPPS du pharmacien",
    h("input", { name: "pharmacy_rpps", required: true, inputmode: "numeric", maxlength: 11, pattern: "[0-9]{11}" }),
    "11 chiffres, sur votre ticket de pharmacie ou auprès de votre pharmacien.",
  );
  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/messagerie" }, "Messagerie"), " › Écrire à ma pharmacie"),
    h("h1", {}, "Écrire à ma pharmacie"),
    h(
      "p",
      {},
      "Vous pouvez écrire en premier à une pharmacie qui vous a délivré des médicaments remboursés dans les 12 derniers mois. ",
      "Pour les autres professionnels, c'est à eux de vous écrire en premier ; vous leur répondez ensuite.",
    ),
    openingForm(state.me.ins, true, pharmacy, (data) => ({
      pharmacy_rpps: String(data.get("pharmacy_rpps")).replace(/\s+/g, ""),
    })),
  );
}

// ------------------------------------------------------------------ a conversation

// An attachment's bytes, fetched with the session's token, saved under its name.
async function download(conversation, attachment) {
  const response = await api.call("GET", `${conversationPath(conversation.id)}/attachments/${api.q(attachment.id)}`, undefined, { raw: true });
  const blob = new Blob([await response.arrayBuffer()], { type: attachment.mime_type });
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: attachment.filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// "Classer dans le DMP": the professional files an attachment as a document of the patient.
async function fileForm(conversation, attachment, done) {
  const cat = await catalogue();
  const types = Object.entries(cat.types).filter(([code]) => !["REMB", "DOC_PATIENT"].includes(code));
  const status = h("div", { class: "status" });
  const form = h(
    "form",
    { class: "file-into card" },
    field(
      "Type de document",
      h("select", { name: "type_code", required: true }, types.map(([code, t]) => h("option", { value: code }, `${t.label} (${cat.sections[t.section]})`))),
    ),
    field("Titre", h("input", { name: "title", required: true, maxlength: 200, value: attachment.filename.replace(/\.[a-z0-9]+$/i, "") })),
    h("button", { type: "submit" }, "Classer"),
    status,
  );
  onSubmit(form, status, async (data) => {
    await api.post(`${conversationPath(conversation.id)}/attachments/${api.q(attachment.id)}/file`, {
      type_code: data.get("type_code"),
      title: required(data, "title", "Titre"),
    });
    await done("La pièce jointe est classée dans le dossier du patient.");
  });
  return form;
}

function attachmentItem(conversation, attachment, state, status, done) {
  const ins = conversation.patient.id;
  const get = h(
    "button",
    {
      type: "button",
      class: "link",
      onclick: async () => {
        try {
          await download(conversation, attachment);
        } catch (error) {
          status.replaceChildren(failure(error));
        }
      },
    },
    `Télécharger ${attachment.filename}`,
  );
  const item = h("li", {}, get, h("span", { class: "meta" }, ` (${size(attachment.size)})`));
  if (attachment.filed_document_id) {
    item.append(" ", h("a", { class: "badge", href: `#/dossier/${ins}/document/${attachment.filed_document_id}` }, "Classé dans le DMP"));
  } else if (attachment.dmp_document_id) {
    item.append(" ", h("span", { class: "badge" }, "Copie d'un document du DMP"));
  } else if (!isPatient(state)) {
    const button = h(
      "button",
      {
        type: "button",
        class: "secondary small",
        "aria-expanded": "false",
        onclick: async () => {
          button.disabled = true;
          try {
            const form = await fileForm(conversation, attachment, done);
            item.append(form);
            button.setAttribute("aria-expanded", "true");
            form.querySelector("select").focus();
          } catch (error) {
            status.replaceChildren(failure(error));
            button.disabled = false;
          }
        },
      },
      "Classer dans le DMP",
    );
    item.append(" ", button);
  }
  return item;
}

function messageItem(conversation, message, state, status, done) {
  const mine = sentByViewer(message, state);
  return h(
    "li",
    { class: mine ? "message mine" : "message" },
    h("p", { class: "from" }, h("strong", {}, mine ? "Vous" : partyName(message.sender)), h("span", { class: "meta" }, ` — ${dateTime(message.sent_at)}`)),
    h("p", { class: "body" }, message.body),
    message.attachments.length
      ? h("ul", { class: "attachments", "aria-label": "Pièces jointes" }, message.attachments.map((a) => attachmentItem(conversation, a, state, status, done)))
      : "",
    mine ? h("p", { class: "receipt" }, message.read_at ? `Lu le ${dateTime(message.read_at)}` : "Non lu") : "",
  );
}

function replyForm(conversation, state, ins) {
  if (conversation.status === "closed") {
    return notice(
      isPatient(state)
        ? "Cette conversation est close : vous ne pouvez plus y répondre. Seul le professionnel peut la rouvrir."
        : "Cette conversation est close : le patient ne peut plus y répondre. Rouvrez-la pour continuer l'échange.",
      "warning",
    );
  }
  const status = h("div", { class: "status" });
  const form = h(
    "form",
    { class: "card reply" },
    h("h2", {}, "Répondre"),
    field("Votre réponse", h("textarea", { name: "body", required: true, maxlength: 5000, rows: 4 })),
    attachmentFields(ins, isPatient(state)),
    h("button", { type: "submit" }, "Envoyer la réponse"),
    status,
  );
  onSubmit(form, status, async (data) => {
    await api.post(`${conversationPath(conversation.id)}/messages`, {
      body: required(data, "body", "Votre réponse"),
      attachments: await attachmentsOf(data),
    });
    go(`/messagerie/${conversation.id}`);
  });
  return form;
}

// The actions of each side: the professional closes and reopens; the patient blocks.
function sideActions(conversation, state, status, done) {
  const act = (path, said) => async () => {
    status.replaceChildren();
    try {
      await api.post(`${conversationPath(conversation.id)}/${path}`);
      await done(said);
    } catch (error) {
      status.replaceChildren(failure(error));
    }
  };
  const actions = h("div", { class: "actions" });
  if (!isPatient(state)) {
    actions.append(
      conversation.status === "open"
        ? h("button", { type: "button", class: "secondary", onclick: act("close", "Conversation close : le patient ne peut plus y répondre.") }, "Fermer la conversation")
        : h("button", { type: "button", onclick: act("reopen", "Conversation rouverte : le patient peut de nouveau répondre.") }, "Rouvrir la conversation"),
      h("a", { class: "button secondary", href: `#/dossier/${conversation.patient.id}` }, "Dossier du patient"),
    );
    return actions;
  }
  if (conversation.counterpart.kind !== "professional") return actions;
  const [ask, confirm] = confirmation({
    ask: "Bloquer ce professionnel",
    question: [
      `Bloquer ${partyName(conversation.counterpart)} ? Il ne pourra plus vous écrire ni consulter votre dossier médical, même en urgence, `,
      "et cette conversation sera close. Vous pourrez le débloquer depuis « Qui peut voir mon dossier ».",
    ],
    confirm: "Confirmer le blocage",
    action: act("block", "Ce professionnel est bloqué."),
  });
  actions.append(ask);
  return h("div", {}, actions, confirm);
}

export async function conversationView(main, { id }, state) {
  const thread = await api.get(conversationPath(id));
  const { conversation, messages } = thread;
  const status = h("div", { class: "status", "aria-live": "polite" });
  // After an action, the page again, with what happened said.
  const done = async (said) => {
    await conversationView(main, { id }, state);
    main.querySelector(".status").replaceChildren(notice(said, "success"));
  };
  const ins = conversation.patient.id;
  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/messagerie" }, "Messagerie"), " › Conversation"),
    h("h1", {}, conversation.subject),
    h(
      "p",
      { class: "meta" },
      `Avec ${otherSide(conversation, state)} · ouverte le ${dateTime(conversation.opened_at)} · `,
      conversation.status === "open" ? "en cours" : h("strong", {}, "close"),
    ),
    sideActions(conversation, state, status, done),
    status,
    h("ol", { class: "thread" }, messages.map((m) => messageItem(conversation, m, state, status, done))),
    replyForm(conversation, state, ins),
  );
}

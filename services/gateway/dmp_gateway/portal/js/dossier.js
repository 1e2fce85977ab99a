// The dossier, as the patient and as a professional see it: sections, documents, adding one.

import * as api from "./api.js";
import { checkbox, date, dateTime, field, h, notice, replace, size } from "./dom.js";
import { actingFor, catalogue, explain, failure, fullName, go, onSubmit, PROFESSIONS } from "./shell.js";

const base = (ins) => `/v1/dossiers/${api.q(ins)}`;
const isPatient = (state, ins) => state.me.kind === "patient" && state.me.ins === ins;
const isProfessional = (state) => state.me.kind !== "patient";
const STATUS = {
  open: "ouvert",
  closed: "fermé",
  deletion_requested: "fermé, suppression demandée",
};

function heading(state, ins, title) {
  const other = actingFor(ins);
  const whose = isPatient(state, ins) ? "" : other ? ` — ${fullName(other)}` : ` — patient ${ins}`;
  return h("h1", {}, `${title}${whose}`);
}

export async function overview(main, { ins }, state) {
  const cat = await catalogue();
  let record;
  try {
    record = await api.get(base(ins));
  } catch (error) {
    if (error instanceof api.Problem && error.type === "dossier-not-found") {
      return openForm(main, ins, state);
    }
    if (error instanceof api.Problem && error.status === 403 && isProfessional(state)) {
      return refused(main, ins, state, error, cat);
    }
    throw error;
  }
  const own = isPatient(state, ins);
  const other = actingFor(ins);
  const parts = [heading(state, ins, own ? "Mon dossier médical" : "Dossier médical")];
  parts.push(
    h(
      "p",
      { class: `state ${record.status}` },
      `Dossier ${STATUS[record.status]}`,
      record.status === "open" ? `, depuis le ${date(record.opened_at)}` : "",
      record.closed_at ? `, fermé le ${date(record.closed_at)}` : "",
      ".",
    ),
  );
  if (own) {
    const { pending } = await api.get(`${base(ins)}/documents?page_size=1`);
    if (pending > 0) {
      parts.push(
        notice(
          `${pending} document${pending > 1 ? "s" : ""} en attente : un professionnel de santé ` +
            "souhaite vous en parler lors d'une consultation avant que vous ne le lisiez. " +
            "Il apparaîtra ici ensuite (au plus tard un mois après son dépôt).",
          "pending",
        ),
      );
    }
  } else if (other) {
    parts.push(proxyNote(other));
  } else if (isProfessional(state)) {
    parts.push(await matrixNote(state, cat));
  }
  parts.push(
    h(
      "ul",
      { class: "sections" },
      Object.entries(cat.sections).map(([name, label]) => {
        const count = record.counts[name] || 0;
        return h(
          "li",
          {},
          h(
            "a",
            { href: `#/dossier/${ins}/documents/${name}` },
            h("span", { class: "label" }, label),
            h("span", { class: "count", "aria-label": `${count} document${count > 1 ? "s" : ""}` }, String(count)),
          ),
        );
      }),
    ),
  );
  const actions = h("div", { class: "actions" });
  if (record.status === "open") {
    if (!other || other.scope === "manage") {
      actions.append(h("a", { class: "button", href: `#/dossier/${ins}/ajouter` }, "Ajouter un document"));
    }
    if (isProfessional(state)) {
      actions.append(h("a", { class: "button secondary", href: `#/dossier/${ins}/ecrire` }, "Écrire au patient"));
      actions.append(h("a", { class: "button secondary", href: `#/dossier/${ins}/agenda` }, "Rendez-vous partagés"));
      actions.append(h("a", { class: "button secondary", href: `#/dossier/${ins}/urgence` }, "Accès en urgence"));
    }
  }
  parts.push(actions);
  if (own) parts.push(lifecycle(ins, record));
  replace(main, ...parts);
}

// What someone acting for the patient sees, and what they may do.
function proxyNote(other) {
  return h(
    "section",
    { class: "card explain" },
    h("h2", {}, "Ce que vous pouvez faire"),
    h(
      "p",
      {},
      other.scope === "manage"
        ? `Vous consultez le dossier de ${fullName(other)} et faites ses choix à sa place : professionnels autorisés ou bloqués, documents masqués, profil médical, documents personnels. `
        : `Vous consultez le dossier de ${fullName(other)}, sans pouvoir rien y changer. `,
      other.relation === "trusted_person"
        ? "Les documents qui lui sont encore cachés, et ceux qu'il ou elle ne partage pas avec ses proches, ne vous sont pas montrés. "
        : "",
      "Chaque consultation est tracée à votre nom, pour son compte.",
    ),
  );
}

async function matrixNote(state, cat) {
  const code = state.me.profession;
  const rules = cat.rules[code] || [];
  // "*": the matrix opens every type to this profession.
  const readable = rules.includes("*")
    ? ["tous les types de documents"]
    : rules.map((t) => cat.types[t]?.label || t);
  return h(
    "section",
    { class: "card explain" },
    h("h2", {}, "Ce que vous pouvez voir"),
    h(
      "p",
      {},
      `En tant que ${PROFESSIONS[code] || `professionnel (${code})`}, la matrice d'habilitation vous ouvre : `,
      readable.length ? readable.join(", ") : "aucun type de document",
      ", ainsi que les documents dont vous êtes l'auteur.",
    ),
    h(
      "p",
      {},
      "Les documents que le patient a masqués aux professionnels ne vous sont pas montrés, " +
        "sauf à son médecin traitant et à leur auteur.",
    ),
  );
}

function refused(main, ins, state, error, cat) {
  const why =
    error.type === "access-denied"
      ? "Le patient ne vous a pas autorisé à consulter son dossier, ou vous a bloqué."
      : explain(error);
  replace(
    main,
    heading(state, ins, "Dossier médical"),
    failure(error, `Accès refusé. ${why}`),
    h(
      "p",
      {},
      "Seuls les professionnels que le patient a autorisés (ou qui l'ont pris en charge) peuvent consulter son dossier. ",
      "En cas d'urgence vitale, vous pouvez demander un accès en urgence : il est tracé et le patient en est informé.",
    ),
    h("p", {}, h("a", { class: "button secondary", href: `#/dossier/${ins}/urgence` }, "Accès en urgence")),
  );
  return cat;
}

function openForm(main, ins, state) {
  const own = isPatient(state, ins);
  const status = h("div", { class: "status" });
  const form = h(
    "form",
    { class: "card narrow" },
    field(
      "Numéro de série de la carte Vitale",
      h("input", { name: "vitale_serial", required: true, inputmode: "numeric", maxlength: 32 }),
      "Il figure au dos de la carte Vitale.",
    ),
    checkbox(
      own ? "Je souhaite ouvrir mon dossier médical partagé" : "Le patient consent à l'ouverture de son dossier",
      false,
      "Le dossier pourra être fermé à tout moment ; il est alors conservé dix ans, puis supprimé.",
      { name: "patient_consent", required: true },
    ),
    h("button", { type: "submit" }, "Ouvrir le dossier"),
    status,
  );
  onSubmit(form, status, async (data) => {
    await api.post("/v1/dossiers", {
      ins,
      vitale_serial: String(data.get("vitale_serial")).trim(),
      patient_consent: data.get("patient_consent") === "on",
    });
    go(`/dossier/${ins}`);
  });
  replace(
    main,
    heading(state, ins, "Ouvrir le dossier médical partagé"),
    h("p", {}, own ? "Vous n'avez pas encore de dossier médical partagé." : "Ce patient n'a pas encore de dossier."),
    form,
  );
}

function lifecycle(ins, record) {
  const status = h("div", { class: "status" });
  const act = (path, done) => async () => {
    status.replaceChildren();
    try {
      await api.post(`${base(ins)}/${path}`);
      go(`/dossier/${ins}`);
      if (done) status.replaceChildren(notice(done));
    } catch (error) {
      status.replaceChildren(failure(error));
    }
  };
  const section = h("section", { class: "card" }, h("h2", {}, "Votre dossier"));
  if (record.status === "open") {
    section.append(
      h(
        "p",
        {},
        "Fermer le dossier : plus aucun professionnel ne pourra le consulter ni l'alimenter. ",
        "Vous pourrez le rouvrir à tout moment ; sans réouverture, il est supprimé au bout de dix ans.",
      ),
      h("button", { type: "button", class: "secondary", onclick: act("close") }, "Fermer mon dossier"),
    );
  } else {
    section.append(
      h("p", {}, "Rouvrir le dossier rend son contenu à nouveau accessible, selon vos choix d'accès."),
      h("button", { type: "button", onclick: act("reopen") }, "Rouvrir mon dossier"),
    );
  }
  section.append(status);
  return section;
}

// ---------------------------------------------------------------------------- documents

function badges(doc, own = false) {
  const out = [];
  if (own && doc.hidden_from_trusted_persons) out.push(h("span", { class: "badge unshared" }, "Non partagé avec mes proches"));
  if (doc.masked_from_professionals) out.push(h("span", { class: "badge masked" }, "Masqué aux professionnels"));
  if (doc.hidden_from_patient) out.push(h("span", { class: "badge hidden" }, "Invisible pour le patient"));
  if (doc.status === "archived") out.push(h("span", { class: "badge" }, "Archivé"));
  return out;
}

export async function list(main, { ins, section }, state) {
  const cat = await catalogue();
  const label = cat.sections[section] || section;
  const items = h("ul", { class: "documents" });
  const more = h("div", {});
  const load = async (cursor) => {
    const page = await api.get(
      `${base(ins)}/documents?section=${api.q(section)}${cursor ? `&cursor=${api.q(cursor)}` : ""}`,
    );
    for (const doc of page.items) {
      items.append(
        h(
          "li",
          {},
          h("a", { href: `#/dossier/${ins}/document/${doc.id}` }, doc.title),
          h(
            "p",
            { class: "meta" },
            `${cat.types[doc.type_code]?.label || doc.type_code} · ${date(doc.created_at)} · ${authorOf(doc, ins)}`,
          ),
          badges(doc, isPatient(state, ins)),
        ),
      );
    }
    more.replaceChildren(
      page.next ? h("button", { type: "button", class: "secondary", onclick: () => load(page.next) }, "Voir plus") : "",
    );
    return page;
  };
  const first = await load();
  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: `#/dossier/${ins}` }, "Dossier"), " › ", label),
    heading(state, ins, label),
    first.items.length ? items : h("p", {}, "Aucun document dans cette rubrique."),
    more,
  );
}

const authorOf = (doc, ins) => (doc.author === ins ? "déposé par le patient" : `auteur ${doc.author}`);

const INLINE = { "text/plain": "text", "image/png": "image", "image/jpeg": "image", "application/pdf": "pdf" };

async function showContent(doc, ins) {
  const response = await api.call("GET", `${base(ins)}/documents/${doc.id}/content`, undefined, { raw: true });
  const blob = new Blob([await response.arrayBuffer()], { type: doc.mime_type });
  const kind = INLINE[doc.mime_type];
  if (kind === "text") return h("pre", { class: "content", tabindex: 0 }, await blob.text());
  const url = URL.createObjectURL(kind === "pdf" ? new Blob([blob], { type: "application/pdf" }) : blob);
  if (kind === "image") return h("img", { class: "content", src: url, alt: doc.title });
  if (kind === "pdf") return h("iframe", { class: "content", src: url, title: doc.title });
  return h("a", { class: "button secondary", href: url, download: doc.title }, `Télécharger (${size(doc.size)})`);
}

export async function detail(main, { ins, id }, state) {
  const cat = await catalogue();
  const doc = await api.get(`${base(ins)}/documents/${api.q(id)}`);
  const status = h("div", { class: "status" });
  // `control`: a checkbox the change came from, set back when it is refused.
  const update = (body, done, control) => async () => {
    try {
      await api.patch(`${base(ins)}/documents/${api.q(id)}`, body);
      await detail(main, { ins, id }, state);
      main.querySelector(".status").replaceChildren(notice(done));
    } catch (error) {
      if (control) control.checked = !control.checked;
      status.replaceChildren(failure(error));
    }
  };
  const own = isPatient(state, ins);
  const other = actingFor(ins);
  const mine = doc.author === (state.me.rpps || state.me.ins);
  const actions = h("div", { class: "actions" });
  if (own || other?.scope === "manage") {
    actions.append(
      doc.masked_from_professionals
        ? h("button", { type: "button", onclick: update({ masked_from_professionals: false }, "Le document est de nouveau visible par les professionnels autorisés.") }, "Ne plus masquer aux professionnels")
        : h("button", { type: "button", class: "secondary", onclick: update({ masked_from_professionals: true }, "Le document est masqué : seuls son auteur et votre médecin traitant le voient.") }, "Masquer aux professionnels"),
    );
  }
  if (mine && doc.hidden_from_patient) {
    actions.append(
      h("button", { type: "button", onclick: update({ hidden_from_patient: false }, "Le patient voit désormais ce document.") }, "Rendre visible au patient"),
    );
  }
  if (mine) {
    actions.append(
      h("button", {
        type: "button",
        class: "danger",
        onclick: async () => {
          if (!confirm("Supprimer ce document du dossier ?")) return;
          try {
            await api.del(`${base(ins)}/documents/${api.q(id)}`);
            go(`/dossier/${ins}/documents/${doc.section}`);
          } catch (error) {
            status.replaceChildren(failure(error));
          }
        },
      }, "Supprimer"),
    );
  }
  let content;
  try {
    content = await showContent(doc, ins);
  } catch (error) {
    content = failure(error);
  }
  replace(
    main,
    h(
      "p",
      { class: "crumbs" },
      h("a", { href: `#/dossier/${ins}` }, "Dossier"),
      " › ",
      h("a", { href: `#/dossier/${ins}/documents/${doc.section}` }, cat.sections[doc.section] || doc.section),
    ),
    h("h1", {}, doc.title),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Type"), h("dd", {}, cat.types[doc.type_code]?.label || doc.type_code),
      h("dt", {}, "Déposé le"), h("dd", {}, dateTime(doc.created_at)),
      h("dt", {}, "Auteur"), h("dd", {}, authorOf(doc, ins)),
      h("dt", {}, "Format"), h("dd", {}, `${doc.mime_type}, ${size(doc.size)}`),
    ),
    badges(doc, own),
    actions,
    own ? sharing(doc, update) : "",
    status,
    h("section", { class: "viewer", "aria-label": "Contenu du document" }, content),
  );
}

// The patient's own choice, never made by someone acting for them: whether the people they
// trust see this document.
function sharing(doc, update) {
  const box = checkbox(
    "Ne pas partager avec mes proches",
    doc.hidden_from_trusted_persons,
    "Vos personnes de confiance ne verront pas ce document, même si vous leur avez donné accès à votre dossier.",
    { name: "hidden_from_trusted_persons" },
  );
  box.querySelector("input").addEventListener("change", (event) => {
    const hidden = event.target.checked;
    update(
      { hidden_from_trusted_persons: hidden },
      hidden
        ? "Ce document n'est plus partagé avec vos proches."
        : "Ce document est de nouveau partagé avec vos proches qui ont accès à votre dossier.",
      event.target,
    )();
  });
  return h("div", { class: "sharing" }, box);
}

export function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export async function add(main, { ins }, state) {
  const cat = await catalogue();
  // The patient, or someone acting for them, adds a personal document.
  const other = actingFor(ins);
  const own = isPatient(state, ins) || Boolean(other);
  const status = h("div", { class: "status" });
  const types = Object.entries(cat.types).filter(([code]) => !["REMB", "DOC_PATIENT"].includes(code));
  const form = h(
    "form",
    { class: "card narrow" },
    field("Titre", h("input", { name: "title", required: true, maxlength: 200 })),
    own
      ? h("input", { type: "hidden", name: "type_code", value: "DOC_PATIENT" })
      : field(
          "Type de document",
          h("select", { name: "type_code", required: true }, types.map(([code, t]) => h("option", { value: code }, `${t.label} (${cat.sections[t.section]})`))),
        ),
    field("Fichier", h("input", { name: "file", type: "file", required: true }), "PDF, image (PNG, JPEG) ou texte : affichés dans le portail ; les autres formats sont téléchargés."),
    own
      ? ""
      : checkbox(
          "Invisible pour le patient jusqu'à la consultation d'annonce",
          false,
          "Pour un diagnostic à annoncer de vive voix : le patient sait qu'un document l'attend, sans pouvoir le lire. Vous le rendrez visible après l'annonce ; sinon il le devient au bout d'un mois.",
          { name: "hidden_from_patient" },
        ),
    h("button", { type: "submit" }, "Ajouter au dossier"),
    status,
  );
  onSubmit(form, status, async (data) => {
    const file = data.get("file");
    if (!(file instanceof File) || file.size === 0) throw new Error("Choisissez un fichier.");
    const created = await api.post(`${base(ins)}/documents`, {
      type_code: data.get("type_code"),
      title: String(data.get("title")).trim(),
      mime_type: file.type || "application/octet-stream",
      content_base64: await base64Of(file),
      hidden_from_patient: data.get("hidden_from_patient") === "on",
    });
    go(`/dossier/${ins}/document/${created.id}`);
  });
  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: `#/dossier/${ins}` }, "Dossier"), " › Ajouter"),
    heading(state, ins, own ? "Ajouter un document personnel" : "Ajouter un document"),
    other
      ? h("p", {}, `Il sera rangé dans l'espace personnel de ${fullName(other)}.`)
      : own
        ? h("p", {}, "Il sera rangé dans votre espace personnel. Vous pourrez le masquer aux professionnels.")
        : "",
    form,
  );
}

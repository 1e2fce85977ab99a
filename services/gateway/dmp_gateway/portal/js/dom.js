// Building the page without ever parsing HTML: every text goes in as text.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key in el && typeof value !== "string") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const DATE = new Intl.DateTimeFormat("fr-FR", { dateStyle: "long" });
const DATE_TIME = new Intl.DateTimeFormat("fr-FR", { dateStyle: "medium", timeStyle: "short" });

export const date = (iso) => (iso ? DATE.format(new Date(iso)) : "");
export const dateTime = (iso) => (iso ? DATE_TIME.format(new Date(iso)) : "");

export function size(bytes) {
  if (bytes < 1024) return `${bytes} o`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} Ko`;
  return `${(bytes / 1024 / 1024).toFixed(1)} Mo`;
}

// A labelled field: the label names the control, the hint is read with it.
let fieldCount = 0;
export function field(label, control, hint) {
  const id = control.id || `champ-${++fieldCount}`;
  control.id = id;
  const parts = [h("label", { for: id }, label), control];
  if (hint) {
    const hintId = `${id}-aide`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("p", { class: "hint", id: hintId }, hint));
  }
  return h("div", { class: control.type === "checkbox" ? "field check" : "field" }, parts);
}

export function checkbox(label, checked, hint, props = {}) {
  const box = h("input", { type: "checkbox", checked, ...props });
  const id = `champ-${++fieldCount}`;
  box.id = id;
  const parts = [box, h("label", { for: id }, label)];
  if (hint) {
    box.setAttribute("aria-describedby", `${id}-aide`);
    parts.push(h("p", { class: "hint", id: `${id}-aide` }, hint));
  }
  return h("div", { class: "field check" }, parts);
}

// A message in the page's live region: read aloud by screen readers, seen by everyone.
export function notice(text, kind = "info") {
  const el = h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  return el;
}

// An action a click cannot undo: a button asks, and the question, shown in the page in its place
// (no dialog box), confirms or cancels. Returns the button and the question (hidden until asked).
export function confirmation({ ask, question, confirm, action, small = false }) {
  const asking = h("button", { type: "button", class: small ? "secondary small" : "secondary" }, ask);
  const group = h(
    "div",
    { class: "confirm notice warning", hidden: true, role: "group", "aria-label": confirm },
    h("p", {}, question),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", class: "danger", onclick: action }, confirm),
      h(
        "button",
        {
          type: "button",
          class: "secondary",
          onclick: () => {
            group.hidden = true;
            asking.hidden = false;
            asking.focus();
          },
        },
        "Annuler",
      ),
    ),
  );
  asking.addEventListener("click", () => {
    group.hidden = false;
    asking.hidden = true;
    group.querySelector("button").focus();
  });
  return [asking, group];
}

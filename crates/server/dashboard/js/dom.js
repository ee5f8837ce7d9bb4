// Building DOM nodes without innerHTML: tag values, budget names and model names come from API
// clients, so every piece of text goes in as a text node and can never become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style") Object.assign(node.style, v); // CSSOM: allowed by the CSP, unlike style=""
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An HTML element: `h("button", {class: "primary", onclick}, "Save")`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replaces the children of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

let uid = 0;
/** A fresh id for `for=` / `aria-labelledby=` pairs. */
export function nextId(prefix = "f") {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form field: label, control, optional hint (tied with aria-describedby). */
export function field(label, control, hint) {
  const id = control.id || nextId("field");
  control.id = id;
  const parts = [h("label", { for: id }, label), control];
  if (hint) {
    const hid = `${id}-hint`;
    control.setAttribute("aria-describedby", hid);
    parts.push(h("p", { class: "hint", id: hid }, hint));
  }
  return h("div", { class: "field" }, parts);
}

/** Says `message` to screen readers (the shell's polite live region). */
export function announce(message) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // A new text node a moment later makes screen readers read the same message twice in a row.
  setTimeout(() => {
    region.textContent = message;
  }, 50);
}

/** A short message in the corner (success or error), also announced. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const t = h("div", { class: ["toast", kind], role: kind === "error" ? "alert" : "status" }, message);
  box.append(t);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

/** An empty state: what this is, why it is empty, what to do next. */
export function emptyState(title, ...body) {
  return h("div", { class: "empty" }, h("h3", null, title), body);
}

/** A code block with a copy button. */
export function codeBlock(text, label = "Copy") {
  const pre = h("pre", { class: "code" }, h("code", null, text));
  const button = h(
    "button",
    {
      type: "button",
      class: "ghost small copy",
      "aria-label": `${label} to clipboard`,
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(text);
          button.textContent = "Copied";
        } catch {
          button.textContent = "Select and copy";
        }
        setTimeout(() => (button.textContent = label), 1500);
      },
    },
    label,
  );
  return h("div", { class: "code-wrap" }, pre, button);
}

/**
 * A modal dialog (native <dialog>: focus is trapped and Escape closes it). `build(close)` returns
 * the content; resolves with whatever `close(value)` was given (undefined on Escape).
 */
export function modal(title, build) {
  return new Promise((resolve) => {
    const titleId = nextId("dlg");
    const dialog = h("dialog", { class: "modal", "aria-labelledby": titleId });
    const close = (value) => {
      dialog.close();
      dialog.remove();
      resolve(value);
    };
    dialog.addEventListener("cancel", (e) => {
      e.preventDefault();
      close(undefined);
    });
    dialog.append(h("h2", { id: titleId }, title), build(close));
    document.body.append(dialog);
    dialog.showModal();
    const first = dialog.querySelector("input, select, textarea, button.primary, button");
    first?.focus();
  });
}

/** Asks a yes/no question in a modal; resolves true when confirmed. */
export function confirmDialog(title, message, confirmLabel, danger = true) {
  return modal(title, (close) =>
    h(
      "div",
      null,
      h("p", null, message),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "ghost", onclick: () => close(false) }, "Cancel"),
        h(
          "button",
          { type: "button", class: danger ? "danger" : "primary", onclick: () => close(true) },
          confirmLabel,
        ),
      ),
    ),
  ).then(Boolean);
}

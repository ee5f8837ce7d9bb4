// Sign-in: an admin key (bsa_…) manages everything; a project key (bsk_…) sees one project.

import { ApiError } from "../api.js";
import { field, h } from "../dom.js";

export function render({ message, onKey }) {
  const input = h("input", {
    type: "password",
    name: "key",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const error = h("p", { class: "form-error", role: "alert" }, message ?? "");
  const button = h("button", { type: "submit", class: "primary wide" }, "Sign in");
  const form = h(
    "form",
    {
      class: "signin-form",
      "aria-labelledby": "signin-title",
      onsubmit: async (e) => {
        e.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        button.disabled = true;
        error.textContent = "";
        try {
          await onKey(key);
        } catch (err) {
          error.textContent =
            err instanceof ApiError && err.status === 401
              ? "This server does not know that key. Check it, or ask for a new one."
              : err.message;
          button.disabled = false;
          input.focus();
        }
      },
    },
    h("h1", { id: "signin-title" }, "Sign in to Bursora"),
    h("p", { class: "muted" }, "LLM spend, budgets and blocked calls, live."),
    field(
      "API key",
      input,
      "An admin key (bsa_…) manages projects, budgets and keys; a project key (bsk_…) shows one project. The server printed an admin key on its first start.",
    ),
    error,
    button,
    h(
      "p",
      { class: "fineprint" },
      "The key stays in this tab (session storage) and is sent only to this server, as an Authorization header.",
    ),
  );
  return h(
    "div",
    { class: "signin" },
    h("div", { class: "signin-brand" }, h("img", { src: "favicon.svg", alt: "", width: 36, height: 36 }), h("span", null, "Bursora")),
    form,
  );
}

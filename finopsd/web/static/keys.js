// /keys: the forms and buttons call the admin API with the page's CSRF token (the login
// cookie alone is refused) and the entry's version (If-Match), so two admins editing at
// once get a 409 instead of one losing the other's change. A new secret is shown once.
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const problem = document.getElementById("problem");
  if (!meta || !meta.content) return;

  async function call(method, url, body, version) {
    const headers = { "X-CSRF-Token": meta.content };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (version) headers["If-Match"] = '"v' + version + '"';
    const resp = await fetch(url, { method, headers, credentials: "same-origin",
                                    body: body === undefined ? undefined : JSON.stringify(body) });
    const answer = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error((answer.error && answer.error.message) || "HTTP " + resp.status);
    return answer;
  }

  function show(error) {
    if (problem) problem.textContent = error.message;
  }

  const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
  const integer = (text) => text.trim() === "" ? undefined : Number(text);

  // a form's inputs as the API's JSON: an empty field means "none" (all models, no budget)
  function fields(form) {
    const f = form.elements;
    const body = {};
    if (f.name) body.name = f.name.value.trim();
    if (f.team) body.team = f.team.value.trim() || null;
    if (f.models) body.models = list(f.models.value).length ? list(f.models.value) : null;
    body.budgets = list(f.budgets.value).map((b) => {
      const [usd, period] = b.split("/");
      return { usd: Number(usd), period: (period || "").trim() };
    });
    const rate = {};
    if (integer(f.rpm.value) !== undefined) rate.requests_per_minute = integer(f.rpm.value);
    if (integer(f.tpm.value) !== undefined) rate.tokens_per_minute = integer(f.tpm.value);
    body.rate_limit = rate;
    if (f.expires) body.expires = f.expires.value.trim() || null;
    body.description = f.description.value.trim() || null;
    body.owner = f.owner.value.trim() || null;
    if (f.enabled) body.enabled = f.enabled.checked;
    return body;
  }

  function shownOnce(answer) {
    const box = document.getElementById("shown-once");
    document.getElementById("secret").value = answer.secret;
    const p = answer.roo_code;
    document.getElementById("roo-profile").textContent =
      "Base URL: " + p.base_url + "\nAPI Key:  " + p.api_key + "\nModel:    " + (p.model || "(any)");
    box.hidden = false;
    box.scrollIntoView();
  }

  for (const form of document.querySelectorAll("form.api-form")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const answer = await call(form.dataset.method, form.dataset.url, fields(form), form.dataset.version);
        if (answer.secret) shownOnce(answer); else location.reload();
      } catch (e) { show(e); }
    });
  }
  for (const button of document.querySelectorAll("button.api-action")) {
    button.addEventListener("click", async () => {
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
      try {
        const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
        const answer = await call(button.dataset.method, button.dataset.url, body, button.dataset.version);
        if (answer.secret) shownOnce(answer); else location.reload();
      } catch (e) { show(e); }
    });
  }
  const copy = document.getElementById("copy");
  if (copy) copy.addEventListener("click", () => {
    const secret = document.getElementById("secret");
    secret.select();
    if (navigator.clipboard) navigator.clipboard.writeText(secret.value).catch(() => {});
  });
})();

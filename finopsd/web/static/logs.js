// Live tail for /logs: while the box is ticked, poll /api/logs every 2 s with the page's
// own filters and put requests not yet shown at the top. Rows are built with
// textContent only; the one HTML value, a search snippet, comes escaped by the server.
"use strict";
(function () {
  const box = document.getElementById("tail");
  const table = document.getElementById("rows");
  if (!box || !table || table.dataset.tail !== "1") return;
  const body = table.tBodies[0];
  const status = document.getElementById("tail-status");
  const seen = new Set(Array.from(body.rows, (r) => r.dataset.id));
  const LOOKBACK_S = 300; // a long stream is logged when it ends, so look back past the newest start
  let timer = null;
  let primed = false;
  let totalsAt = 0;
  const TOTALS_EVERY_MS = 10000; // totals over a broad search cost more than the rows: not every poll

  const ms = (v) => v == null ? "—" : v < 1000 ? Math.round(v) + " ms" : (v / 1000).toFixed(2) + " s";
  const cost = (v) => v == null ? "—" : v >= 1 ? "$" + v.toFixed(2) : v >= 0.0001 || v === 0 ? "$" + v.toFixed(4) : "$" + v.toFixed(6);
  const tokens = (u) => u.prompt_tokens == null && u.completion_tokens == null ? "—"
    : (u.prompt_tokens ?? "?") + " → " + (u.completion_tokens ?? "?");

  function cell(tr, text, cls) {
    const td = tr.insertCell();
    if (cls) td.className = cls;
    if (text instanceof Node) td.append(text); else td.textContent = text;
    return td;
  }
  function link(id, text) {
    const a = document.createElement("a");
    a.href = "/logs/" + encodeURIComponent(id);
    a.textContent = text;
    return a;
  }
  function row(item) {
    const tr = document.createElement("tr");
    tr.dataset.id = item.id;
    tr.dataset.ts = item.ts;
    tr.className = "fresh";
    cell(tr, link(item.id, (item.time || "").slice(0, 19).replace("T", " ")), "time");
    cell(tr, [item.key, item.team, item.user, item.project].filter(Boolean).join(" / ") || "—");
    cell(tr, (item.provider || "?") + " / " + (item.upstream_model || item.model || "?"));
    const st = document.createElement("span");
    st.className = "st st-" + item.status;
    st.textContent = item.status + (item.status !== "ok" && item.status_code ? " " + item.status_code : "");
    if (item.error) st.title = [item.error.type, item.error.message].filter(Boolean).join(" — ");
    cell(tr, st);
    cell(tr, ms(item.duration_ms), "num");
    cell(tr, ms(item.ttft_ms), "num");
    cell(tr, tokens(item.usage || {}), "num");
    cell(tr, cost(item.cost_usd), "num");
    const a = link(item.id, item.snippet ? "" : item.preview || "");
    if (item.snippet) a.innerHTML = item.snippet; // server-escaped, <mark> only
    cell(tr, a, "prompt");
    return tr;
  }
  function bold(parent, text) {
    const b = document.createElement("b");
    b.textContent = text;
    parent.append(b);
  }
  async function refreshTotals() {
    // totals only when rows arrived: over a broad filter they cost more than the page
    const params = new URLSearchParams(location.search);
    params.delete("cursor");
    params.set("limit", "1");
    const resp = await fetch("/api/logs?" + params, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const t = resp.ok ? (await resp.json()).totals : null;
    const el = document.getElementById("totals");
    if (!t || !el) return;
    el.replaceChildren();
    bold(el, t.requests.toLocaleString("en"));
    el.append(t.requests === 1 ? " request · " : " requests · ");
    bold(el, t.prompt_tokens.toLocaleString("en"));
    el.append(" prompt + ");
    bold(el, t.completion_tokens.toLocaleString("en"));
    el.append(" completion tokens · ");
    bold(el, cost(t.cost_usd));
    el.append(" · ");
    bold(el, (t.error_rate * 100).toFixed(1) + " %");
    el.append(" errors");
  }
  function newestTs() {
    let t = 0;
    for (const r of body.rows) t = Math.max(t, Number(r.dataset.ts) || 0);
    return t;
  }
  async function poll() {
    const params = new URLSearchParams(location.search);
    params.delete("cursor");
    params.set("limit", "100");
    params.set("totals", "false");
    params.set("preview", "true");
    const newest = newestTs();
    if (newest && !params.get("since")) params.set("since", String(newest - LOOKBACK_S));
    try {
      const resp = await fetch("/api/logs?" + params, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const data = await resp.json();
      let fresh = data.items.filter((i) => !seen.has(i.id)).reverse(); // oldest first: newest ends on top
      if (!primed) {
        // The first poll also returns rows of the look-back window that were beyond this
        // page's limit; they are old, not new. Only rows newer than the page's newest are.
        fresh = fresh.filter((i) => { seen.add(i.id); return i.ts > newest; });
        primed = true;
      }
      for (const item of fresh) {
        seen.add(item.id);
        body.prepend(row(item));
      }
      if (fresh.length) {
        document.getElementById("empty")?.remove();
        if (Date.now() - totalsAt > TOTALS_EVERY_MS) {
          totalsAt = Date.now();
          await refreshTotals();
        }
      }
      status.textContent = "updated " + new Date().toLocaleTimeString();
    } catch (err) {
      status.textContent = "tail paused: " + err.message;
    }
  }
  function toggle() {
    clearInterval(timer);
    timer = null;
    sessionStorage.setItem("finopsd.tail", box.checked ? "1" : "");
    if (box.checked) { poll(); timer = setInterval(poll, 2000); } else { status.textContent = ""; }
  }
  box.addEventListener("change", toggle);
  if (sessionStorage.getItem("finopsd.tail") === "1") { box.checked = true; toggle(); }
})();

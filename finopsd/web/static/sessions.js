// Live sessions: the list page and a running task's timeline refresh themselves every 2 s.
// Both fetch the page they are on (same filters) and take the server's rendered rows or
// turns, so nothing here renders row text: the server escaped it, and DOMParser output
// never runs scripts (nor could it, under the page's CSP).
"use strict";
(function () {
  const EVERY_MS = 2000;
  const status = document.getElementById("live-status");
  const parse = (text) => new DOMParser().parseFromString(text, "text/html");

  async function fetchPage(url) {
    const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    return parse(await resp.text());
  }
  function swapChildren(id, doc) {
    const here = document.getElementById(id);
    const there = doc.getElementById(id);
    if (here && there) here.replaceChildren(...Array.from(there.childNodes, (n) => document.importNode(n, true)));
  }
  // a slow answer must not overlap the next poll: skip a tick while one is out
  function single(fn) {
    let busy = false;
    return async () => {
      if (busy || document.hidden) return; // a background tab need not cost the gateway a query every 2 s
      busy = true;
      try { await fn(); } finally { busy = false; }
    };
  }
  function stamp() {
    if (status) status.textContent = "updated " + new Date().toLocaleTimeString();
  }

  // ---------------------------------------------------------------- the sessions list
  function liveList(table) {
    const box = document.getElementById("live");
    const body = table.tBodies[0];
    // totals over a broad filter cost more than the rows: every 10 s, or on the poll after rows changed
    const TOTALS_EVERY = 5;
    let timer = null;
    let polls = 0;
    let changed = false;
    const refresh = single(async () => {
      try {
        const params = new URLSearchParams(location.search);
        const withTotals = changed || ++polls % TOTALS_EVERY === 0;
        if (!withTotals) params.set("totals", "false");
        const doc = await fetchPage(location.pathname + "?" + params);
        const rows = doc.querySelector("#rows tbody");
        if (!rows) throw new Error("no rows in the answer");
        const before = new Map(Array.from(body.rows, (r) => [r.dataset.id, r.textContent]));
        const fresh = Array.from(rows.rows, (r) => document.importNode(r, true));
        for (const r of fresh) if (before.get(r.dataset.id) !== r.textContent) r.classList.add("fresh");
        body.replaceChildren(...fresh);
        if (withTotals) swapChildren("totals", doc);
        changed = !withTotals && (fresh.length !== before.size || fresh.some((r) => r.classList.contains("fresh")));
        swapChildren("pager", doc);
        swapChildren("notice", doc); // "no sessions match" comes and goes with the rows
        stamp();
      } catch (err) {
        if (status) status.textContent = "live paused: " + err.message;
      }
    });
    function toggle() {
      clearInterval(timer);
      timer = null;
      sessionStorage.setItem("finopsd.live", box.checked ? "on" : "off");
      if (box.checked) timer = setInterval(refresh, EVERY_MS);
      else if (status) status.textContent = "";
    }
    box.addEventListener("change", toggle);
    if (sessionStorage.getItem("finopsd.live") === "off") box.checked = false;
    toggle();
  }

  // ---------------------------------------------------------------- one running task
  function liveTimeline(main) {
    const turns = document.getElementById("turns");
    let last = Number(main.dataset.lastTurn) || 0;
    let timer = null;
    const refresh = single(async () => {
      try {
        const doc = await fetchPage(location.pathname + "?after=" + last);
        swapChildren("facts", doc);
        for (const section of doc.querySelectorAll("#turns section.turn")) {
          const n = Number(section.dataset.turn);
          if (n <= last) continue;
          const node = document.importNode(section, true);
          node.classList.add("fresh");
          turns.append(node);
          last = n;
        }
        main.dataset.lastTurn = String(last);
        const running = doc.querySelector("main")?.dataset.running === "1";
        if (!running) {
          clearInterval(timer);
          main.dataset.running = "";
          if (status) status.textContent = "no longer running (no new turn for 2 minutes)";
        } else stamp();
      } catch (err) {
        if (status) status.textContent = "live paused: " + err.message;
      }
    });
    timer = setInterval(refresh, EVERY_MS);
  }

  const table = document.getElementById("rows");
  if (table && table.dataset.live === "1") liveList(table);
  const main = document.querySelector("main.timeline");
  if (main && main.dataset.running === "1") liveTimeline(main);
})();

/* The runs list: statuses kept current by reading the same page of /v1/runs every few
   seconds (one request per open list, however many runs it shows). */
"use strict";
(function () {
  const EVERY_MS = 4000;

  async function refresh(table, notice) {
    const query = new URLSearchParams(table.dataset.query);
    query.set("limit", table.dataset.limit);
    if (table.dataset.cursor) query.set("cursor", table.dataset.cursor);
    let page;
    try { page = await keel.api("GET", "/v1/runs?" + query.toString()); }
    catch (e) { notice.textContent = "Could not refresh: " + e.message; return; }
    let fresh = 0;
    for (const run of page.runs) {
      const row = table.querySelector('tr[data-run-id="' + CSS.escape(run.run_id) + '"]');
      if (!row) { fresh += 1; continue; }
      const badge = row.querySelector("[data-status]");
      if (badge.textContent !== run.status) {
        badge.textContent = run.status;
        badge.className = "status status-" + run.status;
      }
      if (run.usage && run.usage.cost_usd !== undefined) row.querySelector("[data-cost]").textContent = "$" + (run.usage.cost_usd || 0).toFixed(4);
    }
    notice.textContent = fresh && !table.dataset.cursor ? fresh + " newer run(s): reload to see them." : "";
  }

  document.addEventListener("DOMContentLoaded", function () {
    const table = document.getElementById("runs");
    const notice = document.getElementById("runs-live");
    setInterval(function () { if (!document.hidden) refresh(table, notice); }, EVERY_MS);
  });
})();

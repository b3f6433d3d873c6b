/* A flow graph's live counts: the same counts the page was drawn with, read again from
   /v1/flows/{name}?counts_only=true every few seconds (one request per open page) and put
   in place with textContent. */
"use strict";
(function () {
  const EVERY_MS = 3000;

  function put(selector, attr, values) {
    for (const node of document.querySelectorAll(selector)) {
      const value = values[node.getAttribute(attr)];
      if (value !== undefined && node.textContent !== String(value)) {
        node.textContent = String(value);
        node.classList.add("changed");
      }
    }
  }

  async function refresh(figure, live) {
    const query = new URLSearchParams({ hours: figure.dataset.hours, counts_only: "true" });
    let data;
    try { data = await keel.api("GET", "/v1/flows/" + encodeURIComponent(figure.dataset.name) + "?" + query.toString()); }
    catch (e) { live.textContent = "Could not refresh: " + e.message; return; }
    const counts = data.counts;
    put("[data-count-node]", "data-count-node", counts.nodes);
    put("[data-count-edge]", "data-count-edge", counts.edges);
    document.getElementById("flow-runs").textContent = String(counts.runs);
    live.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
  }

  document.addEventListener("DOMContentLoaded", function () {
    const figure = document.getElementById("flow");
    const live = document.getElementById("flow-live");
    setInterval(function () { if (!document.hidden) refresh(figure, live); }, EVERY_MS);
  });
})();

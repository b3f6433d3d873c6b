/* keel console: what every page shares. Data is only ever put in the page with textContent. */
"use strict";
window.keel = (function () {
  function cookie(name) {
    for (const part of document.cookie.split(";")) {
      const [k, ...v] = part.trim().split("=");
      if (k === name) return decodeURIComponent(v.join("="));
    }
    return "";
  }

  /* A call to the JSON API with the session cookie; state changes carry the CSRF token.
     A refusal throws an Error with the API's message and status. */
  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    const init = { method: method, headers: headers, credentials: "same-origin" };
    if (method !== "GET") headers["X-CSRF-Token"] = cookie("keel_csrf");
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      let message = data && data.error ? data.error.message : "HTTP " + response.status;
      if (response.status === 401) message = "Your session ended: sign in again (reload the page).";
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function pretty(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "string") return value;
    return JSON.stringify(value, null, 2);
  }

  function duration(seconds) {
    const s = Math.abs(Math.round(seconds));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + r + "s";
    return r + "s";
  }

  /* SLA countdowns: "due in 3h 2m" or "overdue 5m" (marked). */
  function tickSla() {
    const now = Date.now() / 1000;
    for (const node of document.querySelectorAll(".sla[data-due]")) {
      const left = Number(node.dataset.due) - now;
      node.textContent = left >= 0 ? "due in " + duration(left) : "overdue " + duration(left);
      node.classList.toggle("overdue", left < 0);
    }
  }

  /* Keep the session renewed while a page stays open; say so when it has ended. */
  async function checkSession() {
    if (document.hidden) return;
    let response;
    try { response = await fetch("/console/session", { credentials: "same-origin" }); } catch (e) { return; }
    if (response.status !== 401 || document.getElementById("session-ended")) return;
    const banner = el("p", "notice", "Your session has ended. ");
    banner.id = "session-ended";
    banner.setAttribute("role", "alert");
    const link = el("a", null, "Sign in again");
    const form = location.pathname.startsWith("/chat") ? "/chat/login" : "/console/login";
    link.href = form + "?next=" + encodeURIComponent(location.pathname + location.search);
    banner.append(link);
    document.getElementById("main").prepend(banner);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (document.querySelector("form.who")) setInterval(checkSession, 60000);
    tickSla();
    if (document.querySelector(".sla[data-due]")) setInterval(tickSla, 1000);
  });

  return { cookie: cookie, api: api, el: el, pretty: pretty, duration: duration };
})();

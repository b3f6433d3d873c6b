/* Approvals and escalations: each form posts to the JSON API (with the CSRF token) and shows
   the API's own message when it refuses (a bad edited argument, a decision already made). */
"use strict";
(function () {
  const DONE = {
    approve: "Approved. The run continues.",
    deny: "Denied. The agent reads your comment.",
    claim: "Claimed: colleagues see you are on it.",
    answer: "Answered. Your answer is the run's output.",
    resume: "Handed back to the agent.",
    dismiss: "Dismissed. The run is cancelled.",
  };

  function parseArg(input) {
    const kind = input.dataset.type, raw = input.value.trim();
    if (kind === "number" || kind === "integer") {
      if (raw === "" || isNaN(Number(raw))) throw new Error(input.dataset.arg + " must be a number");
      return Number(raw);
    }
    if (kind === "boolean") return raw === "true";
    if (kind === "json") {
      try { return JSON.parse(raw); } catch (e) { throw new Error(input.dataset.arg + " is not valid JSON"); }
    }
    return input.value;
  }

  function body(form, kind) {
    const field = (name) => { const f = form.elements.namedItem(name); return f ? f.value.trim() : ""; };
    if (kind === "approve") {
      const original = JSON.parse(form.dataset.original || "{}");
      const args = {};
      for (const input of form.querySelectorAll("[data-arg]")) args[input.dataset.arg] = parseArg(input);
      const out = { comment: field("comment") || null };
      const changed = Object.keys(args).some((k) => JSON.stringify(args[k]) !== JSON.stringify(original[k]));
      if (changed) out.edited_args = args;
      return out;
    }
    if (kind === "deny" || kind === "dismiss") return { comment: field("comment") };
    if (kind === "answer") return { answer: field("answer") };
    if (kind === "resume") return { note: field("note") || null };
    return undefined;
  }

  async function submit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const kind = form.classList[0];
    const msg = form.querySelector(".msg");
    const card = form.closest("[data-task]");
    msg.textContent = "";
    form.classList.remove("failed");
    let payload;
    try { payload = body(form, kind); } catch (e) { msg.textContent = e.message; form.classList.add("failed"); return; }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const task = await keel.api("POST", form.dataset.action, payload);
      const status = card.querySelector("[data-task-status]");
      if (status) status.textContent = task.status + (task.claimed_by ? " by " + task.claimed_by : "");
      if (kind === "claim") { msg.textContent = DONE.claim; return; }
      if (kind === "approve" && task.status !== "resolved" && task.reviewers > 1) {
        /* N-of-M: this approval counted; the request waits for another person. */
        const given = (task.reviews || []).filter((r) => r.approved).length;
        const left = task.reviewers - given;
        const progress = card.querySelector("[data-progress]");
        if (progress) progress.textContent = task.progress;
        msg.textContent = "Approved: " + task.progress + ". It waits for " + left +
          " more reviewer" + (left === 1 ? "" : "s") + ".";
        button.disabled = true;
        return;
      }
      const done = keel.el("p", "done");
      done.setAttribute("role", "status");
      done.append(keel.el("strong", null, DONE[kind] + " "));
      const link = keel.el("a", null, "Follow the run");
      link.href = "/console/runs/" + encodeURIComponent(task.run_id);
      done.append(link);
      card.querySelector(".decide").replaceWith(done);
      link.focus();
    } catch (e) {
      msg.textContent = e.message;
      form.classList.add("failed");
      button.disabled = false;
    }
  }

  /* New requests arriving while the page is open: a notice with a link, never a reload
     under the reviewer's hands. */
  async function poll(notice) {
    let page;
    try { page = await keel.api("GET", notice.dataset.poll); } catch (e) { return; }
    const shown = new Set(Array.from(document.querySelectorAll("[data-task]"), (n) => n.dataset.task));
    const fresh = page.items.filter((t) => !shown.has(t.id)).length;
    notice.hidden = !fresh;
    notice.textContent = "";
    if (!fresh) return;
    notice.append(keel.el("span", null, fresh + " new " + notice.dataset.what + (fresh > 1 ? "s" : "") + " waiting. "));
    const link = keel.el("a", null, "Show them");
    link.href = location.pathname;
    notice.append(link);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const notice = document.getElementById("queue-live");
    if (notice) setInterval(function () { if (!document.hidden) poll(notice); }, 5000);
    for (const form of document.querySelectorAll(".decide form[data-action]")) {
      form.addEventListener("submit", submit);
    }
  });
})();

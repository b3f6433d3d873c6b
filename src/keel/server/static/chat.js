/* The chat page: each message is the next turn of a conversation (POST
   /v1/conversations/{id}/messages); its answer streams in from the run's events, with a
   notice while a person approves a step or has taken over, until the run's result. */
"use strict";
(function () {
  const NOTICES = {
    approval: "A person has been asked to approve this. The answer continues once they decide.",
    escalation: "A person has taken over. Their reply will appear here.",
  };

  function newId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function bubble(list, cls, who, text) {
    const li = keel.el("li", cls);
    li.append(keel.el("span", "who", who));
    const p = keel.el("p", null, text);
    li.append(p);
    list.append(li);
    li.scrollIntoView({ block: "end" });
    return p;
  }

  function follow(runId, target, notice, done) {
    const source = new EventSource("/v1/runs/" + encodeURIComponent(runId) + "/events");
    let streaming = false, suspended = false;
    const say = (text) => { notice.hidden = !text; notice.textContent = text || ""; };
    source.addEventListener("delta", function (event) {
      const d = JSON.parse(event.data);
      if (!streaming) { target.textContent = ""; streaming = true; }
      target.textContent += d.text;
    });
    source.addEventListener("thought", function (event) {
      const d = JSON.parse(event.data);
      streaming = false;
      if (d.text) target.textContent = d.text;
    });
    for (const kind of Object.keys(NOTICES)) {
      source.addEventListener(kind, function (event) {
        const d = JSON.parse(event.data);
        if (d.phase === "intent") say(NOTICES[kind]);
      });
    }
    source.addEventListener("status", function (event) {
      const d = JSON.parse(event.data);
      if (d.status === "suspended") {
        suspended = true;
        if (notice.hidden) say("Waiting for a person.");
      } else if (d.status === "running" && suspended) {
        suspended = false;
        say("A person decided; continuing…");
      }
    });
    source.addEventListener("result", function (event) {
      const d = JSON.parse(event.data);
      source.close();
      if (d.status === "completed") { target.textContent = keel.pretty(d.output); say(""); }
      else {
        target.textContent = "(" + d.status + ")";
        say(d.error ? "The run " + d.status + ": " + d.error.message : "The run was " + d.status + ".");
      }
      done();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const section = document.getElementById("chat");
    const list = document.getElementById("messages");
    const notice = document.getElementById("chat-notice");
    const form = document.getElementById("send");
    const input = document.getElementById("message");
    const button = form.querySelector("button");
    const msg = form.querySelector(".msg");
    const agent = section.dataset.agent;
    const idle = () => { button.disabled = false; input.focus(); };

    if (section.dataset.pending) {
      const last = list.querySelector(".msg-agent:last-child p");
      if (last) { button.disabled = true; follow(section.dataset.pending, last, notice, idle); }
    }
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        if (!button.disabled) form.requestSubmit();
      }
    });
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      msg.textContent = "";
      if (!section.dataset.conversation) {
        section.dataset.conversation = newId();
        history.replaceState(null, "", "/chat/" + section.dataset.conversation + "?agent=" + encodeURIComponent(agent));
      }
      button.disabled = true;
      bubble(list, "msg-user", "You", text);
      const answer = bubble(list, "msg-agent", agent, "…");
      input.value = "";
      try {
        const run = await keel.api("POST", "/v1/conversations/" + section.dataset.conversation + "/messages", { agent: agent, input: text });
        follow(run.run_id, answer, notice, idle);
      } catch (e) {
        answer.textContent = "(not sent)";
        msg.textContent = e.message;
        idle();
      }
    });
  });
})();

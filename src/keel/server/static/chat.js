/* The chat page: each message is the next turn of a conversation (POST /v1/chat/messages;
   the first one starts the conversation and the server names it); its answer streams in
   from the turn's chat events (GET /v1/chat/runs/{id}/events: what a customer may see),
   with a notice while it waits for approval or a person has taken over, until the result.
   Everything shown is put in the page with textContent: answers are text, never HTML. */
"use strict";
(function () {
  const NOTICES = {
    approval: "Waiting for approval: a person has been asked to approve this. The answer continues once they decide.",
    escalation: "A person has taken over: a person will get back to you here.",
  };

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
    const source = new EventSource("/v1/chat/runs/" + encodeURIComponent(runId) + "/events");
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
      else { target.textContent = d.notice || "(" + d.status + ")"; say(""); }
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
    const max = Number(form.dataset.max);
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const text = input.value;
      if (!text.trim()) { msg.textContent = "Write a message first."; input.focus(); return; }
      if (text.length > max) { msg.textContent = "The message is too long: at most " + max.toLocaleString() + " characters."; return; }
      msg.textContent = "";
      button.disabled = true;
      bubble(list, "msg-user", "You", text);
      const answer = bubble(list, "msg-agent", agent, "…");
      input.value = "";
      try {
        const run = await keel.api("POST", "/v1/chat/messages", { agent: agent, input: text, conversation: section.dataset.conversation || null });
        if (!section.dataset.conversation) {
          section.dataset.conversation = run.conversation;
          history.replaceState(null, "", "/chat/" + encodeURIComponent(run.conversation) + "?agent=" + encodeURIComponent(agent));
        }
        follow(run.run_id, answer, notice, idle);
      } catch (e) {
        answer.textContent = "(not sent)";
        msg.textContent = e.message;
        input.value = text;
        idle();
      }
    });
  });
})();

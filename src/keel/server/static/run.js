/* A run's page: the timeline from the run's event stream, live (EventSource resumes with
   Last-Event-ID by itself), the status and result as they change, and Cancel. */
"use strict";
(function () {
  const TERMINAL = ["completed", "failed", "cancelled"];
  let live = null;  // the list item the streamed text of the current model turn goes into

  function item(kind, title, meta) {
    const li = keel.el("li", "ev ev-" + kind);
    const head = keel.el("div", "ev-head");
    head.append(keel.el("span", "ev-kind", kind), keel.el("strong", null, title));
    if (meta) head.append(keel.el("span", "muted", meta));
    li.append(head);
    return li;
  }

  function block(li, label, value) {
    const text = keel.pretty(value);
    if (!text) return;
    if (label) li.append(keel.el("div", "ev-label", label));
    li.append(keel.el("pre", "box", text));
  }

  function meta(d) {
    const parts = [];
    if (d.latency_ms) parts.push(d.latency_ms.toFixed(1) + " ms");
    if (d.usage && d.usage.cost_usd) parts.push("$" + d.usage.cost_usd.toFixed(4));
    if (d.usage && d.usage.input_tokens) parts.push(d.usage.input_tokens + " in · " + (d.usage.output_tokens || 0) + " out");
    if (d.key) parts.push(d.key);
    return parts.join(" · ");
  }

  function decision(li, data) {
    for (const key of ["approved", "edited", "arguments", "action", "by", "comment", "answer", "note", "reason"]) {
      if (data && data[key] !== undefined && data[key] !== null && data[key] !== "") block(li, key, data[key]);
    }
  }

  const RENDER = {
    thought: function (d) {
      const li = item("thought", d.tool_calls && d.tool_calls.length ? "The model called a tool" : "The model answered", meta(d));
      block(li, null, d.text);
      for (const call of d.tool_calls || []) block(li, "call " + call.tool, call.arguments);
      return li;
    },
    tool_call: function (d) { const li = item("tool", "Tool call: " + d.name, meta(d)); block(li, "arguments", d.arguments); return li; },
    observation: function (d) {
      const li = item(d.failure ? "failure" : "tool", (d.failure ? "Tool failed: " : "Tool result: ") + d.name, meta(d));
      block(li, null, d.content);
      block(li, "failure", d.failure);
      return li;
    },
    approval: function (d) {
      const x = d.data || {};
      if (d.phase === "intent") {
        const li = item("approval", "Approval requested: " + (x.tool || d.name), meta(d));
        block(li, "arguments", x.arguments); block(li, "reason", x.reason);
        return li;
      }
      const li = item("approval", "Approval decided: " + d.name, meta(d));
      decision(li, x);
      return li;
    },
    escalation: function (d) {
      const x = d.data || {};
      const li = item("escalation", d.phase === "intent" ? "Escalated to a person" : "Escalation resolved", meta(d));
      if (d.phase === "intent") { block(li, "reason", x.reason); } else { decision(li, x); }
      return li;
    },
    guard: function (d) { const li = item("guard", "Guard: " + d.name, meta(d)); block(li, null, d.data); return li; },
    step: function (d) { const li = item(d.kind || "step", (d.kind || "step") + ": " + (d.name || d.key) + " (" + d.phase + ")", meta(d)); block(li, null, d.data); return li; },
  };

  function setStatus(status) {
    const node = document.getElementById("run-status");
    node.textContent = status;
    node.className = "status status-" + status;
    const cancel = document.querySelector("#cancel button");
    if (cancel && TERMINAL.includes(status)) cancel.disabled = true;
  }

  function setUsage(usage) {
    if (!usage) return;
    document.getElementById("run-cost").textContent = "$" + (usage.cost_usd || 0).toFixed(4);
    document.getElementById("run-tokens").textContent = (usage.input_tokens || 0) + " in · " + (usage.output_tokens || 0) + " out";
  }

  function follow(runId) {
    const timeline = document.getElementById("timeline");
    const state = document.getElementById("timeline-state");
    const source = new EventSource("/v1/runs/" + encodeURIComponent(runId) + "/events");
    const seen = new Set();
    source.onopen = function () { state.textContent = "Live: new steps appear as they happen."; };
    for (const name of Object.keys(RENDER)) {
      source.addEventListener(name, function (event) {
        const d = JSON.parse(event.data);
        if (seen.has(d.seq)) return;
        seen.add(d.seq);
        if (live) { live.remove(); live = null; }
        timeline.append(RENDER[name](d));
      });
    }
    source.addEventListener("delta", function (event) {
      const d = JSON.parse(event.data);
      if (!live) { live = item("thought", "The model is writing…"); live.append(keel.el("pre", "box", "")); timeline.append(live); }
      live.querySelector("pre").textContent += d.text;
    });
    source.addEventListener("status", function (event) {
      const d = JSON.parse(event.data);
      setStatus(d.status);
      setUsage(d.usage);
      const error = document.getElementById("run-error");
      error.hidden = !(d.error && d.status === "suspended");
      error.textContent = error.hidden ? "" : d.error.type + ": " + d.error.message;
      if (d.status === "suspended") state.textContent = "Suspended: waiting for a person. The timeline goes on when the run resumes.";
      else if (d.status === "running") state.textContent = "Live: the run is running.";
    });
    source.addEventListener("result", function (event) {
      const d = JSON.parse(event.data);
      setStatus(d.status);
      setUsage(d.usage);
      document.getElementById("run-output").textContent = keel.pretty(d.output);
      const error = document.getElementById("run-error");
      error.hidden = !(d.error && d.status !== "completed");
      error.textContent = error.hidden ? "" : d.error.type + ": " + d.error.message;
      state.textContent = "The run is " + d.status + ".";
      source.close();
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) state.textContent = "The event stream closed; reload the page to follow the run again.";
      else state.textContent = "Reconnecting to the run's events…";
    });
  }

  function wireCancel(runId) {
    const form = document.getElementById("cancel");
    if (!form) return;
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const msg = form.querySelector(".msg");
      try {
        const out = await keel.api("POST", "/v1/runs/" + encodeURIComponent(runId) + "/cancel", { reason: form.elements.namedItem("reason").value || "cancelled from the console" });
        msg.textContent = "Cancel: " + out.outcome;
      } catch (e) { msg.textContent = e.message; }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const runId = document.getElementById("run").dataset.runId;
    follow(runId);
    wireCancel(runId);
  });
})();

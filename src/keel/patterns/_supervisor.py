"""Supervisor and hierarchical teams: a lead agent delegates to workers and synthesizes.

The lead agent of a :class:`Supervisor` gets one tool per worker, ``ask_<worker>(task)``.
A call runs the worker (an :class:`Agent`, or any :class:`Flow`, such as another
``Supervisor``: a hierarchy) on the same journal, nested under the call's own step key, with
a share of the supervisor's remaining budget; the lead sees the worker's final output only
(or, with ``share_internals``, a compact transcript of its tool calls). Calls made in the
same turn run concurrently.

Step keys (supervisor ``team``, lead ``lead``)::

    team/lead/turn:0/model
    team/lead/turn:0/tool:ask_research#0                      the delegation (its result)
    team/lead/turn:0/tool:ask_research#0/research/turn:0/model   the worker's own steps

A worker that fails (its budget share runs out, its model keeps failing ...) does not fail the
run: the lead gets a ``tool_error`` observation naming the worker and the error, and can try
another worker, narrow the task or answer with what it has. A worker waiting for a person
(an approval, or an escalation: one task, the worker's own) suspends the whole run; on
resume, finished workers are read back from the journal, not run again, and a waiting
worker goes on from where it stopped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Unpack

from keel.context import History
from keel.core import (
    ConfigError,
    Message,
    RunError,
    Signal,
    ToolContext,
    ToolError,
    to_jsonable,
)
from keel.patterns._context import check_context, with_context
from keel.runtime import (
    Agent,
    Budget,
    Flow,
    FlowContext,
    FlowGraph,
    FlowOptions,
    RunResult,
)
from keel.tools import Tool, tool

#: A share of what is left of the supervisor's budget: a Budget, a fraction, or None.
Share = Budget | float | None
Worker = Agent[Any] | Flow[Any]
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_PREFIX = "ask_"
_CLIP = 300


class Supervisor(Flow[Any]):
    """A lead agent that decomposes a task, delegates parts to named workers, sees their
    results and synthesizes the answer.

    ``lead``: the supervising :class:`Agent` (its own tools stay; ``ask_<worker>`` tools are
    added). ``workers``: Agents or Flows (another ``Supervisor`` makes a hierarchy), as a
    list (named by their ``name``) or a mapping ``{name: worker}``; names are identifiers.
    ``descriptions``: what each worker is for, shown to the lead (default: the first line of
    the worker's instructions). ``worker_budget``: each delegation's share of what is left of
    the supervisor's budget (a :class:`Budget`, a fraction, or None: the worker's own budget,
    capped by what is left). ``share_internals``: True, or the names of workers whose tool
    calls the lead sees (a compact transcript) besides their output. ``context``: the
    :class:`~keel.context.History` the lead reads its conversation (the task, its
    delegations and the workers' answers) through; default: the lead's own (keel's default
    History fits it within the lead model's window).
    """

    kind = "supervisor"

    def __init__(self, name: str, *, lead: Agent[Any],
                 workers: Sequence[Worker] | Mapping[str, Worker],
                 descriptions: Mapping[str, str] | None = None, worker_budget: Share = None,
                 share_internals: bool | Iterable[str] = False,
                 context: History | None = None,
                 **options: Unpack[FlowOptions]) -> None:
        super().__init__(name, **options)
        if not isinstance(lead, Agent):
            raise ConfigError("lead", f"expected an Agent, got {type(lead).__name__}")
        self.context = check_context(context)
        self.lead = with_context(lead, self.context)
        self.workers = _workers(workers)
        clash = [n for n in self.workers if f"{_PREFIX}{n}" in lead.toolset]
        if clash:
            raise ConfigError("lead.tools", f"{_PREFIX}{clash[0]} is reserved for delegating "
                              f"to worker {clash[0]!r}; rename that tool")
        self.descriptions = _descriptions(descriptions, self.workers)
        self.worker_budget = _share(worker_budget)
        self.share_internals = _internals(share_internals, self.workers)
        check_hierarchy(self)

    # ---------------------------------------------------------------------- the runner's side

    def agents(self) -> Sequence[Agent[Any]]:
        found: list[Agent[Any]] = [self.lead]
        for worker in self.workers.values():
            found.extend([worker] if isinstance(worker, Agent) else worker.agents())
        return found

    def graph(self, prefix: str | None = None) -> FlowGraph:
        """This supervisor's structure as data (the lead, its workers and what they use),
        each node with the journal keys that show a run went through it; ``prefix``: the
        step key it runs under (default: its name). See :func:`keel.runtime.flow_graph`."""
        from keel.patterns._graphs import supervisor_graph

        return supervisor_graph(self, prefix or self.name, _PREFIX)

    def prepare(self) -> None:
        check_hierarchy(self)  # workers can be added after construction
        super().prepare()

    # ---------------------------------------------------------------------------- the run

    async def body(self, ctx: FlowContext, input: str) -> Any:
        tools = [self._ask(ctx, name, worker) for name, worker in self.workers.items()]
        lead = self.lead.clone(tools=[*self.lead.toolset, *tools])
        result = await ctx.run_agent(lead, input, name=self.lead.name)
        return result.output

    def _ask(self, ctx: FlowContext, name: str, worker: Worker) -> Tool:
        share = self.worker_budget
        internals = name in self.share_internals

        async def delegate(task: str, call: ToolContext) -> Any:
            # The worker runs under the call's own key: deterministic, unique per call, and
            # replayed (not run again) when the run resumes mid-worker.
            scope = ctx.scope(_relative(ctx.path, call.step_key))
            try:
                if isinstance(worker, Agent):
                    result: RunResult[Any] = await scope.run_agent(worker, task, name=name,
                                                                   budget=share)
                else:
                    result = await scope.run_flow(worker, task, name=name, budget=share)
            except Signal:
                raise  # approvals and escalations suspend the run as usual
            except RunError as exc:
                raise ToolError(
                    f"worker {name!r} failed: {exc.error_type}: {exc.message}",
                    retryable=False, hint="Try another worker, a smaller task, or answer with "
                    "what you have.") from exc
            output = to_jsonable(result.output)  # what the lead gets
            if not internals:
                return output
            return {"output": output, "transcript": transcript(result.messages)}

        about = self.descriptions[name]
        # risk="read" for the lead: the worker is an agent with its own gates and guards.
        return tool(name=f"{_PREFIX}{name}", timeout=None, risk="read",
                    description=f"Delegate a task to the worker {name!r}: {about}. Give the "
                    "whole task in `task`; you get the worker's answer back. Independent "
                    "tasks can be delegated in the same turn and run at the same time.")(delegate)


def _relative(path: str, step_key: str) -> str:
    if not step_key.startswith(f"{path}/"):  # pragma: no cover - the loop keys under ctx.path
        raise RunError(f"a delegation at {step_key!r} is outside the supervisor {path!r}",
                       step_key=step_key)
    return step_key[len(path) + 1:]


def transcript(messages: Sequence[Message]) -> list[str]:
    """A compact view of a worker's work: each tool call and what it returned (clipped)."""
    lines: list[str] = []
    for m in messages:
        for call in m.tool_calls:
            lines.append(f"call {call.tool_name}({_clip(call.arguments)})")
        for res in m.tool_results:
            lines.append(f"{'error' if res.is_error else 'result'} {res.tool_name}: "
                         f"{_clip(res.content)}")
    return lines


def _clip(text: str) -> str:
    return text if len(text) <= _CLIP else f"{text[:_CLIP]}..."


# ------------------------------------------------------------------------------- checking


def _workers(workers: Sequence[Worker] | Mapping[str, Worker]) -> dict[str, Worker]:
    if isinstance(workers, Mapping):
        named: list[tuple[object, Any, str]] = [(n, w, f"workers[{n!r}]")
                                                for n, w in workers.items()]
    elif isinstance(workers, Sequence) and not isinstance(workers, str):
        named = [(getattr(w, "name", None), w, f"workers[{i}]") for i, w in enumerate(workers)]
    else:
        raise ConfigError("workers", "expected a list of Agents/Flows or a mapping "
                          "{name: worker}")
    if not named:
        raise ConfigError("workers", "a supervisor needs at least one worker")
    out: dict[str, Worker] = {}
    for name, worker, part in named:
        if not isinstance(worker, Agent | Flow):
            raise ConfigError(part, f"expected an Agent or a Flow, got "
                              f"{type(worker).__name__}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(part, f"worker name {name!r} must be an identifier (a letter, "
                              f"then letters, digits or '_'; up to 48): it becomes the tool "
                              f"name {_PREFIX}<name>")
        if name in out:
            raise ConfigError(part, f"two workers are named {name!r}")
        out[name] = worker
    return out


def _descriptions(given: Mapping[str, str] | None,
                  workers: dict[str, Worker]) -> dict[str, str]:
    given = dict(given or {})
    for name, text in given.items():
        if name not in workers:
            raise ConfigError(f"descriptions[{name!r}]", f"there is no worker {name!r} "
                              f"(workers: {', '.join(workers)})")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"descriptions[{name!r}]", "must be a non-empty string")
    out: dict[str, str] = {}
    for name, worker in workers.items():
        instructions = worker.instructions if isinstance(worker, Agent) else ""
        first = instructions.strip().split("\n", 1)[0][:200]
        out[name] = given.get(name) or first or f"the {type(worker).__name__} {worker.name}"
    return out


def _share(share: Share) -> Share:
    if share is None or isinstance(share, Budget):
        return share
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ConfigError("worker_budget", f"expected a Budget, a fraction in (0, 1] or "
                          f"None, not {share!r}")
    return float(share)


def _internals(share: bool | Iterable[str], workers: dict[str, Worker]) -> frozenset[str]:
    if isinstance(share, bool):
        return frozenset(workers) if share else frozenset()
    if isinstance(share, str) or not isinstance(share, Iterable):
        raise ConfigError("share_internals", "expected True/False or a list of worker names")
    names = frozenset(share)
    unknown = sorted(names - set(workers))
    if unknown:
        raise ConfigError("share_internals", f"there is no worker {unknown[0]!r} "
                          f"(workers: {', '.join(workers)})")
    return names


def check_hierarchy(root: Supervisor) -> None:
    """A supervisor may not contain itself, at any depth (the path is named in the error)."""

    def walk(node: Supervisor, path: list[str], open_: list[Supervisor]) -> None:
        for name, worker in node.workers.items():
            if not isinstance(worker, Supervisor):
                continue
            where = [*path, name]
            if any(worker is s for s in open_):
                raise ConfigError("workers", f"the hierarchy has a cycle: {' -> '.join(where)} "
                                  f"is {worker.name!r} again; a supervisor cannot contain "
                                  "itself")
            walk(worker, where, [*open_, worker])

    walk(root, [root.name], [root])

"""Planning: a planner model writes a structured :class:`Plan`; an executor runs it.

``mode="plan-then-execute"`` plans once and replans only when a step fails for good or a
``check`` finds a result surprising. ``mode="plan-and-refine"`` also lets the planner revise
the remaining steps after every wave, given the results so far. Completed steps are always
kept: a replan only replaces the unfinished work.

The executor runs the plan in waves: every ready step (its dependencies complete) of a wave
runs concurrently (:meth:`FlowContext.gather`), each agent step with a share of what is left of
the budget. A step that fails is retried (``max_step_attempts``), then ``on_failure`` decides:
``"replan"`` (up to ``max_replans``), ``"skip"`` (its dependents are skipped too) or ``"fail"``.

Journal, under the flow's path (see docs/patterns/planning.md)::

    planner.0/...              the planner agent writing version 0 (planner.1 ... for replans)
    plan#0, plan#1 ...         kind "plan": the whole plan state after every change
    approval                   the plan approval (``require_approval``)
    step.<id>.v<V>.<n>/...     attempt n of step <id> in plan version V (an agent run or a tool)
    step.<id>.v<V>.<n>/failed  kind "failure": the attempt's run error (held by the runtime)
    step.<id>.v<V>.<n>/outcome kind "plan_step": {status, result | error, surprise}
    synthesize/...             the synthesizer agent, if any
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Unpack

from keel.core import (
    BudgetExceeded,
    ConfigError,
    OutputValidationError,
    RepeatedFailure,
    RunError,
    Signal,
    ToolContext,
    ToolError,
    to_jsonable,
    to_text,
)
from keel.patterns._plan import (
    Plan,
    PlanDraft,
    PlanStep,
    PlanStepFailed,
    bound_draft,
    from_draft,
    revise,
    short,
)
from keel.runtime import Agent, Budget, Flow, FlowContext, FlowOptions, RunResult, using_store
from keel.store import MemoryStore, RunStore
from keel.tools import Tool

Mode = Literal["plan-then-execute", "plan-and-refine"]
OnFailure = Literal["replan", "skip", "fail"]
#: A hook on a completed step's result: a reason string flags it as surprising (a replan
#: follows, if replans are left), None accepts it.
Check = Callable[[PlanStep, Any], "str | None"]
#: The errors that fail a step (retried, then ``on_failure``); any other error fails the run,
#: which can be resumed (a model endpoint that is down is not the plan's fault).
STEP_FAILURES: tuple[type[RunError], ...] = (OutputValidationError, RepeatedFailure,
                                             BudgetExceeded, ToolError)
_MODES = ("plan-then-execute", "plan-and-refine")
_POLICIES = ("replan", "skip", "fail")


class Planner(Flow[Any]):
    """Plan-then-execute and plan-and-refine over named worker agents and tools.

    ``planner``: the agent that writes plans (its output type is set to the plan schema,
    checked against the workers; a broken plan goes back to it with the reasons, up to its
    ``max_output_retries``). ``plan``: a fixed first plan instead (then ``planner`` is only
    needed for replans). ``synthesizer``: an agent that turns the step results into the
    answer; without one the output is ``{step id: result}`` of the completed steps.
    """

    kind = "planning"

    def __init__(self, name: str, *, planner: Agent[Any] | None = None,
                 workers: Iterable[Agent[Any]] | Mapping[str, Agent[Any]] = (),
                 tools: Iterable[Tool] = (), plan: Plan | None = None,
                 synthesizer: Agent[Any] | None = None, mode: Mode = "plan-then-execute",
                 max_replans: int = 2, max_step_attempts: int = 2,
                 on_failure: OnFailure = "replan", require_approval: bool = False,
                 approval_queue: str | None = None, check: Check | None = None,
                 step_budget: Budget | float | None = None,
                 step_failures: Sequence[type[RunError]] = STEP_FAILURES,
                 **options: Unpack[FlowOptions]) -> None:
        super().__init__(name, **options)
        self.workers = _workers(workers)
        self.tools = _tools(tools)
        _check_settings(mode, max_replans, max_step_attempts, on_failure, step_budget)
        if planner is not None and not isinstance(planner, Agent):
            raise ConfigError("planner", f"expected an Agent, got {type(planner).__name__}")
        if planner is None and plan is None:
            raise ConfigError("planner", "give a planner agent, or a fixed plan=")
        if plan is not None:
            if not isinstance(plan, Plan):
                raise ConfigError("plan", f"expected a Plan, got {type(plan).__name__}")
            plan.check_workers(self.workers, self.tools)
        if planner is None and (mode == "plan-and-refine" or on_failure == "replan"):
            on_failure = "fail" if on_failure == "replan" else on_failure
            if mode == "plan-and-refine":
                raise ConfigError("mode", "plan-and-refine needs a planner agent to refine "
                                  "the plan")
        self.mode: Mode = mode
        self.max_replans = max_replans
        self.max_step_attempts = max_step_attempts
        self.on_failure: OnFailure = on_failure
        self.require_approval = bool(require_approval)
        self.approval_queue = approval_queue
        self.check = check
        self.step_budget = step_budget
        self.step_failures = tuple(step_failures)
        self.fixed_plan = plan
        self.synthesizer = synthesizer
        self.planner = planner
        self._planning = None if planner is None else planner.clone(
            output_type=bound_draft(self.workers, self.tools))

    def agents(self) -> Sequence[Agent[Any]]:
        extra = [a for a in (self.planner, self.synthesizer) if a is not None]
        return [*extra, *self.workers.values()]

    def with_plan(self, plan: Plan) -> Planner:
        """A copy that executes ``plan`` (e.g. one from :meth:`preview`, after a person read
        it) instead of asking the planner for the first plan."""
        copy = Planner.__new__(Planner)
        copy.__dict__.update(self.__dict__)
        plan.check_workers(self.workers, self.tools)
        copy.fixed_plan = plan
        return copy

    async def preview(self, input: str, *, store: RunStore | str | None = None) -> Plan:
        """Ask the planner for a plan and return it without executing anything (a run of its
        own, journaled like any other; an in-memory store unless ``store`` is given)."""
        result = await _Preview(self).run(input, store=store or MemoryStore())
        return Plan.model_validate(result.output)

    # -------------------------------------------------------------------------------- body

    async def body(self, ctx: FlowContext, input: str) -> Any:
        run = _PlanRun(self, ctx, input)
        plan = await run.first_plan()
        if self.require_approval:
            note = await ctx.escalate(
                f"approve the plan for: {short(input, 200)}", name="approval",
                trigger="plan_approval", queue=self.approval_queue, proposal=plan.render())
            run.note = note.strip()
        plan = await run.execute(plan)
        if self.synthesizer is None:
            return plan.results()
        done = await ctx.run_agent(self.synthesizer, _synthesis_input(input, plan),
                                   name="synthesize")
        return to_jsonable(done.output)


class _Preview(Flow[Any]):
    kind = "planning"

    def __init__(self, owner: Planner) -> None:
        super().__init__(owner.name, budget=owner.budget, durability=owner.durability,
                         middleware=owner.stack.middleware)
        self.owner = owner

    def agents(self) -> Sequence[Agent[Any]]:
        return [a for a in (self.owner.planner,) if a is not None]

    async def body(self, ctx: FlowContext, input: str) -> Any:
        plan = await _PlanRun(self.owner, ctx, input).first_plan()
        return plan.model_dump(mode="json")


class _PlanRun:
    """One execution of a plan: the counters that make every key deterministic."""

    def __init__(self, owner: Planner, ctx: FlowContext, goal: str) -> None:
        self.owner = owner
        self.ctx = ctx
        self.goal = goal
        self.records = 0
        self.replans = 0
        self.note = ""

    async def record(self, plan: Plan) -> Plan:
        """Journal the plan state as ``plan#<n>``; a resumed run gets the recorded state."""
        data = plan.model_dump(mode="json")
        name = f"plan#{self.records}"
        self.records += 1
        stored = await self.ctx.step(name, lambda: data, kind="plan", input=plan.version,
                                     blocking=False)
        return Plan.model_validate(stored)

    async def first_plan(self) -> Plan:
        owner = self.owner
        if owner.fixed_plan is not None:
            return await self.record(owner.fixed_plan.model_copy(deep=True))
        assert owner._planning is not None
        prompt = _planning_input(self.goal, owner)
        result = await self.ctx.run_agent(owner._planning, prompt, name="planner.0")
        return await self.record(from_draft(_draft(result)))

    async def replan(self, plan: Plan, reason: str) -> Plan:
        owner = self.owner
        assert owner.planner is not None
        self.replans += 1
        done = [s.id for s in plan.steps if s.status == "complete"]
        agent = owner.planner.clone(output_type=bound_draft(owner.workers, owner.tools,
                                                            done=done))
        prompt = _replan_input(self.goal, owner, plan, reason)
        result = await self.ctx.run_agent(agent, prompt, name=f"planner.{plan.version + 1}")
        return await self.record(revise(plan, _draft(result)))

    # --------------------------------------------------------------------------- executing

    async def execute(self, plan: Plan) -> Plan:
        while True:
            if _skip_blocked(plan):
                plan = await self.record(plan)
            ready = plan.ready()
            if not ready:  # the plan is acyclic: nothing ready means nothing left to run
                return plan
            for step in ready:
                step.status, step.attempts, step.error = "in_progress", step.attempts + 1, None
            plan = await self.record(plan)
            share = self._share(plan, len(ready))
            outcomes = await self.ctx.gather(*(self._attempt(plan, plan.get(s.id), share)
                                               for s in ready))
            reasons = [r for r in (self._apply(plan, s.id, o)
                                   for s, o in zip(ready, outcomes, strict=True)) if r]
            plan = await self.record(plan)
            plan = await self._after_wave(plan, reasons)

    async def _after_wave(self, plan: Plan, reasons: list[str]) -> Plan:
        owner = self.owner
        can_replan = owner.planner is not None and self.replans < owner.max_replans
        failed = [s for s in plan.steps if s.status == "failed"]
        if failed and (owner.on_failure == "fail" or not can_replan):
            s = failed[0]
            raise PlanStepFailed(
                f"plan step {s.id!r} failed {s.attempts} time(s) ({s.error}) and no replan "
                f"is left (max_replans={owner.max_replans}, on_failure={owner.on_failure!r})",
                run_id=self.ctx.run_id, step_key=self.ctx.key(_attempt_name(plan, s)))
        if reasons and can_replan:
            return await self.replan(plan, "; ".join(reasons))
        if owner.mode == "plan-and-refine" and can_replan and not plan.finished:
            return await self.replan(plan, "refine: revise the remaining steps given the "
                                     "results so far (keep them if they still fit)")
        return plan

    def _apply(self, plan: Plan, step_id: str, outcome: dict[str, Any]) -> str | None:
        """Fold one attempt's outcome into ``plan``; a reason if the plan must change."""
        step = plan.get(step_id)
        if outcome.get("status") == "complete":
            step.status, step.result = "complete", outcome.get("result")
            step.surprise = outcome.get("surprise")
            return f"step {step.id} surprised: {step.surprise}" if step.surprise else None
        step.error = str(outcome.get("error") or "failed")
        if step.attempts < self.owner.max_step_attempts:
            step.status = "pending"  # retried in the next wave
            return None
        if self.owner.on_failure == "skip":
            step.status = "skipped"
            return None
        step.status = "failed"
        return f"step {step.id} failed after {step.attempts} attempt(s): {step.error}"

    def _share(self, plan: Plan, ready: int) -> Budget | None:
        """Each step's budget in this wave: ``step_budget`` capped by what is left, or what
        is left spread over the unfinished steps."""
        left = self.ctx.remaining()
        chosen = self.owner.step_budget
        if left is None:
            return chosen if isinstance(chosen, Budget) else None
        if isinstance(chosen, Budget):
            return chosen.capped(left)
        if isinstance(chosen, float):
            return left.scaled(chosen)
        unfinished = sum(1 for s in plan.steps if s.status in ("pending", "in_progress"))
        return left.scaled(1 / max(unfinished, ready, 1))

    async def _attempt(self, plan: Plan, step: PlanStep, share: Budget | None
                       ) -> dict[str, Any]:
        name = _attempt_name(plan, step)
        error: str | None = None
        value: Any = None
        try:  # a failure recorded for this attempt is raised again without running it
            value = await self._work(plan, step, name, share)
        except Signal:
            raise
        except BudgetExceeded as exc:
            if self.ctx.remaining() is None or BudgetExceeded not in self.owner.step_failures:
                raise  # the whole planner's budget is used up
            error = f"BudgetExceeded: {exc.message}"
        except self.owner.step_failures as exc:
            error = f"{type(exc).__name__}: {exc.message}"

        def decide() -> dict[str, Any]:
            if error is not None:
                return {"status": "failed", "error": error}
            surprise = None if self.owner.check is None else self.owner.check(step, value)
            return {"status": "complete", "result": value, "surprise": surprise}

        return dict(await self.ctx.step(f"{name}/outcome", decide, kind="plan_step",
                                        input=step.id))

    async def _work(self, plan: Plan, step: PlanStep, name: str, share: Budget | None
                    ) -> Any:
        if step.tool is not None:
            return await self._call_tool(step, name)
        agent = self.owner.workers[step.agent or ""]
        inputs = {d: plan.get(d).result for d in step.depends_on}
        result: RunResult[Any] = await self.ctx.run_agent(
            agent, _step_input(self.goal, step, inputs, self.note), name=name, budget=share)
        return to_jsonable(result.output)

    async def _call_tool(self, step: PlanStep, name: str) -> Any:
        tool = self.owner.tools[step.tool or ""]
        key = self.ctx.key(f"{name}/{tool.name}")
        ctx = ToolContext(run_id=self.ctx.run_id, step_key=key, agent=self.owner.name,
                          idempotency_key=f"{self.ctx.run_id}/{key}", deps=self.ctx.deps,
                          tenant=self.ctx.tenant, user=self.ctx.user)
        args = dict(step.args)

        async def call() -> dict[str, Any]:
            return (await tool.call(args, ctx)).to_dict()

        data = await self.ctx.step(f"{name}/{tool.name}", call, kind="tool", budgeted=True,
                                   input={"tool": tool.name, "arguments": args},
                                   idempotent=tool.meta.idempotent)
        failure = data.get("failure")
        if isinstance(failure, dict):
            raise ToolError(f"{failure.get('error_type')}: {failure.get('message')}",
                            run_id=self.ctx.run_id, step_key=key)
        value = data.get("value")
        return data.get("content") if value is None else value


async def read_plan(run_id: str, *, store: RunStore | str | None = None,
                    path: str | None = None) -> Plan | None:
    """The latest recorded plan of run ``run_id`` (of the planning flow at ``path``, by
    default the last one journaled), or None if the run has no plan yet."""
    async with using_store(store) as opened:
        entries = await opened.read_journal(run_id)
    found = [e for e in entries if e.kind == "plan" and e.phase == "result"
             and (path is None or e.key.rsplit("/", 1)[0] == path)]
    return Plan.model_validate(found[-1].data) if found else None


# --------------------------------------------------------------------------------- helpers


def _attempt_name(plan: Plan, step: PlanStep) -> str:
    return f"step.{step.id}.v{plan.version}.{max(step.attempts, 1)}"


def _draft(result: RunResult[Any]) -> PlanDraft:
    out = result.output
    return out if isinstance(out, PlanDraft) else PlanDraft.model_validate(out)


def _skip_blocked(plan: Plan) -> bool:
    """Skip (transitively) every pending step that depends on a failed or skipped step;
    whether any was."""
    changed, any_change = True, False
    while changed:
        changed = False
        dead = {s.id for s in plan.steps if s.status in ("failed", "skipped")}
        for s in plan.steps:
            blocked = [d for d in s.depends_on if d in dead]
            if s.status == "pending" and blocked:
                s.status, s.error = "skipped", f"dependency {blocked[0]} did not complete"
                changed = any_change = True
    return any_change


def _workers(workers: Iterable[Agent[Any]] | Mapping[str, Agent[Any]]) -> dict[str, Agent[Any]]:
    items = list(workers.items()) if isinstance(workers, Mapping) else [
        (getattr(a, "name", None), a) for a in workers]
    out: dict[str, Agent[Any]] = {}
    for name, agent in items:
        if not isinstance(agent, Agent):
            raise ConfigError("workers", f"{name!r}: expected an Agent, got "
                              f"{type(agent).__name__}")
        if not isinstance(name, str) or not name:
            raise ConfigError("workers", f"a worker needs a non-empty name, not {name!r}")
        if name in out:
            raise ConfigError("workers", f"two workers are named {name!r}; names must be "
                              "unique (the plan assigns steps by name)")
        out[name] = agent
    return out


def _tools(tools: Iterable[Tool]) -> dict[str, Tool]:
    out: dict[str, Tool] = {}
    for t in tools:
        if not isinstance(t, Tool):
            raise ConfigError("tools", f"expected keel tools (@tool), got {type(t).__name__}")
        if t.name in out:
            raise ConfigError("tools", f"two tools are named {t.name!r}")
        if t.meta.risk == "irreversible" or t.meta.approval not in (None, False):
            raise ConfigError("tools", f"tool {t.name!r} needs a person's approval; a plan "
                              "calls its tools directly, so give that tool to a worker agent, "
                              "whose approval gates apply")
        out[t.name] = t
    return out


def _check_settings(mode: str, max_replans: object, max_step_attempts: object,
                    on_failure: str, step_budget: object) -> None:
    if mode not in _MODES:
        raise ConfigError("mode", f"must be one of {', '.join(_MODES)}, not {mode!r}")
    if isinstance(max_replans, bool) or not isinstance(max_replans, int) or max_replans < 0:
        raise ConfigError("max_replans", f"must be a whole number >= 0, not {max_replans!r}")
    if (isinstance(max_step_attempts, bool) or not isinstance(max_step_attempts, int)
            or max_step_attempts < 1):
        raise ConfigError("max_step_attempts", f"must be a whole number >= 1, not "
                          f"{max_step_attempts!r}")
    if on_failure not in _POLICIES:
        raise ConfigError("on_failure", f"must be one of {', '.join(_POLICIES)}, not "
                          f"{on_failure!r}")
    if step_budget is not None and not isinstance(step_budget, Budget) and (
            isinstance(step_budget, bool) or not isinstance(step_budget, float)
            or not 0 < step_budget <= 1):
        raise ConfigError("step_budget", "must be a Budget, a fraction in (0, 1] of what "
                              f"is left, or None, not {step_budget!r}")


def _catalog(owner: Planner) -> str:
    lines = []
    for name, agent in owner.workers.items():
        about = short(agent.instructions, 160) if agent.instructions else "(no description)"
        lines.append(f"- agent {name}: {about}")
    for name, t in owner.tools.items():
        params = ", ".join(t.parameters.get("properties", {}))
        lines.append(f"- tool {name}({params}): {short(t.meta.description, 160)}")
    return "\n".join(lines)


def _planning_input(goal: str, owner: Planner) -> str:
    return (f"Goal:\n{goal}\n\nWorkers you can assign steps to (set exactly one of "
            f"'agent' or 'tool' per step; tool steps take 'args'):\n{_catalog(owner)}\n\n"
            "Write a plan: short unique step ids, what each step must achieve, and "
            "'depends_on' for the steps whose results it needs. Steps without dependencies "
            "between them run in parallel.")


def _replan_input(goal: str, owner: Planner, plan: Plan, reason: str) -> str:
    return (f"Goal:\n{goal}\n\nWorkers:\n{_catalog(owner)}\n\nThe plan so far "
            f"(version {plan.version}):\n{plan.render()}\n\nWhy it is revised: {reason}\n\n"
            "Return the steps still to do (completed steps are kept as they are; new steps "
            "may depend on them by id). Return an empty list if the goal is met.")


def _step_input(goal: str, step: PlanStep, inputs: Mapping[str, Any], note: str) -> str:
    parts = [f"Your task (step {step.id} of a plan): {step.description}",
             f"The overall goal: {goal}"]
    if inputs:
        parts.append("Results of the steps this one builds on:\n" + "\n".join(
            f"- {dep}: {to_text(value)}" for dep, value in inputs.items()))
    if note:
        parts.append(f"A person approved the plan with this note: {note}")
    return "\n\n".join(parts)


def _synthesis_input(goal: str, plan: Plan) -> str:
    results = "\n".join(f"- {s.id} ({s.description}): {to_text(s.result)}"
                         for s in plan.steps if s.status == "complete")
    missing = [s.id for s in plan.steps if s.status in ("failed", "skipped")]
    note = f"\n\nSteps that did not complete: {', '.join(missing)}" if missing else ""
    return (f"The goal: {goal}\n\nThe results of the plan's steps:\n{results}{note}\n\n"
            "Write the final answer from these results.")



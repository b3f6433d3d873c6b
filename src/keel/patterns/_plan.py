"""Plans as data: :class:`Plan` and :class:`PlanStep` (the state the executor journals) and
:class:`PlanDraft` (what a planner model writes).

A plan is checked when it is built: step ids unique and usable in step keys, every
dependency a known step, no dependency cycle (the cycle is named), exactly one of ``agent`` /
``tool`` per step. :meth:`Plan.check_workers` checks the names against a planner's registry.
A broken hand-written plan raises :class:`~keel.ConfigError` naming the step; a broken plan
written by a model is rejected with the same messages as feedback the model can act on.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Literal, Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keel.core import ConfigError, RunError

StepStatus: TypeAlias = Literal["pending", "in_progress", "complete", "failed", "skipped"]
#: Statuses after which a step never runs again.
FINISHED: frozenset[str] = frozenset({"complete", "failed", "skipped"})
_ID = re.compile(r"^[A-Za-z0-9_-]{1,48}$")
_SHORT = 60


class PlanStepFailed(RunError):
    """A plan step failed after its retries and the planner may not skip or replan it."""


class _StepLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def depends_on(self) -> list[str]: ...
    @property
    def agent(self) -> str | None: ...
    @property
    def tool(self) -> str | None: ...


class DraftStep(BaseModel):
    """One step as a planner writes it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Short unique id: letters, digits, '_' or '-'")
    description: str = Field(description="What this step must achieve, for its worker")
    depends_on: list[str] = Field(default_factory=list,
                                  description="Ids of the steps whose results it needs")
    agent: str | None = Field(default=None, description="The worker agent that does it")
    tool: str | None = Field(default=None, description="Or the tool that does it")
    args: dict[str, Any] = Field(default_factory=dict,
                                 description="Arguments for the tool (tool steps only)")


class PlanDraft(BaseModel):
    """A plan as a planner model writes it (validated against the planner's workers)."""

    model_config = ConfigDict(extra="forbid", title="Plan")

    steps: list[DraftStep] = Field(description="The steps; independent steps run in parallel")


class PlanStep(DraftStep):
    """One step of a plan and where it stands."""

    status: StepStatus = "pending"
    result: Any = None
    error: str | None = None
    attempts: int = Field(default=0, ge=0)
    #: Why a check found the result surprising (the step still completed).
    surprise: str | None = None


class Plan(BaseModel):
    """A validated plan and its state. ``version`` rises with every replan."""

    model_config = ConfigDict(extra="forbid")

    steps: list[PlanStep]
    version: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _valid(self) -> Plan:
        problems = structure_problems(self.steps)
        if problems:
            part, problem = problems[0]
            raise ConfigError(part, problem)
        return self

    # ------------------------------------------------------------------------------ queries

    def get(self, step_id: str) -> PlanStep:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def ready(self) -> list[PlanStep]:
        """Pending steps whose dependencies are all complete, in plan order."""
        done = {s.id for s in self.steps if s.status == "complete"}
        return [s for s in self.steps
                if s.status == "pending" and all(d in done for d in s.depends_on)]

    @property
    def finished(self) -> bool:
        return all(s.status in FINISHED for s in self.steps)

    def results(self) -> dict[str, Any]:
        """The results of the completed steps, by id, in plan order."""
        return {s.id: s.result for s in self.steps if s.status == "complete"}

    def check_workers(self, agents: Collection[str], tools: Collection[str]) -> None:
        """Raise :class:`ConfigError` naming the first step whose agent or tool is unknown."""
        problems = worker_problems(self.steps, agents, tools)
        if problems:
            part, problem = problems[0]
            raise ConfigError(part, problem)

    def render(self) -> str:
        """The plan as text, one line per step (for approvals and logs)."""
        lines = []
        for n, s in enumerate(self.steps, 1):
            worker = f"agent {s.agent}" if s.agent else f"tool {s.tool} {s.args or ''}".rstrip()
            after = f" (after {', '.join(s.depends_on)})" if s.depends_on else ""
            lines.append(f"{n}. [{s.status}] {s.id} by {worker}{after}: {s.description}")
            if s.status == "complete" and s.result is not None:
                lines.append(f"   result: {short(s.result)}")
            if s.error:
                lines.append(f"   error: {short(s.error)}")
        return "\n".join(lines)


def short(value: Any, limit: int = _SHORT) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------- validation


def structure_problems(steps: Sequence[_StepLike], *, done: Collection[str] = (),
                       allow_empty: bool = False) -> list[tuple[str, str]]:
    """What is wrong with a plan's shape, as (part, problem) pairs; ``done``: ids of completed
    steps outside ``steps`` that dependencies may name (a revision)."""
    if not steps and not allow_empty:
        return [("plan", "has no steps; a plan needs at least one step")]
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for s in steps:
        if not _ID.match(s.id):
            problems.append((f"plan step {s.id!r}", "an id must be 1-48 letters, digits, '_' "
                             "or '-' (it becomes part of step keys)"))
        if s.id in seen:
            problems.append((f"plan step {s.id}", "the id is used twice; step ids must be "
                             "unique"))
        seen.add(s.id)
        if (s.agent is None) == (s.tool is None):
            problems.append((f"plan step {s.id}", "needs exactly one of 'agent' or 'tool'"))
    known = seen | set(done)
    for s in steps:
        for dep in s.depends_on:
            if dep == s.id:
                problems.append((f"plan step {s.id}", "depends on itself"))
            elif dep not in known:
                problems.append((f"plan step {s.id}", f"depends on unknown step {dep!r}; "
                                 f"known steps: {', '.join(sorted(known))}"))
    if not problems:
        cycle = find_cycle(steps)
        if cycle:
            problems.append((f"plan step {cycle[0]}", "dependency cycle: "
                             + " -> ".join(cycle) + " (each depends on the next)"))
    return problems


def worker_problems(steps: Iterable[_StepLike], agents: Collection[str],
                    tools: Collection[str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for s in steps:
        if s.agent is not None and s.agent not in agents:
            problems.append((f"plan step {s.id}", f"names unknown agent {s.agent!r}; known "
                             f"agents: {', '.join(sorted(agents)) or '(none)'}"))
        if s.tool is not None and s.tool not in tools:
            problems.append((f"plan step {s.id}", f"names unknown tool {s.tool!r}; known "
                             f"tools: {', '.join(sorted(tools)) or '(none)'}"))
    return problems


def find_cycle(steps: Sequence[_StepLike]) -> list[str] | None:
    """A dependency cycle as ``[a, b, ..., a]`` (first found, in plan order), or None."""
    deps = {s.id: [d for d in s.depends_on if d != s.id] for s in steps}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in deps.get(node, ()):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt in deps and nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for s in steps:
        if s.id not in state:
            found = visit(s.id)
            if found:
                return found
    return None


def bound_draft(agents: Collection[str], tools: Collection[str], *,
                done: Collection[str] = ()) -> type[PlanDraft]:
    """A :class:`PlanDraft` type that also checks worker names (and, for a revision, allows
    dependencies on the completed steps ``done`` and an empty step list): a planner agent's
    output type, so that a broken plan goes back to the model with the reasons."""
    agent_names, tool_names, done_ids = frozenset(agents), frozenset(tools), frozenset(done)

    class BoundPlanDraft(PlanDraft):
        model_config = ConfigDict(extra="forbid", title="Plan")

        @model_validator(mode="after")
        def _check(self) -> BoundPlanDraft:
            fresh = [s for s in self.steps if s.id not in done_ids]
            problems = (structure_problems(fresh, done=done_ids, allow_empty=bool(done_ids))
                        + worker_problems(fresh, agent_names, tool_names))
            if problems:
                raise ValueError("; ".join(f"{part}: {problem}" for part, problem in problems))
            return self

    return BoundPlanDraft


def from_draft(draft: PlanDraft) -> Plan:
    return Plan(steps=[PlanStep(**s.model_dump()) for s in draft.steps])


def revise(plan: Plan, draft: PlanDraft) -> Plan:
    """The next version of ``plan``: its completed steps kept as they are (a draft step with a
    completed step's id is ignored), its unfinished steps replaced by the draft's, and its
    failed or skipped steps kept as history unless the draft reuses their id."""
    done = {s.id for s in plan.steps if s.status == "complete"}
    fresh = [PlanStep(**s.model_dump()) for s in draft.steps if s.id not in done]
    reused = {s.id for s in fresh}
    kept = [s for s in plan.steps
            if s.status == "complete" or (s.status in ("failed", "skipped")
                                          and s.id not in reused)]
    ids = {s.id for s in kept} | reused
    kept = [s.model_copy(update={"depends_on": [d for d in s.depends_on if d in ids]})
            for s in kept]
    return Plan(steps=[*kept, *fresh], version=plan.version + 1)

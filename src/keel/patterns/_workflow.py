"""Sequential and parallel workflows: a pipeline of typed steps on the journal.

A :class:`Workflow` is a flow built from steps: functions, agents and tools (:class:`Step`),
combined with :class:`Sequential`, :class:`Parallel` (fan-out / fan-in), :class:`Branch`
(conditions and routers) and :class:`Gate` (a check that must pass before the next step).
Each step's output feeds the next; the types are checked when the workflow is built, each
result is journaled under ``<workflow>/<step>`` (nested: ``<workflow>/<parallel>/<branch>``),
so a resumed run skips finished steps and a replay reproduces the run exactly.
:meth:`Workflow.worst_case_budget` says up front what the workflow can spend at most.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias, Unpack

import pydantic

from keel.core import ConfigError, KeelError, RunError, ToolContext, dumps, to_jsonable
from keel.patterns._workflow_types import (
    ToolArgs,
    WorstCase,
    connects,
    describe,
    name_of,
    return_type,
    signature_types,
    union_of,
)
from keel.runtime import (
    Agent,
    Budget,
    Flow,
    FlowContext,
    FlowGraph,
    FlowOptions,
    check_name,
)
from keel.tools import Tool, run_in_worker

#: What a workflow accepts as a step: a :class:`Node`, or a function, Agent or Tool (wrapped
#: in :class:`Step`).
StepLike: TypeAlias = "Node | Agent[Any] | Tool | Callable[..., Any]"


class WorkflowError(RunError):
    """A workflow step failed. ``step`` is the step's name, ``step_key`` its journal key;
    the original exception is ``__cause__``."""

    def __init__(self, message: str, *, step: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.step = step


class GateFailed(WorkflowError):
    """A :class:`Gate` did not pass; the steps after it did not run. ``reason`` says why."""

    def __init__(self, message: str, *, step: str, reason: str, **kw: Any) -> None:
        super().__init__(message, step=step, **kw)
        self.reason = reason


async def call_user(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a user function: async functions are awaited, sync ones run in a worker thread."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    out = await run_in_worker(functools.partial(fn, *args), None)
    if inspect.isawaitable(out):
        out = await out
    return out


def _failed(ctx: FlowContext, key: str, step: str, exc: Exception) -> WorkflowError:
    return WorkflowError(f"workflow step {step!r} failed: {type(exc).__name__}: {exc}",
                         step=step, run_id=ctx.run_id, step_key=ctx.key(key))


class Node(ABC):
    """One part of a workflow: a step, a combinator or a gate."""

    name: str

    @abstractmethod
    def check(self, incoming: Any, source: str) -> Any:
        """Raise ConfigError unless a value of type ``incoming`` (made by ``source``) is a valid
        input; return this node's output type."""

    @abstractmethod
    def worst_case(self) -> WorstCase:
        """The most this node can spend (see :meth:`Workflow.worst_case`)."""

    @abstractmethod
    async def run(self, ctx: FlowContext, value: Any, key: str) -> Any:
        """Run on ``value`` under ``<ctx.path>/<key>``; return the output."""

    def agents(self) -> list[Agent[Any]]:
        return []

    def _mismatch(self, wanted: Any, incoming: Any, source: str) -> ConfigError:
        return ConfigError(f"step {self.name!r}", (
            f"takes {describe(wanted)} but {source} produces {describe(incoming)}; "
            "the step types do not connect (add a converting step, or fix the annotations)"))


def as_node(item: StepLike) -> Node:
    return item if isinstance(item, Node) else Step(item)


class Step(Node):
    """A leaf step: a function (sync or async, typed by its annotations: one argument, the
    previous output), an :class:`Agent` (takes a string, gives its ``output_type``; ``prompt``
    turns the previous output into the string) or a :class:`Tool` (takes its arguments;
    ``args`` builds them from the previous output). ``budget``: for an agent, its share of
    the workflow's budget (enforced: it cannot spend more); for a function or a tool, what it
    declares it may spend, used by :meth:`Workflow.worst_case` (a function or tool step
    counts as one step of the run's budget)."""

    def __init__(self, target: Agent[Any] | Tool | Callable[..., Any], *,
                 name: str | None = None, budget: Budget | None = None,
                 prompt: Callable[[Any], str] | None = None,
                 args: Callable[[Any], Mapping[str, Any]] | None = None) -> None:
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigError("budget", f"expected a Budget, got {type(budget).__name__}")
        self.target = target
        self.budget = budget
        self.prompt = prompt
        self.args = args
        if isinstance(target, Agent):
            self.kind, default = "agent", target.name
            self.input_type = signature_types(prompt, "prompt")[0] if prompt else str
            self.output_type: Any = target.output_type or str
        elif isinstance(target, Tool):
            self.kind, default = "tool", target.name
            self._check_tool(target)
            self.input_type = signature_types(args, "args")[0] if args else ToolArgs
            fn = getattr(target, "fn", None)
            self.output_type = return_type(fn) if callable(fn) else Any
        elif callable(target):
            self.kind, default = "function", name_of(target)
            self.input_type, self.output_type = signature_types(target, "step")
        else:
            raise ConfigError("step", f"expected a function, an Agent or a Tool, got "
                              f"{type(target).__name__}")
        if prompt is not None and self.kind != "agent":
            raise ConfigError("prompt", "only an agent step takes prompt=")
        if args is not None and self.kind != "tool":
            raise ConfigError("args", "only a tool step takes args=")
        self.name = check_name("step name", name or default)
        self._adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(self.output_type)

    @staticmethod
    def _check_tool(tool: Tool) -> None:
        meta = tool.meta
        if meta.approval is True or callable(meta.approval) or (
                meta.approval is None and meta.risk == "irreversible"):
            raise ConfigError(f"step {tool.name!r}", (
                "this tool needs a person's approval, which a workflow tool step does not ask "
                "for; run it through an Agent step (its approval gate applies), or declare "
                "@tool(approval=False) if it may run unattended"))

    def check(self, incoming: Any, source: str) -> Any:
        if not connects(incoming, self.input_type):
            raise self._mismatch(self.input_type, incoming, source)
        return self.output_type

    def worst_case(self) -> WorstCase:
        if self.kind == "agent":
            assert isinstance(self.target, Agent)
            return WorstCase.of(self.budget or self.target.budget)
        if self.budget is not None:
            return WorstCase.of(self.budget)
        if self.kind == "tool":
            assert isinstance(self.target, Tool)
            timeout = self.target.meta.timeout
            return WorstCase(steps=1, wall_seconds=float("inf") if timeout is None else timeout)
        return WorstCase(steps=1)

    def agents(self) -> list[Agent[Any]]:
        return [self.target] if isinstance(self.target, Agent) else []

    async def run(self, ctx: FlowContext, value: Any, key: str) -> Any:
        if isinstance(self.target, Agent):
            return await self._run_agent(ctx, self.target, value, key)
        if isinstance(self.target, Tool):
            return await self._run_tool(ctx, self.target, value, key)
        return await self._run_function(ctx, self.target, value, key)

    async def _run_function(self, ctx: FlowContext, fn: Callable[..., Any], value: Any,
                            key: str) -> Any:
        async def execute() -> Any:
            try:
                out = await call_user(fn, value)
                if self.output_type is Any:  # no declared type: keel's one codec
                    return to_jsonable(out)
                return self._adapter.dump_python(out, mode="json")  # validated back below
            except KeelError:
                raise
            except Exception as exc:
                raise _failed(ctx, key, self.name, exc) from exc

        data = await ctx.step(key, execute, kind="function", input=to_jsonable(value),
                              budgeted=True)
        return self._adapter.validate_python(data)

    async def _run_agent(self, ctx: FlowContext, agent: Agent[Any], value: Any,
                         key: str) -> Any:
        try:
            text = value if self.prompt is None else await call_user(self.prompt, value)
        except Exception as exc:
            raise _failed(ctx, key, self.name, exc) from exc
        if not isinstance(text, str):
            text = dumps(text, compact=True)
        result = await ctx.run_agent(agent, text, name=key, budget=self.budget)
        return result.output

    async def _run_tool(self, ctx: FlowContext, tool: Tool, value: Any, key: str) -> Any:
        try:
            args = to_jsonable(value if self.args is None else await call_user(self.args, value))
        except Exception as exc:
            raise _failed(ctx, key, self.name, exc) from exc
        if not isinstance(args, dict):
            raise _failed(ctx, key, self.name, TypeError(
                f"tool arguments must be a mapping, got {type(args).__name__}"))
        step_key = ctx.key(key)
        tool_ctx = ToolContext(run_id=ctx.run_id, step_key=step_key, agent=ctx.path,
                               idempotency_key=f"{ctx.run_id}/{step_key}", deps=ctx.deps,
                               tenant=ctx.tenant, user=ctx.user)

        async def execute() -> Any:
            return (await tool.call(args, tool_ctx)).to_dict()

        data = await ctx.step(key, execute, kind="tool", input=args,
                              idempotent=tool.meta.idempotent, budgeted=True)
        failure = data.get("failure")
        if failure:
            raise WorkflowError(f"workflow step {self.name!r} (tool {tool.name}) failed: "
                                f"{failure['error_type']}: {failure['message']}",
                                step=self.name, run_id=ctx.run_id, step_key=step_key)
        return self._adapter.validate_python(data.get("value"))


def _children(items: Iterable[StepLike], what: str) -> list[Node]:
    nodes = [as_node(item) for item in items]
    if not nodes:
        raise ConfigError(what, "needs at least one step")
    seen: set[str] = set()
    for node in nodes:
        if node.name in seen:
            raise ConfigError(f"step {node.name!r}", (
                f"two steps of {what} are named {node.name!r}; step names become journal "
                "keys and must be unique: pass name= to one of them"))
        seen.add(node.name)
    return nodes


def _check_sequence(nodes: Sequence[Node], incoming: Any, source: str) -> Any:
    for node in nodes:
        incoming = node.check(incoming, source)
        source = f"step {node.name!r}"
    return incoming


class Sequential(Node):
    """Steps one after the other, each output feeding the next (keys ``<name>/<step>``)."""

    def __init__(self, steps: Iterable[StepLike], *, name: str = "sequence") -> None:
        self.name = check_name("name", name)
        self.steps = _children(steps, f"sequence {name!r}")

    def check(self, incoming: Any, source: str) -> Any:
        return _check_sequence(self.steps, incoming, source)

    def worst_case(self) -> WorstCase:
        total = WorstCase()
        for node in self.steps:
            total = total.then(node.worst_case())
        return total

    def agents(self) -> list[Agent[Any]]:
        return [a for node in self.steps for a in node.agents()]

    async def run(self, ctx: FlowContext, value: Any, key: str) -> Any:
        return await run_sequence(self.steps, ctx.scope(key), value)


async def run_sequence(nodes: Sequence[Node], ctx: FlowContext, value: Any) -> Any:
    for node in nodes:
        value = await node.run(ctx, value, node.name)
    return value


def pipeline(*steps: StepLike, name: str = "sequence") -> Sequential:
    """``Sequential([...])`` written as arguments."""
    return Sequential(steps, name=name)


class Parallel(Node):
    """Fan-out: every branch gets the same input and runs concurrently (keys
    ``<name>/<label>``). Fan-in: the outputs as ``{label: output}``, or what ``join`` makes of
    that dict (a journaled step ``<name>/join``). If a branch fails, the others are still
    awaited (none is left running) and the first failure is raised."""

    def __init__(self, branches: Mapping[str, StepLike], *, name: str = "parallel",
                 join: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.name = check_name("name", name)
        if not isinstance(branches, Mapping) or not branches:
            raise ConfigError(f"step {name!r}", "Parallel takes a non-empty {label: step} dict")
        self.branches = {check_name("branch label", label): as_node(node)
                         for label, node in branches.items()}
        if "join" in self.branches and join is not None:
            raise ConfigError(f"step {name!r}", "'join' is the join step's key; rename that "
                              "branch")
        self.join = None if join is None else Step(join, name="join")

    def check(self, incoming: Any, source: str) -> Any:
        outs = [node.check(incoming, source) for node in self.branches.values()]
        merged: Any = dict.__class_getitem__((str, union_of(outs)))
        if self.join is None:
            return merged
        return self.join.check(merged, f"step {self.name!r} (the fan-in)")

    def worst_case(self) -> WorstCase:
        total = WorstCase()
        for node in self.branches.values():
            total = total.alongside(node.worst_case())
        return total if self.join is None else total.then(self.join.worst_case())

    def agents(self) -> list[Agent[Any]]:
        return [a for node in self.branches.values() for a in node.agents()]

    async def run(self, ctx: FlowContext, value: Any, key: str) -> Any:
        scope = ctx.scope(key)
        labels = list(self.branches)
        outputs = await scope.gather(*(self.branches[label].run(scope, value, label)
                                       for label in labels))
        merged = dict(zip(labels, outputs, strict=True))
        return merged if self.join is None else await self.join.run(scope, merged, "join")


class _PassThrough(Node):
    """The branch taken when a condition is false and no ``otherwise`` was given."""

    def __init__(self, name: str) -> None:
        self.name = name

    def check(self, incoming: Any, source: str) -> Any:
        return incoming

    def worst_case(self) -> WorstCase:
        return WorstCase()

    async def run(self, ctx: FlowContext, value: Any, key: str) -> Any:
        return value


class Branch(Node):
    """A conditional step. ``Branch(condition, then=step, otherwise=step)`` runs ``then`` when
    ``condition(value)`` is true (without ``otherwise``, a false condition passes the value
    on unchanged); ``Branch({label: step, ...}, by=fn)`` runs the step whose label ``fn``
    returns. The choice is journaled (``<name>/route``, kind ``decision``), the chosen step
    runs under ``<name>/<label>``."""

    def __init__(self, condition: Callable[[Any], Any] | Mapping[str, StepLike], *,
                 then: StepLike | None = None, otherwise: StepLike | None = None,
                 by: Callable[[Any], Any] | None = None, name: str = "branch") -> None:
        self.name = check_name("name", name)
        if isinstance(condition, Mapping):
            if by is None or then is not None or otherwise is not None:
                raise ConfigError(f"step {name!r}", "a router Branch takes {label: step} and "
                                  "by=fn (returning a label), not then=/otherwise=")
            if not condition:
                raise ConfigError(f"step {name!r}", "a router Branch needs at least one route")
            self.routes = {check_name("route label", label): as_node(node)
                           for label, node in condition.items()}
            if "route" in self.routes:
                raise ConfigError(f"step {name!r}", "'route' is the key of the branch's "
                                  "decision; rename that route")
            self._router = True
            self._chooser: Callable[[Any], Any] = by
        elif callable(condition):
            if then is None or by is not None:
                raise ConfigError(f"step {name!r}", "Branch(condition, then=step, "
                                  "otherwise=step) needs then= (and takes no by=)")
            self.routes = {"then": as_node(then), "otherwise": _PassThrough("otherwise")
                           if otherwise is None else as_node(otherwise)}
            self._router = False
            self._chooser = condition
        else:
            raise ConfigError(f"step {name!r}", "Branch takes a condition function or a "
                              f"{{label: step}} dict, not {type(condition).__name__}")
        self._input = signature_types(self._chooser, f"step {name!r} condition")[0]

    def check(self, incoming: Any, source: str) -> Any:
        if not connects(incoming, self._input):
            raise self._mismatch(self._input, incoming, source)
        return union_of([node.check(incoming, source) for node in self.routes.values()])

    def worst_case(self) -> WorstCase:
        nodes = list(self.routes.values())
        total = nodes[0].worst_case()
        for node in nodes[1:]:
            total = total.either(node.worst_case())
        return total

    def agents(self) -> list[Agent[Any]]:
        return [a for node in self.routes.values() for a in node.agents()]

    async def _choose(self, ctx: FlowContext, value: Any) -> str:
        try:
            out = await call_user(self._chooser, value)
        except Exception as exc:
            raise _failed(ctx, "route", self.name, exc) from exc
        label = out if self._router else ("then" if out else "otherwise")
        if label not in self.routes:
            raise WorkflowError(
                f"branch {self.name!r} chose {label!r}, which is not one of its routes "
                f"({', '.join(self.routes)})", step=self.name, run_id=ctx.run_id,
                step_key=ctx.key("route"))
        return str(label)

    async def run(self, ctx: FlowContext, value: Any, key: str) -> Any:
        scope = ctx.scope(key)
        label = await scope.step("route", lambda: self._choose(scope, value), kind="decision",
                                 input=to_jsonable(value), blocking=False)
        return await self.routes[label].run(scope, value, label)


class Gate(Node):
    """A check that must pass before the workflow goes on: ``predicate(value)`` true (or a
    predicate that raises: failing, with the error). The verdict is journaled (``<name>``,
    kind ``gate``); a failed gate raises :class:`GateFailed` naming it, and no later step runs.
    The value passes through unchanged."""

    def __init__(self, name: str, predicate: Callable[[Any], Any],
                 message: str | None = None) -> None:
        self.name = check_name("name", name)
        if not callable(predicate):
            raise ConfigError(f"gate {name!r}", "predicate must be a function of the value")
        self.predicate = predicate
        self.message = message or f"gate {name!r} did not pass"
        self._input = signature_types(predicate, f"gate {name!r}")[0]

    def check(self, incoming: Any, source: str) -> Any:
        if not connects(incoming, self._input):
            raise self._mismatch(self._input, incoming, source)
        return incoming

    def worst_case(self) -> WorstCase:
        return WorstCase()

    async def run(self, ctx: FlowContext, value: Any, key: str) -> Any:
        async def verdict() -> dict[str, Any]:
            try:
                ok = bool(await call_user(self.predicate, value))
            except Exception as exc:
                return {"passed": False, "reason": f"{self.message} ({type(exc).__name__}: "
                        f"{exc})"}
            return {"passed": ok, "reason": "" if ok else self.message}

        data = await ctx.step(key, verdict, kind="gate", input=to_jsonable(value))
        if not data["passed"]:
            raise GateFailed(f"workflow stopped at gate {self.name!r}: {data['reason']}",
                             step=self.name, reason=data["reason"], run_id=ctx.run_id,
                             step_key=ctx.key(key))
        return value


class Workflow(Flow[Any]):
    """A pipeline of typed steps run as a flow (kind ``workflow``): functions, agents and tools,
    :class:`Parallel` fan-out, :class:`Branch` and :class:`Gate`. Built-time checks: the step
    types connect (from the workflow's string input on), names are unique; with
    ``strict_budget`` the worst case must fit the workflow's budget."""

    kind = "workflow"

    def __init__(self, name: str, steps: Iterable[StepLike], *, strict_budget: bool = False,
                 **options: Unpack[FlowOptions]) -> None:
        super().__init__(name, **options)
        self.steps = _children(steps, f"workflow {name!r}")
        self.output_type = _check_sequence(self.steps, str, "the workflow input (a string)")
        if strict_budget:
            over = self.worst_case().exceeds(self.budget)
            if over:
                raise ConfigError("budget", (
                    f"workflow {name!r} could spend more than its budget ({'; '.join(over)}); "
                    "raise the budget, give steps smaller budgets, or drop strict_budget"))

    def agents(self) -> list[Agent[Any]]:
        return [a for node in self.steps for a in node.agents()]

    def graph(self, prefix: str | None = None) -> FlowGraph:
        """This workflow's structure as data (its steps in order, gates, parallel branches
        and branches), each node with the journal keys that show a run went through it;
        ``prefix``: the step key it runs under (default: its name). See
        :func:`keel.runtime.flow_graph`."""
        from keel.patterns._graphs import WorkflowKinds, workflow_graph

        kinds = WorkflowKinds(step=Step, gate=Gate, sequential=Sequential, parallel=Parallel,
                              branch=Branch)
        return workflow_graph(self, prefix or self.name, kinds)

    def worst_case(self) -> WorstCase:
        """The most the workflow can spend: sequential steps add up, parallel branches add
        up (wall time: the longest branch), a branch counts its most expensive route. An
        agent step counts its budget share (or the agent's own budget); a function or tool
        step its declared budget, else one step (a tool: plus its timeout as wall time)."""
        total = WorstCase()
        for node in self.steps:
            total = total.then(node.worst_case())
        return total

    def worst_case_budget(self) -> Budget:
        """:meth:`worst_case` as a :class:`Budget` (None: unbounded, or not spent at all)."""
        return self.worst_case().as_budget()

    async def body(self, ctx: FlowContext, input: str) -> Any:
        return await run_sequence(self.steps, ctx, input)

"""``keel demo``: the repository's examples, run offline on their scripted models.

Each example in ``examples/`` defines ``agent`` and ``INPUT`` (and ``EXPECTED_ERROR`` when it
shows a run being stopped). The demo hides ``KEEL_MODEL`` while importing them, so each picks
its :class:`~keel.testing.ScriptedModel`, refuses any agent that would call a real model, and
journals the runs in a temporary SQLite store that is deleted at the end.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

import keel
from keel.cli._errors import report_run_error
from keel.cli._load import Runnable, load_file, structured
from keel.cli._render import LiveView, summary_panel
from keel.cli._text import Screen, safe, to_json
from keel.cli._timeline import runs_table
from keel.core import ApprovalRequired, RunError
from keel.models import FunctionModel, ScriptedModel
from keel.runtime import Agent, Flow, decide_approval
from keel.store import RunFilter, RunStore, open_store

#: The order the demo tells its story in; other examples follow alphabetically.
ORDER = ("tool_use", "structured_output", "self_correction", "budget_guard", "approval_gate")


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    title: str
    agent: Runnable
    input: str
    expected_error: type[BaseException] | None = None
    review: dict[str, Any] | None = None


def examples_dir() -> Path | None:
    """The examples shipped in the package (``keel/examples`` in a wheel), else the
    repository's ``examples/`` (an editable install), else ``./examples``; ``None`` if none
    holds an example."""
    package = Path(keel.__file__).resolve().parent
    for candidate in (package / "examples", package.parents[1] / "examples",
                      Path.cwd() / "examples"):
        if candidate.is_dir() and any(candidate.glob("*.py")):
            return candidate
    return None


def example_files(directory: Path) -> list[Path]:
    rank = {name: i for i, name in enumerate(ORDER)}
    files = [p for p in directory.glob("*.py") if not p.name.startswith("_")]
    return sorted(files, key=lambda p: (rank.get(p.stem, len(rank)), p.stem))


@contextmanager
def scripted_models() -> Iterator[None]:
    """Hide ``KEEL_MODEL`` so the examples pick their scripted models."""
    saved = os.environ.pop("KEEL_MODEL", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["KEEL_MODEL"] = saved


def is_offline(agent: Runnable) -> bool:
    """Whether the agent (or every agent of a flow) plays a scripted model."""
    agents = [agent] if isinstance(agent, Agent) else list(agent.agents())
    return all(isinstance(a.model, ScriptedModel | FunctionModel) for a in agents)


def load_scenario(path: Path) -> Scenario | str:
    """The example at ``path``, or why it cannot be part of the demo."""
    with scripted_models():
        module = load_file(path)
    agent = getattr(module, "agent", None)
    if not isinstance(agent, Agent):
        agent = getattr(module, "flow", None)  # a pattern's example
    text = getattr(module, "INPUT", None)
    if not isinstance(agent, Agent | Flow) or not isinstance(text, str):
        return "it has no module-level `agent` (or `flow`) and `INPUT`"
    if not is_offline(agent):
        return "its agent calls a real model (the demo stays offline)"
    expected = getattr(module, "EXPECTED_ERROR", None)
    if not (isinstance(expected, type) and issubclass(expected, BaseException)):
        expected = None
    title = (module.__doc__ or path.stem).strip().splitlines()[0]
    review = getattr(module, "REVIEW", None)
    return Scenario(name=f"examples/{path.name}", title=title, agent=agent, input=text,
                    expected_error=expected, review=review if isinstance(review, dict) else None)


def example_target(directory: Path | None, name: str = "tool_use.py") -> str:
    """``MODULE:AGENT`` for one shipped example, as ``keel run`` takes it from the current
    directory: relative inside a checkout (``examples/tool_use.py:agent``), else the file's
    absolute path inside the installed package, quoted for the shell if it needs it."""
    path = (directory or Path.cwd() / "examples") / name
    try:
        shown = str(path.relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    return shlex.quote(f"{shown}:agent")


def banner(screen: Screen) -> None:
    body = Text()
    body.append("The model is scripted: ", style="bold yellow")
    body.append("keel.testing.ScriptedModel plays back each example's SCRIPT, so no LLM is "
                "called and no API key is needed. Everything else is the real runtime: tool "
                "validation, parallel calls, typed output, budgets and the run journal.\n")
    body.append("Runs are journaled in a temporary store that is deleted at the end.",
                style="dim")
    screen.out.print(Panel(body, title="keel demo · offline", title_align="left",
                           border_style="yellow"))
    if os.environ.get("KEEL_MODEL"):
        screen.out.print(safe("KEEL_MODEL is set but ignored here: the demo never calls a "
                              f"model. Try it with `keel run {example_target(examples_dir())} "
                              '"..."`.',
                              "yellow"))


def collect(screen: Screen) -> tuple[list[Scenario], bool]:
    """The scenarios to run, and whether all examples loaded."""
    directory = examples_dir()
    if directory is None:
        screen.error("no examples found: they ship inside keel-agents (keel/examples) and in "
                     "the repository's examples/; reinstall keel-agents or run from a checkout")
        return [], False
    scenarios: list[Scenario] = []
    ok = True
    for path in example_files(directory):
        try:
            loaded = load_scenario(path)
        except Exception as exc:
            screen.error(f"examples/{path.name} does not load: {exc}")
            ok = False
            continue
        if isinstance(loaded, str):
            screen.out.print(safe(f"skipping examples/{path.name}: {loaded}", "dim"))
        else:
            scenarios.append(loaded)
    return scenarios, ok


async def play(screen: Screen, scenario: Scenario, store: RunStore) -> bool:
    """Run one scenario with the live view; ``True`` if it ended as the example intends."""
    out = screen.out
    out.rule(safe(scenario.name, "bold"), align="left")
    out.print(safe(scenario.title, "italic"))
    out.print(Text("input: ", style="bold") + safe(scenario.input))
    view = LiveView(screen, structured=structured(scenario.agent))
    expected = scenario.expected_error
    try:
        try:
            result = await scenario.agent.run(scenario.input, store=store, on_event=view)
        except ApprovalRequired as waiting:
            if scenario.review is None:
                raise
            await review(screen, store, waiting, scenario.review)
            view = LiveView(screen, structured=structured(scenario.agent))
            result = await scenario.agent.resume(waiting.run_id or "", store=store,
                                                 on_event=view)
    except RunError as exc:
        if expected is not None and isinstance(exc, expected):
            out.print(stopped_panel(exc))
            return True
        report_run_error(screen, exc, view.run_id)
        return False
    except Exception as exc:
        screen.error(f"{scenario.name} failed: {type(exc).__name__}: {exc}")
        return False
    out.print(summary_panel(result))
    if expected is not None:
        screen.error(f"{scenario.name} should have stopped with {expected.__name__}")
        return False
    return True


async def review(screen: Screen, store: RunStore, waiting: ApprovalRequired,
                 decision: dict[str, Any]) -> None:
    """Play the reviewer: show each pending request, decide it as the example says."""
    out = screen.out
    for approval_id in waiting.approval_ids:
        task = await store.get_task(approval_id)
        request = task.data
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("run", safe(f"{task.run_id} is suspended (the process could exit here)"))
        grid.add_row("tool", safe(f"{request['tool']} ({request['risk']})"))
        grid.add_row("arguments", safe(to_json(request["arguments"])))
        grid.add_row("reason", safe(str(request["reason"])))
        out.print(Panel(grid, title=f"approval {approval_id} waits for a person",
                        title_align="left", border_style="yellow", expand=False))
        by = str(decision.get("by", "demo"))
        comment = str(decision.get("comment", ""))
        await decide_approval(approval_id, store=store, approve=bool(decision.get("approve")),
                              by=by, comment=comment)
        verb = "approved" if decision.get("approve") else "denied"
        out.print(safe(f"{by} {verb} it ({comment}); `keel approvals approve {approval_id}` "
                       "does the same. Resuming from the journal:", "dim"))


def stopped_panel(exc: RunError) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("error", safe(type(exc).__name__, "bold red"))
    grid.add_row("message", safe(exc.message, "red"))
    grid.add_row("run id", safe(exc.run_id or "?"))
    grid.add_row("step", safe(exc.step_key or "?"))
    return Panel(grid, title="stopped, as this example intends", title_align="left",
                 border_style="yellow", expand=False)


async def play_all(screen: Screen, scenarios: list[Scenario], path: Path) -> bool:
    ok = True
    async with open_store(str(path)) as store:
        for scenario in scenarios:
            ok = await play(screen, scenario, store) and ok
        runs = await store.list_runs(RunFilter(limit=len(scenarios)))
    screen.out.rule(safe("the run store", "bold"), align="left")
    screen.out.print(runs_table(runs, screen.out.width))
    return ok


def demo_command(screen: Screen) -> bool:
    """Run the demo; ``True`` if every scenario ended as intended."""
    banner(screen)
    scenarios, loaded = collect(screen)
    with tempfile.TemporaryDirectory(prefix="keel-demo-") as tmp:
        played = asyncio.run(play_all(screen, scenarios, Path(tmp) / "runs.db"))
    screen.out.print(safe(
        "That store is gone now. To keep runs, run an example yourself, e.g.\n"
        f'  keel run {example_target(examples_dir())} "Which is warmer, Paris or Tokyo?"\n'
        "  keel runs list      keel runs show RUN_ID", "dim"))
    return loaded and played

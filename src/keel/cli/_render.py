"""Live rendering of a run's events, and the summary of a finished run."""

from __future__ import annotations

import json
from typing import Any

from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from keel.cli._text import LONG, SHORT, Screen, one_line, safe
from keel.core import (
    ModelTurn,
    Observation,
    RunEvent,
    RunStarted,
    StepRecorded,
    ToolCallStarted,
    Usage,
    to_jsonable,
    to_text,
)
from keel.runtime import FINAL_TOOL, RunResult

STATUS_STYLE = {"completed": "green", "failed": "red", "running": "cyan",
                "suspended": "yellow", "cancelled": "magenta"}


def usage_text(input_tokens: int, output_tokens: int, cost_usd: float) -> str:
    return f"{input_tokens:,} in · {output_tokens:,} out tokens · ${cost_usd:.4f}"


def latency_text(ms: float) -> str:
    return f"{ms:,.1f} ms" if ms < 1000 else f"{ms / 1000:,.2f} s"


def turn_label(key: str) -> str:
    """``agent/turn:3/model`` -> ``turn 3``."""
    for part in key.split("/"):
        if part.startswith("turn:"):
            return "turn " + part[len("turn:"):]
    return key


def describe_failure(content: str) -> str:
    """A tool's error observation (``{"error": {...}}``, maybe with a keel note after it) as
    ``error_type: message (hint)``; other text as is."""
    try:
        data, end = json.JSONDecoder().raw_decode(content)
    except ValueError:
        return content
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return content
    text = f"{err.get('error_type', 'error')}: {err.get('message', '')}"
    if err.get("hint"):
        text += f" (hint: {err['hint']})"
    rest = content[end:].strip()
    return f"{text} {rest}" if rest else text


class LiveView:
    """The ``on_event=`` callback of ``keel run`` / ``keel resume``: prints each step as it
    happens. Steps read back from the journal (``recorded`` keys, or events marked replayed)
    are dimmed. With ``quiet`` it only remembers the run id (for ``--json``)."""

    def __init__(self, screen: Screen, *, structured: bool = False, quiet: bool = False,
                 recorded: frozenset[str] = frozenset()) -> None:
        self.screen = screen
        self.structured = structured
        self.quiet = quiet
        self.recorded = recorded
        self.run_id: str | None = None
        self._latency: dict[str, float] = {}
        self._answer_pending = False

    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, RunStarted):
            self.run_id = event.run_id
        if self.quiet:
            return
        if isinstance(event, RunStarted):
            self._started(event)
        elif isinstance(event, StepRecorded):
            self._latency[event.key] = event.latency_ms
        elif isinstance(event, ModelTurn):
            self._model_turn(event)
        elif isinstance(event, ToolCallStarted):
            self._tool_call(event)
        elif isinstance(event, Observation):
            self._observation(event)
        # TextDelta / ToolCallDelta (streaming only) and RunFinished: the summary follows.

    def _print(self, text: Text, replayed: bool) -> None:
        if replayed:
            text.stylize("dim")
            text.append("  (replayed)", style="dim italic")
        self.screen.line(text)

    def _started(self, event: RunStarted) -> None:
        line = Text("▶ " if self.screen.unicode else "> ", style="bold")
        line.append("resuming run " if event.resumed else "run ")
        line.append_text(safe(event.run_id, "bold"))
        line.append(" · agent ")
        line.append_text(safe(event.agent, "bold"))
        self.screen.line(line)
        if event.resumed and self.recorded:
            self.screen.line(Text(
                f"  {len(self.recorded)} recorded steps replay from the journal (dimmed); "
                "the rest run now.", style="dim"))

    def _model_turn(self, event: ModelTurn) -> None:
        replayed = event.replayed or event.key in self.recorded
        if self._answer_pending:
            self.screen.line(Text(
                "  the answer did not match the output type; keel sent the validation errors "
                "back and the model tries again", style="yellow"))
        self._answer_pending = False
        head = Text(turn_label(event.key), style="bold cyan")
        u: Usage = event.usage
        head.append(f"  model · {usage_text(u.input_tokens, u.output_tokens, u.cost_usd)}",
                    style="cyan")
        if event.key in self._latency:
            head.append(f" · {latency_text(self._latency[event.key])}", style="cyan")
        self._print(head, replayed)
        if event.text.strip():
            thought = Text("  ")
            thought.append_text(safe(event.text.strip(), "italic", limit=LONG))
            self._print(thought, replayed)
        finals = [(n, a) for n, a in event.tool_calls if n == FINAL_TOOL and self.structured]
        for name, arguments in finals[:1]:
            line = Text(f"  {self.screen.arrow()} ", style="bold green")
            line.append(name, style="bold green")
            line.append(" ")
            line.append_text(safe(one_line(arguments, LONG), limit=None))
            self._print(line, replayed)
        self._answer_pending = self.structured and (bool(finals) or not event.tool_calls)

    def _tool_call(self, event: ToolCallStarted) -> None:
        line = Text(f"  {self.screen.arrow()} ", style="bold")
        line.append_text(safe(event.tool_name, "bold", limit=SHORT))
        line.append(" ")
        line.append_text(safe(one_line(event.arguments), limit=None))
        self._print(line, event.key in self.recorded)

    def _observation(self, event: Observation) -> None:
        replayed = event.replayed or event.key in self.recorded
        style = "red" if event.is_error else ""
        line = Text(f"  {self.screen.arrow(right=False)} ", style=style or "bold")
        line.append_text(safe(event.tool_name, style or "bold", limit=SHORT))
        if event.key in self._latency:
            line.append(f" ({latency_text(self._latency[event.key])})", style="dim")
        line.append(" ")
        content = describe_failure(event.content) if event.is_error else event.content
        line.append_text(safe(one_line(content, 400), style, limit=None))
        self._print(line, replayed)


def summary_panel(result: RunResult[Any]) -> Panel:
    """The panel ending ``keel run``: run id, status, steps, tokens, cost and the output."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    u = result.usage
    steps = str(result.steps)
    if result.replayed_steps:
        steps += f" ({result.replayed_steps} replayed from the journal)"
    grid.add_row("run id", safe(result.run_id))
    grid.add_row("agent", safe(result.agent))
    grid.add_row("status", Text(result.status, style=STATUS_STYLE.get(result.status, "")))
    grid.add_row("steps", steps)
    grid.add_row("tokens", f"{u.input_tokens:,} in · {u.output_tokens:,} out")
    grid.add_row("cost", f"${u.cost_usd:.4f}")
    grid.add_row("output", safe(to_text(result.output, indent=2), limit=LONG))
    style = STATUS_STYLE.get(result.status, "")
    return Panel(grid, title=f"run {result.status}", title_align="left", border_style=style,
                 expand=False)


def result_json(result: RunResult[Any]) -> dict[str, Any]:
    """What ``keel run --json`` prints."""
    return {"run_id": result.run_id, "agent": result.agent, "status": result.status,
            "output": to_jsonable(result.output), "text": result.text, "steps": result.steps,
            "replayed_steps": result.replayed_steps, "usage": result.usage.to_dict()}

"""Tool output paging: a large result reaches the model as a handle with a summary, and the
model drills down with three small tools that read the full value from the run's journal.

:class:`Paging` is the middleware. In ``wrap_tool_call`` it replaces the content of a large
result by a summary naming a *handle* (the value itself is still the step's recorded value,
whole); in ``wrap_model_request`` it adds the drill-down tools' specs when the conversation
holds a handle; it serves those tools through :meth:`Middleware.provide_tools`. A drill-down
call is an ordinary journaled tool step that reads the recorded value through
``ToolContext.steps``: the tool that made the result never runs again, and resume and replay
are exact. A handle is derived from the run id and the step key and resolved only among the
steps of the run asking, so a handle of another run (or tenant) names nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal, TypeAlias

from keel.context._pages import MARK, Limits, Pages, as_data, echo, record_list
from keel.core import ConfigError, Message, ModelResponse, RetryWithFeedback, ToolContext, to_text
from keel.runtime import (
    AgentInput,
    Middleware,
    ModelNext,
    ModelRequestInput,
    RunEndInput,
    ToolCallInput,
    ToolNext,
)
from keel.tools import Tool, ToolMeta, ToolResult, tool_from_schema

Auto: TypeAlias = Literal["lists", "all", "off"]
_AUTO = ("lists", "all", "off")
PAGE_TOOL, FILTER_TOOL, RECORD_TOOL = "result_page", "result_filter", "result_record"
TOOL_NAMES = frozenset({PAGE_TOOL, FILTER_TOOL, RECORD_TOOL})
_HANDLE = {"type": "string"}
_SCALAR = {"type": ["string", "number", "boolean"]}


def handle_for(run_id: str, step_key: str) -> str:
    """The handle of the result of ``step_key`` in run ``run_id``."""
    raw = f"{run_id}\x00{step_key}".encode("utf-8", "surrogatepass")
    return "h" + hashlib.blake2b(raw, digest_size=6).hexdigest()


def _positive(name: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"Paging.{name}", f"must be a whole number >= {low}, not {value!r}")
    return value


class Paging(Middleware):
    """Large tool results as handles the model drills into (docs/context.md, "Tool output
    paging"). On by default (:func:`keel.defaults`).

    Which results become handles: a tool declaring ``paging=True`` whenever its result's
    text is over ``threshold`` characters (or its ``output_limit``, if smaller); a tool
    declaring ``paging=False`` never (its result is cut at its ``output_limit``); any other
    tool by ``auto``: ``"lists"`` (the default) when its result is cut at ``output_limit``
    and is a JSON list of records (or an object around one, ``{"items": [...], ...}``),
    ``"all"`` when it is cut at all (text is paged by lines), ``"off"`` never.

    A page holds at most ``page_size`` records and ``page_chars`` characters; the summary
    shows the first ``preview`` records; one record over ``record_chars`` characters is
    outlined (its fields and sizes) for the model to ask for a part by path.
    """

    def __init__(self, *, auto: Auto = "lists", threshold: int = 8_000, page_size: int = 20,
                 page_chars: int = 4_000, preview: int = 3, record_chars: int = 8_000,
                 enabled: bool = True) -> None:
        if not isinstance(enabled, bool):
            raise ConfigError("Paging.enabled", "must be True or False")
        self.enabled = enabled
        if auto not in _AUTO:
            raise ConfigError("Paging.auto", f"must be one of {_AUTO}, not {auto!r}")
        self.auto: Auto = auto
        self.threshold = _positive("threshold", threshold, 100)
        self.limits = Limits(page_size=_positive("page_size", page_size, 1),
                             page_chars=_positive("page_chars", page_chars, 200),
                             preview=_positive("preview", preview, 0),
                             record_chars=_positive("record_chars", record_chars, 200))
        self._tools = _drill_down_tools(self)
        self._specs = [t.spec for t in self._tools]
        #: Recently used pages, by (run id, step key): a recorded value never changes.
        self._cache: OrderedDict[tuple[str, str], Pages] = OrderedDict()
        #: Per run: (messages scanned, the last of them, a handle among them). A run's
        #: conversation only grows, so each request scans only its new messages.
        self._scanned: dict[tuple[str, str], tuple[int, Message | None, bool]] = {}

    @classmethod
    def off(cls) -> Paging:
        """No paging at all: every result is cut at its tool's ``output_limit``, and no
        drill-down tool exists (their names are free for the agent's own tools)."""
        return cls(enabled=False)

    def __repr__(self) -> str:
        if not self.enabled:
            return "<Paging off>"
        return (f"<Paging auto={self.auto} threshold={self.threshold} "
                f"page_size={self.limits.page_size} page_chars={self.limits.page_chars}>")

    # ---------------------------------------------------------------------------- hooks

    def provide_tools(self) -> Sequence[Tool]:
        return self._tools if self.enabled else ()

    def on_agent(self, inp: AgentInput) -> None:
        if not self.enabled:
            return
        clash = sorted(TOOL_NAMES & {t.name for t in inp.tools})
        if clash:
            raise ConfigError(
                f"agent {inp.agent!r} tools", f"{', '.join(clash)} are the names of keel's "
                "paging tools: rename the agent's tool, or pass Paging.off() in middleware= "
                "to do without paging")

    async def wrap_tool_call(self, inp: ToolCallInput, next: ToolNext) -> ToolResult:
        result = await next(inp)
        if not self.enabled or result.failure is not None or result.handoff is not None:
            return result
        meta = inp.tool.meta
        if meta.paging is False or meta.name in TOOL_NAMES:
            return result
        size = self._size(meta, result)
        if size is None:
            return result
        handle = handle_for(inp.run_id, inp.step_key)
        pages = Pages(handle, as_data(result.value, result.content), meta.fields, self.limits)
        self._keep((inp.run_id, inp.step_key), pages)
        summary = pages.summary(meta.name, size)
        return ToolResult(content=json.dumps(summary, ensure_ascii=False), value=result.value)

    def _size(self, meta: ToolMeta, result: ToolResult) -> int | None:
        """The size of a result that becomes a handle, or None (it stays as it is)."""
        if meta.paging is True:
            size = _full_size(result)
            return size if size > min(self.threshold, meta.output_limit) else None
        if not result.truncated or self.auto == "off":
            return None
        if self.auto == "lists" and record_list(as_data(result.value, "")) is None:
            return None
        return _full_size(result)

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        conversation = (inp.run_id, inp.step_key.rpartition("/turn:")[0])
        if self.enabled and self._holds_handle(conversation, inp.messages):
            have = {s.name for s in inp.tools}
            extra = [s for s in self._specs if s.name not in have]
            if extra:
                inp = replace(inp, tools=[*inp.tools, *extra])
        return await next(inp)

    # ---------------------------------------------------------------------- drill-down

    def pages(self, handle: Any, ctx: ToolContext) -> Pages:
        """The pages of the result ``handle`` names, among this run's recorded steps."""
        if not isinstance(handle, str) or not handle:
            raise RetryWithFeedback("handle must be the keel_handle string of a summary")
        if ctx.steps is None:
            raise RetryWithFeedback("this call has no run journal to read handles from")
        prefix = f'{MARK}{handle}"'
        for key, data in ctx.steps.recorded_results("tool"):
            if _drill_down_key(key):
                continue  # its answer names the handle too; the value is the original's
            content = data.get("content") if isinstance(data, dict) else None
            if isinstance(content, str) and content.startswith(prefix):
                cached = self._cache.get((ctx.run_id, key))
                if cached is not None and cached.handle == handle:
                    self._cache.move_to_end((ctx.run_id, key))
                    return cached
                shown = json.loads(content).get("shown_fields") or ()
                pages = Pages(handle, as_data(data.get("value"), ""), tuple(shown), self.limits)
                self._keep((ctx.run_id, key), pages)
                return pages
        raise RetryWithFeedback(
            f"unknown handle {echo(handle)}: no result of this run has it",
            hint="Use the keel_handle of a summary in this conversation, as written.")

    def _holds_handle(self, conversation: tuple[str, str], messages: Sequence[Message]) -> bool:
        """Whether ``messages`` hold a handle (an agent's conversation in a run)."""
        n = len(messages)
        seen, last, found = self._scanned.get(conversation, (0, None, False))
        if not (0 < seen <= n and messages[seen - 1] is last):
            seen, found = 0, False  # another conversation (a history policy rewrote it)
        if not found and seen < n:
            found = _holds_handle(messages[seen:])
        self._scanned[conversation] = (n, messages[n - 1] if n else None, found)
        return found

    async def on_run_end(self, inp: RunEndInput) -> None:
        for key in [k for k in self._cache if k[0] == inp.run_id]:
            del self._cache[key]
        for conversation in [k for k in self._scanned if k[0] == inp.run_id]:
            del self._scanned[conversation]

    def _keep(self, key: tuple[str, str], pages: Pages) -> None:
        self._cache[key] = pages
        self._cache.move_to_end(key)
        while len(self._cache) > 16:
            self._cache.popitem(last=False)


def _full_size(result: ToolResult) -> int:
    """The characters of the whole result (its content may be cut or projected)."""
    value = result.value
    if value is None:
        return len(result.content)
    return len(value) if isinstance(value, str) else len(to_text(value))


def _drill_down_key(key: str) -> bool:
    return key.rpartition("/tool:")[2].partition("#")[0] in TOOL_NAMES


def _holds_handle(messages: Sequence[Message]) -> bool:
    for m in reversed(messages):
        if m.role != "tool":
            continue
        for part in m.parts:
            content = getattr(part, "content", None)
            if isinstance(content, str) and content.startswith(MARK):
                return True
    return False


def _drill_down_tools(paging: Paging) -> list[Tool]:
    def page(args: dict[str, Any], ctx: ToolContext) -> str:
        pages = paging.pages(args["handle"], ctx)
        return _render(pages.page(args.get("page", 1)), pages)

    def filter_(args: dict[str, Any], ctx: ToolContext) -> str:
        pages = paging.pages(args["handle"], ctx)
        return _render(pages.filter(args.get("field"), args.get("equals"),
                                    args.get("contains"), args.get("page", 1)), pages)

    def record(args: dict[str, Any], ctx: ToolContext) -> str:
        pages = paging.pages(args["handle"], ctx)
        return _render(pages.record(args.get("index"), args.get("id"), args.get("path")),
                       pages)

    def schema(props: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": {"handle": _HANDLE, **props},
                "required": ["handle"], "additionalProperties": False}

    def make(name: str, description: str, props: dict[str, Any],
             fn: Callable[[dict[str, Any], ToolContext], str]) -> Tool:
        # Answers are bounded by the page and record limits, so no output limit cuts them.
        return tool_from_schema(name, description, schema(props), fn, context=True, risk="read",
                                blocking=False, paging=False, output_limit=2**31)

    # Compact on purpose: these specs are sent with every request once a handle exists.
    # Ranges (page >= 1, index >= 0) are checked by the tools, with a message saying the range.
    number, text = {"type": "integer"}, {"type": "string"}
    return [
        make(PAGE_TOOL, "Page N (from 1) of a keel_handle result.", {"page": number}, page),
        make(FILTER_TOOL, "Records of a keel_handle result whose field equals or contains a "
             "value.", {"field": text, "equals": _SCALAR, "contains": text, "page": number},
             filter_),
        make(RECORD_TOOL, "One record of a keel_handle result, by index (from 0) or id; path "
             "for a part.", {"index": number, "id": _SCALAR, "path": text}, record),
    ]


def _render(answer: dict[str, Any], pages: Pages) -> str:
    """A drill-down answer as the model sees it: JSON, or for text a JSON header line and
    the lines themselves."""
    items = answer.get("items")
    if pages.text and isinstance(items, str):
        head = {k: v for k, v in answer.items() if k != "items"}
        return json.dumps(head, ensure_ascii=False) + "\n" + items
    return json.dumps(answer, ensure_ascii=False)

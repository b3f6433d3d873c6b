"""``keel mcp serve``: a :class:`keel.server.App`'s agents and flows as an MCP server.

Each agent or flow is an MCP tool of the same name taking ``{input, user?, conversation?}``.
A call runs it through keel as ``keel serve`` would (journal, budgets, guards, approvals: every
default) on the app's store, for the server's tenant, and answers:

- a completed run: its text, and ``{run_id, status: "completed", output}`` as structured
  content;
- a run that waits for a person (an approval or an escalation): a normal (not ``isError``)
  result saying so, with the run id and the approval or escalation ids. Nothing failed: the
  run is ``suspended`` in the store, and a decision (``keel approvals approve ID``, the
  console) makes it runnable: this server's worker continues it (``execute="server"``, the
  default; ``keel worker`` processes with ``"workers"``), or ``keel resume RUN_ID``;
- a failed run: an ``isError`` result with keel's normalized error (``error_type``,
  ``message``, ``retryable``), never a stack trace;
- arguments that do not match the schema: an ``isError`` result naming the field (the MCP
  spec's tool execution error, which a model can correct); no run is written.

With ``expose_tools`` the agents' own tools are MCP tools too. Such a call runs the tool
alone (validated, with its timeout), outside any run: no journal, no approval gate. So by
default (``expose_tools=True``) only ``read`` tools are exposed; name others explicitly
(``expose_tools=["lookup", "refund"]``) to expose them anyway.

There is no authentication here: stdio serves the local client that started the process;
the HTTP transport binds to 127.0.0.1 and must sit behind the operator's own auth to go
further. Every run started through MCP carries the ``tenant`` given here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import mcp.types as mt
from mcp.server import Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.core import (
    ApprovalRequired,
    ConfigError,
    Escalate,
    KeelError,
    ModelTurn,
    Observation,
    RunError,
    RunNotFound,
    ToolCallStarted,
    ToolContext,
    new_run_id,
    to_jsonable,
)
from keel.guard import SensitiveDataBlocked
from keel.runtime import Worker
from keel.server._app import App, _store_url
from keel.server._offloop import off_loop
from keel.store import RunStore, open_store
from keel.tools import Tool

_log = logging.getLogger("keel.server.mcp")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$"
MAX_INPUT_CHARS = 100_000
#: sends one progress message: ``report(count, message)``
Report = Callable[[int, str], Awaitable[None]]


class AgentArgs(BaseModel):
    """What an agent's MCP tool takes."""

    model_config = ConfigDict(extra="forbid", strict=True)
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS,
                       description="the request for the agent")
    user: str | None = Field(default=None, min_length=1, max_length=200,
                             description="the user the run acts for (stored with it)")
    conversation: str | None = Field(
        default=None, pattern=ID_PATTERN,
        description="continue this conversation: the agent starts from its earlier turns")


AGENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "input": {"type": "string", "minLength": 1, "maxLength": MAX_INPUT_CHARS,
                  "description": "the request for the agent"},
        "user": {"type": "string", "minLength": 1, "maxLength": 200,
                 "description": "the user the run acts for (stored with it)"},
        "conversation": {"type": "string", "pattern": ID_PATTERN,
                         "description": "continue this conversation: the agent starts from "
                                        "its earlier turns"},
    },
    "required": ["input"],
    "additionalProperties": False,
}


def risk_hints(tool: Tool) -> mt.ToolAnnotations:
    """A keel tool's risk as MCP hints: ``read`` is read-only and idempotent,
    ``irreversible`` destructive, ``write`` neither (the inverse of the client's mapping)."""
    risk = tool.meta.risk
    if risk == "read":
        return mt.ToolAnnotations(read_only_hint=True, destructive_hint=False,
                                  idempotent_hint=True)
    return mt.ToolAnnotations(read_only_hint=False, destructive_hint=risk == "irreversible",
                              idempotent_hint=tool.meta.idempotent and risk != "irreversible")


#: how much of an agent's instructions its MCP description shows (its first paragraph)
DESCRIPTION_CHARS = 500


def _description(agent: Any) -> str:
    """``description`` if the agent has one, else the first paragraph of its instructions
    (cut to :data:`DESCRIPTION_CHARS`: the whole system prompt is not for every client)."""
    text = (getattr(agent, "description", None) or getattr(agent, "instructions", None)
            or "").strip().split("\n\n")[0].strip()
    if len(text) > DESCRIPTION_CHARS:
        text = text[:DESCRIPTION_CHARS - 1].rstrip() + "…"
    kind = type(agent).__name__.lower()
    head = f"Run the keel {kind} {agent.name!r}"
    return f"{head}: {text}" if text else f"{head}."


def exposed_tools(app: App, expose: bool | Iterable[str]) -> dict[str, Tool]:
    """The agents' tools to expose: ``True`` gives their ``read`` tools, a list of names
    exactly those tools (whatever their risk), ``False`` none."""
    if expose is False:
        return {}
    wanted = None if expose is True else set(expose)
    found: dict[str, Tool] = {}
    for agent in app.agents.values():
        config = getattr(agent, "config", None)
        for tool in getattr(config, "tools", ()):
            keep = tool.name in wanted if wanted is not None else tool.meta.risk == "read"
            if not keep:
                continue
            if tool.name in app.agents:
                raise ConfigError("expose_tools", f"tool {tool.name!r} has the name of an "
                                  "agent; MCP tool names must be unique")
            if found.get(tool.name, tool) is not tool:
                raise ConfigError("expose_tools", f"two different tools are named "
                                  f"{tool.name!r}")
            found[tool.name] = tool
    missing = sorted((wanted or set()) - set(found))
    if missing:
        raise ConfigError("expose_tools", f"no agent of the app has a tool named "
                          f"{', '.join(map(repr, missing))}")
    return found


def _text(text: str, data: dict[str, Any], *, error: bool = False) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(type="text", text=text)],
                             structured_content=data, is_error=error)


def _refused(message: str) -> mt.CallToolResult:
    error = {"error_type": "invalid_arguments", "message": message, "retryable": True}
    return _text(f"invalid arguments: {message}", {"status": "refused", "error": error},
                 error=True)


def _why(err: ValidationError) -> str:
    parts = []
    for problem in err.errors()[:5]:
        where = ".".join(str(p) for p in problem["loc"]) or "arguments"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


def progress_message(event: object) -> str | None:
    """What a run event says as a progress message (None: nothing worth a notification)."""
    if isinstance(event, ModelTurn) and not event.replayed:
        calls = ", ".join(name for name, _ in event.tool_calls)
        return f"model turn {event.key}: calls {calls}" if calls else (
            f"model turn {event.key}: answered")
    if isinstance(event, ToolCallStarted) and not event.replayed:
        return f"tool call {event.tool_name} ({event.key})"
    if isinstance(event, Observation) and not event.replayed:
        return f"tool {event.tool_name} {'failed' if event.is_error else 'returned'}"
    return None


class McpBridge:
    """Runs the app's agents (and exposed tools) for MCP tool calls."""

    def __init__(self, app: App, *, tenant: str | None = None,
                 expose_tools: bool | Iterable[str] = False) -> None:
        if tenant is not None and (not tenant or len(tenant) > 200):
            raise ConfigError("tenant", "must be 1 to 200 characters")
        self.app = app
        self.tenant = tenant
        self.tools = exposed_tools(app, expose_tools)
        self.store: RunStore | None = None

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[RunStore]:
        """The app's store for the server's lifetime (checked at start-up)."""
        spec = self.app.store
        given = spec if isinstance(spec, RunStore) else None
        store = off_loop(given or open_store(_store_url(spec)))
        stop, worker = asyncio.Event(), None
        try:
            await store.list_runs()  # a bad URL or an unreadable store fails at start
            self.store = store
            if self.app.execute == "server" and self.app.agents:
                # runs a decision made runnable (an approval) continue here, as under
                # `keel serve`; with execute="workers", `keel worker` processes do it
                worker = asyncio.create_task(Worker(
                    self.app.agents.values(), store=store, poll_seconds=0.5).serve(stop=stop))
            yield store
        finally:
            stop.set()
            if worker is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(worker, self.app.grace_s + 5)
            self.store = None
            if store is not given:
                await store.close()

    def listing(self) -> list[mt.Tool]:
        tools = [mt.Tool(name=name, description=_description(agent),
                         input_schema=AGENT_SCHEMA,
                         annotations=mt.ToolAnnotations(
                             title=name, read_only_hint=False, destructive_hint=True,
                             idempotent_hint=False, open_world_hint=True))
                 for name, agent in sorted(self.app.agents.items())]
        tools += [mt.Tool(name=name, description=tool.meta.description,
                          input_schema=tool.parameters,
                          annotations=risk_hints(tool).model_copy(update={"title": name}))
                  for name, tool in sorted(self.tools.items())]
        return tools

    async def call(self, name: str, arguments: Mapping[str, Any] | None,
                   report: Report | None = None) -> mt.CallToolResult:
        """Answer one ``tools/call``. ``report(n, message)`` sends a progress message."""
        if name in self.app.agents:
            return await self._run(self.app.agents[name], dict(arguments or {}),
                                   report or _no_progress)
        if name in self.tools:
            return await self._tool(self.tools[name], dict(arguments or {}))
        raise MCPError(mt.INVALID_PARAMS, f"no tool named {name[:80]!r} here")

    def _options(self, agent: Any, arguments: dict[str, Any]
                 ) -> tuple[str, dict[str, Any]] | mt.CallToolResult:
        """The run's input and options, or the answer refusing the arguments."""
        try:
            args = AgentArgs.model_validate(arguments)
            agent.check_input(args.input)
        except ValidationError as exc:
            return _refused(_why(exc))
        except KeelError as exc:
            return _refused(str(exc))
        if self.store is None:
            raise MCPError(mt.INTERNAL_ERROR, "the server's store is not open")
        options: dict[str, Any] = {"store": self.store, "run_id": new_run_id(),
                                   "tenant": self.tenant}
        if args.user is not None:
            options["user"] = args.user
        if args.conversation is not None:
            options["conversation"] = args.conversation
        return args.input, options

    async def _run(self, agent: Any, arguments: dict[str, Any],
                   report: Report) -> mt.CallToolResult:
        given = self._options(agent, arguments)
        if isinstance(given, mt.CallToolResult):
            return given
        text, options = given
        store, run_id = options["store"], options["run_id"]
        messages: asyncio.Queue[str | None] = asyncio.Queue()

        def on_event(event: object) -> None:
            said = progress_message(event)
            if said is not None:
                messages.put_nowait(said)

        async def send() -> None:
            count = 0
            while (said := await messages.get()) is not None:
                count += 1
                with contextlib.suppress(Exception):  # a gone client does not stop the run
                    await report(count, said)

        sender = asyncio.create_task(send())
        try:
            result = await agent.run(text, on_event=on_event, **options)
        except ApprovalRequired as exc:
            return _waiting(run_id, "approval", list(exc.approval_ids), str(exc))
        except Escalate as exc:
            ids = [exc.escalation_id] if exc.escalation_id else []
            return _waiting(run_id, "escalation", ids, exc.reason)
        except KeelError as exc:
            return await self._shown(store, _failed(run_id, exc))
        except Exception:
            _log.exception("run %s crashed", run_id, extra={"run_id": run_id})
            return _failed(run_id, None)
        finally:
            messages.put_nowait(None)
            await sender
        data = {"run_id": result.run_id, "status": "completed",
                "output": to_jsonable(result.output)}
        return await self._shown(store, _text(result.text or json.dumps(data["output"]), data))

    async def _shown(self, store: RunStore, answer: mt.CallToolResult) -> mt.CallToolResult:
        """``answer`` as it may leave the server: its text, output and error scrubbed by the
        app's data policy for the ``exports`` destination, as ``keel serve`` shows runs."""
        data = dict(answer.structured_content or {})
        block = answer.content[0]
        text = block.text if isinstance(block, mt.TextContent) else ""
        try:
            record = await store.get_run(data["run_id"])
        except RunNotFound:  # refused before anything was written
            return answer
        content = {key: data[key] for key in ("output", "error") if key in data}
        try:
            shown = self.app.data_policy.scrub_export({"text": text, **content}, record)
        except SensitiveDataBlocked as exc:
            error = {"error_type": "blocked", "message": f"not shown: {exc}",
                     "retryable": False}
            return _text(f"The run {record.run_id} ended {record.status}; its result is not "
                         f"shown: {exc}", {"run_id": record.run_id, "status": record.status,
                                           "error": error}, error=True)
        data.update({key: shown[key] for key in content})
        return _text(str(shown["text"]), data, error=bool(answer.is_error))

    async def _tool(self, tool: Tool, arguments: dict[str, Any]) -> mt.CallToolResult:
        call_id = new_run_id()
        ctx = ToolContext(run_id=call_id, step_key=f"mcp/tool:{tool.name}", agent="mcp",
                          idempotency_key=f"{call_id}/mcp/tool:{tool.name}",
                          tenant=self.tenant)
        try:
            result = await tool.call(arguments, ctx)
        except KeelError as exc:  # a signal (approval, escalation) has no run to wait in
            error = {"error_type": "refused", "message": str(exc), "retryable": False}
            return _text(f"{tool.name} needs a run (call an agent): {exc}",
                         {"status": "failed", "error": error}, error=True)
        except Exception:
            _log.exception("tool %s crashed", tool.name)
            said = f"{tool.name} stopped on an unexpected error; see the server's log"
            error = {"error_type": "internal", "message": said, "retryable": False}
            return _text(said, {"status": "failed", "error": error}, error=True)
        if result.failure is not None:
            return _text(result.content, {"status": "failed",
                                          "error": result.failure.observation()}, error=True)
        # what leaves is scrubbed for exports, as a run's answer is (the agent's rules first)
        owner = next((name for name, agent in self.app.agents.items()
                      if tool in getattr(getattr(agent, "config", None), "tools", ())), None)
        scope = self.app.data_policy.scope(agent=owner, tenant=self.tenant)
        try:
            content, value = scope.scrub_value([result.content, result.value], "exports")
        except SensitiveDataBlocked as exc:
            error = {"error_type": "blocked", "message": f"not shown: {exc}",
                     "retryable": False}
            return _text(f"{tool.name}'s result is not shown: {exc}",
                         {"status": "completed", "error": error}, error=True)
        return _text(str(content), {"status": "completed", "value": value})


async def _no_progress(count: int, message: str) -> None:
    """A caller that wants no progress messages."""


def _waiting(run_id: str, kind: str, ids: list[str], why: str) -> mt.CallToolResult:
    shown = ", ".join(ids) or f"(see `keel {kind}s list`)"
    one = ids[0] if len(ids) == 1 else "ID"
    how = (f"keel approvals approve {one}" if kind == "approval"
           else f"keel escalations resolve {one}")
    text = (f"The run {run_id} is waiting for a person ({kind} {shown}): {why}. It is "
            f"suspended in the store; once a person decides (`{how}` or the console), a "
            f"worker or `keel resume {run_id}` finishes it.")
    return _text(text, {"run_id": run_id, "status": "suspended", "waiting_for": kind,
                        f"{kind}_ids": ids})


def _failed(run_id: str, exc: KeelError | None) -> mt.CallToolResult:
    if exc is None:
        error = {"error_type": "internal", "message": "the run stopped on an unexpected "
                 "error; see the server's log", "retryable": False}
    else:
        kind = exc.error_type if isinstance(exc, RunError) else type(exc).__name__
        error = {"error_type": kind, "message": exc.message, "retryable": exc.retryable}
    return _text(f"The run {run_id} failed: {error['error_type']}: {error['message']}",
                 {"run_id": run_id, "status": "failed", "error": error}, error=True)


def mcp_server(app: App, *, tenant: str | None = None,
               expose_tools: bool | Iterable[str] = False) -> Server[Any]:
    """An MCP server (``mcp.server.lowlevel.Server``) for ``app``: serve it over stdio with
    :func:`serve_stdio`, or over streamable HTTP with ``server.streamable_http_app()``.
    Configuration errors (a tool name that clashes) raise ``ConfigError`` here."""
    bridge = McpBridge(app, tenant=tenant, expose_tools=expose_tools)

    @contextlib.asynccontextmanager
    async def lifespan(_: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        async with bridge.opened():
            yield {"bridge": bridge}

    async def list_tools(ctx: ServerRequestContext[Any],
                         params: mt.PaginatedRequestParams | None) -> mt.ListToolsResult:
        return mt.ListToolsResult(tools=bridge.listing())

    async def call_tool(ctx: ServerRequestContext[Any],
                        params: mt.CallToolRequestParams) -> mt.CallToolResult:
        async def report(count: int, message: str) -> None:
            await ctx.session.report_progress(count, None, message)

        return await bridge.call(params.name, params.arguments, report)

    return Server(app.title, version=_version(), lifespan=lifespan,
                  instructions=f"keel agents: {', '.join(sorted(app.agents)) or 'none'}",
                  on_list_tools=list_tools, on_call_tool=call_tool)


def _version() -> str:
    import keel

    return str(keel.__version__)


async def serve_stdio(server: Server[Any]) -> None:
    """Serve ``server`` on this process's standard input and output."""
    from mcp.server.stdio import stdio_server

    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    except BaseExceptionGroup as group:  # anyio's task groups wrap a start-up failure
        alone = _alone(group)
        if alone is None:
            raise
        raise alone from None


def _alone(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested one-member groups (a bad store URL), else None."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner

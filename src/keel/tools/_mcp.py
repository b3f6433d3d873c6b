"""Tools from MCP servers: :class:`MCPServer` connects to one server (stdio or streamable
HTTP) and turns its tools into keel tools.

The connection lives in one background task (the MCP SDK's transports are anyio task groups,
which must be entered and left by the same task); calls from any task of the same event loop
go through its session. A connection that broke (the process died, the HTTP server went
away) is dropped, and the next call connects again, with backoff. The tool list is cached per
connection and marked stale by ``notifications/tools/list_changed``.

The ``mcp`` package is imported when a server is first used, never when keel is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from keel.core import ToolDefinitionError, ToolError, UserError
from keel.tools._mcp_result import describe, hints_of, observation
from keel.tools._schema_tool import SchemaTool, tool_from_schema
from keel.tools._tool import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp import types as mcp_types

_log = logging.getLogger("keel.mcp")

#: ``on_progress(server, tool, progress, total, message)``: a progress notification of a call.
ProgressHandler = Callable[[str, str, float, "float | None", "str | None"],
                           "Awaitable[None] | None"]

#: The keys ``overrides={tool: {...}}`` may set; they win over the server's annotations.
OVERRIDE_KEYS = frozenset({
    "name", "description", "group", "risk", "scopes", "idempotent", "timeout",
    "output_limit", "run_alone", "approval", "fields", "paging", "validators", "reconcile",
    "compensate"})

#: The JSON-RPC code of a closed connection (the SDK's ``CONNECTION_CLOSED``).
_CONNECTION_CLOSED = -32000
#: How a streamable HTTP server that restarted (and so forgot the session) answers: the
#: session is gone, not the call refused, so a new connection is made.
_LOST_SESSION = re.compile(r"session (not found|terminated)", re.IGNORECASE)


def _import_mcp() -> Any:
    try:
        import mcp
    except ImportError as exc:
        raise UserError("MCP servers need the MCP SDK: pip install 'keel-agents[mcp]'") from exc
    return mcp


@dataclass(frozen=True, slots=True)
class MCPToolInfo:
    """Where an MCP tool came from: the server, the tool's name there, and its annotations
    as the server declared them (``read_only``, ``destructive``, ``idempotent``,
    ``open_world``; None where the server said nothing)."""

    server: str
    name: str
    annotations: Mapping[str, bool | None] = field(default_factory=dict)

    @property
    def open_world(self) -> bool | None:
        """``openWorldHint``: the tool talks to an open world (its output is untrusted)."""
        return self.annotations.get("open_world")


class MCPTool(SchemaTool):
    """A keel tool that calls one tool of an :class:`MCPServer` (built by
    :meth:`MCPServer.tools`); ``mcp`` says which server and tool, and the annotations."""

    def __init__(self, built: SchemaTool, info: MCPToolInfo) -> None:
        super().__init__(built.fn, built.meta, built.parameters, validators=built.validators,
                         reconcile=built.reconcile)
        self.mcp = info


class _Connection:
    """One live session, owned by a background task that keeps the transport open."""

    def __init__(self) -> None:
        self.session: ClientSession | None = None
        self.ready = asyncio.Event()
        self.closing = asyncio.Event()
        self.error: BaseException | None = None
        self.dead = False
        self.task: asyncio.Task[None] | None = None
        self.tools: list[mcp_types.Tool] | None = None  # the cached listing; None: stale
        self.changes = 0  # list_changed notifications received


class MCPServer:
    """A connection to one MCP server, over stdio (``command``, ``args``, ``env``, ``cwd``)
    or streamable HTTP (``url``, ``headers``).

    Use it as an async context manager (``async with MCPServer(...) as server``), or let the
    tools connect on first use (then :meth:`close` it when done). ``await server.tools()``
    lists the server's tools as keel tools; their calls share the circuit breaker
    ``mcp:<name>``.

    ``timeout`` is the default per-call timeout of the tools (an override may change it per
    tool); ``connect_timeout`` bounds connecting and listing. ``on_progress`` receives the
    progress notifications a server sends during a call (they are also logged at DEBUG on
    the ``keel.mcp`` logger). ``errlog`` is where a stdio server's stderr goes (default: this
    process's stderr).
    """

    def __init__(self, name: str, *, command: str | None = None,
                 args: Collection[str] = (), env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None, url: str | None = None,
                 headers: Mapping[str, str] | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT, connect_timeout: float = 30.0,
                 reconnect_attempts: int = 3, reconnect_backoff: float = 0.2,
                 on_progress: ProgressHandler | None = None,
                 errlog: TextIO | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise UserError("MCPServer: name must be a non-empty string (it names the server "
                            "in errors and its circuit breaker).")
        if (command is None) == (url is None):
            raise UserError(f"MCPServer {name!r}: give either command= (stdio) or url= "
                            "(streamable HTTP), not both or neither.")
        if isinstance(args, str):
            raise UserError(f"MCPServer {name!r}: args is a list of strings, not one string.")
        if headers and url is None:
            raise UserError(f"MCPServer {name!r}: headers= is for url= servers only.")
        self.name = name
        self.command = command
        self.args = list(args)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.reconnect_attempts = max(1, reconnect_attempts)
        self.reconnect_backoff = reconnect_backoff
        self.on_progress = on_progress
        self.errlog = errlog
        #: Tools the last :meth:`tools` call left out because keel cannot use them: name to
        #: the ToolDefinitionError that says why.
        self.refused: dict[str, ToolDefinitionError] = {}
        self._conn: _Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._failures = 0  # consecutive failed connects: the backoff grows with them
        self._listings = 0  # how many times the server's tools were listed (for tests)

    def __repr__(self) -> str:
        where = self.url if self.url is not None else " ".join([self.command or "", *self.args])
        return f"<MCPServer {self.name} {where}>"

    @property
    def breaker_key(self) -> str:
        """The circuit breaker all this server's tools share."""
        return f"mcp:{self.name}"

    async def __aenter__(self) -> MCPServer:
        await self._connection()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (a stdio server's process ends). Tools connect again if
        called after this."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._shut(conn)

    # -- the tools ---------------------------------------------------------------------------

    async def tools(self, *, include: Collection[str] | None = None,
                    exclude: Collection[str] = (),
                    overrides: Mapping[str, Mapping[str, Any]] | None = None,
                    ) -> list[MCPTool]:
        """The server's tools as keel tools.

        ``include``: only these tools (by the server's names); ``exclude``: not these.
        ``overrides={tool: {...}}`` sets keel options of a tool (``risk``, ``idempotent``,
        ``timeout``, ``approval``, ``name``, ``description``, ... - see ``OVERRIDE_KEYS``);
        they win over the server's annotations. A tool keel cannot use (its input schema is
        not an object schema, has a reference that points nowhere, is not JSON Schema) is
        left out with a warning and recorded in :attr:`refused`; if ``include`` or
        ``overrides`` names it, the ToolDefinitionError is raised instead.
        """
        if isinstance(include, str) or isinstance(exclude, str):
            raise UserError(f"MCPServer {self.name!r}: include= and exclude= take lists of "
                            "tool names, not one string.")
        overrides = dict(overrides or {})
        for tool_name, opts in overrides.items():
            unknown = set(opts) - OVERRIDE_KEYS
            if unknown:
                raise UserError(
                    f"MCPServer {self.name!r}: overrides for {tool_name!r} set "
                    f"{sorted(unknown)}; allowed: {sorted(OVERRIDE_KEYS)}.")
        listed = await self._list()
        names = {t.name for t in listed}
        wanted = None if include is None else set(include)
        for label, given in (("include", wanted or set()), ("overrides", set(overrides))):
            missing = given - names
            if missing:
                raise UserError(f"MCPServer {self.name!r}: {label} names tools the server does "
                                f"not have: {sorted(missing)} (it has {sorted(names)}).")
        self.refused = {}
        built: list[MCPTool] = []
        for remote in listed:
            if (wanted is not None and remote.name not in wanted) or remote.name in exclude:
                continue
            try:
                built.append(self._build(remote, overrides.get(remote.name, {})))
            except ToolDefinitionError as exc:
                if wanted is not None or remote.name in overrides:
                    raise  # the user asked for this tool, or configured it
                self.refused[remote.name] = exc
                _log.warning("%s", exc)
        return built

    def _build(self, remote: mcp_types.Tool, opts: Mapping[str, Any]) -> MCPTool:
        hints = hints_of(remote.annotations)
        risk: Any = None
        idempotent = bool(hints["idempotent"])
        if hints["read_only"]:
            risk, idempotent = "read", True
        elif hints["destructive"]:
            risk = "irreversible"
        elif hints["read_only"] is not None or hints["destructive"] is not None:
            risk = "write"  # declared by the server: not read-only, not destructive
        options: dict[str, Any] = {"risk": risk, "idempotent": idempotent,
                                   "timeout": self.timeout}
        options.update(opts)
        if "risk" in opts and "idempotent" not in opts:  # the override's risk decides
            options["idempotent"] = opts["risk"] == "read" or bool(hints["idempotent"])
        name = options.pop("name", remote.name)
        description = options.pop("description", remote.description)
        if options["risk"] is None:  # undeclared: keel's conservative default for effects
            built = self._schema_tool(name, description, remote, options | {"risk": "write"})
            built.meta = dataclasses.replace(built.meta, risk_declared=False)
        else:
            built = self._schema_tool(name, description, remote, options)
        return MCPTool(built, MCPToolInfo(self.name, remote.name, hints))

    def _schema_tool(self, name: str, description: str | None, remote: mcp_types.Tool,
                     options: dict[str, Any]) -> SchemaTool:
        remote_name = remote.name

        async def call(arguments: dict[str, Any]) -> Any:
            return await self.call(remote_name, arguments, label=name)

        try:
            return tool_from_schema(name, description, remote.input_schema, call,
                                    breaker_key=self.breaker_key, **options)
        except ToolDefinitionError as exc:
            raise ToolDefinitionError(
                f"MCP server {self.name!r}, tool {remote_name!r}: keel cannot use it: "
                f"{exc}") from exc
        except TypeError as exc:  # an override keel's tool options do not take
            raise UserError(f"MCPServer {self.name!r}: overrides for {remote_name!r}: "
                            f"{exc}") from exc

    # -- calls ---------------------------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any], *,
                   label: str | None = None) -> Any:
        """Call the server's tool ``tool`` with ``arguments`` and return what the model
        sees: the text of its content blocks (images and other binary content as short
        placeholders), or its structured content when it sent no content blocks.

        An error result (``isError``) raises a non-retryable :class:`~keel.ToolError`; a
        broken connection raises ``ConnectionError`` (transient: keel's retry policy
        applies to idempotent tools) and the next call connects again. ``label`` is the
        keel tool's name, for progress reports and logs.
        """
        label = label or tool
        conn = await self._connection()
        session = conn.session
        assert session is not None
        server, on_progress = self.name, self.on_progress

        async def report(progress: float, total: float | None, message: str | None) -> None:
            _log.debug("MCP server %r, tool %r: progress %s/%s %s", server, label, progress,
                       total, message or "")
            if on_progress is not None:
                out = on_progress(server, label, progress, total, message)
                if out is not None:
                    await out

        try:
            result = await session.call_tool(tool, arguments, progress_callback=report)
        except Exception as exc:
            self._check_transport(conn, exc)
            raise ToolError(f"MCP server {self.name!r} refused the call of {tool!r}: "
                            f"{describe(exc)}", retryable=False) from exc
        return observation(self.name, tool, result)

    def _check_transport(self, conn: _Connection, exc: Exception) -> None:
        """Raise ConnectionError (transient) if ``exc`` says the connection broke."""
        if self._broke(conn, exc):
            raise ConnectionError(f"MCP server {self.name!r}: the connection broke during the "
                                  f"call ({describe(exc)}); it reconnects on the next call") \
                from exc

    def _broke(self, conn: _Connection, exc: Exception) -> bool:
        """Whether ``exc`` says the connection broke (then it is dropped) rather than the
        server answering with a refusal."""
        mcp = _import_mcp()
        code = getattr(getattr(exc, "error", None), "code", None)
        if isinstance(exc, mcp.MCPError) and code != _CONNECTION_CLOSED \
                and not _LOST_SESSION.search(str(exc)):
            return False  # the server answered: a protocol-level refusal
        if isinstance(exc, RuntimeError | ValueError) and not conn.dead:
            return False  # an answer the SDK could not use (e.g. it asks for input)
        self._drop(conn)
        return True

    # -- the connection ------------------------------------------------------------------------

    async def _list(self) -> list[mcp_types.Tool]:
        """The server's tools: the connection's cached listing, or a new one. A connection
        that breaks while listing is replaced once."""
        for _ in range(2):
            conn = await self._connection()
            if conn.tools is not None:
                return conn.tools
            assert self._lock is not None
            async with self._lock:  # concurrent callers share one listing
                if conn.tools is not None:
                    return conn.tools
                changes = conn.changes
                try:
                    found = await self._fetch_tools(conn)
                except Exception as exc:
                    if not self._broke(conn, exc):
                        raise UserError(f"MCP server {self.name!r}: listing its tools failed: "
                                        f"{describe(exc)}") from exc
                    continue
                self._listings += 1
                if not conn.dead and conn.changes == changes:  # no list_changed meanwhile
                    conn.tools = found
                return found
        raise ConnectionError(f"MCP server {self.name!r}: the connection broke while listing "
                              "its tools")

    async def _fetch_tools(self, conn: _Connection) -> list[mcp_types.Tool]:
        session = conn.session
        assert session is not None
        found: list[mcp_types.Tool] = []
        cursor: str | None = None
        while True:
            params = None
            if cursor is not None:
                params = _import_mcp().types.PaginatedRequestParams(cursor=cursor)
            page = await asyncio.wait_for(session.list_tools(params=params),
                                          self.connect_timeout)
            found.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                return found

    async def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (run_sync, a new test): start afresh
            self._loop, self._lock, self._conn = loop, asyncio.Lock(), None
        conn = self._conn
        if conn is not None and not conn.dead:
            return conn
        assert self._lock is not None
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.dead:
                return conn
            last: BaseException | None = None
            for _ in range(self.reconnect_attempts):
                if self._failures:
                    await asyncio.sleep(min(self.reconnect_backoff * 2 ** (self._failures - 1),
                                            5.0))
                try:
                    conn = await self._connect()
                except (OSError, TimeoutError, ConnectionError) as exc:
                    last = exc
                    self._failures += 1
                    continue
                self._failures = 0
                self._conn = conn
                return conn
            raise ConnectionError(f"MCP server {self.name!r}: cannot connect ({self._where()}):"
                                  f" {describe(last)}") from last

    def _where(self) -> str:
        return f"url {self.url}" if self.url else f"command {self.command!r}"

    async def _connect(self) -> _Connection:
        mcp = _import_mcp()
        conn = _Connection()

        async def on_message(message: Any) -> None:
            if isinstance(message, Exception):
                _log.debug("MCP server %r: transport error: %s", self.name, message)
                conn.error = message
                return
            if isinstance(message, mcp.types.ToolListChangedNotification):
                conn.changes += 1
                conn.tools = None  # the next tools() lists again, once for a whole burst

        async def own() -> None:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    if self.url is not None:
                        from mcp.client.streamable_http import streamable_http_client
                        from mcp.shared._httpx_utils import create_mcp_http_client
                        client = await stack.enter_async_context(
                            create_mcp_http_client(headers=self.headers or None))
                        read, write = await stack.enter_async_context(
                            streamable_http_client(self.url, http_client=client))
                    else:
                        params = mcp.StdioServerParameters(
                            command=self.command, args=self.args, env=self.env, cwd=self.cwd)
                        read, write = await stack.enter_async_context(
                            mcp.stdio_client(params, errlog=self.errlog or sys.stderr))
                    session = await stack.enter_async_context(
                        mcp.ClientSession(read, write, message_handler=on_message))
                    await session.initialize()
                    conn.session = session
                    conn.ready.set()
                    await conn.closing.wait()
            except BaseException as exc:  # recorded; the caller sees it
                conn.error = exc
                if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                    raise
            finally:
                conn.dead = True
                conn.ready.set()

        conn.task = asyncio.create_task(own(), name=f"keel-mcp-{self.name}")
        try:
            await asyncio.wait_for(conn.ready.wait(), self.connect_timeout)
        except TimeoutError:
            await self._shut(conn)
            raise TimeoutError(f"no answer within {self.connect_timeout} s") from None
        if conn.session is None or conn.dead:
            err = conn.error
            await self._shut(conn)
            if isinstance(err, OSError | TimeoutError | ConnectionError):
                raise err
            raise ConnectionError(describe(err)) from err
        _log.info("MCP server %r connected (%s)", self.name, self._where())
        return conn

    def _drop(self, conn: _Connection) -> None:
        conn.dead = True
        conn.closing.set()
        if self._conn is conn:
            self._conn = None

    async def _shut(self, conn: _Connection) -> None:
        conn.closing.set()
        task = conn.task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        except (TimeoutError, Exception):  # a stuck transport: cancel it
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

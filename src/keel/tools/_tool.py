"""The Tool seam and ``@tool``: typed Python functions become validated, bounded tools."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, get_type_hints, overload

import pydantic

from keel.core import (
    RetryWithFeedback,
    Signal,
    ToolContext,
    ToolDefinitionError,
    ToolError,
    ToolSpec,
    to_text,
)
from keel.tools._docstring import parse_docstring
from keel.tools._eager import await_with_timeout
from keel.tools._projection import check_fields, project
from keel.tools._result import ToolResult
from keel.tools._threads import run_in_worker

Risk: TypeAlias = Literal["read", "write", "irreversible"]
RISKS: tuple[Risk, ...] = ("read", "write", "irreversible")
DEFAULT_TIMEOUT = 30.0
DEFAULT_OUTPUT_LIMIT = 20_000

#: A semantic check on validated arguments, run before the tool. Return ``None`` to accept,
#: or a message (or raise ``ValueError`` / ``RetryWithFeedback``) to reject.
ArgValidator: TypeAlias = Callable[[Any], "str | Awaitable[str | None] | None"]
#: Decides a call whose outcome is unknown (intent recorded, no result): return the result if
#: the effect happened, ``None`` if it did not (then the call is made again with the same
#: idempotency key).
Reconciler: TypeAlias = Callable[[dict[str, Any], ToolContext], Awaitable[Any | None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolMeta:
    """Everything keel needs to know about a tool besides its code."""

    name: str
    description: str
    group: str = "default"
    risk: Risk = "read"
    scopes: frozenset[str] = field(default_factory=frozenset)
    idempotent: bool = True
    timeout: float | None = DEFAULT_TIMEOUT
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    run_alone: bool = False
    #: Whether a call needs a human's approval before it runs: True (always), False (never,
    #: overriding the agent's policy), a predicate on the parsed arguments (e.g.
    #: ``lambda a: a["amount"] > 100``), or None (the agent's ApprovalPolicy decides; by
    #: default ``irreversible`` tools need approval).
    approval: bool | Callable[[dict[str, Any]], bool] | None = None
    #: The tool that undoes a completed call when the run fails or is cancelled (a saga, see
    #: docs/sagas.md). It is called with those of the original call's arguments it declares
    #: (by name) plus ``result``, the original call's return value, if it declares that.
    compensate: Tool | None = None
    #: For a plain ``def`` function: whether it may block (wait on I/O, a lock, a sleep, or
    #: compute for long), so it runs in a worker thread and the event loop goes on meanwhile
    #: (True, the default); or it returns at once, so it is called on the event loop itself,
    #: which is cheaper but holds every other run until it returns and cannot be stopped by
    #: ``timeout`` (False). An ``async def`` tool always runs on the event loop.
    blocking: bool = True
    #: Whether ``risk`` was declared (``@tool(risk=...)``) or left to the default ``read``.
    #: The guard layer's taint tracking treats a tool whose risk was never declared as one
    #: with effects (a forgotten annotation must not make a tool harmless).
    risk_declared: bool = True
    #: The fields of a JSON result the model sees (dotted paths, e.g. ``("id", "status",
    #: "customer.name")``; a list is projected record by record): the model gets the
    #: projection, the journal keeps the whole value. Empty: the whole result.
    fields: tuple[str, ...] = ()
    #: Whether a large result reaches the model as a handle with a summary and drill-down
    #: tools, when the agent has :class:`keel.context.Paging` middleware (on by default):
    #: True (any result over the paging threshold or ``output_limit``, text too), False
    #: (never: cut at ``output_limit``), None (the middleware's policy: by default JSON
    #: record lists over ``output_limit``).
    paging: bool | None = None
    #: The circuit breaker this tool's calls count against (``CircuitBreaker`` middleware).
    #: None: the tool's own, ``tool:<name>``. Tools that share a failure domain (every tool of
    #: one MCP server, of one remote API) can share one key, so one outage opens one breaker.
    breaker_key: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "a").replace("-", "a").isalnum():
            raise ToolDefinitionError(
                f"tool name {self.name!r} must be letters, digits, '_' or '-' (providers reject "
                "other characters); pass name= to @tool.")
        if len(self.name) > 64:
            raise ToolDefinitionError(f"tool name {self.name!r} is over 64 characters.")
        if self.risk not in RISKS:
            raise ToolDefinitionError(
                f"tool {self.name!r}: risk must be one of {RISKS}, not {self.risk!r}.")
        if self.timeout is not None and self.timeout <= 0:
            raise ToolDefinitionError(f"tool {self.name!r}: timeout must be > 0 seconds or None.")
        if self.output_limit < 100:
            raise ToolDefinitionError(f"tool {self.name!r}: output_limit must be >= 100 chars.")
        object.__setattr__(self, "fields", check_fields(self.fields, self.name))
        if not (self.paging is None or isinstance(self.paging, bool)):
            raise ToolDefinitionError(
                f"tool {self.name!r}: paging must be True, False or None, not {self.paging!r}.")
        if self.compensate is not None and not isinstance(self.compensate, Tool):
            raise ToolDefinitionError(
                f"tool {self.name!r}: compensate must be a tool or a typed function, not "
                f"{type(self.compensate).__name__}.")


class Tool(ABC):
    """A tool: metadata, a JSON Schema, and one ``call`` that never raises for tool failures.

    ``call`` returns a :class:`ToolResult`; a failure (bad JSON, bad arguments, a rejected
    validation, a timeout, an exception) comes back as a result with ``failure`` set.
    Signals (approval, escalation, handoff) still propagate.
    """

    meta: ToolMeta
    reconcile: Reconciler | None = None

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    @abstractmethod
    def parameters(self) -> dict[str, Any]: ...

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.meta.name, description=self.meta.description,
                        parameters=self.parameters)

    @abstractmethod
    async def call(self, arguments: str | dict[str, Any], ctx: ToolContext) -> ToolResult: ...


def limit_output(content: str, limit: int, tool_name: str) -> tuple[str, bool]:
    if len(content) <= limit:
        return content, False
    note = (f"\n[output cut: showing the first {limit} of {len(content)} characters. The whole "
            f"output is kept in the run journal. To see the rest, call {tool_name} again with "
            "narrower arguments (a filter, a smaller range or a page).]")
    return content[:limit] + note, True


#: OS errors that say something about the request, not the moment: trying again won't help.
_PERMANENT_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError,
                        NotADirectoryError, PermissionError)


def is_transient(exc: BaseException) -> bool:
    """Whether an exception a tool raised is worth retrying as is: connection errors,
    timeouts and other OS errors (not the file-system ones about the request itself), and
    httpx's network and timeout errors."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError):
        return not isinstance(exc, _PERMANENT_OS_ERRORS)
    httpx = sys.modules.get("httpx")  # only if the tool already uses it: no import here
    if httpx is not None:
        return isinstance(exc, httpx.TimeoutException | httpx.NetworkError
                          | httpx.RemoteProtocolError)
    return False


def _format_validation_error(err: pydantic.ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"]) or "(arguments)"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def invalid_json(name: str, detail: str) -> ToolResult:
    """The observation for arguments that are not JSON (every kind of tool gives this one)."""
    return ToolResult.fail(
        "invalid_json", f"arguments for {name} are not valid JSON: {detail}", retryable=True,
        hint="Send the arguments as one JSON object matching the tool's schema.")


def invalid_arguments(name: str, detail: str, schema: dict[str, Any]) -> ToolResult:
    """The observation for arguments that fail the tool's schema; the hint shows the schema."""
    return ToolResult.fail(
        "invalid_arguments", f"bad arguments for {name}: {detail}", retryable=True,
        hint=f"Expected arguments: {json.dumps(schema)}")


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """An ``async def`` function, a partial of one, or an object whose ``__call__`` is one."""
    return (inspect.iscoroutinefunction(fn)
            or inspect.iscoroutinefunction(getattr(fn, "__call__", None)))  # noqa: B004


class CallableTool(Tool):
    """The one call path of tools that wrap a Python callable (:class:`FunctionTool`, and
    :class:`~keel.tools.SchemaTool`): parse and validate the arguments, run the semantic
    validators, call the function where its kind says (inline, awaited, or in a worker
    thread) within the timeout, map failures to observations, render the value through
    keel's codec and cut it to the output limit.

    A subclass says how arguments are parsed (:meth:`_parse`: the validated arguments, or a
    failed :class:`ToolResult`) and how the function is called with them (:meth:`_bind`).
    """

    def __init__(self, fn: Callable[..., Any], meta: ToolMeta, *,
                 validators: Sequence[ArgValidator] = (),
                 reconcile: Reconciler | None = None) -> None:
        self.fn = fn
        self.meta = meta
        self.validators = tuple(validators)
        self.reconcile = reconcile
        self._is_async = is_async_callable(fn)
        self._inline = not self._is_async and not meta.blocking

    def __repr__(self) -> str:
        return f"<tool {self.meta.name} risk={self.meta.risk}>"

    @abstractmethod
    def _parse(self, arguments: str | dict[str, Any]) -> Any:
        """The validated arguments, or the failed :class:`ToolResult` the model sees."""

    @abstractmethod
    def _bind(self, parsed: Any, ctx: ToolContext) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments the function is called with."""

    async def call(self, arguments: str | dict[str, Any], ctx: ToolContext) -> ToolResult:
        parsed = self._parse(arguments)
        if isinstance(parsed, ToolResult):
            return parsed
        if self.validators:
            rejected = await self._run_validators(parsed)
            if rejected is not None:
                return rejected
        args, kwargs = self._bind(parsed, ctx)
        try:
            value = await self._invoke(args, kwargs)
        except RetryWithFeedback as exc:  # a signal, but one the model answers
            return self._failure(exc)
        except Signal:
            raise
        except Exception as exc:
            return self._failure(exc)
        result = ToolResult.of(value)  # the journal and the model see the same data
        if self.meta.fields:  # the model sees the declared fields; the journal the value
            shown, found = project(result.value, self.meta.fields)
            if found:
                result = ToolResult(content=to_text(shown), value=result.value)
        content, cut = limit_output(result.content, self.meta.output_limit, self.meta.name)
        return ToolResult(content=content, value=result.value, truncated=cut) if cut else result

    async def _invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the function where its kind says: inline, awaited, or in a worker thread."""
        if self._inline:
            return self.fn(*args, **kwargs)
        if self._is_async:
            return await await_with_timeout(self.fn(*args, **kwargs), self.meta.timeout)
        return await run_in_worker(functools.partial(self.fn, *args, **kwargs),
                                   self.meta.timeout)

    def _failure(self, exc: Exception) -> ToolResult:
        """A failed call as the observation the model sees."""
        name = self.meta.name
        if isinstance(exc, TimeoutError):
            return ToolResult.fail(
                "timeout", f"{name} did not finish within {self.meta.timeout} s", retryable=True,
                hint="Try again, or with arguments that ask for less work.")
        if isinstance(exc, RetryWithFeedback):
            return ToolResult.fail("tool_error", exc.message, retryable=exc.retryable,
                                   hint=exc.hint)
        if isinstance(exc, ToolError):
            return ToolResult.fail("tool_error", exc.message, retryable=exc.retryable,
                                   hint=exc.hint, transient="declared" if exc.retryable else None)
        return ToolResult.fail("tool_error", f"{name} failed: {type(exc).__name__}: {exc}",
                               retryable=False,
                               transient="exception" if is_transient(exc) else None)

    async def _run_validators(self, parsed: Any) -> ToolResult | None:
        for check in self.validators:
            try:
                out = check(parsed)
                if inspect.isawaitable(out):
                    out = await out
            except (ValueError, RetryWithFeedback) as exc:
                out = str(exc)
            if out:
                return ToolResult.fail(
                    "rejected_arguments", f"{self.meta.name} refused these arguments: {out}",
                    retryable=True, hint="Change the arguments so they pass this check.")
        return None


class FunctionTool(CallableTool):
    """A tool made from a typed Python function (``def`` functions run in a worker thread
    unless declared ``blocking=False``; see :attr:`ToolMeta.blocking`)."""

    def __init__(self, fn: Callable[..., Any], meta: ToolMeta, *,
                 validators: Sequence[ArgValidator] = (),
                 reconcile: Reconciler | None = None) -> None:
        super().__init__(fn, meta, validators=validators, reconcile=reconcile)
        self._args_model, self._ctx_param = _build_args_model(fn, meta.name)
        self._param_docs = parse_docstring(fn.__doc__ or "")[1]
        try:
            schema = self._args_model.model_json_schema()
        except pydantic.PydanticUserError as exc:  # pragma: no cover - defensive
            raise ToolDefinitionError(f"tool {meta.name!r}: {exc}") from exc
        for pname, pdoc in self._param_docs.items():
            prop = schema.get("properties", {}).get(pname)
            if prop is not None and "description" not in prop:
                prop["description"] = pdoc
        schema.pop("title", None)
        self._schema = schema

    @property
    def parameters(self) -> dict[str, Any]:
        return self._schema

    def _parse(self, arguments: str | dict[str, Any]) -> pydantic.BaseModel | ToolResult:
        try:
            if isinstance(arguments, str):
                return self._args_model.model_validate_json(arguments or "{}")
            return self._args_model.model_validate(arguments)
        except pydantic.ValidationError as err:
            if err.error_count() and err.errors()[0]["type"] == "json_invalid":
                return invalid_json(self.meta.name, _format_validation_error(err))
            return invalid_arguments(self.meta.name, _format_validation_error(err),
                                     self._schema)

    def _bind(self, parsed: pydantic.BaseModel, ctx: ToolContext
              ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs = dict(parsed.__dict__)
        if self._ctx_param:
            kwargs[self._ctx_param] = ctx
        return (), kwargs


def _build_args_model(fn: Callable[..., Any], name: str) -> tuple[type[pydantic.BaseModel],
                                                                   str | None]:
    try:
        sig = inspect.signature(fn)
        hints = get_type_hints(fn, include_extras=True)
    except (TypeError, ValueError, NameError) as exc:
        raise ToolDefinitionError(
            f"tool {name!r}: cannot read the signature of {fn!r} ({exc}). Define the tool as a "
            "plain function with annotated parameters.") from exc
    fields: dict[str, Any] = {}
    ctx_param: str | None = None
    for pname, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(
                f"tool {name!r}: *{pname} / **{pname} cannot become a JSON Schema; list the "
                "parameters explicitly.")
        if param.kind is param.POSITIONAL_ONLY:
            raise ToolDefinitionError(
                f"tool {name!r}: parameter {pname!r} is positional-only; tools are called with "
                "named arguments.")
        if pname not in hints:
            raise ToolDefinitionError(
                f"tool {name!r}: parameter {pname!r} has no type annotation; annotate it so "
                "keel can build the schema and validate arguments.")
        if hints[pname] is ToolContext:
            ctx_param = pname
            continue
        default = ... if param.default is param.empty else param.default
        fields[pname] = (hints[pname], default)
    try:
        model = pydantic.create_model(
            f"{name}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields)
        model.model_json_schema()
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as exc:
        raise ToolDefinitionError(
            f"tool {name!r}: its parameters cannot become a JSON Schema ({exc}). Use JSON-able "
            "types: str, int, float, bool, lists, dicts, enums, Literal, pydantic models.") from exc
    return model, ctx_param


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(*, name: str | None = ..., description: str | None = ..., group: str = ...,
         risk: Risk | None = ..., scopes: Iterable[str] = ..., idempotent: bool | None = ...,
         timeout: float | None = ..., output_limit: int = ..., run_alone: bool = ...,
         validators: Sequence[ArgValidator] = ..., reconcile: Reconciler | None = ...,
         approval: bool | Callable[[dict[str, Any]], bool] | None = ...,
         compensate: Tool | Callable[..., Any] | None = ..., blocking: bool = ...,
         fields: Iterable[str] | None = ..., paging: bool | None = ...,
         ) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
         description: str | None = None, group: str = "default", risk: Risk | None = None,
         scopes: Iterable[str] = (), idempotent: bool | None = None,
         timeout: float | None = DEFAULT_TIMEOUT, output_limit: int = DEFAULT_OUTPUT_LIMIT,
         run_alone: bool = False, validators: Sequence[ArgValidator] = (),
         reconcile: Reconciler | None = None,
         approval: bool | Callable[[dict[str, Any]], bool] | None = None,
         compensate: Tool | Callable[..., Any] | None = None, blocking: bool = True,
         fields: Iterable[str] | None = None, paging: bool | None = None,
         ) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Turn a typed function (sync or async) into a :class:`Tool`.

    The JSON Schema comes from the signature (pydantic); the description from the docstring
    (its ``Args:`` section describes parameters). A parameter annotated :class:`ToolContext`
    receives the run context (run id, step key, idempotency key) and is not in the schema.
    ``idempotent`` defaults to True for ``read`` tools and False otherwise: keel never silently
    re-runs a non-idempotent tool whose outcome is unknown. ``approval`` says whether a call
    needs a human's decision first (see :attr:`ToolMeta.approval`). ``compensate`` is the
    tool (or a typed function, made a ``write`` tool) that undoes a completed call if the run
    fails (see :attr:`ToolMeta.compensate` and docs/sagas.md). A plain ``def`` function runs
    in a worker thread; ``blocking=False`` says it returns at once (no I/O, no waiting), so
    it is called on the event loop, without the thread hop (see :attr:`ToolMeta.blocking`
    and docs/tools.md). ``fields`` projects a JSON result to those fields (dotted paths)
    before the model sees it, the journal keeping the whole value; ``paging`` says whether a
    large result becomes a handle the model drills into (see :attr:`ToolMeta.paging` and
    docs/tools.md, "Large results").
    """

    def build(f: Callable[..., Any]) -> FunctionTool:
        if not callable(f):
            raise ToolDefinitionError(f"@tool expects a function, got {f!r}.")
        summary, _ = parse_docstring(f.__doc__ or "")
        meta = ToolMeta(
            name=name or str(getattr(f, "__name__", "")),
            description=description or summary or f"Call {getattr(f, '__name__', 'tool')}.",
            group=group, risk=risk or "read", scopes=frozenset(scopes),
            idempotent=(risk in (None, "read")) if idempotent is None else idempotent,
            timeout=timeout, output_limit=output_limit, run_alone=run_alone, approval=approval,
            compensate=_compensation(compensate), blocking=blocking,
            risk_declared=risk is not None,
            fields=check_fields(fields, name or str(getattr(f, "__name__", ""))),
            paging=paging)
        built = FunctionTool(f, meta, validators=validators, reconcile=reconcile)
        if meta.compensate is not None:
            _check_compensation(built, meta.compensate)
        return built

    return build if fn is None else build(fn)


def _compensation(compensate: Tool | Callable[..., Any] | None) -> Tool | None:
    if compensate is None or isinstance(compensate, Tool):
        return compensate
    if not callable(compensate):
        raise ToolDefinitionError(f"compensate must be a tool or a typed function, not "
                                  f"{type(compensate).__name__}.")
    return tool(risk="write")(compensate)


def _check_compensation(original: Tool, compensate: Tool) -> None:
    """A compensation gets the original call's arguments it names, and ``result``: any other
    required parameter could never be filled."""
    known = set(original.parameters.get("properties", {})) | {"result"}
    required = set(compensate.parameters.get("required", ()))
    missing = sorted(required - known)
    if missing:
        raise ToolDefinitionError(
            f"tool {original.name!r}: its compensation {compensate.name!r} requires "
            f"{', '.join(missing)}, which the original call does not have. A compensation "
            "receives the original arguments it names (same names) and `result` (the original "
            "call's return value); give the others defaults.")

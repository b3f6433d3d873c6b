"""Tools from a JSON Schema and a callable: how MCP servers' and other frameworks' tools arrive.

The schema is checked once, at construction (a valid JSON Schema of ``type: object``, JSON
data, no reference keel would have to fetch); each call's arguments are validated against it
with ``jsonschema`` and handed to the function as one dict. Everything after that - semantic
validators, timeout, worker thread, failure observations, codec and output limit - is the
same call path as a ``@tool`` function (``CallableTool`` in ``_tool.py``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

import pydantic_core

from keel.core import ToolContext, ToolDefinitionError
from keel.tools._projection import check_fields
from keel.tools._result import ToolResult
from keel.tools._tool import (
    DEFAULT_OUTPUT_LIMIT,
    DEFAULT_TIMEOUT,
    ArgValidator,
    CallableTool,
    Reconciler,
    Risk,
    Tool,
    ToolMeta,
    _check_compensation,
    _compensation,
    invalid_arguments,
    invalid_json,
)

if TYPE_CHECKING:
    import jsonschema

#: How many schema violations one observation lists, and how long each may be: a 5 MB string
#: that is "too long" must not come back to the model (and the journal) in full.
MAX_REPORTED_ERRORS = 5
MAX_ERROR_CHARS = 200


class SchemaTool(CallableTool):
    """A tool whose arguments are described by a JSON Schema given as data, not by a Python
    signature. ``fn(arguments)`` (or ``fn(arguments, ctx)`` with ``context=True``) receives
    the validated arguments as a dict; sync or async. Build one with :func:`tool_from_schema`.
    """

    def __init__(self, fn: Callable[..., Any], meta: ToolMeta, parameters: dict[str, Any], *,
                 context: bool = False, validators: Sequence[ArgValidator] = (),
                 reconcile: Reconciler | None = None) -> None:
        if not callable(fn):
            raise ToolDefinitionError(
                f"tool {meta.name!r}: fn must be a function (sync or async) taking the "
                f"arguments dict, got {type(fn).__name__}.")
        super().__init__(fn, meta, validators=validators, reconcile=reconcile)
        self._schema, validator_cls = _checked_schema(meta.name, parameters)
        self._validator = validator_cls(self._schema)
        self._context = context

    @property
    def parameters(self) -> dict[str, Any]:
        return self._schema

    def _parse(self, arguments: str | dict[str, Any]) -> Any | ToolResult:
        name = self.meta.name
        if isinstance(arguments, str):
            try:  # pydantic's parser: bounded nesting depth, no NaN (not JSON)
                data = pydantic_core.from_json(arguments or "{}", allow_inf_nan=False)
            except ValueError as exc:
                return invalid_json(name, f"(arguments): Invalid JSON: {exc}")
        else:
            data = arguments
        try:
            problems = _violations(self._validator.iter_errors(data))
        except RecursionError:
            problems = "(arguments): nested too deeply to check"
        if problems:
            return invalid_arguments(name, problems, self._schema)
        return data

    def _bind(self, parsed: dict[str, Any], ctx: ToolContext
              ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return ((parsed, ctx) if self._context else (parsed,)), {}


def _violations(errors: Iterator[jsonschema.ValidationError]) -> str:
    """The first few violations, each as ``path: reason``, cut to a bounded length."""
    found = list(islice(errors, MAX_REPORTED_ERRORS + 1))
    parts = []
    for err in found[:MAX_REPORTED_ERRORS]:
        where = ".".join(str(x) for x in err.absolute_path) or "(arguments)"
        message = err.message
        if len(message) > MAX_ERROR_CHARS:  # keep both ends: the value's start, the reason
            message = f"{message[:MAX_ERROR_CHARS - 80]}…{message[-80:]}"
        parts.append(f"{where}: {message}")
    if len(found) > MAX_REPORTED_ERRORS:
        parts.append("and more")
    return "; ".join(parts)


def _checked_schema(name: str, parameters: Any) -> tuple[dict[str, Any], type[Any]]:
    """A private copy of the schema and its validator class, or ToolDefinitionError."""
    import jsonschema  # here, not at import: importing keel stays light
    where = f"tool {name!r}: parameters"
    if not isinstance(parameters, dict):
        raise ToolDefinitionError(
            f"{where} must be a JSON Schema object (a dict), got {type(parameters).__name__}.")
    try:  # a copy the caller cannot change later, and proof it is JSON (it goes to providers)
        text = json.dumps(parameters, allow_nan=False)
        schema: dict[str, Any] = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ToolDefinitionError(f"{where} must be plain JSON data: {exc}.") from exc
    cls: Any = jsonschema.validators.validator_for(schema,
                                                   default=jsonschema.Draft202012Validator)
    try:
        if len(text) <= _REMEMBERED_CHARS:
            _check_against_metaschema(text, cls)
        else:
            cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        at = "/".join(str(x) for x in exc.absolute_path) or "(root)"
        raise ToolDefinitionError(
            f"{where} is not a valid JSON Schema ({cls.__name__}) at {at}: {exc.message}"
        ) from exc
    if schema.get("type") != "object":
        raise ToolDefinitionError(
            f"{where} must describe an object (\"type\": \"object\" with \"properties\"): a "
            f"tool's arguments are one JSON object, got type {schema.get('type')!r}.")
    _check_refs(where, schema, cls)
    return schema, cls


#: Schemas up to this size that passed the metaschema check are remembered (the last
#: _REMEMBERED of them, by their JSON text): keel's paging tools are built with every agent,
#: and the check costs milliseconds each time. A schema that fails is never remembered.
_REMEMBERED_CHARS = 16_384
_REMEMBERED = 256


@functools.lru_cache(maxsize=_REMEMBERED)
def _check_against_metaschema(text: str, cls: Any) -> None:
    """``cls.check_schema`` of the schema in ``text`` (raises ``jsonschema.SchemaError``),
    done once per text and validator class."""
    cls.check_schema(json.loads(text))


def _check_refs(where: str, schema: dict[str, Any], cls: Any) -> None:
    """Every ``$ref`` points inside the schema: keel never fetches one at call time."""
    from referencing import Registry, Resource
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import specification_with

    resolver = Registry().resolver_with_root(Resource.from_contents(
        schema, default_specification=specification_with(cls.META_SCHEMA["$schema"])))
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise ToolDefinitionError(
                f"{where}: $ref {ref!r} points outside the schema; keel does not fetch "
                "schemas. Put the definition under \"$defs\" and refer to it as "
                "\"#/$defs/...\".")
        try:
            resolver.lookup(ref)
        except Unresolvable as exc:
            raise ToolDefinitionError(f"{where}: $ref {ref!r} points nowhere ({exc}).") from exc


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def tool_from_schema(name: str, description: str | None, parameters: dict[str, Any],
                     fn: Callable[..., Any], *, context: bool = False, group: str = "default",
                     risk: Risk | None = None, scopes: Iterable[str] = (),
                     idempotent: bool | None = None, timeout: float | None = DEFAULT_TIMEOUT,
                     output_limit: int = DEFAULT_OUTPUT_LIMIT, run_alone: bool = False,
                     validators: Sequence[ArgValidator] = (),
                     reconcile: Reconciler | None = None,
                     approval: bool | Callable[[dict[str, Any]], bool] | None = None,
                     compensate: Tool | Callable[..., Any] | None = None,
                     blocking: bool = True, fields: Iterable[str] | None = None,
                     paging: bool | None = None,
                     breaker_key: str | None = None) -> SchemaTool:
    """A tool from an existing JSON Schema and a callable (an MCP server's tool, another
    framework's tool): ``parameters`` is the schema of the arguments object, offered to the
    model as it is; ``fn(arguments: dict)`` - or ``fn(arguments, ctx)`` with
    ``context=True`` - runs with arguments that passed it. Sync or async; a plain ``def``
    runs in a worker thread unless ``blocking=False``. The other options mean what they mean
    for :func:`~keel.tools.tool`, with the same defaults (``idempotent`` is True for ``read``
    tools only); ``breaker_key`` names the circuit breaker the tool's calls count against
    (default: its own, ``tool:<name>``). A bad schema, name or function raises
    ``ToolDefinitionError`` here.
    """
    if not isinstance(name, str):
        raise ToolDefinitionError(f"tool_from_schema: name must be a string, got {name!r}.")
    if description is not None and not isinstance(description, str):
        raise ToolDefinitionError(
            f"tool {name!r}: description must be a string or None, got "
            f"{type(description).__name__}.")
    meta = ToolMeta(
        name=name, description=description or f"Call {name}.", group=group,
        risk=risk or "read", risk_declared=risk is not None, scopes=frozenset(scopes),
        idempotent=(risk in (None, "read")) if idempotent is None else idempotent,
        timeout=timeout, output_limit=output_limit, run_alone=run_alone, approval=approval,
        compensate=_compensation(compensate), blocking=blocking,
        fields=check_fields(fields, name), paging=paging, breaker_key=breaker_key)
    built = SchemaTool(fn, meta, parameters, context=context, validators=validators,
                       reconcile=reconcile)
    if meta.compensate is not None:
        _check_compensation(built, meta.compensate)
    return built

from __future__ import annotations

import asyncio
import json
import threading
from enum import StrEnum
from typing import Any, Literal

import pydantic
import pytest

from keel import ToolContext, ToolDefinitionError, ToolError, tool
from keel.core import RetryWithFeedback
from keel.tools import Toolset


def ctx(key: str = "a/turn:0/tool:x#0") -> ToolContext:
    return ToolContext(run_id="r1", step_key=key, agent="a", idempotency_key=f"r1/{key}")


class Color(StrEnum):
    red = "red"
    blue = "blue"


class Address(pydantic.BaseModel):
    city: str
    zip: str


def test_schema_from_signature_and_docstring() -> None:
    @tool(group="geo", risk="write", scopes={"geo"})
    def locate(name: str, count: int, color: Color, mode: Literal["a", "b"] = "a",
               address: Address | None = None, tags: list[str] | None = None) -> str:
        """Find a place.

        Args:
            name: the place's name
            count: how many to return
        """
        return name

    schema = locate.spec.parameters
    assert locate.spec.description == "Find a place."
    assert schema["required"] == ["name", "count", "color"]
    assert schema["properties"]["name"]["description"] == "the place's name"
    assert schema["properties"]["count"]["type"] == "integer"
    assert schema["additionalProperties"] is False
    assert locate.meta.group == "geo"
    assert locate.meta.scopes == frozenset({"geo"})
    assert locate.meta.idempotent is False  # write tools default to non-idempotent


def test_context_parameter_is_injected_not_in_schema() -> None:
    seen: list[ToolContext] = []

    @tool
    async def with_ctx(x: int, context: ToolContext) -> int:
        seen.append(context)
        return x

    assert "context" not in with_ctx.spec.parameters["properties"]
    out = asyncio.run(with_ctx.call('{"x": 4}', ctx("a/turn:2/tool:with_ctx#0")))
    assert out.value == 4
    assert seen[0].idempotency_key == "r1/a/turn:2/tool:with_ctx#0"


@pytest.mark.parametrize(
    ("arguments", "error_type"),
    [
        ("{not json", "invalid_json"),
        ('{"a": "seven"}', "invalid_arguments"),
        ("{}", "invalid_arguments"),
        ('{"a": 1, "zzz": 2}', "invalid_arguments"),
        ("[1, 2]", "invalid_arguments"),
        ('"a string"', "invalid_arguments"),
    ],
)
async def test_bad_arguments_become_normalized_observations(arguments: str, error_type: str,
                                                            ) -> None:
    calls: list[int] = []

    @tool
    def double(a: int) -> int:
        calls.append(a)
        return a * 2

    result = await double.call(arguments, ctx())
    assert result.failure is not None
    assert result.failure.error_type == error_type
    assert result.failure.retryable is True
    body = json.loads(result.content)["error"]
    assert set(body) == {"error_type", "message", "retryable", "hint"}
    assert calls == []  # the function never ran


async def test_sync_tool_runs_in_a_worker_thread() -> None:
    threads: list[int] = []

    @tool
    def where() -> str:
        threads.append(threading.get_ident())
        return "ok"

    assert (await where.call("{}", ctx())).content == "ok"
    assert threads[0] != threading.get_ident()


async def test_timeout_is_a_retryable_observation() -> None:
    @tool(timeout=0.05)
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    result = await slow.call("{}", ctx())
    assert result.failure is not None and result.failure.error_type == "timeout"
    assert result.failure.retryable is True


async def test_exceptions_are_observations_with_retryability_from_tool_error() -> None:
    @tool
    def boom(kind: str) -> str:
        if kind == "transient":
            raise ToolError("backend busy", retryable=True, hint="wait a little")
        raise KeyError("missing")

    transient = await boom.call('{"kind": "transient"}', ctx())
    assert transient.failure is not None
    assert (transient.failure.retryable, transient.failure.hint) == (True, "wait a little")
    crash = await boom.call('{"kind": "x"}', ctx())
    assert crash.failure is not None and crash.failure.retryable is False
    assert "KeyError" in crash.failure.message


async def test_semantic_validators_run_before_the_call() -> None:
    executed: list[str] = []

    def read_only(args: Any) -> str | None:
        return None if args.sql.lstrip().lower().startswith("select") else "only SELECT allowed"

    async def not_empty(args: Any) -> None:
        if not args.sql.strip():
            raise RetryWithFeedback("empty statement")

    @tool(validators=[not_empty, read_only])
    def query(sql: str) -> str:
        executed.append(sql)
        return "rows"

    bad = await query.call('{"sql": "DELETE FROM users"}', ctx())
    assert bad.failure is not None and bad.failure.error_type == "rejected_arguments"
    assert "only SELECT" in bad.failure.message
    empty = await query.call('{"sql": "  "}', ctx())
    assert empty.failure is not None and "empty statement" in empty.failure.message
    ok = await query.call('{"sql": "select 1"}', ctx())
    assert ok.content == "rows"
    assert executed == ["select 1"]


async def test_oversized_output_is_cut_with_a_note() -> None:
    @tool(output_limit=100)
    def big() -> str:
        return "x" * 5000

    result = await big.call("{}", ctx())
    assert result.truncated is True
    assert result.content.startswith("x" * 100)
    assert "first 100 of 5000 characters" in result.content
    assert "call big again with narrower arguments" in result.content
    assert result.value == "x" * 5000  # the whole value is kept for the journal


async def test_return_values_are_rendered_as_json() -> None:
    @tool
    def addr() -> Address:
        return Address(city="Oslo", zip="0150")

    @tool
    def data() -> dict[str, Any]:
        return {"a": [1, 2]}

    assert json.loads((await addr.call("{}", ctx())).content) == {"city": "Oslo", "zip": "0150"}
    assert (await addr.call("{}", ctx())).value == {"city": "Oslo", "zip": "0150"}
    assert json.loads((await data.call("{}", ctx())).content) == {"a": [1, 2]}


def unannotated(x):  # type: ignore[no-untyped-def]
    return x


class NotSerializable:
    pass


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (unannotated, "no type annotation"),
        (lambda: 1, "tool name '<lambda>' must be letters"),
    ],
)
def test_functions_that_cannot_become_tools(fn: Any, match: str) -> None:
    with pytest.raises(ToolDefinitionError, match=match):
        tool(fn)


def test_arbitrary_class_parameter_is_rejected_with_the_fix() -> None:
    def takes(obj: NotSerializable) -> str:
        return ""

    with pytest.raises(ToolDefinitionError, match="JSON-able types"):
        tool(takes)


def test_varargs_and_bad_metadata_are_rejected() -> None:
    def star(*items: int) -> int:
        return 0

    with pytest.raises(ToolDefinitionError, match=r"\*items"):
        tool(star)
    with pytest.raises(ToolDefinitionError, match="risk"):
        tool(risk="dangerous")(star)  # type: ignore[call-overload]
    with pytest.raises(ToolDefinitionError, match="timeout"):
        tool(timeout=0)(unannotated)
    with pytest.raises(ToolDefinitionError, match="name"):
        tool(name="has space")(star)


def test_duplicate_tool_names_are_rejected() -> None:
    @tool
    def lookup(q: str) -> str:
        return q

    @tool(name="lookup")
    def other(q: str) -> str:
        return q

    with pytest.raises(ToolDefinitionError, match="two tools are named 'lookup'"):
        Toolset([lookup, other])
    with pytest.raises(ToolDefinitionError, match="not a keel tool"):
        Toolset([unannotated])  # type: ignore[list-item]


def test_scope_filtering() -> None:
    @tool(scopes={"billing"})
    def refund(order: str) -> str:
        return order

    @tool
    def status(order: str) -> str:
        return order

    ts = Toolset([refund, status])
    assert ts.permitted(frozenset()).names == ["status"]
    assert ts.permitted(frozenset({"billing"})).names == ["refund", "status"]


async def test_huge_and_hostile_arguments_do_not_crash() -> None:
    @tool
    def echo(text: str) -> str:
        return text[:10]

    huge = json.dumps({"text": "y" * 2_000_000})
    assert (await echo.call(huge, ctx())).content == "y" * 10
    nested = "[" * 10_000 + "]" * 10_000
    result = await echo.call(nested, ctx())
    assert result.failure is not None
    odd = await echo.call('{"text": "\\u0000\\ud800abc"}', ctx())  # NUL and a lone surrogate
    assert isinstance(odd.content, str)  # answered (either way), never raised

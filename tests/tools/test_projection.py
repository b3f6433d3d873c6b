"""Projection of JSON results to the fields declared on a tool (``@tool(fields=...)``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keel import ToolContext, ToolDefinitionError, tool, tool_from_schema
from keel.tools import ToolMeta, project


def ctx() -> ToolContext:
    return ToolContext(run_id="r1", step_key="a/turn:0/tool:x#0", agent="a",
                       idempotency_key="r1/a/turn:0/tool:x#0")


ORDERS = [{"id": i, "status": "open" if i % 2 else "paid", "total": i * 10,
           "customer": {"name": f"c{i}", "email": f"c{i}@example.com"}, "notes": "x" * 50}
          for i in range(3)]


def test_projection_keeps_declared_fields_in_order_and_nested_paths() -> None:
    shown, found = project(ORDERS, ("total", "id", "customer.name"))
    assert found
    assert shown[0] == {"total": 0, "id": 0, "customer": {"name": "c0"}}
    assert list(shown[1]) == ["total", "id", "customer"]


def test_projection_through_a_wrapped_list_and_a_covering_path() -> None:
    value = {"total": 3, "items": ORDERS, "cursor": "abc"}
    shown, found = project(value, ("total", "items.id", "items", "items.status"))
    assert found
    assert shown == {"total": 3, "items": ORDERS}  # "items" keeps all of each item
    shown, _ = project(value, ("items.id",))
    assert shown == {"items": [{"id": 0}, {"id": 1}, {"id": 2}]}


def test_missing_fields_and_scalars() -> None:
    shown, found = project([{"id": 1}, {"other": 2}, 7], ("id", "id2.x"))
    assert found and shown == [{"id": 1}, {}, 7]  # a non-object element is kept as it is
    assert project(ORDERS, ("nope", "neither.x")) == (ORDERS, False)
    assert project("text", ("id",)) == ("text", False)
    assert project({"a": "scalar"}, ("a.b",)) == ({"a": "scalar"}, False)
    assert project(ORDERS, ()) == (ORDERS, False)


async def test_tool_shows_projection_and_journals_whole_value() -> None:
    @tool(fields=["id", "status"])
    def orders() -> list[dict[str, Any]]:
        return ORDERS

    assert orders.meta.fields == ("id", "status")
    result = await orders.call({}, ctx())
    assert json.loads(result.content) == [{"id": i, "status": o["status"]}
                                          for i, o in enumerate(ORDERS)]
    assert result.value == ORDERS


async def test_tool_with_fields_its_result_lacks_shows_the_whole_result() -> None:
    @tool(fields=["missing"])
    def orders() -> list[dict[str, Any]]:
        return ORDERS

    result = await orders.call({}, ctx())
    assert json.loads(result.content) == ORDERS


async def test_projection_happens_before_the_output_limit() -> None:
    big = [{"id": i, "blob": "y" * 1000} for i in range(50)]

    @tool(fields=["id"], output_limit=1000)
    def rows() -> list[dict[str, Any]]:
        return big

    result = await rows.call({}, ctx())
    assert not result.truncated
    assert json.loads(result.content) == [{"id": i} for i in range(50)]


async def test_text_results_are_not_projected() -> None:
    @tool(fields=["id"])
    def text() -> str:
        return '{"id": 1, "x": 2} is not parsed'

    assert (await text.call({}, ctx())).content == '{"id": 1, "x": 2} is not parsed'


async def test_schema_tool_takes_fields_and_paging() -> None:
    t = tool_from_schema("rows", "rows", {"type": "object", "properties": {}},
                         lambda args: ORDERS, fields=["id"], paging=True)
    assert t.meta.paging is True
    assert json.loads((await t.call({}, ctx())).content) == [{"id": 0}, {"id": 1}, {"id": 2}]


@pytest.mark.parametrize("bad", ["id", b"id", 5, [""], ["a..b"], [".a"], [3], ["a", "a"],
                                 [f"f{i}" for i in range(201)]])
def test_bad_field_declarations(bad: Any) -> None:
    with pytest.raises(ToolDefinitionError, match="field"):
        tool(fields=bad)(lambda: 1)


@pytest.mark.parametrize("bad", [1, "yes", 0])
def test_bad_paging_declaration(bad: Any) -> None:
    with pytest.raises(ToolDefinitionError, match="paging"):
        ToolMeta(name="t", description="d", paging=bad)

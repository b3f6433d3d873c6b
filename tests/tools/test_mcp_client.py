"""Tools from MCP servers (keel.tools.MCPServer) against real servers written with the
official SDK (tests/tools/mcp_servers/shop.py, over stdio and streamable HTTP) and the
independently published ``mcp-server-time``."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from keel import Agent, ApprovalRequired, MemoryStore, ToolContext, ToolDefinitionError, tool
from keel.reliability import Retry, RetryPolicy, retryable_tool_failure
from keel.runtime import decide_approval
from keel.store import TaskFilter
from keel.testing import ScriptedModel, call
from keel.tools import MCPServer, MCPTool

SHOP = Path(__file__).parent / "mcp_servers" / "shop.py"
CTX = ToolContext(run_id="r", step_key="s", agent="a", idempotency_key="k")


def effects(db: Path) -> list[tuple[str, str]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return [(t, d) for t, d in conn.execute("SELECT tool, detail FROM effects")]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "shop.sqlite"


@pytest.fixture
def quiet() -> Iterator[Any]:
    with open(os.devnull, "w") as sink:  # the test server's stderr (its own logging)
        yield sink


@pytest.fixture
async def shop(db: Path, quiet: Any) -> AsyncIterator[MCPServer]:
    server = MCPServer("shop", command=sys.executable, args=[str(SHOP)],
                       env={"SHOP_DB": str(db)}, errlog=quiet, reconnect_backoff=0.05)
    async with server:
        yield server


def by_name(tools: list[MCPTool]) -> dict[str, MCPTool]:
    return {t.name: t for t in tools}


async def test_tools_are_listed_with_metadata_from_their_annotations(shop: MCPServer) -> None:
    tools = by_name(await shop.tools())
    lookup, delete_all, add_note, set_price = (tools[n] for n in (
        "lookup", "delete_all", "add_note", "set_price"))
    assert (lookup.meta.risk, lookup.meta.idempotent, lookup.meta.risk_declared) == (
        "read", True, True)
    assert lookup.mcp.open_world is False and lookup.mcp.server == "shop"
    assert (delete_all.meta.risk, delete_all.meta.idempotent) == ("irreversible", False)
    # no annotations: the conservative default, risk not declared (taint and approval apply)
    assert (add_note.meta.risk, add_note.meta.idempotent, add_note.meta.risk_declared) == (
        "write", False, False)
    assert (set_price.meta.risk, set_price.meta.idempotent) == ("write", True)
    assert {t.meta.breaker_key for t in tools.values()} == {"mcp:shop"}
    assert lookup.parameters["properties"]["sku"]["type"] == "string"
    assert lookup.meta.description == "Look up a product by SKU."


async def test_an_agent_calls_a_read_only_tool(shop: MCPServer) -> None:
    model = ScriptedModel([call("lookup", {"sku": "A1"}), "in stock"])
    agent = Agent("clerk", model=model, tools=await shop.tools(include=["lookup"]))
    result = await agent.run("is A1 in stock?", store=MemoryStore())
    assert result.output == "in stock"
    assert "A1: blue widget, 3 in stock" in str(model.requests[-1][-1])


async def test_arguments_are_validated_before_the_server_is_called(shop: MCPServer) -> None:
    lookup = by_name(await shop.tools())["lookup"]
    out = await lookup.call({"sku": 3}, CTX)
    assert out.failure is not None and out.failure.error_type == "invalid_arguments"


async def test_a_destructive_tool_waits_for_approval_and_runs_once(shop: MCPServer,
                                                                   db: Path) -> None:
    model = ScriptedModel([call("delete_all", {"reason": "cleanup"}), "done"])
    agent = Agent("admin", model=model, tools=await shop.tools())
    store = MemoryStore()
    with pytest.raises(ApprovalRequired) as info:
        await agent.run("delete everything", store=store)
    assert effects(db) == []
    [task] = await store.list_tasks(TaskFilter(kind="approval"))
    assert task.data["tool"] == "delete_all"
    await decide_approval(task.task_id, store=store, approve=True, by="ann")
    assert info.value.run_id is not None
    result = await agent.resume(info.value.run_id, store=store)
    assert result.output == "done"
    assert effects(db) == [("delete_all", "cleanup")]
    assert "deleted (effect #1)" in str(model.requests[-1][-1])


async def test_an_error_result_is_a_failure_the_model_sees(shop: MCPServer) -> None:
    model = ScriptedModel([call("refund", {"order": "9"}), "cannot refund"])
    agent = Agent("clerk", model=model, tools=await shop.tools(include=["refund"]))
    result = await agent.run("refund 9", store=MemoryStore())
    assert result.output == "cannot refund"
    seen = str(model.requests[-1][-1])
    assert "tool_error" in seen and "not refundable: past 30 days" in seen
    refund = by_name(await shop.tools())["refund"]
    out = await refund.call({"order": "9"}, CTX)
    assert out.failure is not None
    assert (out.failure.error_type, out.failure.retryable, out.failure.transient) == (
        "tool_error", False, None)


async def test_tools_keel_cannot_use_are_refused_clearly(shop: MCPServer) -> None:
    names = set(by_name(await shop.tools()))
    assert "stringly" not in names and "dangling" not in names
    assert set(shop.refused) == {"stringly", "dangling"}
    assert "MCP server 'shop', tool 'stringly'" in str(shop.refused["stringly"])
    assert "not a valid JSON Schema" in str(shop.refused["stringly"])
    assert "points nowhere" in str(shop.refused["dangling"])
    with pytest.raises(ToolDefinitionError, match="tool 'dangling'"):
        await shop.tools(include=["dangling"])


async def test_a_server_that_cannot_start_is_a_clear_connection_error(tmp_path: Path) -> None:
    server = MCPServer("ghost", command=str(tmp_path / "no-such-server"),
                       reconnect_attempts=2, reconnect_backoff=0.01)
    with pytest.raises(ConnectionError, match="MCP server 'ghost': cannot connect"):
        await server.tools()


def test_a_schema_that_is_not_an_object_schema_is_refused() -> None:
    from mcp import types

    server = MCPServer("odd", command="unused")
    remote = types.Tool(name="word", input_schema={"type": "string"})
    with pytest.raises(ToolDefinitionError, match=r"MCP server 'odd', tool 'word'.*object"):
        server._build(remote, {})


async def test_include_exclude_and_overrides_win_over_annotations(shop: MCPServer) -> None:
    tools = by_name(await shop.tools(
        include=["lookup", "delete_all", "add_note"], exclude=["add_note"],
        overrides={"delete_all": {"risk": "write", "approval": False, "timeout": 5.0},
                   "lookup": {"name": "find_product", "idempotent": False}}))
    assert set(tools) == {"find_product", "delete_all"}
    assert (tools["delete_all"].meta.risk, tools["delete_all"].meta.approval,
            tools["delete_all"].meta.timeout) == ("write", False, 5.0)
    assert tools["find_product"].meta.idempotent is False
    assert tools["find_product"].mcp.name == "lookup"
    assert (await tools["find_product"].call({"sku": "B2"}, CTX)).content.startswith("B2:")
    with pytest.raises(Exception, match="not have"):
        await shop.tools(include=["nope"])
    with pytest.raises(Exception, match="allowed"):
        await shop.tools(overrides={"lookup": {"colour": "red"}})
    with pytest.raises(ToolDefinitionError, match="risk must be one of"):
        await shop.tools(overrides={"lookup": {"risk": "harmless"}})
    add_note = by_name(await shop.tools(overrides={"add_note": {"risk": "read"}}))["add_note"]
    assert (add_note.meta.risk, add_note.meta.idempotent, add_note.meta.risk_declared) == (
        "read", True, True)


async def test_the_listing_is_cached_and_a_burst_of_list_changed_lists_again_once(
        shop: MCPServer) -> None:
    tools = by_name(await shop.tools())
    await shop.tools()
    assert shop._listings == 1
    out = await tools["reshuffle"].call({"times": 25}, CTX)
    assert out.content == "reshuffled"
    for _ in range(200):  # the notifications are handled apart from the call's answer
        if shop._conn is not None and shop._conn.changes == 25:
            break
        await asyncio.sleep(0.01)
    assert shop._conn is not None and shop._conn.changes == 25
    await asyncio.gather(shop.tools(), shop.tools(), shop.tools())
    await shop.tools()
    assert shop._listings == 2


async def test_progress_notifications_reach_on_progress(db: Path, quiet: Any) -> None:
    seen: list[tuple[Any, ...]] = []
    server = MCPServer("shop", command=sys.executable, args=[str(SHOP)],
                       env={"SHOP_DB": str(db)}, errlog=quiet,
                       on_progress=lambda *a: seen.append(a))
    async with server:
        crunch = by_name(await server.tools())["crunch"]
        assert (await crunch.call({"steps": 3}, CTX)).content == "crunched 3"
    assert seen == [("shop", "crunch", float(i), 3.0, f"step {i}") for i in (1, 2, 3)]


async def test_a_call_in_flight_when_the_server_dies_fails_as_transient(
        shop: MCPServer) -> None:
    tools = by_name(await shop.tools())
    pid = int((await tools["whoami"].call({}, CTX)).content)
    asleep = asyncio.Event()
    shop.on_progress = lambda *_: asleep.set()
    pending = asyncio.create_task(tools["nap"].call({"seconds": 20}, CTX))
    await asyncio.wait_for(asleep.wait(), 10)  # the server is inside the call
    os.kill(pid, signal.SIGKILL)
    out = await asyncio.wait_for(pending, 10)
    assert out.failure is not None
    assert (out.failure.error_type, out.failure.transient) == ("tool_error", "exception")
    assert "reconnects on the next call" in out.failure.message
    # keel's retry policy: retried for a read-only tool, never for a non-idempotent one
    assert retryable_tool_failure(tools["nap"], out.failure)
    assert not retryable_tool_failure(tools["add_note"], out.failure)
    # the next call reconnects: a new process answers
    assert int((await tools["whoami"].call({}, CTX)).content) != pid


async def test_a_run_completes_when_the_server_is_killed_mid_run(shop: MCPServer) -> None:
    tools = await shop.tools(include=["whoami", "lookup"])
    first = int((await by_name(tools)["whoami"].call({}, CTX)).content)

    @tool(risk="write", blocking=False)
    def kill_server() -> str:
        """Kill the MCP server's process."""
        os.kill(first, signal.SIGKILL)
        time.sleep(0.2)
        return "killed"

    model = ScriptedModel([call("lookup", {"sku": "A1"}), call("kill_server", {}),
                           call("whoami", {}), "done"])
    agent = Agent("ops", model=model, tools=[*tools, kill_server],
                  middleware=[Retry(RetryPolicy(max_attempts=4, base_delay=0.05))])
    result = await agent.run("go", store=MemoryStore())
    assert result.output == "done"
    [part] = model.requests[-1][-1].parts
    assert not part.is_error
    assert int(re.findall(r"\d+", part.content)[-1]) != first  # a new process answered


async def test_the_circuit_breaker_is_shared_by_the_servers_tools(shop: MCPServer) -> None:
    from keel.reliability import BreakerPolicy, CircuitBreaker

    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1))
    tools = await shop.tools(include=["lookup", "whoami"])
    model = ScriptedModel([call("lookup", {"sku": "A1"}), "ok"])
    agent = Agent("b", model=model, tools=tools, middleware=[breaker])
    await agent.run("x", store=MemoryStore())
    assert (await breaker.state("mcp:shop")).state == "closed"
    await breaker.store.force_open("mcp:shop", 60)
    model = ScriptedModel([call("whoami", {}), "stopped"])
    agent = Agent("b", model=model, tools=tools, middleware=[breaker])
    await agent.run("x", store=MemoryStore())
    assert "circuit_open" in str(model.requests[-1][-1])


async def test_keels_timeout_bounds_each_call(shop: MCPServer) -> None:
    nap = by_name(await shop.tools(overrides={"nap": {"timeout": 0.5}}))["nap"]
    out = await nap.call({"seconds": 10}, CTX)
    assert out.failure is not None and out.failure.error_type == "timeout"
    assert (await nap.call({"seconds": 0.01}, CTX)).content == "rested"


async def test_a_long_answer_is_cut_to_the_output_limit(shop: MCPServer) -> None:
    lookup = by_name(await shop.tools(overrides={"lookup": {"output_limit": 100}}))["lookup"]
    out = await lookup.call({"sku": "X" * 300}, CTX)
    assert out.truncated and out.content.startswith("X" * 100 + "\n[output cut")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_http(port: int, db: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, str(SHOP), "http", str(port)],
                            env={**os.environ, "SHOP_DB": str(db)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the HTTP test server did not start")


async def test_streamable_http_lists_calls_and_survives_a_restart(db: Path) -> None:
    port = _free_port()
    proc = _serve_http(port, db)
    try:
        server = MCPServer("shop-http", url=f"http://127.0.0.1:{port}/mcp",
                           headers={"X-Test": "1"}, reconnect_backoff=0.1)
        async with server:
            tools = by_name(await server.tools())
            assert tools["lookup"].meta.risk == "read"
            assert (await tools["lookup"].call({"sku": "H1"}, CTX)).content.startswith("H1:")
            assert (await tools["header"].call({"name": "X-Test"}, CTX)).content == "1"
            proc.kill()
            proc.wait()
            proc = _serve_http(port, db)
            out = await tools["lookup"].call({"sku": "H2"}, CTX)
            if out.failure is not None:  # the call that found the old session gone
                assert out.failure.transient == "exception"
                out = await tools["lookup"].call({"sku": "H2"}, CTX)
            assert out.content.startswith("H2:")
    finally:
        proc.kill()
        proc.wait()


async def test_mcp_server_time_is_listed_and_called(quiet: Any) -> None:
    server = MCPServer("time", command=sys.executable,
                       args=["-m", "mcp_server_time", "--local-timezone", "UTC"], errlog=quiet)
    async with server:
        tools = by_name(await server.tools())
        assert {"get_current_time", "convert_time"} <= set(tools)
        out = await tools["get_current_time"].call({"timezone": "UTC"}, CTX)
        assert out.failure is None and "UTC" in out.content
        model = ScriptedModel([call("convert_time", {
            "source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}),
            "21:00 in Tokyo"])
        agent = Agent("clock", model=model, tools=list(tools.values()))
        assert (await agent.run("noon UTC in Tokyo?", store=MemoryStore())).output == (
            "21:00 in Tokyo")
        assert "21:00" in str(model.requests[-1][-1])


def test_content_blocks_become_one_observation() -> None:
    from mcp import types

    from keel import ToolError
    from keel.tools._mcp_result import observation

    result = types.CallToolResult(content=[
        types.TextContent(type="text", text="chart:"),
        types.ImageContent(type="image", data="QUJD" * 100, mimeType="image/png"),
        types.ResourceLink(type="resource_link", name="r", uri="file:///r.csv"),
        types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
            uri="file:///n.txt", text="note text")),
    ])
    assert observation("s", "t", result) == (
        "chart:\n[image: image/png, about 300 bytes]\n[resource link: file:///r.csv]\n"
        "note text")
    only_structured = types.CallToolResult(content=[], structuredContent={"n": 1})
    assert observation("s", "t", only_structured) == {"n": 1}
    failed = types.CallToolResult(content=[types.TextContent(type="text", text="nope")],
                                  isError=True)
    with pytest.raises(ToolError, match="MCP server 's', tool 't' failed: nope"):
        observation("s", "t", failed)

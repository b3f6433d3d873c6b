"""``keel mcp serve``: the official MCP client (``mcp.ClientSession``) talks to a real
``python -m keel.cli mcp serve tests.server.mcp_apps:app`` over stdio and over streamable
HTTP on 127.0.0.1; the runs it starts are read back from the store."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import mcp.types as mt
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from typer.testing import CliRunner

from keel import decide_approval
from keel.cli._app import app as cli
from keel.core import ConfigError
from keel.server import App, mcp_server
from keel.server._mcp import exposed_tools, risk_hints
from keel.store import RunFilter, open_store
from keel.tools import tool
from tests.server.apps import lookup, refund, support

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.server.mcp_apps:app"


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return dict(os.environ, PYTHONPATH=path)


@asynccontextmanager
async def stdio(db: Path, *extra: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable, cwd=str(ROOT), env=_env(),
        args=["-m", "keel.cli", "mcp", "serve", TARGET, "--store", str(db), *extra])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def _text(result: Any) -> str:
    assert isinstance(result, mt.CallToolResult)
    block = result.content[0]
    assert isinstance(block, mt.TextContent)
    return block.text


async def _runs(db: Path) -> list[Any]:
    store = open_store(str(db))
    try:
        return await store.list_runs(RunFilter(limit=100))
    finally:
        await store.close()


async def test_the_agents_are_listed_with_their_schema_and_annotations(tmp_path: Path) -> None:
    async with stdio(tmp_path / "runs.db", "--expose-tools") as session:
        listed = {t.name: t for t in (await session.list_tools()).tools}
    assert sorted(listed) == ["broken", "lookup", "support"]  # refund is not a read tool
    agent = listed["support"]
    assert agent.input_schema["required"] == ["input"]
    assert set(agent.input_schema["properties"]) == {"input", "user", "conversation"}
    assert agent.input_schema["additionalProperties"] is False
    assert "Help the customer." in (agent.description or "")
    assert agent.annotations is not None
    assert agent.annotations.read_only_hint is False
    read = listed["lookup"].annotations
    assert read is not None
    assert (read.read_only_hint, read.idempotent_hint, read.destructive_hint) == (
        True, True, False)
    assert listed["lookup"].input_schema["required"] == ["order"]


async def test_a_call_runs_the_agent_reports_progress_and_is_stored_for_the_tenant(
        tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    progress: list[tuple[float, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message))

    async with stdio(db, "--tenant", "acme", "--expose-tools") as session:
        result = await session.call_tool(
            "support", {"input": "where is order A1", "user": "ann"},
            progress_callback=on_progress)
        direct = await session.call_tool("lookup", {"order": "B2"})
    assert isinstance(result, mt.CallToolResult) and not result.is_error
    assert _text(result) == "Done: order A1: shipped <b>on time</b>"
    data = result.structured_content
    assert data is not None and data["status"] == "completed"
    # the multi-step run was reported as it went: its model turns and its tool call
    said = [message or "" for _, message in progress]
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert any("calls lookup" in m for m in said)
    assert any(m.startswith("tool call lookup") for m in said)
    assert any("answered" in m for m in said)
    runs = await _runs(db)
    assert [(r.run_id, r.agent, r.status, r.tenant, r.user) for r in runs] == [
        (data["run_id"], "support", "completed", "acme", "ann")]
    # an exposed read tool is called directly: validated, and no run is written
    assert isinstance(direct, mt.CallToolResult) and not direct.is_error
    assert _text(direct) == "order B2: shipped <b>on time</b>"


async def test_a_run_that_needs_approval_says_so_and_completes_once_approved(
        tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    store = open_store(str(db))
    try:
        async with stdio(db, "--tenant", "acme") as session:
            result = await session.call_tool("support", {"input": "refund A1 5"})
            assert isinstance(result, mt.CallToolResult) and not result.is_error
            data = result.structured_content
            assert data is not None
            assert data["status"] == "suspended" and data["waiting_for"] == "approval"
            [approval] = data["approval_ids"]
            run_id = data["run_id"]
            assert run_id in _text(result) and approval in _text(result)
            assert "waiting for a person" in _text(result)
            record = await store.get_run(run_id, tenant="acme")
            assert record.status == "suspended"
            task = await store.get_task(approval, tenant="acme")
            assert task.kind == "approval" and task.run_id == run_id
            await decide_approval(approval, store=store, approve=True, by="reviewer",
                                  tenant="acme")
            # the MCP server's worker continues the approved run
            deadline = time.monotonic() + 30
            while (record := await store.get_run(run_id)).status != "completed":
                assert record.status in ("suspended", "running"), record
                assert time.monotonic() < deadline, "the approved run was not continued"
                await asyncio.sleep(0.1)
        assert record.output == "Done: refunded 5.00 on A1"
        assert record.tenant == "acme"
    finally:
        await store.close()


async def test_a_failed_run_is_an_error_result_with_the_normalized_error(
        tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    async with stdio(db, "--tenant", "acme") as session:
        result = await session.call_tool("broken", {"input": "hello"})
        with pytest.raises(MCPError, match="no tool named 'nope'"):
            await session.call_tool("nope", {"input": "hello"})
    assert isinstance(result, mt.CallToolResult) and result.is_error
    data = result.structured_content
    assert data is not None and data["status"] == "failed"
    assert data["error"] == {"error_type": "ModelError", "retryable": False,
                             "message": "the model endpoint refused the request"}
    assert "Traceback" not in _text(result) and data["run_id"] in _text(result)
    [run] = await _runs(db)
    assert (run.run_id, run.status, run.tenant) == (data["run_id"], "failed", "acme")


@pytest.mark.parametrize("arguments", [
    {}, {"input": 3}, {"input": ""}, {"input": "   "}, {"input": "hi", "user": ""},
    {"input": "hi", "user": 7}, {"input": "hi", "extra": True},
    {"input": "hi", "conversation": "no spaces allowed"}])
async def test_malformed_arguments_are_refused_and_write_no_run(
        tmp_path: Path, arguments: dict[str, Any]) -> None:
    bridge = _bridge(tmp_path)
    async with bridge.opened():
        result = await bridge.call("support", arguments)
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["error"]["error_type"] == "invalid_arguments"
    assert _text(result).startswith("invalid arguments: ")
    assert await _runs(tmp_path / "runs.db") == []


async def test_malformed_arguments_over_stdio(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    async with stdio(db) as session:
        missing = await session.call_tool("support", {"user": "ann"})
        wrong = await session.call_tool("support", {"input": ["a list"]})
    assert _text(missing) == "invalid arguments: input: Field required"
    assert _text(wrong) == "invalid arguments: input: Input should be a valid string"
    assert isinstance(wrong, mt.CallToolResult) and wrong.is_error
    assert await _runs(db) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_http(db: Path, port: int) -> subprocess.Popen[bytes]:
    """``keel mcp serve --transport http`` on 127.0.0.1:``port``, once it accepts."""
    server = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "mcp", "serve", TARGET, "--transport", "http",
         "--port", str(port), "--store", str(db), "--tenant", "web", "--log-level",
         "warning"], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            _, err = server.communicate(timeout=30)
            raise AssertionError(f"the server did not start: {err.decode()[-2000:]}")
        time.sleep(0.1)


async def test_the_http_transport_serves_the_same_tools(tmp_path: Path) -> None:
    db, port = tmp_path / "runs.db", _free_port()
    server = _start_http(db, port)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        async with streamable_http_client(url) as (read, write), ClientSession(
                read, write) as session:
            await session.initialize()
            names = sorted(t.name for t in (await session.list_tools()).tools)
            result = await session.call_tool("support", {"input": "where is order C3"})
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert names == ["broken", "support"]
    assert _text(result) == "Done: order C3: shipped <b>on time</b>"
    [run] = await _runs(db)
    assert (run.agent, run.status, run.tenant) == ("support", "completed", "web")


def _bridge(tmp_path: Path, **options: Any) -> Any:
    from keel.server._mcp import McpBridge

    return McpBridge(App([support], store=str(tmp_path / "runs.db")), **options)


def test_risk_maps_to_the_mcp_hints() -> None:
    @tool(risk="write", idempotent=False)
    def note(text: str) -> str:
        """Write a note."""
        return text

    write, gone = risk_hints(note), risk_hints(refund)
    assert (write.read_only_hint, write.destructive_hint, write.idempotent_hint) == (
        False, False, False)
    assert (gone.read_only_hint, gone.destructive_hint) == (False, True)
    assert risk_hints(lookup).read_only_hint is True


def test_only_read_tools_are_exposed_unless_named() -> None:
    app = App([support])
    assert list(exposed_tools(app, True)) == ["lookup"]
    assert sorted(exposed_tools(app, ["refund", "lookup"])) == ["lookup", "refund"]
    assert exposed_tools(app, False) == {}
    with pytest.raises(ConfigError, match="no agent of the app has a tool named 'nope'"):
        exposed_tools(app, ["nope"])
    mcp_server(app, tenant="t", expose_tools=True)  # builds without a store opened


def test_a_bad_target_is_the_same_clear_error_as_keel_serve(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["mcp", "serve", "tests.server.mcp_apps:nope", "--store",
                              str(tmp_path / "runs.db")])
    assert out.exit_code == 2
    assert "has no attribute 'nope'" in out.output
    out = runner.invoke(cli, ["mcp", "serve", "tests.server.apps:DELAY"])
    assert out.exit_code == 2 and "not a keel.server.App" in out.output
    out = runner.invoke(cli, ["mcp", "serve", TARGET, "--transport", "sse"])
    assert out.exit_code == 2 and "use stdio or http" in out.output


def test_without_the_mcp_package_it_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)
    out = CliRunner().invoke(cli, ["mcp", "serve", TARGET])
    assert out.exit_code == 2
    assert "pip install 'keel-agents[mcp]'" in out.output


async def test_an_escalation_is_answered_with_its_id(tmp_path: Path) -> None:
    bridge = _bridge(tmp_path, tenant="acme")
    async with bridge.opened() as store:
        result = await bridge.call("support", {"input": "let me talk to a human please"})
        assert not result.is_error
        data = result.structured_content
        assert data["status"] == "suspended" and data["waiting_for"] == "escalation"
        [escalation] = data["escalation_ids"]
        task = await store.get_task(escalation, tenant="acme")
        assert task.kind == "escalation" and task.run_id == data["run_id"]
        assert "keel escalations resolve" in _text(result)


async def test_a_conversation_continues_across_calls(tmp_path: Path) -> None:
    bridge = _bridge(tmp_path, tenant="acme")
    async with bridge.opened() as store:
        first = await bridge.call("support", {"input": "hello", "user": "ann",
                                              "conversation": "c-1"})
        second = await bridge.call("support", {"input": "again", "user": "ann",
                                               "conversation": "c-1"})
        runs = await store.list_runs(RunFilter(conversation="c-1", tenant="acme"))
    assert _text(first) == "You said: hello" and not second.is_error
    assert sorted(r.run_id for r in runs) == sorted(
        [first.structured_content["run_id"], second.structured_content["run_id"]])


async def test_a_tool_that_crashes_is_an_error_result_without_a_trace(
        tmp_path: Path) -> None:
    bridge = _bridge(tmp_path, expose_tools=["lookup"])

    async def crash(arguments: Any, ctx: Any) -> Any:
        raise RuntimeError("secret internals")

    bridge.tools["lookup"] = type("Crashing", (), {"name": "lookup",
                                                   "call": staticmethod(crash),
                                                   "meta": lookup.meta})()
    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # type: ignore[method-assign]
    server_log = logging.getLogger("keel.server.mcp")  # its own handler: another test may
    server_log.addHandler(handler)  # have switched propagation off
    try:
        async with bridge.opened():
            result = await bridge.call("lookup", {"order": "A1"})
            bad = await _bridge(tmp_path, expose_tools=True).call("lookup", {"order": 5})
    finally:
        server_log.removeHandler(handler)
    assert result.is_error and "secret internals" not in _text(result)
    assert result.structured_content["error"]["error_type"] == "internal"
    crashed = [r for r in logged if r.getMessage() == "tool lookup crashed"]
    assert crashed and crashed[0].exc_info is not None
    assert "secret internals" in str(crashed[0].exc_info[1])
    assert bad.is_error
    assert bad.structured_content["error"]["error_type"] == "invalid_arguments"


def test_a_store_that_cannot_be_opened_is_one_clear_line(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    proc = subprocess.run(
        [sys.executable, "-m", "keel.cli", "mcp", "serve", TARGET, "--store",
         str(blocked / "runs.db")], cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "error: cannot read the run store" in proc.stderr
    assert "Traceback" not in proc.stderr and "ExceptionGroup" not in proc.stderr


async def test_a_cancelled_call_cancels_its_run(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.server import apps

    monkeypatch.setitem(apps.DELAY, "s", 0.5)  # the scripted model thinks for a while
    bridge = _bridge(tmp_path, tenant="acme")
    async with bridge.opened() as store:
        going = asyncio.Event()

        async def report(count: int, message: str) -> None:
            going.set()  # the first model turn is done; the second is under way

        call = asyncio.create_task(bridge.call("support", {"input": "where is order A1"},
                                               report))
        await asyncio.wait_for(going.wait(), 30)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        [run] = await store.list_runs(RunFilter())
    assert (run.status, run.tenant) == ("cancelled", "acme")


async def test_a_flow_is_a_tool_too(tmp_path: Path) -> None:
    from keel import Agent, FlowContext, flow
    from keel.testing import ScriptedModel

    writer = Agent("writer", model=ScriptedModel(["a draft"]))

    @flow("drafting", agents=[writer])
    async def drafting(ctx: FlowContext, input: str) -> dict[str, str]:
        draft = await ctx.run_agent(writer, input)
        return {"draft": draft.output}

    from keel.server._mcp import McpBridge

    bridge = McpBridge(App([drafting], store=str(tmp_path / "runs.db")))
    [listed] = bridge.listing()
    assert listed.name == "drafting" and "flow" in (listed.description or "")
    said: list[str] = []

    async def report(count: int, message: str) -> None:
        said.append(message)

    async with bridge.opened():
        result = await bridge.call("drafting", {"input": "a poem"}, report)
    assert not result.is_error
    assert result.structured_content["output"] == {"draft": "a draft"}
    assert _text(result) == '{"draft": "a draft"}'
    assert said == ["model turn drafting/writer/turn:0/model: answered"]  # its agents' steps


def test_the_description_shows_the_first_paragraph_of_the_instructions() -> None:
    from keel import Agent
    from keel.server._mcp import McpBridge

    long = Agent("long", model=support.model,
                 instructions="Answer briefly.\n\nSecret house rules: never say 'maybe'.")
    huge = Agent("huge", model=support.model, instructions="x" * 2000)
    described = {t.name: t.description or "" for t in McpBridge(App([long, huge])).listing()}
    assert described["long"] == "Run the keel agent 'long': Answer briefly."
    assert len(described["huge"]) < 600 and described["huge"].endswith("…")


async def test_answers_leave_as_the_apps_data_policy_lets_runs_leave(tmp_path: Path) -> None:
    from keel.guard import DataPolicy
    from keel.server._mcp import McpBridge

    db = str(tmp_path / "runs.db")
    masked = McpBridge(App([support], store=db))
    blocked = McpBridge(App([support], store=db, data_policy=DataPolicy(
        {"exports": {"email": "block"}})))
    async with masked.opened():
        shown = await masked.call("support", {"input": "write to jane@example.com"})
    async with blocked.opened():
        refused = await blocked.call("support", {"input": "write to jane@example.com"})
    assert _text(shown) == "You said: write to [EMAIL]"  # as keel serve's API shows runs
    assert shown.structured_content["output"] == "You said: write to [EMAIL]"
    assert refused.is_error and "jane" not in _text(refused)
    assert refused.structured_content["error"]["error_type"] == "blocked"
    assert refused.structured_content["status"] == "completed"


async def test_an_exposed_tools_result_is_scrubbed_too(tmp_path: Path) -> None:
    from keel.server._mcp import McpBridge

    @tool(risk="read")
    def contact(customer: str) -> dict[str, str]:
        """A customer's contact."""
        return {"customer": customer, "email": "jane@example.com"}

    from keel import Agent

    agent = Agent("crm", model=support.model, tools=[contact])
    bridge = McpBridge(App([agent], store=str(tmp_path / "runs.db")), expose_tools=True)
    result = await bridge.call("contact", {"customer": "c1"})
    assert not result.is_error
    assert "jane" not in _text(result)
    assert result.structured_content == {"status": "completed", "value": {
        "customer": "c1", "email": "[EMAIL]"}}

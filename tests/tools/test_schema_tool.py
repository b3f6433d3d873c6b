"""Tools from a JSON Schema and a callable (how MCP servers' and other frameworks' tools
arrive): checked at construction, validated per call, and run through the same call path as
``@tool`` functions (timeout, worker thread, failures, codec, output limit), in an agent too."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

import keel
from keel import (
    Agent,
    ApprovalRequired,
    MemoryStore,
    ToolContext,
    ToolDefinitionError,
    ToolError,
    tool_from_schema,
)
from keel.core import Message, RetryWithFeedback, ToolSpec
from keel.guard import undelimit
from keel.runtime import decide_approval, diff_runs
from keel.store import TaskFilter
from keel.testing import FunctionModel, ScriptedModel, call
from keel.tools import SchemaTool, Toolset, tool

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "description": "the city"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "units": {"enum": ["metric", "imperial"]},
    },
    "required": ["city"],
    "additionalProperties": False,
}


def ctx(key: str = "a/turn:0/tool:x#0") -> ToolContext:
    return ToolContext(run_id="r1", step_key=key, agent="a", idempotency_key=f"r1/{key}",
                       deps={"tenant": "acme"})


def weather_tool(**options: Any) -> tuple[SchemaTool, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def forecast(args: dict[str, Any]) -> dict[str, Any]:
        seen.append(args)
        return {"city": args["city"], "days": args.get("days", 1), "sky": "clear"}

    return tool_from_schema("forecast", "Forecast the weather.", WEATHER, forecast,
                            **options), seen


# --- construction -------------------------------------------------------------------------

def test_spec_is_the_given_schema_and_metadata_matches_tool_defaults() -> None:
    t, _ = weather_tool(risk="write", scopes={"geo"}, group="geo", timeout=5)
    assert isinstance(t, keel.Tool)
    assert t.spec == ToolSpec(name="forecast", description="Forecast the weather.",
                              parameters=WEATHER)
    assert t.meta.risk == "write" and t.meta.scopes == frozenset({"geo"})
    assert t.meta.idempotent is False  # like @tool: only read tools default to idempotent
    assert t.meta.timeout == 5 and t.meta.group == "geo"
    assert weather_tool()[0].meta.idempotent is True
    assert tool_from_schema("x", None, {"type": "object"}, dict).meta.description == "Call x."


def test_the_schema_is_copied_so_later_changes_do_not_reach_the_tool() -> None:
    schema = json.loads(json.dumps(WEATHER))
    t = tool_from_schema("forecast", "f", schema, lambda a: a)
    schema["properties"]["city"]["type"] = "integer"
    assert t.parameters["properties"]["city"]["type"] == "string"


@pytest.mark.parametrize(("parameters", "fn", "name", "match"), [
    ({"type": "object", "properties": {"a": {"type": "strin"}}}, dict, "t",
     r"not a valid JSON Schema .* at properties/a/type"),
    ({"type": "object", "required": "a"}, dict, "t", r"not a valid JSON Schema"),
    ({"type": "array", "items": {}}, dict, "t", r"must describe an object"),
    ({"properties": {}}, dict, "t", r"must describe an object"),
    ([{"type": "object"}], dict, "t", r"must be a JSON Schema object \(a dict\), got list"),
    ({"type": "object", "default": object()}, dict, "t", r"must be plain JSON data"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, dict, "t",
     r"\$ref '#/\$defs/missing' points nowhere"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, dict,
     "t", r"points outside the schema; keel does not fetch"),
    ({"type": "object"}, "not callable", "t", r"fn must be a function"),
    ({"type": "object"}, dict, "bad name!", r"must be letters, digits"),
    ({"type": "object"}, dict, "", r"must be letters, digits"),
])
def test_bad_definitions_are_refused_naming_the_part(parameters: Any, fn: Any, name: str,
                                                     match: str) -> None:
    with pytest.raises(ToolDefinitionError, match=match):
        tool_from_schema(name, "d", parameters, fn)


def test_a_schema_checked_before_still_gives_each_tool_its_own_copy() -> None:
    # The metaschema check of a schema is remembered by its text (keel's paging tools are
    # built with every agent): the tools built from it must not share one dict.
    first, second = (tool_from_schema(f"f{n}", "f", WEATHER, dict) for n in range(2))
    first.parameters["properties"]["city"]["type"] = "integer"
    assert second.parameters["properties"]["city"]["type"] == "string"
    assert WEATHER["properties"]["city"]["type"] == "string"


@pytest.mark.parametrize("size", [10, 800])  # remembered when valid; too large to be
def test_a_bad_schema_is_refused_every_time_naming_each_tool(size: int) -> None:
    bad = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(size)}}
    bad["properties"]["p0"] = {"type": "strin"}
    good = {**bad, "properties": {**bad["properties"], "p0": {"type": "string"}}}
    for name in ("first", "second"):
        with pytest.raises(ToolDefinitionError, match=rf"tool '{name}'.* at properties/p0"):
            tool_from_schema(name, "d", bad, dict)
        assert tool_from_schema(name, "d", good, dict).parameters == good


def test_local_refs_and_draft7_schemas_are_accepted() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "definitions": {"id": {"type": "integer"}},
              "properties": {"id": {"$ref": "#/definitions/id"}}, "required": ["id"]}
    t = tool_from_schema("get", "Get.", schema, lambda a: a["id"])
    assert asyncio.run(t.call('{"id": 3}', ctx())).value == 3
    bad = asyncio.run(t.call('{"id": "x"}', ctx()))
    assert bad.failure is not None and bad.failure.error_type == "invalid_arguments"


def test_bad_options_are_refused_like_tool() -> None:
    with pytest.raises(ToolDefinitionError, match="timeout must be > 0"):
        weather_tool(timeout=0)
    with pytest.raises(ToolDefinitionError, match="risk must be one of"):
        weather_tool(risk="dangerous")


# --- calls --------------------------------------------------------------------------------

async def test_valid_arguments_reach_the_function_as_a_dict() -> None:
    t, seen = weather_tool()
    result = await t.call('{"city": "Oslo", "days": 3}', ctx())
    assert result.failure is None
    assert seen == [{"city": "Oslo", "days": 3}]
    assert result.value == {"city": "Oslo", "days": 3, "sky": "clear"}
    assert json.loads(result.content) == result.value
    assert (await t.call({"city": "Rome"}, ctx())).value["city"] == "Rome"  # a dict as well


async def test_invalid_json_is_the_same_observation_as_a_function_tool() -> None:
    t, seen = weather_tool()

    @tool
    def forecast(city: str) -> str:
        return city

    mine = (await t.call('{"city": ', ctx())).failure
    theirs = (await forecast.call('{"city": ', ctx())).failure
    assert mine is not None and theirs is not None
    assert mine.error_type == theirs.error_type == "invalid_json"
    assert (mine.retryable, mine.hint) == (theirs.retryable, theirs.hint)
    assert mine.message.startswith("arguments for forecast are not valid JSON: ")
    assert seen == []


async def test_schema_violations_name_the_path_and_show_the_schema() -> None:
    t, seen = weather_tool()
    result = await t.call('{"city": "", "days": 9, "units": "kelvin", "extra": 1}', ctx())
    failure = result.failure
    assert failure is not None and failure.error_type == "invalid_arguments"
    assert failure.retryable
    assert failure.message.startswith("bad arguments for forecast: ")
    assert "city: '' should be non-empty" in failure.message
    assert "days: 9 is greater than the maximum of 7" in failure.message
    assert "units: 'kelvin' is not one of ['metric', 'imperial']" in failure.message
    assert "'extra' was unexpected" in failure.message
    assert failure.hint == f"Expected arguments: {json.dumps(WEATHER)}"
    missing = (await t.call("{}", ctx())).failure
    assert missing is not None and "(arguments): 'city' is a required property" in missing.message
    not_object = (await t.call("[1, 2]", ctx())).failure
    assert not_object is not None and "is not of type 'object'" in not_object.message
    assert seen == []


async def test_hostile_input_gets_a_bounded_observation_quickly() -> None:
    t = tool_from_schema("echo", "Echo.", {
        "type": "object", "properties": {"text": {"type": "string", "maxLength": 100},
                                         "tags": {"type": "array",
                                                  "items": {"type": "integer"}}}},
        lambda a: a)
    huge = json.dumps({"text": "x" * 5_000_000})
    started = time.perf_counter()
    failure = (await t.call(huge, ctx())).failure
    assert failure is not None and failure.error_type == "invalid_arguments"
    assert failure.message.startswith("bad arguments for echo: text: 'xxx")
    assert failure.message.endswith("xxx' is too long")  # the reason survives the cut
    assert len(failure.message) < 1_000  # not the 5 MB string back to the model
    many = json.dumps({"tags": ["x"] * 100_000})
    failure = (await t.call(many, ctx())).failure
    assert failure is not None and len(failure.message) < 2_000
    assert failure.message.endswith("and more")
    deep = '{"tags": ' + "[" * 100_000 + "]" * 100_000 + "}"
    failure = (await t.call(deep, ctx())).failure
    assert failure is not None and failure.error_type == "invalid_json"
    assert "recursion limit" in failure.message
    nan = (await t.call('{"text": NaN}', ctx())).failure
    assert nan is not None and nan.error_type == "invalid_json"
    assert time.perf_counter() - started < 10


async def test_deep_nesting_through_a_recursive_schema_is_an_observation() -> None:
    tree = {"type": "object", "properties": {"child": {"$ref": "#"}},
            "additionalProperties": False}
    t = tool_from_schema("tree", "Walk.", tree, lambda a: "ok")
    nested: dict[str, Any] = {}
    node = nested
    for _ in range(5_000):  # deeper than the interpreter's recursion limit lets jsonschema go
        node["child"] = {}
        node = node["child"]
    failure = (await t.call(nested, ctx())).failure
    assert failure is not None and failure.error_type == "invalid_arguments"
    assert "nested too deeply" in failure.message
    assert (await t.call('{"child": {"child": {}}}', ctx())).value == "ok"


async def test_context_flag_passes_the_tool_context() -> None:
    seen: list[tuple[dict[str, Any], ToolContext]] = []

    async def lookup(args: dict[str, Any], context: ToolContext) -> str:
        seen.append((args, context))
        return f"{args['city']} for {context.deps['tenant']}"

    t = tool_from_schema("lookup", "Look up.", WEATHER, lookup, context=True)
    c = ctx()
    assert (await t.call('{"city": "Oslo"}', c)).content == "Oslo for acme"
    assert seen == [({"city": "Oslo"}, c)]


async def test_sync_functions_run_in_a_worker_thread_and_async_on_the_loop() -> None:
    threads: list[str] = []

    def sync_fn(args: dict[str, Any]) -> int:
        threads.append(threading.current_thread().name)
        return 1

    async def async_fn(args: dict[str, Any]) -> int:
        threads.append(threading.current_thread().name)
        return 2

    class AsyncCallable:  # an object whose __call__ is async (how some SDKs wrap tools)
        async def __call__(self, args: dict[str, Any]) -> int:
            threads.append(threading.current_thread().name)
            return 3

    schema = {"type": "object"}
    main = threading.current_thread().name
    assert (await tool_from_schema("s", "s", schema, sync_fn).call("{}", ctx())).value == 1
    assert (await tool_from_schema("a", "a", schema, async_fn).call("{}", ctx())).value == 2
    assert (await tool_from_schema("c", "c", schema, AsyncCallable()).call("{}", ctx())
            ).value == 3
    inline = tool_from_schema("i", "i", schema, sync_fn, blocking=False)
    assert (await inline.call("{}", ctx())).value == 1
    assert threads[0].startswith("keel-tool-")
    assert threads[1:] == [main, main, main]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_timeout_is_the_same_observation(kind: str) -> None:
    release = threading.Event()

    def slow_sync(args: dict[str, Any]) -> str:
        release.wait(5)
        return "late"

    async def slow_async(args: dict[str, Any]) -> str:
        await asyncio.sleep(5)
        return "late"

    fn = slow_sync if kind == "sync" else slow_async
    t = tool_from_schema("slow", "Slow.", {"type": "object"}, fn, timeout=0.05)
    started = time.perf_counter()
    failure = (await t.call("{}", ctx())).failure
    release.set()
    assert time.perf_counter() - started < 2
    assert failure is not None and failure.error_type == "timeout" and failure.retryable
    assert failure.message == "slow did not finish within 0.05 s"


async def test_errors_map_like_function_tools() -> None:
    def fails(args: dict[str, Any]) -> None:
        kind = args["kind"]
        if kind == "tool":
            raise ToolError("quota reached", retryable=True, hint="wait")
        if kind == "feedback":
            raise RetryWithFeedback("use a smaller page", hint="page <= 10")
        if kind == "transient":
            raise ConnectionError("reset")
        raise KeyError("boom")

    t = tool_from_schema("fails", "Fails.", {"type": "object",
                                             "properties": {"kind": {"type": "string"}}}, fails)
    got = {}
    for kind in ("tool", "feedback", "transient", "other"):
        failure = (await t.call({"kind": kind}, ctx())).failure
        assert failure is not None and failure.error_type == "tool_error"
        got[kind] = failure
    assert (got["tool"].message, got["tool"].retryable, got["tool"].hint,
            got["tool"].transient) == ("quota reached", True, "wait", "declared")
    assert (got["feedback"].message, got["feedback"].hint) == ("use a smaller page",
                                                               "page <= 10")
    assert got["transient"].transient == "exception"
    assert got["other"].message == "fails failed: KeyError: 'boom'"
    assert not got["other"].retryable and got["other"].transient is None


async def test_signals_pass_through() -> None:
    def hand_off(args: dict[str, Any]) -> None:
        raise keel.Handoff("billing", "a refund")

    t = tool_from_schema("transfer", "Transfer.", {"type": "object"}, hand_off)
    with pytest.raises(keel.Handoff):
        await t.call("{}", ctx())


async def test_output_limit_and_codec_rendering() -> None:
    @dataclass
    class Row:
        id: int
        name: str

    t = tool_from_schema("rows", "Rows.", {"type": "object"},
                         lambda a: [Row(i, "n" * 50) for i in range(100)], output_limit=200)
    result = await t.call("{}", ctx())
    assert result.truncated and result.content.startswith('[{"id": 0, "name": "nnn')
    assert "[output cut: showing the first 200 of" in result.content
    assert result.value[99] == {"id": 99, "name": "n" * 50}  # kept whole for the journal


async def test_semantic_validators_get_the_arguments_dict() -> None:
    t, seen = weather_tool(validators=[lambda a: "not on Sundays" if a["city"] == "Sun" else None])
    failure = (await t.call({"city": "Sun"}, ctx())).failure
    assert failure is not None and failure.error_type == "rejected_arguments"
    assert "not on Sundays" in failure.message and seen == []


def test_schema_tools_and_function_tools_share_a_toolset() -> None:
    t, _ = weather_tool()

    @tool
    def other(x: int) -> int:
        return x

    assert [s.name for s in Toolset([t, other]).specs()] == ["forecast", "other"]


# --- in an agent --------------------------------------------------------------------------

async def test_agent_offers_the_schema_and_the_model_corrects_bad_arguments() -> None:
    t, seen = weather_tool()
    offered: list[list[ToolSpec]] = []
    replies = iter([call("forecast", {"city": "Oslo", "days": 30}),
                    call("forecast", {"city": "Oslo", "days": 3}), "clear in Oslo"])

    def model_fn(messages: list[Message], tools: list[ToolSpec], settings: Any) -> Any:
        offered.append(tools)
        return next(replies)

    agent = Agent("weather", model=FunctionModel(model_fn), tools=[t])
    store = MemoryStore()
    result = await agent.run("weather in Oslo?", store=store)
    assert result.output == "clear in Oslo"
    assert offered[0] == [ToolSpec(name="forecast", description="Forecast the weather.",
                                   parameters=WEATHER)]
    assert seen == [{"city": "Oslo", "days": 3}]  # the bad call never reached the function
    journal = await store.read_journal(result.run_id)
    tool_results = [e.data for e in journal if e.kind == "tool" and e.phase == "result"]
    assert tool_results[0]["failure"]["error_type"] == "invalid_arguments"
    assert "days: 30 is greater than the maximum of 7" in tool_results[0]["failure"]["message"]
    assert tool_results[1]["value"] == {"city": "Oslo", "days": 3, "sky": "clear"}


async def test_agent_runs_sync_and_async_schema_tools_and_a_timeout() -> None:
    async def slow(args: dict[str, Any]) -> str:
        await asyncio.sleep(5)
        return "late"

    t, _ = weather_tool()
    sleepy = tool_from_schema("sleepy", "Sleeps.", {"type": "object"}, slow, timeout=0.05)
    model = ScriptedModel([[call("forecast", {"city": "Oslo"}), call("sleepy", {})], "done"])
    store = MemoryStore()
    result = await Agent("w", model=model, tools=[t, sleepy]).run("go", store=store)
    assert result.output == "done"
    observations = [p.content for p in model.requests[-1][-1].tool_results]
    assert json.loads(undelimit(observations[0]))["sky"] == "clear"
    assert json.loads(undelimit(observations[1]))["error"]["error_type"] == "timeout"


async def test_hostile_arguments_in_an_agent_never_crash_the_run() -> None:
    t, seen = weather_tool()
    deep = '{"city": ' + "[" * 50_000 + "]" * 50_000 + "}"
    model = ScriptedModel([call("forecast", deep), call("forecast", {"city": "x" * 2_000_000}),
                           "gave up"])
    store = MemoryStore()
    result = await Agent("w", model=model, tools=[t]).run("go", store=store)
    assert result.output == "gave up"
    assert seen == [{"city": "x" * 2_000_000}]  # no maxLength: a long string is valid
    journal = await store.read_journal(result.run_id)
    first = next(e.data for e in journal if e.kind == "tool" and e.phase == "result")
    assert first["failure"]["error_type"] == "invalid_json"

    @tool  # the runtime's own parsing (gate, repeat check) is the same for @tool functions
    def forecast(city: str) -> str:
        return city

    model = ScriptedModel([call("forecast", deep), "gave up"])
    other = await Agent("w", model=model, tools=[forecast]).run("go", store=store)
    assert other.output == "gave up"
    d = await diff_runs(result.run_id, other.run_id, store=store)  # and the diff reads them
    assert not d.identical


async def test_irreversible_schema_tool_suspends_for_approval_then_runs_once() -> None:
    sent: list[dict[str, Any]] = []
    schema = {"type": "object", "properties": {"to": {"type": "string"},
                                               "amount": {"type": "integer"}},
              "required": ["to", "amount"]}
    wire = tool_from_schema("wire", "Send money.", schema, sent.append, risk="irreversible")
    model = ScriptedModel([call("wire", {"to": "bob", "amount": 50}), "sent"])
    agent = Agent("pay", model=model, tools=[wire])
    store = MemoryStore()
    with pytest.raises(ApprovalRequired) as info:
        await agent.run("pay bob", store=store)
    assert sent == []
    [task] = await store.list_tasks(TaskFilter(kind="approval"))
    assert task.data["tool"] == "wire" and task.data["schema"] == schema
    await decide_approval(task.task_id, store=store, approve=True, by="ann", comment="ok")
    result = await agent.resume(info.value.run_id or "", store=store)
    assert result.output == "sent"
    assert sent == [{"to": "bob", "amount": 50}]

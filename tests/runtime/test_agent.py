from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import pydantic
import pytest

from keel import (
    Agent,
    Budget,
    BudgetExceeded,
    ConfigError,
    MemoryStore,
    MissingCredentials,
    ModelError,
    OutputValidationError,
    RepeatedFailure,
    UnknownModel,
    UserError,
    tool,
)
from keel.core import Message, ToolResultPart
from keel.guard import undelimit
from keel.testing import FunctionModel, ScriptedModel, call


@tool
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def tool_results(model: ScriptedModel, turn: int) -> list[ToolResultPart]:
    """The tool results the model saw at the start of ``turn`` (each tool's text, without the
    untrusted-content delimiters keel puts around it: tests/guard/test_taint.py tests them)."""
    return [replace(p, content=undelimit(p.content))
            for p in model.requests[turn][-1].tool_results]


async def test_react_loop_runs_tools_and_keeps_the_thought() -> None:
    model = ScriptedModel([["I should add.", call("add", {"a": 2, "b": 3})], "The sum is 5."])
    agent = Agent("calc", model=model, tools=[add], instructions="Be exact.")
    store = MemoryStore()
    result = await agent.run("2+3?", store=store)
    assert result.output == "The sum is 5."
    assert result.steps == 3  # two model turns and one tool call
    assert [r.content for r in tool_results(model, 1)] == ["5"]
    assistant = [m for m in result.messages if m.role == "assistant"]
    assert assistant[0].text == "I should add."  # the thought is kept in the history
    assert model.requests[0][0].text.startswith("Be exact.")  # + keel's untrusted-content note
    record = await store.get_run(result.run_id)
    assert record.status == "completed"
    assert record.output == "The sum is 5."
    keys = [e.key for e in await store.read_journal(result.run_id)]
    assert keys == ["calc/turn:0/model", "calc/turn:0/tool:add#0", "calc/turn:1/model"]


async def test_independent_tool_calls_run_concurrently_and_run_alone_is_respected() -> None:
    active = 0
    peak = 0
    order: list[str] = []

    @tool
    async def fetch(name: str) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        order.append(name)
        return name

    @tool(run_alone=True)
    async def migrate() -> str:
        assert active == 0, "a run_alone tool overlapped with other calls"
        order.append("migrate")
        return "done"

    calls = [call("fetch", {"name": n}) for n in "abcd"] + [call("migrate")]
    model = ScriptedModel([calls, "ok"])
    result = await Agent("par", model=model, tools=[fetch, migrate]).run("go", store=MemoryStore())
    assert result.output == "ok"
    assert peak == 4
    assert order[-1] == "migrate"
    # results come back in call order regardless of completion order
    assert [r.content for r in tool_results(model, 1)] == ["a", "b", "c", "d", "done"]


async def test_hallucinated_tool_and_bad_arguments_reach_the_model_and_it_recovers() -> None:
    model = ScriptedModel([
        call("multiply", {"a": 1}),
        call("add", '{"a": 1, "b": '),
        call("add", {"a": "one", "b": 2}),
        call("add", {"a": 1, "b": 2}),
        "3",
    ])
    result = await Agent("fix", model=model, tools=[add]).run("1+2", store=MemoryStore())
    assert result.output == "3"
    errors = [json.loads(tool_results(model, t)[0].content)["error"] for t in (1, 2, 3)]
    assert [e["error_type"] for e in errors] == ["unknown_tool", "invalid_json",
                                                  "invalid_arguments"]
    assert "add" in errors[0]["hint"]
    assert tool_results(model, 4)[0].content == "3"


async def test_repeated_identical_failing_call_warns_then_stops() -> None:
    @tool
    def flaky(x: int) -> str:
        raise RuntimeError("database down")

    model = ScriptedModel([call("flaky", {"x": 1})] * 5 + ["never"])
    agent = Agent("loop", model=model, tools=[flaky], max_repeated_failures=3)
    store = MemoryStore()
    with pytest.raises(RepeatedFailure, match="failed 3 times") as err:
        await agent.run("go", store=store)
    assert "failed 2 times" in tool_results(model, 2)[0].content  # the model was told
    record = await store.get_run(err.value.run_id or "")
    assert record.status == "failed"
    assert record.error is not None and record.error["type"] == "RepeatedFailure"
    assert len(model.requests) == 3


async def test_different_arguments_do_not_count_as_repeats() -> None:
    @tool
    def flaky(x: int) -> str:
        raise RuntimeError("no")

    model = ScriptedModel([call("flaky", {"x": i}) for i in range(5)] + ["gave up"])
    result = await Agent("vary", model=model, tools=[flaky]).run("go", store=MemoryStore())
    assert result.output == "gave up"


class Weather(pydantic.BaseModel):
    city: str
    celsius: float


async def test_typed_output_validation_failure_is_sent_back() -> None:
    model = ScriptedModel([
        call("final_result", {"city": "Oslo"}),
        call("final_result", {"city": "Oslo", "celsius": 4.5}),
    ])
    agent = Agent("wx", model=model, output_type=Weather)
    result = await agent.run("weather?", store=MemoryStore())
    assert result.output == Weather(city="Oslo", celsius=4.5)
    feedback = tool_results(model, 1)[0]
    assert feedback.is_error and "celsius" in feedback.content


async def test_typed_output_from_plain_json_text_and_scalar_outputs() -> None:
    model = ScriptedModel(['```json\n{"city": "Rome", "celsius": 20}\n```'])
    result = await Agent("wx", model=model, output_type=Weather).run("?", store=MemoryStore())
    assert result.output.celsius == 20

    ints = ScriptedModel([call("final_result", {"result": 42})])
    assert (await Agent("n", model=ints, output_type=int).run("?", store=MemoryStore())
            ).output == 42


async def test_typed_output_gives_up_after_max_retries() -> None:
    model = ScriptedModel(["not json"] * 5)
    agent = Agent("wx", model=model, output_type=Weather, max_output_retries=2)
    with pytest.raises(OutputValidationError, match="failed validation 3 times"):
        await agent.run("?", store=MemoryStore())


async def test_budget_stops_a_runaway_loop_before_the_call() -> None:
    calls = 0

    @tool
    def ping() -> str:
        nonlocal calls
        calls += 1
        return "pong"

    model = ScriptedModel([call("ping")] * 100)
    agent = Agent("runaway", model=model, tools=[ping], budget=Budget(max_steps=7))
    with pytest.raises(BudgetExceeded) as err:
        await agent.run("go", store=MemoryStore())
    assert err.value.limit == "steps"
    assert calls + len(model.requests) == 7
    assert "max_steps" in str(err.value)


async def test_budget_on_tokens_cost_and_wall_time() -> None:
    from keel.core import ModelResponse, TextPart, ToolCallPart, Usage

    def expensive(messages: list[Message], tools: object, settings: object) -> ModelResponse:
        return ModelResponse(parts=(TextPart(text="t"), ToolCallPart(
            call_id="c", tool_name="add", arguments='{"a":1,"b":1}')),
            usage=Usage(requests=1, input_tokens=600, output_tokens=400, cost_usd=0.6))

    agent = Agent("costly", model=FunctionModel(expensive), tools=[add],
                  budget=Budget(max_cost_usd=1.0))
    with pytest.raises(BudgetExceeded) as err:
        await agent.run("go", store=MemoryStore())
    assert err.value.limit == "cost_usd"
    agent = Agent("tokens", model=FunctionModel(expensive), tools=[add],
                  budget=Budget(max_tokens=2500))
    with pytest.raises(BudgetExceeded) as err:
        await agent.run("go", store=MemoryStore())
    assert err.value.limit == "tokens"

    async def slow(messages: list[Message], tools: object, settings: object) -> ModelResponse:
        await asyncio.sleep(0.03)
        return expensive(messages, tools, settings)

    agent = Agent("slow", model=FunctionModel(slow), tools=[add],
                  budget=Budget(max_wall_seconds=0.05))
    started = time.monotonic()
    with pytest.raises(BudgetExceeded) as err:
        await agent.run("go", store=MemoryStore())
    assert err.value.limit == "wall_seconds"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("bad", [0, -1, -0.5])
def test_nonsense_budget_is_rejected_naming_the_field(bad: float) -> None:
    with pytest.raises(ConfigError, match="max_steps"):
        Budget(max_steps=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_cost_usd"):
        Budget(max_cost_usd=bad)


async def test_scopes_limit_what_the_agent_may_call() -> None:
    refunds: list[str] = []

    @tool(scopes={"billing"}, risk="write")
    def refund(order: str) -> str:
        refunds.append(order)
        return "refunded"

    model = ScriptedModel([call("refund", {"order": "A1"}), "done"])
    result = await Agent("frontdesk", model=model, tools=[refund]).run("r", store=MemoryStore())
    assert result.output == "done"
    assert refunds == []
    err = json.loads(tool_results(model, 1)[0].content)["error"]
    assert err["error_type"] == "permission_denied"
    assert "billing" in err["message"]

    model = ScriptedModel([call("refund", {"order": "A1"}), "done"])
    await Agent("billing", model=model, tools=[refund], scopes={"billing"}).run(
        "r", store=MemoryStore())
    assert refunds == ["A1"]


def test_definition_errors_name_the_fix() -> None:
    with pytest.raises(UnknownModel, match="provider prefix"):
        Agent(model="gpt-4o")
    with pytest.raises(UnknownModel, match="Known providers"):
        Agent(model="mistral:large")
    with pytest.raises(ConfigError, match="name"):
        Agent("a/b", model=ScriptedModel([]))
    with pytest.raises(ConfigError, match="max_repeated_failures"):
        Agent(model=ScriptedModel([]), max_repeated_failures=0)


async def test_missing_api_key_fails_before_anything_is_written() -> None:
    store = MemoryStore()
    agent = Agent(model="openai:gpt-4o-mini")
    with pytest.raises(MissingCredentials, match="OPENAI_API_KEY"):
        await agent.run("hi", store=store)
    assert await store.list_runs() == []


async def test_bad_input_types_and_huge_input() -> None:
    agent = Agent(model=ScriptedModel(["ok"]))
    with pytest.raises(UserError, match="must be a string"):
        await agent.run(b"bytes", store=MemoryStore())  # type: ignore[arg-type]
    store = MemoryStore()
    result = await agent.run("z" * 1_000_000, store=store)
    assert (await store.get_run(result.run_id)).input == "z" * 1_000_000


async def test_model_error_fails_the_run_and_keeps_the_journal() -> None:
    model = ScriptedModel([call("add", {"a": 1, "b": 1}),
                           ModelError("upstream 500", status=500, retryable=True)])
    store = MemoryStore()
    from keel import Retry, RetryPolicy

    fast = Retry(RetryPolicy(base_delay=0.001, max_delay=0.002))  # retries are on by default
    with pytest.raises(ModelError) as err:
        await Agent("m", model=model, tools=[add], middleware=[fast]).run("go", store=store)
    run_id = err.value.run_id
    assert run_id is not None
    record = await store.get_run(run_id)
    assert record.status == "failed"
    assert record.error == {"type": "ModelError", "message": "upstream 500",
                            "step_key": "m/turn:1/model", "retryable": True}
    journal = await store.read_journal(run_id)
    # turn 0 and its tool call, then the 3 failed attempts of turn 1 before the 4th failed too
    assert [e.key for e in journal[2:]] == [f"m/turn:1/model/attempt:{n}" for n in (1, 2, 3)]
    assert all(e.kind == "attempt" and "upstream 500" in e.data["error"] for e in journal[2:])


def test_run_sync_and_its_refusal_inside_a_loop() -> None:
    agent = Agent(model=ScriptedModel(["hi"]))
    assert agent.run_sync("x", store=MemoryStore()).output == "hi"

    async def inside() -> None:
        with pytest.raises(UserError, match="inside a running event loop"):
            agent.run_sync("x", store=MemoryStore())

    asyncio.run(inside())


async def test_default_store_is_durable_sqlite_from_keel_store(tmp_path: object) -> None:
    import os

    from keel import open_store

    result = await Agent(model=ScriptedModel(["hi"])).run("x")
    store = open_store(os.environ["KEEL_STORE"])
    try:
        assert (await store.get_run(result.run_id)).status == "completed"
    finally:
        await store.close()


async def test_none_is_a_valid_typed_output_not_a_rejection() -> None:
    model = ScriptedModel([call("final_result", {"result": None}), "never asked"])
    agent = Agent("opt", model=model, output_type=int | None)  # type: ignore[arg-type]
    result = await agent.run("?", store=MemoryStore())
    assert result.output is None
    assert len(model.requests) == 1


async def test_rejected_final_answer_is_valid_json_for_the_model() -> None:
    class Quote(pydantic.BaseModel):
        text: str = pydantic.Field(pattern=r'^".*"$')

    model = ScriptedModel([call("final_result", {"text": "bare"}),
                           call("final_result", {"text": '"quoted"'})])
    result = await Agent("q", model=model, output_type=Quote).run("?", store=MemoryStore())
    assert result.output.text == '"quoted"'
    feedback = json.loads(tool_results(model, 1)[0].content)
    assert feedback["error"].startswith("final_result rejected: text:")

"""ScriptedModel and FunctionModel read answers the same way (one normalisation), and a bad
answer is a UserError that says what was given and what is accepted."""

from __future__ import annotations

from typing import Any

import pytest

from keel import Agent, ConfigError, MemoryStore, ModelError, ModelResponse, UserError, tool
from keel.core import Message, ModelSettings, TextPart, ToolSpec, Usage
from keel.guard import undelimit
from keel.testing import FunctionModel, ScriptedModel, call

GOOD: list[Any] = [
    "plain text",
    call("lookup", {"q": "x"}),
    ["a thought", call("lookup", {"q": "a"}), call("lookup", {"q": "b"})],
    ("a tuple turn", call("lookup", '{"q": "raw"}')),
    ModelResponse(parts=(TextPart(text="made by hand"),), model="m", finish_reason="stop",
                  usage=Usage(requests=1)),
]


def _returning(value: Any) -> Any:
    def answer(messages: list[Message], tools: list[ToolSpec],
               settings: ModelSettings) -> Any:
        return value

    return answer


def _async_returning(value: Any) -> Any:
    async def answer(messages: list[Message], tools: list[ToolSpec],
                     settings: ModelSettings) -> Any:
        return value

    return answer


@pytest.mark.parametrize("item", GOOD, ids=["text", "call", "list", "tuple", "response"])
async def test_function_model_accepts_what_scripted_model_accepts(item: Any) -> None:
    scripted = await ScriptedModel([item]).request([])
    from_sync = await FunctionModel(_returning(item), name="test:scripted").request([])
    from_async = await FunctionModel(_async_returning(item), name="test:scripted").request([])
    assert from_sync == scripted
    assert from_async == scripted


async def test_a_returned_or_raised_exception_fails_the_request() -> None:
    down = ModelError("endpoint down", retryable=False)
    with pytest.raises(ModelError, match="endpoint down"):
        await ScriptedModel([down]).request([])
    with pytest.raises(ModelError, match="endpoint down"):
        await FunctionModel(_returning(down)).request([])


@pytest.mark.parametrize(("value", "shown"), [
    (None, "returned NoneType None; an answer must be text (a str), a tool call"),
    ({"tool": "lookup"}, "returned dict {'tool': 'lookup'}; an answer must be"),
    (42, "returned int 42; an answer must be"),
    (["fine", 7], "returned a turn whose part 1 is int 7; the parts of one turn must be"),
    (b"bytes", "returned bytes b'bytes'; an answer must be"),
])
async def test_function_model_refuses_anything_else_at_the_call(value: Any, shown: str) -> None:
    model = FunctionModel(_returning(value), name="test:f")
    with pytest.raises(UserError) as info:
        await model.request([])
    assert "the function _returning.<locals>.answer of FunctionModel 'test:f'" in str(info.value)
    assert shown in str(info.value)


async def test_a_bad_answer_stops_an_agent_run_with_the_user_error() -> None:
    agent = Agent("a", model=FunctionModel(_async_returning({"text": "hi"})))
    with pytest.raises(UserError, match=r"returned dict \{'text': 'hi'\}; an answer must be"):
        await agent.run("hi", store=MemoryStore())


async def test_function_model_drives_tool_calls_in_a_run() -> None:
    @tool
    def lookup(q: str) -> str:
        return f"found {q}"

    def answer(messages: list[Message], tools: list[ToolSpec],
               settings: ModelSettings) -> Any:
        results = messages[-1].tool_results
        if results:
            return f"answer: {undelimit(results[0].content)}"
        return ["let me look", call("lookup", {"q": "tides"})]

    result = await Agent("a", model=FunctionModel(answer), tools=[lookup]).run(
        "?", store=MemoryStore())
    assert result.output == "answer: found tides"


def test_scripted_model_refuses_a_bad_item_when_built() -> None:
    with pytest.raises(UserError, match=r"ScriptedModel script\[1\] is dict"):
        ScriptedModel(["ok", {"tool": "x"}])
    with pytest.raises(UserError, match=r"script\[0\] is a turn whose part 0 is int 1"):
        ScriptedModel([[1]])
    with pytest.raises(ConfigError, match="expected a list of script items"):
        ScriptedModel("one answer")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs a function"):
        FunctionModel("not a function")  # type: ignore[arg-type]


async def test_a_reused_list_id_does_not_confuse_the_turn_count() -> None:
    """A middleware that sends a fresh list each request (history + one message) frees the
    old list, and CPython may give the next one the same id: the scan cache must not take the
    new list for the old one grown (it once did, and the model repeated turn 0 forever)."""
    from keel.core import Message, ToolCallPart

    model = ScriptedModel([call("t", {}), "done"])
    system = Message.system("s")
    first = [system, Message.user("u"), Message.system("style")]
    await model.request(first)
    grown = [system, Message.user("u"),
             Message(role="assistant", parts=(ToolCallPart(call_id="c", tool_name="t",
                                                            arguments="{}"),)),
             Message.system("style")]
    model._turns[id(grown)] = model._turns.pop(id(first))  # as if the id were reused
    response = await model.request(grown)
    assert response.text == "done"

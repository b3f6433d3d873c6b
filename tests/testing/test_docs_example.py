"""Testing an agent without a model endpoint: a fake model, an in-memory store, faults."""

from typing import Any

from keel import Agent, MemoryStore, Retry, RetryPolicy, tool
from keel.core import Message, ModelSettings, ToolSpec
from keel.guard import undelimit
from keel.testing import FaultyModel, FunctionModel, call, faulty_tool


@tool
def order_status(order_id: int) -> str:
    """Where an order is."""
    return f"order {order_id} shipped on Monday"


def support_model(messages: list[Message], tools: list[ToolSpec],
                  settings: ModelSettings) -> Any:
    """A fake model with just enough logic for the tests: look the order up, then answer
    from what the tool said (or apologise if the tool failed)."""
    results = messages[-1].tool_results
    if not results:
        return ["Let me check.", call("order_status", {"order_id": 7})]
    if results[0].is_error:
        return "Sorry, I cannot look your order up right now."
    # keel delimits tool output as untrusted in what the model reads; undelimit() gives the
    # tool's own text back (docs/security.md, "Untrusted content").
    return f"Good news: {undelimit(results[0].content)}."


def no_waiting(waits: list[float]) -> Retry:
    """The default retry, but noting its backoff waits instead of sleeping them."""

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return Retry(RetryPolicy(max_attempts=4), sleep=sleep)


async def test_the_agent_answers_from_the_tool() -> None:
    store = MemoryStore()
    agent = Agent("support", model=FunctionModel(support_model), tools=[order_status])
    result = await agent.run("Where is order 7?", store=store)
    assert result.output == "Good news: order 7 shipped on Monday."
    journal = await store.read_journal(result.run_id)
    assert [e.key for e in journal] == [
        "support/turn:0/model",
        "support/turn:0/tool:order_status#0",
        "support/turn:1/model",
    ]
    assert journal[1].data["value"] == "order 7 shipped on Monday"


async def test_rate_limits_and_server_errors_are_retried() -> None:
    model = FaultyModel(FunctionModel(support_model), seed=9, rate_limit_rate=0.3,
                        server_error_rate=0.2)
    waits: list[float] = []
    agent = Agent("support", model=model, tools=[order_status],
                  middleware=[no_waiting(waits)])
    result = await agent.run("Where is order 7?", store=MemoryStore())
    assert result.output == "Good news: order 7 shipped on Monday."
    assert model.faults.rate_limits == 2 and model.faults.server_errors == 2  # seed 9
    assert len(waits) == model.faults.injected  # one backoff per injected failure


async def test_a_tool_that_is_down_is_retried_then_reported_to_the_model() -> None:
    down = faulty_tool(order_status, seed=1, error_rate=1.0)  # every call: ConnectionError
    store = MemoryStore()
    agent = Agent("support", model=FunctionModel(support_model), tools=[down],
                  middleware=[no_waiting([])])
    result = await agent.run("Where is order 7?", store=store)
    assert result.output == "Sorry, I cannot look your order up right now."
    assert down.faults.errors == 4  # the first try and three retries
    recorded = {e.key: e.data for e in await store.read_journal(result.run_id)}
    failure = recorded["support/turn:0/tool:order_status#0"]["failure"]
    assert failure["error_type"] == "tool_error" and "gave up after 4" in failure["message"]

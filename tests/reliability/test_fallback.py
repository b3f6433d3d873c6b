"""Fallbacks: FallbackModel (next model on a failure another endpoint may not share) and
FallbackChain (agent → simpler agent → template → a person), journaled link by link.

No real waiting: retries use a fake sleep, breakers need no cooldown to pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from keel import (
    Agent,
    Budget,
    BudgetExceeded,
    CircuitOpen,
    ConfigError,
    Escalate,
    MemoryStore,
    ModelError,
    RateLimited,
    resolve_escalation,
    tool,
)
from keel.core import (
    Divergence,
    Message,
    ModelResponse,
    ModelSettings,
    ModelStreamEvent,
    ResponseDone,
    TextDelta,
    ToolSpec,
    UnknownOutcome,
    UserError,
)
from keel.models import Model
from keel.reliability import (
    BreakerPolicy,
    ChainResult,
    CircuitBreaker,
    FallbackChain,
    FallbackModel,
    Retry,
    RetryPolicy,
    falls_back,
    link_failed,
)
from keel.store import TaskFilter
from keel.testing import FaultyModel, FunctionModel, ScriptedModel, call


async def no_sleep(seconds: float) -> None:
    return None


def down(name: str, *, seed: int = 1) -> FaultyModel:
    """A model endpoint failing every request with a 5xx."""
    return FaultyModel(ScriptedModel(["never"], name=name), seed=seed, server_error_rate=1.0)


def answering(name: str, text: str = "ok") -> ScriptedModel:
    return ScriptedModel([text], name=name)


def counting(name: str, exc: BaseException | None, calls: list[str],
             text: str = "ok") -> FunctionModel:
    def fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> str:
        calls.append(name)
        if exc is not None:
            raise exc
        return text

    return FunctionModel(fn, name=name)


def quick(name: str, model: Model | str, **kw: Any) -> Agent[Any]:
    """An agent whose retries do not wait."""
    return Agent(name, model=model, middleware=[Retry(RetryPolicy(max_attempts=2),
                                                      sleep=no_sleep)], **kw)


HI = [Message.user("hi")]


# ================================================================================ FallbackModel

def test_name_is_stable_and_lists_the_links() -> None:
    fm = FallbackModel("openai:gpt-4o-mini", answering("test:b"))
    assert fm.name == "fallback(openai:gpt-4o-mini,test:b)"
    assert fm.link_names == ("openai:gpt-4o-mini", "test:b")


def test_ids_are_resolved_lazily() -> None:
    fm = FallbackModel("openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest")
    assert fm._models is None  # no key needed until the first request


@pytest.mark.parametrize(("args", "kwargs", "field"), [
    (("test:a",), {}, "fallbacks"),
    ((42, "openai:gpt-4o-mini"), {}, "primary"),
    (("openai:gpt-4o-mini", "nope-no-provider"), {}, "fallbacks[0]"),
    (("openai:gpt-4o-mini", "openai:gpt-4o", 3.5), {}, "fallbacks[1]"),
    (("openai:gpt-4o-mini", "openai:gpt-4o"), {"when": "retryable"}, "when"),
    (("openai:gpt-4o-mini", "openai:gpt-4o"), {"middleware": [object()]}, "middleware[0]"),
])
def test_model_config_errors_name_the_field(args: tuple[Any, ...], kwargs: dict[str, Any],
                                            field: str) -> None:
    if args == ("test:a",):
        args = (answering("test:a"),)
    with pytest.raises(ConfigError) as info:
        FallbackModel(*args, **kwargs)
    assert info.value.field == field


async def test_primary_failing_every_time_the_secondary_answers_and_it_is_journaled() -> None:
    store = MemoryStore()
    fm = FallbackModel(down("test:primary"), answering("test:secondary", "from b"))
    result = await quick("a", fm).run("hi", store=store)
    assert result.output == "from b"
    record = await store.get_run(result.run_id)
    assert record.metadata["model"] == "fallback(test:primary,test:secondary)"
    step = next(e for e in await store.read_journal(result.run_id)
                if e.kind == "model" and e.phase == "result")
    assert step.name == "fallback(test:primary,test:secondary)"
    assert step.data["model"] == "test:secondary"
    info = step.data["provider_details"]["fallback"]
    assert info["link"] == 1 and info["model"] == "test:secondary"
    assert [f["model"] for f in info["failed"]] == ["test:primary"]
    assert "ModelError" in info["failed"][0]["error"]
    # the record round-trips
    assert ModelResponse.from_dict(step.data).provider_details == step.data["provider_details"]


async def test_primary_answering_is_link_zero() -> None:
    fm = FallbackModel(answering("test:a", "first"), answering("test:b"))
    response = await fm.request(HI)
    assert response.text == "first"
    assert response.provider_details == {"fallback": {"link": 0, "model": "test:a",
                                                      "failed": []}}


async def test_falls_through_each_link_in_order_and_raises_the_last_with_notes() -> None:
    calls: list[str] = []
    fm = FallbackModel(counting("test:a", ModelError("503", status=503, retryable=True), calls),
                       counting("test:b", RateLimited("no room", limit="rpm"), calls),
                       counting("test:c", ModelError("timed out", retryable=True), calls))
    with pytest.raises(ModelError, match="timed out") as info:
        await fm.request(HI)
    assert calls == ["test:a", "test:b", "test:c"]
    notes = "\n".join(info.value.__notes__)
    assert "test:a failed first" in notes and "test:b failed first" in notes


async def test_a_non_retryable_bad_request_does_not_fall_through() -> None:
    calls: list[str] = []
    bad = ModelError("400 bad request: messages malformed", status=400, retryable=False)
    fm = FallbackModel(counting("test:a", bad, calls), counting("test:b", None, calls))
    with pytest.raises(ModelError, match="400 bad request"):
        await fm.request(HI)
    assert calls == ["test:a"]


async def test_a_bug_in_a_link_does_not_fall_through() -> None:
    calls: list[str] = []
    fm = FallbackModel(counting("test:a", KeyError("oops"), calls),
                       counting("test:b", None, calls))
    with pytest.raises(KeyError):
        await fm.request(HI)
    assert calls == ["test:a"]


def test_default_predicate() -> None:
    assert falls_back(CircuitOpen("open", retryable=True))
    assert falls_back(ModelError("x", status=529, retryable=True))
    assert falls_back(TimeoutError())
    assert not falls_back(ModelError("x", status=401, retryable=False))
    assert not falls_back(Escalate("person"))
    assert not falls_back(ValueError("bug"))


async def test_custom_when() -> None:
    calls: list[str] = []
    auth = ModelError("401 bad key", status=401, retryable=False)
    fm = FallbackModel(counting("test:a", auth, calls), counting("test:b", None, calls),
                       when=lambda e: isinstance(e, ModelError))
    assert (await fm.request(HI)).text == "ok"
    assert calls == ["test:a", "test:b"]


async def test_per_link_retries_give_up_before_falling_back() -> None:
    calls: list[str] = []
    flaky = ModelError("503", status=503, retryable=True)
    fm = FallbackModel(counting("test:a", flaky, calls), counting("test:b", None, calls),
                       middleware=[Retry(RetryPolicy(max_attempts=3), sleep=no_sleep)])
    response = await fm.request(HI)
    assert calls == ["test:a"] * 3 + ["test:b"]
    assert response.provider_details is not None
    assert response.provider_details["fallback"]["link"] == 1


async def test_a_primary_whose_breaker_is_open_is_skipped_fast() -> None:
    calls: list[str] = []
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1, cooldown=3600))
    fm = FallbackModel(counting("test:a", ModelError("500", status=500, retryable=True), calls),
                       counting("test:b", None, calls), middleware=[breaker])
    await fm.request(HI)  # the failure opens test:a's breaker
    assert (await breaker.state("model:test:a")).state == "open"
    calls.clear()
    response = await fm.request(HI)
    assert calls == ["test:b"]  # test:a was not called at all
    failed = response.provider_details["fallback"]["failed"]
    assert failed[0]["model"] == "test:a" and failed[0]["error"].startswith("CircuitOpen")


class _BreaksMidStream(Model):
    name = "test:midstream"

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        raise AssertionError("stream only")

    async def stream(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                     settings: ModelSettings | None = None) -> AsyncIterator[ModelStreamEvent]:
        yield TextDelta(text="half an ans")
        raise ModelError("connection reset", retryable=True)


async def test_streaming_falls_back_only_before_the_first_event() -> None:
    fm = FallbackModel(down("test:a"), answering("test:b", "streamed"))
    events = [e async for e in fm.stream(HI)]
    done = events[-1]
    assert isinstance(done, ResponseDone)
    assert done.response.text == "streamed"
    assert done.response.provider_details is not None
    assert done.response.provider_details["fallback"]["link"] == 1

    fm = FallbackModel(_BreaksMidStream(), answering("test:b"))
    seen: list[ModelStreamEvent] = []

    async def consume() -> None:
        async for event in fm.stream(HI):
            seen.append(event)

    with pytest.raises(ModelError, match="connection reset"):
        await consume()
    assert seen == [TextDelta(text="half an ans")]


async def test_streamed_run_journals_the_answering_link() -> None:
    store = MemoryStore()
    agent = quick("a", FallbackModel(down("test:a"), answering("test:b", "hello")))
    outputs: list[Any] = []
    async for event in agent.stream("hi", store=store):
        outputs.append(event)
    runs = await store.list_runs()
    step = next(e for e in await store.read_journal(runs[0].run_id)
                if e.kind == "model" and e.phase == "result")
    assert step.data["provider_details"]["fallback"]["model"] == "test:b"


# ================================================================================ FallbackChain

def failing_agent(name: str) -> Agent[Any]:
    return quick(name, down(f"test:{name}"))


async def test_chain_primary_fails_the_simpler_agent_answers() -> None:
    store = MemoryStore()
    chain = FallbackChain(failing_agent("primary"), quick("simple", answering("test:s", "s!")))
    result = await chain.run("where is my order?", store=store)
    assert isinstance(result, ChainResult)
    assert (result.link, result.index, result.output) == ("simple", 1, "s!")
    assert len(result.run_ids) == 2 and result.run_id == result.run_ids[1]
    assert [f.link for f in result.failures] == ["primary"]
    assert isinstance(result.failures[0].error, ModelError)
    first, second = [await store.get_run(r) for r in result.run_ids]
    assert (first.status, first.agent, first.input) == ("failed", "primary", "where is my order?")
    assert (second.status, second.agent, second.input) == ("completed", "simple",
                                                           "where is my order?")


async def test_chain_model_level_then_agent_level() -> None:
    """Primary model down → the secondary model answers inside the primary agent's run."""
    store = MemoryStore()
    agent = quick("primary", FallbackModel(down("test:a"), answering("test:b", "b!")))
    result = await FallbackChain(agent, quick("simple", answering("test:s"))).run(
        "hi", store=store)
    assert (result.link, result.output, result.failures) == ("primary", "b!", ())


async def test_chain_both_agents_fail_the_template_answers() -> None:
    store = MemoryStore()
    seen: list[tuple[str, BaseException]] = []

    def template(text: str, error: BaseException) -> str:
        seen.append((text, error))
        return f"We could not answer {text!r} right now."

    chain = FallbackChain(failing_agent("primary"), failing_agent("simple"), template=template)
    result = await chain.run("refund?", store=store)
    assert result.link == "primary-template" and result.index == 2
    assert result.output == "We could not answer 'refund?' right now."
    assert [f.link for f in result.failures] == ["primary", "simple"]
    assert seen[0][0] == "refund?" and isinstance(seen[0][1], ModelError)
    record = await store.get_run(result.run_id)
    assert record.status == "completed" and record.agent == "primary-template"
    step = next(e for e in await store.read_journal(result.run_id) if e.kind == "model")
    assert step.name == "keel:template"
    assert chain.link_names == ("primary", "simple", "primary-template", "primary-human")


async def test_chain_text_template() -> None:
    chain = FallbackChain(failing_agent("primary"), template="Sorry, try again later.",
                          human=False)
    result = await chain.run("hi", store=MemoryStore())
    assert (result.link, result.output) == ("primary-template", "Sorry, try again later.")


async def test_chain_everything_fails_a_person_gets_a_packet_then_answers() -> None:
    store = MemoryStore()
    chain = FallbackChain(failing_agent("primary"), failing_agent("simple"), queue="billing")
    with pytest.raises(Escalate) as info:
        await chain.run("I was charged twice", store=store, chain_id="c1")
    signal = info.value
    assert signal.trigger == "fallback_exhausted"
    assert any("primary (run c1-0) failed" in n for n in signal.__notes__)
    human = await store.get_run("c1-2")
    assert human.status == "suspended" and human.agent == "primary-human"
    tasks = await store.list_tasks(TaskFilter(kind="escalation", run_id="c1-2"))
    assert len(tasks) == 1
    packet = tasks[0].data
    assert packet["trigger"] == "fallback_exhausted" and packet["queue"] == "billing"
    assert packet["request"] == "I was charged twice"
    assert "primary (run c1-0)" in packet["reason"] and "simple (run c1-1)" in packet["reason"]

    # a person answers; running the chain again with the same id picks the answer up
    await resolve_escalation(tasks[0].task_id, store=store, by="ana", action="answer",
                             answer="Refunded the duplicate charge.")
    runs_before = len(await store.list_runs())
    result = await chain.run("I was charged twice", store=store, chain_id="c1")
    assert (result.link, result.output, result.result) == (
        "primary-human", "Refunded the duplicate charge.", None)
    assert result.run_ids == ("c1-0", "c1-1", "c1-2")
    assert [f.run_id for f in result.failures] == ["c1-0", "c1-1"]
    assert len(await store.list_runs()) == runs_before == 3  # nothing ran again


async def test_chain_human_resume_with_a_note_answers_with_the_note() -> None:
    store = MemoryStore()
    chain = FallbackChain(failing_agent("primary"))
    with pytest.raises(Escalate):
        await chain.run("help", store=store, chain_id="c2")
    task = (await store.list_tasks(TaskFilter(kind="escalation")))[0]
    await resolve_escalation(task.task_id, store=store, by="bo", action="resume",
                             note="Call us on 0800 123.")
    result = await chain.run("help", store=store, chain_id="c2")
    assert result.link == "primary-human" and result.output == "Call us on 0800 123."


async def test_chain_rerun_with_chain_id_reuses_a_completed_link() -> None:
    store = MemoryStore()
    calls: list[str] = []
    primary = quick("primary", counting("test:p", None, calls, text="p!"))
    chain = FallbackChain(primary, template="t")
    first = await chain.run("hi", store=store, chain_id="c3")
    again = await chain.run("hi", store=store, chain_id="c3")
    assert (first.output, again.output, again.result) == ("p!", "p!", None)
    assert calls == ["test:p"]


async def test_chain_without_human_raises_the_last_error_with_notes() -> None:
    chain = FallbackChain(failing_agent("primary"), failing_agent("simple"), human=False)
    with pytest.raises(ModelError) as info:
        await chain.run("hi", store=MemoryStore())
    assert any("primary" in n and "failed first" in n for n in info.value.__notes__)


async def test_chain_budget_exceeded_as_configured() -> None:
    @tool
    def noop() -> str:
        """Does nothing."""
        return "done"

    def spender() -> Agent[Any]:
        return Agent("primary", model=ScriptedModel([call("noop"), call("noop"), "x"]),
                     tools=[noop], budget=Budget(max_steps=1))

    strict = FallbackChain(spender(), template="t", budget_falls_through=False)
    with pytest.raises(BudgetExceeded):
        await strict.run("hi", store=MemoryStore())
    lenient = FallbackChain(spender(), template="t")
    result = await lenient.run("hi", store=MemoryStore())
    assert result.link == "primary-template"
    assert isinstance(result.failures[0].error, BudgetExceeded)


def test_chain_stops_on_failures_the_next_link_cannot_fix() -> None:
    assert link_failed(ModelError("x", status=400, retryable=False))
    assert not link_failed(Divergence("d", recorded={}, requested={}))
    assert not link_failed(UnknownOutcome("u"))
    assert not link_failed(ValueError("bug"))
    assert not link_failed(Escalate("person"))


async def test_chain_divergence_is_raised_not_fallen_through() -> None:
    calls: list[str] = []
    diverged = Divergence("journal mismatch", recorded={}, requested={})
    primary = quick("primary", counting("test:p", diverged, calls))
    chain = FallbackChain(primary, quick("simple", counting("test:s", None, calls)))
    with pytest.raises(Divergence):
        await chain.run("hi", store=MemoryStore())
    assert calls == ["test:p"]


@pytest.mark.parametrize(("args", "kwargs", "field"), [
    (("not an agent",), {"template": "t"}, "agent"),
    ((), {"template": 5}, "template"),
    ((), {"template": "  "}, "template"),
    ((), {"human": "yes"}, "human"),
    ((), {"when": 1}, "when"),
    ((), {"budget_falls_through": None}, "budget_falls_through"),
    ((), {"human": False}, "fallbacks"),
    ((), {"queue": ""}, "EscalationPolicy.queue"),
])
def test_chain_config_errors_name_the_field(args: tuple[Any, ...], kwargs: dict[str, Any],
                                            field: str) -> None:
    if not args:
        args = (Agent("primary", model=answering("test:a")),)
    with pytest.raises(ConfigError) as info:
        FallbackChain(*args, **kwargs)
    assert info.value.field == field


def test_chain_links_need_distinct_names() -> None:
    agent = Agent("same", model=answering("test:a"))
    with pytest.raises(ConfigError) as info:
        FallbackChain(agent, agent.clone(model=answering("test:b")))
    assert info.value.field == "fallbacks"
    with pytest.raises(ConfigError) as bad:
        FallbackChain(agent, "simple")  # type: ignore[arg-type]
    assert bad.value.field == "fallbacks[0]"


async def test_chain_rejects_non_text_input() -> None:
    chain = FallbackChain(Agent("primary", model=answering("test:a")), template="t")
    with pytest.raises(UserError, match="must be a string"):
        await chain.run(123, store=MemoryStore())  # type: ignore[arg-type]

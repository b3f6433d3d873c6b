"""History policies: whole turns, system instructions kept, pinned facts kept, small talk first,
budgets respected, clear errors for what cannot fit, and a deterministic selection."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

import keel
from keel import ConfigError, ContextTooLong, MemoryStore, UserError
from keel.context import (
    History,
    Importance,
    SlidingWindow,
    Summarize,
    TokenBudget,
    count_message_tokens,
    is_pinned,
    is_small_talk,
    pin,
    transcript,
)
from keel.core import Message, ModelSettings, TextPart, ToolCallPart, ToolResultPart, ToolSpec
from keel.testing import FunctionModel

MODEL = "test:function"


def exchange(i: int, words: int = 30) -> list[Message]:
    """A user question, an assistant tool call, its result, and the answer."""
    cid = f"c{i}"
    return [
        Message.user(f"question {i} " + "word " * words),
        Message(role="assistant", parts=(ToolCallPart(call_id=cid, tool_name="look",
                                                      arguments=json.dumps({"i": i})),)),
        Message(role="tool", parts=(ToolResultPart(call_id=cid, tool_name="look",
                                                   content=f"result {i} " + "data " * words),)),
        Message.assistant(f"answer {i} " + "word " * words),
    ]


def conversation(n: int, *, system: str = "You are terse.") -> list[Message]:
    out = [Message.system(system)] if system else []
    for i in range(n):
        out += exchange(i)
    return out


def orphans(messages: list[Message]) -> list[str]:
    """Tool calls without results and results without calls."""
    calls = {p.call_id for m in messages for p in m.parts if isinstance(p, ToolCallPart)}
    results = {p.call_id for m in messages for p in m.parts if isinstance(p, ToolResultPart)}
    return sorted(calls ^ results)


def fits(messages: list[Message], window: int, reserve: int) -> bool:
    return count_message_tokens(messages, MODEL) <= window - reserve


# ------------------------------------------------------------------------------- policies


def test_token_budget_fits_keeps_system_and_latest_and_never_orphans() -> None:
    messages = conversation(40)
    history = History(TokenBudget(window=2000, reserve=300))
    out = history.select(messages, model=MODEL)
    assert fits(out, 2000, 300)
    assert out[0] == messages[0]
    assert out[-1] is messages[-1]
    assert orphans(out) == []
    assert len(out) < len(messages)
    assert any("left out" in m.text for m in out)


def test_nothing_changes_when_the_conversation_fits() -> None:
    messages = conversation(2)
    out = History(TokenBudget(window=100_000, reserve=1000)).select(messages, model=MODEL)
    assert out == messages


def test_unknown_window_sends_everything_but_the_sliding_window_still_applies() -> None:
    messages = conversation(10)
    assert History().select(messages, model=MODEL) == messages  # no window known
    out = History(SlidingWindow(4)).select(messages, model=MODEL)
    # the last 4 turns: user, call+result, answer of exchange 9, answer of 8
    assert out[0].role == "system"
    assert orphans(out) == []
    assert [m.text for m in out if m.role == "user"][-1].startswith("question 9")


def test_random_conversations_never_split_a_call_from_its_result() -> None:
    rng = random.Random(7)
    for trial in range(60):
        messages: list[Message] = [Message.system("sys")]
        for i in range(rng.randint(1, 40)):
            kind = rng.random()
            if kind < 0.3:
                messages.append(Message.user("u" * rng.randint(1, 400)))
            elif kind < 0.8:
                calls = tuple(ToolCallPart(call_id=f"t{trial}-{i}-{k}", tool_name="f",
                                           arguments="{}") for k in range(rng.randint(1, 3)))
                messages.append(Message(role="assistant", parts=calls))
                for c in calls:  # parallel results, one message each
                    messages.append(Message(role="tool", parts=(ToolResultPart(
                        call_id=c.call_id, tool_name="f", content="r" * rng.randint(1, 900)),)))
            else:
                messages.append(Message.assistant("a" * rng.randint(1, 300)))
        messages.append(Message.user("now?"))
        window = rng.randint(700, 3000)
        policies = rng.choice([(TokenBudget(window=window, reserve=200),),
                               (Importance(), SlidingWindow(rng.randint(1, 6)),
                                TokenBudget(window=window, reserve=200))])
        out = History(*policies).select(messages, model=MODEL)
        assert orphans(out) == [], trial
        assert out[0].text == "sys"
        assert out[-1].text == "now?"
        assert fits(out, window, 200), trial


def test_pinned_messages_and_the_first_user_message_survive() -> None:
    messages = [Message.system("sys"), Message.user("the task: reconcile invoices"),
                Message.assistant("ok"), Message.user(pin("customer id is C-42"))]
    for i in range(40):
        messages += exchange(i)
    out = History(Importance(), TokenBudget(window=1500, reserve=200)).select(messages,
                                                                               model=MODEL)
    texts = [m.text for m in out]
    assert "the task: reconcile invoices" in texts
    assert pin("customer id is C-42") in texts
    assert fits(out, 1500, 200)
    # without Importance the task goes with the rest
    bare = History(TokenBudget(window=1500, reserve=200)).select(messages, model=MODEL)
    assert "the task: reconcile invoices" not in [m.text for m in bare]


def test_small_talk_goes_first() -> None:
    messages = [Message.system("sys"), Message.user("the task")]
    for i in range(6):
        messages += [Message.user("thanks!"), Message.assistant("You're welcome")]
        messages += exchange(i)
    messages.append(Message.user("final question"))
    full = count_message_tokens(messages, MODEL)
    small = sum(count_message_tokens([m], MODEL) - 3 for m in messages if m.text == "thanks!")
    out = History(Importance(), TokenBudget(window=full - small + 300 + 25, reserve=300)).select(
        messages, model=MODEL)
    assert "thanks!" not in [m.text for m in out]
    assert sum(1 for m in out if m.text.startswith("question")) == 6


def test_pinned_facts_are_sent_after_the_system_instructions() -> None:
    history = History(TokenBudget(window=1200, reserve=200), pinned=["Order 77 is late"])
    out = history.select(conversation(30), model=MODEL)
    assert out[0].text == "You are terse."
    assert "Order 77 is late" in out[1].text
    assert fits(out, 1200, 200)


def test_predicates() -> None:
    assert is_small_talk(Message.user("Thank you so much!"))
    assert not is_small_talk(Message.user("thanks, and refund order 5"))
    assert not is_small_talk(Message.system("ok"))
    assert is_pinned(Message.user(pin("x")))
    assert pin(pin("x")) == pin("x")
    tool_pin = Message(role="tool", parts=(ToolResultPart(
        call_id="1", tool_name="t", content='<untrusted source="tool:t">\n' + pin("fact")),))
    assert not is_pinned(tool_pin)  # untrusted output does not pin itself by default
    assert is_pinned(tool_pin, tool_output=True)
    text = transcript(exchange(1, words=2))
    assert "look returned" in text and "called look" in text


def test_tool_pins_are_honoured_only_when_asked() -> None:
    messages = [Message.system("sys"), Message.user("task")]
    for i in range(30):
        messages += exchange(i)
    messages[8] = Message(role="tool", parts=(ToolResultPart(
        call_id="c1", tool_name="look", content=pin("the vault code is 741")),))
    budget = TokenBudget(window=1200, reserve=200)
    kept = History(Importance(tool_pins=True), budget).select(messages, model=MODEL)
    assert pin("the vault code is 741") in [p.content for m in kept for p in m.tool_results]
    assert orphans(kept) == []
    plain = History(Importance(), budget).select(messages, model=MODEL)
    assert pin("the vault code is 741") not in [p.content for m in plain
                                                for p in m.tool_results]
    with pytest.raises(ConfigError):
        Importance(tool_pins="yes")  # type: ignore[arg-type]


def test_critical_predicate_keeps_turns() -> None:
    messages = conversation(30)
    keep = Importance(critical=lambda m: "question 3 " in m.text)
    out = History(keep, TokenBudget(window=1200, reserve=200)).select(messages, model=MODEL)
    assert any(m.text.startswith("question 3 ") for m in out)


# ----------------------------------------------------------------------------- bad input


def test_configuration_errors_say_the_fix() -> None:
    with pytest.raises(ConfigError, match="smaller than the window"):
        TokenBudget(window=1000, reserve=1000)
    with pytest.raises(ConfigError, match=">= 1"):
        TokenBudget(window=0)
    with pytest.raises(ConfigError, match=">= 1"):
        SlidingWindow(0)
    with pytest.raises(ConfigError):
        SlidingWindow(True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="policy"):
        History("last 5")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fact strings"):
        History(pinned="one fact")
    with pytest.raises(ConfigError):
        History(render="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        History(calibration=1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        History(warn="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Importance(pinned="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Importance(keep_first_user=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="trigger"):
        Summarize(trigger=1.5)
    with pytest.raises(ConfigError, match="must not exceed"):
        Summarize(trigger=0.5, target=0.8)
    with pytest.raises(ConfigError):
        Summarize(keep_recent=0)
    with pytest.raises(ConfigError):
        Summarize(max_tokens=3)
    with pytest.raises(ConfigError):
        Summarize(instructions=" ")
    with pytest.raises(ConfigError):
        Summarize(model=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        pin(3)  # type: ignore[arg-type]


def test_a_reserve_not_smaller_than_the_models_window_fails_at_construction() -> None:
    from keel.models import ModelInfo, register_model_info

    register_model_info(ModelInfo(provider="test", model="tiny-window", context_window=512))
    with pytest.raises(ConfigError, match="reply reserve"):
        keel.Agent("a", model=FunctionModel(lambda m, t, s: "x", name="test:tiny-window"),
                   middleware=[History(TokenBudget(reserve=600))])


def test_instructions_that_cannot_fit_are_a_run_error() -> None:
    messages = [Message.system("rule " * 2000), Message.user("hi there, question")]
    with pytest.raises(ContextTooLong, match="system instructions") as info:
        History(TokenBudget(window=1000, reserve=100)).select(messages, model=MODEL)
    assert isinstance(info.value, keel.RunError)
    with pytest.raises(ContextTooLong, match="reply reserve"):
        History(TokenBudget(window=1000)).select(
            messages, model=MODEL, settings=ModelSettings(max_tokens=1000))
    spec = ToolSpec(name="t", description="d " * 3000, parameters={})
    with pytest.raises(ContextTooLong, match="tool specs"):
        History(TokenBudget(window=1000, reserve=100)).select(
            [Message.user("x")], model=MODEL, tools=[spec])
    with pytest.raises(ContextTooLong, match="pinned facts"):
        History(TokenBudget(window=400, reserve=100), pinned=["fact " * 400]).select(
            [Message.user("x")], model=MODEL)


def test_hostile_input_is_a_user_error() -> None:
    history = History(TokenBudget(window=1000, reserve=100))
    with pytest.raises(UserError):
        history.select("hello", model=MODEL)  # type: ignore[arg-type]
    with pytest.raises(UserError):
        history.select([{"role": "user", "content": "x"}], model=MODEL)  # type: ignore[list-item]
    with pytest.raises(UserError):
        history.select(42, model=MODEL)  # type: ignore[arg-type]
    huge = [Message.system("s"), Message.user("x" * 2_000_000)]
    with pytest.raises(ContextTooLong):  # the latest turn alone is over: never cut silently
        history.select(huge, model=MODEL)
    assert history.select([], model=MODEL) == []


def test_off_sends_everything() -> None:
    assert repr(History.off()) == "History.off()"
    assert "TokenBudget" in repr(History())


# -------------------------------------------------------------------------- in a run


def fresh(*policies: Any, **options: Any) -> History:
    """A History with its own calibration (the process-wide one learns from every test)."""
    from keel.context import TokenCalibration

    options.setdefault("calibration", TokenCalibration())
    return History(*policies, **options)


def _tool_loop(turns: int, *, words: int = 40) -> tuple[FunctionModel, list[list[Message]]]:
    """A model that calls `look` `turns` times, then answers; summary requests answered."""
    requests: list[list[Message]] = []

    def fn(messages: list[Message], tools: Any, settings: Any) -> Any:
        if messages and messages[0].text.startswith("You compress"):
            return "summary: " + str(len(messages[1].text))
        requests.append(messages)
        n = len(requests)
        if n > turns:
            return "done"
        return keel.models.call("look", {"i": n, "pad": "p " * words})

    return FunctionModel(fn), requests


def look(i: int, pad: str) -> str:
    return f"record {i}: " + "data " * 40


async def test_a_run_is_warned_once_and_the_warning_is_journaled() -> None:
    model, requests = _tool_loop(40)
    store = MemoryStore()
    agent = keel.Agent("a", model=model, tools=[keel.tool(look, risk="read")],
                       middleware=[fresh(TokenBudget(window=3000, reserve=300))])
    result = await agent.run("start", store=store)
    assert result.output == "done"
    assert result.context_warning is not None and "new conversation" in result.context_warning
    assert all(count_message_tokens(r, MODEL) <= 2700 for r in requests)
    assert all(orphans(r) == [] for r in requests)
    entries = await store.read_journal(result.run_id)
    warnings = [e for e in entries if e.kind == "context"]
    assert len(warnings) == 1 and warnings[0].name == "warning"


async def test_a_short_run_has_no_warning() -> None:
    model, _ = _tool_loop(2)
    agent = keel.Agent("a", model=model, tools=[keel.tool(look, risk="read")],
                       middleware=[fresh(TokenBudget(window=30_000, reserve=300))])
    result = await agent.run("start", store=MemoryStore())
    assert result.context_warning is None


async def test_summaries_are_journaled_and_resume_reuses_them() -> None:
    model, requests = _tool_loop(60)
    store = MemoryStore()
    history = fresh(Importance(), Summarize(keep_recent=3),
                      TokenBudget(window=3000, reserve=300))
    agent = keel.Agent("a", model=model, tools=[keel.tool(look, risk="read")],
                       middleware=[history])
    result = await agent.run(pin("the account is A-1"), store=store)
    assert result.context_warning is not None and "summarised" in result.context_warning
    entries = await store.read_journal(result.run_id)
    summaries = [e for e in entries if e.kind == "summary"]
    assert summaries and all("/summary:" in e.key for e in summaries)
    assert all(e.key.startswith("a/turn:") for e in summaries)
    last = requests[-1]
    assert any(m.text.startswith("[Summary of the earlier") for m in last)
    assert pin("the account is A-1") in [m.text for m in last]
    assert all(count_message_tokens(r, MODEL) <= 2700 for r in requests)
    # a replay reads everything back: same output, no model asked
    report = await keel.replay_run(agent, result.run_id, store=store)
    assert report.identical, report


async def test_a_failing_summariser_degrades_to_dropping() -> None:
    requests: list[int] = []

    def fn(messages: list[Message], tools: Any, settings: Any) -> Any:
        if messages and messages[0].text.startswith("You compress"):
            raise RuntimeError("summariser down")
        requests.append(count_message_tokens(messages, MODEL))
        return "done" if len(requests) > 30 else keel.models.call("look", {"i": 1, "pad": "x"})

    agent = keel.Agent("a", model=FunctionModel(fn), tools=[keel.tool(look, risk="read")],
                       middleware=[fresh(Summarize(), TokenBudget(window=3000, reserve=300))])
    result = await agent.run("go", store=MemoryStore())
    assert result.output == "done"
    assert result.context_warning is not None and "left out" in result.context_warning
    assert max(requests) <= 2700


async def test_fit_summarises_outside_a_run() -> None:
    calls: list[str] = []

    def fn(messages: list[Message], tools: Any, settings: Any) -> Any:
        calls.append(messages[0].text[:12])
        return "the gist"

    history = History(Summarize(FunctionModel(fn), keep_recent=2),
                      TokenBudget(window=2000, reserve=200))
    out = await history.fit(conversation(30), model=MODEL)
    assert calls == ["You compress"]
    assert out[0].text == "You are terse."
    assert any(m.text.endswith("the gist") for m in out)
    assert orphans(out) == [] and fits(out, 2000, 200)
    with pytest.raises(UserError):
        await history.fit("nope", model=MODEL)  # type: ignore[arg-type]


async def test_calibration_is_fed_and_fixed_for_the_run() -> None:
    from keel.context import TokenCalibration

    calibration = TokenCalibration()
    model, _ = _tool_loop(3)
    agent = keel.Agent("a", model=model, tools=[keel.tool(look, risk="read")],
                       middleware=[fresh(TokenBudget(window=30_000, reserve=300),
                                           calibration=calibration)])
    store = MemoryStore()
    first = await agent.run("go", store=store)
    state = calibration.state(model)
    # the first response of the run, counted exactly; later requests far from the window
    # are only bounded (no tokenizing), so they teach nothing
    assert state is not None and state.observations == 1
    assert (await store.get_run(first.run_id)).metadata.get("keel.context.ratio") is None
    model2, _ = _tool_loop(1)
    model2.name = model.name
    agent2 = keel.Agent("b", model=model2, tools=[keel.tool(look, risk="read")],
                        middleware=[fresh(TokenBudget(window=30_000, reserve=300),
                                            calibration=calibration)])
    second = await agent2.run("go", store=store)
    ratio = (await store.get_run(second.run_id)).metadata.get("keel.context.ratio")
    assert ratio == pytest.approx(calibration.ratio(model), rel=0.5)


def test_text_parts_of_unusual_messages_are_counted() -> None:
    multi = Message(role="user", parts=(TextPart(text="a"), TextPart(text="b")))
    out = History(TokenBudget(window=1000, reserve=100)).select([multi], model=MODEL)
    assert out == [multi]


# ------------------------------------------------------------------------- more edges


async def test_off_and_default_reserve_in_a_run() -> None:
    model, _ = _tool_loop(3)
    agent = keel.Agent("a", model=model, tools=[keel.tool(look, risk="read")],
                       middleware=[History.off()])
    assert (await agent.run("go", store=MemoryStore())).output == "done"
    # no max_tokens and no reserve: an eighth of the window (at least 256)
    messages = conversation(60)
    out = History(TokenBudget(window=4000)).select(messages, model=MODEL)
    assert count_message_tokens(out, MODEL) <= 4000 - 500


async def test_a_retry_that_still_cannot_fit_chains_the_providers_error() -> None:
    def fn(messages: list[Message], tools: Any, settings: Any) -> Any:
        return ContextTooLong("HTTP 400 context_length_exceeded")

    history = fresh(TokenBudget(window=100_000, reserve=1000),
                    pinned=["fact " * 1200])  # they alone pass 3/4 of what was sent

    async def next_(inp: keel.ModelRequestInput) -> keel.ModelResponse:
        return await inp.model.request(inp.messages, inp.tools, inp.settings)

    inp = keel.ModelRequestInput(run_id="r", step_key="a/turn:0/model", agent="a",
                                 model=FunctionModel(fn), messages=conversation(1),
                                 tools=[], settings=ModelSettings())
    with pytest.raises(ContextTooLong) as info:
        await history.wrap_model_request(inp, next_)
    assert isinstance(info.value.__cause__, ContextTooLong)


async def test_conversation_state_is_bounded_and_restarts_on_a_new_history(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.context import _history

    monkeypatch.setattr(_history, "_MAX_CONVERSATIONS", 2)
    history = fresh(TokenBudget(window=2000, reserve=200))
    seen: list[list[Message]] = []

    async def next_(inp: keel.ModelRequestInput) -> keel.ModelResponse:
        seen.append(list(inp.messages))
        return keel.ModelResponse(parts=(TextPart(text="ok"),))

    def request(run: str, messages: list[Message]) -> keel.ModelRequestInput:
        return keel.ModelRequestInput(run_id=run, step_key="a/turn:0/model", agent="a",
                                      model=FunctionModel(lambda m, t, s: "x"),
                                      messages=messages, tools=[], settings=ModelSettings())

    for run in ("r1", "r2", "r3"):
        await history.wrap_model_request(request(run, conversation(40)), next_)
    assert len(history._conversations) == 2
    # the same run and loop with a history that does not continue the last: start over
    other = conversation(40, system="Another agent.")
    await history.wrap_model_request(request("r3", other), next_)
    assert seen[-1][0].text == "Another agent."
    with pytest.raises(UserError):
        await history.wrap_model_request(request("r4", [Message.user("x"), "y"]),  # type: ignore[list-item]
                                         next_)


async def test_fit_with_a_model_object_and_an_empty_summary() -> None:
    def fn(messages: list[Message], tools: Any, settings: Any) -> Any:
        return "   "

    model = FunctionModel(fn)
    history = History(Summarize(keep_recent=2), TokenBudget(window=2000, reserve=200))
    out = await history.fit(conversation(30), model=model)
    assert not any(m.text.startswith("[Summary") for m in out)  # empty: dropped instead
    assert any("left out" in m.text for m in out)
    assert repr(Summarize()).startswith("Summarize(keep_recent=6")
    assert repr(SlidingWindow(3)) == "SlidingWindow(3)"
    assert "keep_first_user" in repr(Importance())


async def test_a_resumed_run_reads_back_summaries_and_failures(tmp_path: Any) -> None:
    from keel.store import open_store

    db = str(tmp_path / "runs.db")
    model, _ = _tool_loop(50)
    calls = {"summary": 0}
    base = model.fn

    def fn(messages: list[Message], tools: Any, settings: Any) -> Any:
        if messages and messages[0].text.startswith("You compress"):
            calls["summary"] += 1
            if calls["summary"] == 2:
                raise RuntimeError("down once")
        out = base(messages, tools, settings)
        if not messages[0].text.startswith("You compress") and len(
                [m for m in messages if m.role == "tool"]) and calls.get("crash") is None \
                and calls["summary"] >= 2:
            calls["crash"] = 1
            raise KeyboardInterrupt  # stops the run mid-way, like a crash
        return out

    model.fn = fn

    def make() -> Any:
        return keel.Agent("a", model=model, tools=[keel.tool(look, risk="read")],
                          durability="always",
                          middleware=[fresh(Summarize(keep_recent=2),
                                            TokenBudget(window=3000, reserve=300))])

    store = open_store(db)
    with pytest.raises(KeyboardInterrupt):
        await make().run("go", store=store, run_id="resumed-run")
    before = calls["summary"]
    result = await make().resume("resumed-run", store=open_store(db))
    assert result.output == "done"
    assert calls["summary"] == before  # the failed summariser is not asked again


async def test_the_runs_ratio_comes_back_from_its_metadata(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from keel.context import TokenCalibration, _history
    from keel.runtime import RunStartInput

    calibration = TokenCalibration()
    calibration.observe("test:function", 100, 150)
    history = History(TokenBudget(window=8000), calibration=calibration)
    history.model = "test:function"
    start = await history.on_run_start(RunStartInput(run_id="r1", agent="a", input="x",
                                                     resumed=False))
    assert start == {"keel.context.ratio": 1.5}
    # resumed elsewhere: the stored ratio, whatever this process learned since
    calibration.observe("test:function", 100, 50)
    assert await history.on_run_start(RunStartInput(
        run_id="r1", agent="a", input="x", resumed=True, metadata=start)) is None
    assert history._ratios["r1"] == 1.5
    # a resumed run that stored none started with 1.0
    await history.on_run_start(RunStartInput(run_id="r2", agent="a", input="x", resumed=True))
    assert history._ratios["r2"] == 1.0
    monkeypatch.setattr(_history, "_MAX_CONVERSATIONS", 2)
    await history.on_run_start(RunStartInput(run_id="r3", agent="a", input="x", resumed=True))
    assert list(history._ratios) == ["r2", "r3"]
    assert await History.off().on_run_start(RunStartInput(
        run_id="r", agent="a", input="x", resumed=False)) is None


def test_an_agent_keeps_room_for_memories_injected_inside_its_history(tmp_path: Any) -> None:
    from keel.context import Memory, SQLiteMemory

    memory = Memory(SQLiteMemory(tmp_path / "memory.db"), budget_tokens=300)
    agent = keel.Agent("a", model=FunctionModel(lambda m, t, s: "x"), middleware=[memory])
    history = next(m for m in agent.stack.middleware if isinstance(m, History))
    assert history.inner_tokens == 300
    assert agent.stack.middleware.index(memory) > agent.stack.middleware.index(history)
    messages = conversation(60)
    plain = History(TokenBudget(window=3000, reserve=200)).select(messages, model=MODEL)
    roomy = History(TokenBudget(window=3000, reserve=200), inner_tokens=300).select(
        messages, model=MODEL)
    assert count_message_tokens(roomy, MODEL) <= 3000 - 200 - 300
    assert count_message_tokens(roomy, MODEL) < count_message_tokens(plain, MODEL)
    with pytest.raises(ConfigError):
        History(inner_tokens=-1)

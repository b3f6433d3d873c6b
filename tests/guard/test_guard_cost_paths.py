"""The cheaper paths of the default guards give the answers of the plain ones.

* taint provenance: ``Conversation`` looks values up in what was said kept joined, or past
  ``scan_limit`` through an index of its words; the reference here reads every text, as
  provenance was first written, and the three agree on random conversations read
  incrementally (first seen, trusted wins, numbers at
  digit boundaries, NUL and non-ASCII text, values that span words);
* the data-policy gate tests its literals in groups; the reference tests each literal;
* the injection pre-check reads plain ASCII through byte tables; the reference uses the
  regexes it used before;
* the guard pipeline skips a tool place where no guard applies (``guard_applies``), and only
  there.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel import Agent, GuardDecision, GuardInput, Guardrail, MemoryStore, tool
from keel.core import Message, ToolCallPart, ToolResultPart
from keel.guard import TaintGuard, _screen
from keel.guard._anchors import tokens_of
from keel.guard._data_policy import (
    _KEYWORD_SHAPE,
    _KEYWORDS,
    DESTINATIONS,
    DataPolicy,
    _Gate,
    _keyword_shape,
)
from keel.guard._provenance import _BASE64_RUN, Conversation, ValueOrigin, _base64_run, _found
from keel.guard._screen import _ascii_tokens, _encoded
from keel.runtime._guarding import GuardPipeline
from keel.testing import ScriptedModel, call

# ------------------------------------------------------------------------------ provenance


def _reference(conversation: Conversation, path: str, value: str) -> ValueOrigin:
    """Provenance as first written: every text read in order."""
    folded = value.casefold()
    if _found(folded, conversation.trusted):
        return ValueOrigin(path, value, "trusted")
    said = conversation.said
    first = next(((src, text) for src, text in said if _found(folded, text)), None)
    if first is None or first[0] is None:
        return ValueOrigin(path, value, "model")
    return ValueOrigin(path, value, "tool", tuple(
        src for src, text in said if src is not None and _found(folded, text)))


_PIECES = ["4411", "123", "1234", "12.5", "0.5", ".", "-", " ", "kb-201", "kb", "201",
           "acme", "ACME", "x@y.io", "pay.example.com", "iban", "DE44 5001", "\x00", "é",
           "Straße", "strasse", "_", "\n", "7", "99", "100", "a1", "1a", "3.", "https://a.b/c"]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 12)))


def _message(rng: random.Random, k: int) -> Message:
    kind = rng.random()
    if kind < 0.1:
        return Message.user(_text(rng))
    if kind < 0.45:
        return Message(role="tool", parts=(ToolResultPart(
            call_id=f"c{k}", tool_name=rng.choice(["lookup", "mail"]), content=_text(rng),
            is_error=rng.random() < 0.1),))
    if kind < 0.7:
        return Message(role="assistant", parts=(ToolCallPart(
            call_id=f"c{k}", tool_name="lookup",
            arguments=json.dumps({"q": _text(rng), "n": rng.randint(0, 5000)})),))
    return Message.assistant(_text(rng))


def _values(rng: random.Random, said: list[str]) -> list[str]:
    out = [_text(rng) or "abc" for _ in range(3)]
    for text in rng.sample(said, min(4, len(said))):
        if len(text) >= 3:
            start = rng.randrange(len(text) - 2)
            out.append(text[start:start + rng.randint(3, 12)])
    return [v for v in out if v]


@pytest.fixture(params=["scan", "index"])
def lookups(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a look-up is answered: a search of everything said while it is short, the
    word index past ``scan_limit`` (0 here: from the first text)."""
    if request.param == "index":
        monkeypatch.setattr(Conversation, "scan_limit", 0)
    return str(request.param)


@pytest.mark.parametrize("seed", range(60))
def test_indexed_lookups_equal_reading_every_text(seed: int, lookups: str) -> None:
    rng = random.Random(seed)
    history = [Message.system("You help. Order 4411."), Message.user(_text(rng))]
    conversation = Conversation(history)
    checked = 0
    for k in range(rng.randint(5, 60)):
        history.append(_message(rng, k))
        if rng.random() < 0.4:
            continue  # several messages between look-ups: read in one go
        assert conversation.follows(history)
        conversation.extend(history)
        for value in _values(rng, [t for _, t in conversation.said]):
            assert conversation.origin("v", value) == _reference(conversation, "v", value)
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("limit", [0, 16_384])
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["tool", "model", "user"]),
                          st.text(st.sampled_from("ab1.2 -é\x00_"), max_size=12)),
                max_size=12),
       st.text(st.sampled_from("ab1.2 -é\x00_"), min_size=1, max_size=6))
def test_indexed_lookups_equal_reading_every_text_on_any_alphabet(
        limit: int, said: list[tuple[str, str]], value: str) -> None:
    history = [Message.system("sys")]
    for k, (who, text) in enumerate(said):
        history.append(Message.user(text) if who == "user" else Message.assistant(text)
                       if who == "model" else Message(role="tool", parts=(ToolResultPart(
                           call_id=f"c{k}", tool_name="t", content=text),)))
    scan_limit = Conversation.scan_limit
    Conversation.scan_limit = limit  # type: ignore[misc]
    try:
        conversation = Conversation(history)
        assert conversation.origin("v", value) == _reference(conversation, "v", value)
    finally:
        Conversation.scan_limit = scan_limit  # type: ignore[misc]


def test_a_value_first_seen_in_a_tool_output_names_every_output_that_holds_it(
        lookups: str) -> None:
    history = [Message.system("sys"), Message.user("pay my bill")]
    for k in range(300):
        history.append(Message(role="assistant", parts=(ToolCallPart(
            call_id=f"c{k}", tool_name="lookup", arguments=json.dumps({"i": k})),)))
        history.append(Message(role="tool", parts=(ToolResultPart(
            call_id=f"c{k}", tool_name="lookup",
            content="iban DE44500105175407324931" if k in (40, 250) else f"row {k}x"),)))
    conversation = Conversation(history)
    found = conversation.origin("to", "de44500105175407324931")
    assert found.origin == "tool"
    assert [s.call_id for s in found.sources] == ["c40", "c250"]
    assert conversation.origin("n", "4073").origin == "model"  # inside a longer number
    assert conversation.origin("i", "250").origin == "model"  # the model said it first
    assert [s.call_id for s in conversation.origin("r", "row 17x").sources] == ["c17"]


# ------------------------------------------------------------------------------------ gate


def _reference_gate(gate: _Gate, text: str) -> bool:
    if gate.digits is not None and gate.digits.search(text):
        return True
    low = text.lower()
    if any(lit in low for lit in gate.literals):
        return True
    if gate.keywords and any(k in low for k in _KEYWORDS) and _KEYWORD_SHAPE.search(low):
        return True
    if gate.colons and text.count(":") >= 7:
        return True
    return any(p.search(text) for p in gate.custom)


def _gates() -> list[_Gate]:
    policy = DataPolicy()
    out = []
    for destination in DESTINATIONS:
        compiled = policy.scope()._destinations.get(destination)
        if compiled is not None:
            out.append(compiled.gate)
    out.append(_Gate.of(["api_key"], ()))
    out.append(_Gate.of(["email", "ip_address", "api_key"], ()))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_grouped_gate_literals_answer_as_each_literal(seed: int) -> None:
    rng = random.Random(seed)
    gates = _gates()
    literals = sorted({lit for g in gates for lit in g.literals})
    pieces = [*literals, *(lit[:-1] for lit in literals), "K", "\u212a", "İ", "token: x",
              "keyboard", "a", "s", "_", "-", ":", "/", " ", "é", "0", "1.2.3.4"]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        for gate in gates:
            assert gate(text) == _reference_gate(gate, text), (text, gate.literals)


# -------------------------------------------------------------------------- guard_applies


@tool(risk="read")
async def look(q: str) -> str:
    """Look something up."""
    return f"found {q}"


@tool(risk="write")
async def send(to: str) -> str:
    """Send."""
    return "sent"


def test_a_tool_place_is_skipped_only_where_no_guard_applies() -> None:
    taint = TaintGuard()
    pipeline = GuardPipeline([taint])
    assert not pipeline.applies("tool_args", look)
    assert pipeline.applies("tool_args", send)
    assert not GuardPipeline([TaintGuard.off()]).applies("tool_args", send)
    assert not pipeline.applies("tool_output", look)  # no guard at that place
    every = Guardrail(lambda inp: None, places="tool_args")
    both = GuardPipeline([taint, every])
    assert both.applies("tool_args", look)  # a guard without a test applies everywhere


async def test_a_guard_that_declares_a_tool_out_is_not_asked_and_others_still_are() -> None:
    asked: list[tuple[str, str]] = []

    class OnlySend(Guardrail):
        def guard_applies(self, tool: Any) -> bool:
            return bool(tool.name == "send")

    def refuse(inp: GuardInput) -> GuardDecision:
        asked.append((inp.place, inp.tool.name if inp.tool else ""))
        return GuardDecision.block("no")

    def note(inp: GuardInput) -> None:
        asked.append(("every:" + inp.place, inp.tool.name if inp.tool else ""))

    model = ScriptedModel([call("look", {"q": "a"}), call("send", {"to": "b"}), "done"])
    agent = Agent("a", model=model, tools=[look, send], default_middleware=False,
                  middleware=[OnlySend(refuse, places="tool_args"),
                              Guardrail(note, places="tool_output")])
    result = await agent.run("go", store=MemoryStore())
    assert result.output == "done"
    assert ("tool_args", "look") not in asked
    assert ("tool_args", "send") in asked  # and it blocked the call
    assert ("every:tool_output", "look") in asked
    # the blocked call never ran, so it has no output to check
    assert ("every:tool_output", "send") not in asked


# ------------------------------------------------------------------------------ pre-check

_OLD_RUN = re.compile(r"(?<![a-z0-9+/_-])[a-z0-9+/_-]{24}")
_ASCII = st.text(st.characters(max_codepoint=127), max_size=200) | st.text(
    st.sampled_from("aZ09+/_- .,:<%\\x\n\t\x01"), max_size=80)


@settings(max_examples=500, deadline=None)
@given(_ASCII)
def test_the_precheck_reads_plain_ascii_by_byte_table_as_by_regex(text: str) -> None:
    low = text.lower()
    raw = low.encode("ascii")
    assert _ascii_tokens(low, raw) == tokens_of(low)
    old = (not low.isprintable() and _screen._CONTROL.search(low) is not None) or (
        ("%" in low or "\\x" in low) and _screen._ESCAPE.search(low) is not None) or (
        _OLD_RUN.search(low) is not None)
    assert _encoded(low, raw) == old


def test_a_base64_run_of_24_is_encoded_and_of_23_is_not() -> None:
    for n, expected in ((23, False), (24, True)):
        low = "see " + "a" * (n - 1) + "/ end"
        assert _encoded(low, low.encode("ascii")) is expected


_KEYWORD_TEXT = st.lists(st.sampled_from(
    ["pass", "pwd", "secret", "token", "key", "credential", "word", "_id", "-", " ", "=", ":",
     "\"", "'", " is ", " was ", "board", "\n", "\u00e9"]), max_size=10).map("".join)


@settings(max_examples=500, deadline=None)
@given(_KEYWORD_TEXT)
def test_the_keyword_shape_is_tried_where_keywords_start_as_a_search_finds_it(
        text: str) -> None:
    assert _keyword_shape(text) == (_KEYWORD_SHAPE.search(text) is not None)


@pytest.mark.parametrize("text", [
    "order 4411, keyboard, in transit", "password: hunter2", "token = abc123def456",
    "mail jane@example.com", "card 4111 1111 1111 1111", "caf\u00e9 \\u0041KIA", "AKIA" + "A" * 16,
    "ssn 123-45-6789", "plain words only"])
def test_a_text_the_gate_calls_untouched_is_what_scrub_returns(text: str) -> None:
    scope = DataPolicy().scope()
    for destination in DESTINATIONS:
        if scope.untouched(text, destination):
            assert scope.scrub(text, destination) == text
    assert not scope.untouched("password: hunter2", "journal")


@settings(max_examples=500, deadline=None)
@given(_ASCII | st.text(st.sampled_from("aZ09+/_-é .\u00ff"), max_size=60))
def test_a_tool_outputs_encoded_run_is_found_by_byte_table_as_by_regex(text: str) -> None:
    assert _base64_run(text) == (_BASE64_RUN.search(text) is not None)


_MARKED = st.lists(st.sampled_from([*"abc <@![_:,0", "tool_call", "ignore", "rules", "<|",
                                    "[inst]", "ai", "now you"]), max_size=12).map("".join)


@settings(max_examples=500, deadline=None)
@given(_MARKED | _ASCII)
def test_the_precheck_clears_without_marks_only_what_it_clears_with_them(text: str) -> None:
    low = text.lower()
    tokens = tokens_of(low)
    no_anchor = tokens.isdisjoint(_screen._ANCHOR_WORDS)
    words = set(re.findall("[a-z]+", low))
    assert no_anchor == (words.isdisjoint(_screen._ANCHOR_WORDS)
                         and not _screen._anchor_mark(low))


async def test_a_guard_whose_applicability_test_fails_is_still_asked() -> None:
    class Broken(Guardrail):
        def guard_applies(self, tool: Any) -> bool:
            raise RuntimeError("cannot tell")

    model = ScriptedModel([call("look", {"q": "a"}), "done"])
    agent = Agent("a", model=model, tools=[look], default_middleware=False,
                  middleware=[Broken(lambda inp: GuardDecision.block("no"),
                                     places="tool_output")])
    result = await agent.run("go", store=MemoryStore())
    tool_messages = [m for m in result.messages if m.role == "tool"]
    assert "withheld by guard" in tool_messages[0].parts[0].content  # type: ignore[union-attr]

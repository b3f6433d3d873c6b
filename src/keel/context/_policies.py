"""History policies: which turns of a conversation a model request keeps.

A conversation is cut into **turns** that go or stay whole: a system message; a user message;
an assistant message together with the tool results that answer its calls (so a tool call is
never sent without its result, nor a result without its call). Policies are pure functions
of the turns and a :class:`RequestBudget`; they compose in order, each narrowing what the
previous one left:

* :class:`Importance` marks turns: pinned ones (a :func:`pin`-marked message, the user's first
  message, anything its predicate says) are always kept, small talk is dropped first.
* :class:`SlidingWindow` keeps the last ``turns`` turns (pinned ones besides).
* :class:`TokenBudget` drops the least important, oldest turns until the request fits the
  model's context window minus the reply reserve.

System messages and the latest turn (what the model must answer) are never dropped; a budget
they alone exceed is a :class:`~keel.ContextTooLong`. Counts are the tokenizer's raw counts
scaled by a ratio fixed for the run, so a selection is the same when the run resumes
elsewhere. Summarising older turns (:class:`Summarize`) needs a model and lives in
:class:`~keel.context.History`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from keel.core import ConfigError, ContextTooLong, Message, TextPart, ToolResultPart

#: The marker :func:`pin` puts in front of a text; a message starting with it is pinned.
PIN_MARK = "[pinned] "

TurnKind = Literal["system", "user", "assistant", "tool"]
MessagePredicate = Callable[[Message], bool]


def pin(text: str) -> str:
    """``text`` marked as pinned: a message with it is kept by :class:`Importance` however
    old (``Message.user(pin("My account is 42"))``, or a tool returning ``pin(...)``)."""
    if not isinstance(text, str):
        raise ConfigError("pin", f"pins a text, got {type(text).__name__}")
    return text if text.startswith(PIN_MARK) else PIN_MARK + text


#: The untrusted-content delimiter ``keel.guard`` puts around tool output (its first line).
_DELIMITER = re.compile(r'\A<untrusted source="[^"\n]*">\n')


def is_pinned(message: Message, *, tool_output: bool = False) -> bool:
    """Whether ``message`` carries the :func:`pin` marker at the start of a text; with
    ``tool_output``, at the start of a tool's result too (inside the untrusted-content
    delimiters). Tool output is untrusted, so a pin there is honoured only when asked:
    otherwise a page the agent read could pin itself into every later request."""
    for part in message.parts:
        if isinstance(part, TextPart) and part.text.startswith(PIN_MARK):
            return True
        if tool_output and isinstance(part, ToolResultPart):
            head = _DELIMITER.match(part.content)
            if part.content.startswith(PIN_MARK, head.end() if head else 0):
                return True
    return False


def _pinned_with_tools(message: Message) -> bool:
    return is_pinned(message, tool_output=True)


_SMALL_TALK = re.compile(
    r"\s*(hi|hello|hey|thanks|thank you|thx|ok|okay|great|cool|nice|good|bye|goodbye|sure|"
    r"yes|no|yep|nope|got it|sounds good|perfect|awesome|good (morning|afternoon|evening))"
    r"(\s+(so much|a lot|again|there|you|very much))*[\s!.,:)]*", re.IGNORECASE)


def is_small_talk(message: Message) -> bool:
    """A short user or assistant text with nothing to lose: a greeting, thanks, "ok"."""
    if message.role not in ("user", "assistant") or len(message.parts) != 1:
        return False
    part = message.parts[0]
    return (isinstance(part, TextPart) and len(part.text) <= 40
            and _SMALL_TALK.fullmatch(part.text) is not None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """Messages ``[start, end)`` of a conversation that go or stay together."""

    start: int
    end: int
    kind: TurnKind
    #: Raw tokens of its messages (as sent).
    tokens: int
    #: Kept whatever the budget (system messages, pinned and critical turns).
    pinned: bool = False
    #: Lower goes first: 0 small talk, 1 ordinary.
    priority: int = 1
    kept: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestBudget:
    """What a request may spend on its messages: ``limit`` tokens (None: no limit known),
    each raw count scaled by ``ratio`` (the run's calibration, fixed for the run)."""

    limit: int | None
    ratio: float = 1.0

    def cost(self, raw: int) -> int:
        return math.ceil(raw * self.ratio)


class Policy:
    """One history policy. ``mark`` sees each turn once, as it first appears (to set
    ``pinned`` or ``priority``); ``apply`` gets the candidate turns (oldest first) and the
    budget and returns them with ``kept`` updated. A policy works on whole turns, so it
    cannot split a tool call from its result, and must not keep what an earlier policy
    dropped."""

    def mark(self, turn: Turn, messages: Sequence[Message], *, first_user: bool) -> Turn:
        return turn

    def apply(self, turns: list[Turn], budget: RequestBudget) -> list[Turn]:
        return turns


def _messages_of(turn: Turn, messages: Sequence[Message]) -> Sequence[Message]:
    return messages[turn.start:turn.end]


class Importance(Policy):
    """Pinned and critical turns are kept; small talk is dropped first.

    ``pinned(message)`` (default :func:`is_pinned`: a text that starts with :func:`pin`'s
    marker; ``tool_pins=True`` honours the marker at the start of a tool's result too) and
    ``critical(message)`` (default: none) mark turns to keep whatever the budget;
    ``keep_first_user`` keeps the user's first message (the task) too.
    ``small_talk(message)`` (default :func:`is_small_talk`) marks turns a budget drops
    before any other. Facts to keep that are not in the conversation go in
    ``History(pinned=[...])``."""

    def __init__(self, *, pinned: MessagePredicate | None = is_pinned,
                 critical: MessagePredicate | None = None,
                 small_talk: MessagePredicate | None = is_small_talk,
                 keep_first_user: bool = True, tool_pins: bool = False) -> None:
        if not isinstance(tool_pins, bool):
            raise ConfigError("Importance.tool_pins", "must be True or False")
        if tool_pins and pinned is is_pinned:
            pinned = _pinned_with_tools
        for name, fn in (("pinned", pinned), ("critical", critical),
                         ("small_talk", small_talk)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"Importance.{name}", "must be a function of a Message, "
                                  f"or None; got {type(fn).__name__}")
        if not isinstance(keep_first_user, bool):
            raise ConfigError("Importance.keep_first_user", "must be True or False")
        self.pinned = pinned
        self.critical = critical
        self.small_talk = small_talk
        self.keep_first_user = keep_first_user

    def mark(self, turn: Turn, messages: Sequence[Message], *, first_user: bool) -> Turn:
        """``turn`` with its importance marked (``first_user``: it is the first user turn)."""
        if turn.kind == "system" or turn.pinned:
            return turn
        group = _messages_of(turn, messages)
        keep = (first_user and self.keep_first_user) or any(
            (self.pinned is not None and self.pinned(m))
            or (self.critical is not None and self.critical(m)) for m in group)
        if keep:
            return replace(turn, pinned=True)
        if self.small_talk is not None and all(self.small_talk(m) for m in group):
            return replace(turn, priority=0)
        return turn

    def __repr__(self) -> str:
        return f"Importance(keep_first_user={self.keep_first_user})"


class SlidingWindow(Policy):
    """Keep the last ``turns`` turns (besides system messages and pinned turns)."""

    def __init__(self, turns: int) -> None:
        if isinstance(turns, bool) or not isinstance(turns, int) or turns < 1:
            raise ConfigError("SlidingWindow.turns", f"must be a whole number >= 1, got "
                              f"{turns!r}")
        self.turns = turns

    def apply(self, turns: list[Turn], budget: RequestBudget) -> list[Turn]:
        out = list(turns)
        seen = 0
        for i in range(len(out) - 1, -1, -1):
            t = out[i]
            if t.kind == "system" or t.pinned or not t.kept:
                continue
            seen += 1
            if seen > self.turns:
                out[i] = replace(t, kept=False)
        return out

    def __repr__(self) -> str:
        return f"SlidingWindow({self.turns})"


#: The reply reserve of a model whose request settings give no ``max_tokens``: an eighth of
#: the window, at least 256 and at most 4,096 tokens.
def default_reserve(window: int) -> int:
    return max(256, min(4096, window // 8))


class TokenBudget(Policy):
    """Fit the request within the model's context window minus the reply reserve.

    ``window`` (default: the model's, from the provider data) and ``reserve`` (default: the
    request's ``max_tokens`` if set, else :func:`default_reserve`) set the budget that
    :class:`~keel.context.History` computes; this policy drops the least important, oldest
    turns until the rest fits. Pinned turns, system messages and the latest turn stay; if
    they alone do not fit, the request is a :class:`~keel.ContextTooLong`."""

    def __init__(self, *, window: int | None = None, reserve: int | None = None) -> None:
        for name, value in (("window", window), ("reserve", reserve)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"TokenBudget.{name}", f"must be a whole number of tokens "
                                  f">= 1, or None; got {value!r}")
        if window is not None and reserve is not None and reserve >= window:
            raise ConfigError("TokenBudget.reserve", f"the reply reserve ({reserve}) must be "
                              f"smaller than the window ({window}); lower max_tokens or "
                              "choose a model with a larger window")
        self.window = window
        self.reserve = reserve

    def apply(self, turns: list[Turn], budget: RequestBudget) -> list[Turn]:
        if budget.limit is None:
            return turns
        return fit(turns, budget)

    def __repr__(self) -> str:
        return f"TokenBudget(window={self.window}, reserve={self.reserve})"


def fit(turns: list[Turn], budget: RequestBudget, *, extra: int = 0) -> list[Turn]:
    """Drop kept turns, least important and oldest first, until the kept raw tokens (plus
    ``extra``, already spent) fit ``budget``. The last turn and pinned turns stay."""
    limit = budget.limit
    assert limit is not None
    out = list(turns)
    total = extra + sum(t.tokens for t in out if t.kept)
    if budget.cost(total) <= limit:
        return out
    last = len(out) - 1
    order = sorted((i for i, t in enumerate(out)
                    if t.kept and not t.pinned and t.kind != "system" and i != last),
                   key=lambda i: (out[i].priority, i))
    for i in order:
        out[i] = replace(out[i], kept=False)
        total -= out[i].tokens
        if budget.cost(total) <= limit:
            return out
    raise ContextTooLong(
        f"the request needs {budget.cost(total)} tokens even after dropping every turn that "
        f"may go (the system instructions, pinned turns and the latest turn stay), and the "
        f"budget is {limit} (the context window minus the reply reserve and the tool specs); "
        "shorten the instructions or the pinned facts, lower max_tokens, or use a model "
        "with a larger window", limit=limit, tokens=budget.cost(total))

"""The state :class:`~keel.context.History` keeps per agent loop: the conversation as seen
so far (messages, their counts, the turns they form), the summaries adopted, and what one
request sends (:class:`Plan`). Counts are exact or upper bounds (see ``pending``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from keel.context._policies import RequestBudget, Turn
from keel.context._tokenizers import Tokenizer
from keel.context._tokens import bytes_factor, message_bound, message_tokens
from keel.core import Message, ToolSpec


@dataclass(slots=True, kw_only=True)
class AdoptedSummary:
    upto: int  # messages before this index (turns before upto_turn) are summarised
    upto_turn: int
    text: str
    message: Message
    tokens: int


@dataclass(slots=True, kw_only=True)
class ConversationState:
    """One agent loop's conversation as History has seen it (per run and prefix)."""

    tokenizer: Tokenizer
    render: Callable[[Message], Message] | None
    messages: list[Message] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    total: int = 0  # sum of counts
    turns: list[Turn] = field(default_factory=list)
    fixed: list[int] = field(default_factory=list)  # turn indices: system and pinned
    first_user: int | None = None
    summaries: list[AdoptedSummary] = field(default_factory=list)
    summary_attempts: int = 0
    summary_failed: bool = False
    floor: int = 0  # non-fixed turns before it are dropped for good
    warned: bool = False
    tools: Sequence[ToolSpec] | None = None
    tool_tokens: int = 0
    #: ``bytes_factor`` of the tokenizer (None: it cannot be bounded, every count is exact).
    factor: float | None = None
    #: Messages whose count is an upper bound from the texts' sizes (no tokenizing), not
    #: exact. A request that fits by the bounds fits; any other choice is made on exact
    #: counts (:meth:`make_exact` first), so the bounds change no request, only what it
    #: costs to find that a conversation fits: a new message is tokenized only when the
    #: conversation comes near the budget.
    pending: list[int] = field(default_factory=list)
    folded: int = 0  # messages grouped into ``turns`` (see History._fold)
    calibrated: bool = False  # the calibration was fed from this conversation
    #: The last request's budget and what it was computed from.
    budget: tuple[tuple[object, ...], RequestBudget] | None = None

    def __post_init__(self) -> None:
        self.factor = bytes_factor(self.tokenizer)

    @property
    def exact(self) -> bool:
        return not self.pending

    def measure(self, index: int, message: Message) -> int:
        """The count of a new message as kept: an upper bound where one can be had."""
        if self.factor is None:
            return self.exact_count(message)
        self.pending.append(index)
        sent = self.render(message) if self.render is not None else message
        return message_bound(sent, self.factor)

    def exact_count(self, message: Message) -> int:
        sent = self.render(message) if self.render is not None else message
        return message_tokens(sent, self.tokenizer)

    def make_exact(self) -> None:
        """Count the bounded messages exactly (and the turns they are in)."""
        if not self.pending:
            return
        first = self.pending[0]
        for i in self.pending:
            exact = self.exact_count(self.messages[i])
            self.total += exact - self.counts[i]
            self.counts[i] = exact
        self.pending.clear()
        j = len(self.turns) - 1
        while j >= 0 and self.turns[j].end > first:
            t = self.turns[j]
            self.turns[j] = replace(t, tokens=sum(self.counts[t.start:t.end]))
            j -= 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one request sends: the messages, their raw token count (with the tool specs and
    the reply priming) and whether anything was left out or summarised."""

    messages: list[Message]
    raw_tokens: int
    compacted: bool
    summarised: bool = False
    #: Turns sent that a policy could still leave out (not system, pinned or the latest);
    #: -1: not counted yet (a request that went as it came: History._loose counts them).
    droppable: int = 0
    #: The messages are the conversation unchanged (the request can go as it came).
    same: bool = False
    #: ``raw_tokens`` is an exact count (else an upper bound: the request fits by it).
    exact: bool = True

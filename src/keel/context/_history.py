"""``History``: the history policy as middleware on the model request.

Each model request of an agent sends the whole conversation so far; :class:`History` sends
what fits instead. It composes policies (``keel.context._policies``) and, with
:class:`Summarize`, replaces older turns by a summary a model writes, keeping recent turns
verbatim. What it may never do: split a tool call from its result, drop the system
instructions, or send a request it counted over the window.

**Deterministic from the journal.** A summary is a journal step under the request's step
(``<step_key>/summary:N``, through ``ModelRequestInput.steps``), so a resumed run reads it
back instead of asking again, and later requests find it in the journal. Every other choice
is a pure function of the messages, the recorded summaries and raw token counts scaled by a
ratio fixed when the run started (stored in the run's metadata): a run resumed in another
process sends the same requests.

**Graceful degradation.** The first time a run's conversation has to be compacted, the user
is told once (``RunResult.context_warning``, and a ``context`` journal record) and advised to
start a new conversation. A provider's "context too long" refusal (:class:`~keel.ContextTooLong`)
is caught: the request is compacted to three quarters of what was sent and tried once more.

**Cost flat in run length.** Per run and agent it keeps the turns and their counts, extends
them with what is new, and only looks at the turns after the last one it dropped for good.

**Calibration.** After each response it feeds the count it made and the provider's reported
input tokens to :func:`~keel.context.observe_usage` (or ``calibration=``), so the next runs of
a model whose tokenizer is estimated count closer to what the provider bills.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from keel.context._calibration import TokenCalibration, default_calibration
from keel.context._history_state import AdoptedSummary, ConversationState, Plan
from keel.context._policies import (
    Importance,
    Policy,
    RequestBudget,
    TokenBudget,
    Turn,
    TurnKind,
    default_reserve,
    fit,
)
from keel.context._tokens import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    TOOLS_OVERHEAD,
    context_window,
    tokenizer_for,
    tool_spec_tokens,
)
from keel.core import (
    ConfigError,
    ContextTooLong,
    Message,
    ModelResponse,
    ModelSettings,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    ToolSpec,
    Usage,
    UserError,
    hash_messages,
    redact_text,
)
from keel.models import Model, resolve_model
from keel.runtime import (
    CONTEXT_KIND,
    AgentInput,
    Middleware,
    ModelNext,
    ModelRequestInput,
    RunEndInput,
    RunStartInput,
    SubSteps,
)

SUMMARY_KIND = "summary"
#: Run-metadata key of the calibration ratio a run counts with.
RATIO_KEY = "keel.context.ratio"
SUMMARY_HEAD = "[Summary of the earlier conversation, written to fit the context window]\n"
OMITTED_NOTE = ("[keel: earlier turns of this conversation were left out to fit the model's "
                "context window]")
_OMITTED = Message.user(OMITTED_NOTE)
WARNING = ("This conversation has grown past what the model can read at once: older turns "
           "are now {how}. Start a new conversation to keep the full context.")
SUMMARY_INSTRUCTIONS = (
    "You compress the earlier part of a conversation between a user and an AI assistant so "
    "the assistant can continue it. Write a concise summary that keeps every fact, decision, "
    "number, name, identifier, open question and commitment the assistant may need, and the "
    "results of tool calls that matter. No preamble.")
#: What a transcript for the summariser keeps of one message part.
_PART_CHARS = 2000
#: Conversations remembered at once (least recently used forgotten first: a run that ended
#: without ``on_run_end`` cannot pin memory).
_MAX_CONVERSATIONS = 1024


class Summarize(Policy):
    """Summarise older turns by a model, keeping the recent ones verbatim.

    When the turns a request would send reach ``trigger`` of the budget, the oldest of them
    (all but the last ``keep_recent``, fewer if those alone pass ``target``) are folded into
    a rolling summary, a journaled step, so that what remains is within ``target`` of the
    budget. ``model`` writes it (default: the request's own model) with at most
    ``max_tokens``. A summariser that fails leaves the turns to the other policies (it is
    not asked again in that run)."""

    def __init__(self, model: str | Model | None = None, *, keep_recent: int = 6,
                 trigger: float = 0.8, target: float = 0.5, max_tokens: int = 512,
                 instructions: str = SUMMARY_INSTRUCTIONS) -> None:
        if model is not None and not isinstance(model, str | Model):
            raise ConfigError("Summarize.model", f"must be a model id, a Model or None, got "
                              f"{type(model).__name__}")
        if isinstance(keep_recent, bool) or not isinstance(keep_recent, int) or keep_recent < 1:
            raise ConfigError("Summarize.keep_recent", f"must be a whole number >= 1, got "
                              f"{keep_recent!r}")
        for name, value in (("trigger", trigger), ("target", target)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    0 < value <= 1):
                raise ConfigError(f"Summarize.{name}", f"must be a fraction in (0, 1], got "
                                  f"{value!r}")
        if target > trigger:
            raise ConfigError("Summarize.target", f"must not exceed trigger ({trigger}); "
                              f"got {target}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 16:
            raise ConfigError("Summarize.max_tokens", f"must be a whole number >= 16, got "
                              f"{max_tokens!r}")
        if not isinstance(instructions, str) or not instructions.strip():
            raise ConfigError("Summarize.instructions", "must be a non-empty string")
        self.model = model
        self.keep_recent = keep_recent
        self.trigger = float(trigger)
        self.target = float(target)
        self.max_tokens = max_tokens
        self.instructions = instructions
        self._resolved: Model | None = None

    def resolved(self, fallback: Model) -> Model:
        if self.model is None:
            return fallback
        if isinstance(self.model, Model):
            return self.model
        if self._resolved is None:
            self._resolved = resolve_model(self.model)
        return self._resolved

    def __repr__(self) -> str:
        return (f"Summarize(keep_recent={self.keep_recent}, trigger={self.trigger}, "
                f"target={self.target})")


def _kind(message: Message) -> TurnKind:
    return message.role


class History(Middleware):
    """Fit each model request of an agent within its model's context window.

    ``History(*policies)`` applies the policies in order (default: :class:`Importance`
    then :class:`TokenBudget`, whose window and reply reserve default per model: the
    window from the provider data, the reserve from the request's ``max_tokens`` or an
    eighth of the window). Add :class:`~keel.context.SlidingWindow` to cap the turns and
    :class:`Summarize` to summarise instead of dropping. ``pinned`` facts are sent with
    every request (after the system instructions). ``render`` is what a later middleware
    makes of a message before it is sent, so the count is of what is sent (it is inside
    the guards in :func:`keel.defaults`, where it counts their delimiters itself).
    ``warn=False`` leaves out the warning; ``History.off()`` sends everything.
    ``inner_tokens`` keeps room for what middleware inside it adds (``keel.Agent`` sets it
    for a :class:`~keel.context.Memory` in the stack: its ``budget_tokens``)."""

    def __init__(self, *policies: Policy, pinned: Sequence[str] = (),
                 calibration: TokenCalibration | None = None,
                 render: Callable[[Message], Message] | None = None,
                 warn: bool = True, enabled: bool = True, inner_tokens: int = 0) -> None:
        for p in policies:
            if not isinstance(p, Policy):
                raise ConfigError("History.policies", f"each must be a keel.context policy "
                                  f"(SlidingWindow, TokenBudget, Importance, Summarize), got "
                                  f"{type(p).__name__}")
        if isinstance(pinned, str) or not all(isinstance(f, str) for f in pinned):
            raise ConfigError("History.pinned", "must be a list of fact strings")
        if calibration is not None and not isinstance(calibration, TokenCalibration):
            raise ConfigError("History.calibration", "must be a TokenCalibration or None")
        if render is not None and not callable(render):
            raise ConfigError("History.render", "must be a function of a Message, or None")
        if not isinstance(warn, bool) or not isinstance(enabled, bool):
            raise ConfigError("History", "warn and enabled must be True or False")
        if isinstance(inner_tokens, bool) or not isinstance(inner_tokens, int) or (
                inner_tokens < 0):
            raise ConfigError("History.inner_tokens", f"must be a whole number of tokens >= 0, "
                              f"got {inner_tokens!r}")
        #: Tokens that middleware inside this one adds to each request (memories injected by
        #: ``keel.context.Memory``), kept free in the budget; ``keel.Agent`` sets it from a
        #: ``Memory`` in its stack.
        self.inner_tokens = inner_tokens
        self.policies: tuple[Policy, ...] = policies or (Importance(), TokenBudget())
        budgets = [p for p in self.policies if isinstance(p, TokenBudget)]
        self.budget_policy = budgets[-1] if budgets else None
        summarizers = [p for p in self.policies if isinstance(p, Summarize)]
        self.summarize = summarizers[-1] if summarizers else None
        #: No policy here leaves turns out without a budget (the common case of a model
        #: whose window is unknown): such a request is sent as it is, uncounted but for
        #: the new messages.
        self._passive = not pinned and all(isinstance(p, Importance | TokenBudget | Summarize)
                                           for p in self.policies)
        self.pinned = tuple(f.strip() for f in pinned if f.strip())
        self.pinned_message = (Message.system("Facts to keep in mind:\n" + "\n".join(
            f"- {f}" for f in self.pinned)) if self.pinned else None)
        self.calibration = calibration
        self.render = render
        self.warn = warn
        self.enabled = enabled
        self.model: str | Model | None = None
        self._conversations: OrderedDict[tuple[str, str], ConversationState] = OrderedDict()
        self._ratios: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def off(cls) -> History:
        """A History that sends every message (the conversation as it is)."""
        return cls(enabled=False)

    def __repr__(self) -> str:
        if not self.enabled:
            return "History.off()"
        return f"History({', '.join(map(repr, self.policies))})"

    # ---------------------------------------------------------------------- middleware

    def on_agent(self, inp: AgentInput) -> None:
        if self.model is None:
            self.model = inp.model
        tb = self.budget_policy
        if tb is None or tb.reserve is None or inp.model is None:
            return
        window = tb.window or context_window(inp.model)
        if window is not None and tb.reserve >= window:
            raise ConfigError("TokenBudget.reserve", f"the reply reserve ({tb.reserve}) is not "
                              f"smaller than the context window of {inp.agent}'s model "
                              f"({window}); lower it or choose a model with a larger window")

    async def on_run_start(self, inp: RunStartInput) -> Mapping[str, Any] | None:
        if not self.enabled:
            return None
        while len(self._ratios) >= _MAX_CONVERSATIONS:  # runs that never ended
            self._ratios.pop(next(iter(self._ratios)))
        stored = inp.metadata.get(RATIO_KEY)
        if isinstance(stored, int | float) and not isinstance(stored, bool) and stored > 0:
            self._ratios[inp.run_id] = float(stored)
            return None
        ratio = 1.0  # also for a resumed run that stored none: it started with 1.0
        tb = self.budget_policy
        windowed = tb is not None and tb.window is not None
        if not inp.resumed and self.model is not None and (
                windowed or context_window(self.model) is not None):
            # Only a budget needs it (a model without a known window has none).
            ratio = (self.calibration or default_calibration()).ratio(self.model)
        self._ratios[inp.run_id] = ratio
        return {RATIO_KEY: ratio} if ratio != 1.0 else None

    async def on_run_end(self, inp: RunEndInput) -> None:
        self._ratios.pop(inp.run_id, None)
        with self._lock:
            for key in [k for k in self._conversations if k[0] == inp.run_id]:
                del self._conversations[key]

    async def wrap_model_request(self, inp: ModelRequestInput, next: ModelNext) -> ModelResponse:
        if not self.enabled:
            return await next(inp)
        conv = self._conversation(inp)
        ratio = self._ratios.get(inp.run_id, 1.0)
        budget = self._budget(conv, inp.model, inp.tools, inp.settings, ratio)
        plan = await self._plan(conv, inp, budget, moving=True)
        if plan.compacted and self.warn and not conv.warned:
            await self._warn(conv, inp.steps, plan)
        try:
            response = await next(self._with(inp, plan))
        except ContextTooLong as exc:
            if not plan.exact:  # sent as it was, counted by the bounds: count it exactly
                conv.make_exact()
                plan = replace(plan, raw_tokens=REPLY_PRIMING + conv.tool_tokens + conv.total,
                               exact=True)
            if plan.droppable < 0:
                plan = replace(plan, droppable=self._loose(conv))
            if not plan.droppable:
                raise ContextTooLong(
                    f"{exc.message}; nothing more can be left out (the request is the system "
                    "instructions, pinned turns and the latest turn): shorten them, lower "
                    "max_tokens or use a model with a larger window", limit=budget.limit,
                    tokens=budget.cost(plan.raw_tokens), model=inp.model.name) from exc
            # The provider counted more than we did: compact harder and try once more.
            sent = budget.cost(plan.raw_tokens - conv.tool_tokens - REPLY_PRIMING)
            limit = max(1, min(sent, budget.limit or sent) * 3 // 4)
            try:
                plan = await self._plan(conv, inp, replace(budget, limit=limit), moving=False)
            except ContextTooLong as inner:
                raise inner from exc
            if plan.compacted and self.warn and not conv.warned:
                await self._warn(conv, inp.steps, plan)
            response = await next(self._with(inp, plan))
        reported = response.usage.input_tokens
        if reported > 0 and (plan.exact or not conv.calibrated):
            # Calibrate on exact counts: every request counted exactly (near the window,
            # where it matters), and the first of a conversation while the model has had
            # fewer than CALIBRATION_SAMPLES observations (then the count is not worth it).
            conv.calibrated = True
            calibration = self.calibration or default_calibration()
            state = calibration.state(inp.model)
            if plan.exact or state is None or state.observations < CALIBRATION_SAMPLES:
                raw = plan.raw_tokens if plan.exact else REPLY_PRIMING + conv.tool_tokens \
                    + sum(conv.exact_count(m) for m in plan.messages)
                calibration.observe(inp.model, raw, reported)
        return response

    @staticmethod
    def _with(inp: ModelRequestInput, plan: Plan) -> ModelRequestInput:
        if plan.same or (not plan.compacted and len(plan.messages) == len(inp.messages)):
            return inp
        return ModelRequestInput(
            run_id=inp.run_id, step_key=inp.step_key, agent=inp.agent, model=inp.model,
            messages=plan.messages, tools=inp.tools, settings=inp.settings,
            on_retry=inp.on_retry, tenant=inp.tenant, user=inp.user, steps=inp.steps)

    # ----------------------------------------------------------------- outside a request

    def select(self, messages: Sequence[Message], *, model: str | Model | None = None,
               tools: Sequence[ToolSpec] = (), settings: ModelSettings | None = None,
               ratio: float = 1.0) -> list[Message]:
        """The messages a request of ``model`` would send of ``messages``, by the
        non-summarising policies (pure: no model is asked, nothing journaled). For a
        pattern handing a trimmed history to a sub-agent (a judge, a critic)."""
        conv = self._fresh(model, messages)
        budget = self._budget(conv, model, tools, settings or ModelSettings(), ratio)
        return self._select(conv, budget, moving=False).messages

    async def fit(self, messages: Sequence[Message], *, model: str | Model,
                  tools: Sequence[ToolSpec] = (), settings: ModelSettings | None = None,
                  steps: SubSteps | None = None, ratio: float = 1.0) -> list[Message]:
        """:meth:`select`, with :class:`Summarize` too when configured: the summary is a
        journal step when ``steps`` is given (inside a run), else a plain model call."""
        conv = self._fresh(model, messages)
        budget = self._budget(conv, model, tools, settings or ModelSettings(), ratio)
        s = self.summarize
        if isinstance(model, Model):
            resolved = model
        elif s is not None and s.model is not None:  # the request's model is not asked
            resolved = s.resolved(_UNUSED)
        else:
            resolved = resolve_model(model)
        inp = ModelRequestInput(run_id="", step_key="", agent="", model=resolved,
                                messages=list(messages), tools=list(tools),
                                settings=settings or ModelSettings(), steps=steps)
        return (await self._plan(conv, inp, budget, moving=False)).messages

    def _fresh(self, model: str | Model | None, messages: Sequence[Message]) -> ConversationState:
        if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
            raise UserError(f"History takes a sequence of keel Messages, got "
                            f"{type(messages).__name__}")
        bad = next((m for m in messages if not isinstance(m, Message)), None)
        if bad is not None:
            raise UserError(f"History takes keel Messages, got a {type(bad).__name__}")
        conv = ConversationState(tokenizer=tokenizer_for(model), render=self.render)
        self._sync(conv, messages)
        return conv

    # ---------------------------------------------------------------------- the state

    def _conversation(self, inp: ModelRequestInput) -> ConversationState:
        prefix = inp.step_key.rsplit("/turn:", 1)[0]
        key = (inp.run_id, prefix)
        with self._lock:
            conv = self._conversations.get(key)
            if conv is not None:
                self._conversations.move_to_end(key)
        if conv is None:
            conv = ConversationState(tokenizer=tokenizer_for(inp.model), render=self.render)
            self._sync(conv, inp.messages)
            if inp.steps is not None:
                self._load(conv, inp.steps)
            with self._lock:
                self._conversations[key] = conv
                while len(self._conversations) > _MAX_CONVERSATIONS:
                    self._conversations.popitem(last=False)
        else:
            self._sync(conv, inp.messages)
        return conv

    def _load(self, conv: ConversationState, steps: SubSteps) -> None:
        """What earlier requests of this loop journaled: summaries, the warning."""
        for entry in steps.earlier(SUMMARY_KIND):
            conv.summary_attempts += 1
            self._adopt(conv, entry.data)
        conv.warned = (any(e.name == "warning" for e in steps.earlier(CONTEXT_KIND))
                       or steps.conversation_warned())

    def _adopt(self, conv: ConversationState, data: Any) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            conv.summary_failed = True
            return
        upto, upto_turn = data.get("upto"), data.get("upto_turn")
        if not isinstance(upto, int) or not isinstance(upto_turn, int):
            conv.summary_failed = True
            return
        message = Message.user(SUMMARY_HEAD + data["text"])
        conv.summaries.append(AdoptedSummary(upto=upto, upto_turn=upto_turn, text=data["text"],
                                       message=message, tokens=conv.exact_count(message)))

    def _sync(self, conv: ConversationState, messages: Sequence[Message]) -> None:
        """Bring ``conv`` up to ``messages`` (which extend what it saw; else start over)."""
        n = len(conv.messages)
        if n and (len(messages) < n or messages[n - 1] is not conv.messages[-1]):
            fresh = ConversationState(tokenizer=conv.tokenizer, render=conv.render)
            for name in ("messages", "counts", "total", "turns", "fixed", "first_user",
                         "summaries", "floor", "pending", "folded"):
                setattr(conv, name, getattr(fresh, name))
            n = 0
        for i in range(n, len(messages)):
            self._add(conv, i, messages[i])

    def _add(self, conv: ConversationState, i: int, message: Message) -> None:
        if not isinstance(message, Message):
            raise UserError(f"History takes keel Messages, got a {type(message).__name__}")
        tokens = conv.measure(i, message)
        conv.messages.append(message)
        conv.counts.append(tokens)
        conv.total += tokens

    def _fold(self, conv: ConversationState) -> None:
        """Group the messages not yet in turns into turns, marked by the policies. Only a
        request that does not go as it came needs the turns, so this waits until then (the
        marks of a turn depend only on its own messages and the first user turn)."""
        for i in range(conv.folded, len(conv.messages)):
            self._fold_one(conv, i, conv.messages[i], conv.counts[i])
        conv.folded = len(conv.messages)

    def _fold_one(self, conv: ConversationState, i: int, message: Message, tokens: int) -> None:
        turns = conv.turns
        last = turns[-1] if turns else None
        if (message.role == "tool" and last is not None and last.end == i
                and last.kind == "assistant"
                and any(isinstance(p, ToolCallPart) for p in conv.messages[last.start].parts)):
            turn = self._marked(conv, replace(last, end=i + 1, tokens=last.tokens + tokens),
                                len(turns) - 1)
            turns[-1] = turn
            if turn.pinned and (not conv.fixed or conv.fixed[-1] != len(turns) - 1):
                conv.fixed.append(len(turns) - 1)
            return
        kind = _kind(message)
        turn = Turn(start=i, end=i + 1, kind=kind, tokens=tokens, pinned=kind == "system")
        if kind == "user" and conv.first_user is None:
            conv.first_user = len(turns)
        turn = self._marked(conv, turn, len(turns))
        turns.append(turn)
        if turn.pinned:
            conv.fixed.append(len(turns) - 1)

    def _marked(self, conv: ConversationState, turn: Turn, index: int) -> Turn:
        for p in self.policies:
            turn = p.mark(turn, conv.messages, first_user=index == conv.first_user)
        return turn

    # --------------------------------------------------------------------- the budget

    def _budget(self, conv: ConversationState, model: str | Model | None,
                tools: Sequence[ToolSpec], settings: ModelSettings, ratio: float) -> RequestBudget:
        if conv.tools is not tools:
            conv.tools = tools
            conv.tool_tokens = (TOOLS_OVERHEAD + sum(tool_spec_tokens(s, conv.tokenizer)
                                                     for s in tools)) if tools else 0
        key = (model.name if isinstance(model, Model) else model, settings.max_tokens, ratio,
               conv.tool_tokens)
        if conv.budget is not None and conv.budget[0] == key:
            return conv.budget[1]  # the same model, reply reserve and tools as last time
        budget = self._compute_budget(conv, model, settings, ratio)
        conv.budget = (key, budget)
        return budget

    def _compute_budget(self, conv: ConversationState, model: str | Model | None,
                        settings: ModelSettings, ratio: float) -> RequestBudget:
        tb = self.budget_policy or TokenBudget()
        window = tb.window or context_window(model)
        if window is None:
            return RequestBudget(limit=None, ratio=ratio)
        reserve = tb.reserve or settings.max_tokens or default_reserve(window)
        if reserve >= window:
            raise ContextTooLong(
                f"the reply reserve ({reserve} tokens) is not smaller than the context window "
                f"({window}); lower max_tokens or choose a model with a larger window",
                limit=window - reserve)
        limit = (window - reserve - math.ceil(conv.tool_tokens * ratio) - REPLY_PRIMING
                 - (self.inner_tokens + MESSAGE_OVERHEAD if self.inner_tokens else 0))
        if limit <= 0:
            raise ContextTooLong(
                f"the tool specs alone ({conv.tool_tokens} tokens) leave no room in the "
                f"context window ({window}) after the reply reserve ({reserve}); offer fewer "
                "tools or choose a model with a larger window", limit=limit)
        return RequestBudget(limit=limit, ratio=ratio)

    # ------------------------------------------------------------------- the selection

    def _candidates(self, conv: ConversationState) -> list[int]:
        """Turn indices a request may send: fixed ones, and the rest after the floor and
        after the latest summary, in order."""
        start = conv.floor
        if conv.summaries:
            start = max(start, conv.summaries[-1].upto_turn)
        fixed = [i for i in conv.fixed if i < start]
        return [*fixed, *range(start, len(conv.turns))]

    def _spent(self, conv: ConversationState, budget: RequestBudget) -> int:
        """Raw tokens of what History itself adds: pinned facts, the summary or the note."""
        spent = 0
        if self.pinned_message is not None:
            spent += conv.exact_count(self.pinned_message)
        if conv.summaries:
            spent += conv.summaries[-1].tokens
        elif budget.limit is not None:
            spent += conv.exact_count(_OMITTED)
        return spent

    def _as_is(self, conv: ConversationState, budget: RequestBudget) -> Plan | None:
        """The conversation as it is, without a pass over it, when no policy drops by itself
        and there is no budget or all of it fits (nothing was left out before either)."""
        if not self._passive or (budget.limit is not None and (
                conv.floor or conv.summaries or budget.cost(conv.total) > budget.limit)):
            return None
        return Plan(messages=conv.messages, raw_tokens=REPLY_PRIMING + conv.tool_tokens
                    + conv.total, compacted=False, same=True, droppable=-1, exact=conv.exact)

    def _loose(self, conv: ConversationState) -> int:
        """Turns of the whole conversation a policy could leave out."""
        self._fold(conv)
        loose = len(conv.turns) - len(conv.fixed)
        if conv.turns and not conv.turns[-1].pinned:
            loose -= 1  # the latest turn stays
        return loose

    def _select(self, conv: ConversationState, budget: RequestBudget, *, moving: bool) -> Plan:
        plan = self._as_is(conv, budget)
        if plan is None and not conv.exact:
            conv.make_exact()  # it may not fit by the bounds: decide on exact counts
            plan = self._as_is(conv, budget)
        if plan is not None:
            return plan
        self._fold(conv)
        index = self._candidates(conv)
        turns = [conv.turns[i] for i in index]
        spent = self._spent(conv, budget)
        sized = RequestBudget(limit=None if budget.limit is None else budget.limit
                       - budget.cost(spent), ratio=budget.ratio)
        if sized.limit is not None and sized.limit <= 0:
            raise ContextTooLong(f"the pinned facts and the summary alone take "
                                 f"{budget.cost(spent)} tokens of a budget of {budget.limit}; "
                                 "pin fewer facts or choose a model with a larger window",
                                 limit=budget.limit, tokens=budget.cost(spent))
        for p in self.policies:
            turns = p.apply(turns, sized)
        if sized.limit is not None and self.budget_policy is None:
            turns = fit(turns, sized)  # the window holds whatever the policies
        kept = [t for t in turns if t.kept]
        dropped = len(kept) < len(conv.turns)
        if moving:
            first = next((index[j] for j, t in enumerate(turns)
                          if t.kept and not t.pinned), None)
            if first is not None:
                conv.floor = max(conv.floor, first)
        return self._assemble(conv, kept, dropped)

    def _assemble(self, conv: ConversationState, kept: list[Turn], dropped: bool) -> Plan:
        """The request: system messages, the pinned facts, pinned turns that came before,
        the summary (or a note that turns were left out), then the turns kept, in order."""
        out: list[Message] = []
        raw = REPLY_PRIMING + conv.tool_tokens
        summary = conv.summaries[-1] if conv.summaries else None
        facts = self.pinned_message
        bridge = summary.message if summary is not None else (
            _OMITTED if dropped else None)
        for t in kept:
            if facts is not None and t.kind != "system":
                out.append(facts)
                raw += conv.exact_count(facts)
                facts = None
            if bridge is not None and not t.pinned:
                out.append(bridge)
                raw += conv.exact_count(bridge)
                bridge = None
            out.extend(conv.messages[t.start:t.end])
            raw += t.tokens
        for extra in (facts, bridge):
            if extra is not None:
                out.append(extra)
                raw += conv.exact_count(extra)
        last = kept[-1] if kept else None
        return Plan(messages=out, raw_tokens=raw, compacted=dropped,
                    summarised=summary is not None,
                    droppable=sum(1 for t in kept if not t.pinned and t is not last))

    # ----------------------------------------------------------------- summarising

    async def _plan(self, conv: ConversationState, inp: ModelRequestInput, budget: RequestBudget, *,
                    moving: bool) -> Plan:
        s = self.summarize
        if s is not None and budget.limit is not None and not conv.summary_failed:
            await self._maybe_summarise(conv, inp, budget, s)
        return self._select(conv, budget, moving=moving)

    async def _maybe_summarise(self, conv: ConversationState, inp: ModelRequestInput,
                               budget: RequestBudget, s: Summarize) -> None:
        assert budget.limit is not None
        if not conv.summaries and budget.cost(conv.total) <= s.trigger * budget.limit:
            return  # below the trigger without a pass over the turns
        conv.make_exact()
        if not conv.summaries and budget.cost(conv.total) <= s.trigger * budget.limit:
            return
        self._fold(conv)
        index = self._candidates(conv)
        fixed = set(conv.fixed)
        loose = [i for i in index if i not in fixed]
        total = self._spent(conv, budget) + sum(conv.turns[i].tokens for i in index)
        if budget.cost(total) <= s.trigger * budget.limit or len(loose) < 2:
            return
        # Keep the last keep_recent loose turns, fewer while they pass the target.
        room = s.target * budget.limit - budget.cost(
            sum(conv.turns[i].tokens for i in index if i in fixed) + s.max_tokens)
        keep = 0
        recent = 0
        for i in reversed(loose):
            if keep >= s.keep_recent or (keep and budget.cost(recent + conv.turns[i].tokens)
                                         > room):
                break
            keep += 1
            recent += conv.turns[i].tokens
        keep = max(1, keep)
        upto_turn = loose[-keep]
        covered = [i for i in loose if i < upto_turn]
        if not covered:
            return
        await self._summarise(conv, inp, s, covered, upto_turn)

    async def _summarise(self, conv: ConversationState, inp: ModelRequestInput, s: Summarize,
                         covered: list[int], upto_turn: int) -> None:
        upto = conv.turns[upto_turn].start
        previous = conv.summaries[-1].text if conv.summaries else ""
        group = [m for i in covered for m in conv.messages[conv.turns[i].start:
                                                             conv.turns[i].end]]
        prompt = ((f"Summary so far:\n{previous}\n\n" if previous else "")
                  + "Conversation to add:\n" + transcript(group))
        model = s.resolved(inp.model)
        request = [Message.system(s.instructions), Message.user(prompt)]

        async def ask() -> dict[str, Any]:
            try:
                response = await model.request(request, (), ModelSettings(
                    max_tokens=s.max_tokens))
            except Exception as exc:  # degrade: the other policies drop instead
                return {"failed": f"{type(exc).__name__}: {exc}"[:500]}
            return {"upto": upto, "upto_turn": upto_turn, "text": response.text.strip(),
                    "usage": response.usage.to_dict()}

        n = conv.summary_attempts
        conv.summary_attempts += 1
        salt = f"{upto}:{upto_turn}:{len(previous)}"
        if inp.steps is None:
            data = await ask()
        else:
            data = await inp.steps.step(
                f"summary:{n}", ask, kind=SUMMARY_KIND, label=model.name,
                input_hash=hash_messages(group, scrub=redact_text, salt=salt),
                usage_of=_summary_usage)
        if isinstance(data, dict) and not str(data.get("text", "x")).strip():
            data = {"failed": "the summariser returned no text"}
        self._adopt(conv, data)

    async def _warn(self, conv: ConversationState, steps: SubSteps | None, plan: Plan) -> None:
        conv.warned = True
        text = WARNING.format(how="summarised" if plan.summarised else "left out")
        if steps is None:
            return

        async def note() -> dict[str, Any]:
            return {"warning": text, "tokens": plan.raw_tokens}

        await steps.step("context:warning", note, kind=CONTEXT_KIND, label="warning",
                         budgeted=False)


#: Observations of a model after which a request far from the window is no longer counted
#: exactly only to calibrate (near the window every request is, and teaches).
CALIBRATION_SAMPLES = 20


class _Unused(Model):
    name = "unused"

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        raise UserError("History.select() asks no model")  # pragma: no cover


_UNUSED = _Unused()


def _summary_usage(data: dict[str, Any]) -> Usage | None:
    usage = data.get("usage") if isinstance(data, dict) else None
    return Usage.from_dict(usage) if isinstance(usage, dict) else None


def transcript(messages: Sequence[Message]) -> str:
    """Messages as plain lines for a summariser (each part cut at 2,000 characters)."""
    lines: list[str] = []
    for m in messages:
        for p in m.parts:
            if isinstance(p, TextPart):
                lines.append(f"{m.role}: {p.text[:_PART_CHARS]}")
            elif isinstance(p, ToolCallPart):
                lines.append(f"{m.role} called {p.tool_name}({p.arguments[:_PART_CHARS]})")
            elif isinstance(p, ToolResultPart):
                lines.append(f"{p.tool_name} returned: {p.content[:_PART_CHARS]}")
    return "\n".join(lines)

"""Group chat: peers take turns on a shared transcript until a termination condition holds.

Each turn ``N`` of a chat named ``chat`` journals three things under ``chat/turn:N``:

- ``select`` (kind ``select``): who speaks and why (``round_robin``, ``rule``, ``model`` or
  ``round_robin_fallback`` when a model selector named nobody in the chat);
- ``<peer>/...``: the speaker's own agent run (its model turns and tool calls);
- ``stop`` (kind ``check``): whether the chat ends here and which condition ended it.

A model selector and a judge run as agents under the same turn (``chat/turn:N/selector``,
``chat/turn:N/judge``). A resumed run replays finished turns from the journal; replay
re-executes none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Unpack

from pydantic import BaseModel, Field

from keel.context import History
from keel.core import ConfigError, Message
from keel.patterns._context import check_context, judge_context, with_context
from keel.runtime import Agent, Budget, Flow, FlowContext, FlowOptions

#: A share of the chat's budget for each peer turn: a Budget, a fraction of what is left, or
#: None (the peer's own budget, capped by what is left).
Share = Budget | float | None
StopReason = Literal["keyword", "agreement", "judge", "max_turns"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatTurn:
    """One message of the shared transcript."""

    speaker: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatResult:
    """A finished chat: the transcript, who spoke in order, why it stopped and the last word."""

    transcript: list[ChatTurn]
    speakers: list[str]
    stopped_by: StopReason
    reason: str
    final: str


class NextSpeaker(BaseModel):
    """A model selector's answer: the name of the peer who speaks next."""

    speaker: str = Field(description="the name of the peer who should speak next")
    reason: str = ""


class JudgeVerdict(BaseModel):
    """A judge's answer: whether the chat has reached its goal."""

    done: bool = Field(description="true when the conversation has reached its goal")
    reason: str = ""


# ---------------------------------------------------------------------------- selectors


class RoundRobin:
    """Peers speak in the order given, starting with the first."""

    def __repr__(self) -> str:
        return "RoundRobin()"


class RuleSelector:
    """``rule(transcript)`` names the next speaker (None: round robin). The rule runs once
    per turn inside the journaled ``select`` step; it must name a peer of the chat."""

    def __init__(self, rule: Callable[[Sequence[ChatTurn]], str | None]) -> None:
        if not callable(rule):
            raise ConfigError("selector", "RuleSelector needs a function(transcript) -> name")
        self.rule = rule


class ModelSelector:
    """An agent whose structured output (:class:`NextSpeaker`) names the next speaker. A name
    that is not a peer falls back to round robin (journaled as ``round_robin_fallback``)."""

    def __init__(self, agent: Agent[Any]) -> None:
        _check_output(agent, "selector", "speaker", NextSpeaker)
        self.agent = agent


Selector = RoundRobin | RuleSelector | ModelSelector

# ------------------------------------------------------------------ termination conditions


class Keyword:
    """Stop when a message contains ``word`` (case-sensitive substring)."""

    def __init__(self, word: str) -> None:
        if not isinstance(word, str) or not word.strip():
            raise ConfigError("termination", "Keyword needs a non-empty word")
        self.word = word


class Agreement:
    """Stop when the latest messages of the last ``n`` distinct speakers (all peers when
    ``n`` is None) each agree: they contain ``marker`` or, with ``agrees``, satisfy it."""

    def __init__(self, n: int | None = None, *, marker: str = "AGREE",
                 agrees: Callable[[str], bool] | None = None) -> None:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
            raise ConfigError("termination", f"Agreement(n) needs n >= 2 speakers, got {n!r}")
        if agrees is None and (not isinstance(marker, str) or not marker):
            raise ConfigError("termination", "Agreement needs a non-empty marker or agrees=")
        self.n = n
        self.marker = marker
        self.agrees = agrees or (lambda text: marker in text)

    def holds(self, transcript: Sequence[ChatTurn], n_peers: int) -> bool:
        need = self.n or n_peers
        latest: dict[str, str] = {}
        for turn in reversed(transcript):
            if turn.speaker not in latest:
                latest[turn.speaker] = turn.text
            if len(latest) == need:
                return all(self.agrees(text) for text in latest.values())
        return False


class Judge:
    """An agent whose structured output (:class:`JudgeVerdict`) says whether the chat is
    done; it reads the transcript after every turn (``every`` > 1: every n-th turn)."""

    def __init__(self, agent: Agent[Any], *, every: int = 1) -> None:
        _check_output(agent, "termination", "done", JudgeVerdict)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError("termination", f"Judge(every=) must be >= 1, got {every!r}")
        self.agent = agent
        self.every = every


Termination = Keyword | Agreement | Judge


def _check_output(agent: object, part: str, field: str, model: type[BaseModel]) -> None:
    if not isinstance(agent, Agent):
        raise ConfigError(part, f"expected a keel Agent, got {type(agent).__name__}")
    out = agent.output_type
    if not (isinstance(out, type) and issubclass(out, BaseModel) and field in out.model_fields):
        raise ConfigError(part, f"agent {agent.name!r} needs output_type={model.__name__} "
                          f"(or a pydantic model with a {field!r} field)")


# ---------------------------------------------------------------------------- the flow


class GroupChat(Flow[ChatResult]):
    """Peers (agents) take turns on one shared transcript. ``selector`` picks each speaker;
    the chat ends when any of ``until`` holds after a turn, or after ``max_turns`` turns
    (the safety net). Each peer turn runs with ``peer_budget`` (a share of the chat's).
    ``context``: the :class:`~keel.context.History` a model selector and the judges read the
    transcript through (default :func:`~keel.patterns.judge_context`: the task and the last
    turns, within the window; ``History.off()``: the whole transcript). Peers keep their own.
    """

    kind = "group_chat"

    def __init__(self, name: str, peers: Sequence[Agent[Any]], *,
                 selector: Selector | None = None, until: Sequence[Termination] = (),
                 max_turns: int = 12, peer_budget: Share = None,
                 context: History | None = None,
                 **options: Unpack[FlowOptions]) -> None:
        super().__init__(name, **options)
        self.peers = _check_peers(peers)
        checked = check_context(context)
        self.context = judge_context() if checked is None else checked
        self.selector: Selector = RoundRobin() if selector is None else selector
        if not isinstance(self.selector, RoundRobin | RuleSelector | ModelSelector):
            raise ConfigError("selector", f"unknown selector {type(self.selector).__name__}; "
                              "use RoundRobin(), RuleSelector(fn) or ModelSelector(agent)")
        if isinstance(until, Keyword | Agreement | Judge):
            until = [until]
        self.until = list(until)
        for cond in self.until:
            if not isinstance(cond, Keyword | Agreement | Judge):
                raise ConfigError("termination", f"unknown condition {type(cond).__name__}; "
                                  "use Keyword(word), Agreement(n) or Judge(agent)")
            if isinstance(cond, Agreement) and cond.n and cond.n > len(self.peers):
                raise ConfigError("termination", f"Agreement({cond.n}) needs more peers than "
                                  f"the {len(self.peers)} in the chat")
        if isinstance(max_turns, bool) or not isinstance(max_turns, int) or max_turns < 1:
            raise ConfigError("max_turns", f"must be an integer >= 1, got {max_turns!r}")
        self.max_turns = max_turns
        if peer_budget is not None and not isinstance(peer_budget, Budget):
            Budget().scaled(peer_budget)  # a bad fraction fails here, naming the share
        self.peer_budget = peer_budget
        self._names = [p.name for p in self.peers]
        # The selector and judges as they run: reading the transcript through ``context``.
        self._selector_agent = (with_context(self.selector.agent, self.context)
                                if isinstance(self.selector, ModelSelector) else None)
        self._judges = {i: with_context(c.agent, self.context)
                        for i, c in enumerate(self.until) if isinstance(c, Judge)}

    def agents(self) -> Sequence[Agent[Any]]:
        extra = [] if self._selector_agent is None else [self._selector_agent]
        return [*self.peers, *extra, *self._judges.values()]

    async def body(self, ctx: FlowContext, input: str) -> ChatResult:
        transcript: list[ChatTurn] = []
        for n in range(self.max_turns):
            turn = ctx.scope(f"turn:{n}")
            speaker = await self._select(turn, input, transcript)
            peer = self.peers[self._names.index(speaker)]
            result = await turn.run_agent(peer, self._prompt(speaker, n),
                                          history=self._history(input, transcript, speaker),
                                          budget=self.peer_budget)
            transcript.append(ChatTurn(speaker=speaker, text=result.text))
            stop = await self._stop(turn, input, transcript, last_turn=n + 1 == self.max_turns)
            if stop is not None:
                return ChatResult(transcript=transcript,
                                  speakers=[t.speaker for t in transcript],
                                  stopped_by=stop["by"], reason=stop["reason"],
                                  final=transcript[-1].text)
        raise AssertionError("unreachable: the last turn always stops")  # pragma: no cover

    # ------------------------------------------------------------------------ selection

    def _after(self, transcript: Sequence[ChatTurn]) -> str:
        if not transcript:
            return self._names[0]
        return self._names[(self._names.index(transcript[-1].speaker) + 1) % len(self._names)]

    async def _select(self, turn: FlowContext, task: str,
                      transcript: list[ChatTurn]) -> str:
        selector = self.selector
        choice: dict[str, Any]
        if isinstance(selector, ModelSelector):
            assert self._selector_agent is not None
            names = ", ".join(self._names)
            answer = await turn.run_agent(
                self._selector_agent, f"Who should speak next? Answer with one of: {names}.",
                name="selector", history=self._history(task, transcript, None))
            proposed = str(getattr(answer.output, "speaker", "")).strip()
            if proposed in self._names:
                choice = {"speaker": proposed, "by": "model",
                          "reason": str(getattr(answer.output, "reason", ""))}
            else:
                choice = {"speaker": self._after(transcript), "by": "round_robin_fallback",
                          "reason": f"the selector named {proposed!r}, who is not in the chat"}
            return str((await turn.step("select", lambda: choice, kind="select",
                                        input=choice, blocking=False))["speaker"])

        def pick() -> dict[str, Any]:
            if isinstance(selector, RuleSelector):
                named = selector.rule(list(transcript))
                if named is not None:
                    if named not in self._names:
                        raise ConfigError("selector", f"the rule named {named!r}, who is not "
                                          f"a peer ({', '.join(self._names)})")
                    return {"speaker": named, "by": "rule", "reason": ""}
            return {"speaker": self._after(transcript), "by": "round_robin", "reason": ""}

        made = await turn.step("select", pick, kind="select",
                               input={"after": transcript[-1].speaker if transcript else None})
        return str(made["speaker"])

    # ---------------------------------------------------------------------- termination

    async def _stop(self, turn: FlowContext, task: str, transcript: list[ChatTurn], *,
                    last_turn: bool) -> dict[str, Any] | None:
        n = len(transcript)
        verdicts: dict[int, JudgeVerdict] = {}
        for i, cond in enumerate(self.until):
            if isinstance(cond, Judge) and n % cond.every == 0:
                name = "judge" if i == 0 else f"judge{i}"
                out = (await turn.run_agent(
                    self._judges[i], "Has this conversation reached its goal? Answer done=true "
                    "or done=false with a short reason.", name=name,
                    history=self._history(task, transcript, None))).output
                verdicts[i] = JudgeVerdict(done=bool(getattr(out, "done", False)),
                                           reason=str(getattr(out, "reason", "")))

        def check() -> dict[str, Any]:
            last = transcript[-1]
            for i, cond in enumerate(self.until):
                if isinstance(cond, Keyword) and cond.word in last.text:
                    return {"stop": True, "by": "keyword",
                            "reason": f"{last.speaker} said {cond.word!r}"}
                if isinstance(cond, Agreement) and cond.holds(transcript, len(self.peers)):
                    return {"stop": True, "by": "agreement",
                            "reason": f"the last {cond.n or len(self.peers)} speakers agree"}
                if isinstance(cond, Judge) and i in verdicts and verdicts[i].done:
                    return {"stop": True, "by": "judge", "reason": verdicts[i].reason}
            if last_turn:
                return {"stop": True, "by": "max_turns",
                        "reason": f"reached max_turns={self.max_turns}"}
            return {"stop": False, "by": None, "reason": ""}

        decision = await turn.step("stop", check, kind="check",
                                   input={"turn": n, "speaker": transcript[-1].speaker},
                                   blocking=False)
        return decision if decision["stop"] else None

    # ------------------------------------------------------------------------ messages

    def _history(self, task: str, transcript: Sequence[ChatTurn],
                 me: str | None) -> list[Message]:
        """The shared transcript as ``me`` sees it: its own turns as its (assistant)
        messages, everyone else's as user messages labelled ``[speaker]: ...``."""
        roster = ", ".join(self._names)
        messages = [Message.user(f"Group chat between {roster}. Task: {task}")]
        for t in transcript:
            messages.append(Message.assistant(t.text) if t.speaker == me
                            else Message.user(f"[{t.speaker}]: {t.text}"))
        return messages

    def _prompt(self, speaker: str, n: int) -> str:
        return (f"You are {speaker}. It is your turn (turn {n + 1} of at most "
                f"{self.max_turns}). Reply with your next message to the group.")


def _check_peers(peers: Sequence[Agent[Any]]) -> list[Agent[Any]]:
    if isinstance(peers, Agent) or not isinstance(peers, Sequence):
        raise ConfigError("peers", "expected a list of Agents")
    listed = list(peers)
    for peer in listed:
        if not isinstance(peer, Agent):
            raise ConfigError("peers", f"expected Agents, got {type(peer).__name__}")
    if len(listed) < 2:
        raise ConfigError("peers", f"a group chat needs at least 2 peers, got {len(listed)}")
    names = [p.name for p in listed]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError("peers", f"peer names must be unique; repeated: {', '.join(dupes)}")
    reserved = sorted({n for n in names if n in _RESERVED or n.startswith("judge")})
    if reserved:
        raise ConfigError("peers", f"peer names {', '.join(reserved)} are reserved for the "
                          "chat's own steps (select, stop, selector, judge); rename them")
    return listed


_RESERVED = frozenset({"select", "stop", "selector"})

"""Marketplace: a task is announced, agents bid, the best bid wins, a failed award moves on.

A market named ``market`` journals, in order:

- ``market/announce`` (kind ``announce``): the task and the bidders;
- ``market/bid/<bidder>/...``: each bidder's bidding run (concurrent, structured :class:`Bid`);
- ``market/bids`` (kind ``bids``): the valid bids ranked with their scores, and the discarded
  ones with the reason (declined, confidence out of range, below ``min_confidence``...);
- for the i-th award, ``market/award:i/award`` (kind ``award``), the winner's work under
  ``market/award:i/<bidder>/...`` and ``market/award:i/outcome`` (kind ``check``: ok or the
  reason it failed). A failed award goes to the next bid.

A bid or a work run that failed with a run error has a ``.../<bidder>/failed`` record (kind
``failure``, written by the runtime). A resumed run takes the recorded bids, awards and
failures: no bidder bids twice and failed work is not done again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Unpack

from pydantic import BaseModel, Field

from keel.core import BudgetExceeded, ConfigError, RunError, to_jsonable
from keel.runtime import Agent, Budget, Flow, FlowContext, FlowOptions, RunResult

Share = Budget | float | None
_RESERVED = frozenset({"announce", "bids", "award", "outcome", "bid"})


class Bid(BaseModel):
    """A bidder's answer to an announced task (validated by the market, not the schema, so
    that a bad bid is discarded with its reason instead of argued over)."""

    estimate: float = Field(description="model turns plus tool calls you expect to need")
    confidence: float = Field(description="0..1: how sure you are to do the task well")
    plan: str = Field(default="", description="how you would do it, in a sentence or two")
    decline: bool = Field(default=False, description="true if you should not take this task")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacedBid:
    """A valid bid as the market scores it (``estimate`` is in steps)."""

    bidder: str
    estimate: float
    confidence: float
    plan: str
    score: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AwardAttempt:
    """One award: who got the task and whether the work was accepted."""

    bidder: str
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MarketResult:
    """The winner's output, plus every bid, every discarded bid and every award tried."""

    winner: str | None
    output: Any
    text: str
    bids: list[PlacedBid]
    discarded: list[dict[str, str]]
    attempts: list[AwardAttempt]


class MarketplaceFailed(RunError):
    """No bid was valid, or every award failed. ``bidders`` are those the task was awarded to."""

    def __init__(self, message: str, *, bidders: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(message, **kw)
        self.bidders = bidders


Score = Callable[[PlacedBid], float]
Verify = Callable[[Any], bool]


def default_score(bid: PlacedBid, *, max_estimate: float) -> float:
    """``confidence / (1 + estimate / max_estimate)``: confident and cheap wins."""
    return bid.confidence / (1.0 + bid.estimate / max_estimate)


class Marketplace(Flow[MarketResult]):
    """Announce the task to ``bidders`` (agents), gather their :class:`Bid` concurrently,
    award it to the best score (``score(bid)``, or :func:`default_score`; ties go to the
    alphabetically first name) and run the winner on it. A failed execution (a run error,
    or ``verify(output)`` returning False) awards the task to the next bid. When no bid is
    left: :class:`MarketplaceFailed`, or with ``on_failure="escalate"`` a person decides.

    Budgets: each bid runs with ``bid_budget``; the winner with ``work_budget`` (default its
    own budget) capped at ``estimate_slack`` times its estimate in steps (None: uncapped),
    and everything within the market's own budget."""

    kind = "marketplace"

    def __init__(self, name: str, bidders: Sequence[Agent[Any]], *,
                 score: Score | None = None, verify: Verify | None = None,
                 min_confidence: float = 0.0, bid_budget: Share = None,
                 work_budget: Budget | None = None, estimate_slack: float | None = 2.0,
                 on_failure: Literal["raise", "escalate"] = "raise",
                 **options: Unpack[FlowOptions]) -> None:
        super().__init__(name, **options)
        self.bidders = _check_bidders(bidders)
        if score is not None and not callable(score):
            raise ConfigError("score", "expected a function(bid: PlacedBid) -> float")
        if verify is not None and not callable(verify):
            raise ConfigError("verify", "expected a function(output) -> bool")
        if (isinstance(min_confidence, bool) or not isinstance(min_confidence, int | float)
                or not 0 <= min_confidence <= 1):
            raise ConfigError("min_confidence", f"must be in [0, 1], got {min_confidence!r}")
        if estimate_slack is not None and (
                isinstance(estimate_slack, bool) or not isinstance(estimate_slack, int | float)
                or not estimate_slack >= 1):
            raise ConfigError("estimate_slack", f"must be >= 1 or None, got {estimate_slack!r}")
        if work_budget is not None and not isinstance(work_budget, Budget):
            raise ConfigError("work_budget", f"expected a Budget, got {type(work_budget).__name__}")
        if bid_budget is not None and not isinstance(bid_budget, Budget):
            Budget().scaled(bid_budget)  # a bad fraction fails here
        if on_failure not in ("raise", "escalate"):
            raise ConfigError("on_failure", f"must be 'raise' or 'escalate', not {on_failure!r}")
        self.score = score
        self.verify = verify
        self.min_confidence = float(min_confidence)
        self.bid_budget = bid_budget
        self.work_budget = work_budget
        self.estimate_slack = estimate_slack
        self.on_failure = on_failure
        self._by_name = {b.name: b for b in self.bidders}
        self._bidding = {b.name: b.clone(
            tools=[], output_type=Bid,
            instructions=(b.instructions + "\n\n" if b.instructions else "") + _BID_RULES)
            for b in self.bidders}

    def agents(self) -> Sequence[Agent[Any]]:
        return [*self.bidders, *self._bidding.values()]

    async def body(self, ctx: FlowContext, input: str) -> MarketResult:
        names = sorted(self._by_name)
        await ctx.step("announce", lambda: {"task": input, "bidders": names},
                       kind="announce", input=input, blocking=False)
        raw = await ctx.gather(*(self._bid(ctx, name, input) for name in names))
        # The input leaves error texts out (as runs recorded before failures were journaled).
        placed = [{"bidder": e["bidder"], "bid": e.get("bid")} for e in raw]
        book = await ctx.step("bids", lambda: self._rank(raw), kind="bids", input=placed,
                              blocking=False)
        ranked = [PlacedBid(**b) for b in book["ranked"]]
        attempts: list[AwardAttempt] = []
        for i, bid in enumerate(ranked):
            result = await self._award(ctx.scope(f"award:{i}"), i, bid, input, attempts)
            if result is not None:
                return MarketResult(winner=bid.bidder, output=result.output, text=result.text,
                                    bids=ranked, discarded=book["discarded"],
                                    attempts=attempts)
        return await self._no_winner(ctx, ranked, book["discarded"], attempts)

    # --------------------------------------------------------------------------- bidding

    async def _bid(self, ctx: FlowContext, name: str, task: str) -> dict[str, Any]:
        """One bidder's bid as plain data (a run error while bidding discards the bid; the
        runtime journals it, so a resumed or replayed run gets it without bidding again)."""
        try:
            result = await ctx.scope("bid").run_agent(
                self._bidding[name], f"Task for bids: {task}", name=name,
                budget=self.bid_budget)
        except RunError as exc:
            return {"bidder": name, "error": f"{type(exc).__name__}: {exc.message}"}
        bid = result.output
        return {"bidder": name, "bid": to_jsonable(bid)}

    def _rank(self, raw: list[dict[str, Any]]) -> dict[str, Any]:
        valid: list[PlacedBid] = []
        discarded: list[dict[str, str]] = []
        for entry in raw:
            placed, why = self._validate(entry)
            if placed is None:
                discarded.append({"bidder": entry["bidder"], "reason": why,
                                  "error": "yes" if "error" in entry else ""})
            else:
                valid.append(placed)
        top = max((b.estimate for b in valid), default=1.0)
        scored = [PlacedBid(bidder=b.bidder, estimate=b.estimate, confidence=b.confidence,
                            plan=b.plan, score=self._score(b, top)) for b in valid]
        scored.sort(key=lambda b: (-b.score, b.bidder))
        return {"ranked": [_plain(b) for b in scored], "discarded": discarded}

    def _validate(self, entry: dict[str, Any]) -> tuple[PlacedBid | None, str]:
        if "error" in entry:
            return None, f"bidding failed: {entry['error']}"
        bid = entry.get("bid")
        try:
            parsed = Bid.model_validate(bid)
        except ValueError as exc:
            return None, f"malformed bid: {exc}"
        if parsed.decline:
            return None, "declined" + (f": {parsed.plan}" if parsed.plan else "")
        if not (math.isfinite(parsed.confidence) and 0 <= parsed.confidence <= 1):
            return None, f"confidence {parsed.confidence} is outside 0..1"
        if not (math.isfinite(parsed.estimate) and parsed.estimate > 0):
            return None, f"estimate {parsed.estimate} must be a positive number of steps"
        if parsed.confidence < self.min_confidence:
            return None, (f"confidence {parsed.confidence} is below min_confidence "
                          f"{self.min_confidence}")
        return PlacedBid(bidder=entry["bidder"], estimate=parsed.estimate,
                         confidence=parsed.confidence, plan=parsed.plan), ""

    def _score(self, bid: PlacedBid, max_estimate: float) -> float:
        value = (default_score(bid, max_estimate=max_estimate) if self.score is None
                 else self.score(bid))
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ConfigError("score", f"must return a finite number, returned {value!r} "
                              f"for {bid.bidder}'s bid")
        return float(value)

    # --------------------------------------------------------------------------- awarding

    async def _award(self, scope: FlowContext, rank: int, bid: PlacedBid, task: str,
                     attempts: list[AwardAttempt]) -> RunResult[Any] | None:
        """Award the task to ``bid``; the winner's result, or None when the work failed."""
        award = {"bidder": bid.bidder, "rank": rank, "score": bid.score,
                 "estimate": bid.estimate}
        await scope.step("award", lambda: award, kind="award", input=award, blocking=False)
        result: RunResult[Any] | None = None
        error = ""
        try:  # failed work is journaled by the runtime: a resumed run does not redo it
            result = await scope.run_agent(self._by_name[bid.bidder], task, name=bid.bidder,
                                           budget=self._work_share(bid))
        except RunError as exc:
            if isinstance(exc, BudgetExceeded) and scope.remaining() is None:
                raise  # the market's own budget is spent: no other bid could work either
            error = f"{type(exc).__name__}: {exc.message}"

        def judge() -> dict[str, Any]:
            if result is None:
                return {"bidder": bid.bidder, "ok": False, "reason": error}
            if self.verify is not None and not self.verify(result.output):
                return {"bidder": bid.bidder, "ok": False,
                        "reason": "verify() rejected the result"}
            return {"bidder": bid.bidder, "ok": True, "reason": ""}

        outcome = await scope.step("outcome", judge, kind="check", input=award)
        attempts.append(AwardAttempt(bidder=bid.bidder, ok=bool(outcome["ok"]),
                                     reason=str(outcome["reason"])))
        return result if outcome["ok"] else None

    def _work_share(self, bid: PlacedBid) -> Budget:
        base = self.work_budget or self._by_name[bid.bidder].budget
        if self.estimate_slack is None:
            return base
        bound = max(1, math.ceil(bid.estimate * self.estimate_slack))
        return base.capped(Budget(max_steps=bound, max_tokens=None, max_cost_usd=None,
                                  max_wall_seconds=None))

    async def _no_winner(self, ctx: FlowContext, ranked: list[PlacedBid],
                         discarded: list[dict[str, str]],
                         attempts: list[AwardAttempt]) -> MarketResult:
        if attempts:
            tried = "; ".join(f"{a.bidder} ({a.reason})" for a in attempts)
            message = f"every award failed, tried in order: {tried}"
        else:
            why = "; ".join(f"{d['bidder']} ({d['reason']})" for d in discarded)
            message = f"no valid bid for the task: {why or 'no bids'}"
        if self.on_failure == "escalate":
            note = await ctx.escalate(message, trigger="marketplace_failed",
                                      proposal=ranked[0].bidder if ranked else None)
            return MarketResult(winner=None, output=note, text=note, bids=ranked,
                                discarded=discarded, attempts=attempts)
        raise MarketplaceFailed(message, bidders=tuple(a.bidder for a in attempts))


_BID_RULES = (
    "A task is announced for bids. Do not do the task now: answer with a bid. estimate = the "
    "number of steps (model turns plus tool calls) you expect to need; confidence = 0..1, "
    "how sure you are to do it well; plan = one or two sentences; decline = true if the "
    "task is not for you.")


def _plain(bid: PlacedBid) -> dict[str, Any]:
    return {"bidder": bid.bidder, "estimate": bid.estimate, "confidence": bid.confidence,
            "plan": bid.plan, "score": bid.score}


def _check_bidders(bidders: Sequence[Agent[Any]]) -> list[Agent[Any]]:
    if isinstance(bidders, Agent) or not isinstance(bidders, Sequence):
        raise ConfigError("bidders", "expected a list of Agents")
    listed = list(bidders)
    if not listed:
        raise ConfigError("bidders", "a marketplace needs at least one bidder")
    for bidder in listed:
        if not isinstance(bidder, Agent):
            raise ConfigError("bidders", f"expected Agents, got {type(bidder).__name__}")
    names = [b.name for b in listed]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError("bidders", f"bidder names must be unique; repeated: "
                          f"{', '.join(dupes)}")
    reserved = sorted(set(names) & _RESERVED)
    if reserved:
        raise ConfigError("bidders", f"bidder names {', '.join(reserved)} are reserved for "
                          "the market's own steps; rename them")
    return listed

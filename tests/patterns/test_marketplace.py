"""Marketplace: concurrent bids, scoring, discarded bids, failed awards, resume and replay."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from keel import Agent, Budget, ConfigError, Escalate, MemoryStore, tool
from keel.core import Message, ModelResponse, ToolCallPart, ToolSpec
from keel.patterns import (
    Bid,
    Marketplace,
    MarketplaceFailed,
    MarketResult,
    PlacedBid,
    default_score,
)
from keel.runtime import replay_run
from keel.testing import FunctionModel, call


class Crash(BaseException):
    """The process dies mid-step (nothing in keel catches it)."""


class Market:
    """Bidders whose model bids when asked for a Bid and works otherwise; counts requests."""

    def __init__(self, barrier: asyncio.Barrier | None = None) -> None:
        self.barrier = barrier
        self.bid_requests: list[str] = []
        self.work_requests: list[str] = []
        self.crashed: set[str] = set()

    def bidder(self, name: str, bid: Any, work: Any = "done", *, crash_once: bool = False,
               **kw: Any) -> Agent[Any]:
        async def answer(messages: list[Message], tools: list[ToolSpec],
                         settings: Any) -> ModelResponse | str:
            if any(t.name == "final_result" for t in tools):
                self.bid_requests.append(name)
                if self.barrier is not None:
                    await asyncio.wait_for(self.barrier.wait(), 5)
                if isinstance(bid, BaseException):
                    raise bid
                return structured(bid)
            self.work_requests.append(name)
            if crash_once and name not in self.crashed:
                self.crashed.add(name)
                raise Crash("worker crashed")
            step = sum(1 for m in messages if m.role == "assistant")
            item = work[min(step, len(work) - 1)] if isinstance(work, list) else work
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, ToolCallPart):
                return ModelResponse(parts=(ToolCallPart(call_id=f"c{step}",
                                                         tool_name=item.tool_name,
                                                         arguments=item.arguments),))
            return f"{name}: {item}"

        return Agent(name, model=FunctionModel(answer), **kw)


def structured(args: Any) -> ModelResponse:
    return ModelResponse(parts=(ToolCallPart(call_id="b", tool_name="final_result",
                                             arguments=json.dumps(args)),),
                         finish_reason="tool_calls")


def bid(estimate: float, confidence: float, **kw: Any) -> dict[str, Any]:
    return {"estimate": estimate, "confidence": confidence, "plan": "p", **kw}


async def results(store: MemoryStore, run_id: str) -> dict[str, Any]:
    return {e.key: e.data for e in await store.read_journal(run_id) if e.phase == "result"}


async def test_bids_are_gathered_concurrently_and_the_best_score_wins() -> None:
    m = Market(barrier=asyncio.Barrier(3))  # every bid waits until all three are bidding
    market = Marketplace("market", [m.bidder("slow", bid(40, 0.9)),
                                    m.bidder("quick", bid(4, 0.8)),
                                    m.bidder("unsure", bid(2, 0.3))])
    store = MemoryStore()
    result = await market.run("translate the manual", store=store)
    out = result.output
    assert isinstance(out, MarketResult)
    assert out.winner == "quick" and out.output == "quick: done"
    assert [b.bidder for b in out.bids] == ["quick", "slow", "unsure"]  # .73, .45, .29
    assert out.bids[0].score == pytest.approx(0.8 / (1 + 4 / 40))
    assert sorted(m.bid_requests) == ["quick", "slow", "unsure"]
    assert m.work_requests == ["quick"]
    steps = await results(store, result.run_id)
    assert steps["market/announce"] == {"task": "translate the manual",
                                        "bidders": ["quick", "slow", "unsure"]}
    assert [b["bidder"] for b in steps["market/bids"]["ranked"]] == ["quick", "slow", "unsure"]
    assert steps["market/award:0/award"]["bidder"] == "quick"
    assert steps["market/award:0/outcome"] == {"bidder": "quick", "ok": True, "reason": ""}
    assert "market/bid/slow/turn:0/model" in steps
    assert "market/award:0/quick/turn:0/model" in steps
    assert (await store.get_run(result.run_id)).metadata == {"pattern": "marketplace"}


async def test_a_custom_score_and_name_order_for_ties() -> None:
    m = Market()
    market = Marketplace("market", [m.bidder("zoe", bid(1, 0.9)), m.bidder("bea", bid(99, 0.1)),
                                    m.bidder("al", bid(99, 0.1))],
                         score=lambda b: b.estimate)  # the biggest estimate wins
    out = (await market.run("x", store=MemoryStore())).output
    assert [b.bidder for b in out.bids] == ["al", "bea", "zoe"]  # al and bea tie: by name
    assert out.winner == "al"


async def test_invalid_bids_are_discarded_with_the_reason_journaled() -> None:
    m = Market()
    market = Marketplace("market", [
        m.bidder("over", bid(3, 1.5)), m.bidder("shy", bid(3, 0.9, decline=True)),
        m.bidder("meek", bid(3, 0.1)), m.bidder("zero", bid(0, 0.9)),
        m.bidder("garbled", {"estimate": "lots", "confidence": "high"}),
        m.bidder("down", ValueError("bid endpoint down")),
        m.bidder("good", bid(5, 0.6))], min_confidence=0.2)
    store = MemoryStore()
    result = await market.run("x", store=store)
    assert result.output.winner == "good"
    assert [b.bidder for b in result.output.bids] == ["good"]
    reasons = {d["bidder"]: d["reason"] for d in
               (await results(store, result.run_id))["market/bids"]["discarded"]}
    assert reasons["over"] == "confidence 1.5 is outside 0..1"
    assert reasons["shy"] == "declined: p"
    assert reasons["meek"] == "confidence 0.1 is below min_confidence 0.2"
    assert "positive number of steps" in reasons["zero"]
    assert reasons["garbled"].startswith("bidding failed: OutputValidationError")
    assert reasons["down"].startswith("bidding failed:") and "endpoint down" in reasons["down"]
    report = await replay_run(market, result.run_id, store=store)
    assert report.identical, report  # the failed bid's missing step is the recorded failure


async def test_a_failed_award_goes_to_the_next_bid() -> None:
    m = Market()
    work = tool(lambda: "working", name="work")
    market = Marketplace("market", [
        m.bidder("loopy", bid(1, 0.9), work=[call("work")], tools=[work]),  # never finishes
        m.bidder("broken", bid(2, 0.85), work=ValueError("endpoint down")),
        m.bidder("sloppy", bid(2, 0.8), work="half done"),
        m.bidder("solid", bid(9, 0.5), work="all done")],
        verify=lambda output: "half" not in output)
    store = MemoryStore()
    result = await market.run("x", store=store)
    out = result.output
    assert out.winner == "solid" and out.output == "solid: all done"
    assert [(a.bidder, a.ok) for a in out.attempts] == [
        ("loopy", False), ("broken", False), ("sloppy", False), ("solid", True)]
    assert out.attempts[0].reason.startswith("BudgetExceeded")  # 2 steps for an estimate of 1
    assert "endpoint down" in out.attempts[1].reason
    assert out.attempts[2].reason == "verify() rejected the result"
    steps = await results(store, result.run_id)
    assert "market/award:0/loopy/turn:0/tool:work#0" in steps  # the failed work is journaled
    assert "market/award:2/sloppy/turn:0/model" in steps
    assert steps["market/award:1/outcome"]["ok"] is False
    assert steps["market/award:3/outcome"]["ok"] is True
    report = await replay_run(market, result.run_id, store=store)
    assert report.identical, report


async def test_when_every_award_fails_the_error_names_the_bidders_tried() -> None:
    m = Market()
    market = Marketplace("market", [m.bidder("ana", bid(2, 0.9), work="meh"),
                                    m.bidder("bo", bid(2, 0.5), work="meh"),
                                    m.bidder("cy", bid(2, 0.5, decline=True))],
                         verify=lambda output: False)
    store = MemoryStore()
    with pytest.raises(MarketplaceFailed) as info:
        await market.run("x", store=store)
    assert info.value.bidders == ("ana", "bo")
    assert "ana (verify() rejected the result); bo (verify()" in info.value.message
    assert info.value.run_id
    assert (await store.get_run(info.value.run_id)).status == "failed"

    nobody = Marketplace("market", [m.bidder("cy", bid(2, 0.5, decline=True))])
    with pytest.raises(MarketplaceFailed, match=r"no valid bid for the task: cy \(declined"):
        await nobody.run("x", store=MemoryStore())


async def test_failure_can_escalate_to_a_person_instead() -> None:
    m = Market()
    market = Marketplace("market", [m.bidder("ana", bid(2, 0.9))],
                         verify=lambda output: False, on_failure="escalate")
    store = MemoryStore()
    with pytest.raises(Escalate) as info:
        await market.run("x", store=store)
    assert info.value.trigger == "marketplace_failed" and "ana" in info.value.reason


async def test_resume_after_the_award_does_not_bid_again() -> None:
    m = Market()
    market = Marketplace("market", [m.bidder("ana", bid(2, 0.9), work="finished",
                                             crash_once=True),
                                    m.bidder("bo", bid(2, 0.5))])
    store = MemoryStore()
    with pytest.raises(Crash, match="worker crashed"):
        await market.run("x", store=store, run_id="m1")
    assert sorted(m.bid_requests) == ["ana", "bo"]
    assert (await results(store, "m1"))["market/award:0/award"]["bidder"] == "ana"
    result = await market.resume("m1", store=store)
    assert result.output.winner == "ana" and result.output.output == "ana: finished"
    assert sorted(m.bid_requests) == ["ana", "bo"]  # no second round of bids
    assert m.work_requests == ["ana", "ana"]
    report = await replay_run(market, "m1", store=store)
    assert report.identical, report
    assert m.work_requests == ["ana", "ana"]


def test_default_score_prefers_confident_and_cheap() -> None:
    cheap = PlacedBid(bidder="a", estimate=1, confidence=0.5, plan="")
    dear = PlacedBid(bidder="b", estimate=10, confidence=0.5, plan="")
    assert default_score(cheap, max_estimate=10) > default_score(dear, max_estimate=10)
    assert Bid(estimate=1, confidence=2).confidence == 2  # the market, not the schema, checks


def test_bad_input_names_the_part() -> None:
    m = Market()
    a = m.bidder("a", bid(1, 1))
    with pytest.raises(ConfigError, match="bidders"):
        Marketplace("m", [])
    with pytest.raises(ConfigError, match="bidders"):
        Marketplace("m", [a, m.bidder("a", bid(1, 1))])
    with pytest.raises(ConfigError, match="bidders"):
        Marketplace("m", [a, "b"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="bidders"):
        Marketplace("m", [m.bidder("bids", bid(1, 1))])
    with pytest.raises(ConfigError, match="min_confidence"):
        Marketplace("m", [a], min_confidence=1.5)
    with pytest.raises(ConfigError, match="score"):
        Marketplace("m", [a], score="high")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="verify"):
        Marketplace("m", [a], verify=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="estimate_slack"):
        Marketplace("m", [a], estimate_slack=0.5)
    with pytest.raises(ConfigError, match="on_failure"):
        Marketplace("m", [a], on_failure="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="work_budget"):
        Marketplace("m", [a], work_budget=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="budget share"):
        Marketplace("m", [a], bid_budget=0.0)
    assert Marketplace("m", [a], bid_budget=Budget(max_steps=2)).agents()

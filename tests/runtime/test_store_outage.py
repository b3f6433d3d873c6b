"""A store outage in the middle of a run leaves the run to be continued, not failed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

import keel
from keel import Agent, MemoryStore, Message, StoreUnavailable, UnknownOutcome, Worker
from keel.store import JournalEntry, RunRecord
from keel.testing import FunctionModel, call


class FlakyStore(MemoryStore):
    """A memory store whose appends fail while ``down`` is set (an outage)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def append(self, run_id: str, entries: Sequence[JournalEntry], *,
                     lease: str | None = None) -> None:
        if self.down:
            raise StoreUnavailable("the database went away (test outage)")
        await super().append(run_id, entries, lease=lease)


def _agent(effects: list[str], store: FlakyStore, *, fail_in_tool: bool = False) -> Agent[Any]:
    @keel.tool(idempotent=False)
    async def pay(amount: int) -> str:
        """Pay an amount."""
        effects.append(f"pay {amount}")
        if fail_in_tool:
            store.down = True  # the store goes away right after the payment went out
        return "paid"

    def answer(messages: list[Message], tools: object, settings: object) -> Any:
        if len(messages) == 1:
            return call("pay", {"amount": 5})
        if not fail_in_tool and not effects[1:]:
            effects.append("outage")
            store.down = True  # the store goes away while the model answers the second turn
        return "done"

    return Agent("payer", model=FunctionModel(answer), tools=[pay], durability="always")


async def test_an_outage_leaves_the_run_running_and_a_worker_finishes_it() -> None:
    store, effects = FlakyStore(), []
    agent = _agent(effects, store)
    with pytest.raises(StoreUnavailable):
        await agent.run("pay 5", store=store, run_id="r1")
    record = await store.get_run("r1")
    # Not failed and not compensated: left running, its lease given back for any worker.
    assert record.status == "running" and record.error is None
    assert record.lease_owner is None
    assert effects == ["pay 5", "outage"]

    store.down = False
    worker = Worker([agent], store=store)
    outcomes = await worker.run_once()
    assert [o.status for o in outcomes] == ["completed"]
    done = await store.get_run("r1")
    assert done.status == "completed" and done.output == "done"
    assert effects == ["pay 5", "outage"], "the recorded payment ran again"


async def test_an_outage_between_a_payment_and_its_record_is_an_unknown_outcome() -> None:
    store, effects = FlakyStore(), []
    agent = _agent(effects, store, fail_in_tool=True)
    with pytest.raises(StoreUnavailable):
        await agent.run("pay 5", store=store, run_id="r2")
    assert (await store.get_run("r2")).status == "running"
    store.down = False
    # The payment's intent was committed before it ran and its result was lost with the
    # outage: resuming it is an unknown outcome for a person, never a second payment.
    with pytest.raises(UnknownOutcome):
        await agent.resume("r2", store=store)
    assert effects == ["pay 5"]


async def test_a_worker_reports_an_outage_as_an_interruption_and_a_later_round_finishes() -> None:
    store, effects = FlakyStore(), []
    agent = _agent(effects, store)
    await store.create_run(RunRecord(
        run_id="r3", agent="payer", status="running", input="pay 5", created_at=1.0,
        updated_at=1.0))
    worker = Worker([agent], store=store)
    first = await worker.run_once()
    assert [o.status for o in first] == ["interrupted"]
    assert (await store.get_run("r3")).status == "running"
    store.down = False
    second = await worker.run_once()
    assert [o.status for o in second] == ["completed"]
    assert effects == ["pay 5", "outage"]


async def test_an_outage_tells_the_end_hooks_the_run_was_interrupted() -> None:
    """The process stops a run it can no longer write: its middleware hears `interrupted`
    (a trace span ends, per-run state is dropped); the run itself is not failed."""
    from keel import Middleware, RunEndInput

    heard: list[tuple[str, str]] = []

    class Ears(Middleware):
        async def on_run_end(self, inp: RunEndInput) -> None:
            heard.append((inp.run_id, inp.status))

    class Broken(Middleware):
        async def on_run_end(self, inp: RunEndInput) -> None:
            raise RuntimeError("a hook that fails must not hide why the run stopped")

    store, effects = FlakyStore(), []
    agent = _agent(effects, store).clone(middleware=(Ears(), Broken()))
    with pytest.raises(StoreUnavailable):
        await agent.run("pay 5", store=store, run_id="r3")
    assert heard == [("r3", "interrupted")]
    assert (await store.get_run("r3")).status == "running"

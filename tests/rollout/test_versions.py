"""Agent versions: the content hash, its recording in runs, and the Versions registry."""

from __future__ import annotations

import pytest

import keel
from keel import ModelSettings
from keel.rollout import RolloutError, Versions
from keel.store import MemoryStore, RunFilter
from keel.testing import FunctionModel, ScriptedModel
from tests.rollout._agents import agent, lookup_tool, refund_tool


def test_the_version_is_a_content_hash_of_behaviour() -> None:
    base = agent("Help.", tools=(lookup_tool(),))
    same = agent("Help.", tools=(lookup_tool(),))
    assert base.version == same.version and len(base.version) == 16
    # pinned: the same agent must keep its version across keel releases and processes, or
    # every stored run would look like another version (a change here needs a CHANGELOG line)
    assert base.version == "59a6facc2c68ed56"
    int(base.version, 16)
    changed = {
        "instructions": agent("Help more.", tools=(lookup_tool(),)),
        "tools": agent("Help.", tools=(lookup_tool(), refund_tool())),
        "risk": agent("Help.", tools=(keel.tool(name="lookup", risk="write")(_lookup),)),
        "model": base.clone(model=ScriptedModel(["x"], name="other:model")),
        "settings": base.clone(settings=ModelSettings(temperature=0.1)),
        "output": base.clone(output_type=int),
        "loop": base.clone(max_output_retries=1),
    }
    versions = {name: a.version for name, a in changed.items()}
    assert base.version not in versions.values(), versions
    assert len(set(versions.values())) == len(versions)
    # the name, middleware and the key are not behaviour
    assert base.clone(name="other").version == base.version


def _lookup(order: str) -> str:
    """Look an order up."""
    return order


async def test_every_run_records_the_version_that_served_it() -> None:
    store = MemoryStore()
    a = agent("Help.")
    await a.run("hi", store=store, metadata={"version": "mine"})
    [run] = await store.list_runs(RunFilter())
    assert run.metadata["version"] == a.version  # keel's own key wins a clash
    b = a.clone(instructions="Other.")
    await b.run("hi", store=store)
    runs = await store.list_runs(RunFilter())
    assert {r.metadata["version"] for r in runs} == {a.version, b.version}


def test_versions_describe_and_refuse_bad_input() -> None:
    v1, v2 = agent("one", tools=(lookup_tool(),)), agent("two")
    versions = Versions({"v1": v1, "v2": v2})
    d = versions.describe()
    assert d["v1"]["version"] == v1.version and d["v1"]["tools"].keys() == {"lookup"}
    assert d["v2"]["models"] == ["test:function"]
    assert versions["v1"] is v1 and "v2" in versions and len(versions) == 2
    with pytest.raises(RolloutError, match=r"unknown version 'v3'.*v1, v2"):
        versions.get("v3")
    other = keel.Agent("billing", model=FunctionModel(lambda m, t, s: "x"))
    with pytest.raises(RolloutError, match="different agents"):
        Versions(v1=v1, v2=other)
    with pytest.raises(RolloutError, match="at least one"):
        Versions({})
    with pytest.raises(RolloutError, match="Agent or Flow"):
        Versions(v1="not an agent")  # type: ignore[arg-type]
    for bad in ("", "v 1", "x" * 101, "../v1"):
        with pytest.raises(RolloutError, match="version name"):
            Versions({bad: v1})


async def test_a_version_whose_tools_changed_since_it_was_registered_is_refused() -> None:
    store = MemoryStore()
    await Versions(v1=agent("one", tools=(lookup_tool(), refund_tool()))).register(store)
    await Versions(v1=agent("one", tools=(lookup_tool(), refund_tool()))).register(store)
    with pytest.raises(RolloutError) as missing:
        await Versions(v1=agent("one", tools=(lookup_tool(),))).register(store)
    assert "tools missing: refund" in str(missing.value)
    assert "register this agent as a new version" in str(missing.value)
    changed = keel.tool(name="lookup", risk="write")(_lookup)
    with pytest.raises(RolloutError, match=r"tools changed .*: lookup"):
        await Versions(v1=agent("one", tools=(changed, refund_tool()))).register(store)
    with pytest.raises(RolloutError, match="instructions, model or settings differ"):
        await Versions(v1=agent("uno", tools=(lookup_tool(), refund_tool()))).register(store)
    kept = await store.get_setting("version:support:v1")
    assert kept is not None and kept.version == 1  # nothing was overwritten


async def test_a_flow_is_a_version_too() -> None:
    from keel.runtime import FlowContext, flow

    inner = agent("one")

    @flow("support", agents=[inner])
    async def team(ctx: FlowContext, input: str) -> str:
        return f"team: {input}"

    @flow("support", agents=[agent("two")])
    async def other(ctx: FlowContext, input: str) -> str:
        return input

    versions = Versions(v1=team, v2=other)
    d = versions.describe()
    assert d["v1"]["kind"] == "flow" and d["v1"]["version"] != d["v2"]["version"]
    from keel.rollout import Rollout

    store = MemoryStore()
    r = Rollout("support", versions, store=store, current="v1", candidate="v2", steps=(100,))
    result = await r.run("hello", user="u1")
    assert result.output == "hello"  # at 100% every user gets the candidate
    [run] = await store.list_runs(RunFilter())
    assert run.metadata["rollout"]["version"] == "v2" and run.metadata["pattern"] == "flow"

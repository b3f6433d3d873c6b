"""The one JSON codec: each kind of value looks the same at every place keel shows, records
or hashes it (a tool's result for the model and the journal, a run's output in the store, a
workflow step, a planner step, a supervisor worker's answer, ``keel runs show --json``)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import pydantic
import pytest
from typer.testing import CliRunner

import keel
from keel import Agent, FlowContext, MemoryStore, RunStore, flow, tool
from keel.cli import app
from keel.core import (
    ToolResultPart,
    canonical_json,
    dumps,
    stable_hash,
    to_jsonable,
    to_text,
)
from keel.guard import delimit, undelimit
from keel.patterns import Planner, Supervisor, Workflow
from keel.store import JournalEntry, SQLiteStore
from keel.testing import FunctionModel, ScriptedModel, call
from keel.tools import ToolResult

# ------------------------------------------------------------------------------ the cases


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Order:
    id: int
    placed: dt.date


class Invoice(pydantic.BaseModel):
    number: str
    total: Decimal
    issued: dt.datetime
    color: Color
    tags: set[str]


WHEN = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
INVOICE = Invoice(number="A-1", total=Decimal("9.90"), issued=WHEN, color=Color.BLUE,
                  tags={"paid", "eu", "b2b"})
INVOICE_DATA = {"number": "A-1", "total": "9.90", "issued": "2024-01-02T03:04:05Z",
                "color": "blue", "tags": ["b2b", "eu", "paid"]}
NESTED = {"order": Order(7, dt.date(2024, 1, 2)), "invoice": INVOICE,
          "colors": (Color.RED, Color.BLUE), "sizes": frozenset({10, 9, 100}),
          "raw": b"ok", "price": Decimal("2.50"), 3: [uuid.UUID(int=1), PurePosixPath("a/b")]}
NESTED_DATA = {"order": {"id": 7, "placed": "2024-01-02"}, "invoice": INVOICE_DATA,
               "colors": ["red", "blue"], "sizes": [9, 10, 100], "raw": "b2s=",
               "price": "2.50", "3": ["00000000-0000-0000-0000-000000000001", "a/b"]}

#: name -> (value, its plain JSON data, the text a model is shown)
CASES: dict[str, tuple[Any, Any, str]] = {
    "dataclass": (Order(7, dt.date(2024, 1, 2)), {"id": 7, "placed": "2024-01-02"},
                  '{"id": 7, "placed": "2024-01-02"}'),
    "pydantic": (INVOICE, INVOICE_DATA, json.dumps(INVOICE_DATA, ensure_ascii=False)),
    "date": (dt.date(2024, 1, 2), "2024-01-02", "2024-01-02"),
    "datetime": (WHEN, "2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
    "enum": (Color.RED, "red", "red"),
    "set": ({"pear", "apple", "fig"}, ["apple", "fig", "pear"], '["apple", "fig", "pear"]'),
    "bytes": (b"\xff\x00keel", "/wBrZWVs", "/wBrZWVs"),
    "decimal": (Decimal("1.10"), "1.10", "1.10"),
    "nested": (NESTED, NESTED_DATA, json.dumps(NESTED_DATA, ensure_ascii=False)),
}
NAMES = list(CASES)


def case(name: str) -> tuple[Any, Any, str]:
    return CASES[name]


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    async with SQLiteStore(tmp_path / "runs.db") as opened:
        yield opened


async def results(store: RunStore, run_id: str) -> list[JournalEntry]:
    return [e for e in await store.read_journal(run_id) if e.phase == "result"]


# ------------------------------------------------------------------------- the functions


@pytest.mark.parametrize("name", NAMES)
def test_each_type_has_one_plain_form_and_one_text(name: str) -> None:
    value, data, text = case(name)
    assert to_jsonable(value) == data
    assert to_text(value) == text
    assert to_text(data) == text  # text made from recorded data matches the live text
    assert json.loads(dumps(value)) == data
    assert canonical_json(value) == canonical_json(data)


def test_plain_data_hashes_as_before_the_codec() -> None:
    """Input hashes recorded in existing journals must not move (else stored runs diverge
    on replay): these are the hashes the pre-codec ``stable_hash`` gave."""
    pinned = {
        "fb3e5692527832fd1de7": None,
        "a6dece1ef5f6ca3f04cd": "refund #7",
        "bd4932d96e4bb388f587": 42,
        "cdb52d8a5ece2722aa58": 1.5,
        "efc4b2e5f36a3621a8bf": True,
        "157e5f9444fb2cb0c6d9": {"order_id": 7, "amount": 12.5, "note": "café ☕"},
        "b0ba29fd26f014f7acf8": ["a", 1, None, {"b": [2.0, False]}],
        "6018978a1f577ae89742": {"z": 1, "a": {"y": 2, "b": 3}},
        "d769b2ce0542312011b5": {2: "a", 10: "b"},
        "729d1e91ac76ab291f8f": {"i": 3},
        "30d15ce619c31c22730a": 10**30,
    }
    assert {stable_hash(v): v for v in pinned.values()} == pinned
    plain = {"a": [1, 2.5, None, "é"], "b": {"c": True}}
    assert dumps(plain) == json.dumps(plain, ensure_ascii=False)
    assert dumps(plain, indent=2, ensure_ascii=True) == json.dumps(plain, indent=2)


def test_sets_sort_whatever_the_elements() -> None:
    assert to_jsonable({3, 1, 2}) == [1, 2, 3]
    assert to_jsonable({"b", 1, "a"}) == ["a", "b", 1]  # by canonical JSON text when mixed
    assert to_jsonable({Color.RED, Color.BLUE}) == ["blue", "red"]
    assert to_jsonable({frozenset({2}), frozenset({1})}) == [[1], [2]]


def test_keys_strings_and_unknown_values() -> None:
    assert to_jsonable({1: "a", None: "b", False: "c", Color.RED: 1, (1, 2): 0}) == {
        "1": "a", "null": "b", "false": "c", "red": 1, "[1,2]": 0}
    assert to_jsonable(dt.timedelta(days=1, seconds=3.5)) == "P1DT3.5S"
    assert to_jsonable(dt.time(1, 2, 3)) == "01:02:03"

    class Thing:
        def __str__(self) -> str:
            return "a thing"

    assert to_jsonable(Thing()) == "a thing"  # the documented fallback: str()
    assert to_text([Thing()]) == '["a thing"]'
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        to_jsonable(loop)


def test_plain_values_come_back_as_copies() -> None:
    data = {"a": [1, {"b": 2}]}
    out = to_jsonable(data)
    assert out == data and out is not data and out["a"] is not data["a"]


def test_the_old_tool_renderer_is_a_deprecated_alias() -> None:
    import keel.tools

    with pytest.warns(DeprecationWarning, match="keel.core.to_text"):
        render = keel.tools.render_value
    assert render is to_text
    assert keel.to_jsonable is to_jsonable


# ------------------------------------------------------------------ a @tool's return value


def returning(name: str) -> Any:
    value = case(name)[0]

    @tool(name="fetch")
    def fetch() -> Any:
        """Fetch the value."""
        return value

    return fetch


@pytest.mark.parametrize("name", NAMES)
async def test_a_tool_result_the_model_and_the_journal_see(name: str, store: RunStore) -> None:
    _, data, text = case(name)
    model = ScriptedModel([call("fetch"), "done"])
    agent = Agent("shop", model=model, tools=[returning(name)])
    result = await agent.run("go", store=store)
    seen = [p for p in model.requests[1][-1].parts if isinstance(p, ToolResultPart)]
    assert [undelimit(p.content) for p in seen] == [text]  # not a Python repr
    assert all(p.content == delimit("fetch", text) for p in seen)
    entry = next(e for e in await results(store, result.run_id) if e.kind == "tool")
    assert entry.data["value"] == data and entry.data["content"] == text


async def test_a_reconciled_tool_result_is_encoded_alike() -> None:
    value, data, text = case("nested")
    made = ToolResult.of(value)
    assert (made.content, made.value) == (text, data)


# ---------------------------------------------------------------------- a run's output


def producing(name: str) -> keel.Flow[Any]:
    value = case(name)[0]

    @flow(name="produce")
    async def produce(ctx: FlowContext, input: str) -> Any:
        return value

    return produce


@pytest.mark.parametrize("name", NAMES)
async def test_a_run_output_in_the_store(name: str, store: RunStore) -> None:
    value, data, _ = case(name)
    result = await producing(name).run("go", store=store)
    assert result.output is value  # the caller gets the value itself
    assert (await store.get_run(result.run_id)).output == data


#: an agent's typed output, from the model's JSON (bytes cannot come from a model as such)
TYPED: dict[str, tuple[Any, Any]] = {
    "dataclass": (Order, {"id": 7, "placed": "2024-01-02"}),
    "pydantic": (Invoice, INVOICE_DATA),
    "date": (dt.date, {"result": "2024-01-02"}),
    "datetime": (dt.datetime, {"result": "2024-01-02T03:04:05Z"}),
    "enum": (Color, {"result": "red"}),
    "set": (set[str], {"result": ["pear", "fig", "apple"]}),
    "decimal": (Decimal, {"result": "1.10"}),
}


def typed_agent(name: str, agent_name: str = "typed") -> Agent[Any]:
    kind, answer = TYPED[name]
    return Agent(agent_name, model=ScriptedModel([call("final_result", answer)]),
                 output_type=kind)


@pytest.mark.parametrize("name", list(TYPED))
async def test_an_agent_typed_output_in_the_store(name: str, store: RunStore) -> None:
    _, data, _ = case(name)
    result = await typed_agent(name).run("go", store=store)
    assert (await store.get_run(result.run_id)).output == data


# ----------------------------------------------------------------------------- patterns


@pytest.mark.parametrize("name", NAMES)
async def test_a_workflow_step_result(name: str) -> None:
    value, data, _ = case(name)

    def make(text):  # type: ignore[no-untyped-def]  # untyped: the codec records it
        return value

    store = MemoryStore()
    result = await Workflow("wf", [make]).run("go", store=store)
    entry = next(e for e in await results(store, result.run_id) if e.key == "wf/make")
    assert entry.data == data
    assert (await store.get_run(result.run_id)).output == data


def plan_with(step: dict[str, Any]) -> Agent[Any]:
    answer = keel.ModelResponse(parts=(call("final_result", {"steps": [step]}, call_id="p"),))
    return Agent("planner", model=FunctionModel(lambda m, t, s: answer))


@pytest.mark.parametrize("name", NAMES)
async def test_a_planner_tool_step_result(name: str) -> None:
    _, data, text = case(name)
    seen: list[str] = []

    def synthesize(messages: list[keel.Message], tools: Any, settings: Any) -> str:
        seen.append(messages[-1].text)
        return "ok"

    planner = plan_with({"id": "s", "description": "fetch it", "depends_on": [],
                         "tool": "fetch", "args": {}})
    store = MemoryStore()
    result = await Planner("plan", planner=planner, tools=[returning(name)],
                           synthesizer=Agent("synth", model=FunctionModel(synthesize))
                           ).run("go", store=store)
    outcome = next(e for e in await results(store, result.run_id) if e.kind == "plan_step")
    assert outcome.data["result"] == data
    assert f"- s (fetch it): {text}\n" in seen[0]  # what the synthesizer is shown


@pytest.mark.parametrize("name", list(TYPED))
async def test_a_planner_agent_step_result(name: str) -> None:
    _, data, _ = case(name)
    planner = plan_with({"id": "s", "description": "do it", "depends_on": [],
                         "agent": "typed"})
    store = MemoryStore()
    result = await Planner("plan", planner=planner, workers=[typed_agent(name)]
                           ).run("go", store=store)
    outcome = next(e for e in await results(store, result.run_id) if e.kind == "plan_step")
    assert outcome.data["result"] == data
    assert (await store.get_run(result.run_id)).output == {"s": data}


def lead_for(worker: str) -> tuple[Agent[Any], ScriptedModel]:
    model = ScriptedModel([call(f"ask_{worker}", {"task": "produce"}), "done"])
    return Agent("lead", model=model), model


def lead_saw(model: ScriptedModel) -> list[str]:
    return [undelimit(p.content) for p in model.requests[1][-1].parts
            if isinstance(p, ToolResultPart)]


@pytest.mark.parametrize("name", NAMES)
async def test_a_supervisor_worker_result_as_the_lead_sees_it(name: str) -> None:
    _, data, text = case(name)
    lead, model = lead_for("produce")
    store = MemoryStore()
    result = await Supervisor("team", lead=lead, workers=[producing(name)]
                              ).run("go", store=store)
    assert lead_saw(model) == [text]
    entry = next(e for e in await results(store, result.run_id)
                 if e.key.endswith("tool:ask_produce#0"))
    assert entry.data["value"] == data


@pytest.mark.parametrize("name", list(TYPED))
async def test_a_supervisor_agent_worker_result(name: str) -> None:
    _, data, text = case(name)
    lead, model = lead_for("typed")
    store = MemoryStore()
    result = await Supervisor("team", lead=lead, workers=[typed_agent(name)]).run(
        "go", store=store)
    assert lead_saw(model) == [text]
    entry = next(e for e in await results(store, result.run_id)
                 if e.key.endswith("tool:ask_typed#0"))
    assert entry.data["value"] == data


# ------------------------------------------------------------------------------ the CLI


def show_json(db: Path, run_id: str) -> dict[str, Any]:
    r = CliRunner().invoke(app, ["--store", f"sqlite:///{db}", "runs", "show", "--json",
                                 run_id], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    shown: dict[str, Any] = json.loads(r.stdout)
    return shown


async def make_runs(db: Path, name: str) -> tuple[str, str]:
    async with SQLiteStore(db) as store:
        out = await producing(name).run("go", store=store)
        model = ScriptedModel([call("fetch"), "done"])
        tooled = await Agent("shop", model=model, tools=[returning(name)]).run(
            "go", store=store)
    return out.run_id, tooled.run_id


@pytest.mark.parametrize("name", NAMES)
def test_keel_runs_show_json_prints_the_same_data(name: str, tmp_path: Path) -> None:
    _, data, text = case(name)
    db = tmp_path / "runs.db"
    out, tooled = asyncio.run(make_runs(db, name))
    assert show_json(db, out)["output"] == data
    journal = show_json(db, tooled)["journal"]
    step = next(e for e in journal if e["kind"] == "tool" and e["phase"] == "result")
    assert step["data"]["value"] == data and step["data"]["content"] == text


# ---------------------------------------------------------------- one form at every place


@pytest.mark.parametrize("name", NAMES)
async def test_every_place_agrees(name: str) -> None:
    """The tool's journal value, the run output and the supervisor's view, side by side."""
    value, data, text = case(name)
    store = MemoryStore()
    model = ScriptedModel([call("fetch"), "done"])
    tooled = await Agent("shop", model=model, tools=[returning(name)]).run("go", store=store)
    tool_value = next(e for e in await results(store, tooled.run_id)
                      if e.kind == "tool").data["value"]
    output = (await store.get_run((await producing(name).run("go", store=store)).run_id)
              ).output
    lead, lead_model = lead_for("produce")
    await Supervisor("team", lead=lead, workers=[producing(name)]).run("go", store=store)
    seen = [undelimit(p.content) for p in model.requests[1][-1].parts
            if isinstance(p, ToolResultPart)]
    assert tool_value == output == to_jsonable(value) == data
    assert seen == lead_saw(lead_model) == [to_text(value)] == [text]

"""Tool output paging: a large result becomes a handle with a summary, the model drills down
with result_page / result_filter / result_record, which read the journal (the tool never
runs again), and resume in another process and replay reproduce the run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import keel
from keel import ConfigError, MemoryStore, open_store, replay_run, tool
from keel.context import Paging
from keel.core import Message, ModelSettings, ToolSpec
from keel.testing import FunctionModel, call
from tests.context import _paging_child as child

ROOT = Path(__file__).resolve().parents[2]
DRILL = ["result_page", "result_filter", "result_record"]


def tool_contents(messages: list[Message]) -> list[str]:
    return [p.content for m in messages if m.role == "tool" for p in m.parts]  # type: ignore[union-attr]


def answer(content: str) -> Any:
    """A drill-down answer as data (text pages: the header line)."""
    return json.loads(content.split("\n", 1)[0])


async def drill(the_tool: Any, calls: list[tuple[str, dict[str, Any]]], *,
                middleware: list[Any] | None = None, run_id: str = "r1",
                store: Any = None, offered: list[list[str]] | None = None,
                defaults: bool = True) -> list[str]:
    """Run an agent that calls ``the_tool`` and then each drill-down call (the handle filled
    in from the conversation unless given); the contents of every tool result, in order."""
    plan = [(the_tool.name, {}), *calls]
    known: list[str] = []  # the handle, as a model remembers it

    def fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
        turn = sum(1 for m in messages if m.role == "assistant")
        if offered is not None:
            offered.append([t.name for t in tools])
        if turn >= len(plan):
            return "done"
        name, args = plan[turn]
        if name in DRILL and "handle" not in args:
            if not known:
                known.append(child.handle_in(messages))
            args = {"handle": known[0], **args}
        return call(name, args)

    agent: keel.Agent[Any] = keel.Agent("a", model=FunctionModel(fn), tools=[the_tool],
                                        middleware=middleware or [],
                                        default_middleware=defaults)
    result = await agent.run("go", store=store or MemoryStore(), run_id=run_id)
    assert result.output == "done"
    return tool_contents(result.messages)


def rows(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": i, "sku": f"sku-{i:04d}", "state": ("ok", "late")[i % 2],
             "text": "lorem ipsum " * 8, **extra} for i in range(n)]


@tool(risk="read")
def big_rows() -> list[dict[str, Any]]:
    """500 rows: over the default output limit."""
    return rows(500)


# ------------------------------------------------------------------------ the whole story


async def test_the_model_drills_down_and_the_tool_runs_once() -> None:
    child.CALLS["orders"] = 0
    child.OFFERED.clear()
    store = MemoryStore()
    result = await child.agent.run("find the orders", store=store, run_id="s1")
    assert result.output == "done"
    summary, page, found, record = (answer(c) for c in tool_contents(result.messages))
    assert summary["records"] == 300 and summary["pages"] == 15
    assert summary["fields"] == ["id", "status", "total", "customer", "notes"]
    assert summary["shown_fields"] == ["id", "status", "total"]
    assert summary["id_field"] == "id"
    assert summary["first"] == [{"id": f"o{i}", "status": child.order(i)["status"],
                                 "total": i * 7} for i in range(3)]
    assert page["items"] == [{"id": f"o{i}", "status": child.order(i)["status"],
                              "total": i * 7} for i in range(20, 40)]
    assert found["indices"] == [i for i in range(300) if i % 17 == 3]
    assert found["matches"] == len(found["indices"])
    assert record["record"] == child.order(42)["customer"]
    # the drill-down tools are offered only once a handle exists
    assert child.OFFERED[0] == ["orders"]
    assert all(o == ["orders", *DRILL] for o in child.OFFERED[1:])
    # the journal: the tool ran once, its whole value is recorded, drill-downs are tool steps
    assert child.CALLS["orders"] == 1
    tools = [e for e in await store.read_journal("s1") if e.kind == "tool"]
    assert [e.name for e in tools if e.phase == "result"] == ["orders", *DRILL]
    assert tools[0].data["value"] == [child.order(i) for i in range(300)]
    report = await replay_run(child.agent, "s1", store=store)
    assert report.identical, report
    assert child.CALLS["orders"] == 1


async def test_resume_in_a_new_process_reads_the_journal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.context._paging_child", url, "k1", cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == -9, stderr.decode()
    async with open_store(url) as store:
        before = [e.name for e in await store.read_journal("k1")
                  if e.kind == "tool" and e.phase == "result"]
    assert before == ["orders", "result_page"]  # died asking for turn 2
    child.CALLS["orders"] = 0
    result = await child.agent.resume("k1", store=url)
    assert result.output == "done"
    assert child.CALLS["orders"] == 0  # never re-run: the drill-downs read the journal
    _, page, found, record = (answer(c) for c in tool_contents(result.messages))
    assert page["from"] == 20
    assert found["indices"] == [i for i in range(300) if i % 17 == 3]
    assert record["record"] == child.order(42)["customer"]
    async with open_store(url) as store:
        names = [e.name for e in await store.read_journal("k1")
                 if e.kind == "tool" and e.phase == "result"]
        report = await replay_run(child.agent, "k1", store=store)
    assert names == ["orders", *DRILL]
    assert report.identical, report


# ------------------------------------------------------------------------------ defaults


async def test_by_default_a_large_json_list_becomes_a_handle() -> None:
    offered: list[list[str]] = []
    out = await drill(big_rows, [("result_record", {"index": 499})], offered=offered)
    summary = answer(out[0])
    assert summary["records"] == 500 and summary["tool"] == "big_rows"
    assert summary["chars"] == len(keel.core.to_text(rows(500)))
    assert "shown_fields" not in summary
    assert answer(out[1])["record"] == rows(500)[499]
    assert offered[0] == ["big_rows"] and offered[1] == ["big_rows", *DRILL]


async def test_small_results_and_large_text_are_left_alone_by_default() -> None:
    @tool(risk="read")
    def few() -> list[dict[str, Any]]:
        return rows(3)

    @tool(risk="read")
    def prose() -> str:
        return "word " * 10_000

    offered: list[list[str]] = []
    out = await drill(few, [], offered=offered)
    assert json.loads(out[0]) == rows(3)
    assert offered == [["few"], ["few"]]  # no handle, no drill-down tools
    out = await drill(prose, [])
    assert "[output cut: showing the first 20000 of 50000 characters" in out[0]


async def test_a_tool_or_an_agent_can_turn_paging_off() -> None:
    @tool(risk="read", paging=False)
    def unpaged() -> list[dict[str, Any]]:
        return rows(500)

    assert "[output cut" in (await drill(unpaged, []))[0]
    assert "[output cut" in (await drill(big_rows, [], middleware=[Paging.off()]))[0]
    assert repr(Paging.off()) == "<Paging off>"
    assert repr(Paging()) == "<Paging auto=lists threshold=8000 page_size=20 page_chars=4000>"


async def test_records_inside_an_object_are_paged_with_the_rest_in_the_summary() -> None:
    @tool(risk="read", paging=True)
    def search() -> dict[str, Any]:
        return {"total": 120, "cursor": "c2", "items": rows(120), "tags": ["a"]}

    out = await drill(search, [("result_page", {"page": 3}),
                               ("result_filter", {"field": "state", "equals": "late",
                                                  "page": 2})])
    summary = answer(out[0])
    assert summary["records_at"] == "items" and summary["records"] == 120
    assert summary["other_fields"] == {"total": 120, "cursor": "c2", "tags": ["a"]}
    page = answer(out[1])
    assert [r["id"] for r in page["items"]] == list(range(page["from"], page["to"] + 1))
    late = answer(out[2])
    assert late["matches"] == 60 and all(i % 2 == 1 for i in late["indices"])


async def test_text_is_paged_by_lines_when_paging_is_on_for_it() -> None:
    lines = [f"line {i}: " + ("error" if i % 50 == 0 else "fine") for i in range(2000)]

    @tool(risk="read", paging=True)
    def log() -> str:
        return "\n".join(lines)

    out = await drill(log, [("result_page", {"page": 2}),
                            ("result_filter", {"contains": "ERROR"}),
                            ("result_record", {"index": 7})])
    summary = answer(out[0])
    assert summary["lines"] == 2000 and summary["first"].startswith("line 0: error\nline 1:")
    head, text = out[1].split("\n", 1)
    assert json.loads(head)["page"] == 2
    assert text.split("\n")[0] == lines[json.loads(head)["from"]]
    errors = answer(out[2])
    assert errors["matches"] == 40 and errors["pages"] == 2
    assert errors["indices"] == list(range(0, 1000, 50))
    assert answer(out[3])["record"] == lines[7]


async def test_auto_all_pages_large_text_of_any_tool() -> None:
    @tool(risk="read")
    def prose() -> str:
        return ("word " * 30 + "\n") * 1000

    out = await drill(prose, [], middleware=[Paging(auto="all")])
    assert answer(out[0])["lines"] == 1001


async def test_json_in_a_string_and_a_list_of_scalars() -> None:
    @tool(risk="read", paging=True)
    def ids() -> str:
        return json.dumps([f"id-{i}" for i in range(3000)])

    out = await drill(ids, [("result_filter", {"equals": "id-2999"}),
                            ("result_filter", {"contains": "id-1"}),
                            ("result_record", {"index": 5})])
    assert answer(out[0])["records"] == 3000
    assert answer(out[1])["indices"] == [2999]
    assert answer(out[2])["matches"] == 1111
    assert answer(out[3])["record"] == "id-5"


async def test_equals_is_lenient_about_the_type_the_model_wrote() -> None:
    out = await drill(big_rows, [("result_filter", {"field": "id", "equals": "7"}),
                                 ("result_record", {"id": "12"}),
                                 ("result_record", {"id": 13})])
    assert answer(out[1])["indices"] == [7]
    assert answer(out[2])["index"] == 12 and answer(out[3])["index"] == 13


async def test_an_enormous_record_is_outlined_and_its_parts_fetched_by_path() -> None:
    @tool(risk="read", paging=True)
    def blobs() -> list[dict[str, Any]]:
        return [{"id": i, "small": i, "blob": "z" * 30_000, "parts": list(range(5000))}
                for i in range(3)]

    out = await drill(blobs, [("result_record", {"index": 1}),
                              ("result_record", {"index": 1, "path": "small"}),
                              ("result_record", {"index": 1, "path": "parts"}),
                              ("result_record", {"index": 1, "path": "parts.4999"}),
                              ("result_record", {"index": 1, "path": "blob"}),
                              ("result_page", {"page": 1})])
    summary = answer(out[0])
    assert summary["first"][0]["cut"].startswith("too big for a page")
    outline = answer(out[1])["record"]
    assert set(outline["sizes"]) == {"id", "small", "blob", "parts"}
    assert answer(out[2])["record"] == 1
    assert "5000 items" in answer(out[3])["record"]["cut"]
    assert answer(out[4])["record"] == 4999
    cut = answer(out[5])["record"]
    assert len(cut["text"]) == 8_000
    assert len(answer(out[6])["items"]) == 3
    assert all(len(c) < 10_000 for c in out)


async def test_projection_declared_on_the_tool_applies_to_pages_not_to_records() -> None:
    @tool(risk="read", fields=["sku"])
    def skus() -> list[dict[str, Any]]:
        return rows(2000)

    out = await drill(skus, [("result_page", {"page": 1}), ("result_record", {"index": 3}),
                             ("result_filter", {"field": "state", "equals": "ok"})])
    assert answer(out[0])["shown_fields"] == ["sku"]
    assert answer(out[1])["items"][0] == {"sku": "sku-0000"}
    assert answer(out[2])["record"] == rows(2000)[3]  # details on request: the whole record
    assert answer(out[3])["items"][0] == {"sku": "sku-0000"}


# ------------------------------------------------------------------------------ bad input


def failure(content: str) -> dict[str, Any]:
    return json.loads(content.split("\n[keel:")[0])["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("call_args", "message"), [
    (("result_page", {"page": 26}), "page 26 does not exist: this has 25 page(s), 1 to 25"),
    (("result_page", {"page": 0}), "page 0 does not exist"),
    (("result_page", {"page": "two"}), "bad arguments"),
    (("result_page", {"handle": "h000000000000"}), "unknown handle 'h000000000000'"),
    (("result_page", {"handle": ""}), "handle must be"),
    (("result_page", {"handle": 7}), "bad arguments"),
    (("result_page", {"extra": 1}), "bad arguments"),
    (("result_filter", {"field": "nope", "equals": 1}), "no record has a field 'nope'"),
    (("result_filter", {"equals": 1}), "these records are objects"),
    (("result_filter", {"field": "id"}), "exactly one of equals and contains"),
    (("result_filter", {"field": "id", "equals": 1, "contains": "1"}), "exactly one of"),
    (("result_filter", {"field": "id", "equals": 1, "page": 2}), "page 2 does not exist"),
    (("result_record", {}), "exactly one of index and id"),
    (("result_record", {"index": 500}), "there is no record 500"),
    (("result_record", {"index": -1}), "there is no record -1"),
    (("result_record", {"id": "nope"}), "no record has id = 'nope'"),
    (("result_record", {"index": 1, "path": "text.deeper"}), "record 1 has nothing at"),
    (("result_record", {"index": 1, "path": "x" * 5000}), "record 1 has nothing at 'xxx"),
    (("result_page", {"handle": "h" * 100_000}), "unknown handle 'hhhh"),
    (("result_filter", {"field": "f" * 100_000, "contains": "a"}), "no record has a field"),
    (("result_record", {"id": "i" * 100_000}), "no record has id = 'iii"),
])
async def test_bad_drill_down_calls_are_observations_the_model_can_correct(
        call_args: tuple[str, dict[str, Any]], message: str) -> None:
    out = await drill(big_rows, [call_args])
    error = failure(out[1])
    assert message in error["message"], error
    assert error["retryable"] is True
    assert len(out[1]) < 1_000  # hostile arguments are not echoed whole


async def test_a_filter_that_matches_nothing_says_so() -> None:
    out = await drill(big_rows, [("result_filter", {"field": "sku", "equals": "none"})])
    assert answer(out[1]) | {"keel_handle": None} == {
        "keel_handle": None, "matches": 0, "page": 0, "pages": 0, "indices": [], "items": []}


async def test_records_without_an_id_field_are_fetched_by_index() -> None:
    @tool(risk="read", paging=True)
    def plain() -> list[list[int]]:
        return [[i] * 50 for i in range(500)]

    out = await drill(plain, [("result_record", {"id": 3}), ("result_record", {"index": 3})])
    assert "no id field" in failure(out[1])["message"]
    assert answer(out[2])["record"] == [3] * 50


async def test_a_handle_of_another_run_names_nothing() -> None:
    store = MemoryStore()
    first = await drill(big_rows, [], run_id="run-a", store=store)
    handle = answer(first[0])["keel_handle"]
    out = await drill(big_rows, [("result_page", {"handle": handle, "page": 1})],
                      run_id="run-b", store=store)
    assert answer(out[0])["keel_handle"] != handle
    assert f"unknown handle {handle!r}" in failure(out[1])["message"]


async def test_a_drill_down_call_without_a_handle_in_the_run() -> None:
    @tool(risk="read")
    def small() -> str:
        return "ok"

    out = await drill(small, [("result_page", {"handle": "habc", "page": 1})])
    assert "unknown handle" in failure(out[1])["message"]


async def test_an_agent_tool_named_like_a_drill_down_tool_is_refused() -> None:
    @tool(name="result_page")
    def mine() -> str:
        return "x"

    with pytest.raises(ConfigError, match="paging tools"):
        keel.Agent("a", model=FunctionModel(lambda m, t, s: "x"), tools=[mine])
    # without paging, the name is free
    keel.Agent("a", model=FunctionModel(lambda m, t, s: "x"), tools=[mine],
               middleware=[Paging.off()])


@pytest.mark.parametrize("kwargs", [{"auto": "some"}, {"threshold": 10}, {"page_size": 0},
                                    {"page_chars": True}, {"preview": -1},
                                    {"record_chars": "big"}, {"enabled": "no"}])
def test_bad_paging_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="Paging"):
        Paging(**kwargs)


# ------------------------------------------------------------------- odd values and seams


async def test_odd_text_values_long_lines_and_many_fields() -> None:
    @tool(risk="read", paging=True)
    def broken_json() -> str:
        return "[not json " + "x" * 9_000  # one line longer than a page: split in pieces

    out = await drill(broken_json, [("result_record", {"index": 2})])
    assert answer(out[0])["lines"] == 3
    assert answer(out[1])["record"] == "x" * 1_010

    @tool(risk="read", paging=True)
    def wide() -> list[dict[str, Any]]:
        return [{f"f{j}": j for j in range(60)} for _ in range(40)]

    out = await drill(wide, [])
    assert len(answer(out[0])["fields"]) == 40


async def test_a_drill_down_tool_called_outside_a_run_says_so() -> None:
    paging = Paging()
    page_tool = paging.provide_tools()[0]
    ctx = keel.ToolContext(run_id="r", step_key="k", agent="a", idempotency_key="r/k")
    result = await page_tool.call({"handle": "h1", "page": 1}, ctx)
    assert result.failure is not None and "no run journal" in result.failure.message
    assert Paging.off().provide_tools() == ()


async def test_the_page_cache_is_dropped_when_the_run_ends() -> None:
    paging = Paging()
    await drill(big_rows, [("result_page", {"page": 2})], middleware=[paging])
    assert not paging._cache  # the only way to see that it is released


async def test_parallel_drill_downs_in_one_turn() -> None:
    def fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn == 0:
            return call("big_rows", {})
        if turn == 1:
            h = child.handle_in(messages)
            return [call("result_page", {"handle": h, "page": 3}, call_id="a"),
                    call("result_record", {"handle": h, "id": 77}, call_id="b"),
                    call("result_page", {"handle": h, "page": 4}, call_id="c")]
        return "done"

    agent: keel.Agent[Any] = keel.Agent("a", model=FunctionModel(fn), tools=[big_rows])
    result = await agent.run("go", store=MemoryStore())
    _, third, record, fourth = (answer(c) for c in tool_contents(result.messages))
    assert third["page"] == 3 and fourth["page"] == 4 and fourth["from"] == third["to"] + 1
    assert record["record"] == rows(500)[77]


async def test_a_fork_drills_into_the_handles_it_copied() -> None:
    store = MemoryStore()
    calls = []

    @tool(risk="read", name="big_rows")
    def counted() -> list[dict[str, Any]]:
        calls.append(1)
        return rows(500)

    await drill(counted, [("result_page", {"page": 2})], run_id="orig", store=store)
    assert len(calls) == 1

    def fn(messages: list[Message], tools: list[ToolSpec], settings: ModelSettings) -> Any:
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn == 1:
            return call("result_record", {"handle": child.handle_in(messages), "index": 9})
        return "done"

    agent: keel.Agent[Any] = keel.Agent("a", model=FunctionModel(fn), tools=[counted])
    forked = await keel.fork_run(agent, "orig", at="a/turn:1/model", store=store)
    assert forked.run_id != "orig" and len(calls) == 1  # the fork did not call the tool
    assert answer(tool_contents(forked.messages)[1])["record"] == rows(500)[9]


class DropsToolResults(keel.Middleware):
    """A stand-in history policy: from turn 2 on, sends a new list without tool results."""

    async def wrap_model_request(self, inp: keel.ModelRequestInput,
                                 next: keel.ModelNext) -> keel.ModelResponse:
        if inp.step_key.endswith(("turn:2/model", "turn:3/model")):
            kept = [m for m in inp.messages if m.role not in ("tool", "assistant")]
            kept += [Message.assistant("x")] * (2 if "turn:2" in inp.step_key else 3)
            inp = replace(inp, messages=kept)
        return await next(inp)


async def test_the_tools_follow_the_conversation_a_history_policy_sends() -> None:
    paging = Paging()
    offered: list[list[str]] = []
    await drill(big_rows, [("result_page", {"page": 2}), ("result_page", {"page": 3}),
                           ("result_page", {"page": 4})],
                middleware=[DropsToolResults(), paging], offered=offered, defaults=False)
    assert offered[1] == ["big_rows", *DRILL]  # the handle is in the conversation
    assert offered[2] == offered[3] == ["big_rows"]  # the policy dropped it
    assert offered[4] == ["big_rows", *DRILL]
    assert not paging._scanned  # released when the run ended


async def test_a_declared_tool_is_paged_over_its_own_smaller_limit() -> None:
    @tool(risk="read", paging=True, output_limit=1_000)
    def medium() -> list[dict[str, Any]]:
        return rows(20)  # about 3,000 characters: under the threshold, over the limit

    out = await drill(medium, [("result_page", {"page": 1})])
    assert answer(out[0])["records"] == 20
    assert len(answer(out[1])["items"]) == 20


class TextOnly(keel.Tool):
    """A tool that gives text and no value (as some adapters do)."""

    meta = keel.tools.ToolMeta(name="text_only", description="text", risk="read",
                               paging=True)

    @property
    def parameters(self) -> dict[str, Any]:
        return {"type": "object", "properties": {}}

    async def call(self, arguments: Any, ctx: keel.ToolContext) -> keel.ToolResult:
        return keel.ToolResult(content="\n".join(f"row {i}" for i in range(3000)))


async def test_a_result_without_a_value_is_paged_from_its_text() -> None:
    out = await drill(TextOnly(), [("result_record", {"index": 2999})])
    assert answer(out[0])["lines"] == 3000
    assert answer(out[1])["record"] == "row 2999"

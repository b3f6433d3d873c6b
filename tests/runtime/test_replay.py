"""replay_run and fork_run: determinism checks against a journal, counterfactual re-runs."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Annotated, Any

import pydantic
import pytest

from keel import (
    Agent,
    MemoryStore,
    ModelError,
    RepeatedFailure,
    RunNotFound,
    UnknownModel,
    UserError,
    tool,
)
from keel.core import Message, ModelResponse, ModelSettings, ToolSpec
from keel.models import Model
from keel.runtime import fork_run, replay_run
from keel.store import JournalEntry, RunRecord, export_run
from keel.testing import ScriptedModel, call

SCRIPT: list[Any] = [
    ["Looking up both.", call("weather", {"city": "Paris"}), call("weather", {"city": "Oslo"})],
    call("weather", {"city": "Rome"}),
    "Paris 18, Oslo 9, Rome 25.",
]


class Counter:
    def __init__(self) -> None:
        self.calls: list[str] = []


def weather_tool(counter: Counter) -> Any:
    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        counter.calls.append(city)
        return {"paris": "18", "oslo": "9", "rome": "25"}.get(city.lower(), "?")

    return weather


class NoModel(Model):
    """Fails the test if a replay ever asks a model."""

    name = "test:scripted"

    async def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (),
                      settings: ModelSettings | None = None) -> ModelResponse:
        raise AssertionError("a replay must not call the model")


class ReadOnlyStore(MemoryStore):
    """A store that refuses every write once frozen: proves a replay writes nothing."""

    frozen = False

    def _refuse(self) -> None:
        if self.frozen:
            raise AssertionError("a replay must not write to the store")

    async def create_run(self, record: RunRecord) -> None:
        self._refuse()
        await super().create_run(record)

    async def append(self, run_id: str, entries: Sequence[JournalEntry], *,
                     lease: str | None = None) -> None:
        self._refuse()
        await super().append(run_id, entries, lease=lease)

    async def update_run(self, record: RunRecord, *, lease: str | None = None) -> None:
        self._refuse()
        await super().update_run(record, lease=lease)

    async def finish_run(self, record: RunRecord, entries: Sequence[JournalEntry], *,
                         lease: str | None = None) -> None:
        self._refuse()
        await super().finish_run(record, entries, lease=lease)


def agent_with(model: Model | None = None, *, script: list[Any] = SCRIPT,
               counter: Counter | None = None, **kw: Any) -> Agent[Any]:
    return Agent("wx", model=model or ScriptedModel(script),
                 tools=[weather_tool(counter or Counter())], **kw)


async def recorded_run(store: MemoryStore, **kw: Any) -> str:
    result = await agent_with(**kw).run("weather?", store=store)
    return result.run_id


# ----------------------------------------------------------------------------------- replay


async def test_replay_reproduces_a_completed_run_without_model_tools_or_writes() -> None:
    store = ReadOnlyStore()
    run_id = await recorded_run(store)
    before = await export_run(run_id, store=store)
    counter = Counter()
    store.frozen = True
    report = await replay_run(agent_with(NoModel(), counter=counter), run_id, store=store)
    assert report.identical, report
    assert report.reason == "the replay produced the recorded output"
    assert report.recorded_output == report.replayed_output == "Paris 18, Oslo 9, Rome 25."
    assert report.steps_recorded == report.steps_replayed == 6
    assert report.divergence is None and report.unused_steps == ()
    assert counter.calls == []  # no tool ran
    after = await export_run(run_id, store=store)
    assert {**after, "exported_at": 0} == {**before, "exported_at": 0}


async def test_replay_catches_changed_instructions() -> None:
    store = MemoryStore()
    run_id = await recorded_run(store, instructions="Answer in Celsius.")
    report = await replay_run(agent_with(NoModel(), instructions="Answer in Fahrenheit."),
                              run_id, store=store)
    assert not report.identical
    assert report.reason.startswith("diverged at step wx/turn:0/model")
    div = report.divergence
    assert div is not None and div.step == "wx/turn:0/model"
    assert div.recorded["kind"] == div.requested["kind"] == "model"
    assert div.recorded["input_hash"] != div.requested["input_hash"]
    assert "Looking up both." in div.recorded["summary"]
    assert report.replayed_output is None
    assert report.replayed_error is not None and report.replayed_error["type"] == "Divergence"


async def test_replay_catches_non_deterministic_code() -> None:
    """Instructions built from a random value (say, the time): each process builds another
    agent, and replay says so instead of passing."""

    def build() -> Agent[Any]:
        return agent_with(NoModel(), instructions=f"Session {random.random()}.")

    store = MemoryStore()
    run_id = (await build().clone(model=ScriptedModel(SCRIPT)).run("weather?",
                                                                    store=store)).run_id
    report = await replay_run(build(), run_id, store=store)
    assert not report.identical
    assert report.divergence is not None and report.divergence.step == "wx/turn:0/model"


async def test_replay_catches_a_changed_tool_set() -> None:
    store = MemoryStore()
    run_id = await recorded_run(store)

    @tool
    def forecast(city: str) -> str:
        """Tomorrow's weather."""
        return "?"

    changed = Agent("wx", model=NoModel(), tools=[weather_tool(Counter()), forecast])
    report = await replay_run(changed, run_id, store=store)
    assert not report.identical and report.divergence is not None
    assert report.divergence.step == "wx/turn:0/model"


#: Validation the model's answer must pass (same tool spec name as ``int``: only the
#: acceptance code path differs).
Big = Annotated[int, pydantic.Field(gt=100)]


async def test_replay_catches_a_code_path_that_asks_for_an_extra_step() -> None:
    store = MemoryStore()
    run_id = (await Agent("wx", model=ScriptedModel(["42"]), output_type=int).run(
        "how many?", store=store)).run_id
    stricter = Agent("wx", model=NoModel(), output_type=Big)  # now rejects 42
    report = await replay_run(stricter, run_id, store=store)
    assert not report.identical
    assert report.divergence is not None
    assert report.divergence.step == "wx/turn:1/model"
    assert report.divergence.recorded["kind"] is None  # the recorded run never took it
    assert "never took" in report.reason
    assert len(await store.read_journal(run_id)) == 1  # nothing was written


async def test_replay_catches_code_that_stops_earlier() -> None:
    store = MemoryStore()
    strict = Agent("wx", model=ScriptedModel(["42", "142"]), output_type=Big)
    run_id = (await strict.run("how many?", store=store)).run_id
    lenient = Agent("wx", model=NoModel(), output_type=int)  # accepts the first answer
    report = await replay_run(lenient, run_id, store=store)
    assert not report.identical
    assert report.unused_steps == ("wx/turn:1/model",)
    assert "without using 1 recorded step" in report.reason
    assert report.replayed_output == 42 and report.recorded_output == 142


class Answer(pydantic.BaseModel):
    city: str
    temp_c: float


async def test_replay_compares_structured_output_as_json() -> None:
    store = MemoryStore()
    script: list[Any] = [call("final_result", {"city": "Oslo", "temp_c": 9})]
    agent = Agent("wx", model=ScriptedModel(script), output_type=Answer)
    run_id = (await agent.run("q", store=store)).run_id
    report = await replay_run(agent.clone(model=NoModel()), run_id, store=store)
    assert report.identical, report
    assert report.replayed_output == {"city": "Oslo", "temp_c": 9.0}


async def test_replay_of_a_run_failed_from_outside_reaches_the_failing_step() -> None:
    store = MemoryStore()
    script = [*SCRIPT[:1], ModelError("provider down (503)", status=503, retryable=False)]
    with pytest.raises(ModelError) as err:
        await agent_with(script=script).run("weather?", store=store)
    run_id = err.value.run_id
    assert run_id is not None
    report = await replay_run(agent_with(NoModel()), run_id, store=store)
    assert report.identical, report
    assert report.status == "failed"
    assert "reached step wx/turn:1/model" in report.reason and "ModelError" in report.reason
    assert report.recorded_error is not None and report.recorded_error["type"] == "ModelError"


async def test_replay_reproduces_a_deterministic_failure_and_catches_a_changed_one() -> None:
    @tool
    def flaky(n: int) -> str:
        """Always fails."""
        raise ValueError("nope")

    script: list[Any] = [call("flaky", {"n": 1})] * 3 + ["gave up"]
    store = MemoryStore()
    agent = Agent("wx", model=ScriptedModel(script), tools=[flaky], max_repeated_failures=2)
    with pytest.raises(RepeatedFailure) as err:
        await agent.run("go", store=store)
    run_id = err.value.run_id
    assert run_id is not None
    same = await replay_run(agent.clone(model=NoModel()), run_id, store=store)
    assert same.identical, same
    assert same.reason == "the replay failed with the recorded error, RepeatedFailure"
    assert same.replayed_error is not None
    assert same.replayed_error["step_key"] == "wx/turn:1/tool:flaky#0"
    patient = agent.clone(model=NoModel(), max_repeated_failures=3)
    changed = await replay_run(patient, run_id, store=store)
    assert not changed.identical
    assert changed.divergence is not None and changed.divergence.step == "wx/turn:2/model"


async def test_replay_refuses_unknown_unfinished_and_foreign_runs() -> None:
    store = MemoryStore()
    with pytest.raises(RunNotFound):
        await replay_run(agent_with(), "no-such-run", store=store)
    run_id = await recorded_run(store)
    with pytest.raises(UserError, match="made by agent 'wx', not 'other'"):
        await replay_run(Agent("other", model=NoModel()), run_id, store=store)
    record = await store.get_run(run_id)
    for status in ("running", "suspended", "cancelled"):
        await store.update_run(record.with_status(status))  # type: ignore[arg-type]
        with pytest.raises(UserError, match=f"is {status}: only a finished run"):
            await replay_run(agent_with(), run_id, store=store)


# ------------------------------------------------------------------------------------- fork


async def test_fork_copies_the_steps_before_k_and_continues_with_a_new_model() -> None:
    store = MemoryStore()
    counter = Counter()
    parent_id = await recorded_run(store, counter=counter)
    assert counter.calls == ["Paris", "Oslo", "Rome"]
    parent_before = await export_run(parent_id, store=store)
    new_model = ScriptedModel([*SCRIPT[:1], call("weather", {"city": "Oslo"}), "Only Oslo."],
                              name="test:other")
    result = await fork_run(agent_with(counter=counter), parent_id, at=3, store=store,
                            model=new_model)
    assert result.run_id != parent_id
    assert result.output == "Only Oslo."
    assert result.replayed_steps == 3  # turn 0: the model and its two calls
    assert len(new_model.requests) == 2  # turns 1 and 2 only
    assert counter.calls == ["Paris", "Oslo", "Rome", "Oslo"]  # only the live call ran
    fork = await store.get_run(result.run_id)
    assert fork.status == "completed" and fork.input == "weather?"
    assert fork.metadata["fork"] == {
        "parent": parent_id, "at": "wx/turn:1/model", "trusted_seq": 2, "model": "test:other",
        "instructions_changed": False, "instructions": None}
    journal = await store.read_journal(result.run_id)
    parent_journal = await store.read_journal(parent_id)
    assert journal[:3] == parent_journal[:3]
    assert journal[3].name == "test:other"
    after = await export_run(parent_id, store=store)
    assert {**after, "exported_at": 0} == {**parent_before, "exported_at": 0}


async def test_fork_at_a_step_key_with_new_instructions() -> None:
    store = MemoryStore()
    parent_id = await recorded_run(store, instructions="Be terse.")
    model = ScriptedModel(SCRIPT)
    result = await fork_run(agent_with(model, instructions="Be terse."), parent_id,
                            at="wx/turn:0/model", store=store, instructions="Be verbose.")
    assert result.replayed_steps == 0
    assert model.requests[0][0].text.startswith("Be verbose.")  # + the untrusted-content note
    meta = (await store.get_run(result.run_id)).metadata["fork"]
    assert meta["trusted_seq"] == -1 and meta["instructions_changed"] is True
    assert meta["instructions"] == "Be verbose."


async def test_a_fork_replays_identically_with_the_parents_agent() -> None:
    store = MemoryStore()
    parent_id = await recorded_run(store)
    other = ScriptedModel([*SCRIPT[:2], "Rome is warmest."], name="test:other")
    fork = await fork_run(agent_with(), parent_id, at=3, store=store, model=other,
                          instructions="Compare.")
    report = await replay_run(agent_with(NoModel()), fork.run_id, store=store)
    assert report.identical, report
    assert report.replayed_output == "Rome is warmest."


async def test_fork_of_a_failed_run_at_its_failing_step_retries_it_live() -> None:
    store = MemoryStore()
    script = [*SCRIPT[:1], ModelError("provider down (503)", status=503, retryable=False)]
    with pytest.raises(ModelError) as err:
        await agent_with(script=script).run("weather?", store=store)
    run_id = err.value.run_id
    assert run_id is not None
    result = await fork_run(agent_with(), run_id, at="wx/turn:1/model", store=store,
                            model=ScriptedModel(SCRIPT, name="test:backup"))
    assert result.output == "Paris 18, Oslo 9, Rome 25."
    assert result.replayed_steps == 3
    assert (await store.get_run(run_id)).status == "failed"  # the parent is untouched


async def test_fork_of_a_run_that_is_still_running_is_allowed() -> None:
    store = MemoryStore()
    parent_id = await recorded_run(store)
    record = await store.get_run(parent_id)
    await store.update_run(record.with_status("running"))
    result = await fork_run(agent_with(), parent_id, at=1, store=store)
    assert result.output == "Paris 18, Oslo 9, Rome 25."
    assert (await store.get_run(parent_id)).status == "running"


@pytest.mark.parametrize(("at", "message"), [
    (6, "has no step 6: it has 6 step(s), numbered 0 to 5"),
    (-1, "has no step -1"),
    ("wx/turn:9/model", "has no step 'wx/turn:9/model'; its steps are: 0 wx/turn:0/model"),
    (True, "takes a step key or a 0-based step number"),
    (1.5, "takes a step key or a 0-based step number"),
])
async def test_fork_refuses_an_unknown_step_and_writes_nothing(at: Any, message: str) -> None:
    store = MemoryStore()
    parent_id = await recorded_run(store)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await fork_run(agent_with(), parent_id, at=at, store=store)
    assert [r.run_id for r in await store.list_runs()] == [parent_id]


async def test_fork_refuses_a_cut_inside_an_unresolved_intent() -> None:
    store = MemoryStore()
    record = RunRecord(run_id="r1", agent="wx", status="failed", input="q", created_at=1.0,
                       updated_at=1.0)
    await store.create_run(record)

    def entry(seq: int, key: str, phase: str) -> JournalEntry:
        return JournalEntry(seq=seq, key=key, phase=phase, kind="tool",  # type: ignore[arg-type]
                            name="pay", input_hash="h", data={"content": "ok"}, created_at=1.0)

    a, b = "wx/turn:0/tool:pay#0", "wx/turn:0/tool:pay#1"  # two parallel calls
    await store.append("r1", [entry(0, a, "intent"), entry(1, b, "intent"),
                              entry(2, a, "result"), entry(3, b, "result")])
    with pytest.raises(UserError, match=f"inside the unresolved intent of step '{a}'"):
        await fork_run(agent_with(), "r1", at=b, store=store)
    assert [r.run_id for r in await store.list_runs()] == ["r1"]


async def test_fork_refuses_a_bad_model_id_unknown_run_and_foreign_agent() -> None:
    store = MemoryStore()
    parent_id = await recorded_run(store)
    with pytest.raises(UnknownModel):
        await fork_run(agent_with(), parent_id, at=1, store=store, model="nosuch:model")
    with pytest.raises(RunNotFound):
        await fork_run(agent_with(), "no-such-run", at=1, store=store)
    with pytest.raises(UserError, match="made by agent 'wx', not 'other'"):
        await fork_run(Agent("other", model=ScriptedModel(["x"])), parent_id, at=1,
                       store=store)
    assert [r.run_id for r in await store.list_runs()] == [parent_id]


async def test_fork_history_is_intact_when_the_fork_fails_live() -> None:
    store = MemoryStore()
    parent_id = await recorded_run(store)
    broken = ScriptedModel([*SCRIPT[:1], ModelError("quota", status=429, retryable=False)])
    with pytest.raises(ModelError) as err:
        await fork_run(agent_with(), parent_id, at=3, store=store, model=broken)
    fork_id = err.value.run_id
    assert fork_id is not None and fork_id != parent_id
    fork = await store.get_run(fork_id)
    assert fork.status == "failed" and fork.metadata["fork"]["parent"] == parent_id
    assert len(await store.read_journal(fork_id)) == 3


async def test_replay_needs_no_model_credentials() -> None:
    """A run recorded with a hosted model replays in CI without its API key."""
    store = MemoryStore()
    recorded = agent_with(ScriptedModel(SCRIPT, name="openai:gpt-4o-mini"))
    run_id = (await recorded.run("weather?", store=store)).run_id
    hosted = agent_with(None, script=SCRIPT).clone(model="openai:gpt-4o-mini")
    report = await replay_run(hosted, run_id, store=store)  # no OPENAI_API_KEY is set
    assert report.identical, report


async def test_replay_reads_approval_decisions_from_the_journal() -> None:
    from keel import ApprovalRequired
    from keel.runtime import decide_approval
    from keel.store import TaskFilter

    wired: list[int] = []

    @tool(risk="irreversible")
    def wire(amount: int) -> str:
        """Send money."""
        wired.append(amount)
        return f"sent {amount}"

    agent = Agent("pay", model=ScriptedModel([call("wire", {"amount": 50}), "done"]),
                  tools=[wire])
    store = MemoryStore()
    with pytest.raises(ApprovalRequired) as info:
        await agent.run("pay", store=store)
    run_id = info.value.run_id
    assert run_id is not None
    [task] = await store.list_tasks(TaskFilter(kind="approval"))
    await decide_approval(task.task_id, store=store, approve=True, by="ann")
    await agent.resume(run_id, store=store)
    report = await replay_run(agent.clone(model=NoModel()), run_id, store=store)
    assert report.identical, report
    assert report.unused_steps == ()  # the decision counts as read
    assert report.steps_recorded == report.steps_replayed == 4
    assert wired == [50]
    denied = await replay_run(agent.clone(model=NoModel(), tools=[]), run_id, store=store)
    assert not denied.identical

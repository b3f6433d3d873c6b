"""`keel run`: live steps, the summary, --json, --log-json, and every way it can fail."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from keel.store import RunRecord, open_store
from tests.cli.conftest import BUDGET, EXAMPLES, STRUCTURED, TOOL_USE, InvokeResult

Keel = Callable[..., InvokeResult]


def stored(url: str, run_id: str) -> RunRecord:
    async def get() -> RunRecord:
        async with open_store(url) as s:
            return await s.get_run(run_id)

    return asyncio.run(get())


def run_id_of(output: str) -> str:
    """The id from the live view's first line: `▶ run ID · agent NAME`."""
    line = next(line for line in output.splitlines() if line.startswith("▶"))
    return line.split()[2]


def test_run_shows_steps_live_and_a_summary(keel: Keel, store: str) -> None:
    r = keel("--store", store, "run", TOOL_USE, "Which is warmer?")
    assert r.exit_code == 0, r
    out = r.stdout
    assert "I'll look up both cities at once." in out  # the model's thought
    assert 'get_weather {"city": "Paris"}' in out  # each call with its arguments
    assert 'get_weather {"city": "Tokyo"}' in out
    assert '"temp_c": 24' in out  # each observation
    assert "turn 0" in out and "tokens · $0.0000" in out  # tokens and cost per model turn
    assert "run completed" in out
    assert "Tokyo is warmer" in out
    run_id = run_id_of(out)
    assert run_id in out.split("run completed")[1]  # the summary names the run
    record = stored(store, run_id)
    assert record.status == "completed"
    assert record.target == TOOL_USE  # absolute path: `keel resume` works from anywhere
    assert r.stderr == ""


def test_store_option_is_accepted_after_the_command(keel: Keel, store: str) -> None:
    r = keel("run", TOOL_USE, "q", "--store", store)
    assert r.exit_code == 0, r
    assert stored(store, run_id_of(r.stdout)).status == "completed"


def test_default_store_comes_from_keel_store(keel: Keel, tmp_path: Path) -> None:
    r = keel("run", TOOL_USE, "q")  # tests/conftest.py points KEEL_STORE into tmp_path
    assert r.exit_code == 0, r
    assert (tmp_path / "default-runs.db").exists()
    assert run_id_of(r.stdout) in keel("runs", "list").stdout


def test_json_prints_only_the_result(keel: Keel, store: str) -> None:
    r = keel("--store", store, "run", "--json", TOOL_USE, "q")
    assert r.exit_code == 0, r
    data = json.loads(r.stdout)
    assert data["status"] == "completed"
    assert data["agent"] == "weather"
    assert data["steps"] == 6
    assert "Tokyo is warmer" in data["output"]
    assert set(data["usage"]) >= {"input_tokens", "output_tokens", "cost_usd"}
    assert r.stderr == ""


def test_structured_output_shows_the_rejected_answer(keel: Keel, store: str) -> None:
    r = keel("--store", store, "run", STRUCTURED, "charged twice")
    assert r.exit_code == 0, r
    assert '"priority": 9' in r.stdout
    assert "did not match the output type" in r.stdout
    assert '"priority": 4' in r.stdout.split("run completed")[1]


def test_structured_output_json(keel: Keel, store: str) -> None:
    r = keel("--store", store, "run", "--json", STRUCTURED, "charged twice")
    assert json.loads(r.stdout)["output"] == {
        "category": "billing", "priority": 4, "summary": "Pro customer charged twice this month"}


def test_a_failed_run_exits_1_naming_run_step_and_next_command(keel: Keel, store: str) -> None:
    r = keel("--store", store, "run", BUDGET, "loop")
    assert r.exit_code == 1, r
    run_id = run_id_of(r.stdout)
    err = r.stderr
    assert "error: BudgetExceeded: budget exceeded: steps used 10 of 10" in err
    assert "Budget(max_steps=...)" in err  # the message names the fix
    assert f"run {run_id}" in err and "step poller/turn:5/model" in err
    assert f"keel runs show {run_id}" in err
    assert "Traceback" not in r.output
    assert stored(store, run_id).status == "failed"


def test_a_failed_run_with_json(keel: Keel, store: str) -> None:
    r = keel("--store", store, "run", "--json", BUDGET, "loop")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["status"] == "failed"
    assert data["error"]["type"] == "BudgetExceeded"
    assert data["error"]["step_key"] == "poller/turn:5/model"
    assert stored(store, data["run_id"]).status == "failed"


def test_missing_api_key(keel: Keel, store: str, tmp_path: Path,
                         write_module: Callable[[str, str], Path]) -> None:
    path = write_module("hosted", """
        from keel import Agent
        agent = Agent("a", model="openai:gpt-4o-mini")
    """)
    r = keel("--store", store, "run", f"{path}:agent", "hi")
    assert r.exit_code == 2, r
    assert "error:" in r.stderr and "OPENAI_API_KEY" in r.stderr
    assert not (tmp_path / "runs.db").exists()  # nothing is written before the model resolves


def test_unknown_model_id_at_import(keel: Keel, write_module: Callable[[str, str], Path]) -> None:
    path = write_module("badmodel", 'from keel import Agent\nagent = Agent("a", model="nope:x")\n')
    r = keel("run", f"{path}:agent", "hi")
    assert r.exit_code == 2, r
    assert "unknown model provider 'nope'" in r.stderr
    assert "Traceback" not in r.output


def test_unknown_model_id_from_keel_model(keel: Keel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_MODEL", "gpt-4o")
    r = keel("run", f"{EXAMPLES / 'self_correction.py'}:agent", "hi")
    assert r.exit_code == 2, r
    assert "has no provider prefix" in r.stderr


def test_hostile_input_is_printed_literally(keel: Keel, store: str, echo_agent: str) -> None:
    hostile = "[bold red]x[/] \x1b[31mRED\x1b[0m \u202eevil"
    r = keel("--store", store, "run", echo_agent, hostile)
    assert r.exit_code == 0, r
    assert "[bold red]x[/]" in r.stdout  # markup shown, not interpreted
    assert "\\x1b[31mRED\\x1b[0m" in r.stdout  # escape codes shown, not sent to the terminal
    assert "\\u202eevil" in r.stdout
    assert "\x1b" not in r.output and "\u202e" not in r.output
    shown = keel("--store", store, "runs", "show", run_id_of(r.stdout))
    assert shown.exit_code == 0, shown
    assert "[bold red]x[/]" in shown.stdout and "\x1b" not in shown.output


def test_hostile_input_in_json_round_trips(keel: Keel, store: str, echo_agent: str) -> None:
    hostile = "[bold red]x[/] \x1b[31mRED"
    r = keel("--store", store, "run", "--json", echo_agent, hostile)
    assert r.exit_code == 0, r
    assert "\x1b" not in r.stdout
    assert json.loads(r.stdout)["output"] == hostile


def test_a_one_megabyte_input_is_run_and_shown_cut(keel: Keel, store: str,
                                                  echo_agent: str) -> None:
    big = "y" * 1_000_000
    r = keel("--store", store, "run", echo_agent, big)
    assert r.exit_code == 0, r
    assert len(r.stdout) < 20_000
    assert "more characters]" in r.stdout
    run_id = run_id_of(r.stdout)
    assert stored(store, run_id).input == big  # stored whole
    shown = keel("--store", store, "runs", "show", run_id)
    assert shown.exit_code == 0 and len(shown.stdout) < 30_000


def test_input_from_stdin(keel: Keel, store: str, echo_agent: str) -> None:
    r = keel("--store", store, "run", echo_agent, "-", input="hello from stdin\n")
    assert r.exit_code == 0, r
    assert "hello from stdin" in r.stdout.split("run completed")[1]


def test_log_json_writes_structured_step_logs(keel: Keel, store: str, tmp_path: Path) -> None:
    logger = logging.getLogger("keel")
    handlers, level = list(logger.handlers), logger.level
    log = tmp_path / "steps.jsonl"
    r = keel("--store", store, "run", "--log-json", str(log), TOOL_USE, "q")
    assert r.exit_code == 0, r
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["step_key"] for line in lines] == [
        "weather/turn:0/model", "weather/turn:0/tool:get_weather#0",
        "weather/turn:0/tool:get_weather#1", "weather/turn:1/model",
        "weather/turn:1/tool:calculate#0", "weather/turn:2/model"]
    assert {line["run_id"] for line in lines} == {run_id_of(r.stdout)}
    assert logger.handlers == handlers and logger.level == level  # detached afterwards


def test_log_json_to_an_unwritable_path(keel: Keel, store: str, tmp_path: Path) -> None:
    r = keel("--store", store, "run", "--log-json", str(tmp_path), TOOL_USE, "q")
    assert r.exit_code == 2, r
    assert "cannot write the step log" in r.stderr


INTERRUPTED = '''
    from pathlib import Path

    from keel import Agent, tool
    from keel.testing import FunctionModel, call
    from keel.core import ModelResponse

    FLAG = Path(__file__).with_name("go-on")


    @tool(risk="read")
    def step(n: int) -> int:
        """Count."""
        return n


    def reply(messages, tools, settings):
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn == 0:
            return ModelResponse(parts=(call("step", {"n": 1}),))
        if not FLAG.exists():
            raise KeyboardInterrupt  # as if Ctrl-C arrived mid-run
        return "finished"


    agent = Agent("ctrlc", model=FunctionModel(reply), tools=[step])
'''


def test_ctrl_c_exits_130_and_resume_continues(keel: Keel, store: str, tmp_path: Path,
                                               write_module: Callable[[str, str], Path]) -> None:
    path = write_module("interrupted", INTERRUPTED)
    r = keel("--store", store, "run", f"{path}:agent", "go")
    assert r.exit_code == 130, r
    run_id = run_id_of(r.stdout)
    assert f"keel resume {run_id}" in r.stderr
    assert stored(store, run_id).status == "cancelled"
    (tmp_path / "go-on").touch()
    resumed = keel("--store", store, "resume", run_id)
    assert resumed.exit_code == 0, resumed
    assert "(replayed)" in resumed.stdout
    assert "finished" in resumed.stdout and "2 replayed from the journal" in resumed.stdout


def test_an_unexpected_exception_is_one_line_not_a_traceback(
        keel: Keel, store: str, write_module: Callable[[str, str], Path]) -> None:
    path = write_module("buggy", '''
        from keel import Agent
        from keel.testing import FunctionModel

        def reply(messages, tools, settings):
            raise RuntimeError("boom")

        agent = Agent("buggy", model=FunctionModel(reply))
    ''')
    r = keel("--store", store, "run", f"{path}:agent", "go")
    assert r.exit_code == 1, r
    # a model that raises is a ModelError of the run, with the run id and step key
    assert "ModelError" in r.stderr and "RuntimeError: boom" in r.stderr
    assert "buggy/turn:0/model" in r.stderr and "keel runs show" in r.stderr
    assert "Traceback" not in r.output


def test_version_and_help(keel: Keel) -> None:
    assert keel("--version").stdout.startswith("keel ")
    out = keel("--help").stdout
    assert "run" in out and "resume" in out and "demo" in out and "Exit codes" in out


@pytest.mark.parametrize("prompt", ["", "   "])
def test_an_empty_input_is_refused_with_one_line_and_no_run(keel: Keel, store: str,
                                                            prompt: str) -> None:
    r = keel("--store", store, "run", TOOL_USE, prompt)
    assert r.exit_code == 2, r
    assert "input is empty" in r.stderr + r.stdout

    # Refused before the store is opened: the SQLite file was not even created.
    assert not Path(store.removeprefix("sqlite:///")).exists()

"""Proof: the planted corpus of personal data and secrets, carried through real runs on a
SQLite store, comes out of the log lines, the escalation packets and the exports redacted as the
policy says, while the tool that needs the real value receives it.

Assertions are on bytes: the stored packet rows read with sqlite3, the export file written by
``keel runs export``, the whole SQLite file an export is imported into, the stdout of ``keel
runs show --json``, and the formatted output of real log handlers.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel import Escalate
from keel.cli import app
from keel.guard import DataPolicy, TaintGuard
from keel.runtime import resolve_escalation
from keel.store import TaskFilter, open_store
from tests.guard._planted import (
    CORPUS,
    PII,
    SECRETS,
    Planted,
    PlantedRun,
    assert_no_leak,
    captured_logs,
    needles,
    packet_rows,
    planted_agent,
    run_planted,
    sqlite_bytes,
)

HASH_KEY = "test-only-hash-key-0123456789abcdef"


def _masked(text: str, item: Planted) -> bool:
    """Whether ``text`` shows the item's mask (keel's older secret mask counts for secrets:
    it runs first, in the journal)."""
    return "[" + item.kind.upper() in text or (item in SECRETS and "[REDACTED]" in text)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[PlantedRun], str, str]:
    """Every corpus item through a real run on one SQLite store, with the default policy;
    the logs captured as two real handlers formatted them."""
    import asyncio

    db = tmp_path_factory.mktemp("planted") / "runs.db"
    policy = DataPolicy()

    async def all_runs() -> list[PlantedRun]:
        return [await run_planted(item, policy, db) for item in CORPUS]

    with captured_logs(policy) as (json_out, text_out):
        runs = asyncio.run(all_runs())
    return db, runs, json_out.getvalue(), text_out.getvalue()


def test_the_corpus_is_planted_in_clear_where_the_policy_allows_it(
        planted: tuple[Path, list[PlantedRun], str, str]) -> None:
    """The test can fail: personal data is kept in the journal by default, so the store's file
    holds every PII item in clear; the checks below are not vacuous."""
    db, runs, _, _ = planted
    blob = sqlite_bytes(db)
    missing = [i.id for i in PII if not any(n in blob for n in needles(i))]
    assert not missing
    assert len(runs) == len(CORPUS) == len(PII) + len(SECRETS)


def test_the_tool_that_needs_the_value_receives_it_in_clear(
        planted: tuple[Path, list[PlantedRun], str, str]) -> None:
    _, runs, _, _ = planted
    for run in runs:
        assert run.received == [run.item.value], run.item.id


def test_escalation_packets_in_the_store_hold_no_planted_value(
        planted: tuple[Path, list[PlantedRun], str, str]) -> None:
    db, runs, _, _ = planted
    rows = packet_rows(db)
    assert rows.count(b'"escalation_id"') >= len(runs)  # a task and an intent per run
    assert_no_leak(rows, CORPUS, "the stored escalation packets")
    with sqlite3.connect(db) as conn:
        packets = [json.loads(r[0]) for r in conn.execute(
            "SELECT data FROM tasks WHERE kind = 'escalation'")]
    by_run = {p["run_id"]: p for p in packets}
    for run in runs:  # the packet still tells the person what happened, masked
        packet = by_run[run.run_id]
        assert _masked(packet["request"], run.item), (run.item.id, packet["request"])
        assert _masked(packet["reason"], run.item), (run.item.id, packet["reason"])
        assert any(_masked(e["content"], run.item) for e in packet["evidence"]), run.item.id


def test_log_lines_hold_no_planted_value(
        planted: tuple[Path, list[PlantedRun], str, str]) -> None:
    _, runs, json_lines, text_lines = planted
    for output, where in ((json_lines, "JSON log lines"), (text_lines, "text log lines")):
        assert output.count("sending documents to") == len(runs), where
        assert_no_leak(output.encode(), CORPUS, where)
    sent = [json.loads(line) for line in json_lines.splitlines()
            if '"keel.app.payments"' in line]
    for line, run in zip(sent, runs, strict=True):
        assert _masked(line["message"], run.item) and _masked(line["destination"], run.item)


def test_keel_runs_export_and_show_json_hold_no_planted_value(
        planted: tuple[Path, list[PlantedRun], str, str], tmp_path: Path) -> None:
    db, runs, _, _ = planted
    cli = CliRunner()
    target = tmp_path / "imported.db"
    for run in runs:
        out = tmp_path / f"{run.run_id}.json"
        done = cli.invoke(app, ["runs", "export", run.run_id, "-o", str(out),
                                "--store", f"sqlite:///{db}"], catch_exceptions=False)
        assert done.exit_code == 0, done.output
        assert_no_leak(out.read_bytes(), [run.item], f"the export of {run.item.id}")
        assert _masked(out.read_text(), run.item)
        shown = cli.invoke(app, ["runs", "show", run.run_id, "--json",
                                 "--store", f"sqlite:///{db}"], catch_exceptions=False)
        assert shown.exit_code == 0, shown.output
        assert_no_leak(shown.stdout.encode(), [run.item], f"runs show --json of {run.item.id}")
        done = cli.invoke(app, ["runs", "import", str(out), "--store", f"sqlite:///{target}"],
                          catch_exceptions=False)
        assert done.exit_code == 0, done.output
    assert_no_leak(sqlite_bytes(target), CORPUS, "a store made from the exports")
    listed = cli.invoke(app, ["runs", "list", "--json", "--limit", "1000",
                              "--store", f"sqlite:///{db}"], catch_exceptions=False)
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) == len(runs)
    assert_no_leak(listed.stdout.encode(), CORPUS, "runs list --json")


async def test_a_resolved_escalation_goes_on_with_the_real_values(tmp_path: Path) -> None:
    """Masking the packet does not touch the run: after a person resumes it, the run ends."""
    item = next(i for i in PII if i.kind == "iban")
    received: list[str] = []
    agent = planted_agent(item, DataPolicy(), received)
    db = tmp_path / "runs.db"
    async with open_store(f"sqlite:///{db}") as store:
        with pytest.raises(Escalate) as info:
            await agent.run(item.text, store=store)
        [task] = await store.list_tasks(TaskFilter(kind="escalation"))
        await resolve_escalation(task.task_id, store=store, by="ann", action="resume",
                                 note="verified")
        result = await agent.resume(info.value.run_id or "", store=store)
    assert result.output == "Done."
    assert received == [item.value]


async def test_hashed_packets_let_a_person_match_a_customer_across_runs(tmp_path: Path) -> None:
    """Per tenant: one tenant's packets hash e-mail addresses with the configured key, so the
    same customer gives the same token in two runs; another tenant's are masked."""
    item = next(i for i in PII if i.id == "email-0")
    policy = DataPolicy(tenants={"acme": {"packets": {"email": "hash"}}}, hash_key=HASH_KEY,
                        tenant_of=lambda record: "acme" if record.agent == "acme" else None)
    db = tmp_path / "runs.db"
    first = await run_planted(item, policy, db, agent="acme")
    second = await run_planted(item, policy, db, agent="acme")
    other = await run_planted(item, policy, db, agent="globex")
    async with open_store(f"sqlite:///{db}") as store:
        tasks = {t.run_id: t.data for t in await store.list_tasks(TaskFilter(kind="escalation"))}
    token = _email_token(tasks[first.run_id]["request"])
    assert token.startswith("[EMAIL:") and len(token) > len("[EMAIL:]")
    assert token == _email_token(tasks[second.run_id]["request"])
    assert _email_token(tasks[other.run_id]["request"]) == "[EMAIL]"
    assert_no_leak(packet_rows(db), [item], "hashed packets")


def _email_token(text: str) -> str:
    start = text.index("[EMAIL")
    return text[start:text.index("]", start) + 1]


def test_an_unmasked_export_is_a_faithful_copy_and_a_blocking_policy_refuses_the_export(
        planted: tuple[Path, list[PlantedRun], str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    db, runs, _, _ = planted
    run = next(r for r in runs if r.item.kind == "card")
    cli = CliRunner()
    out = tmp_path / "clear.json"
    done = cli.invoke(app, ["runs", "export", run.run_id, "-o", str(out), "--unmasked",
                            "--store", f"sqlite:///{db}"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert run.item.value.encode() in out.read_bytes()  # as stored: the journal keeps PII
    (tmp_path / "strict_policy.py").write_text(
        "from keel.guard import DataPolicy\n"
        "POLICY = DataPolicy({'exports': {'card': 'block'}})\n", encoding="utf-8")
    monkeypatch.setenv("KEEL_DATA_POLICY", f"{tmp_path / 'strict_policy.py'}:POLICY")
    refused = tmp_path / "refused.json"
    done = cli.invoke(app, ["runs", "export", run.run_id, "-o", str(refused),
                            "--store", f"sqlite:///{db}"], catch_exceptions=False)
    assert done.exit_code != 0 and "card" in done.output and "blocked" in done.output
    assert not refused.exists()
    assert_no_leak(done.output.encode(), [run.item], "the refusal")
    monkeypatch.setenv("KEEL_DATA_POLICY", f"{tmp_path / 'strict_policy.py'}:NOPE")
    done = cli.invoke(app, ["runs", "show", run.run_id, "--json", "--store",
                            f"sqlite:///{db}"], catch_exceptions=False)
    assert done.exit_code != 0 and "KEEL_DATA_POLICY" in done.output


# ------------------------------------------------------- inside the loop: the guard seam


async def test_the_data_guard_masks_answers_and_what_the_journal_stores(tmp_path: Path) -> None:
    """Through the guardrail seam, with a policy that keeps personal data out of the journal:
    the user's input, each tool output and the answer are stored masked, the model sees them
    masked, and the tool that needs the value still receives it in clear."""
    items = [i for i in PII if i.kind in ("card", "email", "iban", "us_ssn")][:8]
    policy = DataPolicy({"journal": {"pii": "mask"}})
    db = tmp_path / "runs.db"
    for item in items:
        await _guarded_run(item, policy, db)
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT input || output FROM runs").fetchall()
        tools = conn.execute("SELECT data FROM journal WHERE kind = 'tool' AND phase = "
                             "'result'").fetchall()
        guards = conn.execute("SELECT data FROM journal WHERE key LIKE '%/guard:%'").fetchall()
    blob = "\n".join(r[0] for r in stored + tools + guards).encode()
    assert_no_leak(blob, items, "stored inputs, outputs, tool results and guard records")
    assert len(guards) >= 3 * len(items)  # input, tool output, answer: journaled decisions


async def _guarded_run(item: Planted, policy: DataPolicy, db: Path) -> None:
    from keel import Agent, tool
    from keel.guard import DataGuard
    from keel.testing import ScriptedModel, call

    received: list[str] = []

    @tool
    def lookup(customer_id: str) -> str:
        """Look a customer up."""
        return f"customer {customer_id}: {item.text}"

    @tool
    def send_to(destination: str) -> str:
        """Send the documents."""
        received.append(destination)
        return "sent"

    model = ScriptedModel([call("lookup", {"customer_id": "c-1"}),
                           call("send_to", {"destination": item.value}),
                           f"Done: {item.text}"], record_requests=True)
    # The scripted model sends the real value although the guard masked it from its view; a
    # real model could not. Taint would rightly stop that call (the value is in no message
    # the model saw), so it is exempted here: this test is about what the tool receives.
    agent = Agent("support", model=model, tools=[lookup, send_to],
                  middleware=[DataGuard(policy), TaintGuard(exempt=["send_to"])])
    async with open_store(f"sqlite:///{db}") as store:
        result = await agent.run(f"Hello: {item.text}", store=store)
    assert received == [item.value], item.id
    assert _masked(str(result.output), item), (item.id, result.output)
    seen = "\n".join(m.text for request in model.requests for m in request)
    assert_no_leak(seen.encode(), [item], f"what the model saw ({item.id})")


async def test_the_data_guard_blocks_a_blocked_kind_in_the_answer() -> None:
    from keel import Agent, GuardrailTripped, MemoryStore
    from keel.guard import DataGuard
    from keel.testing import ScriptedModel

    item = next(i for i in PII if i.kind == "card")
    agent = Agent("support", model=ScriptedModel([f"Your card: {item.text}"]),
                  middleware=[DataGuard(DataPolicy({"answers": {"card": "block"}}))])
    store = MemoryStore()
    with pytest.raises(GuardrailTripped) as info:
        await agent.run("what card do I have?", store=store)
    assert "card" in str(info.value)
    assert_no_leak(str(info.value).encode(), [item], "the error")
    journal = await store.read_journal(info.value.run_id or "")
    assert_no_leak(json.dumps([e.data for e in journal]).encode(), [item], "the journal")


def test_keel_run_log_json_writes_step_logs_scrubbed(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    item = next(i for i in PII if i.kind == "iban")
    module = tmp_path / "payments_agent.py"
    module.write_text(
        "import logging\n"
        "from keel import Agent, tool\n"
        "from keel.testing import ScriptedModel, call\n\n\n"
        "@tool\n"
        "def pay(iban: str) -> str:\n"
        '    """Pay."""\n'
        '    logging.getLogger("keel.app").info("paying %s", iban)\n'
        "    PAID.append(iban)\n"
        '    return "paid"\n\n\n'
        "PAID = []\n"
        f"agent = Agent('payer', model=ScriptedModel([call('pay', {{'iban': {item.value!r}}}), "
        "'ok']), tools=[pay])\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEL_DATA_POLICY", raising=False)
    log = tmp_path / "steps.jsonl"
    done = CliRunner().invoke(app, ["run", f"{module}:agent", "pay it", "--log-json", str(log),
                                    "--store", f"sqlite:///{tmp_path / 'runs.db'}"],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.output
    lines = log.read_text(encoding="utf-8")
    assert '"paying [IBAN]"' in lines
    assert_no_leak(lines.encode(), [item], "keel run --log-json")

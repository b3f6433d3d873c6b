"""``keel feedback`` and ``keel runs export --as-dataset`` against a real store file: what is
written, what is listed (comments masked), the dataset lines ``Case.from_dict`` reads back
with personal data masked, and every refusal (changing nothing)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from keel import Agent, Escalate, tool
from keel.evals import Case
from keel.store import Feedback, open_store
from keel.testing import ScriptedModel, call
from tests.cli.conftest import Invoke

EMAIL = "jane.doe@example.com"


def _stored(url: str) -> list[Feedback]:
    async def go() -> list[Feedback]:
        async with open_store(url) as store:
            return await store.list_feedback()
    return asyncio.run(go())


def _run(url: str, text: str, answer: str = "ok", *, agent: str = "desk",
         tenant: str | None = "acme") -> str:
    result = Agent(agent, model=ScriptedModel([answer])).run_sync(text, store=url,
                                                                  tenant=tenant)
    return result.run_id


def _escalated(url: str) -> str:
    @tool(risk="read")
    def check_fraud(order: str) -> str:
        """Check an order."""
        raise Escalate("looks fraudulent")

    agent = Agent("fraud", model=ScriptedModel([call("check_fraud", {"order": "o1"}), "ok"]),
                  tools=[check_fraud])
    with pytest.raises(Escalate) as info:
        agent.run_sync("check order o1", store=url, tenant="acme")
    return info.value.run_id or ""


def test_give_and_list(keel: Invoke, store: str) -> None:
    run_id = _run(store, "hello")
    out = keel("feedback", run_id, "--down", "--score", "0.2", "--by", "ana", "--comment",
               f"wrong, write to {EMAIL}", "--store", store)
    assert out.exit_code == 0, out
    assert f"on run {run_id}: thumbs down, score 0.2, a comment (by ana)" in out.stdout
    [kept] = _stored(store)
    assert (kept.run_id, kept.thumbs, kept.score, kept.by, kept.tenant) == \
        (run_id, "down", 0.2, "ana", "acme")
    explicit = keel("feedback", "give", run_id, "--up", "--by", "bob", "--store", store,
                    "--json")
    assert explicit.exit_code == 0, explicit
    assert json.loads(explicit.stdout)["thumbs"] == "up"

    listed = keel("feedback", "list", "--store", store)
    assert listed.exit_code == 0, listed
    assert "[EMAIL]" in listed.stdout and EMAIL not in listed.stdout
    assert "2 verdict(s) on 1 run(s): 1 up, 1 down" in listed.stdout
    data = json.loads(keel("feedback", "list", "--negative", "--json", "--store",
                           store).stdout)
    assert [(i["by"], i["comment"]) for i in data["items"]] == \
        [("ana", "wrong, write to [EMAIL]")]
    assert data["summary"]["negative_rate"] == 0.5
    assert json.loads(keel("feedback", "list", "--run", "nope", "--json", "--store",
                           store).stdout)["items"] == []
    assert json.loads(keel("feedback", "list", "--tenant", "globex", "--json", "--store",
                           store).stdout)["items"] == []
    assert json.loads(keel("feedback", "list", "--since", "1h", "--json", "--store",
                           store).stdout)["summary"]["records"] == 2


@pytest.mark.parametrize(("args", "fix"), [
    (["--up", "--down"], "not both"),
    ([], "feedback needs thumbs"),
    (["--score", "2"], "from 0 to 1"),
    (["--score", "nan"], "from 0 to 1"),
    (["--comment", ""], "feedback needs thumbs"),
    (["--comment", "x" * 10_240], "at most 4000 characters"),
    (["--up", "--by", ""], "by= is empty"),
    (["--up", "--tenant", "globex"], "no run"),
])
def test_refusals_change_nothing(keel: Invoke, store: str, args: list[str], fix: str) -> None:
    run_id = _run(store, "hello")
    out = keel("feedback", run_id, *args, "--store", store)
    assert out.exit_code == 2, out
    assert fix in " ".join(out.stderr.split()), out
    assert _stored(store) == []


def test_an_unknown_run_or_store_is_not_found(keel: Invoke, store: str,
                                             tmp_path: Path) -> None:
    _run(store, "hello")
    out = keel("feedback", "no-such-run", "--up", "--store", store)
    assert out.exit_code == 2 and "no-such-run" in out.stderr, out
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    out = keel("feedback", "r1", "--up", "--store", missing)
    assert out.exit_code == 2 and "no run store" in out.stderr, out
    assert not (tmp_path / "none.db").exists()
    assert keel("feedback", "list", "--since", "yesterday", "--store", store).exit_code == 2
    out = keel("runs", "export", "--as-dataset", str(tmp_path / "d.jsonl"), "--store", missing)
    assert out.exit_code == 2 and "no run store" in out.stderr, out
    assert not (tmp_path / "d.jsonl").exists() and not (tmp_path / "none.db").exists()


def _cases(path: Path) -> list[Case]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Case.from_dict(json.loads(line), source=str(path), line=n)
            for n, line in enumerate(lines, 1)]


@pytest.fixture
def harvested(keel: Invoke, store: str) -> dict[str, str]:
    runs = {"liked": _run(store, f"Where is my order? Mail {EMAIL}", "Monday"),
            "disliked": _run(store, "Card 4111 1111 1111 1111 charged twice", "no"),
            "escalated": _escalated(store),
            "foreign": _run(store, "bonjour", tenant="globex"),
            "router": _run(store, "route me", agent="router")}
    for name, flag in (("liked", "--up"), ("disliked", "--down")):
        assert keel("feedback", runs[name], flag, "--store", store).exit_code == 0
    return runs


@pytest.mark.parametrize(("args", "want"), [
    ([], {"liked", "disliked", "escalated", "foreign", "router"}),
    (["--feedback", "negative"], {"disliked"}),
    (["--feedback", "positive"], {"liked"}),
    (["--escalated"], {"escalated"}),
    (["--approval"], set()),
    (["--agent", "router"], {"router"}),
    (["--tenant", "globex"], {"foreign"}),
    (["--status", "suspended"], {"escalated"}),
    (["--since", "2999-01-01"], set()),
    (["--limit", "1"], {"router"}),
])
def test_export_as_dataset_filters(keel: Invoke, store: str, tmp_path: Path,
                                   harvested: dict[str, str], args: list[str],
                                   want: set[str]) -> None:
    path = tmp_path / "cases.jsonl"
    out = keel("runs", "export", "--as-dataset", str(path), *args, "--store", store)
    assert out.exit_code == 0, out
    names = {v: k for k, v in harvested.items()}
    assert {names[c.id] for c in _cases(path)} == want
    assert f"wrote {len(want)} case(s)" in out.stderr


def test_export_as_dataset_masks_personal_data(keel: Invoke, store: str, tmp_path: Path,
                                               harvested: dict[str, str]) -> None:
    path = tmp_path / "cases.jsonl"
    assert keel("runs", "export", "--as-dataset", str(path), "--store", store).exit_code == 0
    text = path.read_text(encoding="utf-8")
    assert EMAIL not in text and "4111 1111" not in text and "[EMAIL]" in text
    by_id = {c.id: c for c in _cases(path)}
    assert by_id[harvested["liked"]].expected == "Monday"
    assert by_id[harvested["escalated"]].expect.escalate is True
    clear = keel("runs", "export", "--as-dataset", "-", "--no-redact", "--store", store)
    assert clear.exit_code == 0 and EMAIL in clear.stdout and "IN CLEAR" in clear.stderr


@pytest.mark.parametrize(("args", "fix"), [
    (["--as-dataset", "x.jsonl", "RUN1"], "give no RUN_ID"),
    (["--as-dataset", "x.jsonl", "--feedback", "meh"], "'negative' or 'positive'"),
    (["--as-dataset", "x.jsonl", "--status", "done"], "not a run status"),
    (["--as-dataset", "x.jsonl", "--since", "whenever"], "not a duration"),
    (["--as-dataset", "x.jsonl", "--tenant", ""], "tenant= is empty"),
    (["RUN1", "--feedback", "negative"], "only go with --as-dataset"),
    ([], "give the RUN_ID"),
    (["--as-dataset", "."], "is a directory"),
])
def test_export_refusals(keel: Invoke, store: str, tmp_path: Path, args: list[str],
                         fix: str) -> None:
    _run(store, "hello")
    out = keel("runs", "export", *args, "--store", store)
    assert out.exit_code == 2, out
    assert fix in " ".join(out.stderr.split()), out
    assert not (tmp_path / "x.jsonl").exists()


def test_export_of_one_run_still_works(keel: Invoke, store: str) -> None:
    run_id = _run(store, "hello")
    out = keel("runs", "export", run_id, "--store", store)
    assert out.exit_code == 0, out
    data: dict[str, Any] = json.loads(out.stdout)
    assert data["run"]["run_id"] == run_id


def test_stats_shows_the_feedback_of_its_window(keel: Invoke, store: str) -> None:
    desk = [_run(store, f"q{i}") for i in range(3)]
    other = _run(store, "route me", agent="router")
    for run_id, flag in ((desk[0], "--up"), (desk[1], "--down"), (other, "--down")):
        assert keel("feedback", run_id, flag, "--store", store).exit_code == 0
    assert keel("feedback", desk[1], "--up", "--by", "second", "--store", store).exit_code == 0
    out = keel("stats", "--store", store)
    assert out.exit_code == 0, out
    assert "Feedback: 4 verdict(s) on 3 run(s): 2 up, 2 down, mean score -, negative rate " \
        "50.0%." in out.stdout
    data = json.loads(keel("stats", "--json", "--agent", "desk", "--store", store).stdout)
    assert (data["feedback"]["verdicts"], data["feedback"]["down"]) == (3, 1)
    later = json.loads(keel("stats", "--json", "--since", "2999-01-01", "--store",
                            store).stdout)
    assert later["feedback"]["verdicts"] == 0


def test_hostile_comments_are_shown_inert(keel: Invoke, store: str) -> None:
    run_id = _run(store, "hello")
    hostile = "[bold red]x[/] \x1b[31mRED\x1b[0m \u202eevil"
    assert keel("feedback", run_id, "--down", "--comment", hostile, "--store",
                store).exit_code == 0
    [kept] = _stored(store)
    assert kept.comment == hostile, "kept as written"
    out = keel("feedback", "list", "--store", store)
    assert out.exit_code == 0, out
    assert "\x1b" not in out.stdout and "\u202e" not in out.stdout
    assert "[bold red]x[/]" in out.stdout and "\\x1b[31mRED" in out.stdout

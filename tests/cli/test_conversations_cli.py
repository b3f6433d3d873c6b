"""``keel run --conversation``, ``keel runs list --conversation``, ``keel conversations show``
and ``keel conversations delete --yes`` (refused without --yes); bad ids are refused before
anything is stored."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from tests.cli.conftest import REPO, InvokeResult
from tests.cli.test_run import run_id_of

Keel = Callable[..., InvokeResult]
AGENT = f"{REPO / 'tests' / 'runtime' / '_conv_child.py'}:agent"


def _turns(keel: Keel, store: str, *texts: str, conversation: str = "c-1",
           extra: tuple[str, ...] = ()) -> list[str]:
    ids = []
    for text in texts:
        r = keel("--store", store, "run", AGENT, text, "--conversation", conversation, *extra)
        assert r.exit_code == 0, r
        ids.append(run_id_of(r.stdout))
    return ids


def test_run_continues_a_conversation_and_list_filters_on_it(keel: Keel, store: str) -> None:
    first, second = _turns(keel, store, "where is order 7?", "what did I ask?")
    _turns(keel, store, "elsewhere", conversation="c-2")
    r = keel("--store", store, "run", AGENT, "no thread")
    assert r.exit_code == 0
    last = json.loads(keel("--store", store, "runs", "show", second, "--json").stdout)
    assert last["conversation"] == "c-1"
    assert last["output"] == "I have seen 2 user messages: where is order 7? | what did I ask?"
    listed = json.loads(keel("--store", store, "runs", "list", "--conversation", "c-1",
                             "--json").stdout)
    assert [d["run_id"] for d in listed] == [second, first]
    table = keel("--store", store, "runs", "list", "--conversation", "c-2").stdout
    assert first not in table and "weather" not in table
    panel = keel("--store", store, "runs", "show", first).stdout
    assert "conversation" in panel and "c-1" in panel


def test_conversations_show(keel: Keel, store: str) -> None:
    first, second = _turns(keel, store, "where is order 7?", "thanks",
                           extra=("--tenant", "acme", "--user", "alice"))
    shown = keel("--store", store, "conversations", "show", "c-1")
    assert shown.exit_code == 0, shown
    assert first in shown.stdout and second in shown.stdout
    assert "call lookup" in shown.stdout and "order 7 left the warehouse" in shown.stdout
    data = json.loads(keel("--store", store, "conversations", "show", "c-1", "--json").stdout)
    assert [r["run_id"] for r in data["runs"]] == [first, second]
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "tool", "assistant",
                                                     "user", "assistant"]
    other = keel("--store", store, "conversations", "show", "c-1", "--tenant", "globex")
    assert other.exit_code == 2 and "no conversation 'c-1'" in other.stderr
    empty = json.loads(keel("--store", store, "conversations", "show", "nope", "--json").stdout)
    assert empty == {"conversation": "nope", "runs": [], "messages": []}


def test_conversations_delete_needs_yes(keel: Keel, store: str, tmp_path: Path) -> None:
    _turns(keel, store, "where is order 7?", "and the secret is SESAME-42")
    kept = _turns(keel, store, "another thread", conversation="c-2")
    refused = keel("--store", store, "conversations", "delete", "c-1")
    assert refused.exit_code == 2 and "add --yes" in refused.stderr
    assert len(json.loads(keel("--store", store, "runs", "list", "--json").stdout)) == 3
    done = keel("--store", store, "conversations", "delete", "c-1", "--yes", "--json")
    assert done.exit_code == 0, done
    assert json.loads(done.stdout) == {"conversation": "c-1", "deleted_runs": 2}
    listed = json.loads(keel("--store", store, "runs", "list", "--json").stdout)
    assert [d["run_id"] for d in listed] == kept
    with closing(sqlite3.connect(tmp_path / "runs.db")) as conn:
        rows = repr([conn.execute(f"SELECT * FROM {t}").fetchall()
                     for t in ("runs", "journal", "tasks")])
    assert "SESAME-42" not in rows and "another thread" in rows
    again = keel("--store", store, "conversations", "delete", "c-1", "--yes")
    assert again.exit_code == 0 and "deleted 0 run(s)" in again.stdout


def test_bad_conversation_ids_are_refused(keel: Keel, store: str, tmp_path: Path) -> None:
    for bad in ("", "x" * 300, "a\x1bb"):
        r = keel("--store", store, "run", AGENT, "hi", "--conversation", bad)
        assert r.exit_code == 2 and "conversation=" in r.stderr, r
        for command in (("conversations", "show", bad), ("conversations", "delete", bad),
                        ("runs", "list", "--conversation", bad)):
            r = keel("--store", store, *command)
            assert r.exit_code == 2 and "conversation" in r.stderr, (command, r)
    assert not (tmp_path / "runs.db").exists()


def test_another_tenant_cannot_continue_a_conversation(keel: Keel, store: str) -> None:
    _turns(keel, store, "mine", extra=("--tenant", "acme", "--user", "alice"))
    r = keel("--store", store, "run", AGENT, "let me in", "--conversation", "c-1",
             "--tenant", "globex", "--user", "mallory")
    assert r.exit_code == 2 and "belongs to another tenant or user" in r.stderr
    assert len(json.loads(keel("--store", store, "runs", "list", "--json").stdout)) == 1


def test_commands_on_a_missing_store(keel: Keel, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'none.db'}"
    shown = keel("--store", store, "conversations", "show", "c-1")
    assert shown.exit_code == 2 and "no conversation" in shown.stderr
    gone = keel("--store", store, "conversations", "delete", "c-1", "--yes")
    assert gone.exit_code == 0 and "deleted 0" in gone.stdout
    assert not (tmp_path / "none.db").exists()

"""How one earlier run becomes messages (``messages_of``), on journals the loop would not write
but a store may hold: nested agents' steps, damaged payloads, decisions without a note; and a
conversation step whose data is damaged."""

from __future__ import annotations

import pytest

from keel import MemoryStore, StoreError
from keel.core import stable_hash
from keel.runtime._budget import Budget, BudgetTracker
from keel.runtime._conversation import (
    ConversationTurn,
    conversation_history,
    messages_of,
    step_key,
)
from keel.runtime._journal import Journal
from keel.store import JournalEntry, RunRecord


def _entry(seq: int, key: str, kind: str, data: object) -> JournalEntry:
    return JournalEntry(seq=seq, key=key, phase="result", kind=kind, name="x", input_hash="",
                        data=data, created_at=1.0)


def _record(**changes: object) -> RunRecord:
    fields: dict[str, object] = {"run_id": "r1", "agent": "support", "status": "completed",
                                 "input": "hello", "created_at": 1.0, "updated_at": 1.0}
    fields.update(changes)
    return RunRecord(**fields)  # type: ignore[arg-type]


def _model(text: str = "", calls: tuple[tuple[str, str], ...] = ()) -> dict[str, object]:
    parts: list[dict[str, object]] = [{"type": "text", "text": text}] if text else []
    parts += [{"type": "tool_call", "call_id": cid, "tool_name": name, "arguments": "{}"}
              for cid, name in calls]
    return {"parts": parts, "usage": {}, "model": "m", "finish_reason": "stop"}


def test_odd_journals_become_well_formed_messages() -> None:
    entries = [
        _entry(0, "support/turn:0/model", "model", _model("thinking", (("c1", "lookup"),
                                                                       ("c2", "lookup")))),
        _entry(1, "support/turn:0/tool:lookup#1", "tool", "not a dict"),
        _entry(2, "support/escalation#0", "escalation", {"action": "resume", "note": " "}),
        _entry(3, "support/turn:1/model", "model", "damaged"),
        _entry(4, "support/helper/turn:0/model", "model", _model("a nested agent")),
        _entry(5, "support/turn:x/model", "model", _model("not a turn")),
        _entry(6, "support/escalation#1", "escalation", "damaged"),
        _entry(7, "support/escalation#2", "escalation", {"action": "dismiss"}),
        _entry(8, "support/turn:2/model", "model", _model("done")),
        _entry(9, "support/escalation#3", "escalation",
               {"action": "answer", "answer": {"refund": 5}}),
    ]
    messages = messages_of(ConversationTurn(record=_record(), status="failed",
                                            entries=entries))
    assert [m.role for m in messages] == ["user", "assistant", "tool", "user", "assistant",
                                          "assistant"]
    results = messages[2].parts
    assert [p.call_id for p in results] == ["c1", "c2"]  # type: ignore[union-attr]
    assert all(p.is_error and "status failed" in p.content  # type: ignore[union-attr]
               for p in results)
    assert messages[3].text == "[A human reviewed this conversation and says: (no note)]"
    assert messages[4].text == "done"
    assert messages[5].text == '{"refund": 5}'  # a person's answer, as the reply


def test_a_flow_run_contributes_its_output_once_completed() -> None:
    done = ConversationTurn(record=_record(agent="intake", output={"ticket": 7}),
                            status="completed")
    assert [m.text for m in messages_of(done)] == ["hello", '{"ticket": 7}']
    running = ConversationTurn(record=_record(agent="intake"), status="running")
    assert [m.text for m in messages_of(running)] == ["hello"]


@pytest.mark.parametrize("data", ["nonsense", {"runs": []}, {"conversation": "c", "runs": [[1]]},
                                  {"conversation": "c", "runs": "x"}])
async def test_a_damaged_conversation_step_is_an_error(data: object) -> None:
    store = MemoryStore()
    record = _record(conversation="c", status="running")
    await store.create_run(record)
    entry = JournalEntry(seq=0, key=step_key("support"), phase="result", kind="conversation",
                         name="c", input_hash=stable_hash(["c"]), data=data, created_at=1.0)
    journal = Journal(store, "r1", "support", [entry], BudgetTracker(Budget()))
    with pytest.raises(StoreError, match="conversation step is not readable"):
        await conversation_history(journal, store, record)


async def test_an_empty_recorded_step_gives_no_history() -> None:
    store = MemoryStore()
    record = _record(conversation="c", status="running")
    await store.create_run(record)
    entry = JournalEntry(seq=0, key=step_key("support"), phase="result", kind="conversation",
                         name="c", input_hash=stable_hash(["c"]),
                         data={"conversation": "c", "runs": []}, created_at=1.0)
    journal = Journal(store, "r1", "support", [entry], BudgetTracker(Budget()))
    assert await conversation_history(journal, store, record) == []

"""Completed runs of a conversation are rebuilt once per process: later turns reuse the
rebuild instead of reading and parsing every earlier journal again. The reuse must change
nothing the model is sent, and deleting the conversation drops the process's copies."""

from __future__ import annotations

from pathlib import Path

from keel import Conversation
from keel.runtime import _conversation, replay_run
from keel.store import SQLiteStore
from keel.testing import FunctionModel
from tests.runtime._conv_child import answer, support


async def test_reused_rebuilds_send_the_same_requests_and_delete_forgets_them(
        tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "runs.db") as store:
        chat = Conversation("c-cache", store=store, tenant="acme", user="alice")
        ids = [(await chat.send(support(), f"question {i} about order 7")).run_id
               for i in range(4)]
        assert all(i in _conversation._REBUILT for i in ids[:3])  # the earlier, completed turns
        warm = FunctionModel(answer)
        last = await chat.send(support(warm), "and now?")  # built from the process's copies
        _conversation.forget_rebuilt(ids)
        cold = FunctionModel(answer)
        # the next turn, every earlier run read from its journal this time
        again = await chat.send(support(cold), "and now?")
        n = len(warm.requests[0]) - 1
        assert warm.requests[0][:n] == cold.requests[0][:n]  # the same history, then more
        assert len(cold.requests[0]) > n + 1
        report = await replay_run(support(), last.run_id, store=store)
        assert report.identical, report  # replay reads the journals: the copies matched
        assert await chat.delete() == 6
        assert not any(r in _conversation._REBUILT for r in [*ids, last.run_id, again.run_id])

"""Record the workflow histories in tests/temporal/histories/ (run again, on purpose, when the
workflow changes in a way that old histories may not replay: that is what they guard).

    PYTHONPATH=src python -m tests.temporal.record_histories 127.0.0.1:7233
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from keel import RunError
from keel.runtime import decide_approval
from keel.store import SQLiteStore
from keel.temporal import (
    TemporalWorker,
    connect,
    history_json,
    run_result,
    start_run,
    workflow_id_for,
)
from tests.temporal import _agents

HERE = Path(__file__).with_name("histories")


async def _suspended(store: SQLiteStore, run_id: str) -> None:
    for _ in range(1200):
        try:
            if (await store.get_run(run_id)).status == "suspended":
                return
        except Exception:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"run {run_id} never suspended")


async def record(address: str) -> None:
    client = await connect(address)
    queue = f"keel-record-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteStore(Path(tmp) / "runs.db") as store, TemporalWorker(
                client, [_agents.adder(), _agents.payer()], store=store, task_queue=queue):
            runs: dict[str, str] = {}
            runs["tool_calls"] = await start_run(client, "adder", "add", task_queue=queue,
                                                 run_id="history-tool-calls")
            await run_result(client, runs["tool_calls"])
            runs["approval"] = await start_run(client, "payer", "pay", task_queue=queue,
                                               run_id="history-approval", poll_s=3600)
            await _suspended(store, runs["approval"])
            [task] = await store.list_tasks()
            await decide_approval(task.task_id, store=store, approve=True, by="ann")
            await run_result(client, runs["approval"])
            runs["budget"] = await start_run(client, "adder", "add", task_queue=queue,
                                             run_id="history-budget", max_steps=2)
            with contextlib.suppress(RunError):  # on purpose: the workflow's budget stops it
                await run_result(client, runs["budget"])
            for name, run_id in runs.items():
                history = await client.get_workflow_handle(
                    workflow_id_for(run_id)).fetch_history()
                data: dict[str, Any] = history_json(history)
                (HERE / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n",
                                                   encoding="utf-8")
                print(f"wrote {name}.json ({len(data['history']['events'])} events)")


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7233"))

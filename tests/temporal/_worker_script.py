"""A keel Temporal worker in a process of its own, for the crash matrix
(test_crash_matrix.py): it serves the ``orders`` agent of tests/crash/crash_agent.py (a
stock check, an idempotent reservation, a non-idempotent charge with a reconcile hook, a
non-idempotent notification without one; the model a FunctionModel whose answer is the
script's item for the conversation's turn, a pure function of the messages) and SIGKILLs
itself at the kill point that ``KEEL_CRASH_KILL`` names:

* ``model:N``: inside turn N's model request (inside a ``keel.advance`` activity);
* ``tool:NAME:before``: inside the tool, after its intent record, before its effect;
* ``tool:NAME:after``: after the effect is committed outside, before the result record;
* ``append:KEY:PHASE``: right after that journal entry is committed to the run store
  (``append:KEY:result``: after the result, before the activity completes).

    python tests/temporal/_worker_script.py ADDRESS NAMESPACE TASK_QUEUE

Environment: ``KEEL_CRASH_STORE`` (the keel run store URL), ``KEEL_CRASH_EFFECTS`` (the
outside system, an SQLite file), ``KEEL_CRASH_KILL`` (see tests/crash/_child.py). Prints
``ready`` once the worker polls its task queue; stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "crash"))

import crash_agent
from _child import configure, die_if, store_url

from keel.store import JournalEntry, PostgresStore, SQLiteStore
from keel.temporal import TemporalWorker, connect


def die_after_appends(cls: Any) -> None:
    """Make every store of ``cls`` die right after a chosen journal entry is committed
    (``append:KEY:PHASE``), whichever instance the worker opens."""
    inner = cls.append

    async def append(self: Any, run_id: str, entries: Sequence[JournalEntry], *,
                     lease: str | None = None) -> None:
        await inner(self, run_id, entries, lease=lease)
        for e in entries:
            die_if(f"append:{e.key}:{e.phase}")

    cls.append = append


async def main(address: str, namespace: str, queue: str) -> int:
    configure()
    die_after_appends(SQLiteStore)
    die_after_appends(PostgresStore)
    client = await connect(address, namespace=namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    worker = TemporalWorker(client, [crash_agent.build_agent()], store=store_url(),
                            task_queue=queue, max_concurrent_activities=4)
    async with worker:
        print("ready", flush=True)
        await stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:4])))

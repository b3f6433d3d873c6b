"""The in-memory run store: fast, process-local, gone when the process ends."""

from __future__ import annotations

from collections.abc import Sequence

from keel.core import RunNotFound, StoreError
from keel.store._base import JournalEntry, RunFilter, RunRecord, RunStore


class MemoryStore(RunStore):
    """Keeps runs in dicts. For tests, benchmarks and runs that need no durability."""

    def __init__(self) -> None:
        self._runs: dict[str, RunRecord] = {}
        self._journals: dict[str, list[JournalEntry]] = {}
        self._recorded: dict[str, set[tuple[str, str]]] = {}

    async def create_run(self, record: RunRecord) -> None:
        if record.run_id in self._runs:
            raise StoreError(f"a run with id {record.run_id!r} already exists.")
        self._runs[record.run_id] = record
        self._journals[record.run_id] = []
        self._recorded[record.run_id] = set()

    async def append(self, run_id: str, entries: Sequence[JournalEntry]) -> None:
        journal = self._journals.get(run_id)
        if journal is None:
            raise RunNotFound(f"no run {run_id!r} in this store; `keel runs list` shows the runs.")
        recorded = self._recorded[run_id]
        if len(entries) == 1:  # the journal's usual call, without a temporary set
            entry = entries[0]
            one = (entry.key, entry.phase)
            if one in recorded:
                raise StoreError(
                    f"run {run_id}: journal entry {one} is already recorded; each step records "
                    "one intent and one result. Nothing of this batch was stored.")
            recorded.add(one)
            journal.append(entry)
            return
        batch = {(e.key, e.phase) for e in entries}
        if len(batch) != len(entries) or not batch.isdisjoint(recorded):
            clash = next(iter(batch & recorded), None) or "(repeated within the batch)"
            raise StoreError(
                f"run {run_id}: journal entry {clash} is already recorded; each step records "
                "one intent and one result. Nothing of this batch was stored.")
        recorded.update(batch)
        journal.extend(entries)

    async def get_run(self, run_id: str) -> RunRecord:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFound(
                f"no run {run_id!r} in this store; `keel runs list` shows the runs.") from None

    async def read_journal(self, run_id: str) -> list[JournalEntry]:
        await self.get_run(run_id)
        return list(self._journals[run_id])

    async def list_runs(self, filt: RunFilter | None = None) -> list[RunRecord]:
        f = filt or RunFilter()
        rows = [r for r in self._runs.values()
                if (f.status is None or r.status == f.status)
                and (f.agent is None or r.agent == f.agent)]
        rows.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return rows[f.offset:f.offset + f.limit]

    async def update_run(self, record: RunRecord) -> None:
        await self.get_run(record.run_id)
        self._runs[record.run_id] = record

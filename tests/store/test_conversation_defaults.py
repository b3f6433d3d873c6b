"""A store written before conversations existed (it does not override ``read_journals`` or
``delete_conversation``) still reads several journals, by the seam's default, and refuses to
delete a conversation with a clear error."""

from __future__ import annotations

import pytest

from keel import StoreError, UserError
from keel.store import MemoryStore, RunStore
from keel.testing._store_conformance import sample_entry, sample_run


class OldStore(MemoryStore):
    read_journals = RunStore.read_journals
    delete_conversation = RunStore.delete_conversation


async def test_the_defaults() -> None:
    store = OldStore()
    await store.create_run(sample_run("a", conversation="c-1"))
    await store.append("a", [sample_entry(0)])
    got = await store.read_journals(["missing", "a", "a"])
    assert list(got) == ["a"] and got["a"] == await store.read_journal("a")
    with pytest.raises(StoreError, match="cannot delete conversations"):
        await store.delete_conversation("c-1", tenant=None)
    with pytest.raises(UserError, match="conversation"):
        await store.delete_conversation("", tenant=None)
    assert len(await store.list_runs()) == 1
